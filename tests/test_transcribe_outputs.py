"""`lrasr transcribe` on a folder of recordings, as a user reads the output (session 5).

Before: txt of several recordings was one bare line each (no way to tell which line was which file)
and srt/vtt of several recordings on stdout followed each other, every recording's cues starting
again at 00:00 (not one valid subtitle file). Now txt of one recording is unchanged, txt of several
puts a ``==> FILE <==`` line before each transcript, and srt/vtt of several need a folder (one file
per recording); stdout or a file name is refused before any work.
Real runs: a tiny random CTC model and espeak-ng speech (greedy decoding, about a second per run).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from lrasr.cli import app
from conftest import espeak
from tests.test_transcribe import make_model_dir

TEXTS = ["ഒന്ന് രണ്ട് മൂന്ന്", "നാല് അഞ്ച്"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model and a folder of three recordings: two spoken, one silent (no speech: empty transcript)."""
    root = tmp_path_factory.mktemp("outputs")
    folder = root / "recordings"
    folder.mkdir()
    espeak(TEXTS[0], folder / "talk1.wav")
    espeak(TEXTS[1], folder / "talk2.wav")
    sf.write(str(folder / "zz_silent.wav"), np.zeros(16000, np.float32), 16000)
    model = make_model_dir(root / "model", [" ".join(TEXTS)])
    return model, folder


def _run(model: Path, *args: str):
    res = CliRunner().invoke(app, ["transcribe", "-m", str(model), "--device", "cpu", *args])
    return res


def _texts(model: Path, folder: Path, tmp_path: Path) -> dict[str, str]:
    """Each recording's transcript from a jsonl run (jsonl names the file on every row)."""
    res = _run(model, "-f", "jsonl", "-o", str(tmp_path / "t.jsonl"), str(folder))
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()]
    return {Path(r["source"]).name: r["text"] for r in rows}


def test_txt_of_one_recording_is_the_bare_transcript(setup, tmp_path):
    """`lrasr transcribe a.wav > a.txt` keeps working: one line, the transcript, nothing else on stdout."""
    model, folder = setup
    texts = _texts(model, folder, tmp_path)
    assert texts["talk1.wav"] and texts["talk2.wav"] and texts["zz_silent.wav"] == ""
    res = _run(model, str(folder / "talk1.wav"))
    assert res.exit_code == 0, res.output
    assert res.stdout == texts["talk1.wav"] + "\n"
    one = tmp_path / "one"
    one.mkdir()
    (one / "talk2.wav").symlink_to(folder / "talk2.wav")
    res = _run(model, "-o", str(tmp_path / "a.txt"), str(one))  # a folder holding one recording: the same
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == texts["talk2.wav"] + "\n"


