"""Small helpers shared by every stage: atomic writes, content fingerprints, the usable CPU cores."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A run killed half-way leaves either the old file or the new one, never a half-written file.
    ``suffix`` keeps the extension (e.g. ``.flac``) for writers that infer the format from the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the mode a plain open() would (umask applied)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def file_sha1(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes, read in chunks (files may be hours of audio)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def text_sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def utf8_name(name: str, errors: str = "replace") -> str:
    """A file name as text that UTF-8 can hold. Bytes that are not UTF-8 (a latin-1 name from an old
    archive) are held by Python as lone surrogates; they become U+FFFD (``errors="replace"``, for
    people to read) or ``\\xNN`` escapes (``"backslashreplace"``, distinct names stay distinct).
    Valid names are unchanged."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", errors)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a cluster job's share), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
