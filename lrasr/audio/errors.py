"""The error every audio reader raises, and how a library's message is shortened for it."""

from __future__ import annotations

import re
from pathlib import Path

from lrasr.errors import LrasrError


class AudioError(LrasrError):
    """A file that cannot be decoded as audio. ``reason`` is the message without the file name, for
    rejected rows that name the file in their own column."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message, path, line)
        self.reason = message


def short_reason(exc: BaseException) -> str:
    """First line of a library's message, without C++ source locations, at most 200 characters."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    return re.sub(r"^\w+, \S+\.(?:cpp|cc|c|h):\d+, ", "", text[0]).strip()[:200]
