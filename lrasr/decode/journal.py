"""A resumable `lrasr transcribe`: an append-only journal of finished recordings beside the output.

When transcripts go to a file or folder, every recording is written to ``<output>.partial.jsonl``
(``<folder>/transcripts.partial.jsonl`` for a folder) the moment it is finished: one JSON line with
what the writers need (text, word timings, error). A run that is killed (Ctrl-C, OOM, a reboot) loses
at most the recordings in flight; the same command run again reads the journal, transcribes only the
rest, writes the outputs (atomically) and deletes the journal.

The first line holds the settings the results depend on: the model and LM files (name, size and
modification time of each), the decoder settings and lrasr's version. A journal written with other
settings is discarded. Each recording's line carries its size and modification time, so a recording
changed since is transcribed again, and so is one that failed (unreadable, silent). A torn last line
(killed while writing it) is ignored.
Settings that change speed only (device, --jobs, batch size) do not invalidate the journal (a run
resumed on another device may differ from one uninterrupted run where bf16 on a GPU flips a near tie).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lrasr import __version__
from lrasr.decode.types import Hypothesis, Word
from lrasr.errors import LrasrError
from lrasr.fingerprint import changed_parts, json_digest
from lrasr.io import atomic_path, utf8_name

JOURNAL_VERSION = 1
FOLDER_JOURNAL = "transcripts.partial.jsonl"
SUFFIX = ".partial.jsonl"
SYNC_SECONDS = 2.0  # lines are flushed at once (a killed process loses none); fsync'd at most this often


def journal_path(output: str | Path, folder: bool) -> Path:
    """Where the journal of a run writing to ``output`` lives (``folder``: output is a folder)."""
    return Path(output) / FOLDER_JOURNAL if folder else Path(str(output) + SUFFIX)


@contextmanager
def journal_lock(journal: Path) -> Iterator[None]:
    """Hold the output whose journal is ``journal`` for one run (an exclusive ``flock`` on
    ``<journal>.lock``, removed after): a second run on the same output is refused with ``LrasrError``.
    Two runs sharing a journal lose work: the second's ``Journal.begin`` replaces the file the first
    appends to, and the first, finishing, deletes the second's journal. Where the file system cannot
    lock (no ``fcntl``, some network mounts) the run goes on unlocked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    lock = Path(str(journal) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LrasrError("another `lrasr transcribe` is writing this output now (its journal is locked); "
                             "wait for it to finish, or give another --output", journal) from None
        except OSError:  # locking not supported here
            os.close(fd)
            yield
            return
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # a run that finished meanwhile removed the file we locked: lock the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before the lock is released: the next run creates a fresh file
        os.close(fd)


def _stat_listing(path: Path) -> Any:
    """(relative name, size, mtime_ns) of a file or of every file below a folder; cheap (stat only)."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    listing = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            try:
                st = full.stat()
            except OSError:
                continue
            listing.append([utf8_name(full.relative_to(path).as_posix(), "backslashreplace"), st.st_size,
                            st.st_mtime_ns])
    return listing


def settings_parts(model_dir: str | Path, lm_dir: str | Path | None, decoder: str, decode_cfg,
                   vad_cfg) -> dict[str, str]:
    """Named digests of everything a transcript depends on besides the recording itself.

    ``decode_cfg``/``vad_cfg``: the resolved ``DecodeConfig``/``VadConfig``. Beam settings count only for
    the beam decoder (changing --beam-width does not discard a greedy run's journal)."""
    decoding: dict[str, Any] = {"decoder": decoder, "chunk_seconds": decode_cfg.chunk_seconds}
    if decoder == "beam":
        decoding.update(beam_width=decode_cfg.beam_width, alpha=decode_cfg.alpha, beta=decode_cfg.beta,
                        hotwords=list(decode_cfg.hotwords), hotword_weight=decode_cfg.hotword_weight)
    return {
        "lrasr": __version__,
        "model": json_digest(_stat_listing(Path(model_dir))),
        "lm": json_digest(_stat_listing(Path(lm_dir))) if lm_dir is not None else "none",
        "decoder": json_digest(decoding),
        "vad": json_digest(vad_cfg.model_dump(mode="json")),
    }


def recording_key(path: Path) -> str:
    return os.path.abspath(str(path))


def recording_stamp(path: Path) -> list[int] | None:
    """Size and modification time of a recording (``None`` when it cannot be read: never resumed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class Journal:
    """The journal of one run. ``open`` reads an earlier run's journal (when ``resume`` and its settings
    match), ``take(path)`` gives a recording's saved result, ``begin()`` starts this run's file,
    ``append(result)`` saves one finished recording, ``remove()`` deletes it once the outputs exist."""

    def __init__(self, path: Path, parts: dict[str, str]):
        self.path = path
        self.parts = parts
        self.records: dict[str, dict] = {}
        self.kept: list[dict] = []
        self.appended = 0  # recordings saved by this run
        self.ignored = 0  # unreadable lines (a torn last line after a kill)
        self.discarded: str | None = None  # why an earlier journal was not used
        self._handle = None
        self._synced = 0.0

    @classmethod
    def open(cls, path: str | Path, parts: dict[str, str], resume: bool = True) -> "Journal":
        journal = cls(Path(path), parts)
        if not journal.path.is_file():
            return journal
        if not resume:
            journal.discarded = "--no-resume"
            return journal
        try:
            lines = journal.path.read_bytes().split(b"\n")
        except OSError as exc:
            journal.discarded = f"unreadable ({exc.strerror})"
            return journal
        header = _parse(lines[0])
        if not header or header.get("journal") != JOURNAL_VERSION or not isinstance(header.get("parts"), dict):
            journal.discarded = "not a journal this version of lrasr can read"
            return journal
        changed = changed_parts(header["parts"], parts)
        if changed:
            journal.discarded = f"written with a different {', '.join(changed)}"
            return journal
        for line in lines[1:]:
            record = _parse(line)
            if record is not None and _valid(record):
                journal.records[record["key"]] = record  # a later line for a recording replaces an earlier one
            elif line.strip():
                journal.ignored += 1
        return journal

    def take(self, path: Path):
        """The saved ``FileResult`` of ``path``, or ``None`` when it is not saved, changed since, or failed
        (unreadable, silent): a failure is tried again, its cause may be gone (a decoder installed, a
        file replaced by one with the same size and time) and failing again costs little."""
        from lrasr.decode.transcribe import FileResult

        record = self.records.get(recording_key(path))
        stamp = recording_stamp(path)
        if record is None or record["error"] is not None or stamp is None or record["stamp"] != stamp:
            return None
        self.kept.append(record)
        words = [Word(str(w), float(s), float(e)) for w, s, e in record["words"]]
        return FileResult(path, Hypothesis(record["text"], words), float(record["seconds"]), record["error"])

    def begin(self) -> None:
        """Write the header and the records this run keeps (atomically: a torn line or stale records of
        the earlier run are dropped), then open the file for appending."""
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(_line({"journal": JOURNAL_VERSION, "parts": self.parts}))
                handle.writelines(_line(r) for r in self.kept)
        self._handle = open(self.path, "ab")
        self._synced = time.monotonic()

    def append(self, result, stamp: list[int] | None = None) -> None:
        """Save one finished ``FileResult``: flushed at once, so a killed process keeps it. ``stamp``: the
        recording's ``recording_stamp`` taken before it was read (default: now)."""
        if self._handle is None:
            raise RuntimeError("Journal.begin() was not called")
        hyp = result.hypothesis
        stamp = recording_stamp(result.path) if stamp is None else stamp
        record = {"key": recording_key(result.path), "stamp": stamp,
                  "seconds": result.seconds, "text": hyp.text, "words": [[w.text, w.start, w.end] for w in hyp.words],
                  "error": result.error}
        self._handle.write(_line(record))
        self._handle.flush()
        self.appended += 1
        if time.monotonic() - self._synced >= SYNC_SECONDS:  # a reboot loses at most the last seconds
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _line(obj: dict) -> bytes:
    """One JSON line as UTF-8 (Indic text escaped as \\uXXXX would be twice as long). A file name that is
    not UTF-8 (held as lone surrogates) makes that line ASCII-escaped JSON, which reads back exactly."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def _parse(line: bytes) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _valid(record: dict) -> bool:
    words = record.get("words")
    return (isinstance(record.get("key"), str) and (record.get("stamp") is None or isinstance(record.get("stamp"), list))
            and isinstance(record.get("text"), str) and isinstance(record.get("seconds"), (int, float))
            and isinstance(words, list) and all(isinstance(w, list) and len(w) == 3 for w in words)
            and (record.get("error") is None or isinstance(record.get("error"), str)))
