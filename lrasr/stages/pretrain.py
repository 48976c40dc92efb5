"""`lrasr pretrain`: wav2vec 2.0 self-supervised pretraining on the prepared unlabeled audio.

Reads ``<workdir>/prepare/unlabeled/manifest.tsv`` (plus ``prepare/train/manifest.tsv`` with
``pretrain.include_labeled``), trains ``Wav2Vec2ForPreTraining`` with the shared loop
(``lrasr.train.loop``) and writes ``<workdir>/pretrain/``: ``checkpoints/``, ``model/`` (the final
model folder), ``metrics.csv``, ``tensorboard/``, ``curves.png`` and ``summary.json``. Under torchrun
every process calls ``run_pretrain``; only rank 0 writes files and prints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from lrasr.errors import StageError
from lrasr.io import write_json_atomic
from lrasr.train.batching import AudioDataset, Batch

LOSS_KEYS = ("contrastive", "diversity", "feature_penalty")


class PretrainTask:
    """The pretraining task for the shared loop: contrastive + diversity + feature-penalty loss."""

    name = "pretrain"

    def __init__(self, model: torch.nn.Module, dataset: AudioDataset, seed: int):
        self.model = model
        self.train_dataset = dataset
        self.seed = seed
        self.warned: set[str] = set()

    @property
    def find_unused_parameters(self) -> bool:
        """Whether a parameter can miss its gradient in a forward pass (DDP must then look for it):
        layerdrop, a feature encoder run without autograd (``feature_grad_mult`` 0), or an item so
        short that it may get no masked frame (its loss then skips the quantizer and projections)."""
        cfg = self.model.cfg
        if cfg.layerdrop > 0 or cfg.feature_grad_mult == 0 or cfg.mask_time_prob <= 0:
            return True
        data = self.train_dataset
        shortest = float(data.durations.min()) if len(data) else 0.0
        if data.crop is not None:
            shortest = min(shortest, data.crop[0])
        frames = cfg.num_frames(int(shortest * data.sample_rate))
        # fairseq's span count is floor(prob * frames / length + u), u in [0, 1): at least this many
        spans = max(int(cfg.mask_time_prob * frames / cfg.mask_time_length), cfg.mask_time_min_masks)
        # one frame can still draw no masked frame (span starts may fall past it): the quantizer and
        # projections then get no gradient
        return frames <= 1 or spans < 1

    def on_step(self, step: int) -> None:
        self.model.set_num_updates(step)  # Gumbel temperature: a function of the update number

    def on_log(self, step: int, row: Mapping[str, float], history: Sequence[Mapping[str, float]]) -> None:
        """Warn as soon as collapse shows (each sign once), not only in the final report."""
        if len(history) < 8:
            return
        cfg = self.model.cfg
        # the recent window only (its last quarter is judged): cheap however long the run
        for problem in detect_collapse(history[-40:], cfg.num_codevector_groups, cfg.num_negatives):
            kind = problem.split(" ", 2)[:2]
            key = " ".join(kind)
            if key not in self.warned and "near chance" not in problem:
                self.warned.add(key)
                from lrasr.report import warn

                warn(f"update {step}: {problem}")

    def compute_loss(self, model: torch.nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float], int]:
        out = model(batch.waveforms, batch.lengths)
        masked = int(out.num_masked)
        metrics = {k: float(v) for k, v in out.metrics.items()}
        metrics.update({k: float(out.losses[k].detach()) for k in LOSS_KEYS if k in out.losses})
        # the model's loss is per masked frame; the loop wants a sum over the sample-size units
        return out.loss * masked, metrics, masked


def detect_collapse(history: Sequence[Mapping[str, float]], groups: int, negatives: int) -> list[str]:
    """Signs of a collapsed or stalled run in the last quarter of the logged rows, with likely causes."""
    rows = [r for r in history if "contrastive" in r]
    if not rows:
        return []
    tail = rows[-max(1, len(rows) // 4):]

    def mean(key: str) -> float:
        values = [r[key] for r in tail if key in r and math.isfinite(r[key])]
        return sum(values) / len(values) if values else math.nan

    problems = []
    code_ppl, con, gnorm, acc = mean("code_perplexity"), mean("contrastive"), mean("grad_norm"), mean("accuracy")
    if code_ppl == code_ppl and code_ppl < 1.5 * groups:
        problems.append(
            f"code perplexity {code_ppl:.2f} is near its minimum ({groups}, one code per group): the quantizer "
            "collapsed. Likely causes: diversity-loss weight too low or mis-scaled, Gumbel temperature decaying "
            "too fast, learning rate too high, or inputs that are mostly silence.")
    if con == con and con < 0.05:
        problems.append(
            f"contrastive loss {con:.4f} is near zero: the task became trivial. Likely causes: distractors "
            "drawn from frames identical to the target (collapsed codes, silence, repeated audio) or a mask "
            "that leaks the target.")
    if gnorm == gnorm and gnorm < 1e-4:
        problems.append(
            f"gradient norm {gnorm:.2e} is near zero: training stalled. Likely causes: collapsed quantizer, "
            "a learning rate of zero (schedule), or a frozen network (feature_grad_mult 0 with a frozen transformer).")
    chance = 1.0 / (negatives + 1)
    if acc == acc and len(rows) >= 8 and acc < 2 * chance:
        problems.append(
            f"contrastive accuracy {acc:.3f} is still near chance ({chance:.3f}): not learning yet. Train longer, "
            "check the learning rate and warmup, and that the audio is speech.")
    return problems


def _manifests(recipe: Any) -> list[Path]:
    prepare = recipe.stage_dir("prepare")
    unlabeled = prepare / "unlabeled" / "manifest.tsv"
    labeled = prepare / "train" / "manifest.tsv"
    out = [unlabeled] if unlabeled.is_file() else []
    if recipe.pretrain.include_labeled:
        if not labeled.is_file():
            raise StageError("pretrain.include_labeled is set but the labeled train manifest is missing; "
                             "run `lrasr prepare` first", labeled)
        out.append(labeled)
    if not out:
        raise StageError("no unlabeled manifest to pretrain on; run `lrasr prepare` (with corpora.unlabeled) "
                         "first, or set pretrain.include_labeled", unlabeled)
    return out


def gumbel_decay(latent_temp: Sequence[float], floor_at: float | None, total_steps: int) -> float:
    """The Gumbel temperature's decay per update for a run of ``total_steps`` updates.

    ``latent_temp`` = (start, floor, decay) from the model config. With ``floor_at`` (the recipe's
    ``pretrain.temperature_floor_at``) the decay is min(decay, (floor / start) ** (1 / n)) with
    n = floor_at * total_steps, so that start * decay**n <= floor: short runs reach the floor, runs long
    enough for the config's own decay keep it exactly. A pure function of the recipe and the run's
    length, so a resumed run follows the same schedule. ``floor_at`` None: ``decay`` unchanged.
    """
    start, floor, decay = (float(v) for v in latent_temp)
    if floor_at is None or start <= floor:
        return decay
    n = max(1, math.floor(floor_at * total_steps + 1e-9))
    scaled = (floor / start) ** (1.0 / n)
    while start * scaled ** n > floor:  # float rounding must not leave it a hair above the floor at n
        scaled = math.nextafter(scaled, 0.0)
    return min(decay, scaled)


def build_model(recipe: Any, total_steps: int | None = None) -> torch.nn.Module:
    """``Wav2Vec2ForPreTraining`` from ``pretrain.model`` with the recipe's ``feature_grad_mult`` and the
    Gumbel decay for a run of ``total_steps`` updates (default ``pretrain.max_steps``; see ``gumbel_decay``).

    With ``pretrain.init_from`` (continued pretraining) the architecture is the checkpoint's own, so a
    released model loads without restating its shape; ``pretrain.model`` supplies everything else
    (masking, losses, dropouts, quantizer settings the checkpoint does not carry).
    """
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.pretraining import Wav2Vec2ForPreTraining

    cfg = Wav2Vec2Config.from_recipe(recipe.pretrain.model)
    source = recipe.pretrain.init_from
    if source is not None:
        from lrasr.convert.checkpoint import model_config_from

        if not Path(source).exists():
            raise StageError("pretrain.init_from does not exist (a transformers folder, a fairseq .pt or an "
                             "lrasr model folder)", source)
        cfg = model_config_from(source, cfg)
    cfg.feature_grad_mult = recipe.pretrain.feature_grad_mult
    start, floor, _ = cfg.latent_temp
    decay = gumbel_decay(cfg.latent_temp, recipe.pretrain.temperature_floor_at,
                         int(total_steps or recipe.pretrain.max_steps))
    cfg.latent_temp = (start, floor, decay)  # the saved model's config.json records what was used
    torch.manual_seed(recipe.seed)  # the same initial weights for the same recipe
    return Wav2Vec2ForPreTraining(cfg)


def init_weights(model: torch.nn.Module, source: Path) -> dict[str, Any]:
    """Continued pretraining: load a transformers folder, fairseq .pt or lrasr folder by parameter name."""
    from lrasr.convert import load_pretrained_into
    from lrasr.report import warn

    report = load_pretrained_into(model, source)
    if env_is_main() and any(name.startswith("quantizer.") for name in report.missing):
        warn(f"{source}: the checkpoint has no quantizer (a fine-tuned or feature-only model); the quantizer "
             "starts from random weights")
    return report.summary()


def env_is_main() -> bool:
    from lrasr.train.distributed import env_info

    return env_info().is_main


def run_pretrain(recipe: Any, device: str | None = None, resume: bool = True, max_steps: int | None = None) -> dict:
    """Pretrain on the prepared audio; returns a JSON-able summary (see module docstring)."""
    from lrasr.model.io import save_model_dir
    from lrasr.train.checkpoint import latest_checkpoint
    from lrasr.train.distributed import env_info
    from lrasr.train.loop import train

    cfg = recipe.pretrain
    if cfg is None:
        raise StageError("the recipe has no pretrain section", recipe.source)
    out_dir = recipe.stage_dir("pretrain")
    rank0 = env_info().is_main
    dataset = AudioDataset(_manifests(recipe), crop_min_seconds=cfg.crop_min_seconds,
                           crop_max_seconds=cfg.crop_max_seconds, seed=recipe.seed)
    total_steps = int(max_steps or cfg.max_steps)  # as the loop counts them
    model = build_model(recipe, total_steps)
    init_report = None
    if cfg.init_from is not None and not (resume and latest_checkpoint(out_dir) is not None):
        init_report = init_weights(model, cfg.init_from)
    task = PretrainTask(model, dataset, recipe.seed)
    result = train(task, cfg, out_dir, device=device, resume=resume, max_steps=max_steps)
    mcfg = model.cfg
    problems = detect_collapse(result.history, mcfg.num_codevector_groups, mcfg.num_negatives)
    first = next((r for r in result.history if "contrastive" in r), {})
    # a run resumed at its last update logs nothing new: the history (CSV) still has the last row
    final = result.final_metrics or next((r for r in reversed(result.history) if "contrastive" in r), {})
    summary: dict[str, Any] = {
        "steps": result.steps,
        "audio_hours_seen": round(result.audio_seconds / 3600, 4),
        "train_hours": round(dataset.total_seconds / 3600, 4),
        "utterances": len(dataset),
        "left_out": dataset.skipped,
        "processes": result.world_size,
        "accumulation": result.accumulation,
        "nonfinite_skipped": result.nonfinite_skipped,
        "cpu_minutes": round(result.cpu_seconds / 60, 2),  # this process, summed over resumed runs
        "start": {k: v for k, v in first.items() if k not in ("step", "epoch")},
        "final": {k: v for k, v in final.items() if k not in ("step", "epoch")},
        "chance_accuracy": 1.0 / (mcfg.num_negatives + 1),
        # Gumbel temperature schedule used: start, floor, decay per update (after temperature_floor_at)
        "gumbel_temperature": list(mcfg.latent_temp),
        "collapse": problems,
        "init_from": init_report,
        "model_dir": str(out_dir / "model"),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }
    if rank0:
        save_model_dir(out_dir / "model", model)
        write_json_atomic(out_dir / "summary.json", summary)
        from lrasr.report import warn

        for problem in problems:
            warn(problem)
    return summary


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, object]]:
    """Rows for the CLI's summary table."""
    rows: list[tuple[str, object]] = [("updates", summary["steps"]), ("audio hours seen", summary["audio_hours_seen"]),
                                      ("training audio (h)", summary["train_hours"]),
                                      ("utterances", summary["utterances"]), ("processes", summary["processes"]),
                                      ("accumulation", summary["accumulation"]),
                                      ("non-finite updates skipped", summary["nonfinite_skipped"])]
    for key in ("loss", "contrastive", "accuracy", "code_perplexity", "prob_perplexity", "temperature",
                "grad_norm", "audio_seconds_per_second"):
        if key in summary["final"]:
            start = summary["start"].get(key)
            rows.append((f"{key}" + (" (start -> end)" if start is not None else ""),
                         f"{start:.3g} -> {summary['final'][key]:.3g}" if start is not None
                         else summary["final"][key]))
    rows.append(("chance accuracy", summary["chance_accuracy"]))
    if summary.get("gumbel_temperature"):
        start, floor, decay = summary["gumbel_temperature"]
        rows.append(("Gumbel temperature", f"{start:g} -> floor {floor:g}, decay {decay:.7g} per update"))
    rows.append(("collapse", "none detected" if not summary["collapse"] else f"{len(summary['collapse'])} warning(s)"))
    for reason, count in (summary.get("left_out") or {}).items():
        rows.append((f"left out: {reason}", count))
    rows.append(("model", summary["model_dir"]))
    return rows
