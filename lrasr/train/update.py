"""One optimizer update over a rank's micro-batches, and the logged row of the updates since the last log.

Split from ``lrasr.train.loop`` (which documents the protocol); every rank runs both functions, since
each takes part in collective reductions.
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any, Callable

import numpy as np
import torch

from lrasr.audio.decode import SAMPLE_RATE
from lrasr.errors import TrainingError
from lrasr.train import distributed as D
from lrasr.train.batching import Batch


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_micro_batch(seed: int, attempt: int, index: int) -> None:
    """Reseed every RNG before micro-batch ``index`` of update attempt ``attempt`` (index counted over the
    whole update group: rank r's k-th micro-batch is ``k * world_size + r``). Attempts count skipped
    updates too, so an update retried after a skipped one draws new masks and dropout.

    Masks, distractors, dropout and layerdrop are then a function of (seed, update, micro-batch), not
    of the process that runs it: a resumed run draws what the uninterrupted one did, and two processes
    draw for each micro-batch what one process accumulating the same micro-batches draws.
    """
    value = (seed * 1_000_003 + attempt * 7919 + index * 104_729) % (2**31 - 1)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def run_update(task: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
               params: list[torch.nn.Parameter], batches: list[Batch], step: int, precision: str,
               device: torch.device, info: D.DistInfo, clip_norm: float, seed: int = 0,
               replica: D.Replica | None = None, filler: Callable[[], Batch] | None = None,
               attempt: int | None = None) -> dict[str, Any]:
    """One optimizer update over this rank's micro-batches; every rank takes part in the reductions.

    Returns seconds, loss_sum, sample_size (summed over ranks), metrics (this rank's sums), grad_norm
    and ``skipped``: None when the optimizer stepped, else why not -- ``"nonfinite"`` (a NaN/inf loss
    or gradient on some rank), ``"overflow"`` (fp16 gradients overflowed; the GradScaler lowers its
    scale) or ``"empty"`` (no sample on any rank, e.g. no masked frame). A skipped update leaves the
    weights and optimizer state as they were.

    With ``replica`` (torchrun) every rank runs the same number of forward/backward passes (the most
    any rank has; a rank short of data runs ``filler()`` with weight 0) under ``no_sync`` but the last,
    whose backward all-reduces the accumulated gradients inside DDP, overlapped with the computation.
    ``attempt`` (default ``step``) seeds the micro-batches' random draws.
    """
    draw = step if attempt is None else attempt
    optimizer.zero_grad(set_to_none=True)
    acc = _Accumulated()
    if replica is None:
        for k, batch in enumerate(batches):
            if len(batch) == 0:
                continue
            seed_micro_batch(seed, draw, k * info.world_size + info.rank)
            if not _forward_backward(task, model, batch.to(device), step, precision, device, scaler, acc):
                break  # this update is skipped; no need to backpropagate the rest
    else:
        # the plan gives every rank the same count, but a rank must never wait in a collective that
        # the others never reach: run the largest count everywhere
        count = D.all_reduce_max(len(batches), info, device)
        wrapper = replica.wrapper()
        for k in range(count):
            batch = batches[k] if k < len(batches) else None
            real = batch is not None and len(batch) > 0
            if not real:
                assert filler is not None, "a DDP update needs a filler batch for ranks short of data"
                batch = filler()
            seed_micro_batch(seed, draw, k * info.world_size + info.rank)
            sync = contextlib.nullcontext() if k == count - 1 else wrapper.no_sync()
            with sync:
                # never break out early: the others would wait for this rank's gradients forever
                _forward_backward(task, wrapper, batch.to(device), step, precision, device, scaler, acc,
                                  weight=1.0 if real else 0.0)
    totals = D.all_reduce_sum(torch.tensor([acc.loss_sum, acc.sample_size, acc.seconds, acc.nonfinite],
                                           dtype=torch.float64, device=device), info).tolist()
    loss_sum, sample_size, seconds, nonfinite = totals
    out: dict[str, Any] = {"seconds": seconds, "loss_sum": loss_sum, "sample_size": sample_size,
                           "metrics": acc.metrics, "grad_norm": 0.0, "skipped": None}
    if nonfinite > 0 or sample_size <= 0:
        optimizer.zero_grad(set_to_none=True)
        out["skipped"] = "nonfinite" if nonfinite > 0 else "empty"
        return out
    # gradients are sums over micro-batches and ranks: divide by the global sample size
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        torch._foreach_mul_(grads, 1.0 / sample_size)
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip_norm))
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skips by itself when fp16 gradients overflowed
        scaler.update()
        if scaler.get_scale() < scale:  # it overflowed (the scale searches downwards): not a NaN loss
            optimizer.zero_grad(set_to_none=True)
            out["skipped"] = "overflow"
            return out
    elif not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        out["skipped"] = "nonfinite"
        return out
    else:
        optimizer.step()
    out["grad_norm"] = grad_norm
    return out


class _Accumulated:
    """This rank's sums over the micro-batches of one update."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.sample_size = 0.0
        self.seconds = 0.0
        self.nonfinite = 0.0
        self.metrics: dict[str, tuple[float, float]] = {}


def _forward_backward(task: Any, model: torch.nn.Module, batch: Batch, step: int, precision: str,
                      device: torch.device, scaler: Any, acc: _Accumulated, weight: float = 1.0) -> bool:
    """Loss and backward of one micro-batch, added to ``acc``; False when the loss is not finite.

    ``weight`` 0 (a DDP filler pass) contributes nothing: no gradient, sample, metric or seconds, but
    a non-finite filler loss still marks the update (its zero-weighted gradient would be NaN).
    """
    try:
        with autocast(precision, device):
            loss, batch_metrics, size = task.compute_loss(model, batch, step)
        # the loss's value is read once, before backward is queued: a read after it would make the host
        # wait on a GPU for the whole backward pass before it could prepare the next micro-batch
        value = float(loss.detach())
        finite = math.isfinite(value)
        if weight != 1.0:
            loss = loss * weight
        if finite or weight == 0.0 or isinstance(model, torch.nn.parallel.DistributedDataParallel):
            (scaler.scale(loss) if scaler is not None else loss).backward()
    except torch.OutOfMemoryError:
        raise TrainingError(out_of_memory_message(task, batch, device)) from None
    if not finite:
        acc.nonfinite = 1.0
    if weight != 0.0:
        acc.seconds += batch.seconds
    if weight == 0.0 or not finite:
        return finite
    size = float(size)
    acc.loss_sum += value
    acc.sample_size += size
    for key, mean in batch_metrics.items():
        s, w = acc.metrics.get(key, (0.0, 0.0))
        acc.metrics[key] = (s + float(mean) * size, w + size)
    return True


def out_of_memory_message(task: Any, batch: Batch, device: torch.device) -> str:
    """One line for a micro-batch that did not fit the GPU: its padded size and what to lower."""
    rows, samples = batch.waveforms.shape
    padded = rows * samples / SAMPLE_RATE
    section = getattr(task, "name", "") or "the stage"
    return (f"out of {device} memory on a micro-batch of {rows} utterance(s) x {samples / SAMPLE_RATE:.1f} s "
            f"({padded:.0f} s of padded audio): lower {section}.max_device_batch_seconds in the recipe (the update "
            f"keeps batch_seconds of audio by accumulating more micro-batches; checkpoints written with the old value "
            f"need --no-resume), or use shorter crops or a smaller model")


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
