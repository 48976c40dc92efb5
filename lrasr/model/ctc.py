"""wav2vec 2.0 with a CTC head (fine-tuning and inference).

``backbone`` is a torchaudio ``Wav2Vec2Model`` whose ``aux`` linear layer is the CTC head, so
``model.backbone(waveforms, lengths)`` alone is torchaudio's usual ``(logits, lengths)`` call (no
masking, no ``normalize_waveform``). State-dict keys: ``backbone.*`` (torchaudio names, head =
``backbone.aux.*``) and ``mask_embedding`` (shared with the pretraining model so a pretrained one carries over).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lrasr.model.backbone import build_backbone, extract_features, frame_layout, normalize_waveform, run_transformer
from lrasr.model.config import Wav2Vec2Config
from lrasr.model.masking import compute_channel_mask, compute_span_mask


class Wav2Vec2ForCTC(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.backbone = build_backbone(cfg, aux_num_out=vocab_size)
        self.mask_embedding = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())
        self.final_dropout = nn.Dropout(cfg.final_dropout)
        self.generator: torch.Generator | None = None  # for masks; None = torch's global RNG

    @property
    def aux(self) -> nn.Linear:
        return self.backbone.aux  # type: ignore[return-value]

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """waveforms [B, S] float, lengths [B] samples -> (logits [B, F, V], out_lengths [B] long).

        With ``cfg.normalize_waveform`` each utterance is first standardized over its ``lengths``
        samples (see ``normalize_waveform``): callers always pass raw audio.
        In training: time masks (learned embedding) and channel masks (zeros) per cfg, layerdrop.
        The feature encoder's gradient is scaled by ``cfg.feature_grad_mult``: fine-tuning should set
        it to 0.0 (fairseq keeps the feature encoder frozen throughout fine-tuning). ``cfg`` is read on
        every call, so masking/layerdrop settings may be changed on ``model.cfg`` after construction.
        """
        cfg = self.cfg
        self.backbone.encoder.transformer.layer_drop = cfg.layerdrop
        batch, num_samples = waveforms.shape
        device = waveforms.device
        frames, num_frames, pad_cpu = frame_layout(cfg, lengths, batch, num_samples)
        pad = pad_cpu.to(device, non_blocking=True) if bool(pad_cpu.any()) else None
        if cfg.normalize_waveform:
            waveforms = normalize_waveform(waveforms, lengths)
        feats = extract_features(self.backbone, waveforms, cfg.feature_grad_mult if self.training else 0.0,
                                 lengths=lengths)  # padding kept out of the group norm
        proj = self.backbone.encoder.feature_projection
        x = proj(feats)  # layer norm, linear, dropout
        if self.training and cfg.mask_time_prob > 0:
            time_mask = compute_span_mask((batch, num_frames), cfg.mask_time_prob, cfg.mask_time_length,
                                          frames, cfg.mask_time_min_masks, cfg.require_same_masks,
                                          self.generator).to(device, non_blocking=True)
            x = torch.where(time_mask[..., None], self.mask_embedding.to(x.dtype), x)
        if self.training and cfg.mask_channel_prob > 0:
            chan = compute_channel_mask(batch, x.shape[-1], cfg.mask_channel_prob, cfg.mask_channel_length,
                                        self.generator).to(device, non_blocking=True)
            x = x.masked_fill(chan[:, None, :], 0.0)
        x = run_transformer(self.backbone, x, pad)
        logits = self.backbone.aux(self.final_dropout(x))
        return logits, frames.to(device)
