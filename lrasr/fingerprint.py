"""Input fingerprints for the recipe runner: recipe sections, files and folders, cached hashes.

A stage's fingerprint is a SHA-1 over named *parts* (one recipe section, one input file or folder,
one upstream stage's completion token, lrasr's version). Keeping the parts, not just the digest,
lets the runner say *what* changed. File content is hashed once and cached by (size, mtime): an
unchanged file costs one ``stat``; a touched file is re-hashed, and only a real content change
changes the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Collection, Mapping

from lrasr.io import file_sha1, utf8_name, write_json_atomic

# Settings that change how fast a stage runs or how much it logs, never what it produces: editing
# them must not rerun anything.
# settings that change speed or checks, never a result: changing one reruns nothing (a corpus's card
# only checks its folder layout)
NON_RESULT_KEYS = frozenset({"jobs", "log_every", "save_every", "device", "num_workers", "card"})

MISSING = "missing"


def _printable(name: str) -> str:
    """A file name the digest and the JSON cache can hold (escapes keep distinct names distinct)."""
    return utf8_name(name, "backslashreplace")


def json_digest(value: Any) -> str:
    """SHA-1 of a JSON-able value, independent of dict order."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def select(data: Mapping[str, Any], dotted: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; ``None`` where a level is absent."""
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def strip_non_result(value: Any) -> Any:
    """Drop ``NON_RESULT_KEYS`` at any depth."""
    if isinstance(value, Mapping):
        return {k: strip_non_result(v) for k, v in value.items() if k not in NON_RESULT_KEYS}
    if isinstance(value, list):
        return [strip_non_result(v) for v in value]
    return value


class HashCache:
    """File content hashes keyed by absolute path and validated by (size, mtime_ns).

    Stored as JSON at ``path``; ``save()`` writes it atomically when something was added.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self.entries = loaded
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache only costs re-hashing

    def file_digest(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError:  # a broken link or an unreadable entry: the stage reports it, the digest notes it
            return MISSING
        key = _printable(str(path))
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return str(hit[2])
        try:
            digest = file_sha1(path)
        except OSError:
            return MISSING
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def digest(self, path: Path, exclude: Collection[Path] = ()) -> str:
        """Content digest of a file, or of a folder (every file below it, by relative path).

        ``exclude``: resolved paths of folders or files below ``path`` to leave out (with nothing left
        out, the digest is the same as before the argument existed, so old stamps stay valid).
        """
        path = Path(path)
        if path.is_file():
            return self.file_digest(path.resolve())
        if path.is_dir():
            skip = set(exclude)
            listing = []
            for root, dirs, files in os.walk(path):
                # hidden entries are caches and temporary files of tools, not data
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and not (skip and (Path(root) / d).resolve() in skip))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    full = Path(root) / name
                    if skip and full.resolve() in skip:
                        continue
                    listing.append((_printable(full.relative_to(path).as_posix()), self.file_digest(full.resolve())))
            return json_digest(listing)
        return MISSING

    def save(self) -> None:
        if self.path is not None and self.dirty:
            write_json_atomic(self.path, self.entries)
            self.dirty = False


def combine(parts: Mapping[str, str]) -> str:
    """The fingerprint of a stage: one digest over all its named parts."""
    return json_digest(dict(parts))


def changed_parts(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Names of parts that differ, appeared or disappeared between two fingerprints."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
