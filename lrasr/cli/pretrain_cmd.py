"""`lrasr pretrain`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lrasr.cli.app import RecipeArg, WorkdirOpt, app, load, not_implemented, user_errors


@app.command()
@user_errors
def pretrain(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N (default: recipe, else auto)."),
    resume: bool = typer.Option(True, help="Resume from the last checkpoint in the workdir when there is one."),
    max_steps: Optional[int] = typer.Option(None, help="Override pretrain.max_steps."),
) -> None:
    """wav2vec 2.0 self-supervised pretraining on the prepared unlabeled audio (torchrun for multi-GPU)."""
    not_implemented("pretrain")

