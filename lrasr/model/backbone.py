"""The shared wav2vec 2.0 backbone, built from torchaudio's components.

Parameter names are exactly torchaudio's ``Wav2Vec2Model`` (``feature_extractor.conv_layers.N.*``,
``encoder.feature_projection.*``, ``encoder.transformer.pos_conv_embed.*``,
``encoder.transformer.layers.N.*``, ``encoder.transformer.layer_norm``, ``aux``), so torchaudio's
importers and checkpoint conversion line up with it.

torchaudio's ``SelfAttention`` already calls ``scaled_dot_product_attention``, but only accepts a
float mask expanded to ``[B, 1, T, T]``. ``KeyPaddingSelfAttention`` (same parameters) also accepts a
broadcastable boolean key mask ``[B, 1, 1, T]`` and none at all for unpadded batches, which lets SDPA
pick its fused kernels and saves the ``B*T*T`` mask.

Padding never changes a real frame (batch composition does not change results), which is where lrasr
deliberately differs from torchaudio, transformers and fairseq for the group-norm layout: the feature
encoder (``lrasr.model.feature_encoder``) takes conv 0's group-norm statistics over each utterance's
valid frames when ``extract_features`` gets ``lengths``. The rest already holds: later convs only
see real frames for real outputs, layer norms are per frame, padded keys are masked in attention, and
``run_transformer`` zeroes padded frames before the positional conv, so its window sees the same
zeros past an utterance's end as the conv's own zero padding gives the utterance alone.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torchaudio.models import Wav2Vec2Model
from torchaudio.models.wav2vec2 import components

from lrasr.model.config import Wav2Vec2Config
from lrasr.model.feature_encoder import build_feature_extractor


class KeyPaddingSelfAttention(components.SelfAttention):
    """torchaudio's self-attention with broadcastable (boolean or additive) masks."""

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        attention_mask: Optional[Tensor] = None,
        position_bias: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """x: [B, T, D]; attention_mask: bool [B, 1, 1|T, T] (True = attend) or float additive."""
        batch, length, _ = x.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask.to(q.dtype)
        out = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(batch, length, self.embed_dim)
        return self.out_proj(out), None


def build_backbone(cfg: Wav2Vec2Config, aux_num_out: int | None = None) -> Wav2Vec2Model:
    """A torchaudio ``Wav2Vec2Model`` of ``cfg``'s shape (with a linear ``aux`` head if asked)."""
    extractor = build_feature_extractor(cfg.extractor_mode, list(cfg.conv_layers), cfg.conv_bias)
    encoder = components._get_encoder(
        in_features=cfg.conv_dim,
        embed_dim=cfg.embed_dim,
        dropout_input=cfg.dropout_input,
        pos_conv_kernel=cfg.pos_conv_kernel,
        pos_conv_groups=cfg.pos_conv_groups,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        attention_dropout=cfg.attention_dropout,
        ff_interm_features=cfg.ffn_dim,
        ff_interm_dropout=cfg.activation_dropout,
        dropout=cfg.dropout,
        layer_norm_first=cfg.layer_norm_first,
        layer_drop=cfg.layerdrop,
    )
    for layer in encoder.transformer.layers:
        old = layer.attention
        new = KeyPaddingSelfAttention(old.embed_dim, old.num_heads, old.dropout)
        new.load_state_dict(old.state_dict())
        layer.attention = new
    aux = None
    if aux_num_out is not None:
        aux = nn.Linear(cfg.embed_dim, aux_num_out)
        nn.init.xavier_uniform_(aux.weight)  # fairseq's CTC projection init
        nn.init.zeros_(aux.bias)
    model = Wav2Vec2Model(extractor, encoder, aux)
    init_backbone_(model)
    return model


