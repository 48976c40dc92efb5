"""`lrasr recipe validate`."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from lrasr.cli.app import app, load, user_errors
from lrasr.report import console, err_console

recipe_app = typer.Typer(help="Check recipe files.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("validate")
@user_errors
def validate(
    recipes: List[Path] = typer.Argument(..., help="One or more recipe YAML files."),
    check_paths: bool = typer.Option(True, help="Also check that corpus paths exist."),
) -> None:
    """Validate recipes: unknown keys, wrong types and missing paths are reported with the key's path.
    Every file is checked (a bad one does not hide the next one's problems); exit 2 when any has one."""
    from lrasr.errors import LrasrError
    from lrasr.recipe_checks import semantic_problems

    failed: list[str] = []
    for path in recipes:
        try:
            recipe = load(path, check_paths=check_paths)
            problems = semantic_problems(recipe)
            if problems:
                raise LrasrError("\n".join(f"{path}: {p}" for p in problems))
        except LrasrError as exc:
            for line in str(exc).splitlines():
                err_console.print(f"[bold red]error:[/] {line}", soft_wrap=True)
            failed.append(str(path))
            continue
        console.print(f"[green]ok[/] {path}: {recipe.name} ({recipe.language}), stages: {', '.join(recipe.stages())}")
    if failed:
        if len(recipes) > 1:
            err_console.print(f"{len(failed)} of {len(recipes)} recipes have problems: {', '.join(failed)}")
        raise typer.Exit(2)
