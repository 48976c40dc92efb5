"""The one training loop that pretraining and fine-tuning share.

Protocol (what a *task* gives ``train``; pretraining and fine-tuning differ only here)
-----------------------------------------------------------------------------------
``train(task, cfg, out_dir, device=None, resume=True, max_steps=None) -> TrainResult``

``cfg`` is a ``lrasr.recipe.TrainCommon`` (``PretrainConfig`` or ``FinetuneConfig``). Fields read:
max_steps, lr, weight_decay, adam_betas, adam_eps, clip_norm, batch_seconds, max_device_batch_seconds,
precision, device, log_every, save_every, max_nonfinite_in_row, num_workers; and where present
warmup_steps (polynomial decay) or tri_stage/final_lr_scale (tri-stage LR), eval_every, early_stopping.

Required task attributes:

- ``task.model: nn.Module`` -- moved to the device by the loop. Every process builds it; rank 0's
  weights are broadcast to the others at the start, so ranks need not seed identically.
- ``task.train_dataset: lrasr.train.batching.AudioDataset`` -- manifest-backed; the loop builds the
  seconds-bounded, length-bucketed, DDP-sharded batches from it (``lrasr.train.batching.plan_epoch``).
  Build it with ``AudioDataset(manifests: list[Path], crop_min_seconds=None, crop_max_seconds=None,
  min_seconds=0.0, max_seconds=None)``: rows are read from TSV manifests (id, audio, duration; each
  ``audio`` is read whole -- the unlabeled manifest's start/end say where a segment file came from
  and are not read positions); with crops set, each item is a random crop of that length
  range (pretraining), otherwise the whole utterance (fine-tuning). Utterances longer than
  ``max_seconds`` (or than ``cfg.max_device_batch_seconds``) are left out and counted in
  ``dataset.skipped`` (reason -> count), which the loop reports. A file that fails to decode during
  training is left out of its batch with a warning (once per file), not fatal.
- ``task.compute_loss(model, batch: Batch, step: int) -> (loss, metrics, sample_size)``
    * ``model`` is ``task.model`` with one process, its ``DistributedDataParallel`` wrapper under
      torchrun: only *call* it (``model(waveforms, lengths)``); reach attributes through
      ``task.model``.
    * ``batch`` is a ``lrasr.train.batching.Batch``: ``waveforms [B, T] float32`` on the device,
      ``lengths [B] int64`` (samples) on the CPU, ``ids: list[str]``, ``rows: list[dict]`` (the
      manifest rows, so a fine-tuning task finds ``text`` there and encodes it itself).
    * runs inside the loop's autocast context (bf16/fp16 on CUDA, none on CPU); compute precision-
      sensitive parts (CTC) in float32 yourself.
    * ``loss``: scalar tensor, the **sum** over the ``sample_size`` units of this micro-batch (e.g.
      masked frames for the contrastive loss, utterances or target tokens for CTC). If your loss is
      a mean, return ``mean * sample_size``. The loop divides the accumulated gradient by the total
      ``sample_size`` over all micro-batches and all processes, so 2 processes give exactly the
      gradient of 1 process on the combined batch.
    * ``metrics``: ``dict[str, float]``, per-micro-batch **means**; the loop averages them over
      micro-batches and processes weighted by ``sample_size``. Use the same keys on every call.
    * ``sample_size``: int or float > 0.
    * ``step`` is the number of optimizer updates done so far (0-based).

Optional task hooks (looked up with ``getattr``):

- ``task.on_step(step: int) -> None`` -- called on every rank before each update (Gumbel
  temperature, unfreezing the transformer after ``freeze_steps``, ...). Must be a pure function of
  ``step`` so resuming reproduces it.
- ``task.evaluate(model, step: int) -> dict[str, float]`` -- called on rank 0 only (the unwrapped
  model, in ``eval()`` mode, under ``torch.no_grad()``; the loop restores ``train()`` after) every
  ``cfg.eval_every`` updates and after the last one. Returned values are logged with the train
  metrics (name them e.g. ``dev_wer``).
- ``task.best_metric: str`` and ``task.best_mode: "min" | "max"`` -- with ``evaluate``: the loop keeps
  the weights of the best evaluation in ``out_dir/checkpoints/best/`` (model.safetensors + best.json
  with step and metrics) and stops early after ``cfg.early_stopping`` evaluations without
  improvement (when that field exists and is set).
- ``task.should_stop(step: int) -> bool`` -- asked on rank 0 after every update (and broadcast):
  True ends training there, with a final checkpoint (time budgets, external signals).
- ``task.on_log(step: int, row: dict[str, float], history: list[dict]) -> None`` -- called on rank 0
  after each logged row (``history`` = all rows so far): live checks such as collapse warnings.
- ``task.seed: int`` -- seeds the epoch plans (order, crops) and the per-micro-batch RNG (default 0).
- ``task.find_unused_parameters: bool`` -- under torchrun: True when a parameter that requires grad
  may get no gradient in some forward pass (DDP must then look for it). Default: True exactly when
  ``task.model.cfg.layerdrop > 0``.
- ``task.name: str`` -- shown on the progress bar and the curves' title.
- ``task.param_groups(model) -> list[dict]`` -- custom optimizer parameter groups (default: one group
  of all parameters; ``requires_grad=False`` parameters still get an optimizer slot so that
  unfreezing later works; a parameter whose grad is None is simply not updated by Adam).
- ``task.lr_multiplier(step: int) -> float`` -- overrides the schedule chosen from ``cfg``.
- ``task.state_dict() / task.load_state_dict(d)`` -- extra task state saved in checkpoints
  (plain tensors/numbers/strings only: it is loaded with ``weights_only=True``).

What the loop does
------------------
- Effective batch = ``cfg.batch_seconds`` of audio summed over processes per update. Accumulation is
  derived: ``accum = ceil(batch_seconds / (world_size * max_device_batch_seconds))``. The plan of
  update groups does not depend on the world size, so changing the number of processes changes how a
  group is split, not what it contains.
- Under torchrun (gloo on CPU, nccl on CUDA, each process on cuda:LOCAL_RANK; initialised from its
  env vars) the model is called through ``DistributedDataParallel`` (``lrasr.train.distributed.Replica``):
  gradients are summed over micro-batches locally under ``no_sync`` and all-reduced (summed) inside
  the backward pass of the last micro-batch, overlapped with it; then every rank divides them by the
  global sample size, so 2 processes give the gradient of 1 process on the combined batch. Every
  rank runs the same number of micro-batches (the most any rank has; a rank short of data runs a
  zero-weighted filler pass), so none waits forever. The wrapper is rebuilt when the set of
  trainable parameters changes (unfreezing after ``freeze_steps``); ``find_unused_parameters``
  is on only when some parameter can miss a gradient (see ``task.find_unused_parameters``).
  With one process nothing is wrapped.
- Before every micro-batch all RNGs (python, numpy, torch) are reseeded from (seed, update, index
  of the micro-batch in the update group), so masks, distractors, dropout and layerdrop are
  reproducible after a resume and do not depend on which process runs a micro-batch.
- The dataset is first restricted to what one device holds (``dataset.restrict(max_device_batch_seconds)``:
  crops capped, longer utterances left out and counted).
- Adam(W) with betas/eps/weight decay from cfg, LR schedule (``lrasr.train.schedule``), gradient
  clipping at ``cfg.clip_norm``, bf16 autocast (or fp16 + GradScaler) on CUDA, float32 on CPU.
- A non-finite loss on any rank skips the update on all ranks and is counted; after
  ``cfg.max_nonfinite_in_row`` such updates in a row training stops with a ``TrainingError`` saying why.
- A skipped update (non-finite, an fp16 overflow, or no sample anywhere -- e.g. no masked frame) does
  not count as an update: its group of data is consumed, but the update counter, and with it the
  LR schedule, ``on_step``, logging, evaluation and checkpoints, stay where they were, so
  ``max_steps`` counts applied updates. Overflows and empty updates have their own in-row limit
  (also ``cfg.max_nonfinite_in_row``).
- Checkpoints every ``cfg.save_every`` updates and at the end, atomically (written to a temporary
  folder, then renamed): ``out_dir/checkpoints/step_NNNNNNN/`` with ``model.safetensors`` and
  ``state.pt`` (optimizer, scheduler, GradScaler, RNG states, data position, counters, task state;
  loadable with ``torch.load(weights_only=True)``); ``out_dir/checkpoints/latest`` names the newest.
  ``resume=True`` restores all of it and continues bit-for-bit on the same CPU hardware (on CUDA the
  same draws, but atomic adds in some backward kernels -- index_select, CTC -- vary the last bits);
  ``resume=False`` removes the previous run's checkpoints and starts over. Under torchrun each rank
  resumes from its own ``out_dir`` (only rank 0 writes): unless all restored the same update (a workdir
  all nodes share, or the checkpoint copied to each), every rank stops with a one-line ``LrasrError``.
- Rank 0 logs every ``cfg.log_every`` updates to a rich progress line, ``out_dir/metrics.csv`` and
  TensorBoard (``out_dir/tensorboard``), and draws ``out_dir/curves.png`` at the end.
  Logged keys: the task's metrics, ``loss`` (sum / sample_size), ``grad_norm``, ``lr``,
  ``audio_seconds_per_second``, ``nonfinite_skipped``, plus evaluation results.

``TrainResult`` (returned on every rank) has: steps, final_metrics (last logged row), best_step,
best_metrics, best_path, stopped_early, nonfinite_skipped, checkpoint (latest checkpoint folder),
audio_seconds (total seen) and history (logged rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from lrasr.errors import TrainingError
from lrasr.report import warn
from lrasr.train import checkpoint as ckpt
from lrasr.train import distributed as D
from lrasr.train.batching import (Batch, accumulation_steps, filler_batch, iterate_groups, plan_epoch,
                                  usable_workers)
from lrasr.train.resume import check_resume_settings, resume_settings
from lrasr.train.schedule import from_config
from lrasr.train.update import log_row, run_update

# metrics shown on the progress line when present
SHOW = ("loss", "accuracy", "code_perplexity", "grad_norm", "lr", "audio_seconds_per_second")


@dataclass
class TrainResult:
    steps: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_path: Path | None = None
    stopped_early: bool = False
    nonfinite_skipped: int = 0
    checkpoint: Path | None = None
    audio_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    accumulation: int = 1
    world_size: int = 1
    cpu_seconds: float = 0.0  # CPU time of this process's training, over all resumed runs


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 on the CPU always; on CUDA ``auto`` means bf16 where ``device`` computes it natively, else fp16."""
    if device.type != "cuda":
        return "fp32"
    if precision == "auto":
        return "bf16" if D.native_bf16(device) else "fp16"
    return precision


