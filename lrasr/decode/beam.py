"""CTC beam search with pyctcdecode, optionally fused with a KenLM word model.

Beam search is pure Python and runs one utterance per core: ``BeamDecoder.decode_batch`` spreads a
batch over a process pool whose workers each build their own decoder once (the KenLM model is
memory-mapped, so the workers share it), instead of pickling the decoder per call.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lrasr.decode.greedy import BPE_MARK, _as_numpy
from lrasr.decode.lm import LmFiles, locate_lm
from lrasr.decode.types import FRAME_SECONDS, Hypothesis, Word
from lrasr.errors import LrasrError
from lrasr.report import warn

# pyctcdecode logs a warning for every small vocabulary and alphabet quirk; we check those ourselves
logging.getLogger("pyctcdecode").setLevel(logging.ERROR)

# a word list where more than this share of words holds characters the model cannot emit is an LM for
# another language or another normalization, not a few stray symbols
MAX_UNREACHABLE_WORDS = 0.5
# blank probability above 0.999: the frame can only extend beams with blank (see blank_run_mask)
SURE_BLANK_LOGP = float(np.log(0.999))


@dataclass(frozen=True)
class DecoderSpec:
    """Everything a worker process needs to build the same decoder (picklable)."""

    labels: tuple[str, ...]
    kenlm_path: str | None
    unigrams: tuple[str, ...] | None
    alpha: float
    beta: float
    beam_width: int
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = 10.0
    frame_seconds: float = FRAME_SECONDS


def label_alphabet(labels: Sequence[str]) -> set[str]:
    """Characters the model can emit (decoder labels without the ``▁`` marks and the blank)."""
    return {c for lab in labels for c in lab.replace(BPE_MARK, "")} - {" "}


def check_lm_alphabet(labels: Sequence[str], unigrams: Sequence[str], lm_path: str | Path) -> None:
    """Raise ``LrasrError`` when the LM's words are mostly spelled with characters the model lacks."""
    if not unigrams:
        raise LrasrError("the LM's word list is empty; rebuild it with `lrasr lm build`", lm_path)
    alphabet = label_alphabet(labels)
    unreachable = [w for w in unigrams if not set(w) <= alphabet]
    share = len(unreachable) / len(unigrams)
    if share > MAX_UNREACHABLE_WORDS:
        missing = sorted({c for w in unreachable for c in w} - alphabet)
        raise LrasrError(
            f"the LM does not match the model's labels: {share:.0%} of its words use characters the model "
            f"cannot output ({''.join(missing[:20])!r}...); build the LM with the model's language and "
            "normalization (`lrasr lm build ... --language L`, or the recipe's lm stage)", lm_path)
    if unreachable:
        missing = sorted({c for w in unreachable for c in w} - alphabet)
        warn(f"{lm_path}: {len(unreachable)} of {len(unigrams)} LM words use characters the model cannot "
             f"output ({''.join(missing[:20])!r}); they can never be recognized")


def _build(spec: DecoderSpec):
    from pyctcdecode import build_ctcdecoder

    return build_ctcdecoder(list(spec.labels), kenlm_model_path=spec.kenlm_path,
                            unigrams=list(spec.unigrams) if spec.unigrams is not None else None,
                            alpha=spec.alpha, beta=spec.beta)


def _beam_to_hypothesis(beam, frame_seconds: float, kept: np.ndarray | None = None) -> Hypothesis:
    """pyctcdecode's best beam -> Hypothesis; ``kept`` maps decoded frame k to original frame kept[k]."""
    text, _state, word_frames = beam[0], beam[1], beam[2]
    words = []
    for w, (a, b) in word_frames:
        if kept is not None:
            a, b = int(kept[a]), int(kept[max(b - 1, a)]) + 1  # b is exclusive
        words.append(Word(w, round(a * frame_seconds, 3), round(b * frame_seconds, 3)))
    return Hypothesis(" ".join(text.split()), words)


def blank_run_mask(logprobs: np.ndarray, blank: int, min_logp: float = SURE_BLANK_LOGP) -> np.ndarray:
    """bool [F]: frames to keep, dropping all but the first frame of each run of near-certain blanks.

    Where blank has probability above ``exp(min_logp)`` every other token is below pyctcdecode's
    ``token_min_logp`` (-5), so such a frame only adds the same constant to every beam after the
    first blank of a run: dropping the repeats leaves the ranking, text and (mapped back) word
    frames unchanged, and skips most frames of a trained model's output (blank runs between letters).
    """
    norm = logprobs - np.logaddexp.reduce(logprobs, axis=1, keepdims=True)
    sure = norm[:, blank] > min_logp
    keep = np.ones(len(logprobs), dtype=bool)
    keep[1:] = ~(sure[1:] & sure[:-1])
    return keep


