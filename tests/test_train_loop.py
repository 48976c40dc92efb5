"""The shared training loop: DDP equivalence, SIGKILL + resume, NaN guard, checkpoints, evaluation hook."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lrasr.train.batching import plan_epoch
from lrasr.train.checkpoint import latest_checkpoint
from lrasr.train.logging import read_metrics_csv
from lrasr.train.loop import TrainingError, train
from test_train_support import RegressionTask, ddp_worker, flat_weights, make_manifest, resume_worker, small_cfg

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("audio"), count=12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process_on_the_combined_batch(manifest, tmp_path):
    """DDP (gloo) against one process, in one process group: (a) one micro-batch per rank, with an
    update where rank 1 has no data; (b) accumulation under no_sync (2 micro-batches per rank); (c) rank
    1 alone hits a NaN loss and has fewer micro-batches than rank 0: no hang, the update is skipped on
    both, and the ranks end with the same weights; (d) fp16 autocast + GradScaler under DDP."""
    # (a) max_device >= batch: one process takes each update as one micro-batch; two processes split it
    cfg_a = small_cfg(max_steps=4, batch_seconds=2.5, max_device_batch_seconds=2.5, save_every=100)
    plan = plan_epoch(RegressionTask(manifest).train_dataset, 0, 2.5, 2.5, 2, seed=0)
    sizes = [sum(len(m) for m in group) for group in plan.micro[:4]]
    assert 1 in sizes and max(sizes) >= 3  # covers an update where rank 1 has nothing, and real splits
    # (b) device batches of ~1.2 s: each rank accumulates 2 micro-batches per update (one may be empty)
    cfg_b = small_cfg(max_steps=4, batch_seconds=3.6, max_device_batch_seconds=1.2, save_every=100)
    plan_b = plan_epoch(RegressionTask(manifest).train_dataset, 0, 3.6, 1.2, 2, seed=0)
    assert max(len(group) for group in plan_b.micro[:4]) >= 4
    runs = [{"out": str(tmp_path / name), "cfg": cfg.model_dump_json(), "chaos": chaos, "precision": precision}
            for name, cfg, chaos, precision in (("a", cfg_a, False, None), ("b", cfg_b, False, None),
                                                ("c", cfg_a, True, None), ("d", cfg_b, False, "fp16"))]
    result = tmp_path / "two.pt"
    mp.spawn(ddp_worker, args=(2, _free_port(), str(manifest), json.dumps(runs), str(result)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(f"{result}.{r}", weights_only=True) for r in (0, 1))
    for name, cfg, two, other in (("a", cfg_a, rank0[0], rank1[0]), ("b", cfg_b, rank0[1], rank1[1])):
        task = RegressionTask(manifest, seed=0)
        single = train(task, cfg, tmp_path / f"one_{name}", resume=False)
        assert two["steps"] == single.steps == 4, name
        assert two["audio_seconds"] == pytest.approx(single.audio_seconds), name
        w1 = flat_weights(task.model)
        assert not torch.equal(w1, flat_weights(RegressionTask(manifest, seed=0).model))  # it trained
        torch.testing.assert_close(two["weights"], w1, rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(two["weights"], other["weights"]), name  # the ranks agree exactly
        # Adam hides a wrong gradient scale in the weights; the loss and the reduced gradient's norm do not
        assert two["loss"] == pytest.approx([r["loss"] for r in single.history], rel=1e-5), name
        assert two["grad_norm"] == pytest.approx([r["grad_norm"] for r in single.history], rel=1e-4), name
    chaos0, chaos1 = rank0[2], rank1[2]
    assert chaos0["steps"] == chaos1["steps"] == 4 and chaos0["nonfinite"] == chaos1["nonfinite"] == 1
    assert torch.isfinite(chaos0["weights"]).all() and torch.equal(chaos0["weights"], chaos1["weights"])
    fp16 = rank0[3]
    assert fp16["steps"] == 4 and torch.isfinite(fp16["weights"]).all()
    assert torch.equal(fp16["weights"], rank1[3]["weights"])
    assert not torch.equal(fp16["weights"], flat_weights(RegressionTask(manifest, seed=0).model))


def test_ranks_resuming_from_their_own_disks_must_restore_the_same_step(manifest, tmp_path):
    """Each rank resumes from its own folder (nodes without a shared workdir). A checkpoint copied to
    every node resumes; a node without it, or with a checkpoint of another step, stops every rank with
    one line naming both steps (instead of training from other weights); a rank whose restore fails
    makes the others stop too instead of hanging."""
    import shutil

    def checkpointed(name: str, steps: int, **cfg) -> Path:
        train(RegressionTask(manifest), small_cfg(max_steps=steps, save_every=1, **cfg), tmp_path / name,
              resume=False)
        return tmp_path / name

    shutil.copytree(checkpointed("main", 2), tmp_path / "copy")
    checkpointed("older", 1)
    checkpointed("edited", 2, lr=0.5)  # another recipe: rank 1 alone cannot restore it
    runs = [[tmp_path / "main", tmp_path / "copy"], [tmp_path / "main", tmp_path / "empty"],
            [tmp_path / "main", tmp_path / "older"], [tmp_path / "main", tmp_path / "edited"]]
    result = tmp_path / "res.pt"
    mp.spawn(resume_worker, args=(2, _free_port(), str(manifest), json.dumps([[str(f) for f in r] for r in runs]),
                                  str(result)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(f"{result}.{r}", weights_only=True) for r in (0, 1))
    # copied checkpoint: both resume at update 2 and train on together
    assert rank0[0]["steps"] == rank1[0]["steps"] == 4 and torch.equal(rank0[0]["weights"], rank1[0]["weights"])
    assert [r["step"] for r in read_metrics_csv(tmp_path / "main" / "metrics.csv")] == [1, 2, 3, 4]
    for run, step in ((1, 0), (2, 1)):
        for rank in (rank0, rank1):
            message = rank[run]["error"]
            assert message.startswith("LrasrError: ") and "\n" not in message, message
            assert (f"rank 1 restored step {step}, rank 0 step 4: the workdir must be on a filesystem all nodes "
                    "share, or copy the checkpoint to every node") in message
    assert "lr changed" in rank1[3]["error"] and rank1[3]["error"].startswith("TrainingError")
    assert "rank 1 could not restore its checkpoint" in rank0[3]["error"]


def test_sigkill_then_resume_equals_uninterrupted_run(manifest, tmp_path):
    script = HERE / "test_train_support.py"

    def run(out: Path, kill: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(manifest), str(out), kill],
                              capture_output=True, text=True, timeout=120)

    full = run(tmp_path / "full", "none")
    assert full.returncode == 0, full.stderr
    killed = run(tmp_path / "killed", "5")  # killed with SIGKILL at the start of update 6 (after a save at 4)
    assert killed.returncode == -9, killed.stderr
    assert latest_checkpoint(tmp_path / "killed").name == "step_0000004"
    assert not (tmp_path / "killed" / "final_weights.pt").exists()
    resumed = run(tmp_path / "killed", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "steps 8" in resumed.stdout
    a = torch.load(tmp_path / "full" / "final_weights.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "final_weights.pt", weights_only=True)
    assert torch.equal(a, b)
    # the metrics file has each step once, as if never interrupted
    assert [r["step"] for r in read_metrics_csv(tmp_path / "killed" / "metrics.csv")] == list(range(1, 9))


def test_checkpoint_contents_load_with_weights_only(manifest, tmp_path):
    task = RegressionTask(manifest)
    result = train(task, small_cfg(max_steps=3, save_every=2), tmp_path, resume=False)
    folder = result.checkpoint
    assert folder is not None and folder.name == "step_0000003" and latest_checkpoint(tmp_path) == folder
    state = torch.load(folder / "state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "rng", "counters"} <= set(state)
    assert state["counters"]["step"] == 3 and state["optimizer"]["state"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "tensorboard").is_dir()
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"loss", "mse", "grad_norm", "lr", "audio_seconds_per_second"} <= set(rows[0])
    # resuming a finished run trains no further, and reports the CPU time the checkpoint recorded
    assert 0 < state["counters"]["cpu_seconds"] <= result.cpu_seconds
    again = train(RegressionTask(manifest), small_cfg(max_steps=3), tmp_path, resume=True)
    assert again.steps == 3 and again.cpu_seconds >= state["counters"]["cpu_seconds"]
    # asking for more steps continues from step 3
    more = train(RegressionTask(manifest), small_cfg(max_steps=5, save_every=2), tmp_path, resume=True)
    assert more.steps == 5 and [r["step"] for r in read_metrics_csv(tmp_path / "metrics.csv")] == [1, 2, 3, 4, 5]
    # only the last two checkpoints stay on disk (2, 3 and 4, 5 were written)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_0000004", "step_0000005"]
    assert more.cpu_seconds > again.cpu_seconds  # the resumed run's CPU time adds to the earlier runs'
    # ... but a checkpoint trained with other settings (an edited recipe) is not silently continued
    with pytest.raises(TrainingError, match=r"lr changed.*--no-resume"):
        train(RegressionTask(manifest), small_cfg(max_steps=7, lr=0.5), tmp_path, resume=True)
    # starting over removes the old run's checkpoints and rows instead of mixing with them
    fresh = train(RegressionTask(manifest), small_cfg(max_steps=2, save_every=1), tmp_path, resume=False)
    assert fresh.checkpoint.name == "step_0000002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_0000001", "step_0000002"]
    assert [r["step"] for r in read_metrics_csv(tmp_path / "metrics.csv")] == [1, 2]


def test_updates_are_adamw_on_the_clipped_mean_gradient(manifest, tmp_path):
    """Three updates of the loop against the same updates written out here: the gradient of the
    micro-batches' summed loss divided by the update's sample size, clipped to clip_norm, then AdamW
    with the schedule's LR and the recipe's betas, eps and weight decay (none of them torch's
    defaults, and the clipping active). The other tests compare the loop with itself (1 vs 2
    processes, resumed vs not), which a wrong scale or an ignored setting passes."""
    from lrasr.train.schedule import from_config

    cfg = small_cfg(max_steps=3, lr=0.05, warmup_steps=2, clip_norm=0.05, weight_decay=0.3, adam_betas=(0.7, 0.8),
                    adam_eps=1e-4, batch_seconds=2.5, max_device_batch_seconds=1.2, save_every=100)
    task = RegressionTask(manifest, seed=0)
    used: dict[int, list] = {}
    original = task.compute_loss

    def spy(model, batch, step):
        used.setdefault(step, []).append(batch)
        return original(model, batch, step)

    task.compute_loss = spy
    result = train(task, cfg, tmp_path, resume=False)
    assert sorted(used) == [0, 1, 2] and max(len(b) for b in used.values()) >= 2  # accumulation too

    ref = RegressionTask(manifest, seed=0).model
    opt = torch.optim.AdamW(ref.parameters(), lr=cfg.lr, betas=(0.7, 0.8), eps=1e-4, weight_decay=0.3)
    mult = from_config(cfg, 3)
    norms, losses = [], []
    for step in (0, 1, 2):  # the step argument of compute_loss counts from 0
        opt.zero_grad()
        outs = [original(ref, batch, step) for batch in used[step]]
        sum(loss for loss, _, _ in outs).backward()
        size = sum(n for _, _, n in outs)
        losses.append(sum(float(loss.detach()) for loss, _, _ in outs) / size)
        for p in ref.parameters():
            p.grad /= size
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.05)))
        opt.param_groups[0]["lr"] = 0.05 * mult(step)
        opt.step()
    assert min(norms) > 0.1  # clipping changed every update
    assert [r["grad_norm"] for r in result.history] == pytest.approx(norms, rel=1e-5)
    assert [r["lr"] for r in result.history] == pytest.approx([0.05 * mult(k) for k in range(3)])
    # logged: the loss per sample, and the task's per-sample metric averaged weighted by sample size
    assert [r["loss"] for r in result.history] == pytest.approx(losses, rel=1e-5)
    assert [r["mse"] for r in result.history] == pytest.approx(losses, rel=1e-5)
    torch.testing.assert_close(flat_weights(task.model), flat_weights(ref), rtol=1e-5, atol=1e-6)


def test_nonfinite_losses_are_skipped_and_counted(manifest, tmp_path):
    task = RegressionTask(manifest, nan_steps=(1,), nan_once=True)
    result = train(task, small_cfg(max_steps=4, max_nonfinite_in_row=3), tmp_path, resume=False)
    assert result.steps == 4 and result.nonfinite_skipped == 1
    assert torch.isfinite(flat_weights(task.model)).all()
    assert task.calls.count(1) == 2  # the NaN update was retried on the next group of data
    assert result.final_metrics["nonfinite_skipped"] == 1


@pytest.mark.parametrize("kind", ["empty", "overflow"])
def test_skipped_updates_do_not_step_the_schedule(manifest, tmp_path, monkeypatch, kind):
    """An update that is not applied (no sample anywhere; fp16 overflow) consumes its data but is not
    an update: the counter, and so the LR schedule, stays; max_steps counts applied updates."""
    import lrasr.train.loop as loop

    if kind == "overflow":
        monkeypatch.setattr(loop, "resolve_precision", lambda p, d: "fp16")
    cfg = small_cfg(max_steps=4, save_every=100, warmup_steps=2)
    clean = train(RegressionTask(manifest), cfg, tmp_path / "clean", resume=False)
    task = RegressionTask(manifest, **{"empty_steps" if kind == "empty" else "huge_steps": (1,)})
    result = train(task, cfg, tmp_path / kind, resume=False)
    assert result.steps == 4 and result.nonfinite_skipped == 0
    assert task.calls.count(1) >= 2  # update 1 was retried on the next group(s) of data
    assert [r["lr"] for r in result.history] == [r["lr"] for r in clean.history]
    state = torch.load(result.checkpoint / "state.pt", weights_only=True)
    assert state["counters"]["step"] == 4
    if kind == "empty":
        assert state["counters"]["unapplied_total"] == 1
    else:  # fp16 on the CPU also overflows while the scale searches down from 65536 (both runs)
        assert state["counters"]["unapplied_total"] >= 1 and state["scaler"]["scale"] < 65536.0


def test_abort_after_too_many_nonfinite_in_a_row(manifest, tmp_path):
    task = RegressionTask(manifest, nan_steps=(2,))
    with pytest.raises(TrainingError, match="NaN/inf in 3 updates in a row"):
        train(task, small_cfg(max_steps=6, max_nonfinite_in_row=3), tmp_path, resume=False)


def test_evaluate_hook_keeps_best_and_stops_early(manifest, tmp_path):
    from lrasr.recipe import FinetuneConfig

    cfg = FinetuneConfig(max_steps=20, lr=1e-3, batch_seconds=4.0, max_device_batch_seconds=4.0, log_every=1,
                         save_every=100, eval_every=2, early_stopping=2, device="cpu")
    task = RegressionTask(manifest, eval_values=[0.9, 0.5, 0.7, 0.6, 0.1])
    result = train(task, cfg, tmp_path, resume=False)
    # evaluations at 2, 4 (best 0.5), 6, 8 -> two without improvement -> stop at 8
    assert result.stopped_early and result.steps == 8
    assert result.best_step == 4 and result.best_metrics["dev_err"] == 0.5
    best = json.loads((tmp_path / "checkpoints" / "best" / "best.json").read_text())
    assert best["step"] == 4 and (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()
    rows = {r["step"]: r for r in read_metrics_csv(tmp_path / "metrics.csv")}
    assert rows[4]["dev_err"] == 0.5 and "loss" in rows[4]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_paths(manifest, tmp_path, monkeypatch, precision):
    """The CUDA precisions, exercised on the CPU: autocast runs, fp16 uses a GradScaler that is saved."""
    import lrasr.train.loop as loop

    assert loop.resolve_precision("auto", torch.device("cpu")) == "fp32"  # CPU training stays float32
    monkeypatch.setattr(loop, "resolve_precision", lambda p, d: precision)
    dtypes = []
    task = RegressionTask(manifest)
    original = task.compute_loss

    def spy(model, batch, step):
        dtypes.append(model(batch.waveforms).dtype)
        return original(model, batch, step)

    task.compute_loss = spy
    result = train(task, small_cfg(max_steps=3, save_every=100), tmp_path, resume=False)
    assert result.steps == 3 and torch.isfinite(flat_weights(task.model)).all()
    assert set(dtypes) == {torch.float16 if precision == "fp16" else torch.bfloat16}
    state = torch.load(result.checkpoint / "state.pt", weights_only=True)
    assert bool(state["scaler"]) == (precision == "fp16")


def test_device_names_are_checked_with_one_line_errors(monkeypatch):
    from lrasr.decode.acoustic import resolve_device as for_inference
    from lrasr.errors import LrasrError
    from lrasr.train.distributed import resolve_device

    assert resolve_device("cpu") == torch.device("cpu") and for_inference("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) == for_inference("") == torch.device("cpu")
    for bad in ("gpu", "mps", "cuda:x"):
        with pytest.raises(LrasrError):
            for_inference(bad)
    # under torchrun a process trains on its own GPU (cuda:LOCAL_RANK), never a fixed one
    from lrasr.train.distributed import init_distributed

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(LrasrError, match=r"cuda:LOCAL_RANK \(here cuda:1\), not cuda:0"):
        init_distributed(torch.device("cuda:0"))


def test_count_skipped_separates_divergence_from_unapplied_updates():
    """NaN/inf updates and fp16-overflow/empty updates have their own in-a-row counts and messages."""
    from lrasr.train.checkpoint import Counters

    c = Counters()
    assert c.count_skipped("overflow", 2) is None and c.count_skipped("nonfinite", 2) is None
    assert "fp16 gradients overflowed" in c.count_skipped("overflow", 2)
    assert "no masked frame" in c.count_skipped("empty", 3)
    assert "NaN/inf in 2 updates in a row" in c.count_skipped("nonfinite", 2)
    assert (c.unapplied_total, c.nonfinite_total) == (3, 2)
    # the RNG of a retried update is seeded from the attempts, so it draws anew (not the skipped draws)
    c.step = 7
    assert c.attempts == 12 and "attempts" not in c.state()


def test_resume_check_names_settings_added_since_the_checkpoint(tmp_path):
    """A setting the checkpoint does not record (added to lrasr later) is named as such; null for it
    resumes (the checkpoint's .get() is None too), an edited setting is named as changed."""
    from lrasr.train.loop import TrainingError
    from lrasr.train.resume import check_resume_settings

    saved = {"lr": 0.001, "max_steps": 10}
    check_resume_settings(saved, {"lr": 0.001, "max_steps": 10, "temperature_floor_at": None}, tmp_path)
    with pytest.raises(TrainingError, match=r"lr changed; temperature_floor_at added to lrasr since"):
        check_resume_settings(saved, {"lr": 0.002, "max_steps": 10, "temperature_floor_at": 0.7}, tmp_path)
    with pytest.raises(TrainingError, match=r"\(temperature_floor_at added to lrasr since this checkpoint"):
        check_resume_settings(saved, {"lr": 0.001, "max_steps": 10, "temperature_floor_at": 0.7}, tmp_path)
