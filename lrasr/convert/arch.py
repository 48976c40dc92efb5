"""A neutral description of a wav2vec 2.0 architecture, and its translations.

The neutral form uses the keyword names of ``torchaudio.models.wav2vec2_model`` (the backbone lrasr
builds on), plus the pretraining head's sizes and the input normalization:

    extractor_mode ("group_norm" | "layer_norm"), extractor_conv_layer_config [[dim, kernel, stride]],
    extractor_conv_bias, encoder_embed_dim, encoder_num_layers, encoder_num_heads,
    encoder_ff_interm_features, encoder_pos_conv_kernel, encoder_pos_conv_groups,
    encoder_layer_norm_first, encoder_projection_dropout, encoder_attention_dropout,
    encoder_ff_interm_dropout, encoder_dropout, encoder_layer_drop,
    num_codevector_groups, num_codevectors_per_group, codevector_dim, final_dim,
    normalize_waveform (zero mean / unit variance per utterance before the feature encoder).

Readers fill what their source states; ``complete`` adds the published BASE values for the rest and
says which were assumed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

TORCHAUDIO_KEYS = (
    "extractor_mode", "extractor_conv_layer_config", "extractor_conv_bias", "encoder_embed_dim",
    "encoder_projection_dropout", "encoder_pos_conv_kernel", "encoder_pos_conv_groups", "encoder_num_layers",
    "encoder_num_heads", "encoder_attention_dropout", "encoder_ff_interm_features", "encoder_ff_interm_dropout",
    "encoder_dropout", "encoder_layer_norm_first", "encoder_layer_drop",
)
CONV_BASE = [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2
DEFAULTS: dict[str, Any] = {
    "extractor_mode": "group_norm", "extractor_conv_layer_config": CONV_BASE, "extractor_conv_bias": False,
    "encoder_embed_dim": 768, "encoder_num_layers": 12, "encoder_num_heads": 12,
    "encoder_ff_interm_features": 3072, "encoder_pos_conv_kernel": 128, "encoder_pos_conv_groups": 16,
    "encoder_layer_norm_first": False, "encoder_projection_dropout": 0.1, "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_dropout": 0.0, "encoder_dropout": 0.1, "encoder_layer_drop": 0.05,
    "num_codevector_groups": 2, "num_codevectors_per_group": 320, "codevector_dim": 256, "final_dim": 256,
    "normalize_waveform": False,
}


def complete(arch: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``arch`` with every missing key set to its BASE default; also the names that were assumed."""
    out = dict(arch)
    assumed = [k for k in DEFAULTS if out.get(k) is None]
    for k in assumed:
        out[k] = DEFAULTS[k]
    out["extractor_conv_layer_config"] = [list(map(int, c)) for c in out["extractor_conv_layer_config"]]
    return out, assumed


def torchaudio_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``torchaudio.models.wav2vec2_model`` (without ``aux_num_out``)."""
    full, _ = complete(arch)
    kwargs = {k: full[k] for k in TORCHAUDIO_KEYS}
    kwargs["extractor_conv_layer_config"] = [tuple(c) for c in kwargs["extractor_conv_layer_config"]]
    return kwargs


# ----------------------------------------------------------------------------------- transformers
def arch_from_hf_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """transformers ``Wav2Vec2Config`` (as the dict in config.json) -> neutral form."""
    norm = cfg.get("feat_extract_norm", "group")
    convs = None
    if cfg.get("conv_dim"):
        convs = [list(c) for c in zip(cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"])]
    return {
        "extractor_mode": f"{norm}_norm", "extractor_conv_layer_config": convs,
        "extractor_conv_bias": cfg.get("conv_bias", False), "encoder_embed_dim": cfg.get("hidden_size"),
        "encoder_num_layers": cfg.get("num_hidden_layers"), "encoder_num_heads": cfg.get("num_attention_heads"),
        "encoder_ff_interm_features": cfg.get("intermediate_size"),
        "encoder_pos_conv_kernel": cfg.get("num_conv_pos_embeddings"),
        "encoder_pos_conv_groups": cfg.get("num_conv_pos_embedding_groups"),
        "encoder_layer_norm_first": cfg.get("do_stable_layer_norm", False),
        "encoder_projection_dropout": cfg.get("feat_proj_dropout"), "encoder_attention_dropout": cfg.get("attention_dropout"),
        "encoder_ff_interm_dropout": cfg.get("activation_dropout"), "encoder_dropout": cfg.get("hidden_dropout"),
        "encoder_layer_drop": cfg.get("layerdrop"), "num_codevector_groups": cfg.get("num_codevector_groups"),
        "num_codevectors_per_group": cfg.get("num_codevectors_per_group"),
        "codevector_dim": cfg.get("codevector_dim"), "final_dim": cfg.get("proj_codevector_dim"),
    }


def hf_config_kwargs(arch: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """Neutral form -> keyword arguments of transformers' ``Wav2Vec2Config`` (CTC, blank = pad = 0)."""
    a, _ = complete(arch)
    convs = a["extractor_conv_layer_config"]
    return {
        "feat_extract_norm": a["extractor_mode"].split("_")[0], "conv_dim": [c[0] for c in convs],
        "conv_kernel": [c[1] for c in convs], "conv_stride": [c[2] for c in convs], "conv_bias": a["extractor_conv_bias"],
        "hidden_size": a["encoder_embed_dim"], "num_hidden_layers": a["encoder_num_layers"],
        "num_attention_heads": a["encoder_num_heads"], "intermediate_size": a["encoder_ff_interm_features"],
        "num_conv_pos_embeddings": a["encoder_pos_conv_kernel"],
        "num_conv_pos_embedding_groups": a["encoder_pos_conv_groups"],
        "do_stable_layer_norm": a["encoder_layer_norm_first"], "hidden_act": "gelu",
        "feat_extract_activation": "gelu", "feat_proj_dropout": a["encoder_projection_dropout"],
        "attention_dropout": a["encoder_attention_dropout"], "activation_dropout": a["encoder_ff_interm_dropout"],
        "hidden_dropout": a["encoder_dropout"], "layerdrop": a["encoder_layer_drop"],
        "num_codevector_groups": a["num_codevector_groups"], "num_codevectors_per_group": a["num_codevectors_per_group"],
        "codevector_dim": a["codevector_dim"], "proj_codevector_dim": a["final_dim"],
        "vocab_size": vocab_size, "pad_token_id": 0, "ctc_loss_reduction": "mean", "ctc_zero_infinity": True,
    }


