"""`lrasr transcribe -o OUT` survives being killed: each finished recording is saved at once in a journal
beside the output (OUT.partial.jsonl, FOLDER/transcripts.partial.jsonl); the same command run again
transcribes only the rest and writes what an uninterrupted run writes. Before, a killed run lost
everything. Real runs: a tiny random CTC model and espeak-ng speech, greedy decoding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import espeak
from lrasr.audio.decode import load
from lrasr.cli import app
from lrasr.decode.output import transcribe_to
from lrasr.decode.transcribe import transcribe_files
from tests.test_transcribe import make_model_dir

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["ഒന്ന് രണ്ട് മൂന്ന്", "നാല് അഞ്ച്", "ആറ് ഏഴ് എട്ട്"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model (layer-norm feature encoder: a recording's transcript does not depend on what else
    is in its batch, so a resumed run can equal an uninterrupted one exactly), ten ~8 s recordings of
    espeak-ng speech, a silent one and an unreadable one."""
    root = tmp_path_factory.mktemp("resume")
    speech = [load(espeak(t, root / f"s{i}.wav")) for i, t in enumerate(TEXTS)]
    rng = np.random.default_rng(0)
    many = root / "many"
    many.mkdir()
    for k in range(10):
        parts = []
        for j in range(4):
            parts += [speech[(k + j) % 3], (rng.standard_normal(6000 + 800 * k) * 1e-3).astype(np.float32)]
        sf.write(str(many / f"r{k:02d}.wav"), np.concatenate(parts), 16000)
    sf.write(str(many / "r10_silent.wav"), np.zeros(16000, np.float32), 16000)
    (many / "r11_broken.wav").write_bytes(b"RIFF not really a wave file")
    few = root / "few"
    few.mkdir()
    for i in range(3):
        sf.write(str(few / f"t{i}.wav"), speech[i], 16000)
    model = make_model_dir(root / "model", [" ".join(TEXTS)], extractor_mode="layer_norm")
    return model, many, few


def _cli(model: Path, *args: str):
    return CliRunner().invoke(app, ["transcribe", "-m", str(model), "--device", "cpu", *args])


def _said(res) -> str:
    return " ".join(res.output.split())


