"""Voice activity detection shared by `prepare` (segmenting raw recordings) and `transcribe` (chunking).

``detect_speech`` works on an in-memory waveform; ``segment_stream`` on blocks of a long recording.
Backends: webrtcvad (default) and Silero (model shipped in its wheel). Quality measures live in
``lrasr.vad.quality``.
"""

from __future__ import annotations

import numpy as np

from lrasr.vad.backends import SAMPLE_RATE
from lrasr.vad.segmenter import Segment, StreamingSegmenter, segment_stream

__all__ = ["detect_speech", "segment_stream", "Segment", "StreamingSegmenter"]


def detect_speech(wave: np.ndarray, cfg) -> list[tuple[float, float]]:
    """Speech segments of [T] float32 16 kHz audio as (start, end) seconds, in order.

    Smoothed with the ring buffer of ``cfg.padding_ms``; segments shorter than ``cfg.min_seconds``
    are dropped; segments longer than ``cfg.max_seconds`` are split at their quietest frames.
    ``cfg`` is a ``lrasr.recipe.VadConfig`` (``backend`` picks webrtc or silero).
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    step = max(1, int(cfg.block_seconds * SAMPLE_RATE))
    blocks = (wave[i: i + step] for i in range(0, wave.size, step))
    return [(s.start_s, s.end_s) for s in segment_stream(blocks, cfg) if s.duration + 1e-9 >= cfg.min_seconds]
