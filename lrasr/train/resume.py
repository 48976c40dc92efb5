"""Which training settings a checkpoint is tied to, and the check that refuses a stale resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrasr.errors import TrainingError


# settings that may change between a run and its resumption without making the checkpoint stale
RESUMABLE_CHANGES = frozenset({"max_steps", "log_every", "save_every", "device", "num_workers", "eval_every",
                               "early_stopping", "max_nonfinite_in_row"})


def resume_settings(cfg: Any) -> dict[str, Any]:
    """The training settings a checkpoint is tied to (JSON-able), for the resume check."""
    dump = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(vars(cfg))
    return {k: v for k, v in dump.items() if k not in RESUMABLE_CHANGES}


def check_resume_settings(saved: dict[str, Any] | None, current: dict[str, Any], folder: Path) -> None:
    """Refuse to resume a checkpoint trained with other settings (a recipe edited since)."""
    if saved is None:
        return
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        # a setting the checkpoint does not record was added to lrasr after it was written: name it
        # apart, since "restore the settings" cannot mean going back to a value that never existed
        new = [k for k in changed if k not in saved]
        edited = [k for k in changed if k in saved]
        parts = ([f"{', '.join(edited)} changed"] if edited else []) + (
            [f"{', '.join(new)} added to lrasr since this checkpoint was written: setting it to null "
             "resumes where null means the old behaviour (see lrasr/recipe.py)"] if new else [])
        raise TrainingError(
            f"this checkpoint was trained with other settings ({'; '.join(parts)}); "
            "rerun with --no-resume to start over, or restore the settings to continue it", folder)
