"""Readers for each labeled-corpus layout. Each returns items and adds rejected rows to ``rejects``.

Conventions: ids come from the corpus where it has them, else from the audio path relative to the
corpus folder without extension; relative audio paths resolve against the folder of the file that
names them (Kaldi: the data directory).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lrasr.data.ingest import (AUDIO_EXTENSIONS, Item, normalize_gender, path_id, read_lines, resolve_audio,
                               shorten_path_ids, speaker_column_hint, split_lines)
from lrasr.data import tsv
from lrasr.data.manifest import RejectLog
from lrasr.errors import LrasrError
from lrasr.recipe import LabeledCorpus


# ------------------------------------------------------------------------------------------ tables
def _tsv_records(path: Path, rejects: RejectLog):
    """(line where the record starts, fields) of each non-blank TSV record: fields literal (Common Voice
    keeps quotes as text), or enclosed in double quotes as spreadsheets write them, tabs, quotes and line
    breaks inside (``lrasr.data.tsv``). A line that is not UTF-8 is rejected."""
    for number, fields, why in tsv.records(split_lines(path)):
        if fields is None:
            rejects.add(path, why, line=number)
        else:
            yield number, fields


def _csv_records(path: Path, rejects: RejectLog):
    """(line where the record starts, fields) of each non-blank CSV record, with the csv module's
    quoting: a quoted field may hold commas, doubled quotes and line breaks, so one record can span
    several lines. A record with a line that is not UTF-8 is rejected. A quote left open to the end
    of the file raises ``LrasrError`` naming the line it was opened on (it would swallow every row after it)."""
    lines = split_lines(path, replace=True)
    reader = csv.reader(text + "\n" for _, text, _ in lines)
    consumed = 0
    while True:
        start = consumed + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise LrasrError(f"cannot read the CSV record starting here ({exc}); look for a quote that is "
                             "never closed", path, start) from None
        consumed = reader.line_num
        if consumed == len(lines) and _open_quote(lines[start - 1:consumed]):
            raise LrasrError("a quoted field opened on this line is never closed (it runs to the end of the "
                             "file); close or remove the quote", path, start)
        bad = [(number, why) for number, _, why in lines[start - 1:consumed] if why]
        if bad:
            number, why = bad[0]
            rejects.add(path, why if number == start else f"{why} (line {number}, inside this record)", line=start)
            continue
        if len(fields) <= 1 and not "".join(fields).strip():
            continue  # a blank line
        yield start, fields


def _open_quote(lines: list[tuple[int, str | None, str]]) -> bool:
    """Whether these lines end inside a quoted field (the permissive reader accepts that silently)."""
    try:
        list(csv.reader((text + "\n" for _, text, _ in lines), strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _table_rows(path: Path, delimiter: str, rejects: RejectLog, required: list[str]):
    """Yield (line, {column: value}) for each well-formed row; header problems raise ``LrasrError``."""
    records = _csv_records(path, rejects) if delimiter == "," else _tsv_records(path, rejects)
    try:
        header_line, header_fields = next(records)
    except StopIteration:
        raise LrasrError("empty table: expected a header row and data rows", path) from None
    header = [h.strip() for h in header_fields]
    missing = [c for c in required if c not in header]
    if missing:
        sep = "tab" if delimiter == "\t" else "comma"
        raise LrasrError(f"missing column(s) {', '.join(missing)} in the header (found: {', '.join(header)}; "
                         f"{sep}-separated); set the corpus's *_column keys to the names used", path, header_line)
    for number, fields in records:
        if len(fields) != len(header):
            hint = "; enclose a field holding a tab in double quotes" if delimiter == "\t" else ""
            rejects.add(path, f"malformed row: {len(fields)} fields, header has {len(header)}{hint}", line=number)
            continue
        yield number, dict(zip(header, fields))


def _explicit(corpus: LabeledCorpus, key: str) -> bool:
    return key in corpus.model_fields_set


def _speaker_genders(corpus: LabeledCorpus, base: Path) -> dict[str, str | None]:
    if corpus.speakers is None:
        return {}
    path = corpus.speakers if corpus.speakers.is_absolute() else base / corpus.speakers
    if not path.is_file():
        raise LrasrError("speaker table not found (corpora.labeled[].speakers)", path)
    rejects = RejectLog()  # a broken line here only loses a gender, never an utterance
    genders: dict[str, str | None] = {}
    lines = read_lines(path, rejects)
    header = next(lines, (0, ""))[1].split("\t")
    if "gender" not in header:
        raise LrasrError("speaker table needs a 'gender' column (speaker id in the first column)", path)
    col = header.index("gender")
    for _, text in lines:
        fields = text.split("\t")
        if len(fields) > col:
            genders[fields[0].strip()] = normalize_gender(fields[col])
    return genders


def read_table(corpus: LabeledCorpus, rejects: RejectLog) -> list[Item]:
    """tsv/csv with a header: audio and text columns required; id, speaker, gender, duration optional."""
    path = corpus.path
    if path.is_dir():
        raise LrasrError(f"a {corpus.format} corpus path must be the table file, not a folder", path)
    delimiter = "," if corpus.format == "csv" else "\t"
    base = path.parent
    required = [corpus.audio_column, corpus.text_column]
    optional = {"id": corpus.id_column, "speaker": corpus.speaker_column, "gender": corpus.gender_column,
                "duration": corpus.duration_column}
    for key, column in optional.items():
        if column and _explicit(corpus, f"{key}_column"):
            required.append(column)  # the user named it: its absence is an error, not a silent default
    genders = _speaker_genders(corpus, base)
    items, derived = [], []
    first = True
    for number, row in _table_rows(path, delimiter, rejects, required):
        if first:  # every row has the header's columns
            hint = speaker_column_hint(corpus, list(row))
            if hint:
                from lrasr.report import warn

                warn(f"{path}: {hint}")
            first = False
        audio_value = row[corpus.audio_column].strip()
        if not audio_value:
            rejects.add(path, "missing audio: empty audio path", line=number)
            continue
        audio = resolve_audio(audio_value, base)
        speaker = (row.get(corpus.speaker_column or "", "") or "").strip() or None
        gender = normalize_gender(row.get(corpus.gender_column or "")) if corpus.gender_column else None
        duration = None
        if corpus.duration_column and row.get(corpus.duration_column, "").strip():
            try:
                duration = float(row[corpus.duration_column])
            except ValueError:
                rejects.add(path, f"bad duration: {row[corpus.duration_column]!r} is not a number", line=number)
                continue
        given_id = (row.get(corpus.id_column) or "").strip()
        derived.append(not given_id)
        items.append(Item(
            id=given_id or path_id(audio, base), audio=audio,
            text=row[corpus.text_column], source=str(path), line=number, speaker=speaker,
            gender=gender or genders.get(speaker or ""), duration=duration,
        ))
    shorten_path_ids(items, derived)
    return items


def read_commonvoice(corpus: LabeledCorpus, rejects: RejectLog) -> list[Item]:
    """A Common Voice release folder: ``<split>.tsv`` (default validated) and ``clips/``."""
    root = corpus.path
    table = root / f"{corpus.split or 'validated'}.tsv"
    if not table.is_file():
        if root.name == "clips" and any(_is_cv_table(p) for p in root.parent.glob("*.tsv")):
            raise LrasrError(f"this is the clips folder: set the corpus's path to the release folder above it, "
                             f"{root.parent}", root)
        tables = [p.stem for p in sorted(root.glob("*.tsv")) if _is_cv_table(p)]
        raise LrasrError(f"no {table.name} in this Common Voice folder (set the corpus's split: to one of "
                         f"{', '.join(tables) or 'its tables with path and sentence columns'})", root)
    durations = _cv_durations(root / "clip_durations.tsv")
    items = []
    for number, row in _table_rows(table, "\t", rejects, ["path", "sentence"]):
        clip = row["path"].strip()
        if not clip:
            rejects.add(table, "missing audio: empty path", line=number)
            continue
        audio = root / "clips" / clip
        items.append(Item(
            id=Path(clip).stem, audio=audio, text=row["sentence"], source=str(table), line=number,
            speaker=(row.get("client_id") or "").strip() or None, gender=normalize_gender(row.get("gender")),
            duration=durations.get(clip),
        ))
    return items


def _is_cv_table(path: Path) -> bool:
    """Whether a TSV's header names Common Voice's ``path`` and ``sentence`` columns (clip_durations.tsv
    and reported.tsv do not: offering them as a split would only lead to the next error)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except OSError:
        return False
    return {"path", "sentence"} <= {h.strip() for h in header}