def find_unused_parameters(task: Any, model: torch.nn.Module) -> bool:
    """Whether DDP must look for parameters without a gradient (see the protocol above)."""
    value = getattr(task, "find_unused_parameters", None)
    if value is not None:
        return bool(value)
    return float(getattr(getattr(model, "cfg", None), "layerdrop", 0.0) or 0.0) > 0


def train(task: Any, cfg: Any, out_dir: str | Path, device: str | torch.device | None = None,
          resume: bool = True, max_steps: int | None = None) -> TrainResult:
    """Train ``task.model`` on ``task.train_dataset`` by the protocol in this module's docstring."""
    out_dir = Path(out_dir)
    info = D.env_info()
    device = D.resolve_device(device if device is not None else cfg.device, info.local_rank)
    info = D.init_distributed(device)
    total_steps = int(max_steps or cfg.max_steps)
    seed = int(getattr(task, "seed", 0))
    precision = resolve_precision(cfg.precision, device)
    dataset = task.train_dataset
    dataset.restrict(cfg.max_device_batch_seconds)
    if len(dataset) == 0:
        skipped = ", ".join(f"{n} {r}" for r, n in getattr(dataset, "skipped", {}).items()) or "none listed"
        raise TrainingError(f"no training utterances (left out: {skipped})")
    dataset.seed = seed

    model: torch.nn.Module = task.model.to(device)
    D.broadcast_model(model, info)
    groups = task.param_groups(model) if hasattr(task, "param_groups") else [{"params": list(model.parameters())}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    lr_mult: Callable[[int], float] = getattr(task, "lr_multiplier", None) or from_config(cfg, total_steps)
    # the losses are sums over frames/labels, not means: start where fairseq does (128), not at 65536,
    # or the first dozen updates overflow and count towards max_nonfinite_in_row
    scaler = torch.amp.GradScaler(device.type, init_scale=128.0) if precision == "fp16" else None
    counters = ckpt.Counters()
    if not resume and info.is_main:
        ckpt.clear_checkpoints(out_dir)
    D.barrier(info)
    failure: Exception | None = None  # raised after the others learn of it, so none waits for this rank
    if resume and (folder := ckpt.latest_checkpoint(out_dir)) is not None:
        try:
            state = ckpt.load_checkpoint(folder, model, device)
            check_resume_settings(state.get("settings"), resume_settings(cfg), folder)
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            ckpt.set_rng_state(state["rng"])
            counters.load(state["counters"])
            if hasattr(task, "load_state_dict") and state.get("task") is not None:
                task.load_state_dict(state["task"])
        except Exception as exc:
            failure = exc
        if info.is_main and failure is None:
            warn(f"resuming from {folder} (update {counters.step}, epoch {counters.epoch})")
    # every rank read its own disk: all must stand at the same update (else a one-line error on each)
    D.check_same_step(counters.step, failure is not None, info, device, ckpt.checkpoints_dir(out_dir))
    if failure is not None:
        raise failure
    cpu_start = time.process_time() - counters.cpu_seconds  # so a resumed run reports the total

    eval_every = getattr(cfg, "eval_every", None) if hasattr(task, "evaluate") else None
    best_metric = getattr(task, "best_metric", None)
    best_mode = getattr(task, "best_mode", "min")
    patience = getattr(cfg, "early_stopping", None)
    logger = None
    if info.is_main:
        from lrasr.train.logging import TrainLogger

        logger = TrainLogger(out_dir, total_steps, counters.step, description=getattr(task, "name", "train"))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    replica = D.Replica(model, device, find_unused_parameters(task, model)) if info.active else None
    filler: Batch | None = None

    def get_filler() -> Batch:
        nonlocal filler
        if filler is None:
            filler = filler_batch(dataset)
        return filler

    metric_sums: dict[str, list[float]] = {}  # key -> [sum of mean*sample_size, sum of sample_size]
    window = {"loss": 0.0, "sample_size": 0.0, "seconds": 0.0, "time": 0.0, "grad_norm": 0.0, "updates": 0}
    stopped_early = False
    last_saved = counters.step if resume and counters.step > 0 else -1
    last_row: dict[str, float] = {}

    def save() -> Path | None:
        nonlocal last_saved
        last_saved = counters.step
        counters.cpu_seconds = time.process_time() - cpu_start
        if not info.is_main:
            return None
        state = {"optimizer": optimizer.state_dict(), "scheduler": {"step": counters.step, "base_lrs": base_lrs},
                 "scaler": scaler.state_dict() if scaler is not None else {}, "rng": ckpt.rng_state(),
                 "counters": counters.state(),
                 "task": task.state_dict() if hasattr(task, "state_dict") else None,
                 "settings": resume_settings(cfg)}
        return ckpt.save_checkpoint(out_dir, counters.step, model, state)

    def evaluate() -> bool:
        """Run the task's evaluation on rank 0, keep the best weights; True = stop early."""
        stop = False
        if info.is_main:
            model.eval()
            with torch.no_grad():
                results = {k: float(v) for k, v in task.evaluate(model, counters.step).items()}
            model.train()
            assert logger is not None
            logger.log(counters.step, results)
            if best_metric is not None and best_metric in results:
                value = results[best_metric]
                better = counters.best_value is None or (value < counters.best_value if best_mode == "min"
                                                         else value > counters.best_value)
                if better:
                    counters.best_value, counters.best_step = value, counters.step
                    counters.evals_without_improvement = 0
                    ckpt.save_best(out_dir, model, {"step": counters.step, "metric": best_metric, **results})
                else:
                    counters.evals_without_improvement += 1
                    stop = patience is not None and counters.evals_without_improvement >= patience
        stop = D.broadcast_flag(stop, info, device)
        if info.active:  # everyone learns the best-tracking counters, so checkpoints agree
            synced = D.gather_objects(counters.state() if info.is_main else None, info)[0]
            counters.load(synced)  # type: ignore[arg-type]
        return stop

    if usable_workers(cfg.num_workers) < cfg.num_workers and info.is_main:
        warn(f"num_workers: {cfg.num_workers} asked, {usable_workers(cfg.num_workers)} used (the CPU cores this "
             "process may run on)")
    model.train()
    tick = time.perf_counter()
    while counters.step < total_steps and not stopped_early:
        plan = plan_epoch(dataset, counters.epoch, cfg.batch_seconds, cfg.max_device_batch_seconds,
                          info.world_size, seed)
        if len(plan) == 0:
            raise TrainingError("the batch plan is empty: no utterance fits; check the manifests' durations")
        for _, batches in iterate_groups(dataset, plan, info.rank, info.world_size, counters.group, cfg.num_workers,
                                         pin_memory=device.type == "cuda"):
            if hasattr(task, "on_step"):
                task.on_step(counters.step)
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * lr_mult(counters.step)
            outcome = run_update(task, model, optimizer, scaler, params, batches, counters.step, precision, device,
                                 info, cfg.clip_norm, seed=seed, replica=replica, filler=get_filler,
                                 attempt=counters.attempts)
            counters.group += 1
            # throughput includes data loading, not evaluation or checkpoint writing (tick reset below)
            now = time.perf_counter()
            window["time"] += now - tick
            tick = now
            window["seconds"] += outcome["seconds"]
            counters.audio_seconds += outcome["seconds"]
            if outcome["skipped"]:
                problem = counters.count_skipped(outcome["skipped"], cfg.max_nonfinite_in_row)
                if problem is not None:
                    if logger is not None:
                        logger.close()
                    raise TrainingError(problem)
                continue
            counters.nonfinite_in_row = counters.unapplied_in_row = 0
            counters.step += 1
            window["loss"] += outcome["loss_sum"]
            window["sample_size"] += outcome["sample_size"]
            window["grad_norm"] += outcome["grad_norm"]
            window["updates"] += 1
            for key, (s, w) in outcome["metrics"].items():
                acc = metric_sums.setdefault(key, [0.0, 0.0])
                acc[0] += s
                acc[1] += w
            final = counters.step >= total_steps
            if counters.step % cfg.log_every == 0 or final:
                last_row = log_row(metric_sums, window, info, counters, optimizer)
                if logger is not None:
                    logger.log(counters.step, last_row, SHOW)
                    if hasattr(task, "on_log"):
                        task.on_log(counters.step, last_row, logger.rows)
                metric_sums = {}
                window = {k: 0.0 for k in window}
            elif logger is not None:
                logger.advance(counters.step)
            if eval_every and (counters.step % eval_every == 0 or final):
                stopped_early = evaluate()
            if hasattr(task, "should_stop") and not final:
                stopped_early = D.broadcast_flag(bool(task.should_stop(counters.step)) if info.is_main else False,
                                                 info, device) or stopped_early
            if counters.step % cfg.save_every == 0:
                save()
            tick = time.perf_counter()
            if final or stopped_early:
                break
        else:
            counters.epoch += 1
            counters.group = 0
    latest = save() if last_saved != counters.step else ckpt.latest_checkpoint(out_dir)
    counters.cpu_seconds = time.process_time() - cpu_start
    D.barrier(info)
    history: list[dict[str, float]] = []
    if logger is not None:
        logger.close(getattr(task, "name", ""))
        history = logger.rows
    best_path = ckpt.checkpoints_dir(out_dir) / "best" if counters.best_step is not None else None
    best_metrics: dict[str, float] = {}
    if best_path is not None and (best_path / "best.json").is_file():
        import json

        best_metrics = {k: v for k, v in json.loads((best_path / "best.json").read_text()).items()
                        if isinstance(v, (int, float))}
    return TrainResult(steps=counters.step, final_metrics=last_row, best_step=counters.best_step,
                       best_metrics=best_metrics, best_path=best_path, stopped_early=stopped_early,
                       nonfinite_skipped=counters.nonfinite_total, checkpoint=latest,
                       audio_seconds=counters.audio_seconds, history=history, cpu_seconds=counters.cpu_seconds,
                       accumulation=accumulation_steps(cfg.batch_seconds, cfg.max_device_batch_seconds,
                                                       info.world_size),
                       world_size=info.world_size)
