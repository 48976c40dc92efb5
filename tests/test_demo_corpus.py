"""The demo corpus generator (small mode): valid files, the formats promised, deterministic."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def make_demo():
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("espeak-ng and ffmpeg are needed (apt-get install espeak-ng ffmpeg; `make test` installs them)")
    spec = importlib.util.spec_from_file_location("make_demo", REPO / "corpora" / "demo" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_demo"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(make_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    stats = make_demo.build(out, seed=3, n_utts=8, raw_files=4, raw_seconds=24.0, n_speakers=4, workers=2)
    return out, stats


def test_labeled_set(built):
    out, stats = built
    with open(out / "labeled" / "transcripts.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 8 == stats["utterances"]
    assert set(rows[0]) == {"path", "text", "speaker"}
    assert {r["speaker"] for r in rows} == {"spk1", "spk2", "spk3", "spk4"}
    sentences = set((REPO / "corpora" / "demo" / "sentences_ml.txt").read_text(encoding="utf-8").splitlines())
    for row in rows:
        assert row["text"] in sentences
        info = sf.info(out / "labeled" / row["path"])
        assert info.samplerate == 16000 and info.channels == 1 and 0.5 < info.duration < 10
    assert any(r["path"].endswith(".flac") for r in rows) and any(r["path"].endswith(".wav") for r in rows)


def test_raw_recordings_in_mixed_formats(built):
    out, _ = built
    expected = {"interview_01.wav": (16000, 1), "bulletin_02.flac": (44100, 2), "phone_03.mp3": (22050, 1),
                "field_04.ogg": (48000, 1)}
    assert sorted(p.name for p in (out / "raw").iterdir()) == sorted(expected)
    for name, (rate, channels) in expected.items():
        wave, sr = sf.read(out / "raw" / name, dtype="float32", always_2d=True)
        assert (sr, wave.shape[1]) == (rate, channels), name
        assert wave.shape[0] / sr == pytest.approx(6.0, abs=0.2)  # 24 s over 4 files
        assert 0.001 < float(abs(wave).mean()) < 0.5  # speech and noise, not silence or clipping
    assert (out / "raw" / "bulletin_02.flac").exists() and sf.info(out / "raw" / "bulletin_02.flac").subtype == "PCM_24"


def test_lm_text_and_determinism(built, make_demo, tmp_path):
    out, stats = built
    text = (out / "text.txt").read_text(encoding="utf-8").splitlines()
    assert len(text) == stats["sentences"] >= 300
    assert not list(out.glob(".build-*")), "the temporary build folder is removed"
    again = tmp_path / "again"
    make_demo.build(again, seed=3, n_utts=8, raw_files=4, raw_seconds=24.0, n_speakers=4, workers=2)
    assert digest(again) == digest(out)
    other = tmp_path / "other"
    make_demo.build(other, seed=4, n_utts=8, raw_files=1, raw_seconds=6.0, n_speakers=4, workers=2)
    assert digest(other)["labeled/transcripts.tsv"] != digest(out)["labeled/transcripts.tsv"]


def test_full_size_choice_covers_every_character_with_five_speakers(make_demo):
    import numpy as np

    sentences = make_demo.read_sentences(REPO / "corpora" / "demo" / "sentences_ml.txt")
    n, speakers = make_demo.N_UTTERANCES, make_demo.N_SPEAKERS
    texts = make_demo.choose_texts(sentences, n, np.random.default_rng(1234))
    assert len(texts) == n and set(texts) <= set(sentences)
    speakers_of: dict[str, set[int]] = {}
    for i, text in enumerate(texts):
        for ch in text:
            speakers_of.setdefault(ch, set()).add(i % speakers)
    assert set(speakers_of) == set("".join(sentences))
    # a speaker-disjoint split holding out ~5 of 48 speakers each for dev and test keeps every character
    assert min(len(s) for s in speakers_of.values()) >= 5
    assert len(set(texts)) < n / 2  # sentences repeat across speakers


def test_speaker_table_is_fixed_and_varied(make_demo):
    table = make_demo.make_speakers(make_demo.N_SPEAKERS)
    assert table == make_demo.SPEAKERS == make_demo.make_speakers(make_demo.N_SPEAKERS)  # independent of --seed
    assert len({s.name for s in table}) == len(table) == make_demo.N_SPEAKERS
    assert len({s.voice for s in table}) >= 30  # many espeak-ng variants, not one voice at many pitches
    assert len({(s.voice, s.rate, s.pitch) for s in table}) == len(table)
    assert min(s.rate for s in table) <= 125 and max(s.rate for s in table) >= 185
    assert min(s.pitch for s in table) <= 25 and max(s.pitch for s in table) >= 75


def test_sentences_file_is_clean():
    lines = (REPO / "corpora" / "demo" / "sentences_ml.txt").read_text(encoding="utf-8").splitlines()
    assert 300 <= len(lines) == len(set(lines))
    for line in lines:
        assert line == " ".join(line.split()) and line
        # Malayalam letters and spaces only: the demo's normalizer must not reject any sentence
        assert all(ch == " " or 0x0D00 <= ord(ch) <= 0x0D7F for ch in line), line
