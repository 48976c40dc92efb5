"""Span masking with fairseq's semantics, vectorized over the batch.

fairseq (``compute_mask_indices``, static span lengths, overlaps allowed), which lrasr follows here
rather than transformers' ``_compute_mask_indices``:

- spans per utterance = ``int(mask_prob * valid_frames / mask_length + u)``, u ~ U[0, 1) (probabilistic
  rounding; one draw for the batch when nothing is padded, one per utterance otherwise), at least
  ``min_masks``;
- span starts are drawn without replacement from ``[0, valid - mask_length)``; spans may overlap, so
  0.65 x 10 masks about 1 - (1 - 0.065)^10 = 49% of the frames;
- ``require_same_masks``: every utterance keeps the batch's smallest count of masked frames (extra
  masked frames are unmasked at random), so the contrastive loss sees equal-sized sets per utterance;
- padding is never masked.

transformers instead pads the span list with a repeated start and does not equalise counts.
Everything is drawn on the CPU from an optional ``torch.Generator`` (deterministic given its seed).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rand(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator)


def compute_span_mask(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    lengths: Tensor | None = None,
    min_masks: int = 0,
    require_same_masks: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random span mask.

    shape (B, T); lengths [B] valid frames per row (None = all T). Returns bool [B, T] on the CPU.
    """
    batch, total = shape
    if mask_prob <= 0.0 or total == 0:
        return torch.zeros(batch, total, dtype=torch.bool)
    if lengths is None:
        valid = torch.full((batch,), total, dtype=torch.long)
    else:
        valid = lengths.detach().to("cpu", torch.long).clamp(0, total)
    padded = bool((valid < total).any())
    u = _rand((batch,), generator) if padded else _rand((1,), generator).expand(batch)
    num_spans = (mask_prob * valid.double() / mask_length + u.double()).long().clamp_min(min_masks)
    # fairseq: starts from range(valid - mask_length); when that leaves too few positions, from
    # range(num_spans + 1) and the spans get cut at the utterance's end
    num_starts = valid - mask_length
    num_starts = torch.where(num_starts <= num_spans, num_spans + 1, num_starts).clamp(max=total)
    num_spans = torch.minimum(num_spans, num_starts)
    positions = torch.arange(total)
    keys = _rand((batch, total), generator)
    keys = keys.masked_fill(positions[None, :] >= num_starts[:, None], -1.0)
    k = int(num_spans.max())
    mask = torch.zeros(batch, total, dtype=torch.bool)
    if k == 0:
        return mask
    # top-k of uniform keys = a uniform sample without replacement; keep the first num_spans of them
    order = keys.topk(k, dim=1).indices
    keep = torch.arange(k)[None, :] < num_spans[:, None]
    starts = torch.zeros(batch, total + 1, dtype=torch.long)
    starts.scatter_add_(1, torch.where(keep, order, total), keep.long())
    starts = starts[:, :total]
    # frame t is masked if any span starts in (t - mask_length, t]
    covered = starts.cumsum(1)
    covered[:, mask_length:] -= covered[:, :-mask_length].clone()
    mask = (covered > 0) & (positions[None, :] < valid[:, None])
    if require_same_masks and batch > 1:
        mask = _equalize_counts(mask, generator)
    return mask


def _equalize_counts(mask: Tensor, generator: torch.Generator | None) -> Tensor:
    """Unmask random frames so every row has the smallest row's number of masked frames."""
    counts = mask.sum(1)
    target = int(counts.min())
    if bool((counts == target).all()):
        return mask
    out = torch.zeros_like(mask)
    if target == 0:
        return out
    keys = _rand(tuple(mask.shape), generator).masked_fill(~mask, -1.0)
    out.scatter_(1, keys.topk(target, dim=1).indices, True)
    return out


def compute_channel_mask(
    batch: int,
    channels: int,
    mask_prob: float,
    mask_length: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Channel (feature-dimension) mask for fine-tuning: bool [B, C], True = zero this channel.

    fairseq draws it with the same span routine over the channel axis (no minimum, same count per row).
    """
    return compute_span_mask((batch, channels), mask_prob, mask_length, None, 0, True, generator)


def sample_negatives(num_masked: int, batch: int, num_negatives: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """Distractor indices, long [B, M, K]: for masked frame i of an utterance, K indices into the
    SAME utterance's M masked frames, uniform over the others (i itself excluded), with replacement.

    This is fairseq's ``sample_negatives`` (transformers' ``_sample_negative_indices`` is the same
    distribution, over all positions of a flattened batch). With M < 2 there is nothing to draw: all
    zeros are returned and the loss masks them out because they equal the positive.
    """
    if num_masked < 2:
        return torch.zeros(batch, num_masked, num_negatives, dtype=torch.long)
    idx = torch.randint(0, num_masked - 1, (batch, num_masked, num_negatives), generator=generator)
    own = torch.arange(num_masked)[None, :, None]
    return idx + (idx >= own).long()