def _cv_durations(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    out = {}
    for _, text in read_lines(path, RejectLog()):
        fields = text.split("\t")
        if len(fields) == 2 and fields[1].strip().isdigit():
            out[fields[0].strip()] = int(fields[1]) / 1000.0  # duration[ms]
    return out


# ------------------------------------------------------------------------------------------- kaldi
def _kaldi_map(path: Path, rejects: RejectLog, keep_empty_value: bool = False) -> dict[str, tuple[int, str]]:
    """``key value...`` lines -> {key: (line, value)}; a repeated key is rejected."""
    out: dict[str, tuple[int, str]] = {}
    for number, text in read_lines(path, rejects):
        parts = text.strip().split(maxsplit=1)
        key, value = parts[0], (parts[1] if len(parts) > 1 else "")
        if key in out:
            rejects.add(path, f"duplicate id: {key} already on line {out[key][0]}", line=number, id=key)
            continue
        out[key] = (number, value)
    return out


def read_kaldi(corpus: LabeledCorpus, rejects: RejectLog) -> list[Item]:
    """A Kaldi data directory: ``wav.scp`` (plain paths), ``text``, optional ``segments``, ``utt2spk``,
    ``spk2gender``. Relative paths in wav.scp resolve against the data directory."""
    root = corpus.path
    for name in ("wav.scp", "text"):
        if not (root / name).is_file():
            raise LrasrError(f"Kaldi data directory lacks {name}", root)
    wavs = _kaldi_map(root / "wav.scp", rejects)
    texts = _kaldi_map(root / "text", rejects)
    segments = _kaldi_map(root / "segments", rejects) if (root / "segments").is_file() else None
    utt2spk = {k: v for k, (_, v) in _kaldi_map(root / "utt2spk", RejectLog()).items()} \
        if (root / "utt2spk").is_file() else {}
    spk2gender = {k: normalize_gender(v) for k, (_, v) in _kaldi_map(root / "spk2gender", RejectLog()).items()} \
        if (root / "spk2gender").is_file() else {}
    text_file, used_recordings, items = root / "text", set(), []
    for utt, (number, transcript) in texts.items():
        start = end = None
        rec = utt
        if segments is not None:
            if utt not in segments:
                rejects.add(text_file, f"missing audio: utterance {utt} has no line in segments", line=number, id=utt)
                continue
            seg_line, seg = segments[utt]
            fields = seg.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                rejects.add(root / "segments", "malformed row: expected 'utt recording start end'", line=seg_line, id=utt)
                continue
            if end != -1 and end <= start:
                rejects.add(root / "segments", f"bad segment: end {end} <= start {start}", line=seg_line, id=utt)
                continue
            end = None if end == -1 else end
        used_recordings.add(rec)
        if rec not in wavs:
            rejects.add(text_file, f"missing audio: recording {rec} not in wav.scp", line=number, id=utt)
            continue
        wav_line, location = wavs[rec]
        if location.rstrip().endswith("|") or location.lstrip().startswith("|"):
            rejects.add(root / "wav.scp", "piped command in wav.scp is not supported: convert the audio to files "
                        "(e.g. run the command once per recording) and list plain paths", line=wav_line, id=utt)
            continue
        speaker = utt2spk.get(utt)
        items.append(Item(id=utt, audio=resolve_audio(location, root), text=transcript, source=str(text_file),
                          line=number, start=start, end=end, speaker=speaker, gender=spk2gender.get(speaker or "")))
    if segments is not None:
        for utt, (seg_line, _) in segments.items():
            if utt not in texts:
                rejects.add(root / "segments", "no transcript: segment has no line in text", line=seg_line, id=utt)
    for rec, (wav_line, _) in wavs.items():
        if rec not in used_recordings:
            rejects.add(root / "wav.scp", "no transcript: recording has no utterance in text", line=wav_line, id=rec)
    return items


# ----------------------------------------------------------------------------------------- fairseq
def read_fairseq(corpus: LabeledCorpus, rejects: RejectLog) -> list[Item]:
    """fairseq wav2vec manifest: ``<split>.tsv`` (root line, then ``rel_path<TAB>samples``) with
    ``<split>.wrd`` (words) or ``<split>.ltr`` (letters, ``|`` between words), aligned line by line."""
    tsv = corpus.path if corpus.path.is_file() else corpus.path / f"{corpus.split or 'train'}.tsv"
    if not tsv.is_file():
        raise LrasrError(f"fairseq manifest {tsv.name} not found", tsv)
    labels = tsv.with_suffix("." + corpus.labels)
    if not labels.is_file():
        other = tsv.with_suffix(".ltr" if corpus.labels == "wrd" else ".wrd")
        if not other.is_file():
            raise LrasrError(f"no label file beside the manifest (expected {labels.name} or {other.name})", tsv)
        labels = other
    rows = split_lines(tsv)
    label_rows = split_lines(labels)
    if not rows or rows[0][1] is None or not rows[0][1].strip():
        raise LrasrError("first line must be the audio root folder", tsv, 1)
    root = Path(rows[0][1].strip())
    root = root if root.is_absolute() else tsv.parent / root
    body = rows[1:]
    if len(body) != len(label_rows):
        raise LrasrError(f"{len(body)} audio rows but {len(label_rows)} lines in {labels.name}: they must align "
                         "line by line", labels)
    items = []
    for (number, text, why), (lnum, label, lwhy) in zip(body, label_rows):
        if text is None:
            rejects.add(tsv, why, line=number)
            continue
        if label is None:
            rejects.add(labels, lwhy, line=lnum)
            continue
        fields = text.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip().isdigit():
            rejects.add(tsv, "malformed row: expected 'relative/path<TAB>num_samples'", line=number)
            continue
        audio = resolve_audio(fields[0], root)
        if labels.suffix == ".ltr":
            label = " ".join("".join(label.split(" ")).replace("|", " ").split())
        items.append(Item(id=Path(fields[0].strip()).with_suffix("").as_posix(), audio=audio, text=label,
                          source=str(tsv), line=number, samples=int(fields[1])))
    shorten_path_ids(items, [True] * len(items))
    return items


# -------------------------------------------------------------------------------------------- nemo
def read_nemo(corpus: LabeledCorpus, rejects: RejectLog) -> list[Item]:
    """NeMo JSON lines: ``audio_filepath``, ``text``, ``duration`` (and optional ``offset``, ``speaker``)."""
    path = corpus.path
    if path.is_dir():
        raise LrasrError("a nemo corpus path must be the JSON-lines manifest file, not a folder", path)
    items, derived = [], []
    for number, text in read_lines(path, rejects):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            rejects.add(path, f"malformed row: not JSON ({exc.msg} at column {exc.colno})", line=number)
            continue
        if not isinstance(obj, dict):
            rejects.add(path, "malformed row: not a JSON object", line=number)
            continue
        missing = [k for k in ("audio_filepath", "text") if not isinstance(obj.get(k), str)]
        if missing:
            rejects.add(path, f"missing key: {', '.join(missing)}", line=number)
            continue
        audio = resolve_audio(obj["audio_filepath"], path.parent)
        try:
            duration = float(obj["duration"]) if obj.get("duration") is not None else None
            offset = float(obj["offset"]) if obj.get("offset") is not None else None
        except (TypeError, ValueError):
            rejects.add(path, "bad duration: duration/offset is not a number", line=number)
            continue
        start = end = None
        uid = str(obj.get("id") or obj.get("utt_id") or path_id(audio, path.parent))
        if offset is not None and (duration is not None or offset > 0):
            start, end = offset, (offset + duration if duration is not None else None)
            if offset > 0:
                uid = str(obj.get("id") or obj.get("utt_id") or f"{uid}_{int(round(offset * 1000)):08d}")
        speaker = obj.get("speaker", obj.get("speaker_id", obj.get("spk_id")))
        derived.append(not (obj.get("id") or obj.get("utt_id")))
        items.append(Item(id=uid, audio=audio, text=obj["text"], source=str(path), line=number, start=start, end=end,
                          speaker=None if speaker is None else str(speaker), gender=normalize_gender(obj.get("gender")),
                          duration=duration))
    shorten_path_ids(items, derived)
    return items


# ------------------------------------------------------------------------------------------ folder
def read_folder(corpus: LabeledCorpus, rejects: RejectLog) -> list[Item]:
    """Audio files anywhere below the folder, each with a same-named ``.txt`` transcript beside it.

    The speaker is the first sub-folder below the corpus folder when files are nested (a common
    ``speaker/utterance.wav`` layout), else unknown.
    """
    root = corpus.path
    if not root.is_dir():
        raise LrasrError("a folder corpus path must be a folder", root)
    audio_files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    stems = {p.with_suffix("") for p in audio_files}
    items = []
    for audio in audio_files:
        txt = audio.with_suffix(".txt")
        if not txt.is_file():
            rejects.add(audio, "no transcript: no .txt file with the same name beside the audio")
            continue
        lines = split_lines(txt)
        bad = next(((n, why) for n, t, why in lines if t is None), None)
        if bad is not None:
            rejects.add(txt, bad[1], line=bad[0])
            continue
        rel = audio.relative_to(root)
        items.append(Item(id=path_id(audio, root), audio=audio, text=" ".join(t for _, t, _ in lines if t),
                          source=str(txt), line=1, speaker=rel.parts[0] if len(rel.parts) > 1 else None))
    shorten_path_ids(items, [True] * len(items))
    for txt in sorted(root.rglob("*.txt")):
        if txt.with_suffix("") not in stems:
            rejects.add(txt, "missing audio: transcript has no audio file with the same name beside it")
    return items
