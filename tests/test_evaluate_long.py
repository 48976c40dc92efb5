"""`lrasr evaluate --model DIR MANIFEST` on a manifest row longer than one chunk: the row is chunked at
VAD silences exactly as `lrasr transcribe` does, so the model never sees the whole recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from conftest import espeak
from lrasr.audio.decode import SAMPLE_RATE, load
from lrasr.data.manifest import write_manifest

SENTENCES = ["ഇന്ന് നല്ല കാലാവസ്ഥയാണ്", "ഞാൻ വീട്ടിലേക്ക് പോകുന്നു", "കുട്ടികൾ സ്കൂളിൽ പഠിക്കുന്നു",
             "മഴ പെയ്യുന്നുണ്ട്", "അവൻ പുസ്തകം വായിക്കുന്നു", "നമുക്ക് നാളെ കാണാം"]
CHUNK_SECONDS = 4.0


def make_model_dir(path: Path, texts: list[str]) -> Path:
    """A random tiny CTC model whose scaled head makes greedy output vary (letters and spaces)."""
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.model.io import save_model_dir
    from lrasr.text.tokenizer import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(texts)
    model = Wav2Vec2ForCTC(Wav2Vec2Config.from_recipe({"preset": "tiny"}), len(tok.labels))
    with torch.no_grad():
        model.aux.weight.mul_(20.0)
        model.aux.bias[tok.labels.index("|")] += 3.0
    save_model_dir(path, model, tok)
    return path


def test_long_row_is_chunked_like_transcribe(tmp_path, monkeypatch):
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.decode.chunking import vad_segmenter
    from lrasr.decode.transcribe import Transcriber
    from lrasr.evaluate import clean, evaluate_model
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.recipe import VadConfig

    rng = np.random.default_rng(0)
    parts = []
    for k, text in enumerate(SENTENCES):
        parts.append(load(espeak(text, tmp_path / f"s{k}.wav", speed=170), SAMPLE_RATE))
        parts.append((rng.standard_normal(int(0.8 * SAMPLE_RATE)) * 1e-3).astype(np.float32))
    long = np.concatenate(parts)
    assert len(long) / SAMPLE_RATE > 3 * CHUNK_SECONDS  # several chunks, not one
    sf.write(str(tmp_path / "long.wav"), long, SAMPLE_RATE, subtype="FLOAT")
    write_manifest(
        pd.DataFrame([
            {"id": "long", "audio": "long.wav", "duration": len(long) / SAMPLE_RATE, "text": " ".join(SENTENCES)},
            {"id": "short", "audio": "s0.wav", "duration": 2.0, "text": SENTENCES[0]},
        ]),
        tmp_path / "manifest.tsv",
    )
    model_dir = make_model_dir(tmp_path / "model", SENTENCES)

    # what `lrasr transcribe` makes of the same files with the same chunk length
    acoustic = AcousticModel(model_dir, "cpu")
    transcriber = Transcriber(acoustic, None, chunk_seconds=CHUNK_SECONDS,
                              segmenter=vad_segmenter(VadConfig(), CHUNK_SECONDS))
    expected = {r.path.stem: clean(r.hypothesis.text) for r in transcriber.transcribe([tmp_path / "long.wav",
                                                                                       tmp_path / "s0.wav"])}
    assert transcriber.stats.chunks >= 4 and len(expected["long"].split()) >= 3

    longest = []
    original = Wav2Vec2ForCTC.forward

    def recording_forward(self, waveforms, lengths):
        longest.append(int(waveforms.shape[-1]))
        return original(self, waveforms, lengths)

    monkeypatch.setattr(Wav2Vec2ForCTC, "forward", recording_forward)
    report = evaluate_model(model_dir, tmp_path / "manifest.tsv", tmp_path / "eval", device="cpu",
                            chunk_seconds=CHUNK_SECONDS)
    hyps = {row.id: row.hypothesis for row in report.rows}
    assert longest and max(longest) <= CHUNK_SECONDS * SAMPLE_RATE  # the 20 s row never went in whole
    assert hyps == {"long": expected["long"], "short": expected["s0"]}
    assert report.utterances == 2 and (tmp_path / "eval" / "utterances.tsv").is_file()


def test_unreadable_row_is_listed_and_scored_as_empty(tmp_path):
    from lrasr.evaluate import evaluate_model
    import json

    espeak(SENTENCES[1], tmp_path / "ok.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wave file")
    write_manifest(pd.DataFrame([
        {"id": "ok", "audio": "ok.wav", "duration": 2.0, "text": SENTENCES[1]},
        {"id": "bad", "audio": "bad.wav", "duration": 2.0, "text": SENTENCES[2]},
    ]), tmp_path / "manifest.tsv")
    model_dir = make_model_dir(tmp_path / "model", SENTENCES)
    report = evaluate_model(model_dir, tmp_path / "manifest.tsv", tmp_path / "eval", device="cpu")
    assert [r.id for r in report.rows] == ["ok", "bad"]
    bad = report.rows[1]
    assert bad.hypothesis == "" and bad.word_errors == bad.words > 0  # every reference word is an error
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["unreadable"]) == 1 and summary["unreadable"][0].startswith("bad: ")
    assert "bad.wav" in summary["unreadable"][0]


def test_cli_passes_chunk_seconds(tmp_path, monkeypatch):
    """`lrasr evaluate --chunk-seconds N` reaches evaluate_model (and is left to the default without it)."""
    from typer.testing import CliRunner

    import lrasr.evaluate
    from lrasr.cli.app import app

    seen: list[dict] = []

    class Report:
        utterances, wer, cer, substitutions, deletions, insertions, confusions = 1, 0.0, 0.0, 0, 0, 0, []

    def fake_evaluate_model(model, manifest, out, **kwargs):
        seen.append(kwargs)
        return Report()

    monkeypatch.setattr(lrasr.evaluate, "evaluate_model", fake_evaluate_model)
    for extra, expected in ((["--chunk-seconds", "7"], 7.0), ([], None)):
        result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m.tsv"), "--model", str(tmp_path), *extra])
        assert result.exit_code == 0, result.output
        assert seen[-1].get("chunk_seconds") == expected
