"""The Typer application and what every command shares: recipe loading and error display."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

from lrasr.errors import LrasrError
from lrasr.report import err_console

app = typer.Typer(
    name="lrasr",
    help="Speech recognition for low-resource languages: prepare data, pretrain wav2vec 2.0, "
    "fine-tune with CTC, decode with KenLM. Every stage is driven by a recipe YAML (see recipes/).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

RecipeArg = typer.Argument(..., exists=False, help="Recipe YAML file (see recipes/).")
WorkdirOpt = typer.Option(None, "--workdir", "-w", help="Override the recipe's workdir.")
# options of the two training commands (one training loop, one set of flags)
DeviceOpt = typer.Option(None, help="cpu, cuda, cuda:N (default: recipe, else auto).")
ResumeOpt = typer.Option(True, help="Resume from the last checkpoint in the workdir when there is one; "
                         "--no-resume starts over (removing the previous checkpoints).")


def max_steps_option(stage: str):
    return typer.Option(None, min=1, help=f"Override {stage}.max_steps.")


def user_errors(func: F) -> F:
    """Print an ``LrasrError`` as one red line and exit 2, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LrasrError as exc:
            for line in str(exc).splitlines():
                err_console.print(f"[bold red]error:[/] {line}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def load(recipe: Path, workdir: Optional[Path] = None, overrides: dict[str, Any] | None = None, check_paths: bool = True):
    """Load a recipe with CLI overrides (``None`` values are ignored)."""
    from lrasr.recipe import load_recipe

    merged = {k: v for k, v in (overrides or {}).items() if v is not None}
    if workdir is not None:
        merged["workdir"] = str(Path(workdir).resolve())
    return load_recipe(recipe, merged, check_paths=check_paths)


def not_implemented(stage: str) -> None:
    err_console.print(f"[yellow]{stage}: not implemented yet[/]")
    raise typer.Exit(3)


def run_training_stage(stage: str, run: Callable[..., dict], recipe, device: Optional[str], resume: bool,
                       max_steps: Optional[int]) -> dict:
    """`lrasr pretrain` / `lrasr finetune`: ``run`` (the stage function) on a loaded recipe, recorded for
    `lrasr run` when it used the recipe's own step count, the process group shut down either way."""
    from lrasr.stage_command import stage_command
    from lrasr.train.distributed import shutdown_distributed

    complete = max_steps is None or max_steps == getattr(getattr(recipe, stage), "max_steps", None)
    try:
        with stage_command(recipe, stage, complete) as record:  # `lrasr run` then skips it
            summary = record["summary"] = run(recipe, device=device, resume=resume, max_steps=max_steps)
    except BaseException:
        shutdown_distributed(completed=False)
        raise
    shutdown_distributed()
    return summary
