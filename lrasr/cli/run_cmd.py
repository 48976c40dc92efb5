"""`lrasr run`: every stage of a recipe in order, skipping what is up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lrasr.cli.app import RecipeArg, WorkdirOpt, app, not_implemented, user_errors


@app.command()
@user_errors
def run(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
) -> None:
    """Run a recipe's stages in order: prepare, pretrain, finetune, lm, evaluate."""
    not_implemented("run")
