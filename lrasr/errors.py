"""User-facing errors: one line that names the file (and line) and says what to do."""

from __future__ import annotations

from pathlib import Path


class LrasrError(Exception):
    """An error caused by the user's input or environment; the CLI prints it without a traceback."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class RecipeError(LrasrError):
    """A recipe that does not validate."""


class StageError(LrasrError):
    """A stage that could not produce any usable output."""


class TrainingError(LrasrError):
    """Training cannot go on (no data, repeated non-finite losses, ...); the message says why."""
