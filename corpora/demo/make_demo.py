"""Build the synthetic demo corpus: labeled utterances, long raw recordings and LM text.

Every sound here is made by espeak-ng from ``sentences_ml.txt`` (Malayalam sentences written for this
project). 48 "speakers" are espeak-ng voice variants at different rates and pitches. Nothing is
downloaded and nothing comes from another corpus. The output is deterministic given ``--seed``.

Outputs (under ``--out``, default: this folder; all git-ignored):
  labeled/transcripts.tsv   columns path, text, speaker (path relative to labeled/)
  labeled/audio/<spk>/...   16 kHz mono WAV (every fourth speaker as FLAC)
  raw/                      a few long recordings: utterances joined by pauses over background noise,
                            in mixed formats (16 kHz WAV, 44.1 kHz stereo 24-bit FLAC, MP3, Opus)
  text.txt                  LM text: every sentence of sentences_ml.txt, one per line

Usage: python corpora/demo/make_demo.py [--seed 1234] [--small] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
RATE = 16000
ESPEAK_RATE = 22050


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng voice variant plus rate (words/min), pitch (0-99) and level."""

    name: str
    voice: str
    rate: int
    pitch: int
    gain: float


# espeak-ng voice variants (`espeak-ng --voices=variant`) applied to the Malayalam voice: formant
# (m*, f*) and Klatt-synthesizer (klatt*) families plus named variants with their own timbre, so the
# held-out speakers differ from every training speaker but lie inside the range the model trained on
VARIANTS = ("m1", "f1", "m3", "f2", "m5", "f3", "m7", "f4", "klatt", "f5", "m2", "klatt2", "m4", "klatt3",
            "m6", "klatt4", "m8", "croak", "adam", "aunty", "belinda", "grandpa", "linda", "steph", "edward",
            "iven", "john", "max", "paul", "quincy", "david", "norbert", "travis", "victor", "shelby",
            "sandro")
SPEAKER_TABLE_SEED = 20261124  # fixed: the speaker table is part of the corpus, not of --seed


def make_speakers(n: int) -> tuple[Speaker, ...]:
    """``n`` synthetic speakers: variant ``k`` mod len(VARIANTS), with rate, pitch and level drawn
    (from a fixed generator, so the table never changes) over wide ranges, so that a held-out
    speaker's rate and pitch fall between those of training speakers."""
    rng = np.random.default_rng(SPEAKER_TABLE_SEED)
    rates = rng.integers(120, 191, size=n)  # words per minute
    pitches = rng.integers(20, 81, size=n)  # espeak-ng pitch 0-99
    gains = rng.uniform(0.3, 0.6, size=n)
    return tuple(Speaker(f"spk{k + 1}", f"ml+{VARIANTS[k % len(VARIANTS)]}", int(rates[k]), int(pitches[k]),
                         round(float(gains[k]), 3)) for k in range(n))


N_SPEAKERS = 48
N_UTTERANCES = 1200  # 25 per speaker, about 46 minutes
SPEAKERS = make_speakers(N_SPEAKERS)


def is_flac(speaker: Speaker) -> bool:
    """A labeled set rarely comes in one format only: every fourth speaker (spk3, spk7, ...) is FLAC."""
    return int(speaker.name[3:]) % 4 == 3


@dataclass(frozen=True)
class RawSpec:
    """A long recording: file name, sample rate, channels, and how it is encoded."""

    name: str
    rate: int
    channels: int
    codec: str  # wav | flac24 | mp3 | opus


RAW_SPECS = (
    RawSpec("interview_01.wav", 16000, 1, "wav"),
    RawSpec("bulletin_02.flac", 44100, 2, "flac24"),
    RawSpec("phone_03.mp3", 22050, 1, "mp3"),
    RawSpec("field_04.ogg", 48000, 1, "opus"),
)


def read_sentences(path: Path) -> list[str]:
    lines = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line and not line.startswith("#")]
    if not sentences:
        raise SystemExit(f"{path}: no sentences")
    return sentences


def espeak(text: str, spk: Speaker) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng; returns float32 samples [T] at 22.05 kHz.

    The text goes in on stdin (never through a shell) so any sentence is safe.
    """
    proc = subprocess.run(
        ["espeak-ng", "-v", spk.voice, "-s", str(spk.rate), "-p", str(spk.pitch), "--stdin", "--stdout"],
        input=text.encode("utf-8"), capture_output=True, check=True,
    )
    wave, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng produced {rate} Hz, expected {ESPEAK_RATE}")
    return wave


def resample(wave: np.ndarray, src: int, dst: int) -> np.ndarray:
    """[T] float32 at ``src`` Hz -> [T'] at ``dst`` Hz (torchaudio's windowed-sinc resampler)."""
    if src == dst:
        return wave.astype(np.float32)
    import torch

    with torch.no_grad():
        out = _resampler(src, dst)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy().astype(np.float32)


@lru_cache(maxsize=8)
def _resampler(src: int, dst: int):
    """One torchaudio Resample per rate pair: its filter kernel is built once, not per file."""
    import torch
    import torchaudio.transforms as AT

    # short clips: one thread is fastest, and torch's thread pool crawls on a busy shared machine
    torch.set_num_threads(1)
    return AT.Resample(src, dst)


def trim_silence(wave: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop espeak's leading/trailing digital silence, keeping 50 ms either side."""
    idx = np.flatnonzero(np.abs(wave) > threshold)
    if idx.size == 0:
        return wave
    pad = RATE // 20
    return wave[max(0, idx[0] - pad): idx[-1] + pad]


