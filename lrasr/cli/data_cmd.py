"""`lrasr export-manifest`: prepared splits to fairseq or NeMo layouts."""

from __future__ import annotations

from lrasr.cli.app import app, not_implemented, user_errors  # noqa: F401
