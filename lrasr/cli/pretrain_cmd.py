"""`lrasr pretrain` (also under torchrun: `torchrun --nproc_per_node 2 -m lrasr pretrain recipe.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lrasr.cli.app import (DeviceOpt, RecipeArg, ResumeOpt, WorkdirOpt, app, load, max_steps_option,
                           run_training_stage, user_errors)


@app.command()
@user_errors
def pretrain(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
    device: Optional[str] = DeviceOpt,
    resume: bool = ResumeOpt,
    max_steps: Optional[int] = max_steps_option("pretrain"),
) -> None:
    """wav2vec 2.0 self-supervised pretraining on the prepared unlabeled audio (torchrun for multi-GPU)."""
    from lrasr.report import err_console, summary_table
    from lrasr.stages.pretrain import run_pretrain, summary_rows
    from lrasr.train.distributed import env_info

    summary = run_training_stage("pretrain", run_pretrain, load(recipe, workdir), device, resume, max_steps)
    if env_info().is_main:
        err_console.print(summary_table("pretrain", summary_rows(summary)))
