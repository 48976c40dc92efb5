"""Placing a piece of audio decoded from the middle of a stream against the exact samples before it.

A decoder started mid-stream (``lrasr.audio.decode``'s torchcodec reader) lands a few samples off
where container timestamps are rounded; these pure functions measure by how much, and refuse a
measurement that is no match.
"""

from __future__ import annotations

import numpy as np

# Join measurement. Once settled, a decoder started mid-stream gives exactly the samples the one from the
# start gave (measured: residual ~1e-14 of the signal's power for AAC, Opus, Vorbis and FLAC, down to
# -100 dB), while any other alignment leaves 10% or more: a match worse than MAX_JOIN_RESIDUAL is not
# this signal, and a best match at the +-MAX_OFFSET edge lies beyond what was searched.
SILENCE = 1e-12  # mean square (-120 dB): digital silence and the last bits of a fade
QUIET_RELATIVE = 1e-7  # windows 70 dB below the loudest so far are not measured (hiss under speech still is)
MAX_JOIN_RESIDUAL = 1e-3


class JoinError(ValueError):
    """The best alignment of a piece with the samples before it is not a match."""


def window_power(x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean squares of ``x`` [n] in windows of ``width`` samples, half overlapping: (starts [w], power [w]);
    empty when ``x`` is shorter than one window."""
    hop = max(1, width // 2)
    cumulative = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    starts = np.arange(0, x.size - width + 1, hop) if width > 0 else np.zeros(0, dtype=np.int64)
    return starts, (cumulative[starts + width] - cumulative[starts]) / max(width, 1)


def loudest(x: np.ndarray, width: int) -> float:
    """Largest mean square over ``x`` [n] in windows of ``width`` samples, half overlapping."""
    if x.size < width or width <= 0:
        return float(np.square(x, dtype=np.float64).mean()) if x.size else 0.0
    return float(window_power(x, width)[1].max())


def join_offset(ref: np.ndarray, ref_start: int, piece: np.ndarray, piece_start: int, width: int, most: int,
                settle: int, quiet: float) -> int | None:
    """How many samples later than ``piece_start`` ``piece`` [n] really starts (negative: earlier), from
    its best match with ``ref`` [m] (exact samples at stream positions ``ref_start``..), compared in
    the loudest window of ``width`` samples that ``piece`` covers ``settle`` samples after its start,
    searched over +-``most`` samples. None when no such window's mean square reaches ``quiet``.
    Raises ``JoinError`` when the best match is no match (see MAX_JOIN_RESIDUAL) or lies at +-``most``.
    """
    shift = ref_start - piece_start  # ref[k] is piece[k + shift] when the offset is 0
    first = max(0, settle + most - shift)
    stop = min(ref.size, piece.size - shift - most) - width
    starts, power = window_power(ref[first:stop + width], width) if stop >= first else (np.zeros(0), np.zeros(0))
    if power.size == 0 or power.max() < quiet:
        return None
    best = first + int(starts[power.size - 1 - int(np.argmax(power[::-1]))])  # the last loudest window
    target = ref[best:best + width].astype(np.float64)
    seg = piece[best + shift - most: best + shift + most + width].astype(np.float64)  # lags -most..most
    # squared error of the target against seg[o:o + width] for every o, via FFT cross-correlation. Once
    # settled, the same decoder gives the same samples, so the true offset stands out even for a
    # periodic sound that matches one period away almost as well.
    n = 1 << int(np.ceil(np.log2(seg.size + width)))
    cross = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(target, n)), n)[: 2 * most + 1]
    power = np.concatenate([[0.0], np.cumsum(seg ** 2)])
    own = float(np.square(target).sum())
    errors = power[width: width + 2 * most + 1] - power[: 2 * most + 1] - 2 * cross + own
    o = int(np.argmin(errors))
    residual = max(0.0, float(errors[o])) / own
    if o in (0, 2 * most):
        raise JoinError(f"the best match is at the {most}-sample search limit")
    if residual > MAX_JOIN_RESIDUAL:
        raise JoinError(f"the best match leaves {residual:.1%} of the signal's power")
    # seg[o] lines up with the target's first sample: piece[j] is stream sample piece_start + j + (most - o)
    return most - o
