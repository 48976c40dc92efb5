"""Split recordings of any length into chunks the acoustic model can take, in bounded memory.

A file no longer than ``chunk_seconds`` is one chunk, whole (VAD would only risk clipping word
edges). A longer file is read block by block (``lrasr.audio.decode.iter_blocks``); the prepare
stage's VAD (``lrasr.vad.detect_speech``) finds speech in each block, and neighbouring speech
segments are grouped into chunks of at most ``chunk_seconds``, cut only at silences. Speech running
into the end of a block is carried over into the next block instead of being cut, so memory stays
at about one block plus one chunk whatever the file's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lrasr.audio.decode import SAMPLE_RATE, iter_blocks, probe

Segmenter = Callable[[np.ndarray], "list[tuple[float, float]]"]

# speech segments closer than this are decoded together (the gap is short enough to be a pause)
MAX_GAP_SECONDS = 1.0
# always re-examine this much audio at a block end: VAD needs context to open a segment
CARRY_SECONDS = 1.0
# a file whose peak stays below this is digital silence
SILENCE_PEAK = 1e-4


@dataclass
class Chunk:
    """A piece of a recording: ``wave`` [T] float32 16 kHz starting ``start`` seconds into the file."""

    start: float
    wave: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.wave) / SAMPLE_RATE


def vad_segmenter(vad_cfg, chunk_seconds: float) -> Segmenter:
    """``lrasr.vad.detect_speech`` with its maximum segment length capped at ``chunk_seconds``.

    Short speech (one word) matters in transcription even where pretraining drops it, so the
    minimum segment length is lowered to 0.2 s.
    """
    from lrasr.vad import detect_speech

    cfg = vad_cfg.model_copy(update={
        "max_seconds": min(float(vad_cfg.max_seconds), chunk_seconds),
        "min_seconds": min(float(vad_cfg.min_seconds), 0.2),
    })

    def segment(wave: np.ndarray) -> list[tuple[float, float]]:
        return [(float(a), float(b)) for a, b in detect_speech(wave, cfg)]

    return segment


def split_at_quiet(wave: np.ndarray, max_seconds: float, frame: int = 320) -> list[tuple[int, int]]:
    """Cut ``wave`` [T] into pieces of at most ``max_seconds``, each cut at the quietest 20 ms frame
    of the last third of the allowed length. Returns sample ranges covering the whole wave."""
    limit = int(max_seconds * SAMPLE_RATE)
    out: list[tuple[int, int]] = []
    start = 0
    while len(wave) - start > limit:
        lo, hi = start + (2 * limit) // 3, start + limit
        frames = (hi - lo) // frame
        if frames >= 1:
            energy = (wave[lo: lo + frames * frame].reshape(frames, frame) ** 2).sum(axis=1)
            cut = lo + int(energy.argmin()) * frame + frame // 2
        else:
            cut = hi
        out.append((start, cut))
        start = cut
    if start < len(wave):
        out.append((start, len(wave)))
    return out


def group_segments(segments: list[tuple[float, float]], chunk_seconds: float,
                   max_gap: float = MAX_GAP_SECONDS) -> list[tuple[float, float]]:
    """Merge time-ordered speech segments into spans of at most ``chunk_seconds`` (gaps under ``max_gap``)."""
    spans: list[tuple[float, float]] = []
    for a, b in segments:
        if spans and a - spans[-1][1] <= max_gap and b - spans[-1][0] <= chunk_seconds:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def _chunks_of_span(buffer: np.ndarray, buffer_start: float, a: float, b: float,
                    chunk_seconds: float) -> Iterator[Chunk]:
    lo, hi = max(0, int(round(a * SAMPLE_RATE))), min(len(buffer), int(round(b * SAMPLE_RATE)))
    piece = buffer[lo:hi]
    for s, e in split_at_quiet(piece, chunk_seconds):
        yield Chunk(round(buffer_start + (lo + s) / SAMPLE_RATE, 3), piece[s:e].copy())


def iter_chunks(path: str | Path, chunk_seconds: float, segmenter: Segmenter | None = None,
                block_seconds: float = 60.0) -> Iterator[Chunk]:
    """Chunks of ``path`` in time order (see the module docstring). Raises ``AudioError`` if unreadable.

    ``segmenter(wave [T]) -> [(start_s, end_s)]`` finds speech; ``None`` cuts at the quietest points
    only (no VAD). A silent file yields nothing.
    """
    info = probe(path)
    if info.duration <= chunk_seconds:
        wave = np.concatenate(list(iter_blocks(path, max(block_seconds, chunk_seconds + 1))) or [np.zeros(0, np.float32)])
        if wave.size and np.abs(wave).max() >= SILENCE_PEAK:
            yield Chunk(0.0, wave)
        return
    block_seconds = max(block_seconds, 2 * chunk_seconds)
    carry = np.zeros(0, np.float32)
    carry_start = 0.0
    blocks = iter_blocks(path, block_seconds)
    block = next(blocks, None)
    while block is not None:
        nxt = next(blocks, None)
        last = nxt is None
        buffer = np.concatenate([carry, block]) if carry.size else block
        length = len(buffer) / SAMPLE_RATE
        if segmenter is None:
            segments = [(0.0, length)] if np.abs(buffer).max(initial=0.0) >= SILENCE_PEAK else []
        else:
            segments = sorted(segmenter(buffer))
        cut = length
        if not last:
            # a segment reaching into the final CARRY_SECONDS may continue in the next block
            cut = max(0.0, length - CARRY_SECONDS)
            if segmenter is None:
                # without VAD, leave the tail to be cut at a quiet point together with the next block
                cut = max(0.0, length - chunk_seconds)
                segments = [(0.0, cut)] if segments else []
            else:
                open_segments = [a for a, b in segments if b > cut]
                if open_segments:
                    cut = min(cut, min(open_segments))
                # VAD caps segments at chunk_seconds, so this only guards the carry against a faulty one
                cut = max(cut, length - chunk_seconds - CARRY_SECONDS)
                segments = [(a, b) for a, b in segments if b <= cut]
        for a, b in group_segments(segments, chunk_seconds):
            yield from _chunks_of_span(buffer, carry_start, a, b, chunk_seconds)
        if not last:
            keep = int(round(cut * SAMPLE_RATE))
            carry = buffer[keep:].copy()
            carry_start = round(carry_start + keep / SAMPLE_RATE, 6)
        block = nxt
