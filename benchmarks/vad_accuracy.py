"""Frame-level speech detection accuracy of the webrtc and silero VAD backends.

Reference: the union of speaker turns in ../shared/corpora/vad_ami_train/debug.train.rttm (AMI
meeting excerpts, 10 x 30 s), scored inside the UEM regions at 10 ms frames. Hypothesis: the
segments lrasr's VAD produces (ring-buffer smoothing with padding, no minimum length, so short
segments count), for each backend and a few settings. Prints precision, recall, F1 and speed.

    .venv/bin/python benchmarks/vad_accuracy.py [--corpus ../shared/corpora/vad_ami_train]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lrasr.audio.decode import load  # noqa: E402
from lrasr.recipe import VadConfig  # noqa: E402
from lrasr.vad import segment_stream  # noqa: E402

STEP = 0.01  # scoring frame (s)


def read_rttm(path: Path) -> dict[str, list[tuple[float, float]]]:
    turns: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] == "SPEAKER":
            start, dur = float(parts[3]), float(parts[4])
            turns[parts[1]].append((start, start + dur))
    return turns


def read_uem(path: Path) -> dict[str, list[tuple[float, float]]]:
    regions: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 4:
            regions[parts[0]].append((float(parts[2]), float(parts[3])))
    return regions


def to_mask(segments: list[tuple[float, float]], frames: int) -> np.ndarray:
    mask = np.zeros(frames, dtype=bool)
    for start, end in segments:
        mask[int(round(start / STEP)): int(round(end / STEP))] = True
    return mask


def score(corpus: Path, cfg: VadConfig) -> dict[str, float]:
    refs = read_rttm(corpus / "debug.train.rttm")
    uem = read_uem(corpus / "debug.train.uem")
    tp = fp = fn = 0
    seconds = audio_seconds = 0.0
    for uri in sorted(refs):
        wave = load(corpus / f"{uri}.flac")
        frames = int(np.ceil(wave.size / 16000 / STEP))
        t0 = time.process_time()
        hyp = [(s.start_s, s.end_s) for s in segment_stream([wave], cfg)]
        seconds += time.process_time() - t0
        audio_seconds += wave.size / 16000
        scored = to_mask(uem.get(uri, [(0.0, wave.size / 16000)]), frames)
        ref, h = to_mask(refs[uri], frames) & scored, to_mask(hyp, frames) & scored
        tp += int(np.count_nonzero(ref & h))
        fp += int(np.count_nonzero(~ref & h))
        fn += int(np.count_nonzero(ref & ~h))
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(1e-9, precision + recall), "x_realtime": audio_seconds / max(1e-9, seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpora" / "vad_ami_train")
    args = parser.parse_args()
    if not (args.corpus / "debug.train.rttm").is_file():
        sys.exit(f"reference corpus not found at {args.corpus}")
    torch.set_num_threads(1)
    settings = [
        ("webrtc", "recipe default (aggr 2, 30 ms, pad 300 ms)", VadConfig(min_seconds=0.0)),
        ("webrtc", "aggressiveness 0", VadConfig(aggressiveness=0, min_seconds=0.0)),
        ("webrtc", "aggressiveness 3", VadConfig(aggressiveness=3, min_seconds=0.0)),
        ("webrtc", "aggr 2, 10 ms frames, pad 100 ms", VadConfig(frame_ms=10, padding_ms=100, min_seconds=0.0)),
        ("silero", "threshold 0.5, pad 300 ms", VadConfig(backend="silero", min_seconds=0.0)),
        ("silero", "threshold 0.5, pad 100 ms", VadConfig(backend="silero", padding_ms=100, min_seconds=0.0)),
        ("silero", "threshold 0.3, pad 300 ms", VadConfig(backend="silero", silero_threshold=0.3, min_seconds=0.0)),
    ]
    print(f"VAD accuracy vs RTTM speaker turns, {args.corpus.name} (10 files x 30 s), 10 ms frames, 1 thread")
    print(f"{'backend':8} {'setting':44} {'precision':>9} {'recall':>7} {'F1':>6} {'x rt (cpu)':>11}")
    for backend, label, cfg in settings:
        r = score(args.corpus, cfg)
        print(f"{backend:8} {label:44} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['x_realtime']:11.0f}")


if __name__ == "__main__":
    main()
