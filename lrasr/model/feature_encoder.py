"""The convolutional feature encoder, run so that padding never changes a real frame.

In the group-norm layout (``extractor_mode: group_norm``, the BASE/tiny shape) the first conv layer's
``GroupNorm`` normalizes every channel over the whole time axis. torchaudio, transformers and fairseq
all apply it to the padded batch, so the zeros of padding enter the statistics and every frame of a
padded utterance depends on what it was batched with (transformers therefore advises against padding
such models at all). lrasr deliberately differs here: given ``lengths`` of a padded batch, conv 0
and its norm run on each utterance's own samples, so the statistics are exactly those of the
utterance alone (``first_layer_per_utterance``); the later layers run on the whole batch. Without
padding (``lengths`` None, or every row long enough to fill all of conv 0's frames, as in
equal-length batches) the plain path runs and the numbers are torchaudio's and transformers' bit for
bit. Exported models keep transformers' layer names, so transformers itself still lets padding in:
feed it one utterance at a time (or unpadded batches) to get lrasr's numbers.

The later conv layers have no padding of their own and no cross-frame normalization: a real output
frame only sees real input frames, so fixing the norm is enough for the whole encoder (the
layer-norm layout normalizes each frame over channels and never mixed padding in).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torchaudio.models.wav2vec2 import components


def conv0_padding(lengths: Tensor, num_samples: int, kernel: int, stride: int) -> Tensor | None:
    """Valid frames of conv 0's output per row when the batch is padded there, else None.

    lengths [B] samples (CPU, already clamped to ``num_samples``) -> long [B], or None when every row
    fills all ``floor((num_samples - kernel) / stride) + 1`` frames: then no padded sample reaches a
    conv-0 frame and the plain group norm is exact.
    """
    frames = torch.clamp(torch.div(lengths - kernel, stride, rounding_mode="floor") + 1, min=0)
    full = max((num_samples - kernel) // stride + 1, 0)
    return None if bool((frames == full).all()) else frames


def first_layer_per_utterance(first: components.ConvLayerBlock, waveforms: Tensor, lengths: Tensor,
                              frames0: Tensor) -> Tensor:
    """Conv 0, its group norm and GELU, run on each utterance's own samples (as if alone).

    waveforms [B, S], lengths [B] samples and frames0 [B] conv-0 frames (both on the CPU) ->
    [B, C, T0] with T0 = conv 0's frames for S samples; frames past ``frames0[b]`` are 0. Row ``b`` is
    ``gelu(GroupNorm(conv(waveforms[b, :lengths[b]])))``, computed exactly as for the utterance alone
    by the native kernels on contiguous data: no masked reductions, so the cost stays that of the
    plain batch plus one copy (B small calls instead of one). A row with fewer than 2 conv-0 frames
    (under 15 samples: no output frame at all) is 0.
    """
    steps = (waveforms.shape[1] - first.kernel_size) // first.stride + 1
    rows: list[Tensor | None] = []
    for b, (n_samples, n) in enumerate(zip(lengths.tolist(), frames0.tolist())):
        if n < 2:  # GroupNorm needs 2 values per group in training; such a row yields no frame anyway
            rows.append(None)
            continue
        h = first.layer_norm(first.conv(waveforms[b:b + 1, None, :n_samples]))
        rows.append(nn.functional.pad(h, (0, steps - n)))
    present = [r for r in rows if r is not None]
    if not present:  # nothing to normalize; keep the parameters in the graph (DDP expects them)
        return first.layer_norm(first.conv(waveforms[:, None, :])) * 0.0
    out = torch.cat([torch.zeros_like(present[0]) if r is None else r for r in rows])
    return nn.functional.gelu(out)


class FeatureExtractor(components.FeatureExtractor):
    """torchaudio's feature encoder (same modules and parameter names) whose group norm ignores
    padding when ``length`` is given (see the module docstring)."""

    def forward(self, x: Tensor, length: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """x [B, S] samples, length [B] samples or None -> (features [B, T, C], frames [B] or None)."""
        if x.ndim != 2:
            raise ValueError(f"expected a [batch, samples] waveform tensor, got shape {list(x.shape)}")
        first = self.conv_layers[0]
        if length is None or not isinstance(first.layer_norm, nn.GroupNorm):
            return super().forward(x, length)
        # the decision needs the lengths on the CPU (one small copy; frame_layout makes the same one)
        samples = length.detach().to("cpu", torch.long).clamp(0, x.shape[1])
        frames0 = conv0_padding(samples, x.shape[1], first.kernel_size, first.stride)
        if frames0 is None:  # nothing padded reaches conv 0's frames: the plain (torchaudio) path
            return super().forward(x, length)
        h = first_layer_per_utterance(first, x, samples, frames0)
        frames = torch.clamp(torch.div(length - first.kernel_size, first.stride, rounding_mode="floor") + 1, min=0)
        for layer in self.conv_layers[1:]:
            h, frames = layer(h, frames)
        return h.transpose(1, 2), frames


def build_feature_extractor(mode: str, conv_layers: list[tuple[int, int, int]], bias: bool) -> FeatureExtractor:
    """torchaudio's ``_get_feature_extractor`` modules inside the padding-aware ``FeatureExtractor``."""
    plain = components._get_feature_extractor(mode, conv_layers, bias)
    return FeatureExtractor(plain.conv_layers)
