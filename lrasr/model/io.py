"""Self-contained model folders: ``model.safetensors`` + ``config.json`` [+ tokenizer files].

config.json::

    {"format": "lrasr-wav2vec2", "version": 1, "model_type": "ctc" | "pretraining",
     "vocab_size": 42 (ctc only), "config": {<Wav2Vec2Config fields>}}

Weights are the model's ``state_dict()`` (keys ``backbone.*`` in torchaudio's names, ``mask_embedding``,
and for pretraining ``quantizer.*``, ``project_q.*``, ``final_proj.*``). Files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lrasr.errors import LrasrError
from lrasr.io import atomic_path, write_json_atomic
from lrasr.model.config import Wav2Vec2Config

FORMAT = "lrasr-wav2vec2"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def model_type(model: nn.Module) -> str:
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.model.pretraining import Wav2Vec2ForPreTraining

    if isinstance(model, Wav2Vec2ForCTC):
        return "ctc"
    if isinstance(model, Wav2Vec2ForPreTraining):
        return "pretraining"
    raise TypeError(f"not an lrasr wav2vec 2.0 model: {type(model).__name__}")


def save_model_dir(directory: str | Path, model: nn.Module, tokenizer: Any = None) -> Path:
    """Write ``model`` (and ``tokenizer`` via its ``.save``) into ``directory``; returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kind = model_type(model)
    meta: dict[str, Any] = {"format": FORMAT, "version": 1, "model_type": kind,
                            "config": model.cfg.to_dict()}  # type: ignore[union-attr]
    if kind == "ctc":
        meta["vocab_size"] = int(model.vocab_size)  # type: ignore[union-attr]
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json_atomic(directory / CONFIG_FILE, meta)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """The parsed config.json of a model folder (clear errors for missing or foreign folders)."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise LrasrError(f"not a model folder: no {CONFIG_FILE} (expected an lrasr model saved by "
                         f"pretrain/finetune)", directory)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LrasrError(f"config.json is not valid JSON ({exc})", path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LrasrError("config.json is not an lrasr model config (for a transformers or fairseq "
                         "checkpoint use finetune.init_from / the convert commands)", path)
    if meta.get("model_type") not in ("ctc", "pretraining"):
        raise LrasrError(f"unknown model_type {meta.get('model_type')!r}", path)
    return meta


def build_model(meta: dict[str, Any], source: str | Path = "config.json") -> nn.Module:
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.model.pretraining import Wav2Vec2ForPreTraining

    cfg = Wav2Vec2Config.from_dict(meta.get("config") or {}, source=str(source))
    if meta["model_type"] == "ctc":
        vocab = meta.get("vocab_size")
        if not isinstance(vocab, int) or vocab < 1:
            raise LrasrError("config.json of a ctc model needs a positive integer vocab_size", source)
        return Wav2Vec2ForCTC(cfg, vocab)
    return Wav2Vec2ForPreTraining(cfg)


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model a folder describes (CTC or pretraining), load its weights, eval mode."""
    directory = Path(directory)
    meta = read_model_config(directory)
    model = build_model(meta, directory / CONFIG_FILE)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise LrasrError(f"no {WEIGHTS_FILE} in this model folder", directory)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise LrasrError(f"cannot read weights ({exc})", weights) from None
    load_state_checked(model, state, weights)
    return model.to(device).eval()


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with one clear error naming missing/unexpected/misshaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise LrasrError("weights do not match the config: " + "; ".join(parts), source)
    model.load_state_dict(state, strict=True)


def load_ctc_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """(CTC model in eval mode, its tokenizer) from a fine-tuned model folder."""
    directory = Path(directory)
    meta = read_model_config(directory)
    if meta["model_type"] != "ctc":
        raise LrasrError(f"this is a {meta['model_type']} model, not a fine-tuned CTC model; "
                         f"run `lrasr finetune` first", directory)
    from lrasr.text.tokenizer import load_tokenizer  # lazy: text is another area's package

    if not (directory / "tokenizer.json").is_file():
        raise LrasrError("model folder has no tokenizer (tokenizer.json); save it with "
                         "save_model_dir(dir, model, tokenizer)", directory)
    tokenizer = load_tokenizer(directory)
    model = load_model_dir(directory, device)
    vocab = len(tokenizer.labels)
    if vocab != model.vocab_size:  # type: ignore[union-attr]
        raise LrasrError(f"tokenizer has {vocab} labels but the model outputs "
                         f"{model.vocab_size}", directory)  # type: ignore[union-attr]
    return model, tokenizer
