"""Labeled-corpus ingest: any supported layout -> a list of :class:`Item` plus rejected rows.

Each format reader (``lrasr.data.ingest_formats``) reads its index files line by line, so a broken
row becomes a rejected row naming the file and line, and a broken *file* (a missing required column,
label and manifest files of different lengths) raises one ``LrasrError`` naming it. Every input row
ends up either as an item or as a rejected row: ``len(items) + len(rejects) == input rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lrasr.data.manifest import RejectLog
from lrasr import recipe as recipe_defaults
from lrasr.errors import LrasrError
from lrasr.recipe import LabeledCorpus

AUDIO_EXTENSIONS = tuple("." + ext for ext in recipe_defaults.AUDIO_EXTENSIONS)


@dataclass
class Item:
    """One labeled utterance as found in a corpus, before any checks."""

    id: str
    audio: Path  # absolute
    text: str  # raw transcript as written in the corpus
    source: str  # the index/transcript file the item came from
    line: int | None = None  # 1-based line in ``source``
    start: float | None = None  # seconds, when the utterance is a segment of a longer recording
    end: float | None = None
    speaker: str | None = None
    gender: str | None = None  # "male", "female", "other" or None
    duration: float | None = None  # declared by the corpus, in seconds
    samples: int | None = None  # declared length in samples of the file's own rate (fairseq)
    split: str | None = None  # corpus-defined split (LabeledCorpus.assign_split)
    extra: dict[str, str] = field(default_factory=dict)


def normalize_gender(value: str | None) -> str | None:
    """Map the spellings corpora use (M, Male, male_masculine, F, ...) to male/female/other/None."""
    if value is None:
        return None
    v = value.strip().lower()
    if not v or v in ("na", "n/a", "none", "default", "unknown", "-", "?"):
        return None
    if v in ("m", "male") or v.startswith("male"):
        return "male"
    if v in ("f", "female") or v.startswith("female"):
        return "female"
    return "other"


def split_lines(path: Path, replace: bool = False) -> list[tuple[int, str | None, str]]:
    """Every line of a text file as (1-based number, text or None when not UTF-8, why not).

    Keeps blank lines (label files align line by line with their manifest). Strips ``\r`` and a
    UTF-8 byte-order mark. ``replace=True`` gives a line that is not UTF-8 as text too (bad bytes
    replaced by U+FFFD, ASCII such as quotes intact), still with its reason. Raises ``LrasrError``
    naming the file when it cannot be read.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LrasrError(f"cannot read ({exc.strerror})", path) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    chunks = data.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    out: list[tuple[int, str | None, str]] = []
    for number, raw in enumerate(chunks, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            out.append((number, raw.decode("utf-8"), ""))
        except UnicodeDecodeError as exc:
            out.append((number, raw.decode("utf-8", errors="replace") if replace else None,
                        f"undecodable text: bytes not UTF-8 at byte {exc.start} of the line"))
    return out


def read_lines(path: Path, rejects: RejectLog) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank UTF-8 line; a line that is not UTF-8 is rejected instead."""
    for number, text, why in split_lines(path):
        if text is None:
            rejects.add(path, why, line=number)
        elif text.strip():
            yield number, text


# Header names that hold a speaker id in common corpora and exports (Common Voice's client_id included),
# compared in lower case with '-' and ' ' read as '_'.
SPEAKER_COLUMN_NAMES = ("speaker_id", "speakerid", "spk", "spk_id", "spkid", "speaker_name", "client_id",
                        "reader", "reader_id", "user_id")


def speaker_column_hint(corpus: LabeledCorpus, header: list[str]) -> str | None:
    """What to say when a table lacks the default ``speaker`` column but has a usual speaker-id column
    (``speaker_id``, ``client_id``, ...). It is not used unless named (a guess could be wrong), yet without
    speakers every utterance is its own group and the speaker-disjoint split puts one voice in train and test."""
    column = corpus.speaker_column
    if column is None or "speaker_column" in corpus.model_fields_set or column in header:
        return None
    found = [h for h in header if h.strip().lower().replace("-", "_").replace(" ", "_") in SPEAKER_COLUMN_NAMES]
    if not found:
        return None
    return (f"no '{column}' column, but '{found[0]}' looks like one: set the corpus's speaker_column: {found[0]} "
            "(unset, no utterance has a speaker)")


def path_id(audio: Path, base: Path) -> str:
    """An utterance id from an audio path: relative to ``base`` without extension, else the stem."""
    try:
        return audio.relative_to(base).with_suffix("").as_posix()
    except ValueError:
        return audio.stem


def resolve_audio(value: str, base: Path) -> Path:
    """An audio path from an index file: absolute as given, else relative to ``base``."""
    p = Path(value.strip()).expanduser()
    return p if p.is_absolute() else base / p


def shorten_path_ids(items: list[Item], derived: list[bool]) -> None:
    """Ids derived from audio paths become bare file stems when the stems are unique in the corpus
    (``audio/x`` -> ``x``); otherwise they keep the folder part that tells them apart."""
    stems = [Path(it.id).name for it, d in zip(items, derived) if d]
    if len(set(stems)) == len(stems):
        for it, d in zip(items, derived):
            if d:
                it.id = Path(it.id).name


def ingest_corpus(corpus: LabeledCorpus, audio_dir: Path | None = None, jobs: int = 1) -> tuple[list[Item], RejectLog]:
    """Read one labeled corpus of any supported format. Raises ``LrasrError`` for a broken index file.
    ``audio_dir``: where formats whose audio is not in files of its own (parquet) write it as FLAC,
    decoding with ``jobs`` processes."""
    from lrasr.data import ingest_formats as formats

    readers = {
        "tsv": formats.read_table, "csv": formats.read_table, "kaldi": formats.read_kaldi,
        "commonvoice": formats.read_commonvoice, "fairseq": formats.read_fairseq, "nemo": formats.read_nemo,
        "folder": formats.read_folder,
    }
    if not corpus.path.exists():
        raise LrasrError(f"labeled corpus ({corpus.format}) not found", corpus.path)
    rejects = RejectLog()
    if corpus.format == "parquet":
        from lrasr.data.ingest_parquet import read_parquet

        items = read_parquet(corpus, rejects, audio_dir, jobs=jobs)
    else:
        items = readers[corpus.format](corpus, rejects)
    split = corpus.assign_split or corpus_defined_split(corpus)
    if split:
        for item in items:
            item.split = split
    return items, rejects


def corpus_defined_split(corpus: LabeledCorpus) -> str | None:
    """The split a corpus's own table names, when the recipe picked that table explicitly
    (Common Voice ``split: dev``, fairseq ``split: valid``); ``validated``/``other`` and the like: None."""
    if corpus.format not in ("commonvoice", "fairseq") or "split" not in corpus.model_fields_set:
        return None
    return {"train": "train", "dev": "dev", "valid": "dev", "test": "test"}.get((corpus.split or "").lower())
