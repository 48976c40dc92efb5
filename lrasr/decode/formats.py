"""Transcript writers: txt, jsonl, tsv, srt and vtt (word timings in jsonl, cues from words in srt/vtt).

Each writer takes the whole list of ``(source name, Hypothesis)`` in input order and returns text;
a file that could not be transcribed has an empty hypothesis (an empty transcript line in txt).
txt of one recording is the bare transcript; of several, each transcript follows a ``==> name <==``
line, as ``head`` and ``tail`` label several files. srt and vtt hold one recording each: their cue
times start at zero per recording, so several recordings cannot share one subtitle file.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

from lrasr.decode.types import Hypothesis, Word
from lrasr.io import utf8_name

FORMATS = ("txt", "jsonl", "tsv", "srt", "vtt")
# subtitle cues: at most this many seconds or words, and a new cue after a pause this long
CUE_SECONDS = 5.0
CUE_WORDS = 12
CUE_PAUSE = 0.8

Item = tuple[str, Hypothesis]


def _clean(text: str) -> str:
    return " ".join(utf8_name(text).replace("\t", " ").split())


def txt_header(name: str) -> str:
    """The line naming a recording in txt output of several recordings."""
    return f"==> {_clean(name)} <=="


def write_txt(items: Sequence[Item]) -> str:
    """One recording: its transcript and a newline (``lrasr transcribe a.wav > a.txt``). Several: per
    recording a ``==> name <==`` line, the transcript line, and a blank line between recordings."""
    if len(items) == 1:
        return _clean(items[0][1].text) + "\n"
    return "\n".join(f"{txt_header(name)}\n{_clean(h.text)}\n" for name, h in items)


def write_tsv(items: Sequence[Item]) -> str:
    return "source\ttext\n" + "".join(f"{_clean(name)}\t{_clean(h.text)}\n" for name, h in items)


def write_jsonl(items: Sequence[Item], errors: Sequence[str | None] | None = None) -> str:
    """One JSON object per input; ``errors`` (aligned with ``items``) adds an ``error`` key to the rows
    of inputs that could not be transcribed, so an empty text says why in the file itself."""
    lines = []
    for i, (name, h) in enumerate(items):
        words = [{"word": w.text, "start": w.start, "end": w.end} for w in h.words]
        row = {"source": utf8_name(name), "text": h.text, "words": words}
        if errors is not None and errors[i]:
            row["error"] = utf8_name(errors[i])
        lines.append(json.dumps(row, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def cues(words: Sequence[Word]) -> list[tuple[float, float, str]]:
    """Group words into subtitle cues (start, end, text), in time order, never overlapping."""
    out: list[tuple[float, float, str]] = []
    current: list[Word] = []
    for word in words:
        if current and (word.end - current[0].start > CUE_SECONDS or len(current) >= CUE_WORDS
                        or word.start - current[-1].end > CUE_PAUSE):
            out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
            current = []
        current.append(word)
    if current:
        out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
    fixed: list[tuple[float, float, str]] = []
    for start, end, text in out:
        if fixed and start < fixed[-1][1]:
            start = fixed[-1][1]
        fixed.append((start, max(end, start + 0.02), text))
    return fixed


def timestamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS,mmm`` (srt, sep=",") or ``HH:MM:SS.mmm`` (vtt, sep=".")."""
    ms = int(round(max(0.0, seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _subtitles(items: Sequence[Item], sep: str, header: str) -> str:
    if len(items) > 1:
        # each recording's cues start at 00:00: one file of several would overlap in time (no player can use it)
        raise ValueError(f"a subtitle file holds one recording, got {len(items)}; write one file per recording")
    blocks = []
    for number, (start, end, text) in enumerate(cues(items[0][1].words if items else []), 1):
        prefix = f"{number}\n" if sep == "," else ""
        blocks.append(f"{prefix}{timestamp(start, sep)} --> {timestamp(end, sep)}\n{text}")
    return header + "\n\n".join(blocks) + ("\n" if blocks else "")


def write_srt(items: Sequence[Item]) -> str:
    return _subtitles(items, ",", "")


def write_vtt(items: Sequence[Item]) -> str:
    return _subtitles(items, ".", "WEBVTT\n\n")


WRITERS: dict[str, Callable[[Sequence[Item]], str]] = {
    "txt": write_txt, "jsonl": write_jsonl, "tsv": write_tsv, "srt": write_srt, "vtt": write_vtt,
}