# ------------------------------------------------------------------------------------------- lrasr
# lrasr.model.config.Wav2Vec2Config field -> neutral key (fields with the same name are omitted)
_LRASR_TO_NEUTRAL = {
    "conv_layers": "extractor_conv_layer_config", "conv_bias": "extractor_conv_bias",
    "embed_dim": "encoder_embed_dim", "num_layers": "encoder_num_layers", "num_heads": "encoder_num_heads",
    "ffn_dim": "encoder_ff_interm_features", "pos_conv_kernel": "encoder_pos_conv_kernel",
    "pos_conv_groups": "encoder_pos_conv_groups", "layer_norm_first": "encoder_layer_norm_first",
    "dropout_input": "encoder_projection_dropout", "attention_dropout": "encoder_attention_dropout",
    "activation_dropout": "encoder_ff_interm_dropout", "dropout": "encoder_dropout",
    "layerdrop": "encoder_layer_drop",
}
_SAME = ("extractor_mode", "num_codevector_groups", "num_codevectors_per_group", "codevector_dim", "final_dim")
# architecture fields: what a checkpoint decides; everything else (masking, losses) stays the recipe's
ARCH_FIELDS = tuple(_LRASR_TO_NEUTRAL) + _SAME
_DROPOUTS = ("dropout_input", "attention_dropout", "activation_dropout", "dropout", "layerdrop")


def _config_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, dict):
        return cfg
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return dataclasses.asdict(cfg)


def lrasr_model_fields(config_json: dict[str, Any]) -> dict[str, Any]:
    """The model-config mapping inside an lrasr folder's config.json (nested or flat)."""
    for key in ("model", "config", "model_config"):
        if isinstance(config_json.get(key), dict):
            return config_json[key]
    return config_json


def arch_from_lrasr_config(cfg: Any) -> dict[str, Any]:
    """lrasr ``Wav2Vec2Config`` (object, its dict, or a folder's config.json) -> neutral form."""
    d = lrasr_model_fields(_config_dict(cfg))
    out: dict[str, Any] = {k: d.get(k) for k in _SAME}
    for field_name, neutral in _LRASR_TO_NEUTRAL.items():
        out[neutral] = d.get(field_name)
    out["normalize_waveform"] = bool(d.get("normalize_waveform", d.get("normalize", False)))
    return out


def lrasr_config_from_arch(arch: dict[str, Any], base: Any, keep_dropouts: bool = True) -> Any:
    """An lrasr ``Wav2Vec2Config``: ``base``'s training settings with ``arch``'s shape.

    ``keep_dropouts`` keeps the recipe's dropout/layerdrop (fine-tuning chooses its own) instead of
    the checkpoint's.
    """
    from lrasr.model.config import Wav2Vec2Config

    data = _config_dict(base).copy()
    full, _ = complete(arch)
    for field_name in ARCH_FIELDS:
        if keep_dropouts and field_name in _DROPOUTS:
            continue
        neutral = _LRASR_TO_NEUTRAL.get(field_name, field_name)
        if arch.get(neutral) is not None or field_name not in data:
            data[field_name] = full[neutral]
    if "normalize_waveform" in data and arch.get("normalize_waveform") is not None:
        data["normalize_waveform"] = bool(arch["normalize_waveform"])
    return Wav2Vec2Config.from_dict(data, source="checkpoint config")
