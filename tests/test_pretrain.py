"""`lrasr pretrain` end to end on generated speech: outputs, metrics, init_from, collapse report, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from conftest import espeak
from lrasr.data.manifest import write_manifest
from lrasr.errors import LrasrError
from lrasr.recipe import load_recipe
from lrasr.train.logging import read_metrics_csv

SENTENCES = [
    "നമസ്കാരം, ഇന്ന് നല്ല കാലാവസ്ഥയാണ്.",
    "ഞാൻ രാവിലെ ചായ കുടിച്ചു, പിന്നെ പത്രം വായിച്ചു.",
    "കുട്ടികൾ സ്കൂളിലേക്ക് നടന്നു പോകുന്നു.",
    "മഴ പെയ്യുമ്പോൾ വഴികൾ നനയും.",
    "ഈ പുസ്തകം വളരെ രസകരമാണ്.",
    "അവൻ പാട്ടു പാടി, എല്ലാവരും കേട്ടു.",
]
METRIC_KEYS = {"loss", "contrastive", "diversity", "feature_penalty", "accuracy", "code_perplexity",
               "prob_perplexity", "temperature", "mask_fraction", "grad_norm", "lr", "audio_seconds_per_second"}


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory) -> Path:
    """Espeak-ng Malayalam sentences, two voices, as an unlabeled manifest's segment files."""
    folder = tmp_path_factory.mktemp("speech")
    rows = []
    for i, text in enumerate(SENTENCES):
        for j, (speed, pitch) in enumerate([(150, 40), (175, 70)]):
            path = espeak(text, folder / f"s{i}_{j}.wav", speed=speed, pitch=pitch)
            rows.append({"id": path.stem, "audio": path.name, "duration": sf.info(str(path)).duration,
                         "source": path.name, "start": 0.0, "end": sf.info(str(path)).duration, "snr_db": 40.0})
    write_manifest(rows, folder / "manifest.tsv")
    return folder


def _recipe(tmp_path: Path, speech_dir: Path, **pretrain) -> Path:
    workdir = tmp_path / "work"
    unlabeled = workdir / "prepare" / "unlabeled"
    if not unlabeled.exists():
        shutil.copytree(speech_dir, unlabeled)
    section = dict(model="tiny", max_steps=4, lr=5e-4, batch_seconds=6.0, max_device_batch_seconds=6.0,
                   crop_min_seconds=1.0, crop_max_seconds=2.0, log_every=1, save_every=2, warmup_steps=2,
                   device="cpu")
    section.update(pretrain)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "language": "ml", "workdir": str(workdir), "pretrain": section}),
                    encoding="utf-8")
    return path