def background(n: int, rng: np.random.Generator) -> np.ndarray:
    """Room-like noise [n]: mostly low-frequency (integrated white noise, leaky) plus a faint hiss and hum."""
    white = rng.standard_normal(n).astype(np.float32)
    brown = np.empty(n, dtype=np.float32)
    acc = 0.0
    # a leaky integrator keeps the random walk bounded; vectorised via cumulative filtering in blocks
    leak = 0.995
    block = 512
    for start in range(0, n, block):
        seg = white[start:start + block]
        powers = leak ** np.arange(1, len(seg) + 1, dtype=np.float64)
        # y[i] = leak^(i+1)*acc + sum_{j<=i} leak^(i-j) seg[j]
        scaled = np.cumsum(seg / powers)
        out = powers * (scaled + acc)
        brown[start:start + len(seg)] = out
        acc = float(out[-1])
    brown /= np.max(np.abs(brown)) + 1e-9
    t = np.arange(n, dtype=np.float32) / RATE
    hum = 0.2 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi))
    noise = brown + 0.3 * white / 3.0 + hum
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-9)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def synth_all(jobs: list[tuple[str, Speaker]], workers: int) -> list[np.ndarray]:
    """Synthesize (text, speaker) pairs in parallel; returns 16 kHz float32 waves, silence-trimmed.

    Threads are enough: each call waits on its own espeak-ng process.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        raw = list(pool.map(lambda job: espeak(*job), jobs))
    return [trim_silence(resample(w, ESPEAK_RATE, RATE)) for w in raw]


def choose_texts(sentences: list[str], n_utts: int, rng: np.random.Generator) -> list[str]:
    """The sentence of each labeled utterance (utterance i is read by speaker i mod n_speakers).

    Sentences come from a pool smaller than the number of utterances, so most are read by two or
    more speakers. Every character of the sentence file occurs in some "covering" sentence; each of
    those is read by five (or, in a small corpus, three) consecutive speakers, so a speaker-disjoint split still has
    every character in train and the model can output every LM word.
    """
    pool_size = max(1, min(len(sentences), int(n_utts * 2 / 3)))
    order = [sentences[i] for i in rng.permutation(len(sentences))]
    covering: list[str] = []
    seen: set[str] = set()
    for sentence in order:
        if not set(sentence) <= seen:
            covering.append(sentence)
            seen |= set(sentence)
    pool = (covering + [s for s in order if s not in covering])[:pool_size]
    # five consecutive (so different) speakers each: a speaker-disjoint split holding out a tenth of
    # the speakers for dev and for test is very unlikely to take all five
    repeats = next((r for r in (5, 3) if len(covering) * r <= n_utts // 2), 1)
    texts = [s for s in covering for _ in range(repeats)][:n_utts]
    texts += [pool[int(rng.integers(len(pool)))] for _ in range(n_utts - len(texts))]
    return texts


def write_labeled(out: Path, sentences: list[str], n_utts: int, speakers: tuple[Speaker, ...],
                  rng: np.random.Generator, workers: int) -> tuple[int, float]:
    """Labeled set: ``n_utts`` utterances, speakers in turn, sentences from ``choose_texts``."""
    texts = choose_texts(sentences, n_utts, rng)
    jobs = [(text, speakers[i % len(speakers)]) for i, text in enumerate(texts)]
    waves = synth_all(jobs, workers)
    rows = ["path\ttext\tspeaker"]
    total = 0.0
    for i, ((text, spk), wave) in enumerate(zip(jobs, waves)):
        # a faint noise floor (about 40 dB below the speech) so no file is digitally silent between words
        wave = spk.gain * wave / (np.max(np.abs(wave)) + 1e-9)
        wave = wave + 0.01 * rms(wave) * rng.standard_normal(len(wave)).astype(np.float32)
        ext = "flac" if is_flac(spk) else "wav"
        rel = Path("audio") / spk.name / f"{spk.name}_{i:04d}.{ext}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / rel, np.clip(wave, -1, 1), RATE, subtype="PCM_16", format=ext.upper())
        rows.append(f"{rel.as_posix()}\t{text}\t{spk.name}")
        total += len(wave) / RATE
    (out / "transcripts.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return n_utts, total


def build_recording(sentences: list[str], seconds: float, speakers: tuple[Speaker, ...],
                    rng: np.random.Generator, workers: int) -> np.ndarray:
    """One long recording [T] at 16 kHz: two speakers taking turns, pauses, a few noise-only
    stretches, and background noise about 25 dB below the speech."""
    pair = [speakers[int(i)] for i in rng.choice(len(speakers), size=min(2, len(speakers)), replace=False)]
    # enough utterances to pass ``seconds`` (each is about 2-3 s plus a pause); the excess is cut off
    n = max(2, int(seconds / 2.0) + 2)
    jobs = [(sentences[int(rng.integers(len(sentences)))], pair[k % len(pair)]) for k in range(n)]
    waves = synth_all(jobs, workers)
    pieces: list[np.ndarray] = [np.zeros(int(rng.uniform(0.5, 1.5) * RATE), np.float32)]
    length = len(pieces[0])
    for wave in waves:
        wave = 0.5 * wave / (np.max(np.abs(wave)) + 1e-9)
        pieces.append(wave)
        pause = rng.uniform(0.4, 2.0) if rng.random() > 0.1 else rng.uniform(3.0, 5.0)
        pieces.append(np.zeros(int(pause * RATE), np.float32))
        length += len(wave) + len(pieces[-1])
        if length >= seconds * RATE:
            break
    speech = np.concatenate(pieces)[: int(seconds * RATE)]
    level = rms(speech[np.abs(speech) > 1e-3]) or 0.1
    noise = background(len(speech), rng) * level * 10 ** (-25 / 20)
    return np.clip(speech + noise, -1, 1).astype(np.float32)


def encode(wave: np.ndarray, spec: RawSpec, path: Path) -> None:
    """Write a 16 kHz mono recording in ``spec``'s rate, channel count and codec."""
    data = resample(wave, RATE, spec.rate)
    if spec.channels == 2:
        # a slightly different right channel, as from two microphones
        data = np.stack([data, 0.9 * np.roll(data, 7)], axis=1)
    if spec.codec == "wav":
        sf.write(path, data, spec.rate, subtype="PCM_16")
    elif spec.codec == "flac24":
        sf.write(path, data, spec.rate, subtype="PCM_24", format="FLAC")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.wav"
            sf.write(src, data, spec.rate, subtype="PCM_16")
            codec_args = ["-c:a", "libmp3lame", "-b:a", "64k"] if spec.codec == "mp3" else \
                ["-c:a", "libopus", "-b:a", "48k"]
            subprocess.run(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *codec_args,
                 "-bitexact", "-map_metadata", "-1", str(path)],
                check=True, capture_output=True,
            )


