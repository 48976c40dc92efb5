"""Helpers for the training-loop tests: generated audio manifests and a small deterministic task.

The task's model has no randomness (no masking, no dropout), so exact comparisons between runs
(1 vs 2 processes, interrupted vs uninterrupted) test the loop and not the model. No tests here.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lrasr.data.manifest import write_manifest  # noqa: E402
from lrasr.recipe import PretrainConfig  # noqa: E402
from lrasr.train.batching import AudioDataset  # noqa: E402


def make_manifest(folder: Path, count: int = 12, seed: int = 0, min_s: float = 0.3, max_s: float = 1.2) -> Path:
    """``count`` WAV files of tones in noise with lengths between ``min_s`` and ``max_s`` seconds."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        seconds = float(rng.uniform(min_s, max_s))
        n = int(seconds * 16000)
        t = np.arange(n) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        wave = (wave + 0.05 * rng.standard_normal(n)).astype(np.float32)
        path = folder / f"utt{i:03d}.wav"
        sf.write(path, wave, 16000)
        rows.append({"id": f"utt{i:03d}", "audio": path.name, "duration": n / 16000})
    return write_manifest(rows, folder / "manifest.tsv")


class FrameRegressor(torch.nn.Module):
    """Predicts each 20 ms frame's log energy from a strided convolution of the waveform."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, kernel_size=400, stride=320)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, F]
        return self.head(torch.tanh(self.conv(waves.unsqueeze(1))).transpose(1, 2)).squeeze(-1)


class RegressionTask:
    """Loss = sum over valid frames of squared error; sample size = number of valid frames."""

    name = "regress"

    def __init__(self, manifest: Path, crop: tuple[float, float] | None = None, seed: int = 0,
                 nan_steps: tuple[int, ...] = (), nan_once: bool = False, kill_at_step: int | None = None,
                 eval_values: list[float] | None = None, empty_steps: tuple[int, ...] = (),
                 huge_steps: tuple[int, ...] = ()):
        torch.manual_seed(seed)
        self.model = FrameRegressor()
        self.train_dataset = AudioDataset([manifest], *(crop or (None, None)))
        self.seed = seed
        self.nan_steps = set(nan_steps)
        self.nan_once = nan_once
        # once each: an update without samples (size 0), one whose fp16-scaled gradients overflow
        self.empty_steps, self.huge_steps = set(empty_steps), set(huge_steps)
        self.kill_at_step = kill_at_step
        self.calls: list[int] = []
        if eval_values is not None:
            self.eval_values = list(eval_values)
            self.evaluate = self._evaluate
            self.best_metric, self.best_mode = "dev_err", "min"

    def on_step(self, step: int) -> None:
        if self.kill_at_step is not None and step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def compute_loss(self, model, batch, step):
        self.calls.append(step)
        pred = model(batch.waveforms)
        frames = (torch.div(batch.lengths - 400, 320, rounding_mode="floor") + 1).to(pred.device)  # lengths: CPU
        valid = torch.arange(pred.shape[1], device=pred.device)[None, :] < frames[:, None]
        chunks = batch.waveforms[:, : pred.shape[1] * 320].reshape(len(batch), pred.shape[1], 320)
        target = torch.log(chunks.pow(2).mean(-1) + 1e-4)
        err = (pred - target).pow(2) * valid
        loss = err.sum()
        if step in self.nan_steps:
            loss = loss * float("nan")
            if self.nan_once:
                self.nan_steps.discard(step)
        size = int(valid.sum())
        if step in self.empty_steps:
            self.empty_steps.discard(step)
            loss, size = loss * 0.0, 0
        if step in self.huge_steps:
            self.huge_steps.discard(step)
            loss = loss * 1e35  # finite in float32; times GradScaler's 65536 it is not
        return loss, {"mse": float(loss.detach()) / max(1, size)}, size

    def _evaluate(self, model, step):
        return {"dev_err": self.eval_values.pop(0) if self.eval_values else 1.0}


def small_cfg(**overrides) -> PretrainConfig:
    base = dict(max_steps=6, lr=1e-2, batch_seconds=4.0, max_device_batch_seconds=4.0, log_every=1,
                save_every=2, warmup_steps=2, weight_decay=0.01, device="cpu")
    base.update(overrides)
    return PretrainConfig(**base)


def flat_weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


def ddp_worker(rank: int, world: int, port: int, manifest: str, runs_json: str, result_path: str) -> None:
    """One rank of a gloo run (torch.multiprocessing.spawn target): trains each run of ``runs_json``
    (a list of {"out", "cfg", "chaos", "precision"}) in one process group and saves this rank's results to
    ``result_path.RANK``.

    ``chaos``: rank 1 alone gets a NaN loss at update 1 and loses its micro-batch of the first update
    group (uneven micro-batch counts across ranks); nothing may hang and the ranks must agree.
    """
    import json

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from datetime import timedelta

    import lrasr.train.distributed as D
    import lrasr.train.loop as loop
    from lrasr.train.distributed import shutdown_distributed

    D.COLLECTIVE_TIMEOUT = timedelta(seconds=300)  # a hang fails the test instead of stalling the suite

    original, precision = loop.iterate_groups, loop.resolve_precision
    results = []
    for run in json.loads(runs_json):
        chaos = bool(run.get("chaos")) and rank == 1

        def uneven(*args, **kwargs):
            for group, batches in original(*args, **kwargs):
                yield group, (batches[:-1] if group == 0 else batches)

        loop.iterate_groups = uneven if chaos else original
        # the CUDA precisions (autocast, fp16's GradScaler) under DDP, exercised on the CPU
        loop.resolve_precision = (lambda p, d, forced=run["precision"]: forced) if run.get("precision") else precision
        # rank 1 starts from different random weights: the loop must broadcast rank 0's
        task = RegressionTask(Path(manifest), seed=rank, nan_steps=(1,) if chaos else (), nan_once=True)
        task.seed = 0
        result = loop.train(task, PretrainConfig.model_validate_json(run["cfg"]), run["out"], device="cpu",
                            resume=False)
        results.append({"weights": flat_weights(task.model), "steps": result.steps,
                        "audio_seconds": result.audio_seconds, "nonfinite": result.nonfinite_skipped,
                        "loss": [r["loss"] for r in result.history],
                        "grad_norm": [r["grad_norm"] for r in result.history]})
    torch.save(results, f"{result_path}.{rank}")
    shutdown_distributed()


def resume_worker(rank: int, world: int, port: int, manifest: str, runs_json: str, result_path: str) -> None:
    """One rank of a gloo run that resumes from its own folder (as on a node without a shared workdir):
    for each run of ``runs_json`` (a list of [folder of rank 0, folder of rank 1]) trains 4 updates
    with ``resume=True`` from this rank's folder and records the steps and weights, or the error."""
    import json
    from datetime import timedelta

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import lrasr.train.distributed as D
    from lrasr.errors import LrasrError
    from lrasr.train.loop import train

    D.COLLECTIVE_TIMEOUT = timedelta(seconds=300)  # a hang fails the test instead of stalling the suite
    results = []
    for folders in json.loads(runs_json):
        task = RegressionTask(Path(manifest), seed=rank)
        try:
            res = train(task, small_cfg(max_steps=4), folders[rank], device="cpu", resume=True)
            results.append({"steps": res.steps, "weights": flat_weights(task.model)})
        except LrasrError as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    torch.save(results, f"{result_path}.{rank}")
    D.shutdown_distributed()


if __name__ == "__main__":  # used by the SIGKILL test: python test_train_support.py MANIFEST OUT KILL_AT
    torch.set_num_threads(1)
    from lrasr.train.loop import train

    manifest, out, kill = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    task = RegressionTask(manifest, crop=(0.3, 0.8), kill_at_step=int(kill) if kill != "none" else None)
    res = train(task, small_cfg(max_steps=8, batch_seconds=2.0, max_device_batch_seconds=1.0), out, resume=True)
    torch.save(flat_weights(task.model), Path(out) / "final_weights.pt")
    print("steps", res.steps)
