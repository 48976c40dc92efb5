"""transformers folders: import (``Wav2Vec2Model``/``ForPreTraining``/``ForCTC``) and export (``ForCTC``).

Export writes what ``Wav2Vec2ForCTC.from_pretrained`` and ``Wav2Vec2Processor.from_pretrained`` read,
offline: ``config.json`` + ``model.safetensors`` (transformers' own writer), ``vocab.json`` (lrasr's
labels in order: blank as ``<pad>`` at index 0, ``|`` as the word delimiter), tokenizer and
feature-extractor configs. ``do_normalize`` follows the lrasr model's ``normalize_waveform``, and the
attention mask is requested when the feature encoder uses layer norm (as transformers expects) or
when the input is normalized (so that padding does not enter the statistics); otherwise group-norm
models see zero padding and no mask.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lrasr.convert.arch import arch_from_hf_config, hf_config_kwargs
from lrasr.convert.checkpoint import Checkpoint, _folder_weights, canonical_name
from lrasr.convert.keys import canonical_to_hf, hf_to_canonical
from lrasr.errors import LrasrError

HF_ARCHITECTURES = ("Wav2Vec2Model", "Wav2Vec2ForPreTraining", "Wav2Vec2ForCTC")
UNK = "<unk>"


def is_hf_config(config: dict[str, Any]) -> bool:
    """A transformers config names its ``model_type``; lrasr's carries ``format: lrasr-wav2vec2``."""
    return "model_type" in config and not str(config.get("format", "")).startswith("lrasr")


def read_hf_folder(path: Path, config: dict[str, Any]) -> Checkpoint:
    """Weights and architecture of a local transformers wav2vec 2.0 folder (nothing is downloaded)."""
    model_type = config.get("model_type")
    if model_type not in ("wav2vec2",):
        raise LrasrError(f"model_type {model_type!r} is not wav2vec2 (HuBERT, WavLM, conformer variants "
                         "have other layers); use a wav2vec 2.0 checkpoint", path / "config.json")
    archs = config.get("architectures") or []
    unknown = [a for a in archs if a not in HF_ARCHITECTURES]
    notes = [f"architecture {a} is not one of {', '.join(HF_ARCHITECTURES)}; reading its wav2vec2 weights"
             for a in unknown]
    if config.get("add_adapter") or config.get("adapter_attn_dim"):
        notes.append("adapter layers are not part of lrasr's model: they are reported as unexpected")
    raw = _folder_weights(path)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        name = hf_to_canonical(key)
        if name is not None:
            state[name] = tensor
    labels = _hf_labels(path, int(config.get("vocab_size", 0))) if "aux.weight" in state else None
    arch = arch_from_hf_config(config)
    arch["normalize_waveform"] = _hf_do_normalize(path)
    if arch["normalize_waveform"] is None:
        notes.append("no preprocessor_config.json: input normalization (do_normalize) not stated; the "
                     "recipe's normalize_waveform is kept")
    return Checkpoint("hf", path, state, arch, labels, notes)


def _hf_labels(path: Path, vocab_size: int) -> list[str] | None:
    """The CTC head's labels from vocab.json (id order), with ``|`` kept as the word delimiter."""
    vocab_file = path / "vocab.json"
    if not vocab_file.is_file():
        return None
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    if vocab and isinstance(next(iter(vocab.values())), dict):  # multilingual MMS: {lang: {tok: id}}
        return None
    by_id = {int(i): tok for tok, i in vocab.items()}
    return [by_id.get(i, "") for i in range(vocab_size or len(by_id))]


def _hf_do_normalize(path: Path) -> bool | None:
    """The feature extractor's ``do_normalize``; None when the folder has none (the recipe decides).

    Published folders keep it in preprocessor_config.json; transformers 5 writes a processor's into
    processor_config.json under ``feature_extractor``. A config that omits the key gets
    transformers' own default, True, as its feature extractor would.
    """
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "feature_extractor")):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LrasrError(f"{name} is not valid JSON ({exc})", file) from None
        if isinstance(data, dict) and key is not None:
            data = data.get(key)
        if isinstance(data, dict):
            return bool(data.get("do_normalize", True))
    return None


