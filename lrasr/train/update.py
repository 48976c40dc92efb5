"""One optimizer update over a rank's micro-batches, and the logged row of the updates since the last log.

Split from ``lrasr.train.loop`` (which documents the protocol); every rank runs both functions, since
each takes part in collective reductions.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from lrasr.train import distributed as D
from lrasr.train.batching import Batch


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def run_update(task: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
               params: list[torch.nn.Parameter], batches: list[Batch], step: int, precision: str,
               device: torch.device, info: D.DistInfo, clip_norm: float) -> dict[str, Any]:
    """One optimizer update over this rank's micro-batches; every rank takes part in the reductions."""
    optimizer.zero_grad(set_to_none=True)
    loss_sum, sample_size, seconds, nonfinite = 0.0, 0.0, 0.0, 0.0
    metrics: dict[str, tuple[float, float]] = {}
    for batch in batches:
        if len(batch) == 0:
            continue
        seconds += batch.seconds
        batch = batch.to(device)
        with autocast(precision, device):
            loss, batch_metrics, size = task.compute_loss(model, batch, step)
        size = float(size)
        if not bool(torch.isfinite(loss.detach()).item()):
            nonfinite = 1.0
            break  # this update is skipped everywhere; no need to backpropagate the rest
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += float(loss.detach())
        sample_size += size
        for key, value in batch_metrics.items():
            s, w = metrics.get(key, (0.0, 0.0))
            metrics[key] = (s + float(value) * size, w + size)
    totals = D.all_reduce_sum(torch.tensor([loss_sum, sample_size, seconds, nonfinite], dtype=torch.float64,
                                           device=device), info).tolist()
    loss_sum, sample_size, seconds, nonfinite = totals
    out: dict[str, Any] = {"seconds": seconds, "loss_sum": loss_sum, "sample_size": sample_size,
                           "metrics": metrics, "grad_norm": 0.0, "skipped": False}
    if nonfinite > 0 or sample_size <= 0:
        optimizer.zero_grad(set_to_none=True)
        out["skipped"] = nonfinite > 0
        return out
    D.reduce_gradients([p for p in params if p.requires_grad], info, 1.0 / sample_size)
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip_norm))
    if scaler is not None:
        scaler.step(optimizer)  # skips by itself when fp16 gradients overflowed; the scale adapts
        scaler.update()
        if not math.isfinite(grad_norm):  # an overflow while the scale searches: normal, not a NaN loss
            grad_norm = 0.0
    elif not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        out["skipped"] = True
        return out
    else:
        optimizer.step()
    out["grad_norm"] = grad_norm
    return out


def log_row(metric_sums: dict[str, list[float]], window: dict[str, float], info: D.DistInfo,
            counters: Any, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Means since the last log, combined over ranks (metrics weighted by sample size)."""
    merged: dict[str, list[float]] = {}
    for sums in D.gather_objects(metric_sums, info):
        for key, (s, w) in sums.items():  # type: ignore[union-attr]
            acc = merged.setdefault(key, [0.0, 0.0])
            acc[0] += s
            acc[1] += w
    updates = max(1.0, window["updates"])
    row = {"loss": window["loss"] / window["sample_size"] if window["sample_size"] else math.nan}
    row.update({k: s / w for k, (s, w) in merged.items() if w > 0})
    # window time is this rank's; seconds are already summed over ranks, so this is the job's rate
    row["grad_norm"] = window["grad_norm"] / updates
    row["lr"] = optimizer.param_groups[0]["lr"]
    row["audio_seconds_per_second"] = window["seconds"] / window["time"] if window["time"] > 0 else math.nan
    row["nonfinite_skipped"] = float(counters.nonfinite_total)
    row["epoch"] = float(counters.epoch)
    return row
