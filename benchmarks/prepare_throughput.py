"""Speed and memory of `prepare` on unlabeled audio against its floor, on >= 30 min of real speech.

Builds one long recording in a temp dir from the Malayalam crowd-sourced clips in
../shared/corpora/ml_smc_msc_crowd (Opus 48 kHz): clips joined with 0.3-2 s pauses and light noise,
written as 48 kHz 16-bit FLAC. Then, each in a fresh single-threaded process:

  floor  decode + resample to 16 kHz + webrtcvad frame decisions, nothing else
  full   the whole stage (run_prepare: VAD smoothing and splitting, SNR/clipping/duplicate filters,
         one FLAC per segment, manifests, report.json/png)
  full   again on the first third of the recording, to show peak memory does not grow with length

and prints times-real-time, the full/floor ratio, and peak resident memory (ru_maxrss).
Targets (issue 2): full >= 0.5 x floor and > 200x real time per core.

    .venv/bin/python benchmarks/prepare_throughput.py [--minutes 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpora" / "ml_smc_msc_crowd" / "audio"


def build_recording(path: Path, minutes: float, seed: int = 0) -> float:
    """Join real clips (48 kHz) with pauses and noise until ``minutes`` long; returns seconds."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    clips = sorted(CORPUS.glob("*.opus"))
    if not clips:
        sys.exit(f"real speech not found under {CORPUS}")
    target = int(minutes * 60 * 48000)
    written = 0
    with sf.SoundFile(str(path), "w", 48000, 1, format="FLAC", subtype="PCM_16") as out:
        i = 0
        while written < target:
            clip, rate = sf.read(str(clips[i % len(clips)]), dtype="float32", always_2d=True)
            assert rate == 48000
            pause = np.zeros(int(rng.uniform(0.3, 2.0) * rate), np.float32)
            chunk = np.concatenate([clip.mean(axis=1), pause])
            chunk += 0.002 * rng.standard_normal(chunk.size).astype(np.float32)
            chunk = chunk[: target - written]
            out.write(chunk)
            written += chunk.size
            i += 1
    return written / 48000


def child(mode: str, audio: str, workdir: str) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    from lrasr.audio.decode import iter_blocks, probe
    from lrasr.recipe import Recipe, VadConfig
    from lrasr.vad.backends import WebrtcClassifier

    from lrasr.report import console
    from lrasr.stages.prepare import run_prepare

    console.quiet = True
    seconds = probe(audio).duration
    # imports happen before the clock starts in both modes: they are start-up, not processing
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "floor":
        cfg = VadConfig()
        vad = WebrtcClassifier(cfg.aggressiveness, cfg.frame_ms)
        pending = np.zeros(0, np.float32)
        speech = 0
        for block in iter_blocks(audio, cfg.block_seconds):
            data = np.concatenate([pending, block])
            n = data.size // vad.frame_samples
            speech += int(vad.classify(data[: n * vad.frame_samples]).sum())
            pending = data[n * vad.frame_samples:]
        extra = {"speech_frames": speech}
    else:
        recipe = Recipe.model_validate({"name": "bench", "language": "ml", "workdir": workdir,
                                        "corpora": {"unlabeled": [{"path": audio}]}})
        summary = run_prepare(recipe)["unlabeled"]
        extra = {"segments": summary["segments"], "hours_kept": summary["hours_kept"],
                 "balanced": summary["speech_accounting"]["balanced"]}
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "seconds": seconds, "elapsed": elapsed, "xrt": seconds / elapsed,
                      "cpu": cpu, "xrt_cpu": seconds / cpu,
                      "peak_rss_mb": peak / 1024, "rss_before_mb": rss_start / 1024, **extra}))


def run_child(mode: str, audio: Path, workdir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(audio), str(workdir)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _runs(measures: list[dict], key: str = "xrt") -> str:
    return ", ".join(f"{m[key]:.0f}" for m in measures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "AUDIO", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="lrasr-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        long_s = build_recording(tmp / "long.flac", args.minutes)
        short_s = build_recording(tmp / "short.flac", args.minutes / 3)
        print(f"recording: {long_s / 60:.1f} min of real speech + pauses (48 kHz FLAC, built in "
              f"{time.perf_counter() - t0:.0f} s); short copy {short_s / 60:.1f} min")
        floors, fulls = [], []
        for r in range(args.repeats):  # interleaved: the machine is shared, take each one's best
            floors.append(run_child("floor", tmp / "long.flac", tmp / f"unused{r}"))
            fulls.append(run_child("full", tmp / "long.flac", tmp / f"work{r}"))
        short = run_child("full", tmp / "short.flac", tmp / "work_short")
        floor = max(floors, key=lambda m: m["xrt_cpu"])
        full = max(fulls, key=lambda m: m["xrt_cpu"])
        print("x real time = audio seconds / seconds taken; 'cpu' uses the process's CPU time (one thread),"
              " which is what one core delivers; 'wall' also counts waiting for the shared machine's cores")
        for name, m, runs in (("floor (decode + resample + webrtcvad)", floor, floors),
                              ("full prepare stage", full, fulls)):
            print(f"{name:38} cpu {m['xrt_cpu']:6.0f}x  wall {m['xrt']:6.0f}x  ({m['cpu']:.1f} s cpu, "
                  f"{m['elapsed']:.1f} s wall; all runs cpu: {_runs(runs, 'xrt_cpu')})")
        print(f"full stage: {full['segments']} segments, {full['hours_kept']:.3f} h kept, "
              f"speech accounting balanced: {full['balanced']}")
        print(f"ratio full / floor: cpu {full['xrt_cpu'] / floor['xrt_cpu']:.2f}, wall {full['xrt'] / floor['xrt']:.2f}"
              "  (target >= 0.5)")
        print(f"per core (1 process, 1 torch thread): {full['xrt_cpu']:.0f}x real time (target > 200)")
        print(f"peak RSS: floor {floor['peak_rss_mb']:.0f} MB, full {full['peak_rss_mb']:.0f} MB on "
              f"{long_s / 60:.0f} min, full {short['peak_rss_mb']:.0f} MB on {short_s / 60:.0f} min "
              f"(after imports: {full['rss_before_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
