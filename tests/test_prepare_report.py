"""`run_prepare`'s merged rejected.tsv and labeled table, and labeled-audio edge cases (fast, generated audio)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lrasr.data.ingest_audio import check_audio, make_job
from lrasr.data.manifest import RejectLog, read_manifest, write_manifest
from lrasr.data.splits import read_split_lists
from lrasr.errors import LrasrError
from lrasr.recipe import FilterConfig, Recipe
from lrasr.stages.prepare import _labeled_rows, _merged_rejects, run_prepare


def tone(path: Path, seconds: float, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return path


def test_rejected_tsv_keeps_line_numbers_whole(tmp_path):
    unlabeled, labeled = RejectLog(), RejectLog()
    unlabeled.add("a.wav", "too short: 0.5 s", start=1.0, end=1.5, id="a-00001")
    labeled.add("t.tsv", "empty text", line=5, id="u1")
    labeled.add("t.tsv", "malformed row: 2 fields, header has 3", line=12)
    frame = _merged_rejects(unlabeled, labeled)
    write_manifest(frame, tmp_path / "rejected.tsv", standard=tuple(frame.columns))
    lines = (tmp_path / "rejected.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["input", "source", "reason", "start", "end", "line", "id"]
    assert lines[2].split("\t")[5] == "5" and lines[3].split("\t")[5] == "12"  # not 5.000
    assert lines[1].split("\t")[3:6] == ["1.000", "1.500", ""]
    back = read_manifest(tmp_path / "rejected.tsv", required=("input", "reason"))
    assert back["line"].tolist()[1:] == [5, 12]


def test_labeled_table_shows_rejected_characters():
    rows = dict(_labeled_rows({"utterances": 3, "top_rejected_chars": ["'e' U+0065 LATIN SMALL LETTER E x2"],
                               "rejected_by_reason": {"empty text": 1, "too short": 2}, "figure": "x.png"}))
    assert rows["top_rejected_chars"] == "'e' U+0065 LATIN SMALL LETTER E x2"
    assert rows["rejected_by_reason"] == "empty text 1, too short 2"
    assert rows["utterances"] == 3


def test_broken_labeled_index_stops_before_any_recording_is_segmented(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    tone(raw / "a.wav", 2.0)
    (tmp_path / "t.tsv").write_text("file\tsentence\na.wav\tഞാൻ\n", encoding="utf-8")
    recipe = Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(tmp_path / "w"), "corpora": {
        "unlabeled": [{"path": str(raw)}], "labeled": [{"format": "tsv", "path": str(tmp_path / "t.tsv")}]}})
    with pytest.raises(LrasrError, match="missing column"):
        run_prepare(recipe)
    assert not list((tmp_path / "w").rglob("*.json")), "no recording was processed before the error"


def _job(audio: Path, out: Path, start: float | None = None, end: float | None = None):
    return make_job(audio, start, end, None, None, out, True, FilterConfig())


def test_negative_segment_start_is_rejected_not_read_from_the_end(tmp_path):
    audio = tone(tmp_path / "a.wav", 3.0)
    res = check_audio(_job(audio, tmp_path / "o.flac", start=-1.0, end=1.0))
    assert not res.ok and res.reason.startswith("bad segment: negative start")


def test_rewritten_flac_is_redone_when_its_source_changed(tmp_path):
    audio = tone(tmp_path / "a.wav", 1.0)
    out = tmp_path / "o.flac"
    assert check_audio(_job(audio, out)).duration == pytest.approx(1.0)
    first = out.stat().st_mtime_ns
    assert check_audio(_job(audio, out)).ok and out.stat().st_mtime_ns == first  # unchanged source: reused
    tone(audio, 2.0, freq=440.0)
    os.utime(audio, ns=(first + 10**9, first + 10**9))  # the replacement is newer than the old FLAC
    res = check_audio(_job(audio, out))
    assert res.ok and res.duration == pytest.approx(2.0) and sf.info(str(out)).duration == pytest.approx(2.0)


def test_undecodable_split_list_is_one_error(tmp_path):
    (tmp_path / "train.lst").write_bytes(b"\xff\xfe utt1\n")
    with pytest.raises(LrasrError, match=r"train\.lst: cannot read split list for train"):
        read_split_lists({"train": tmp_path / "train.lst"})


def test_unwritable_workdir_is_one_error(tmp_path):
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    (tmp_path / "t.tsv").write_text("path\ttext\n", encoding="utf-8")
    recipe = Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(tmp_path / "file" / "w"),
                                    "corpora": {"labeled": [{"format": "tsv", "path": str(tmp_path / "t.tsv")}]}})
    with pytest.raises(LrasrError, match="cannot create the output folder"):
        run_prepare(recipe)


def test_symlink_loop_in_a_corpus_folder_is_walked_once(tmp_path):
    from lrasr.stages.prepare_unlabeled import list_inputs

    sub = tmp_path / "raw" / "sub"
    sub.mkdir(parents=True)
    tone(sub / "a.wav", 1.0)
    (sub / "back").symlink_to(tmp_path / "raw")  # raw/sub/back -> raw: a loop
    recipe = Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(tmp_path / "w"),
                                    "corpora": {"unlabeled": [{"path": str(tmp_path / "raw")}]}})
    inputs, rejects, ignored = list_inputs(recipe)
    assert inputs == [sub / "a.wav"] and len(rejects) == 0 and ignored == 0


def test_unexpected_failure_rejects_one_labeled_item_not_the_run(tmp_path):
    from lrasr.data.ingest_audio import check_all

    good, bad = tone(tmp_path / "a.wav", 1.0), tone(tmp_path / "b.wav", 1.0)
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    jobs = [_job(bad, tmp_path / "file" / "b.flac"), _job(good, tmp_path / "a.flac")]  # b's FLAC cannot be written
    first, second = check_all(jobs)
    assert not first.ok and first.reason.startswith("internal error: FileExistsError")
    assert second.ok and Path(second.audio).is_file()


def test_missing_speaker_column_is_warned_not_silent(tmp_path, capsys):
    from lrasr.stages.prepare_labeled import prepare_labeled

    for i in range(4):
        tone(tmp_path / f"a{i}.wav", 1.0)
    (tmp_path / "t.tsv").write_text("path\tspeaker_id\ttext\n" + "".join(f"a{i}.wav\ts{i % 2}\tഞാൻ\n" for i in range(4)),
                                    encoding="utf-8")
    recipe = Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(tmp_path / "w"),
                                    "corpora": {"labeled": [{"format": "tsv", "path": str(tmp_path / "t.tsv")}]}})
    summary, _ = prepare_labeled(recipe)
    assert summary["utterances_without_speaker"] == 4
    assert "4 of 4 utterances have no speaker" in " ".join(capsys.readouterr().err.split())
    recipe.corpora.labeled[0].speaker_column = "speaker_id"
    assert prepare_labeled(recipe)[0]["utterances_without_speaker"] == 0


@pytest.mark.parametrize("fmt", ["FLAC", "MP3"])
def test_referenced_file_cut_off_after_its_header_is_rejected(tmp_path, fmt):
    t = np.arange(16000 * 4) / 16000
    full = tmp_path / f"full.{fmt.lower()}"
    sf.write(str(full), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # the header still promises 4 s
    reference = [make_job(p, None, None, None, None, tmp_path / "o.flac", False, FilterConfig()) for p in (full, cut)]
    ok, bad = (check_audio(job) for job in reference)
    assert ok.ok and ok.audio == str(full)
    assert not bad.ok and "damaged or truncated" in bad.reason and str(cut) in bad.reason


@pytest.mark.parametrize("rewrite", [False, True])
def test_cut_off_wav_is_rejected_whether_referenced_or_rewritten(tmp_path, rewrite):
    """A WAV cut off after its header decodes without error to what is left, so its transcript would be
    paired with part of its audio: rejected in both labeled-audio modes (reference and flac rewrite). A
    segment (start/end) inside what is left is still fine."""
    t = np.arange(16000 * 4) / 16000
    full = tmp_path / "full.wav"
    sf.write(str(full), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    ok, bad = (check_audio(make_job(p, None, None, None, None, tmp_path / f"{p.stem}.flac", rewrite, FilterConfig()))
               for p in (full, cut))
    assert ok.ok
    assert not bad.ok and "the header promises 4.00 s but the file holds 2.00 s" in bad.reason and str(cut) in bad.reason
    part = check_audio(make_job(cut, 0.5, 1.5, None, None, tmp_path / "part.flac", rewrite, FilterConfig()))
    assert part.ok


def test_summary_table_wraps_a_long_path_instead_of_cutting_it():
    """In an 80-column terminal a model or tokenizer path was shown as '/tmp/…/prepa…' (found in session 5):
    long values now wrap, every character still printed."""
    from rich.console import Console

    from lrasr.report import summary_table

    path = "/tmp/lrasr_qa_r/a_rather_long_workdir_name/prepare/tokenizer/tokenizer.model.and.more"
    console = Console(width=80, record=True, color_system=None)
    console.print(summary_table("prepare", [("tokenizer", path), ("utterances", 119)]))
    text = console.export_text()
    shown = "".join(ch for ch in text if ch not in " │┃\n")
    assert path in shown and "…" not in text
