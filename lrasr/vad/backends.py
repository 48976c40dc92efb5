"""Frame classifiers: speech / non-speech decisions for consecutive fixed-length frames at 16 kHz.

A classifier is fed whole frames in order, block after block, and keeps whatever state its model
needs across calls, so a long recording can be classified without holding it in memory.
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np

from lrasr.audio.decode import SAMPLE_RATE


class FrameClassifier(Protocol):
    frame_samples: int

    def classify(self, frames: np.ndarray) -> np.ndarray:
        """[n * frame_samples] float32 -> [n] bool (True = speech)."""
        ...


class WebrtcClassifier:
    """webrtcvad (GMM-based, C); frames of exactly 10, 20 or 30 ms; aggressiveness 0 (lenient) to 3."""

    def __init__(self, aggressiveness: int = 2, frame_ms: int = 30):
        import _webrtcvad
        import webrtcvad

        if frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad frames must be 10, 20 or 30 ms, not {frame_ms}")
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        # one Vad object for the whole stream: its noise model adapts across frames and blocks
        self._vad = webrtcvad.Vad(int(aggressiveness))
        self._process = _webrtcvad.process

    def classify(self, frames: np.ndarray) -> np.ndarray:
        n = frames.size // self.frame_samples
        pcm = memoryview(to_int16(frames[: n * self.frame_samples]).tobytes())
        step, length = 2 * self.frame_samples, self.frame_samples
        # the C entry point directly: the Python wrapper's checks cost more than the VAD itself
        process, handle = self._process, self._vad._vad
        return np.fromiter((process(handle, SAMPLE_RATE, pcm[i * step:(i + 1) * step], length) for i in range(n)),
                           dtype=bool, count=n)


class SileroClassifier:
    """Silero VAD (the TorchScript model shipped inside the silero-vad wheel; no download).

    The model works on 512-sample (32 ms) windows with a recurrent state. Its batch entry point resets
    that state on every call, so each block is prefixed with the last ``CONTEXT_FRAMES`` frames of the
    previous block and their outputs are dropped: the state is warm again by the block's first frame.
    """

    CONTEXT_FRAMES = 16

    def __init__(self, threshold: float = 0.5):
        import torch

        self.frame_samples = 512
        self.threshold = float(threshold)
        self._torch = torch
        self._model = _silero_model()
        self._context = np.zeros(0, dtype=np.float32)

    def classify(self, frames: np.ndarray) -> np.ndarray:
        n = frames.size // self.frame_samples
        if n == 0:
            return np.zeros(0, dtype=bool)
        frames = np.asarray(frames[: n * self.frame_samples], dtype=np.float32)
        skip = self._context.size // self.frame_samples
        audio = np.concatenate([self._context, frames])
        with self._torch.inference_mode():
            probs = self._model.audio_forward(self._torch.from_numpy(audio), SAMPLE_RATE)[0].numpy()
        self._context = audio[-self.CONTEXT_FRAMES * self.frame_samples:].copy()
        return probs[skip: skip + n] >= self.threshold


@functools.lru_cache(maxsize=1)
def _silero_model():
    """Load once per process: TorchScript re-optimizes a fresh model on its first calls, which costs
    more than a short file's whole analysis. Safe to share: ``audio_forward`` resets its state."""
    from silero_vad import load_silero_vad

    return load_silero_vad(onnx=False)


def to_int16(wave: np.ndarray) -> np.ndarray:
    """[T] float in [-1, 1] -> [T] int16 (clipped, rounded)."""
    return np.clip(np.rint(np.asarray(wave, dtype=np.float32) * 32767.0), -32768, 32767).astype(np.int16)


def make_classifier(cfg) -> FrameClassifier:
    """The backend named by ``cfg.backend`` (a ``lrasr.recipe.VadConfig``)."""
    if cfg.backend == "silero":
        return SileroClassifier(cfg.silero_threshold)
    return WebrtcClassifier(cfg.aggressiveness, cfg.frame_ms)