def test_pretrain_stage_end_to_end(tmp_path, speech_dir, capsys):
    from lrasr.model.io import load_model_dir
    from lrasr.stages.pretrain import run_pretrain

    recipe = load_recipe(_recipe(tmp_path, speech_dir))
    summary = run_pretrain(recipe)
    out = recipe.workdir / "pretrain"
    assert summary["steps"] == 4 and summary["utterances"] == 12
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
    rows = read_metrics_csv(out / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert METRIC_KEYS <= set(rows[-1])
    assert 0.3 < rows[-1]["mask_fraction"] < 0.8
    # Gumbel temperature follows the update number, 2 * d^step with d scaled to this 4-update run
    # (temperature_floor_at 0.7: floor 0.5 at update 2, so d = 0.5; the preset's 0.999995 would stay at 2.0)
    assert [r["temperature"] for r in rows] == pytest.approx([2.0, 1.0, 0.5, 0.5])
    assert summary["gumbel_temperature"] == pytest.approx([2.0, 0.5, 0.5])
    from lrasr.stages.pretrain import summary_rows

    assert ("Gumbel temperature", "2 -> floor 0.5, decay 0.5 per update") in summary_rows(summary)
    saved = json.loads((out / "model" / "config.json").read_text())
    assert "0.5, 0.5]" in json.dumps(saved)  # the saved model's config records the decay used
    # resuming from the checkpoint of update 2 follows the same schedule (and the same training)
    (out / "checkpoints" / "latest").write_text("step_0000002\n")
    capsys.readouterr()
    resumed = run_pretrain(recipe)
    assert "step_0000002 (update 2" in " ".join(capsys.readouterr().err.split()).replace("/ ", "/")
    again = read_metrics_csv(out / "metrics.csv")
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    assert resumed["gumbel_temperature"] == pytest.approx([2.0, 0.5, 0.5])
    for before, after in zip(rows[2:], again[2:]):
        assert after["temperature"] == before["temperature"] and after["loss"] == pytest.approx(before["loss"])
    assert (out / "curves.png").stat().st_size > 5000
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    model = load_model_dir(out / "model")
    assert type(model).__name__ == "Wav2Vec2ForPreTraining"
    # continued pretraining from the folder just written: every parameter loads by name
    recipe2 = load_recipe(_recipe(tmp_path / "b", speech_dir, max_steps=1, init_from=str(out / "model")))
    summary2 = run_pretrain(recipe2)
    assert summary2["init_from"]["loaded"] > 10 and not summary2["init_from"]["missing"]
    # continued pretraining takes the checkpoint's architecture whatever pretrain.model says
    recipe3 = load_recipe(_recipe(tmp_path / "c", speech_dir, max_steps=1, init_from=str(out / "model"),
                                  model={"preset": "base", "num_negatives": 20}))
    summary3 = run_pretrain(recipe3)
    assert not summary3["init_from"]["missing"] and summary3["chance_accuracy"] == pytest.approx(1 / 21)
    assert load_model_dir(recipe3.workdir / "pretrain" / "model").cfg.embed_dim == model.cfg.embed_dim == 128
    bad = load_recipe(_recipe(tmp_path / "d", speech_dir, init_from=str(tmp_path / "nowhere")), check_paths=False)
    with pytest.raises(LrasrError, match="init_from does not exist"):
        run_pretrain(bad)


def test_gumbel_decay_reaches_the_floor_in_short_runs_and_keeps_the_papers_decay():
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.quantizer import GumbelQuantizer
    from lrasr.recipe import PretrainConfig
    from lrasr.stages.pretrain import gumbel_decay

    default = PretrainConfig().temperature_floor_at
    base, large = Wav2Vec2Config.preset("base").latent_temp, Wav2Vec2Config.preset("large").latent_temp

    def temperature(latent_temp, decay, step):
        q = GumbelQuantizer(8, 2, 4, 8, (latent_temp[0], latent_temp[1], decay))
        return q.set_num_updates(step)

    # the demo: 200 updates of the tiny preset (base's 2.0 -> 0.5 at 0.999995 per update)
    demo = gumbel_decay(base, default, 200)
    assert demo < 0.999995
    assert temperature(base, demo, 140) == 0.5 and temperature(base, demo, 139) > 0.5
    assert temperature(base, 0.999995, 200) > 1.99  # what the preset alone gives: nothing learned
    # the published runs are unchanged: base 400k updates, large (floor 0.1) fairseq's 1M
    assert gumbel_decay(base, default, 400_000) == base[2] == 0.999995
    assert gumbel_decay(large, default, 1_000_000) == large[2] == 0.999995
    # null keeps the model's decay; an explicitly faster decay is never slowed down
    assert gumbel_decay(base, None, 200) == 0.999995
    assert gumbel_decay((2.0, 0.5, 0.998614), default, 2000) == 0.998614
    assert gumbel_decay((2.0, 0.5, 0.99), 0.5, 10) == pytest.approx(0.25 ** 0.2)  # floor at update 5
    for steps in (1, 7, 333, 12345):  # float rounding never leaves it above the floor at the fraction
        d = gumbel_decay(base, 0.7, steps)
        assert temperature(base, d, max(1, int(0.7 * steps + 1e-9))) == 0.5


def test_pretrain_without_prepared_audio_says_what_to_run(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "language": "ml", "workdir": str(tmp_path / "w"),
                                    "pretrain": {"model": "tiny"}}), encoding="utf-8")
    from lrasr.stages.pretrain import run_pretrain

    with pytest.raises(LrasrError, match="run `lrasr prepare`"):
        run_pretrain(load_recipe(path))


def test_collapse_detection(monkeypatch):
    from lrasr.stages.pretrain import detect_collapse

    healthy = [{"step": s, "contrastive": 3.0, "code_perplexity": 80.0, "grad_norm": 1.0, "accuracy": 0.3}
               for s in range(1, 21)]
    assert detect_collapse(healthy, groups=2, negatives=100) == []
    collapsed = healthy[:10] + [{"step": s, "contrastive": 0.001, "code_perplexity": 2.0, "grad_norm": 1e-6,
                                 "accuracy": 1.0} for s in range(11, 21)]
    problems = detect_collapse(collapsed, groups=2, negatives=100)
    assert len(problems) == 3
    assert any("quantizer collapsed" in p and "diversity" in p for p in problems)
    assert any("contrastive loss" in p for p in problems) and any("gradient norm" in p for p in problems)
    # the live check warns once per sign while training
    import types

    from lrasr.stages.pretrain import PretrainTask

    task = PretrainTask(types.SimpleNamespace(cfg=types.SimpleNamespace(num_codevector_groups=2, num_negatives=100)),
                        None, 0)
    warnings: list[str] = []
    monkeypatch.setattr("lrasr.report.warn", warnings.append)
    for i in range(1, len(collapsed) + 1):
        task.on_log(i, collapsed[i - 1], collapsed[:i])
    assert len(warnings) == 3 and all(w.startswith("update ") for w in warnings)
    stalled = [{"step": s, "contrastive": 4.6, "code_perplexity": 60.0, "grad_norm": 0.5, "accuracy": 0.01}
               for s in range(1, 21)]
    assert any("near chance" in p for p in detect_collapse(stalled, groups=2, negatives=100))


