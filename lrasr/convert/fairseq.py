"""fairseq wav2vec 2.0 checkpoints (``.pt``): pretrained (``Wav2Vec2Model``) and fine-tuned (``Wav2VecCtc``).

Safety constraint: lrasr loads pickles only with ``torch.load(weights_only=True)``, which rebuilds
tensors and plain containers and refuses any other class. A fairseq checkpoint is a dict
``{"model": state_dict, "cfg": ..., "optimizer_history": ..., "extra_state": ...}``:

- newer fairseq (hydra) stores ``cfg`` as plain dicts: loads as is;
- older fairseq stores ``args`` as an ``argparse.Namespace``; a plain attribute bag, so it is
  allow-listed here (its constructor only sets attributes);
- training-state objects (fairseq meters in ``extra_state``, omegaconf ``DictConfig``, numpy
  scalars) need fairseq/omegaconf classes whose unpickling may run their code: lrasr refuses such
  files and names the classes. Re-save the weights once in an environment that trusts the file:
  ``torch.save({"model": c["model"], "cfg": OmegaConf.to_container(c["cfg"])}, "clean.pt")`` with
  ``c = torch.load("x.pt", weights_only=False)``, then point ``init_from`` at ``clean.pt``.

The architecture comes from the checkpoint's ``cfg``/``args`` where stated, otherwise from tensor
shapes (layers, widths, kernels); only the conv strides and the number of attention heads cannot be
read off shapes, and default to the published values (reported as assumptions).
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from lrasr.convert.checkpoint import Checkpoint
from lrasr.convert.keys import fairseq_to_canonical
from lrasr.errors import LrasrError

SAFE_EXTRA_GLOBALS = [argparse.Namespace]


def safe_load(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with ``argparse.Namespace`` allowed; clear error otherwise."""
    try:
        with torch.serialization.safe_globals(SAFE_EXTRA_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        needed = _unsafe_globals(path)
        what = f"it needs classes {', '.join(needed[:6])}" if needed else str(exc).splitlines()[0][:200]
        raise LrasrError(
            f"refusing to unpickle this checkpoint with code-running classes ({what}). Re-save only the "
            "weights and a plain cfg in an environment you trust (see lrasr/convert/fairseq.py), then "
            "use that file", path) from None
    if not isinstance(obj, dict):
        raise LrasrError("not a fairseq checkpoint (expected a dict with a 'model' state dict)", path)
    return obj


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)
                if g != "argparse.Namespace"]
    except Exception:  # noqa: BLE001 - only used to improve the message
        return []


def _as_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, argparse.Namespace):
        return vars(cfg)
    return dict(cfg) if isinstance(cfg, dict) else {}


