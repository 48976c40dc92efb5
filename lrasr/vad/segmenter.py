"""Streaming speech segmentation: frame decisions -> smoothed segments -> length limits.

Blocks of 16 kHz audio are pushed in order; finished segments come out with their audio as soon as
they close. Memory stays bounded by the longest open segment (itself capped, see ``hard_cap``), never
by the recording's length, and a segment that spans a block boundary is just a segment.

Smoothing is a ring buffer of the last ``padding_ms`` of frame decisions: a segment starts (at the
ring's first frame, so it keeps that much lead-in) once ``start_ratio`` of the ring is speech, and ends
(keeping the trailing ring as padding) once ``end_ratio`` of it is non-speech.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from lrasr.vad.backends import SAMPLE_RATE, FrameClassifier, make_classifier

# frames averaged when looking for the quietest place to split (about 150 ms at 30 ms frames)
SPLIT_SMOOTH_MS = 150


@dataclass
class Segment:
    start: int  # first sample (16 kHz, counted from the start of the recording)
    end: int  # one past the last sample
    wave: np.ndarray  # [end - start] float32

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def frame_energies_db(frames: np.ndarray, frame_samples: int) -> np.ndarray:
    """[n * frame_samples] -> [n] mean power per frame in dB (vectorized, no per-frame Python)."""
    n = frames.size // frame_samples
    x = frames[: n * frame_samples].reshape(n, frame_samples).astype(np.float32, copy=False)
    power = np.einsum("ij,ij->i", x, x) / frame_samples
    return 10.0 * np.log10(power + 1e-10)


def quietest_splits(energy_db: np.ndarray, max_frames: int, min_frames: int, smooth: int) -> list[int]:
    """Split points (frame offsets) that cut [n] frames into pieces of at most ``max_frames``.

    Each cut goes at the lowest smoothed energy among the places that leave both sides at least
    ``min_frames`` long (or a tenth of the span, whichever is more), so pieces end in pauses rather
    than mid-word. Recursion stops when every piece fits.
    """
    n = energy_db.size
    if n <= max_frames:
        return []
    k = max(1, min(smooth, n))
    smoothed = np.convolve(energy_db, np.ones(k) / k, mode="same") if k > 1 else energy_db
    cuts: list[int] = []

    def split(lo: int, hi: int) -> None:
        length = hi - lo
        if length <= max_frames:
            return
        margin = max(min_frames, length // 10, 1)
        a, b = lo + margin, hi - margin
        if b <= a:  # cannot honour min length on both sides: cut in the middle of what is allowed
            a, b = lo + max(1, length - max_frames), lo + max_frames + 1
        q = a + int(np.argmin(smoothed[a:b]))
        cuts.append(q)
        split(lo, q)
        split(q, hi)

    split(0, n)
    return sorted(cuts)


class StreamingSegmenter:
    """Push 16 kHz float32 blocks with ``push``; call ``finish`` at the end. Both return segments.

    ``cfg`` is a ``lrasr.recipe.VadConfig``. Segments shorter than ``min_seconds`` are returned too
    (callers record them as rejected); segments longer than ``max_seconds`` are split at their
    quietest frames.
    """

    def __init__(self, cfg, classifier: FrameClassifier | None = None):
        self.cfg = cfg
        self.classifier = classifier or make_classifier(cfg)
        self.F = self.classifier.frame_samples
        frame_ms = 1000.0 * self.F / SAMPLE_RATE
        self.ring_size = max(1, int(round(cfg.padding_ms / frame_ms)))
        self.start_need = max(1, math.ceil(cfg.start_ratio * self.ring_size - 1e-9))
        self.end_need = max(1, math.ceil(cfg.end_ratio * self.ring_size - 1e-9))
        self.max_frames = max(1, int(cfg.max_seconds * SAMPLE_RATE) // self.F)
        self.min_frames = int(math.ceil(cfg.min_seconds * SAMPLE_RATE / self.F))
        self.smooth = max(1, int(round(SPLIT_SMOOTH_MS / frame_ms)))
        # an open segment longer than this is cut (at its quietest frame) before it closes, so one
        # endless "speech" region (music, hum) cannot grow memory without bound
        self.hard_cap = max(4 * self.max_frames, int(60 * SAMPLE_RATE) // self.F)
        self._pending = np.zeros(0, dtype=np.float32)
        self._buf = np.zeros(0, dtype=np.float32)  # retained audio from frame _buf_frame on
        self._energy = np.zeros(0, dtype=np.float32)  # dB per retained frame
        self._buf_frame = 0
        self._next_frame = 0
        self._triggered = False
        self._ring: deque[bool] = deque()
        self._ring_count = 0  # voiced frames in the ring (not triggered) or unvoiced ones (triggered)
        self._seg_start = 0
        self.speech_frames = 0  # raw frame decisions that said speech (before smoothing)

    # ------------------------------------------------------------------------------------ public
    def push(self, block: np.ndarray) -> list[Segment]:
        data = np.concatenate([self._pending, np.asarray(block, dtype=np.float32).reshape(-1)])
        n = data.size // self.F
        frames, self._pending = data[: n * self.F], data[n * self.F:].copy()
        if n == 0:
            return []
        voiced = self.classifier.classify(frames)
        self.speech_frames += int(np.count_nonzero(voiced))
        self._buf = np.concatenate([self._buf, frames])
        self._energy = np.concatenate([self._energy, frame_energies_db(frames, self.F)])
        events = self._smooth(voiced)
        out = self._emit(events)
        self._trim()
        return out

    def finish(self) -> list[Segment]:
        events = []
        if self._triggered:
            events.append((self._seg_start, self._next_frame))
            self._triggered = False
        self._ring.clear()
        self._ring_count = 0
        out = self._emit(events)
        self._buf = np.zeros(0, dtype=np.float32)
        self._energy = np.zeros(0, dtype=np.float32)
        self._buf_frame = self._next_frame
        return out

    # ----------------------------------------------------------------------------------- private
    def _smooth(self, voiced: np.ndarray) -> list[tuple[int, int]]:
        """Run the ring-buffer state machine over [n] decisions; returns closed (start, end) frames."""
        events: list[tuple[int, int]] = []
        ring, size = self._ring, self.ring_size
        t = self._next_frame
        for v in voiced.tolist():
            if not self._triggered:
                ring.append(v)
                self._ring_count += v
                if len(ring) > size:
                    self._ring_count -= ring.popleft()
                if self._ring_count >= self.start_need:
                    self._triggered = True
                    self._seg_start = t - len(ring) + 1
                    ring.clear()
                    self._ring_count = 0
            else:
                ring.append(v)
                self._ring_count += not v
                if len(ring) > size:
                    self._ring_count -= not ring.popleft()
                if self._ring_count >= self.end_need:
                    events.append((self._seg_start, t + 1))
                    self._triggered = False
                    ring.clear()
                    self._ring_count = 0
                elif t + 1 - self._seg_start >= self.hard_cap:
                    cut = self._quietest(self._seg_start + self.max_frames // 2, self._seg_start + self.max_frames)
                    events.append((self._seg_start, cut))
                    self._seg_start = cut
            t += 1
        self._next_frame = t
        return events

    def _quietest(self, lo: int, hi: int) -> int:
        """Global frame index of the lowest smoothed energy in frames [lo, hi)."""
        e = self._energy[lo - self._buf_frame: hi - self._buf_frame]
        k = min(self.smooth, e.size)
        smoothed = np.convolve(e, np.ones(k) / k, mode="same") if k > 1 else e
        return lo + int(np.argmin(smoothed))

    def _emit(self, events: list[tuple[int, int]]) -> list[Segment]:
        out = []
        for s, e in events:
            rel = s - self._buf_frame
            cuts = quietest_splits(self._energy[rel: e - self._buf_frame], self.max_frames, self.min_frames, self.smooth)
            bounds = [s] + [s + c for c in cuts] + [e]
            for a, b in zip(bounds[:-1], bounds[1:]):
                wave = self._buf[(a - self._buf_frame) * self.F: (b - self._buf_frame) * self.F].copy()
                out.append(Segment(a * self.F, b * self.F, wave))
        return out

    def _trim(self) -> None:
        keep_from = self._seg_start if self._triggered else self._next_frame - len(self._ring)
        drop = keep_from - self._buf_frame
        if drop > 0:
            self._buf = self._buf[drop * self.F:].copy()
            self._energy = self._energy[drop:].copy()
            self._buf_frame = keep_from


def segment_stream(blocks: Iterable[np.ndarray], cfg, classifier: FrameClassifier | None = None) -> Iterator[Segment]:
    """Segments of a recording given as consecutive 16 kHz float32 blocks (see ``StreamingSegmenter``)."""
    seg = StreamingSegmenter(cfg, classifier)
    for block in blocks:
        yield from seg.push(block)
    yield from seg.finish()