def test_torchrun_two_processes_cli(tmp_path, speech_dir):
    """`torchrun --nproc_per_node 2 -m lrasr pretrain recipe.yaml` trains with gloo on the CPU (DDP),
    and the weights equal one process's on the combined batch: the masks, distractors and Gumbel
    noise of a micro-batch do not depend on which process runs it."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this python")
    # 1 s crops of every clip: update groups of 4, device batches of 2 -- one process accumulates the
    # same two micro-batches that two processes run one each
    settings = dict(max_steps=2, save_every=100, batch_seconds=4.0, max_device_batch_seconds=2.0,
                    crop_min_seconds=1.0, crop_max_seconds=1.0)
    recipe = _recipe(tmp_path, speech_dir, **settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), "-m", "lrasr",
                           "pretrain", str(recipe)], capture_output=True, text=True, timeout=180, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "work" / "pretrain" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["accumulation"] == 1 and summary["steps"] == 2
    assert "processes" in proc.stderr  # the summary table, printed once by rank 0
    assert proc.stderr.count("audio hours seen") == 1

    import torch
    from safetensors.torch import load_file

    from lrasr.stages.pretrain import run_pretrain

    single = run_pretrain(load_recipe(_recipe(tmp_path / "one", speech_dir, **settings)), resume=False)
    assert single["processes"] == 1 and single["accumulation"] == 2
    assert single["final"]["loss"] == pytest.approx(summary["final"]["loss"], rel=1e-5)
    w2 = load_file(str(tmp_path / "work" / "pretrain" / "model" / "model.safetensors"))
    w1 = load_file(str(tmp_path / "one" / "work" / "pretrain" / "model" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-5, atol=1e-6, msg=key)


def test_pretrain_task_loss_is_a_sum_over_masked_frames():
    """The loop divides the summed loss by the summed sample size: the task returns the model's
    per-frame loss times the masked frames, with that count as the sample size, and the model's
    losses and metrics as floats."""
    import dataclasses

    import torch

    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.pretraining import Wav2Vec2ForPreTraining
    from lrasr.stages.pretrain import PretrainTask
    from lrasr.train.batching import Batch

    model = Wav2Vec2ForPreTraining(dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1)).eval()
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    lengths = torch.tensor([16000, 11000])
    wave[1, 11000:] = 0.0
    task = PretrainTask(model, None, 0)
    torch.manual_seed(3)  # the masks and distractors come from torch's generator: the same draws twice
    loss, metrics, size = task.compute_loss(model, Batch(wave, lengths, ["a", "b"], [{}, {}]), 0)
    torch.manual_seed(3)
    out = model(wave, lengths)
    assert size == out.num_masked > 10
    torch.testing.assert_close(loss, out.loss * out.num_masked)
    assert metrics["contrastive"] == pytest.approx(float(out.losses["contrastive"].detach()))
    assert metrics["accuracy"] == out.metrics["accuracy"] and set(metrics) >= METRIC_KEYS - {"loss", "grad_norm", "lr", "audio_seconds_per_second"}


def test_recipe_crop_range_and_seed_reach_the_dataset(tmp_path, speech_dir, monkeypatch):
    """run_pretrain's dataset crops with the recipe's range and seed (what cropping does is tested in
    test_train_batching); stopped right after the dataset is built."""
    import lrasr.stages.pretrain as stage

    built, real = [], stage.AudioDataset

    class Built(Exception):
        pass

    def record(*args, **kwargs):
        built.append(real(*args, **kwargs))
        raise Built

    recipe = load_recipe(_recipe(tmp_path, speech_dir, crop_min_seconds=0.7, crop_max_seconds=1.3))
    with monkeypatch.context() as patch:
        patch.setattr(stage, "AudioDataset", record)
        with pytest.raises(Built):
            stage.run_pretrain(recipe)
    assert built[0].crop == (0.7, 1.3) and built[0].seed == recipe.seed and len(built[0]) == 12


def test_include_labeled_adds_the_train_manifest(tmp_path, speech_dir):
    from lrasr.stages.pretrain import _manifests

    recipe = load_recipe(_recipe(tmp_path, speech_dir, include_labeled=True))
    with pytest.raises(LrasrError, match="labeled train manifest is missing"):
        _manifests(recipe)
    train_dir = recipe.workdir / "prepare" / "train"
    train_dir.mkdir(parents=True)
    (train_dir / "manifest.tsv").write_text("id\taudio\tduration\ttext\n", encoding="utf-8")
    assert [p.parent.name for p in _manifests(recipe)] == ["unlabeled", "train"]