def _model_cfg(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The wav2vec2 model's settings: cfg.model (hydra) or args (legacy); for a fine-tuned
    checkpoint, the pretrained model's settings nested in ``w2v_args`` underneath."""
    cfg = _as_dict(_as_dict(ckpt.get("cfg")).get("model")) or _as_dict(ckpt.get("args"))
    inner = cfg.get("w2v_args")
    if inner is not None:
        inner_d = _as_dict(inner)
        inner_model = _as_dict(inner_d.get("model")) or inner_d
        merged = dict(inner_model)
        # fine-tuning overrides that matter for the architecture we build
        for key in ("layerdrop", "normalize"):
            if key in cfg:
                merged[key] = cfg[key]
        return merged
    return cfg


def normalize_flag(ckpt: dict[str, Any]) -> bool | None:
    """Whether the checkpoint was trained on per-utterance standardized waveforms, or None if unstated.

    fairseq keeps this in the task (``cfg.task.normalize``; legacy ``args.normalize``); a fine-tuned
    model repeats it as ``cfg.model.normalize`` and its pretraining run's in ``w2v_args``. The
    checkpoint's own (outermost) setting wins: it is what the weights were last trained with.
    """
    top = _as_dict(ckpt.get("cfg"))
    model = _as_dict(top.get("model")) or _as_dict(ckpt.get("args"))
    inner = _as_dict(model.get("w2v_args"))
    for place in (_as_dict(top.get("task")), model, _as_dict(inner.get("task")), inner):
        value = place.get("normalize")
        if value is not None:
            return bool(value)
    return None


def _conv_strides(cfg: dict[str, Any], n: int) -> list[int] | None:
    spec = cfg.get("conv_feature_layers")
    if isinstance(spec, str):
        # fairseq writes it as a Python list expression of (dim, kernel, stride) tuples; parse the
        # numbers only, never eval
        triples = re.findall(r"\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)", spec)
        mult = re.findall(r"\]\s*\*\s*(\d+)", spec)
        if triples and len(triples) == n:
            return [int(t[2]) for t in triples]
        if triples and mult and len(triples) == len(mult) + 1:  # "[(512,10,5)] + [(512,3,2)] * 4 + ..."
            strides = [int(triples[0][2])]
            for t, m in zip(triples[1:], mult):
                strides += [int(t[2])] * int(m)
            if len(strides) == n:
                return strides
    return None


def arch_from_fairseq(state: dict[str, torch.Tensor], cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Neutral architecture from canonical-named tensors and the fairseq cfg; plus assumptions made."""
    notes: list[str] = []
    convs = []
    i = 0
    while f"feature_extractor.conv_layers.{i}.conv.weight" in state:
        w = state[f"feature_extractor.conv_layers.{i}.conv.weight"]
        convs.append([int(w.shape[0]), int(w.shape[2])])
        i += 1
    if not convs:
        raise LrasrError("no feature-encoder convolutions in this checkpoint: not a wav2vec 2.0 model")
    strides = _conv_strides(cfg, len(convs))
    if strides is None:
        # the published encoder: kernel 10 -> stride 5, smaller kernels -> stride 2
        strides = [5 if k == 10 else 2 for _, k in convs]
        notes.append("conv strides not stated in the checkpoint; assumed the published ones")
    layer_norm_convs = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    n_layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.transformer\.layers\.(\d+)\.", k)))
    embed = int(state["encoder.feature_projection.projection.weight"].shape[0])
    heads = cfg.get("encoder_attention_heads")
    if heads is None:
        heads = max(1, embed // 64)
        notes.append(f"number of attention heads not stated; assumed {heads} (width/64)")
    pos_v = state.get("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1")
    if "extractor_mode" in cfg and cfg["extractor_mode"] not in ("default", "layer_norm"):
        raise LrasrError(f"extractor_mode {cfg['extractor_mode']!r} is not supported")
    arch = {
        "extractor_mode": "layer_norm" if layer_norm_convs else "group_norm",
        "extractor_conv_layer_config": [[d, k, s] for (d, k), s in zip(convs, strides)],
        "extractor_conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "encoder_embed_dim": embed, "encoder_num_layers": n_layers, "encoder_num_heads": int(heads),
        "encoder_ff_interm_features": int(state["encoder.transformer.layers.0.feed_forward.intermediate_dense.weight"].shape[0]),
        "encoder_pos_conv_kernel": int(pos_v.shape[2]) if pos_v is not None else cfg.get("conv_pos"),
        "encoder_pos_conv_groups": (embed // int(pos_v.shape[1])) if pos_v is not None else cfg.get("conv_pos_groups"),
        "encoder_layer_norm_first": bool(cfg.get("layer_norm_first", False)),
        "encoder_projection_dropout": cfg.get("dropout_input"), "encoder_attention_dropout": cfg.get("attention_dropout"),
        "encoder_ff_interm_dropout": cfg.get("activation_dropout"), "encoder_dropout": cfg.get("dropout"),
        "encoder_layer_drop": cfg.get("encoder_layerdrop", cfg.get("layerdrop")),
    }
    if "layer_norm_first" not in cfg:
        notes.append("layer_norm_first not stated; assumed post-LN (BASE); LARGE/XLS-R checkpoints need it")
    codes = state.get("quantizer.codevectors")
    if codes is not None:
        groups = int(cfg.get("latent_groups", 2))
        arch["num_codevector_groups"] = groups
        arch["num_codevectors_per_group"] = int(codes.shape[-2]) // groups
        arch["codevector_dim"] = int(codes.shape[-1]) * groups
    if "final_proj.weight" in state:
        arch["final_dim"] = int(state["final_proj.weight"].shape[0])
    return arch, notes


def read_fairseq(path: Path) -> Checkpoint:
    """Canonical weights, architecture and (when a ``dict.ltr.txt`` sits beside it) CTC labels."""
    ckpt = safe_load(path)
    raw = ckpt.get("model")
    if not isinstance(raw, dict) or not raw:
        raise LrasrError("no 'model' state dict in this .pt: not a fairseq checkpoint", path)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        name = fairseq_to_canonical(key)
        if name is not None:
            state[name] = tensor
    cfg = _model_cfg(ckpt)
    arch, notes = arch_from_fairseq(state, cfg)
    arch["normalize_waveform"] = normalize_flag(ckpt)
    if arch["normalize_waveform"] is None:
        notes.append("input normalization (task.normalize) not stated; the recipe's normalize_waveform is kept")
    labels = _fairseq_labels(path, state)
    if "aux.weight" in state and labels is None:
        notes.append("fine-tuned head found but no dict.ltr.txt beside the checkpoint: labels unknown")
    return Checkpoint("fairseq", path, state, arch, labels, notes)


def _fairseq_labels(path: Path, state: dict[str, torch.Tensor]) -> list[str] | None:
    """fairseq's target dictionary: <s>, <pad>, </s>, <unk> then dict.ltr.txt's symbols in order.

    The CTC blank of a fairseq fine-tuned model is index 0 (``<s>``, its "bos" used as blank).
    """
    head = state.get("aux.weight")
    dict_file = path.parent / "dict.ltr.txt"
    if head is None or not dict_file.is_file():
        return None
    symbols = [line.split()[0] for line in dict_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = ["<s>", "<pad>", "</s>", "<unk>"] + symbols
    return labels if len(labels) == int(head.shape[0]) else None
