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
  min_seconds=0.0, max_seconds=None)``: rows are read from TSV manifests (id, audio, duration, and
  optional start/end to read a slice); with crops set, each item is a random crop of that length
  range (pretraining), otherwise the whole utterance (fine-tuning). Utterances longer than
  ``max_seconds`` (or than ``cfg.max_device_batch_seconds``) are left out and counted in
  ``dataset.skipped`` (reason -> count), which the loop reports.
- ``task.compute_loss(model, batch: Batch, step: int) -> (loss, metrics, sample_size)``
    * ``batch`` is a ``lrasr.train.batching.Batch`` on the device: ``waveforms [B, T] float32``,
      ``lengths [B] int64`` (samples), ``ids: list[str]``, ``rows: list[dict]`` (the manifest rows,
      so a fine-tuning task finds ``text`` there and encodes it itself).
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
- Gradients are summed over micro-batches locally, then all-reduced once per update (one flat
  buffer, torch.distributed, gloo on CPU / nccl on CUDA, initialised from torchrun's env vars). We
  reduce by hand instead of wrapping in ``DistributedDataParallel`` because DDP cannot follow
  parameters that change ``requires_grad`` after wrapping (fine-tuning unfreezes the transformer) and
  needs extra flags for layerdrop; the arithmetic is the same as DDP's.
- Adam(W) with betas/eps/weight decay from cfg, LR schedule (``lrasr.train.schedule``), gradient
  clipping at ``cfg.clip_norm``, bf16 autocast (or fp16 + GradScaler) on CUDA, float32 on CPU.
- A non-finite loss on any rank skips the update on all ranks and is counted; after
  ``cfg.max_nonfinite_in_row`` such updates in a row training stops with a ``TrainingError`` saying why.
- Checkpoints every ``cfg.save_every`` updates and at the end, atomically (written to a temporary
  folder, then renamed): ``out_dir/checkpoints/step_NNNNNNN/`` with ``model.safetensors`` and
  ``state.pt`` (optimizer, scheduler, GradScaler, RNG states, data position, counters, task state;
  loadable with ``torch.load(weights_only=True)``); ``out_dir/checkpoints/latest`` names the newest.
  ``resume=True`` restores all of it and continues bit-for-bit on the same hardware.
- Rank 0 logs every ``cfg.log_every`` updates to a rich progress line, ``out_dir/metrics.csv`` and
  TensorBoard (``out_dir/tensorboard``), and draws ``out_dir/curves.png`` at the end.
  Logged keys: the task's metrics, ``loss`` (sum / sample_size), ``grad_norm``, ``lr``,
  ``audio_seconds_per_second``, ``nonfinite_skipped``, plus evaluation results.

``TrainResult`` (returned on every rank) has: steps, final_metrics (last logged row), best_step,
best_metrics, best_path, stopped_early, nonfinite_skipped, checkpoint (latest checkpoint folder),
audio_seconds (total seen) and history (logged rows).
"""
