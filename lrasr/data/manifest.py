"""Manifests: tab-separated, UTF-8, header row, one row per utterance or segment.

Manifests are the only contract between stages. ``audio`` is relative to the manifest's folder.
Standard columns: id, audio, duration, then where they apply text, raw_text, speaker, source, start,
end, snr_db. ``rejected.tsv`` has source, reason and where known start, end, line.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from lrasr.data import tsv
from lrasr.errors import LrasrError
from lrasr.io import atomic_path

MANIFEST_COLUMNS = ("id", "audio", "duration", "text", "raw_text", "speaker", "source", "start", "end", "snr_db")
REJECTED_COLUMNS = ("source", "reason", "start", "end", "line", "id")
NUMERIC_COLUMNS = ("duration", "start", "end", "snr_db", "line")


def _clean_cell(value: object) -> object:
    # tabs and newlines inside a field would break the TSV; they carry no meaning in transcripts
    if isinstance(value, str):
        return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    return value


def _order_columns(columns: Iterable[str], standard: tuple[str, ...]) -> list[str]:
    columns = list(columns)
    return [c for c in standard if c in columns] + [c for c in columns if c not in standard]


def write_manifest(rows: pd.DataFrame | Iterable[Mapping[str, object]], path: str | Path,
                   standard: tuple[str, ...] = MANIFEST_COLUMNS) -> Path:
    """Write rows atomically as a TSV manifest (standard columns first). Returns the path."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    frame = frame[_order_columns(frame.columns, standard)] if len(frame.columns) else frame
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):  # object or pandas' str dtype
            frame[col] = frame[col].map(_clean_cell)
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar="\\",
                     encoding="utf-8", float_format="%.3f", lineterminator="\n")
    return path


def read_manifest(path: str | Path, required: Iterable[str] = ("id", "audio", "duration")) -> pd.DataFrame:
    """Read a manifest; text columns stay strings, numeric ones become floats.

    Raises ``LrasrError`` naming the file when it is missing or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise LrasrError("manifest not found; run the stage that writes it first", path)
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                            escapechar="\\", encoding="utf-8")
    except pd.errors.EmptyDataError:  # 0 bytes or blank lines only (pandas' own traceback otherwise)
        raise LrasrError("the file is empty: no header line (a manifest's first line names its columns)",
                         path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LrasrError(f"not a valid manifest ({exc})", path) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise LrasrError(f"manifest lacks column(s) {', '.join(missing)} (it has: {', '.join(map(str, frame.columns))})",
                         path)
    return _numbers(frame)


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    for col in NUMERIC_COLUMNS:
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col].replace("", None), errors="coerce")
    return frame


def _spreadsheet_tsv(path: Path) -> pd.DataFrame | None:
    """A user's TSV in which some field starts with a double quote, read as ``lrasr.data.tsv`` reads
    labeled corpora (quoted as spreadsheets write it, else literal); None when no field does (lrasr's
    own manifests escape quotes with a backslash: ``read_manifest`` reads those). A row with the wrong
    number of fields raises ``LrasrError`` naming its line: every row is scored, none is skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LrasrError(f"not a valid manifest (bytes not UTF-8 at byte {exc.start})", path) from None
    if not re.search(r'(?:^|\t)"', text, flags=re.MULTILINE):
        return None
    rows = []
    for number, fields, _ in tsv.records([(n, line.removesuffix("\r"), "")
                                          for n, line in enumerate(text.split("\n"), start=1)]):
        if rows and len(fields) != len(rows[0]):
            raise LrasrError(f"this row has {len(fields)} fields, the header {len(rows[0])}; enclose a field "
                             "holding a tab in double quotes", path, number)
        rows.append([f.strip() if not rows else f for f in fields])
    if not rows:
        return None
    return _numbers(pd.DataFrame(rows[1:], columns=_unique_columns(rows[0]), dtype=str))