def test_txt_of_several_recordings_names_each_one(setup, tmp_path):
    """Each transcript follows a `==> FILE <==` line (FILE as given or found in the folder); a blank
    line between recordings; a recording without speech has an empty transcript line under its name.
    stdout, a file and a folder (transcripts.txt) hold the same text."""
    model, folder = setup
    texts = _texts(model, folder, tmp_path)
    expected = (f"==> {folder / 'talk1.wav'} <==\n{texts['talk1.wav']}\n\n"
                f"==> {folder / 'talk2.wav'} <==\n{texts['talk2.wav']}\n\n"
                f"==> {folder / 'zz_silent.wav'} <==\n\n")
    res = _run(model, str(folder))
    assert res.exit_code == 0, res.output
    assert res.stdout == expected
    res = _run(model, "-o", str(tmp_path / "all.txt"), str(folder))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "all.txt").read_text(encoding="utf-8") == expected
    res = _run(model, "-o", str(tmp_path / "out") + "/", str(folder / "talk2.wav"), str(folder / "talk1.wav"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "transcripts.txt").read_text(encoding="utf-8") == (
        f"==> {folder / 'talk2.wav'} <==\n{texts['talk2.wav']}\n\n"
        f"==> {folder / 'talk1.wav'} <==\n{texts['talk1.wav']}\n")
    # tsv already named the file on every row: unchanged, but its tabs now reach stdout (rich made them spaces)
    res = _run(model, "-f", "tsv", str(folder))
    assert res.stdout == ("source\ttext\n" + "".join(f"{folder / n}\t{texts[n]}\n" for n in sorted(texts)))


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_of_several_recordings_need_a_folder(setup, tmp_path, fmt):
    """stdout and a file name (`-o all.srt`) are refused in one line that says what to do, before the
    model is even loaded (the model folder here does not exist): nothing is written."""
    _, folder = setup
    missing_model = tmp_path / "no_model"
    res = _run(missing_model, "-f", fmt, str(folder))
    assert res.exit_code == 2 and res.stdout == ""
    said = " ".join(res.output.split())
    assert said == (f"error: --format {fmt} for 3 recordings: a subtitle file holds one recording; "
                    f"add --output FOLDER/ to get one .{fmt} per recording, named after it"), said
    target = tmp_path / f"all.{fmt}"
    res = _run(missing_model, "-f", fmt, "-o", str(target), str(folder))
    assert res.exit_code == 2 and "needs --output to be a folder" in " ".join(res.output.split())
    assert not target.exists()
    (tmp_path / "exists.txt").write_text("keep\n", encoding="utf-8")
    res = _run(missing_model, "-f", fmt, "-o", str(tmp_path / "exists.txt"), str(folder))
    assert res.exit_code == 2 and (tmp_path / "exists.txt").read_text(encoding="utf-8") == "keep\n"


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_one_file_per_recording(setup, tmp_path, fmt):
    """One recording on stdout is one valid subtitle file; several go to a folder (`subs/`, or a new
    name without a format extension), one file per recording named after it, each equal to what that
    recording alone gives on stdout."""
    model, folder = setup
    alone = {}
    for name in ("talk1", "talk2", "zz_silent"):
        res = _run(model, "-f", fmt, str(folder / f"{name}.wav"))
        assert res.exit_code == (1 if name == "zz_silent" else 0), res.output  # 1: nothing transcribed
        alone[name] = res.stdout
    header = "WEBVTT\n\n" if fmt == "vtt" else ""
    assert alone["zz_silent"] == header
    for name in ("talk1", "talk2"):
        assert alone[name].startswith(header + ("1\n" if fmt == "srt" else "") + "00:00:")
        assert "NOTE" not in alone[name] and str(folder) not in alone[name]
    for output in (str(tmp_path / "subs") + "/", str(tmp_path / "subtitles")):
        res = _run(model, "-f", fmt, "-o", output, str(folder))
        assert res.exit_code == 0, res.output
        out = Path(output)
        assert sorted(p.name for p in out.iterdir()) == [f"{n}.{fmt}" for n in sorted(alone)]
        for name, text in alone.items():
            assert (out / f"{name}.{fmt}").read_text(encoding="utf-8") == text


def test_a_folder_output_that_is_a_file_is_refused_before_work(tmp_path):
    """`-o notes.txt/` (a folder by its slash, but a file exists there) was found only after the whole
    transcription had run; now before the model is loaded (the model folder here does not exist)."""
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(1600, np.float32), 16000)
    (tmp_path / "notes.txt").write_text("keep\n", encoding="utf-8")
    res = _run(tmp_path / "no_model", "-o", str(tmp_path / "notes.txt") + "/", str(wav))
    assert res.exit_code == 2 and "ends in a slash (a folder) but a file of that name exists" in res.output
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep\n"


def test_same_named_recordings_get_numbered_subtitles_and_a_warning(tmp_path, capsys):
    """day1/talk.wav and day2/talk.wav into one folder: talk.srt and talk.2.srt, and the warning says
    which recording is talk.2.srt (it was silent)."""
    from lrasr.decode.output import write_results
    from lrasr.decode.transcribe import FileResult
    from lrasr.decode.types import Hypothesis, Word

    hyp = Hypothesis("ഒന്ന്", [Word("ഒന്ന്", 0.5, 0.9)])
    results = [FileResult(Path("rec/day1/talk.wav"), hyp), FileResult(Path("rec/day2/talk.wav"), hyp),
               FileResult(Path("rec/day2/other.wav"), hyp)]
    written = write_results(results, "srt", tmp_path / "subs")
    assert [p.name for p in written] == ["talk.srt", "talk.2.srt", "other.srt"]
    assert written[1].read_text(encoding="utf-8") == "1\n00:00:00,500 --> 00:00:00,900\nഒന്ന്\n"
    err = " ".join(capsys.readouterr().err.split())
    assert "1 recording(s) share a file name" in err and "rec/day2/talk.wav -> talk.2.srt" in err


def test_numbered_subtitle_names_never_take_another_recordings_name(tmp_path):
    """x/a.wav, y/a.wav and z/a.2.wav: the second was numbered a.2, the name of the third, whose subtitles
    then replaced it (one recording's file silently lost; review V). Numbers skip names in use."""
    from lrasr.data.manifest import unique_stems
    from lrasr.decode.output import write_results
    from lrasr.decode.transcribe import FileResult
    from lrasr.decode.types import Hypothesis, Word

    texts = {"x/a.wav": "one", "y/a.wav": "two", "z/a.2.wav": "three"}
    results = [FileResult(Path(p), Hypothesis(t, [Word(t, 0.0, 1.0)]), 1.0) for p, t in texts.items()]
    written = write_results(results, "srt", str(tmp_path / "subs") + "/")
    assert [p.name for p in written] == ["a.srt", "a.3.srt", "a.2.srt"]
    assert [p.read_text(encoding="utf-8").splitlines()[2] for p in written] == ["one", "two", "three"]
    assert unique_stems(["a.wav", "b/a.wav", "a-2.wav", "c/a-2.wav"], "-") == ["a", "a-3", "a-2", "a-2-2"]