class _Engine:
    """One process's decoder with the alpha/beta it currently holds."""

    def __init__(self, spec: DecoderSpec):
        self.spec = spec
        self.decoder = _build(spec)
        self.params = (spec.alpha, spec.beta)
        self.blank = spec.labels.index("") if "" in spec.labels else -1

    def decode(self, logprobs: np.ndarray, alpha: float | None = None, beta: float | None = None) -> Hypothesis:
        alpha = self.spec.alpha if alpha is None else alpha
        beta = self.spec.beta if beta is None else beta
        if (alpha, beta) != self.params and self.spec.kenlm_path is not None:
            self.decoder.reset_params(alpha=float(alpha), beta=float(beta))
            self.params = (alpha, beta)
        if logprobs.shape[0] == 0:
            return Hypothesis("")
        keep = blank_run_mask(logprobs, self.blank) if self.blank >= 0 else None
        kept = None if keep is None or keep.all() else np.flatnonzero(keep)
        beams = self.decoder.decode_beams(logprobs if kept is None else logprobs[keep],
                                          beam_width=self.spec.beam_width,
                                          hotwords=list(self.spec.hotwords) or None,
                                          hotword_weight=self.spec.hotword_weight)
        return _beam_to_hypothesis(beams[0], self.spec.frame_seconds, kept)


_WORKER: _Engine | None = None


def _worker_init(spec: DecoderSpec) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = _Engine(spec)


def _worker_decode(args: tuple[np.ndarray, float | None, float | None]) -> Hypothesis:
    assert _WORKER is not None
    return _WORKER.decode(*args)


class BeamDecoder:
    """pyctcdecode beam search over a tokenizer's labels, with an optional KenLM folder or file.

    ``decode(logits [F, V]) -> Hypothesis`` (word timings from the beam's frames, 20 ms each);
    ``decode_batch(list of [F_i, V], alpha=None, beta=None)`` runs in ``processes`` worker processes
    (1 = in this process). Raises ``LrasrError`` for a missing LM, an ARPA without ``</s>``, or labels
    that do not match the LM's alphabet.
    """

    def __init__(self, tokenizer, lm_dir: str | Path | None = None, alpha: float = 0.5, beta: float = 1.0,
                 beam_width: int = 50, hotwords: Sequence[str] = (), hotword_weight: float = 10.0,
                 processes: int = 1):
        labels = tuple(tokenizer.pyctcdecode_labels())
        if len(set(labels)) != len(labels):
            raise LrasrError("the tokenizer's decoder labels contain duplicates; re-create the tokenizer")
        lm: LmFiles | None = locate_lm(lm_dir) if lm_dir is not None else None
        if lm is not None:
            check_lm_alphabet(labels, lm.unigrams, lm_dir)
        self.lm = lm
        self.spec = DecoderSpec(labels, str(lm.kenlm_path) if lm else None,
                                tuple(lm.unigrams) if lm else None, float(alpha), float(beta), int(beam_width),
                                tuple(h for h in hotwords if h.strip()), float(hotword_weight))
        self.processes = max(1, int(processes))
        self._local: _Engine | None = None
        self._pool: ProcessPoolExecutor | None = None

    @property
    def num_labels(self) -> int:
        return len(self.spec.labels)

    def _check(self, logits) -> np.ndarray:
        array = _as_numpy(logits).astype(np.float32, copy=False)
        if array.ndim != 2 or array.shape[1] != self.num_labels:
            raise LrasrError(f"the model outputs {array.shape[-1]} classes but its tokenizer has {self.num_labels} "
                             "labels: the model folder's tokenizer is not the one it was trained with")
        return array

    def decode(self, logits, alpha: float | None = None, beta: float | None = None) -> Hypothesis:
        if self._local is None:
            self._local = _Engine(self.spec)
        return self._local.decode(self._check(logits), alpha, beta)

    def decode_batch(self, logits_list: Sequence, alpha: float | None = None,
                     beta: float | None = None) -> list[Hypothesis]:
        arrays = [self._check(x) for x in logits_list]
        if self.processes == 1 or len(arrays) < 2:
            return [self.decode(a, alpha, beta) for a in arrays]
        pool = self._get_pool()
        # long utterances first so no worker is left with the longest one at the end
        order = sorted(range(len(arrays)), key=lambda i: -arrays[i].shape[0])
        results = pool.map(_worker_decode, [(arrays[i], alpha, beta) for i in order], chunksize=1)
        out: list[Hypothesis | None] = [None] * len(arrays)
        for i, hyp in zip(order, results):
            out[i] = hyp
        return out  # type: ignore[return-value]

    def submit(self, logits, alpha: float | None = None, beta: float | None = None):
        """Start decoding one utterance in the pool; returns a future (or a done-like holder)."""
        array = self._check(logits)
        if self.processes == 1:
            return _Done(self.decode(array, alpha, beta))
        return self._get_pool().submit(_worker_decode, (array, alpha, beta))

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # fork starts workers in milliseconds (they only run numpy and kenlm, never torch), but a
            # process that has initialised CUDA must not be forked
            import torch

            cuda_live = torch.cuda.is_available() and torch.cuda.is_initialized()
            method = "fork" if "fork" in mp.get_all_start_methods() and not cuda_live else "spawn"
            self._pool = ProcessPoolExecutor(self.processes, mp_context=mp.get_context(method),
                                             initializer=_worker_init, initargs=(self.spec,))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "BeamDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Done:
    """A finished result with the ``Future.result()`` method, for the in-process path."""

    def __init__(self, value: Hypothesis):
        self.value = value

    def result(self) -> Hypothesis:
        return self.value

    def done(self) -> bool:
        return True
