"""Parameter-name maps between lrasr, transformers and fairseq wav2vec 2.0 checkpoints.

lrasr's *canonical* names are those of torchaudio's ``Wav2Vec2Model`` (``feature_extractor.*``,
``encoder.feature_projection.*``, ``encoder.transformer.*``, CTC head ``aux.*``) plus the pretraining
extras ``mask_embedding``, ``quantizer.codevectors``, ``quantizer.weight_proj.*``, ``project_q.*`` and
``final_proj.*``. The positional convolution's weight norm is canonical in the parametrization form
(``pos_conv_embed.conv.parametrizations.weight.original0/1``) that current torch writes;
``weight_g``/``weight_v`` (older torch, transformers < 4.3x, fairseq) are the same two tensors.

Every function returns ``None`` for a source key that carries nothing lrasr uses (optimizer-free
buffers such as fairseq's ``label_embs_concat``); unknown keys are kept under their own name so that
``load_pretrained_into`` reports them instead of dropping them silently.
"""

from __future__ import annotations

import re

POS_CONV = "encoder.transformer.pos_conv_embed.conv."
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def _weight_norm_canonical(key: str) -> str:
    for old, new in _WEIGHT_NORM.items():
        if key == POS_CONV + old:
            return POS_CONV + new
    return key


# ------------------------------------------------------------------------------------ transformers
def hf_to_canonical(key: str) -> str | None:
    """``wav2vec2.encoder.layers.0.attention.q_proj.weight`` -> ``encoder.transformer.layers.0...``."""
    if key.startswith("wav2vec2."):
        key = key[len("wav2vec2."):]
    if key == "masked_spec_embed":
        return "mask_embedding"
    if key.startswith("feature_projection."):
        return "encoder." + key
    if key.startswith("encoder."):
        return _weight_norm_canonical("encoder.transformer." + key[len("encoder."):])
    if key.startswith("lm_head."):
        return "aux." + key[len("lm_head."):]
    if key.startswith("project_hid."):
        return "final_proj." + key[len("project_hid."):]
    return key  # feature_extractor.*, quantizer.*, project_q.* share their names


def canonical_to_hf(key: str, head: bool) -> str | None:
    """Inverse of ``hf_to_canonical`` for a ``Wav2Vec2ForCTC`` (``head``) or ``Wav2Vec2ForPreTraining``."""
    if key == "mask_embedding":
        return "wav2vec2.masked_spec_embed"
    if key.startswith("aux."):
        return "lm_head." + key[len("aux."):] if head else None
    if key.startswith("encoder.feature_projection."):
        return "wav2vec2." + key[len("encoder."):]
    if key.startswith("encoder.transformer."):
        return "wav2vec2.encoder." + key[len("encoder.transformer."):]
    if key.startswith("feature_extractor."):
        return "wav2vec2." + key
    if key.startswith("final_proj."):
        return None if head else "project_hid." + key[len("final_proj."):]
    if key.startswith(("quantizer.", "project_q.")):
        return None if head else key
    return None


# ----------------------------------------------------------------------------------------- fairseq
_FAIRSEQ_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)"), r"feature_extractor.conv_layers.\1.conv.\2"),
    # group-norm mode: the norm is module 2 of the first block; layer-norm mode: 2.1 of every block
    (re.compile(r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)"), r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (re.compile(r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)"), r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (re.compile(r"post_extract_proj\.(weight|bias)"), r"encoder.feature_projection.projection.\1"),
    (re.compile(r"layer_norm\.(weight|bias)"), r"encoder.feature_projection.layer_norm.\1"),
    (re.compile(r"encoder\.pos_conv\.0\.(bias|weight_g|weight_v)"), r"encoder.transformer.pos_conv_embed.conv.\1"),
    (re.compile(r"encoder\.layer_norm\.(weight|bias)"), r"encoder.transformer.layer_norm.\1"),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.((?:k|v|q|out)_proj\.(?:weight|bias))"),
     r"encoder.transformer.layers.\1.attention.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)"), r"encoder.transformer.layers.\1.layer_norm.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)"), r"encoder.transformer.layers.\1.feed_forward.intermediate_dense.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)"), r"encoder.transformer.layers.\1.feed_forward.output_dense.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)"),
     r"encoder.transformer.layers.\1.final_layer_norm.\2"),
    (re.compile(r"mask_emb"), "mask_embedding"),
    (re.compile(r"quantizer\.vars"), "quantizer.codevectors"),
    (re.compile(r"quantizer\.weight_proj\.(weight|bias)"), r"quantizer.weight_proj.\1"),
    (re.compile(r"project_q\.(weight|bias)"), r"project_q.\1"),
    (re.compile(r"final_proj\.(weight|bias)"), r"final_proj.\1"),
    (re.compile(r"proj\.(weight|bias)"), r"aux.\1"),  # fine-tuned: w2v_encoder.proj = the CTC head
]
_FAIRSEQ_IGNORED = ("label_embs_concat",)


def fairseq_to_canonical(key: str) -> str | None:
    """fairseq ``Wav2Vec2Model`` (pretrained) or ``Wav2VecCtc`` (fine-tuned) key -> canonical."""
    for prefix in ("w2v_encoder.w2v_model.", "w2v_encoder.", "w2v_model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    if key in _FAIRSEQ_IGNORED:
        return None
    for pattern, repl in _FAIRSEQ_RULES:
        if pattern.fullmatch(key):
            return _weight_norm_canonical(pattern.sub(repl, key))
    return key