def write_raw(out: Path, sentences: list[str], n_files: int, seconds: float, speakers: tuple[Speaker, ...],
              rng: np.random.Generator, workers: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for spec in RAW_SPECS[:n_files]:
        wave = build_recording(sentences, seconds / n_files, speakers, rng, workers)
        encode(wave, spec, out / spec.name)
        total += len(wave) / RATE
    return total


def check_tools() -> None:
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install espeak-ng ffmpeg (or run `make env`)")


def build(out: Path, seed: int, n_utts: int, raw_files: int, raw_seconds: float, n_speakers: int,
          workers: int, sentences_path: Path = HERE / "sentences_ml.txt") -> dict[str, float]:
    """Generate the corpus into ``out`` (replacing labeled/, raw/ and text.txt there)."""
    check_tools()
    sentences = read_sentences(sentences_path)
    speakers = SPEAKERS[:n_speakers]
    # build beside the target, then swap in, so an interrupted run never leaves a half corpus
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        rng = np.random.default_rng(seed)
        n, labeled_seconds = write_labeled(tmp / "labeled", sentences, n_utts, speakers, rng, workers)
        raw_total = write_raw(tmp / "raw", sentences, raw_files, raw_seconds, speakers,
                              np.random.default_rng(seed + 1), workers)
        (tmp / "text.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
        for name in ("labeled", "raw", "text.txt"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"utterances": n, "labeled_minutes": labeled_seconds / 60, "raw_files": raw_files,
            "raw_minutes": raw_total / 60, "sentences": len(sentences), "speakers": len(speakers)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--utterances", type=int, default=N_UTTERANCES, help="labeled utterances")
    parser.add_argument("--raw-files", type=int, default=4, choices=range(1, len(RAW_SPECS) + 1))
    parser.add_argument("--raw-minutes", type=float, default=5.0, help="total length of the raw recordings")
    parser.add_argument("--speakers", type=int, default=len(SPEAKERS), choices=range(1, len(SPEAKERS) + 1))
    parser.add_argument("--small", action="store_true", help="a few seconds' worth, for tests")
    parser.add_argument("--jobs", type=int, default=max(2, os.cpu_count() or 1), help="parallel espeak-ng calls")
    args = parser.parse_args(argv)
    if args.small:
        args.utterances, args.raw_files, args.raw_minutes, args.speakers = 16, 2, 0.5, 4
    start = time.time()
    stats = build(args.out.resolve(), args.seed, args.utterances, args.raw_files, args.raw_minutes * 60,
                  args.speakers, args.jobs)
    print(f"demo corpus in {args.out}: {stats['utterances']} labeled utterances "
          f"({stats['labeled_minutes']:.1f} min, {stats['speakers']} synthetic speakers), "
          f"{stats['raw_files']} raw recordings ({stats['raw_minutes']:.1f} min), "
          f"{stats['sentences']} sentences of LM text; {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
