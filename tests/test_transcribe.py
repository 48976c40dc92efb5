"""`lrasr transcribe` end to end with a tiny CTC model folder on real Malayalam recordings: long-file
chunking equals chunk-by-chunk transcription, batching equals one-by-one, bad inputs, the CLI."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lrasr.audio.decode import SAMPLE_RATE, load
from lrasr.decode.chunking import iter_chunks, split_at_quiet, vad_segmenter
from lrasr.decode.transcribe import Transcriber, expand_inputs
from lrasr.errors import LrasrError
from lrasr.recipe import VadConfig

ML = "ml_smc_msc_crowd"


def make_model_dir(path: Path, texts: list[str], extractor_mode: str = "group_norm") -> Path:
    """A randomly initialised tiny CTC model whose head is scaled so that its greedy output varies
    from frame to frame (words, not one repeated letter), saved as a model folder with its tokenizer."""
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.model.io import save_model_dir
    from lrasr.text.tokenizer import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(texts)
    cfg = Wav2Vec2Config.from_recipe({"preset": "tiny", "extractor_mode": extractor_mode})
    model = Wav2Vec2ForCTC(cfg, len(tok.labels))
    with torch.no_grad():
        model.aux.weight.mul_(20.0)
        model.aux.bias[tok.labels.index("|")] += 3.0
    save_model_dir(path, model, tok)
    return path


@pytest.fixture(scope="module")
def ml_clips(shared_corpora):
    folder = shared_corpora / ML
    with open(folder / "transcripts.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [(folder / r["path"], r["text"]) for r in rows[:40]]


@pytest.fixture(scope="module")
def model_dir(ml_clips, tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny", [t for _, t in ml_clips])


def long_recording(clips, path: Path, seconds: float, pause: float = 0.8) -> Path:
    """Real clips joined with pauses of near-silence (a little noise, as in a room) into one 16 kHz WAV."""
    rng = np.random.default_rng(0)
    parts, total, i = [], 0.0, 0
    while total < seconds:
        wave = load(clips[i % len(clips)][0])
        parts += [wave, (rng.standard_normal(int(pause * SAMPLE_RATE)) * 1e-3).astype(np.float32)]
        total += len(wave) / SAMPLE_RATE + pause
        i += 1
    sf.write(str(path), np.concatenate(parts), SAMPLE_RATE, subtype="FLOAT")
    return path


def _transcriber(model_dir, chunk_seconds=8.0, batch_seconds=0.01, block_seconds=20.0, decoder=None):
    from lrasr.decode.acoustic import AcousticModel

    acoustic = AcousticModel(model_dir, "cpu", batch_seconds=batch_seconds)
    return Transcriber(acoustic, decoder, chunk_seconds=chunk_seconds, batch_seconds=30.0,
                       segmenter=vad_segmenter(VadConfig(), chunk_seconds), block_seconds=block_seconds)


@pytest.mark.shared
def test_long_file_equals_concatenated_chunks(ml_clips, model_dir, tmp_path):
    long = long_recording(ml_clips, tmp_path / "long.wav", 55.0)
    transcriber = _transcriber(model_dir)
    [whole] = transcriber.transcribe([long])
    assert whole.error is None and len(whole.hypothesis.text.split()) > 10
    chunks = list(iter_chunks(long, 8.0, vad_segmenter(VadConfig(), 8.0), block_seconds=20.0))
    assert len(chunks) >= 7
    previous_end = 0.0
    for chunk in chunks:
        assert chunk.seconds <= 8.0 + 1e-6 and chunk.start >= previous_end - 1e-6
        previous_end = chunk.start + chunk.seconds
    paths = []
    for k, chunk in enumerate(chunks):
        sf.write(str(tmp_path / f"chunk{k:02d}.wav"), chunk.wave, SAMPLE_RATE, subtype="FLOAT")
        paths.append(tmp_path / f"chunk{k:02d}.wav")
    pieces = _transcriber(model_dir).transcribe(paths)
    assert whole.hypothesis.text == " ".join(p.hypothesis.text for p in pieces if p.hypothesis.text)
    shifted = [w.shifted(c.start) for c, p in zip(chunks, pieces) for w in p.hypothesis.words]
    assert whole.hypothesis.words == shifted
    starts = [w.start for w in whole.hypothesis.words]
    assert starts == sorted(starts) and whole.hypothesis.words[-1].end <= 56.0


@pytest.mark.shared
def test_batched_inference_equals_one_by_one(ml_clips, tmp_path):
    from lrasr.decode.acoustic import AcousticModel

    # layer-norm feature encoders ignore padding exactly (group norm over time cannot)
    folder = make_model_dir(tmp_path / "ln", [t for _, t in ml_clips], extractor_mode="layer_norm")
    waves = [load(p) for p, _ in ml_clips[:5]]
    batched = AcousticModel(folder, "cpu", batch_seconds=60.0).log_probs(waves)
    single = AcousticModel(folder, "cpu", batch_seconds=0.01).log_probs(waves)
    for a, b, w in zip(batched, single, waves):
        assert a.shape == b.shape and a.shape[0] == (len(w) - 400) // 320 + 1
        np.testing.assert_allclose(a, b, atol=2e-3)


def _chunking_peak(path: Path) -> tuple[int, float]:
    tracemalloc.start()
    total = 0.0
    for chunk in iter_chunks(path, 20.0, vad_segmenter(VadConfig(), 20.0), block_seconds=30.0):
        assert chunk.seconds <= 20.0 + 1e-6
        total += chunk.seconds
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, total


@pytest.mark.shared
def test_chunking_memory_does_not_grow_with_length(ml_clips, tmp_path):
    short = long_recording(ml_clips, tmp_path / "short.wav", 80.0)
    long = long_recording(ml_clips, tmp_path / "long.wav", 240.0)
    peak_short, speech_short = _chunking_peak(short)
    peak_long, speech_long = _chunking_peak(long)
    assert speech_long > 160.0 and speech_long > 2.5 * speech_short  # the speech was found
    # three times the audio, about the same memory: it depends on the block size, not the file
    assert peak_long < 1.3 * peak_short, (peak_short, peak_long)
    assert peak_long < 40e6  # about 8x one 40 s block of float32 samples (VAD working buffers)


def test_split_at_quiet_cuts_in_the_pause():
    rng = np.random.default_rng(1)
    wave = (rng.standard_normal(16000 * 30) * 0.3).astype(np.float32)
    wave[16000 * 8: 16000 * 8 + 4000] *= 0.001  # a quiet 250 ms at 8 s
    pieces = split_at_quiet(wave, 10.0)
    assert pieces[0] == (0, pytest.approx(16000 * 8 + 2000, abs=2000))
    assert pieces[-1][1] == len(wave) and all(b - a <= 160000 for a, b in pieces)
    assert all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))


@pytest.mark.shared
def test_bad_files_give_empty_lines_and_the_batch_goes_on(ml_clips, model_dir, tmp_path):
    from typer.testing import CliRunner

    from lrasr.cli import app

    good = ml_clips[0][0]
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really audio" * 10)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(16000 * 2, np.float32), SAMPLE_RATE)
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["transcribe", "--model", str(model_dir), str(garbage), str(good), str(empty),
                              str(silent), "--format", "jsonl", "--output", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [Path(r["source"]).name for r in rows] == ["garbage.wav", good.name, "empty.flac", "silent.wav"]
    assert [bool(r["text"]) for r in rows] == [False, True, False, False]
    assert rows[1]["words"] and rows[1]["words"][0]["start"] >= 0.0
    assert "garbage.wav" in res.output and "silent" in res.output and "real-time factor" in res.output
    # a folder and a manifest as inputs, subtitles one file per input
    manifest = tmp_path / "m.tsv"
    manifest.write_text("id\taudio\n" + "".join(f"u{i}\t{p}\n" for i, (p, _) in enumerate(ml_clips[:2])),
                        encoding="utf-8")
    assert expand_inputs([manifest]) == [p for p, _ in ml_clips[:2]]
    res = runner.invoke(app, ["transcribe", "-m", str(model_dir), str(manifest), "--format", "srt",
                              "--output", str(tmp_path / "subs"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == sorted(f"{p.stem}.srt" for p, _ in ml_clips[:2])


def test_bad_model_folder_and_inputs(tmp_path):
    from typer.testing import CliRunner

    from lrasr.cli import app

    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(1600, np.float32), SAMPLE_RATE)
    runner = CliRunner()
    res = runner.invoke(app, ["transcribe", "--model", str(tmp_path / "nope"), str(wav)])
    assert res.exit_code == 2 and "model folder not found" in res.output
    folder = make_model_dir(tmp_path / "m", ["ഒന്ന് രണ്ട്"])
    (folder / "tokenizer.json").unlink()
    res = runner.invoke(app, ["transcribe", "--model", str(folder), str(wav)])
    assert res.exit_code == 2 and "tokenizer" in res.output
    res = runner.invoke(app, ["transcribe", "--model", str(folder), str(tmp_path / "missing.wav"), "--format", "doc"])
    assert res.exit_code == 2 and "--format" in res.output
    with pytest.raises(LrasrError, match="input not found"):
        expand_inputs([tmp_path / "missing_dir_or_file"])


@pytest.mark.shared
def test_cli_beam_search_with_lm_and_hotword(ml_clips, model_dir, tmp_path):
    from typer.testing import CliRunner

    from lrasr.cli import app
    from lrasr.decode.lm import build_lm
    from lrasr.recipe import TextConfig
    from lrasr.text.normalize import Normalizer

    texts = [t for _, t in ml_clips]
    build_lm(texts, tmp_path / "lm", order=3, normalizer=Normalizer("ml", TextConfig()), language="ml")
    (tmp_path / "lm" / "tuned.json").write_text('{"alpha": 0.7, "beta": 0.5}', encoding="utf-8")
    out = tmp_path / "beam.jsonl"
    res = CliRunner().invoke(app, ["transcribe", "-m", str(model_dir), "--lm", str(tmp_path / "lm"),
                                   *[str(p) for p, _ in ml_clips[:3]], "--format", "jsonl", "-o", str(out),
                                   "--beam-width", "8", "--jobs", "2", "--hotword", "ഓണം", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "beam + LM" in res.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(r["text"] for r in rows)
    for r in rows:
        assert " ".join(w["word"] for w in r["words"]) == r["text"]
        assert all(0.0 <= w["start"] < w["end"] for w in r["words"])
