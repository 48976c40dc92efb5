"""One way for every stage to show progress, print summaries and draw figures."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from lrasr.io import atomic_path

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def progress(transient: bool = False) -> Progress:
    """A rich progress display with the columns every stage uses (silent when not a terminal)."""
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=transient, disable=not err_console.is_terminal,
    )


def summary_table(title: str, rows: Iterable[Sequence[object]], columns: Sequence[str] = ("", "value")) -> Table:
    """A two-or-more column table; numbers are formatted compactly."""
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        # long values (paths) wrap onto further lines rather than being cut to "…/prepa…"
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    return table


def fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histograms_png(path: str | Path, series: Mapping[str, Sequence[float]], bins: int = 40, title: str = "") -> Path:
    """One histogram panel per named series, side by side, saved atomically as PNG."""
    plt = _pyplot()
    names = list(series)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [v for v in series[name] if v == v]
        ax.hist(values, bins=bins, color="#3b75af")
        ax.set_xlabel(name)
        ax.set_ylabel("count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def curves_png(path: str | Path, x: Sequence[float], curves: Mapping[str, Sequence[float]], xlabel: str = "step",
               title: str = "") -> Path:
    """One small panel per named curve against ``x``, saved atomically as PNG."""
    plt = _pyplot()
    names = list(curves)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        ys = list(curves[name])
        xs = list(x)[-len(ys):] if ys else []
        ax.plot(xs, ys, color="#c0504d")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