def _unique_columns(header: list[str]) -> list[str]:
    """A header's names, a repeated one numbered ``name.1``, ``name.2`` as pandas' reader numbers them (the
    first keeps its name): a frame with two ``text`` columns gives a table, not a column, for ``frame["text"]``."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def read_user_tsv(path: str | Path) -> pd.DataFrame:
    """A TSV a user wrote or exported (no columns required): lrasr's own manifest format, or fields
    quoted as spreadsheets write them (see ``_spreadsheet_tsv``)."""
    path = Path(path)
    frame = _spreadsheet_tsv(path) if path.is_file() else None
    return frame if frame is not None else read_manifest(path, required=())


def read_labeled_manifest(path: str | Path) -> pd.DataFrame:
    """A labeled manifest for scoring: lrasr's (id, audio, text) or a user's labeled corpus TSV, whose
    audio column is ``path`` (a recipe tsv corpus's default) and whose ids may be absent (then the audio
    file's stem, numbered ``-2``, ``-3`` ... when stems repeat). A user's TSV may quote fields as
    spreadsheets do (a transcript holding a tab or a quote)."""
    frame = read_user_tsv(path)
    named = with_audio_column(frame)
    frame = named if named is not None else frame
    missing = [c for c in ("audio", "text") if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise LrasrError(f"manifest lacks column(s) {', '.join(missing)} (it has: {found}); "
                         "a labeled manifest needs audio (or path) and text columns", path)
    if "id" not in frame.columns:
        frame.insert(0, "id", unique_stems([str(a) for a in frame["audio"]], "-"))
    if "speaker" not in frame.columns and "speaker_id" in frame.columns:  # Common Voice's and SMC's name
        frame["speaker"] = frame["speaker_id"]  # for the per-speaker scores
    return frame


def with_audio_column(frame: pd.DataFrame) -> pd.DataFrame | None:
    """``frame`` with its audio files in an ``audio`` column: lrasr's own, or a labeled corpus TSV's
    ``path`` (renamed); None when it has neither."""
    if "audio" in frame.columns:
        return frame
    return frame.rename(columns={"path": "audio"}) if "path" in frame.columns else None


def unique_stems(paths: Iterable[str | Path], sep: str) -> list[str]:
    """The paths' file stems, a repeated one numbered ``<stem><sep>2``, ``<stem><sep>3`` ... in order,
    skipping numbers that are another path's own stem (``a.wav``, ``b/a.wav``, ``a.2.wav`` give ``a``,
    ``a.3``, ``a.2``: the second file must not take the third's name). All names differ."""
    stems = [Path(path).stem for path in paths]
    taken = set(stems)
    first: set[str] = set()
    next_number: dict[str, int] = {}
    names = []
    for stem in stems:
        if stem not in first:
            first.add(stem)
            names.append(stem)
            continue
        number = next_number.get(stem, 2)
        while f"{stem}{sep}{number}" in taken:
            number += 1
        next_number[stem] = number + 1
        taken.add(f"{stem}{sep}{number}")
        names.append(f"{stem}{sep}{number}")
    return names


def audio_paths(frame: pd.DataFrame, manifest_path: str | Path) -> list[Path]:
    """Absolute audio paths of a manifest's rows (``audio`` is relative to the manifest's folder)."""
    root = Path(manifest_path).resolve().parent
    return [p if (p := Path(a)).is_absolute() else root / p for a in frame["audio"]]


def relative_audio(path: str | Path, manifest_dir: str | Path) -> str:
    """Path of ``path`` relative to ``manifest_dir`` when below it or nearby, else absolute."""
    import os

    return os.path.relpath(Path(path).resolve(), Path(manifest_dir).resolve())


class RejectLog:
    """Collects rejected inputs with a reason; nothing is dropped silently."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def add(self, source: str | Path, reason: str, **where: object) -> None:
        self.rows.append({"source": str(source), "reason": reason, **where})

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        """Rejections per reason kind (the text before the first colon)."""
        out: dict[str, int] = {}
        for row in self.rows:
            kind = str(row["reason"]).split(":", 1)[0]
            out[kind] = out.get(kind, 0) + 1
        return out

    def write(self, path: str | Path) -> Path:
        frame = rejected_frame(self.rows)
        return write_manifest(frame, path, standard=tuple(frame.columns))


def rejected_frame(rows: list[dict[str, object]], first: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rejected rows as a table: the ``first`` columns, source, reason, then whichever of start, end,
    line, id any row has. Line numbers stay whole numbers (not 5.000) where other rows have none."""
    columns = [*first, *(c for c in REJECTED_COLUMNS if c in ("source", "reason") or any(c in r for r in rows))]
    frame = pd.DataFrame(rows, columns=columns)
    if "line" in frame.columns:
        frame["line"] = pd.to_numeric(frame["line"]).astype("Int64")
    return frame
