"""Training checkpoints: one folder per save, written under a temporary name and renamed.

``<out>/checkpoints/step_0000100/`` holds ``model.safetensors`` (the weights) and ``state.pt``
(optimizer, schedule, GradScaler, RNG states, data position, counters, task state), which loads with
``torch.load(weights_only=True)``. ``<out>/checkpoints/latest`` names the newest complete folder; it
is replaced only after the folder is complete, so a run killed at any moment resumes from a whole
checkpoint. ``<out>/checkpoints/best/`` holds the best evaluation's weights when the task evaluates.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from lrasr.errors import LrasrError
from lrasr.io import write_json_atomic, write_text_atomic

KEEP_LAST = 2


def checkpoints_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as tensors and plain lists."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    # only when this process uses CUDA: reading the states initialises CUDA, which a CPU run on a GPU
    # machine must not do (it costs GPU memory, and a CUDA-initialised process can no longer fork workers)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())  # RNG states must be CPU byte tensors, even CUDA's
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_plain(value: Any) -> Any:
    return [_to_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def save_checkpoint(out_dir: Path, step: int, model: torch.nn.Module, state: dict[str, Any]) -> Path:
    """Write ``step_NNNNNNN/`` atomically, point ``latest`` at it, and keep the last ``KEEP_LAST``."""
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"), force_contiguous=True)
    torch.save(state, tmp / "state.pt")
    _replace_dir(tmp, final)
    write_text_atomic(root / "latest", name + "\n")
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(out_dir: Path, model: torch.nn.Module, info: dict[str, Any]) -> Path:
    """Replace ``checkpoints/best/`` with the current weights and ``best.json`` (step, metrics)."""
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-best-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"), force_contiguous=True)
    write_json_atomic(tmp / "best.json", info)
    final = root / "best"
    _replace_dir(tmp, final)
    return final


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final``; an existing ``final`` is moved aside first, then removed."""
    if final.exists():
        trash = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def clear_checkpoints(out_dir: Path) -> None:
    """Remove a previous run's checkpoints (a fresh start must not mix with, or be pruned against, them)."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return
    (root / "latest").unlink(missing_ok=True)
    for old in list(root.glob("step_*")) + [root / "best"]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The folder ``latest`` names, when it exists and is complete."""
    root = checkpoints_dir(out_dir)
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text(encoding="utf-8").strip()
    if not (folder / "model.safetensors").is_file() or not (folder / "state.pt").is_file():
        return None
    return folder


def load_checkpoint(folder: Path, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Load weights into ``model`` and return the state dict (``weights_only=True``).

    The state is read onto the CPU whatever ``device`` is: RNG states must stay CPU tensors (and numpy
    converts only CPU tensors), and ``optimizer.load_state_dict`` moves its moments to each
    parameter's device itself.
    """
    try:
        missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False, device=str(device))
    except Exception as exc:  # safetensors raises plain errors for corrupt files and shape mismatches
        raise LrasrError(f"cannot load checkpoint weights ({exc}); remove the folder to start over", folder) from None
    if missing or unexpected:
        raise LrasrError(
            f"checkpoint does not match the model (missing: {sorted(missing)[:5]}, unexpected: "
            f"{sorted(unexpected)[:5]}); the recipe's model changed since it was written -- use another "
            "workdir or --no-resume", folder)
    return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)


def load_weights(model: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    """Load a ``model.safetensors`` (e.g. ``checkpoints/best/model.safetensors``) into ``model``."""
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    if missing or unexpected:
        raise LrasrError(f"weights do not match the model (missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})", path)


class Counters:
    """Everything besides model/optimizer that a checkpoint restores."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.group = 0  # next group of ``epoch`` to train on
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.unapplied_total = 0  # fp16 overflows and updates without a sample (not NaN losses)
        self.unapplied_in_row = 0
        self.audio_seconds = 0.0
        self.cpu_seconds = 0.0  # this process's CPU time in training, summed over resumed runs
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.evals_without_improvement = 0

    @property
    def attempts(self) -> int:
        """Updates tried so far, applied or skipped (equal to ``step`` while none was skipped)."""
        return self.step + self.nonfinite_total + self.unapplied_total

    def state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def count_skipped(self, kind: str, limit: int) -> str | None:
        """Count an update that was not applied; the error message once ``limit`` came in a row, else None.

        ``kind`` "overflow" (fp16) and "empty" (no sample anywhere) do not mean divergence; anything else
        is a NaN/inf loss or gradient.
        """
        if kind in ("overflow", "empty"):
            self.unapplied_total += 1
            self.unapplied_in_row += 1
            if self.unapplied_in_row < limit:
                return None
            cause = ("fp16 gradients overflowed: use bf16 or fp32" if kind == "overflow" else
                     "no sample in the whole update, e.g. no masked frame: check the audio lengths and masking "
                     "settings")
            return f"{self.unapplied_in_row} updates in a row were not applied (last: {cause}; update {self.step})"
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        if self.nonfinite_in_row < limit:
            return None
        return (f"the loss or gradient was NaN/inf in {self.nonfinite_in_row} updates in a row (update "
                f"{self.step}, {self.nonfinite_total} skipped in all): training diverged. Lower the learning rate "
                "or raise warmup, use bf16 or fp32 instead of fp16, or look for silent/clipped audio in the "
                "manifest; then resume.")

    def load(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key in self.__dict__:
                setattr(self, key, value)
