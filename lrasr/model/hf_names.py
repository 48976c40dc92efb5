"""Name and config correspondence between lrasr's models and transformers' Wav2Vec2 classes.

Used by the reference test, the speed benchmark and checkpoint conversion. Pure data: transformers
itself is not imported here.
"""

from __future__ import annotations

from typing import Any

from lrasr.model.config import Wav2Vec2Config


def to_transformers_name(name: str) -> str:
    """lrasr state-dict key -> transformers ``Wav2Vec2ForPreTraining`` / ``Wav2Vec2ForCTC`` key."""
    if name == "mask_embedding":
        return "wav2vec2.masked_spec_embed"
    if name.startswith("final_proj."):
        return "project_hid." + name.split(".", 1)[1]
    if name.startswith(("quantizer.", "project_q.")):
        return name
    if name.startswith("backbone.aux."):
        return "lm_head." + name.rsplit(".", 1)[1]
    name = name.removeprefix("backbone.")
    name = name.replace("encoder.feature_projection.", "feature_projection.")
    name = name.replace("encoder.transformer.", "encoder.")
    return "wav2vec2." + name


def from_transformers_name(name: str) -> str:
    """The inverse of ``to_transformers_name``."""
    if name == "wav2vec2.masked_spec_embed":
        return "mask_embedding"
    if name.startswith("project_hid."):
        return "final_proj." + name.split(".", 1)[1]
    if name.startswith(("quantizer.", "project_q.")):
        return name
    if name.startswith("lm_head."):
        return "backbone.aux." + name.rsplit(".", 1)[1]
    name = name.removeprefix("wav2vec2.")
    if name.startswith("feature_projection."):
        return "backbone.encoder." + name
    if name.startswith("encoder."):
        return "backbone.encoder.transformer." + name.split(".", 1)[1]
    return "backbone." + name


def transformers_config_kwargs(cfg: Wav2Vec2Config, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``transformers.Wav2Vec2Config`` describing the same network."""
    kwargs: dict[str, Any] = dict(
        conv_dim=[c for c, _, _ in cfg.conv_layers],
        conv_kernel=[k for _, k, _ in cfg.conv_layers],
        conv_stride=[s for _, _, s in cfg.conv_layers],
        conv_bias=cfg.conv_bias,
        feat_extract_norm="group" if cfg.extractor_mode == "group_norm" else "layer",
        do_stable_layer_norm=cfg.layer_norm_first,
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        num_conv_pos_embeddings=cfg.pos_conv_kernel,
        num_conv_pos_embedding_groups=cfg.pos_conv_groups,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        feat_proj_dropout=cfg.dropout_input,
        feat_quantizer_dropout=cfg.dropout_features,
        final_dropout=cfg.final_dropout,
        layerdrop=cfg.layerdrop,
        num_codevector_groups=cfg.num_codevector_groups,
        num_codevectors_per_group=cfg.num_codevectors_per_group,
        codevector_dim=cfg.codevector_dim,
        proj_codevector_dim=cfg.final_dim,
        contrastive_logits_temperature=cfg.logit_temp,
        num_negatives=cfg.num_negatives,
        diversity_loss_weight=cfg.diversity_loss_weight,
        mask_time_prob=cfg.mask_time_prob,
        mask_time_length=cfg.mask_time_length,
        mask_time_min_masks=cfg.mask_time_min_masks,
        mask_feature_prob=cfg.mask_channel_prob,
        mask_feature_length=cfg.mask_channel_length,
    )
    kwargs.update(extra)
    return kwargs
