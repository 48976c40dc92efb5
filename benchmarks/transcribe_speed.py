"""Transcription speed: lrasr greedy and beam+KenLM vs transformers' ASR pipeline, same model, same file.

A 30-minute recording is made by joining real Malayalam clips (../shared/corpora/ml_smc_msc_crowd)
in a temporary folder. The model is the ``tiny`` preset (or ``--model DIR``). Without a trained
tiny model at hand, random weights are used with the output layer calibrated so that about 65% of
frames are blank, as in a trained CTC model (beam-search cost depends on how peaked the outputs are);
the figures are speeds only, not accuracy. The same weights are exported with lrasr's
transformers exporter and run through ``pipeline("automatic-speech-recognition")`` with the same
20 s chunks. Prints real-time factors (processing time / audio time) and their ratios.

Targets (issue 6): lrasr greedy at least as fast as the pipeline; beam+LM (beam 50) under 0.3 RTF.

    .venv/bin/python benchmarks/transcribe_speed.py [--minutes 30] [--model DIR] [--skip-hf]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = Path(os.environ.get("LRASR_SHARED_CORPORA", REPO.parent / "shared" / "corpora")) / "ml_smc_msc_crowd"
BLANK_SHARE = 0.65


def build_recording(out: Path, minutes: float) -> tuple[Path, list[str]]:
    """Join real clips (with 0.4 s pauses of faint noise) into one 16 kHz 16-bit WAV of ``minutes``."""
    import soundfile as sf

    from lrasr.audio.decode import SAMPLE_RATE, load

    with open(CORPUS / "transcripts.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rng = np.random.default_rng(0)
    target = int(minutes * 60 * SAMPLE_RATE)
    written = 0
    with sf.SoundFile(str(out), "w", SAMPLE_RATE, 1, subtype="PCM_16") as handle:
        i = 0
        while written < target:
            wave = load(CORPUS / rows[i % len(rows)]["path"])
            pause = (rng.standard_normal(int(0.4 * SAMPLE_RATE)) * 3e-3).astype(np.float32)
            piece = np.concatenate([wave, pause])[: target - written]
            handle.write(piece)
            written += len(piece)
            i += 1
    return out, [r["text"] for r in rows]


def build_model(out: Path, texts: list[str], sample: Path):
    """Random-weight tiny CTC model + char tokenizer, blank bias calibrated to BLANK_SHARE."""
    import torch

    from lrasr.audio.decode import load
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.model.io import save_model_dir
    from lrasr.recipe import TextConfig
    from lrasr.text.normalize import Normalizer
    from lrasr.text.tokenizer import CharTokenizer

    normalizer = Normalizer("ml", TextConfig())
    tok = CharTokenizer.from_texts([normalizer.normalize(t) for t in texts])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config.from_recipe("tiny"), len(tok.labels)).eval()
    with torch.no_grad():
        model.aux.weight.mul_(20.0)
        wave = torch.from_numpy(load(sample, end=60.0))[None]
        logits, _ = model(wave, torch.tensor([wave.shape[1]]))
        logits = logits[0]
        gap = logits[:, 1:].max(dim=1).values - logits[:, 0]
        model.aux.bias[0] += float(torch.quantile(gap, BLANK_SHARE)) + 1e-3
    save_model_dir(out, model, tok)
    return out


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (beam-search workers), all threads."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_lrasr(model_dir: Path, audio: Path, lm_dir: Path | None, beam_width: int, processes: int) -> dict:
    from lrasr.decode.transcribe import build_transcriber

    decoder = "beam" if lm_dir is not None else "greedy"
    tr = build_transcriber(model_dir, lm_dir, decoder, "cpu", processes=processes, beam_width=beam_width)
    cpu = cpu_seconds()
    try:
        [result] = tr.transcribe([audio])
    finally:
        if tr.decoder is not None:
            tr.decoder.close()  # reaps the workers, so their CPU time is counted
    cpu = cpu_seconds() - cpu
    assert result.error is None, result.error
    return {"rtf": tr.stats.rtf, "seconds": tr.stats.wall_seconds, "cpu_seconds": cpu,
            "audio_seconds": tr.stats.audio_seconds, "chunks": tr.stats.chunks,
            "words": len(result.hypothesis.text.split()), "text": result.hypothesis.text}


def run_pipeline(model_dir: Path, audio: Path, work: Path, audio_seconds: float) -> dict:
    from transformers import pipeline

    from lrasr.convert import export_hf

    hf_dir = work / "hf"
    if not hf_dir.is_dir():
        export_hf(model_dir, hf_dir)
    asr = pipeline("automatic-speech-recognition", model=str(hf_dir), device="cpu")
    cpu = cpu_seconds()
    start = time.perf_counter()
    out = asr(str(audio), chunk_length_s=20, batch_size=8)
    seconds = time.perf_counter() - start
    return {"rtf": seconds / audio_seconds, "seconds": seconds, "cpu_seconds": cpu_seconds() - cpu,
            "words": len(out["text"].split()), "text": out["text"]}


def fastest(a: dict | None, b: dict) -> dict:
    return b if a is None or b["seconds"] < a["seconds"] else a


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--model", type=Path, help="a fine-tuned model folder instead of the random tiny one")
    parser.add_argument("--beam-width", type=int, default=50)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="greedy/pipeline runs (alternating; fastest counts)")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        sys.exit(f"needs the real-speech corpora at {CORPUS} (set LRASR_SHARED_CORPORA)")
    import torch

    from lrasr.decode.lm import build_lm
    from lrasr.recipe import TextConfig
    from lrasr.text.normalize import Normalizer

    torch.set_num_threads(args.processes)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lrasr-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        audio, texts = build_recording(work / "recording.wav", args.minutes)
        print(f"recording: {args.minutes:.0f} min of real Malayalam clips, built in {time.perf_counter() - t0:.0f} s",
              flush=True)
        model_dir = args.model or build_model(work / "model", texts, audio)
        lm_dir = work / "lm"
        build_lm(texts, lm_dir, order=3, normalizer=Normalizer("ml", TextConfig()), language="ml")
        # the machine is shared: greedy and the pipeline alternate and the faster of the runs counts
        results: dict = {"greedy": None}
        for rep in range(args.repeats):
            run = run_lrasr(model_dir, audio, None, args.beam_width, args.processes)
            results["greedy"] = fastest(results["greedy"], run)
            print(f"[{rep + 1}] lrasr greedy: {run['seconds']:.1f} s, RTF {run['rtf']:.4f}", flush=True)
            if not args.skip_hf:
                try:
                    run = run_pipeline(model_dir, audio, work, results["greedy"]["audio_seconds"])
                except ImportError as exc:
                    print(f"transformers pipeline not run: {exc}")
                    args.skip_hf = True
                    continue
                results["hf_pipeline"] = fastest(results.get("hf_pipeline"), run)
                print(f"[{rep + 1}] transformers pipeline: {run['seconds']:.1f} s, RTF {run['rtf']:.4f}", flush=True)
        results["beam_lm"] = run_lrasr(model_dir, audio, lm_dir, args.beam_width, args.processes)
        print(f"lrasr beam{args.beam_width}+LM: RTF {results['beam_lm']['rtf']:.4f}", flush=True)
    audio_min = results["greedy"]["audio_seconds"] / 60
    print(f"\n== transcribe speed, {audio_min:.1f} min recording, tiny preset, CPU ({args.processes} threads/processes)")
    print(f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'system':28s} {'time (s)':>9s} {'CPU (s)':>8s} {'RTF':>8s} {'words':>7s}")
    names = {"greedy": "lrasr greedy", "beam_lm": f"lrasr beam {args.beam_width} + KenLM",
             "hf_pipeline": "transformers pipeline"}
    for key, r in results.items():
        print(f"{names[key]:28s} {r['seconds']:9.1f} {r['cpu_seconds']:8.1f} {r['rtf']:8.4f} {r['words']:7d}")
    g, b = results["greedy"], results["beam_lm"]
    print(f"\nbeam+LM RTF {b['rtf']:.3f} (target < 0.3): {'met' if b['rtf'] < 0.3 else 'NOT met'}")
    if "hf_pipeline" in results:
        h = results["hf_pipeline"]
        ratio = h["seconds"] / g["seconds"]
        print(f"pipeline time / lrasr greedy time = {ratio:.2f}x (target >= 1): {'met' if ratio >= 1 else 'NOT met'}"
              f"; CPU time ratio {h['cpu_seconds'] / g['cpu_seconds']:.2f}x")
        print(f"pipeline time / lrasr beam+LM time = {h['seconds'] / b['seconds']:.2f}x")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "text"} for k, v in results.items()}))


if __name__ == "__main__":
    main()
