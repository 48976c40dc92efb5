"""Reading foreign wav2vec 2.0 checkpoints and loading them into lrasr models, by parameter name.

``read_checkpoint(path)`` understands three layouts and returns the weights under lrasr's canonical
names (``lrasr.convert.keys``) plus what is known of the architecture and of the CTC head's labels:

- an lrasr model folder (``config.json`` with an ``lrasr`` marker + ``model.safetensors``),
- a transformers folder (``config.json`` + ``model.safetensors`` / sharded safetensors /
  ``pytorch_model.bin``): ``Wav2Vec2Model``, ``Wav2Vec2ForPreTraining`` or ``Wav2Vec2ForCTC``,
- a fairseq ``.pt`` (pretrained or fine-tuned), see ``lrasr.convert.fairseq`` for what is loadable.

``load_pretrained_into(model, source)`` copies every tensor whose canonical name and shape match,
and raises ``LrasrError`` naming each parameter whose shape differs (never a partial silent load).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lrasr.convert.keys import _weight_norm_canonical
from lrasr.errors import LrasrError

# first name component of every canonical parameter; anything before it is a wrapper's prefix
ROOTS = ("feature_extractor", "encoder", "aux", "mask_embedding", "quantizer", "project_q", "final_proj")
HEAD_PREFIX = "aux."


@dataclass
class Checkpoint:
    """Weights under canonical names plus what the source says about the architecture."""

    format: str  # "lrasr", "hf" or "fairseq"
    path: Path
    state: dict[str, torch.Tensor]
    arch: dict[str, Any]  # neutral architecture description (see lrasr.convert.arch)
    labels: list[str] | None = None  # CTC head labels when the source names them
    notes: list[str] = field(default_factory=list)  # what was skipped or assumed while reading

    @property
    def has_head(self) -> bool:
        return any(k.startswith(HEAD_PREFIX) for k in self.state)

    @property
    def head_size(self) -> int | None:
        w = self.state.get("aux.weight")
        return None if w is None else int(w.shape[0])


@dataclass
class LoadReport:
    """What ``load_pretrained_into`` did, by canonical parameter name."""

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint (kept as initialized)
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model (ignored)
    skipped: list[str] = field(default_factory=list)  # deliberately not loaded (e.g. a replaced CTC head)
    reshaped: list[str] = field(default_factory=list)  # same numel, different layout (codevectors)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "loaded": len(self.loaded),
                "missing": self.missing, "unexpected": self.unexpected, "skipped": self.skipped,
                "reshaped": self.reshaped, "notes": self.notes}


def canonical_name(key: str) -> str:
    """Strip a wrapper's prefix (``backbone.``, ``module.``, ...) down to the canonical root."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part in ROOTS:
            return _weight_norm_canonical(".".join(parts[i:]))
    return key


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user-facing file problem
        raise LrasrError(f"cannot read weights safely ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                         "convert it to safetensors", path) from None
    if not isinstance(state, dict):
        raise LrasrError("weights file does not hold a state dict", path)
    return state


def _folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, sharded safetensors (index json) or pytorch_model.bin, in that order."""
    single = folder / "model.safetensors"
    if single.is_file():
        return _load_state_file(single)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_load_state_file(folder / shard))
        return state
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        return _load_state_file(legacy)
    raise LrasrError("no weights found (expected model.safetensors or pytorch_model.bin)", folder)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read an lrasr folder, a transformers folder or a fairseq ``.pt`` (see module docstring)."""
    from lrasr.convert import fairseq, hf

    path = Path(path)
    if not path.exists():
        # also reached from `lrasr export`, so the message does not speak of init_from
        raise LrasrError("does not exist: expected a model folder (config.json + weights) or a fairseq .pt", path)
    if path.is_file():
        if path.suffix in (".pt", ".pth", ".ckpt"):
            return fairseq.read_fairseq(path)
        raise LrasrError("not a checkpoint: expected a folder with config.json or a fairseq .pt file", path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise LrasrError("no config.json in this folder: not an lrasr or transformers model folder", path)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LrasrError(f"config.json is not valid JSON ({exc})", config_path) from None
    if hf.is_hf_config(config):
        return hf.read_hf_folder(path, config)
    return _read_lrasr_folder(path, config)


def _read_lrasr_folder(path: Path, config: dict[str, Any]) -> Checkpoint:
    from lrasr.convert.arch import arch_from_lrasr_config

    raw = _folder_weights(path)
    state = {canonical_name(k): v for k, v in raw.items()}
    labels = None
    try:
        from lrasr.text.tokenizer import load_tokenizer

        labels = list(load_tokenizer(path).labels)
    except Exception:  # noqa: BLE001 - a pretraining folder has no tokenizer
        labels = None
    return Checkpoint("lrasr", path, state, arch_from_lrasr_config(config), labels)


def load_pretrained_into(model: torch.nn.Module, source: str | Path | Checkpoint, skip_head: bool = False) -> LoadReport:
    """Copy matching weights from ``source`` into ``model`` (in place) and report by name.

    Shapes that differ raise ``LrasrError`` listing every such parameter (checkpoint vs model shape).
    ``skip_head`` leaves the model's CTC head (``aux.*``) as initialized, for a new vocabulary.
    Codevectors stored as [1, G*V, D] vs [G*V, D] are reshaped (same numbers, different layout).
    """
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    report = LoadReport(str(ckpt.path), ckpt.format, notes=list(ckpt.notes))
    target = model.state_dict()
    by_canonical: dict[str, str] = {}
    for key in target:
        by_canonical.setdefault(canonical_name(key), key)
    updates: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for name, tensor in sorted(ckpt.state.items()):
        key = by_canonical.get(name)
        if key is None:
            report.unexpected.append(name)
            continue
        if skip_head and name.startswith(HEAD_PREFIX):
            report.skipped.append(name)
            continue
        want = target[key]
        if tuple(tensor.shape) != tuple(want.shape):
            if tensor.numel() == want.numel() and name == "quantizer.codevectors":
                tensor = tensor.reshape(want.shape)
                report.reshaped.append(name)
            else:
                mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(want.shape)}")
                continue
        updates[key] = tensor.to(dtype=want.dtype)
        report.loaded.append(name)
    if mismatched:
        shown = "; ".join(mismatched[:8]) + (f"; ... {len(mismatched) - 8} more" if len(mismatched) > 8 else "")
        raise LrasrError(f"{len(mismatched)} parameter(s) have other shapes than the model: {shown}. "
                         "Build the model with the checkpoint's shape (lrasr.convert.model_config_from) or set the "
                         "recipe's model to it", ckpt.path)
    loaded_keys = set(updates)
    report.missing = sorted(canonical_name(k) for k in target if k not in loaded_keys
                            and canonical_name(k) not in report.skipped)
    if not updates:
        raise LrasrError("no parameter of this checkpoint matches the model by name: not a wav2vec 2.0 "
                         "checkpoint this version of lrasr can read", ckpt.path)
    with torch.no_grad():
        model.load_state_dict(updates, strict=False)
    return report


def model_config_from(source: str | Path | Checkpoint, base: Any) -> Any:
    """An lrasr ``Wav2Vec2Config`` with the checkpoint's architecture and ``base``'s other settings
    (masking, dropouts, losses), so that ``load_pretrained_into`` finds every shape equal."""
    from lrasr.convert.arch import lrasr_config_from_arch

    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    return lrasr_config_from_arch(ckpt.arch, base)
