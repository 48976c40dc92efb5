"""`lrasr transcribe` and `lrasr lm build|tune`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lrasr.cli.app import app, not_implemented, user_errors


@app.command()
@user_errors
def transcribe(
    inputs: List[Path] = typer.Argument(..., help="Audio files, folders or a manifest."),
    model: Path = typer.Option(..., "--model", "-m", help="Fine-tuned model folder."),
    lm: Optional[Path] = typer.Option(None, "--lm", help="LM folder from `lrasr lm build` (beam search)."),
) -> None:
    """Transcribe audio of any length: greedy or KenLM beam search."""
    not_implemented("transcribe")
