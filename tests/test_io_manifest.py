"""Atomic writes and the manifest contract shared by every stage."""

from __future__ import annotations

import pandas as pd
import pytest

from lrasr.data.manifest import RejectLog, audio_paths, read_manifest, write_manifest
from lrasr.errors import LrasrError
from lrasr.io import atomic_path, file_sha1, write_json_atomic


def test_atomic_path_keeps_old_file_when_block_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"], "temporary file left behind"


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1, "text": "മലയാളം"})
    assert "മലയാളം" in target.read_text(encoding="utf-8")
    assert len(file_sha1(target)) == 40
    assert target.stat().st_mode & 0o044, "atomic writes must be readable by others like a plain open()"


def test_manifest_round_trip_keeps_unicode_and_cleans_tabs(tmp_path):
    rows = [
        {"id": "u1", "audio": "a/u1.flac", "duration": 1.23456, "text": "ഒരു\tവാക്ക്", "speaker": "s1"},
        {"id": "u2", "audio": "a/u2.flac", "duration": 2.0, "text": "line\nbreak", "speaker": "s2"},
    ]
    path = write_manifest(rows, tmp_path / "manifest.tsv")
    header = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert header[:3] == ["id", "audio", "duration"]
    frame = read_manifest(path)
    assert list(frame["text"]) == ["ഒരു വാക്ക്", "line break"]
    assert frame["duration"].tolist() == pytest.approx([1.235, 2.0])
    assert audio_paths(frame, path)[0] == tmp_path / "a" / "u1.flac"


def test_read_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(LrasrError, match="manifest not found"):
        read_manifest(tmp_path / "missing.tsv")
    bad = tmp_path / "bad.tsv"
    pd.DataFrame([{"id": "x", "duration": 1}]).to_csv(bad, sep="\t", index=False)
    with pytest.raises(LrasrError, match=r"bad\.tsv.*audio"):
        read_manifest(bad)


def test_reject_log_counts_and_writes(tmp_path):
    log = RejectLog()
    log.add("a.wav", "undecodable: not audio")
    log.add("b.wav", "too short: 0.2 s", start=1.0, end=1.2)
    log.add("c.wav", "undecodable: truncated")
    assert log.counts() == {"undecodable": 2, "too short": 1}
    frame = read_manifest(log.write(tmp_path / "rejected.tsv"), required=("source", "reason"))
    assert len(frame) == 3 and frame.loc[1, "start"] == 1.0