def export_hf(model_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write an lrasr CTC model folder as a transformers ``Wav2Vec2ForCTC`` + processor folder.

    Returns a summary (vocab size, parameters, do_normalize). The folder is written beside
    ``out_dir`` and renamed onto it at the end, so a failure never leaves a half-written export.
    """
    try:
        from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor,
                                  Wav2Vec2ForCTC, Wav2Vec2Processor)
    except ImportError:
        raise LrasrError("export --format hf needs the transformers package: pip install 'transformers>=4.40'",
                         model_dir) from None

    from lrasr.convert.checkpoint import read_checkpoint

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_replaceable(out_dir, model_dir)
    ckpt = read_checkpoint(model_dir)
    if ckpt.format != "lrasr":
        raise LrasrError("export reads an lrasr model folder (from `lrasr finetune`)", model_dir)
    if not ckpt.has_head or ckpt.labels is None:
        raise LrasrError("not a fine-tuned CTC model with a tokenizer: nothing to transcribe with", model_dir)
    labels = list(ckpt.labels)
    if len(labels) != ckpt.head_size:
        raise LrasrError(f"tokenizer has {len(labels)} labels but the CTC head {ckpt.head_size} outputs", model_dir)
    vocab = _hf_vocab(labels, model_dir)
    hf_cfg = Wav2Vec2Config(**hf_config_kwargs(ckpt.arch, len(labels)))
    hf_cfg.architectures = ["Wav2Vec2ForCTC"]
    with torch.device("cpu"):
        hf_model = Wav2Vec2ForCTC(hf_cfg)
    hf_state = {}
    for name, tensor in ckpt.state.items():
        key = canonical_to_hf(name, head=True)
        if key is not None:
            hf_state[key] = tensor
    hf_state = {_hf_weight_norm_alias(k, hf_model.state_dict()): v for k, v in hf_state.items()}
    missing, unexpected = hf_model.load_state_dict(hf_state, strict=False)
    # masked_spec_embed only exists (and matters) when transformers itself masks in training
    missing = [k for k in missing if k != "wav2vec2.masked_spec_embed"]
    unexpected = [k for k in unexpected if k != "wav2vec2.masked_spec_embed"]
    if missing or unexpected:
        raise LrasrError(f"export does not cover the transformers model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} (lrasr and transformers versions disagree)", model_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        hf_model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
        # no <s>/</s>: CTC has no use for them, and as added tokens they would get ids past the head
        tokenizer = Wav2Vec2CTCTokenizer(str(tmp / "vocab.json"), unk_token=UNK, pad_token=labels[0],
                                         word_delimiter_token="|", bos_token=None, eos_token=None)
        normalize = bool(ckpt.arch.get("normalize_waveform"))
        # with do_normalize, transformers' extractor takes the statistics over the real samples only
        # when it makes an attention mask (else over the padding too, unlike lrasr), so ask for one
        attention = ckpt.arch.get("extractor_mode") == "layer_norm" or normalize
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                             do_normalize=normalize, return_attention_mask=attention)
        Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(tmp))
        # transformers 5 nests the extractor in processor_config.json; 4.x and other tools read
        # preprocessor_config.json, so write that too (5.x loads the folder the same either way)
        extractor.save_pretrained(str(tmp))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    summary = {"out_dir": str(out_dir), "vocab_size": len(labels), "do_normalize": normalize,
               "parameters": sum(p.numel() for p in hf_model.parameters())}
    if "|" not in labels:
        # sentencepiece pieces: transformers' CTC tokenizer only maps a standalone delimiter to a space
        summary["note"] = "subword labels: transformers' decode keeps the \u2581 marks; replace them with spaces"
    return summary


def _check_replaceable(out_dir: Path, model_dir: Path) -> None:
    """Refuse an ``out_dir`` whose replacement would delete the model or unrelated files.

    Replaced are only a missing or empty folder and an earlier transformers export.
    """
    out, src = out_dir.resolve(), model_dir.resolve()
    if out == src or out in src.parents:
        raise LrasrError("the export folder would replace the model being exported; choose another folder", out_dir)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_hf_export(out))):
        raise LrasrError("exists and is not an earlier transformers export: refusing to replace it; "
                         "give a new or empty folder", out_dir)


def _is_hf_export(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and is_hf_config(config) and (folder / "vocab.json").is_file()


def _hf_weight_norm_alias(key: str, target: dict[str, Any]) -> str:
    """Canonical parametrization names -> weight_g/weight_v when this transformers build uses them."""
    if key in target:
        return key
    for new, old in (("parametrizations.weight.original0", "weight_g"), ("parametrizations.weight.original1", "weight_v")):
        if key.endswith(new) and key.replace(new, old) in target:
            return key.replace(new, old)
    return key


def _hf_vocab(labels: list[str], where: Path) -> dict[str, int]:
    """vocab.json for transformers: lrasr's labels in id order, blank first (used as the pad token)."""
    if len(set(labels)) != len(labels):
        raise LrasrError("tokenizer labels are not unique; cannot write vocab.json", where)
    vocab = {tok: i for i, tok in enumerate(labels)}
    return vocab


def labels_match(ckpt_labels: list[str] | None, labels: list[str]) -> str | None:
    """None when the labels agree (or the checkpoint does not name them), else what differs."""
    if ckpt_labels is None:
        return None
    norm = [canonical_label(x) for x in ckpt_labels]
    mine = [canonical_label(x) for x in labels]
    if norm == mine:
        return None
    if len(norm) != len(mine):
        return f"{len(ckpt_labels)} labels in the checkpoint, {len(labels)} in the tokenizer"
    i = next(i for i, (a, b) in enumerate(zip(norm, mine)) if a != b)
    return f"label {i} is {ckpt_labels[i]!r} in the checkpoint and {labels[i]!r} in the tokenizer"


def canonical_label(label: str) -> str:
    """Blank spellings (``<pad>``, ``<blank>``, ``""``) compare equal.

    A fairseq head (blank ``<s>`` at 0, then ``<pad>``, ``</s>``, ``<unk>``) never matches an lrasr
    tokenizer's label order, so its head is replaced (``finetune.reinit_head``), not reused.
    """
    return "<blank>" if label in ("<pad>", "<blank>", "") else label


__all__ = ["export_hf", "read_hf_folder", "is_hf_config", "labels_match", "canonical_name"]
