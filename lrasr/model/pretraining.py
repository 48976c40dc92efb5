"""wav2vec 2.0 pretraining model: backbone + mask embedding + quantizer + contrastive heads.

State-dict keys: ``backbone.*`` (torchaudio ``Wav2Vec2Model`` names), ``mask_embedding``,
``quantizer.codevectors``, ``quantizer.weight_proj.*``, ``project_q.*``, ``final_proj.*``
(transformers calls the last one ``project_hid``).

Where lrasr follows fairseq rather than transformers (deliberately):
- only the masked frames are quantized and projected (transformers runs the quantizer, ``project_q``
  and ``project_hid`` on every frame); the numbers at masked frames are the same;
- the mask comes from ``lrasr.model.masking`` (fairseq's span count and equal counts per utterance);
- distractors are drawn per utterance among its masked frames with one vectorized draw;
- ``loss`` is per masked frame (fairseq's normalisation) and includes the feature penalty, which
  transformers does not have; the diversity loss always uses the softmax perplexity (transformers uses
  the hard-code perplexity in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lrasr.model.backbone import build_backbone, extract_features, frame_layout, normalize_waveform, run_transformer
from lrasr.model.config import Wav2Vec2Config
from lrasr.model.losses import contrastive_accuracy, contrastive_logits, contrastive_loss, diversity_loss
from lrasr.model.masking import compute_span_mask, sample_negatives
from lrasr.model.quantizer import GumbelQuantizer


@dataclass
class PretrainOutput:
    loss: Tensor  # scalar: contrastive + w_div * diversity + w_pen * feature_penalty, per masked frame
    losses: dict[str, Tensor]  # contrastive, diversity, feature_penalty (unweighted scalars)
    metrics: dict[str, float]  # accuracy, code_perplexity, prob_perplexity, temperature, mask_fraction
    num_masked: int
    # for tests and probes
    logits: Tensor | None = None  # [B, M, K+1]
    targets: Tensor | None = None  # [B, M, final_dim] projected quantized targets at masked frames
    mask: Tensor | None = None  # bool [B, T]
    hidden: Tensor | None = None  # [B, T, embed_dim] transformer output
    extra: dict[str, Tensor] = field(default_factory=dict)


class Wav2Vec2ForPreTraining(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        self.mask_embedding = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())
        self.dropout_features = nn.Dropout(cfg.dropout_features)
        self.quantizer = GumbelQuantizer(cfg.conv_dim, cfg.num_codevector_groups, cfg.num_codevectors_per_group,
                                         cfg.codevector_dim, cfg.latent_temp)
        self.project_q = nn.Linear(cfg.codevector_dim, cfg.final_dim)
        self.final_proj = nn.Linear(cfg.embed_dim, cfg.final_dim)
        self.generator: torch.Generator | None = None  # masks and distractors; None = global RNG

    def set_num_updates(self, step: int) -> float:
        """Set the Gumbel temperature for update ``step``; returns it."""
        return self.quantizer.set_num_updates(step)

    def compute_mask(self, frames: Tensor, num_frames: int) -> Tensor:
        """Span mask for a batch whose rows have ``frames`` valid frames: bool [B, T] (CPU)."""
        cfg = self.cfg
        return compute_span_mask((frames.shape[0], num_frames), cfg.mask_time_prob, cfg.mask_time_length,
                                 frames, cfg.mask_time_min_masks, cfg.require_same_masks, self.generator)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None,
                negative_indices: Tensor | None = None) -> PretrainOutput:
        """waveforms [B, S] float, lengths [B] samples; optional mask bool [B, T] (same count per row,
        never on padding) and negative_indices long [B, M, K] (into each utterance's M masked frames)."""
        cfg = self.cfg
        self.backbone.encoder.transformer.layer_drop = cfg.layerdrop  # cfg may be edited after __init__
        batch, num_samples = waveforms.shape
        device = waveforms.device
        # bookkeeping (frame counts, padding, mask, indices) stays on the CPU: see frame_layout
        frames, num_frames, pad_cpu = frame_layout(cfg, lengths, batch, num_samples)
        has_pad = bool(pad_cpu.any())
        pad = pad_cpu.to(device, non_blocking=True) if has_pad else None
        valid = int(frames.sum())

        if cfg.normalize_waveform:  # over real samples only (see normalize_waveform)
            waveforms = normalize_waveform(waveforms, lengths)
        feats = extract_features(self.backbone, waveforms, cfg.feature_grad_mult, lengths=lengths)  # [B, T, C]
        # feature penalty: mean square of the encoder's output over real frames (fairseq averages over
        # padding too; real frames only keeps it independent of how a batch was padded)
        sq = feats.float().pow(2)
        if pad is None:
            penalty = sq.mean()
        else:
            penalty = sq.sum(-1).masked_fill(pad, 0.0).sum() / max(valid * feats.shape[-1], 1)

        proj = self.backbone.encoder.feature_projection
        normed = proj.layer_norm(feats)  # the quantizer's input (fairseq's unmasked_features)
        x = proj.dropout(proj.projection(normed))
        mask_cpu = self.compute_mask(frames, num_frames) if mask is None else mask.detach().to("cpu", torch.bool)
        counts = mask_cpu.sum(1)
        m = int(counts[0]) if batch else 0
        if bool((counts != m).any()):
            raise ValueError("every utterance needs the same number of masked frames (require_same_masks)")
        if bool((mask_cpu & pad_cpu).any()):
            raise ValueError("the mask covers padded frames")
        mask = mask_cpu.to(device, non_blocking=True)
        where = mask_cpu.view(-1).nonzero().squeeze(1).to(device, non_blocking=True)  # row-major: [B*M]
        x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        hidden = run_transformer(self.backbone, x, pad)

        # everything below runs on the B*M masked frames only
        masked_hidden = hidden.reshape(batch * num_frames, -1).index_select(0, where)
        context = self.final_proj(masked_hidden).view(batch, m, cfg.final_dim)
        masked_feats = normed.reshape(batch * num_frames, -1).index_select(0, where)
        quant = self.quantizer(self.dropout_features(masked_feats))
        targets = self.project_q(quant.vectors.to(self.project_q.weight.dtype)).view(batch, m, cfg.final_dim)
        codes = quant.codes.view(batch, m, cfg.num_codevector_groups)
        if negative_indices is None:
            negative_indices = sample_negatives(m, batch, cfg.num_negatives, self.generator)
        negative_indices = negative_indices.to(device, torch.long, non_blocking=True)
        logits = contrastive_logits(context, targets, codes, negative_indices, cfg.logit_temp)

        if m > 0:
            l_con = contrastive_loss(logits)
            l_div = diversity_loss(quant.prob_perplexity, cfg.num_codevector_groups * cfg.num_codevectors_per_group)
        else:  # an utterance too short for a single frame: nothing to predict, keep the graph alive
            l_con = l_div = hidden.sum() * 0.0
        loss = l_con + cfg.diversity_loss_weight * l_div + cfg.feature_penalty_weight * penalty
        metrics = {
            "accuracy": contrastive_accuracy(logits),
            "code_perplexity": float(quant.code_perplexity) if m > 0 else 0.0,
            "prob_perplexity": float(quant.prob_perplexity.detach()) if m > 0 else 0.0,
            "temperature": float(self.quantizer.temperature),
            "mask_fraction": float(batch * m) / max(valid, 1),
        }
        return PretrainOutput(
            loss=loss,
            losses={"contrastive": l_con, "diversity": l_div, "feature_penalty": penalty},
            metrics=metrics,
            num_masked=batch * m,
            logits=logits,
            targets=targets,
            mask=mask,
            hidden=hidden,
        )