def _records(journal: Path) -> list[dict]:
    """The complete recording lines of a journal (not the header, not a torn last line)."""
    out = []
    for line in journal.read_bytes().split(b"\n")[1:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_killed_run_resumes_with_the_rest_and_equals_an_uninterrupted_run(setup, tmp_path):
    model, many, _ = setup
    reference = tmp_path / "ref.jsonl"
    res = _cli(model, "-f", "jsonl", "-o", str(reference), str(many))
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "ref.jsonl.partial.jsonl").exists(), "the journal is deleted once the outputs exist"

    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial.jsonl"
    # the same function the CLI calls, with small model batches so recordings finish one by one
    script = ("import sys; from lrasr.decode.output import transcribe_to; "
              "transcribe_to([sys.argv[1]], sys.argv[2], sys.argv[3], 'jsonl', device='cpu', batch_seconds=2.0)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(many), str(model), str(out)], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (journal.is_file() and len(_records(journal)) >= 3):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(_records(journal))
    assert 3 <= done < 12 and not out.exists()

    res = _cli(model, "-f", "jsonl", "-o", str(out), str(many))
    assert res.exit_code == 0, res.output
    assert f"resuming: {done} of 12 recordings already transcribed" in _said(res)
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "ref.jsonl"], "no journal, no temporaries"
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [Path(r["source"]).name for r in rows][-2:] == ["r10_silent.wav", "r11_broken.wav"]
    assert all(r["text"] for r in rows[:10]) and all("error" in r for r in rows[10:])

    # the Python function gives the same counts: only the rest is transcribed
    transcribe_files([many], model, device="cpu", journal=tmp_path / "j.jsonl")
    lines = (tmp_path / "j.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "j.jsonl").write_text("".join(lines[:6]))  # the header and five recordings
    results, stats = transcribe_files([many], model, device="cpu", journal=tmp_path / "j.jsonl")
    assert (stats.resumed, stats.files) == (5, 7)
    assert len(_records(tmp_path / "j.jsonl")) == 12  # kept and new records: a second kill loses nothing


def test_a_torn_last_line_is_ignored(setup, tmp_path):
    """A run killed while writing a line leaves half of it: that recording is transcribed again, the
    others are not; the subtitle folder's journal lives in the folder."""
    model, _, few = setup
    res = _cli(model, "-f", "srt", "-o", str(tmp_path / "ref") + "/", str(few))
    assert res.exit_code == 0, res.output
    subs = tmp_path / "subs"
    journal = subs / "transcripts.partial.jsonl"
    transcribe_files([few], model, device="cpu", journal=journal)
    data = journal.read_bytes()
    journal.write_bytes(data[:-25])  # the last recording's line cut short, no newline
    res = _cli(model, "-f", "srt", "-o", str(subs), str(few))
    assert res.exit_code == 0, res.output
    assert "resuming: 2 of 3 recordings already transcribed" in _said(res)
    assert "(its incomplete last line ignored)" in _said(res)
    assert sorted(p.name for p in subs.iterdir()) == ["t0.srt", "t1.srt", "t2.srt"]
    for name in ("t0.srt", "t1.srt", "t2.srt"):
        assert (subs / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def _journal_of_few(model: Path, few: Path, out: Path, **options) -> Path:
    """A run over ``few`` stopped after its journal was complete but before its output was written."""
    journal = Path(str(out) + ".partial.jsonl")
    transcribe_files([few], model, device="cpu", journal=journal, **options)
    assert len(_records(journal)) == 3
    return journal


def test_a_changed_recording_is_transcribed_again(setup, tmp_path):
    model, _, few = setup
    folder = tmp_path / "few"
    folder.mkdir()
    for p in few.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "t.jsonl"
    _journal_of_few(model, folder, out)
    # t1 replaced by other speech (another size), t2 touched (same bytes, new mtime): both are done again
    (folder / "t1.wav").write_bytes((few / "t0.wav").read_bytes())
    st = (folder / "t2.wav").stat()
    os.utime(folder / "t2.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    results, stats, _ = transcribe_to([folder], model, out, "jsonl", device="cpu")
    assert (stats.resumed, stats.files) == (1, 2)
    assert results[1].hypothesis == results[0].hypothesis  # t1 now holds t0's audio
    assert not Path(str(out) + ".partial.jsonl").exists()


def test_a_recording_that_failed_is_tried_again(setup, tmp_path):
    """A failure is not kept: its cause may be gone on the next run (here the journal says t1 could not be
    decoded, as if a decoder had been missing; the same file, same size and time, is transcribed now)."""
    model, _, few = setup
    out = tmp_path / "t.jsonl"
    journal = _journal_of_few(model, few, out)
    lines = journal.read_bytes().split(b"\n")
    record = json.loads(lines[2])
    assert record["key"].endswith("t1.wav") and record["text"]
    record.update(text="", words=[], error="not decodable audio (no decoder)")
    lines[2] = json.dumps(record, ensure_ascii=False).encode("utf-8")
    journal.write_bytes(b"\n".join(lines))
    results, stats, _ = transcribe_to([few], model, out, "jsonl", device="cpu")
    assert (stats.resumed, stats.files, stats.failed) == (2, 1, 0)
    assert results[1].error is None and results[1].hypothesis.text


@pytest.mark.parametrize("change", ["chunk_seconds", "decoder", "model"])
def test_a_changed_setting_transcribes_everything_again(setup, tmp_path, change):
    """The decoder settings and the model's files are in the journal's first line; a journal written
    with others is discarded with a warning naming what changed. A beam-only setting under greedy
    decoding changes nothing and keeps the journal."""
    model, _, few = setup
    if change == "model":
        copy = tmp_path / "model"
        copy.mkdir()
        for p in model.iterdir():
            (copy / p.name).write_bytes(p.read_bytes())
        model = copy
    out = tmp_path / "t.txt"
    _journal_of_few(model, few, out)
    _, stats, _ = transcribe_to([few], model, out, device="cpu", beam_width=3)
    assert (stats.resumed, stats.files) == (3, 0), "beam width does not matter to greedy decoding"
    _journal_of_few(model, few, out)
    args = {"chunk_seconds": ["--chunk-seconds", "5"], "decoder": ["--decoder", "beam", "-j", "1"],
            "model": []}[change]
    if change == "model":  # retrained in place: same names, new contents
        weights = model / "model.safetensors"
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000_000))
    res = _cli(model, "-o", str(out), *args, str(few))
    assert res.exit_code == 0, res.output
    said = _said(res)
    part = {"chunk_seconds": "decoder", "decoder": "decoder", "model": "model"}[change]
    assert f"earlier run's journal written with a different {part}; transcribing everything again" in said
    assert "resuming" not in said and not Path(str(out) + ".partial.jsonl").exists()
    assert out.read_text(encoding="utf-8").count("==> ") == 3


def test_no_resume_ignores_the_journal(setup, tmp_path):
    model, _, few = setup
    out = tmp_path / "t.tsv"
    journal = _journal_of_few(model, few, out)
    # a journal whose transcripts are not what the model gives: --no-resume must not use them
    lines = journal.read_text().splitlines(keepends=True)
    forged = [lines[0]] + [json.dumps({**json.loads(x), "text": "FORGED", "words": []}) + "\n" for x in lines[1:]]
    journal.write_text("".join(forged))
    res = _cli(model, "-f", "tsv", "--no-resume", "-o", str(out), str(few))
    assert res.exit_code == 0, res.output
    assert "--no-resume: ignoring the journal of an earlier run" in _said(res)
    assert "FORGED" not in out.read_text(encoding="utf-8") and not journal.exists()
    journal.write_text("".join(forged))  # without --no-resume the journal is trusted: proof it was read
    res = _cli(model, "-f", "tsv", "-o", str(out), str(few))
    assert res.exit_code == 0 and out.read_text(encoding="utf-8").count("FORGED") == 3


def test_a_recording_whose_name_is_not_utf8_resumes(setup, tmp_path):
    """A latin-1 file name from an old archive (lone surrogates in Python) is written to the journal and
    found there again; everything else in the journal stays readable UTF-8."""
    model, _, few = setup
    folder = tmp_path / "old"
    folder.mkdir()
    odd = os.fsdecode(b"caf\xe9.wav")
    (folder / odd).write_bytes((few / "t0.wav").read_bytes())
    (folder / "ഒന്ന്.wav").write_bytes((few / "t1.wav").read_bytes())
    out = tmp_path / "t.jsonl"
    journal = Path(str(out) + ".partial.jsonl")
    first, _ = transcribe_files([folder], model, device="cpu", journal=journal)
    assert len(_records(journal)) == 2 and "ഒന്ന്" in journal.read_text(encoding="utf-8", errors="strict")
    results, stats, _ = transcribe_to([folder], model, out, "jsonl", device="cpu")
    assert (stats.resumed, stats.files) == (2, 0)
    assert [r.path.name for r in results] == [odd, "ഒന്ന്.wav"]
    assert [r.hypothesis for r in results] == [r.hypothesis for r in first]


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(setup, tmp_path):
    """Two runs writing one output shared its journal: the second's start replaced the file under the first
    (whose later records went to a deleted file), and the first, finishing, deleted the second's journal, so
    a kill of the second lost all its work (review V). While one run holds the output, another is refused
    before any work; once it is done, the output is free again and no lock file is left."""
    from lrasr.decode.journal import journal_lock
    from lrasr.errors import LrasrError

    model, _, few = setup
    out = tmp_path / "t.txt"
    with journal_lock(Path(str(out) + ".partial.jsonl")):  # a first run, in progress
        with pytest.raises(LrasrError, match="another `lrasr transcribe` is writing this output"):
            transcribe_to([few], model, out, device="cpu")
    _, stats, _ = transcribe_to([few], model, out, device="cpu")
    assert stats.files == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
