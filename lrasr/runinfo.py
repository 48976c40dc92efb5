"""What a recipe run records: ``<workdir>/run.json`` (provenance) and the final results table."""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from lrasr import __version__
from lrasr.io import write_json_atomic
from lrasr.recipe import Recipe, recipe_to_dict
from lrasr.report import console, summary_table, warn

PACKAGES = ("torch", "torchaudio", "torchcodec", "numpy", "transformers", "pyctcdecode", "kenlm",
            "sentencepiece", "webrtcvad-wheels", "silero-vad", "soundfile", "jiwer", "pydantic", "typer")


def git_state(where: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``where``; None outside a checkout."""
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(requested: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"requested": requested or "auto", "cpu_count": os.cpu_count()}
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["cuda"] = False
    return info


def write_run_json(recipe: Recipe, stages: Sequence[str], options: dict[str, Any], device: str | None,
                   info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create (``info`` None) or update ``<workdir>/run.json``; returns the record."""
    if info is None:
        info = {
            "recipe_file": str(recipe.source) if recipe.source else None,
            "recipe": recipe_to_dict(recipe),
            "stages_in_recipe": list(stages),
            "options": options,
            "command": sys.argv,
            "lrasr": __version__,
            "git": git_state(Path(__file__).resolve().parent),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "device": device_info(device),
            "seeds": {"python": recipe.seed, "numpy": recipe.seed, "torch": recipe.seed},
            "started": time.time(),
            "stages": {},
        }
    write_json_atomic(recipe.workdir / "run.json", info)
    return info


def manifest_hours(path: Path) -> float | None:
    """Sum of the ``duration`` column of a manifest, in hours; None when the manifest is absent."""
    if not path.is_file():
        return None
    total = 0.0
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            try:
                total += float(row.get("duration") or 0)
            except ValueError:
                continue
    return total / 3600


def _steps(stamp: dict[str, Any] | None, configured: int | None) -> int | None:
    summary = (stamp or {}).get("summary")
    if isinstance(summary, dict):
        for key in ("steps", "step", "updates", "num_updates"):
            if isinstance(summary.get(key), (int, float)):
                return int(summary[key])
    return configured


def _preset(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("preset", "custom"))
    return str(value)


def run_summary(recipe: Recipe, stamps: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Hours per split, model, steps: the part of results.json the runner adds under ``run``."""
    prep = recipe.stage_dir("prepare")
    hours = {split: manifest_hours(prep / split / "manifest.tsv") for split in ("unlabeled", "train", "dev", "test")}
    from lrasr.runner import finetune_uses_pretrain

    if finetune_uses_pretrain(recipe):
        model = _preset(recipe.pretrain.model)  # type: ignore[union-attr]
    elif recipe.finetune is not None and recipe.finetune.init_from not in (None, "none"):
        model = f"from {recipe.finetune.init_from}"
    else:
        model = _preset(recipe.finetune.model) if recipe.finetune else "-"
    steps = {
        "pretrain": _steps(stamps.get("pretrain"), recipe.pretrain.max_steps) if recipe.pretrain else None,
        "finetune": _steps(stamps.get("finetune"), recipe.finetune.max_steps) if recipe.finetune else None,
    }
    out = {"recipe": recipe.name, "language": recipe.language, "hours": hours, "model": model, "steps": steps,
           "seed": recipe.seed}
    # greedy dev scores of the kept model, measured by finetune: the dev column when no LM was tuned
    ft = (stamps.get("finetune") or {}).get("summary")
    if isinstance(ft, dict) and isinstance(ft.get("dev_wer"), (int, float)):
        out["finetune_dev"] = {"wer": ft["dev_wer"], "cer": ft.get("dev_cer")}
    return out


def _metric(results: dict[str, Any], key: str, name: str) -> float | None:
    block = results.get(key)
    value = block.get(name) if isinstance(block, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def results_rows(results: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Rows (name, dev, test) of the results table; metrics in percent."""
    rows: list[tuple[str, Any, Any]] = []
    run = results.get("run", {})
    for split in ("unlabeled", "train", "dev", "test"):
        h = (run.get("hours") or {}).get(split)
        if h is not None:
            rows.append((f"hours {split}", f"{h:.3f}", ""))
    rows.append(("model", run.get("model", "-"), ""))
    for stage, n in (run.get("steps") or {}).items():
        if n is not None:
            rows.append((f"{stage} steps", n, ""))
    for name in ("wer", "cer"):
        for label, dev_key, test_key in (("greedy", "dev_greedy", "greedy"), ("with LM", "dev_lm", "lm")):
            dev, test = _metric(results, dev_key, name), _metric(results, test_key, name)
            if dev is None and dev_key == "dev_greedy":
                dev = _metric(run, "finetune_dev", name)
            if dev is None and test is None:
                continue
            pct = [None if v is None else f"{100 * v:.1f}" for v in (dev, test)]
            rows.append((f"{name.upper()} % {label}", pct[0] or "-", pct[1] or "-"))
    return rows


def finish_results(recipe: Recipe, stamps: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """Add the run summary to ``<workdir>/results.json`` (written by evaluate) and print the table."""
    from lrasr.runner import read_json

    path = recipe.workdir / "results.json"
    results = read_json(path)
    if results is None:
        warn(f"{path} not found: the evaluate stage did not write its results")
        return None
    results["run"] = run_summary(recipe, stamps)
    write_json_atomic(path, results)
    # the right-hand column is the split the evaluate stage scored (evaluate.split may be dev)
    split = str(results.get("split") or "test")
    console.print(summary_table(f"{recipe.name}: results ({path})", results_rows(results), ("", "dev", split)))
    return results