@torch.no_grad()
def init_backbone_(model: Wav2Vec2Model) -> None:
    """fairseq's initialisation: BERT-style N(0, 0.02) linears in the transformer, Kaiming convs,
    the positional conv at N(0, sqrt(4 / (kernel * channels)))."""
    model.encoder.transformer.apply(components._init_transformer_params)
    for block in model.feature_extractor.conv_layers:
        nn.init.kaiming_normal_(block.conv.weight)
    pos = model.encoder.transformer.pos_conv_embed.conv
    std = (4.0 / (pos.kernel_size[0] * pos.in_channels)) ** 0.5
    # weight-norm parametrization: original1 is the direction v, original0 the magnitude g
    v = pos.parametrizations.weight.original1
    v.normal_(0.0, std)
    pos.parametrizations.weight.original0.copy_(torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
    nn.init.zeros_(pos.bias)


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def normalize_waveform(waveforms: Tensor, lengths: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """Per-utterance zero mean / unit variance over each row's first ``lengths`` samples.

    waveforms [B, S], lengths [B] samples or None (every row full) -> [B, S] in the input's dtype,
    padding left at 0. Statistics are in float32 (population variance, ``eps`` inside the square root),
    the same numbers as transformers' ``Wav2Vec2FeatureExtractor`` with an attention mask and as
    fairseq's ``layer_norm(wav, wav.shape)`` before batching: padding never shifts the statistics,
    so an utterance is normalized the same whatever it is batched with.
    """
    x = waveforms.float()
    if lengths is None:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return ((x - mean) * torch.rsqrt(var + eps)).to(waveforms.dtype)
    n = lengths.to(x.device, torch.long).clamp(0, x.shape[1])
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]
    count = n.clamp(min=1).to(x.dtype)[:, None]
    mean = x.masked_fill(~valid, 0.0).sum(dim=1, keepdim=True) / count
    centered = (x - mean).masked_fill(~valid, 0.0)
    var = centered.pow(2).sum(dim=1, keepdim=True) / count
    return (centered * torch.rsqrt(var + eps)).to(waveforms.dtype)


def extract_features(backbone: Wav2Vec2Model, waveforms: Tensor, grad_mult: float,
                     lengths: Tensor | None = None) -> Tensor:
    """Feature encoder with fairseq's ``feature_grad_mult``.

    waveforms [B, S], lengths [B] samples or None (no padding) -> features [B, T, C] (frame counts
    come from ``frame_layout``, on the CPU). ``lengths`` only keeps padding out of the group norm's
    statistics (see ``lrasr.model.feature_encoder``); equal-length batches take the plain path.
    ``grad_mult == 0`` runs the convs without autograd (frozen, as in fine-tuning).
    """
    if grad_mult == 0.0 or not torch.is_grad_enabled():
        with torch.no_grad():
            feats, _ = backbone.feature_extractor(waveforms, lengths)
        return feats
    feats, _ = backbone.feature_extractor(waveforms, lengths)
    if grad_mult != 1.0:
        feats = _GradMultiply.apply(feats, grad_mult)
    return feats


def conv_output_lengths(cfg: Wav2Vec2Config, lengths: Tensor) -> Tensor:
    """Frames produced for ``lengths`` samples: long [B] (the convs' floor((n - k) / s) + 1, >= 0)."""
    n = lengths.long()
    for _, k, s in cfg.conv_layers:
        n = torch.clamp(torch.div(n - k, s, rounding_mode="floor") + 1, min=0)
    return n


def frame_layout(cfg: Wav2Vec2Config, lengths: Tensor | None, batch: int, num_samples: int
                 ) -> tuple[Tensor, int, Tensor]:
    """Frame bookkeeping on the CPU from the input lengths, so that on a GPU nothing in the forward
    pass waits for queued kernels (no ``.item()``/``nonzero`` on device data).

    lengths [B] samples or None (all ``num_samples``) -> (frames long [B], T frames of the padded
    batch, pad bool [B, T] True at padded frames), all on the CPU.
    """
    num_frames = cfg.num_frames(num_samples)
    if lengths is None:
        frames = torch.full((batch,), num_frames, dtype=torch.long)
    else:
        frames = conv_output_lengths(cfg, lengths.detach().to("cpu", torch.long))
    pad = torch.arange(num_frames)[None, :] >= frames[:, None]
    return frames, num_frames, pad


def run_transformer(backbone: Wav2Vec2Model, x: Tensor, pad: Tensor | None) -> Tensor:
    """Positional conv + transformer layers (layerdrop in training) + final norm.

    x [B, T, D] (already projected and masked), pad bool [B, T] or None -> [B, T, D].
    Padded frames are zeroed before the positional conv, as fairseq and transformers do.
    """
    attn_mask = None
    if pad is not None:
        x = x.masked_fill(pad[..., None], 0.0)
        keep = ~pad
        # an utterance shorter than one frame would have no key at all (NaN rows in SDPA): let its
        # rows see frame 0; any other row already has frame 0 among its valid keys
        keep[:, 0] = True
        attn_mask = keep[:, None, None, :]
    return backbone.encoder.transformer(x, attention_mask=attn_mask)
