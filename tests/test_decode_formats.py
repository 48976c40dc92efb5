"""Output writers: SRT/VTT parse back with monotonic cue times; jsonl/tsv/txt keep the inputs' order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lrasr.decode.formats import CUE_SECONDS, WRITERS, cues, timestamp
from lrasr.decode.types import Hypothesis, Word

TIME = r"(\d{2}):(\d{2}):(\d{2})[,.](\d{3})"


def _seconds(match: tuple[str, str, str, str]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def parse_subtitles(text: str, vtt: bool) -> list[tuple[float, float, str]]:
    """A strict reader of the subset we write: numbered (srt) cues, ``start --> end``, text lines."""
    lines = text.split("\n")
    if vtt:
        assert lines[0] == "WEBVTT" and lines[1] == ""
        lines = lines[2:]
    out = []
    blocks = [b for b in "\n".join(lines).split("\n\n") if b.strip()]
    for number, block in enumerate(blocks, 1):
        rows = block.strip("\n").split("\n")
        if vtt and rows[0].startswith("NOTE"):
            continue
        if not vtt:
            assert rows[0] == str(number), block
            rows = rows[1:]
        m = re.fullmatch(TIME + " --> " + TIME, rows[0])
        assert m, rows[0]
        assert ("," in rows[0]) != vtt  # srt uses a comma before the milliseconds, vtt a dot
        start, end = _seconds(m.groups()[:4]), _seconds(m.groups()[4:])
        assert rows[1:] and all(r.strip() for r in rows[1:])
        out.append((start, end, " ".join(rows[1:])))
    return out


def _hypothesis(n_words: int = 40, gap_every: int = 7) -> Hypothesis:
    words, t = [], 1.25
    for i in range(n_words):
        dur = 0.18 + 0.07 * (i % 5)
        words.append(Word(f"വാക്ക്{i}", round(t, 3), round(t + dur, 3)))
        t += dur + (1.5 if i % gap_every == gap_every - 1 else 0.12)
    return Hypothesis(" ".join(w.text for w in words), words)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_parse_with_monotonic_times(fmt):
    hyp = _hypothesis()
    text = WRITERS[fmt]([("a.wav", hyp)])
    parsed = parse_subtitles(text, vtt=fmt == "vtt")
    assert " ".join(c[2] for c in parsed) == hyp.text  # every word once, in order
    previous_end = 0.0
    for start, end, _ in parsed:
        assert previous_end <= start < end
        assert end - start <= CUE_SECONDS + 1.0
        previous_end = end
    assert parsed[0][0] == pytest.approx(1.25)
    assert len(parsed) > 3  # pauses and the length limit split the text into several cues


def test_subtitles_hold_one_recording_and_may_be_empty():
    # cue times restart at zero per recording: several in one file would overlap (write_results writes a folder)
    for fmt in ("srt", "vtt"):
        with pytest.raises(ValueError, match="one recording"):
            WRITERS[fmt]([("a.wav", _hypothesis(5)), ("b.wav", _hypothesis(3))])
    assert parse_subtitles(WRITERS["srt"]([("x.wav", Hypothesis(""))]), vtt=False) == []
    assert WRITERS["vtt"]([("x.wav", Hypothesis(""))]) == "WEBVTT\n\n"


def test_cues_never_overlap_even_with_overlapping_words():
    words = [Word("a", 0.0, 1.0), Word("b", 0.5, 6.5), Word("c", 6.0, 7.0)]
    out = cues(words)
    assert all(out[i][1] <= out[i + 1][0] for i in range(len(out) - 1))
    assert timestamp(3723.4567, ",") == "01:02:03,457" and timestamp(0.0, ".") == "00:00:00.000"


def test_txt_jsonl_tsv_keep_order_and_empty_lines():
    items = [("one.wav", Hypothesis("ഒന്ന്", [Word("ഒന്ന്", 0.1, 0.4)])), ("bad.wav", Hypothesis("")),
             ("tab\tname.wav", Hypothesis("രണ്ട് മൂന്ന്"))]
    assert WRITERS["txt"](items) == ("==> one.wav <==\nഒന്ന്\n\n==> bad.wav <==\n\n\n"
                                     "==> tab name.wav <==\nരണ്ട് മൂന്ന്\n")
    assert WRITERS["txt"](items[2:]) == "രണ്ട് മൂന്ന്\n"  # one recording: the bare transcript
    rows = [json.loads(line) for line in WRITERS["jsonl"](items).splitlines()]
    assert [r["source"] for r in rows] == ["one.wav", "bad.wav", "tab\tname.wav"]
    assert rows[0]["words"] == [{"word": "ഒന്ന്", "start": 0.1, "end": 0.4}] and rows[1]["text"] == ""
    tsv = WRITERS["tsv"](items).splitlines()
    assert tsv[0] == "source\ttext" and tsv[2] == "bad.wav\t" and tsv[3] == "tab name.wav\tരണ്ട് മൂന്ന്"


def test_write_results_to_files_and_folders(tmp_path):
    from lrasr.decode.output import tuned_params, write_results
    from lrasr.decode.transcribe import FileResult
    from lrasr.errors import LrasrError

    results = [FileResult(Path("/x/a.wav"), _hypothesis(4)), FileResult(Path("/y/a.wav"), Hypothesis(""))]
    [txt] = write_results(results, "txt", tmp_path / "out.txt")
    assert txt.read_text(encoding="utf-8").split("\n")[3:] == ["==> /y/a.wav <==", "", ""]
    assert write_results(results, "jsonl", tmp_path) == [tmp_path / "transcripts.jsonl"]
    subs = write_results(results, "srt", tmp_path / "subs")
    assert [p.name for p in subs] == ["a.srt", "a.2.srt"] and subs[1].read_text(encoding="utf-8") == ""
    with pytest.raises(LrasrError, match="folder"):
        write_results(results, "vtt", txt)
    (tmp_path / "tuned.json").write_text('{"alpha": 0.8, "beta": 2, "grid": []}', encoding="utf-8")
    assert tuned_params(tmp_path) == {"alpha": 0.8, "beta": 2.0} and tuned_params(tmp_path / "none") == {}
