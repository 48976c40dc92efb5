"""Training logs: a rich progress line, metrics.csv, TensorBoard, and PNG curves at the end.

Only rank 0 creates a ``TrainLogger``. The CSV is rewritten atomically at each log from the rows kept
in memory, so a resumed run first drops the rows logged after its checkpoint and then continues the
same file without duplicates.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from lrasr.io import write_text_atomic
from lrasr.report import curves_png, err_console, progress

# Keys drawn in curves.png when present, in this order; other numeric keys follow.
CURVE_ORDER = (
    "loss", "contrastive", "diversity", "feature_penalty", "accuracy", "code_perplexity",
    "prob_perplexity", "temperature", "mask_fraction", "grad_norm", "lr", "audio_seconds_per_second",
)
NOT_CURVES = {"step", "epoch", "nonfinite_skipped", "wall_seconds"}


def read_metrics_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of an existing metrics.csv with numbers parsed (empty cells dropped)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if value in ("", None):
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:
                    parsed[key] = value
            if "step" in parsed:
                parsed["step"] = int(parsed["step"])
            rows.append(parsed)
    return rows


class TrainLogger:
    """Rank-0 logger. ``log(step, metrics)`` appends a row; ``close()`` draws the curves."""

    def __init__(self, out_dir: Path, total_steps: int, start_step: int, description: str = "train",
                 tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / "metrics.csv"
        self.rows = [r for r in read_metrics_csv(self.csv_path) if r.get("step", 0) <= start_step]
        self._keys: list[str] = []  # the CSV's columns; empty until the first (re)write
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError:  # tensorboard is a dependency, but logging must never stop training
                err_console.print("[yellow]warning:[/] tensorboard is not installed; logging to CSV only")
        self.progress = progress()
        self.task_id = self.progress.add_task(description, total=total_steps, completed=start_step, info="")
        self.progress.start()

    def log(self, step: int, metrics: Mapping[str, float], show: Sequence[str] = ()) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        if self.rows and self.rows[-1]["step"] == step:  # evaluation results join the step's train row
            self.rows[-1].update(values)
            rewrite = True
        else:
            self.rows.append({"step": step, **values})
            rewrite = not self._keys or any(k not in self._keys for k in values)
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
        if rewrite:
            self._write_csv()
        else:  # the common case: one line appended, so long runs do not rewrite a growing file
            with open(self.csv_path, "a", encoding="utf-8", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self._keys, lineterminator="\n").writerow(
                    {k: _cell(self.rows[-1].get(k)) for k in self._keys})
        info = "  ".join(f"{k} {_short(metrics[k])}" for k in show if k in metrics)
        self.progress.update(self.task_id, completed=step, info=info)
        if self.progress.disable and show:  # not a terminal: one plain line per log instead of a bar
            err_console.print(f"step {step}  {info}", soft_wrap=True)

    def advance(self, step: int) -> None:
        self.progress.update(self.task_id, completed=step)

    def _write_csv(self) -> None:
        keys: list[str] = ["step"]
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _cell(row.get(k)) for k in keys})
        write_text_atomic(self.csv_path, buffer.getvalue())
        self._keys = keys

    def close(self, title: str = "") -> Path | None:
        self.progress.stop()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        return draw_curves(self.rows, self.out_dir / "curves.png", title)


def draw_curves(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path | None:
    """One panel per logged numeric key (train rows and evaluation rows each on their own steps)."""
    if not rows:
        return None
    keys: list[str] = []
    for row in rows:
        keys += [k for k, v in row.items() if k not in keys and k not in NOT_CURVES and isinstance(v, (int, float))]
    keys = [k for k in CURVE_ORDER if k in keys] + [k for k in keys if k not in CURVE_ORDER]
    # curves_png plots each curve against the tail of x; give every key its own (step, value) pairs by
    # drawing the most frequent x and aligning sparse series (evaluations) to their own steps below.
    steps = [r["step"] for r in rows if "loss" in r] or [r["step"] for r in rows]
    curves: dict[str, list[float]] = {}
    for key in keys:
        pairs = [(r["step"], float(r[key])) for r in rows if key in r]
        if len(pairs) == len(steps):
            curves[key] = [v for _, v in pairs]
        else:  # sparse series: step-hold its values over the train steps so the panel stays readable
            values, j, last = [], 0, math.nan
            for s in steps:
                while j < len(pairs) and pairs[j][0] <= s:
                    last = pairs[j][1]
                    j += 1
                values.append(last)
            curves[key] = values
    return curves_png(path, steps, curves, title=title)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _short(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
