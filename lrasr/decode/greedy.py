"""Greedy (best path) CTC decoding with word timings."""

from __future__ import annotations

import numpy as np
import torch

from lrasr.decode.types import FRAME_SECONDS, Hypothesis, Word

BPE_MARK = "\u2581"  # sentencepiece's word-start mark


def _as_numpy(logits) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits)


def best_path(logits, blank_id: int = 0) -> list[tuple[int, int, int]]:
    """CTC best path of ``logits`` [F, V]: collapsed tokens as (token id, first frame, last frame + 1)."""
    ids = _as_numpy(logits).argmax(axis=-1)
    out: list[tuple[int, int, int]] = []
    prev = -1
    for frame, idx in enumerate(ids.tolist()):
        if idx != prev and idx != blank_id:
            out.append((idx, frame, frame + 1))
        elif idx == prev and idx != blank_id:
            token, start, _ = out[-1]
            out[-1] = (token, start, frame + 1)
        prev = idx
    return out


def greedy_decode(logits, tokenizer) -> str:
    """Text of the best CTC path of ``logits`` [F, V] (only the valid frames), via ``tokenizer.decode``."""
    return tokenizer.decode([t for t, _, _ in best_path(logits, tokenizer.blank_id)])


def greedy_hypothesis(logits, tokenizer, frame_seconds: float = FRAME_SECONDS) -> Hypothesis:
    """Best path of ``logits`` [F, V] as text plus word timings.

    Word boundaries follow the decoder labels (``tokenizer.pyctcdecode_labels()``): a space label
    (the char tokenizer's ``|``) separates words; a sentencepiece piece starting with ``▁`` starts one.
    """
    path = best_path(logits, tokenizer.blank_id)
    text = tokenizer.decode([t for t, _, _ in path])
    labels = tokenizer.pyctcdecode_labels()
    words: list[Word] = []
    current, start, end = "", -1, -1

    def flush() -> None:
        nonlocal current, start
        if current.strip():
            words.append(Word(current.strip(), round(start * frame_seconds, 3), round(end * frame_seconds, 3)))
        current, start = "", -1

    for token, first, last in path:
        label = labels[token]
        if label == " " or label == "|":
            flush()
            continue
        if label.startswith(BPE_MARK):
            flush()
            label = label[1:]
        if not label:
            continue
        if start < 0:
            start = first
        current += label
        end = last
    flush()
    if " ".join(w.text for w in words) != " ".join(text.split()):
        # the tokenizer's decode applies rules beyond concatenation (e.g. unknown-piece marks): keep its
        # text and spread the timings over its words in order, which stays truthful when counts match
        pieces = text.split()
        if len(pieces) == len(words):
            words = [Word(p, w.start, w.end) for p, w in zip(pieces, words)]
    return Hypothesis(" ".join(text.split()), words)
