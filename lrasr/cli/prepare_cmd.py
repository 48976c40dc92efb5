"""`lrasr prepare` and `lrasr export-manifest`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lrasr.cli.app import RecipeArg, WorkdirOpt, app, load, not_implemented, user_errors


@app.command()
@user_errors
def prepare(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Worker processes (default: recipe prepare.jobs)."),
    shard: Optional[str] = typer.Option(None, help="I/N: process only every N-th input starting at I (0-based)."),
    strict: bool = typer.Option(False, help="Exit non-zero when any input is rejected."),
) -> None:
    """Segment raw recordings (VAD + quality filters) and ingest labeled corpora into manifests."""
    not_implemented("prepare")
