"""lrasr finetune on generated speech: loss goes down, outputs, CTC-infeasible filtering, bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import espeak
from lrasr.audio.decode import load
from lrasr.data.manifest import read_manifest, write_manifest
from lrasr.errors import LrasrError
from lrasr.recipe import load_recipe
from lrasr.text.tokenizer import CharTokenizer

SENTENCES = ["അമ്മ വന്നു", "കടൽ നീല", "മരം വലുത്", "പുഴ ഒഴുകുന്നു", "ആന വരുന്നു", "മഴ പെയ്തു"]
# fast settings: a narrower model than the tiny preset, few updates
MODEL = {"preset": "tiny", "conv_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2,
         "embed_dim": 64, "ffn_dim": 128, "pos_conv_kernel": 16, "pos_conv_groups": 4, "final_dim": 32,
         "codevector_dim": 32, "num_codevectors_per_group": 16}
STEPS = 24


def _speak(folder: Path, name: str, text: str, speed: int, pitch: int) -> tuple[str, float]:
    raw = espeak(text, folder / f"{name}.raw.wav", voice="ml", speed=speed, pitch=pitch)
    wave = load(raw, 16000)
    sf.write(folder / f"{name}.wav", wave, 16000)
    raw.unlink()
    return f"{name}.wav", len(wave) / 16000


def make_workdir(root: Path) -> Path:
    """<root>/work/prepare/{train,dev}/manifest.tsv + tokenizer, like `lrasr prepare` writes them."""
    work = root / "work"
    prep = work / "prepare"
    audio = root / "audio"
    audio.mkdir(parents=True)
    rows = {"train": [], "dev": []}
    for s, text in enumerate(SENTENCES):
        for v, (speed, pitch) in enumerate([(150, 40), (175, 60), (130, 50)]):
            split, spk = ("dev", "spk_dev") if v == 2 and s < 3 else ("train", f"spk{v}")
            name = f"u{s}_{v}"
            rel, dur = _speak(audio, name, text, speed, pitch)
            rows[split].append({"id": name, "audio": str(audio / rel), "duration": dur, "text": text,
                                "raw_text": text, "speaker": spk, "source": "espeak"})
    # CTC-infeasible: a long transcript on 0.1 s of audio (4 frames); and an empty transcript
    sf.write(audio / "short.wav", np.zeros(1600, dtype=np.float32), 16000)
    rows["train"].append({"id": "too_short", "audio": str(audio / "short.wav"), "duration": 0.1,
                          "text": SENTENCES[3], "raw_text": "", "speaker": "x", "source": "espeak"})
    rows["train"].append({"id": "no_text", "audio": str(audio / "u0_0.wav"), "duration": rows["train"][0]["duration"],
                          "text": "", "raw_text": "", "speaker": "x", "source": "espeak"})
    for split, items in rows.items():
        write_manifest(items, prep / split / "manifest.tsv")
    CharTokenizer.from_texts(SENTENCES).save(prep / "tokenizer")
    return work


def write_recipe(root: Path, work: Path, **finetune) -> Path:
    data = {"name": "ft", "language": "ml", "workdir": str(work),
            "finetune": {"model": MODEL, "init_from": "none", "max_steps": STEPS, "lr": 2e-3, "batch_seconds": 12,
                         "max_device_batch_seconds": 12, "eval_every": 12, "log_every": 4, "save_every": 12,
                         "mask_time_prob": 0.2, "mask_channel_prob": 0.1, "layerdrop": 0.0, **finetune}}
    path = root / f"recipe{len(list(root.glob('recipe*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lrasr.stages.finetune import run_finetune

    root = tmp_path_factory.mktemp("ft")
    work = make_workdir(root)
    recipe = load_recipe(write_recipe(root, work))
    summary = run_finetune(recipe, device="cpu")
    return root, work, recipe, summary


def test_finetune_reduces_ctc_loss_and_writes_outputs(trained):
    root, work, recipe, summary = trained
    out = work / "finetune"
    with open(out / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("loss") not in (None, "", "nan")]
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) >= 3
    assert losses[-1] < 0.6 * losses[0], losses  # CTC loss per utterance falls clearly
    assert summary["steps"] == STEPS
    assert summary["train_utterances"] == 15 and summary["dev_utterances"] == 3
    assert summary["dev_wer"] is not None and 0 <= summary["dev_cer"]
    # CTC-infeasible and empty rows are counted and listed, never trained on
    assert summary["skipped"] == {"ctc infeasible": 1, "empty transcript": 1}
    skipped = read_manifest(out / "skipped.tsv", required=("source", "reason", "id"))
    assert set(skipped["id"]) == {"too_short", "no_text"}
    assert "too_short" not in set(read_manifest(out / "data" / "train.tsv")["id"])
    # a self-contained model folder + dev report + curves
    from lrasr.model.io import load_ctc_model

    model, tok = load_ctc_model(out / "model")
    assert tok.labels == CharTokenizer.from_texts(SENTENCES).labels
    assert json.loads((out / "model" / "text.json").read_text())["language"] == "ml"
    assert (out / "dev" / "utterances.tsv").is_file() and (out / "curves.png").is_file()
    best = json.loads((out / "checkpoints" / "best" / "best.json").read_text())
    assert best["metric"] == "dev_selection"
    # the kept weights are those of the best evaluation: WER first, dev loss on ties
    evals = [r for r in rows if r.get("dev_wer") not in (None, "")]
    best_row = min(evals, key=lambda r: (float(r["dev_wer"]), float(r["dev_loss"])))
    assert best["step"] == int(best_row["step"])


def test_transformer_frozen_then_unfrozen(trained):
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.stages.finetune import FinetuneTask

    model = Wav2Vec2ForCTC(Wav2Vec2Config.from_recipe(MODEL), 10)
    task = FinetuneTask(model, None, None, {}, freeze_steps=5, seed=0, metric="wer")
    task.on_step(0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.aux.weight", "backbone.aux.bias"}
    task.on_step(5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.encoder.transformer.layers.0.attention.q_proj.weight" in trainable
    assert not any("feature_extractor" in n for n in trainable)
    # under DDP, look for parameters without a gradient only when one can miss it
    model.cfg.layerdrop, model.cfg.mask_time_prob = 0.0, 0.5
    assert task.find_unused_parameters is False
    model.cfg.layerdrop = 0.1  # a dropped layer's parameters get no gradient
    assert task.find_unused_parameters is True
    model.cfg.layerdrop, model.cfg.mask_time_prob = 0.0, 0.0  # the mask embedding is never used
    assert task.find_unused_parameters is True


def test_evaluate_command_and_init_from_transformers_export(trained, tmp_path):
    from typer.testing import CliRunner

    from lrasr.cli import app
    from lrasr.stages.finetune import build_model

    root, work, recipe, summary = trained
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(work / "prepare" / "dev" / "manifest.tsv"), "--model",
                                 str(work / "finetune" / "model"), "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    ev = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert ev["utterances"] == 3 and ev["cer"] == pytest.approx(summary["dev_cer"], abs=1e-9)
    result = runner.invoke(app, ["export", "--format", "hf", str(work / "finetune" / "model"), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    # continue from the exported transformers folder: same tokenizer -> the head loads too
    rec = load_recipe(write_recipe(root, work, init_from=str(tmp_path / "hf")))
    model, info = build_model(rec, CharTokenizer.from_texts(SENTENCES))
    assert info["missing"] == [] and info["skipped"] == []


def test_bad_inputs(trained, tmp_path):
    from lrasr.stages.finetune import build_model, run_finetune

    root, work, recipe, summary = trained
    tok = CharTokenizer.from_texts(SENTENCES)
    with pytest.raises(LrasrError, match="does not exist"):
        build_model(load_recipe(write_recipe(root, work, init_from=str(tmp_path / "missing"))), tok)
    # another alphabet than the checkpoint's head: an error, unless a new head is asked for
    other = CharTokenizer.from_texts(["xyz"])
    rec = load_recipe(write_recipe(root, work, init_from=str(work / "finetune" / "model")))
    with pytest.raises(LrasrError, match="tokenizer does not match"):
        build_model(rec, other)
    rec = load_recipe(write_recipe(root, work, init_from=str(work / "finetune" / "model"), reinit_head=True))
    _, info = build_model(rec, other)
    assert info["skipped"] == ["aux.bias", "aux.weight"]
    # a checkpoint of another shape than the recipe's preset is built with the checkpoint's shape,
    # so a shape mismatch can only come from the weights themselves: covered in test_convert
    # 'pretrain' without a pretrained model
    rec = load_recipe(write_recipe(root, work, init_from="pretrain"))
    with pytest.raises(LrasrError, match="no pretrained model"):
        build_model(rec, tok)
    # a train split with nothing usable
    empty = tmp_path / "w"
    (empty / "prepare").mkdir(parents=True)
    tok.save(empty / "prepare" / "tokenizer")
    write_manifest([{"id": "a", "audio": "x.wav", "duration": 0.05, "text": SENTENCES[0]}],
                   empty / "prepare" / "train" / "manifest.tsv")
    rec = load_recipe(write_recipe(tmp_path, empty))
    with pytest.raises(LrasrError, match="no usable utterances.*1 ctc infeasible"):
        run_finetune(rec, device="cpu")
    # the command line shows such errors as one line and exits 2
    from typer.testing import CliRunner

    from lrasr.cli import app

    result = CliRunner().invoke(app, ["finetune", str(tmp_path / "recipe0.yaml")])
    assert result.exit_code == 2 and "no usable utterances" in result.output
    result = CliRunner().invoke(app, ["export", "--format", "onnx", str(work / "finetune" / "model"), str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown export format" in result.output


def test_recipe_masking_and_layerdrop_reach_the_model(trained):
    """finetune.mask_* and layerdrop end up in the built model's config (read on every forward);
    mask_channel_length defaults to d/12 (64 at BASE width); the feature encoder runs without
    autograd only when frozen."""
    from lrasr.stages.finetune import build_model

    root, work, recipe, summary = trained
    tok = CharTokenizer.from_texts(SENTENCES)
    settings = dict(mask_time_prob=0.3, mask_time_length=4, mask_channel_prob=0.15, mask_channel_length=7,
                    layerdrop=0.2)
    model, info = build_model(load_recipe(write_recipe(root, work, **settings)), tok)
    assert {k: getattr(model.cfg, k) for k in settings} == settings
    assert info["freeze_feature_encoder"] is False and model.cfg.feature_grad_mult == 1.0  # from scratch
    model, _ = build_model(load_recipe(write_recipe(root, work, freeze_feature_encoder=True)), tok)
    assert model.cfg.mask_channel_length == MODEL["embed_dim"] // 12 == 5 and model.cfg.feature_grad_mult == 0.0


def test_default_peak_lr_follows_model_width(trained):
    from lrasr.recipe import FinetuneConfig

    assert FinetuneConfig().peak_lr(128) == 5e-4  # tiny: short CPU runs
    assert FinetuneConfig().peak_lr(768) == 5e-5  # base/large: the paper's value
    assert FinetuneConfig(lr=1e-3).peak_lr(768) == 1e-3
    assert trained[3]["lr"] == 2e-3  # the recipe's own value is what trained


def test_ctc_loss_sum_uses_each_rows_frames_and_zeroes_infeasible_rows():
    """ctc_loss_sum on a padded batch = the sum of each utterance's CTC loss on its own valid frames
    (blank 0); a row whose labels cannot fit its frames adds 0 instead of inf; ctc_min_frames counts
    a blank between repeated labels."""
    import torch

    from lrasr.stages.finetune import ctc_loss_sum, ctc_min_frames

    assert (ctc_min_frames([3, 3, 4]), ctc_min_frames([1, 2, 1]), ctc_min_frames([5, 5, 5])) == (4, 3, 5)
    logits = torch.randn(3, 12, 6, generator=torch.Generator().manual_seed(0))
    logits[1, 7:] = 50.0  # padding that would dominate the loss if it were read
    frames = torch.tensor([12, 7, 3])
    targets = [[1, 2, 2, 3], [4, 5], [1, 1, 2]]  # the last needs 4 frames, has 3
    loss, tokens = ctc_loss_sum(logits, frames, targets)
    assert tokens == 9
    expected = sum(torch.nn.functional.ctc_loss(logits[b, : int(frames[b])].log_softmax(-1)[:, None],
                                                torch.tensor([targets[b]]), frames[b: b + 1],
                                                torch.tensor([len(targets[b])]), blank=0, reduction="sum")
                   for b in range(2))
    assert torch.isfinite(loss) and float(expected) > 1.0
    torch.testing.assert_close(loss, expected)


def test_dev_metrics_equal_each_dev_utterance_alone(trained):
    """The dev evaluation batches the dev set (padded); its greedy transcripts, WER and mean CTC
    loss per utterance are those of each utterance run alone."""
    import torch

    from lrasr.decode.greedy import greedy_decode
    from lrasr.evaluate import score
    from lrasr.model.io import load_ctc_model
    from lrasr.stages.finetune import FinetuneTask, ctc_loss_sum

    root, work, recipe, summary = trained
    model, tok = load_ctc_model(work / "finetune" / "model")
    with torch.no_grad():  # a random head: letters everywhere, so frames past an utterance's end would show
        model.aux.weight.copy_(torch.randn(model.aux.weight.shape, generator=torch.Generator().manual_seed(0)))
    dev = read_manifest(work / "prepare" / "dev" / "manifest.tsv")
    targets = {i: tok.encode(t) for i, t in zip(dev["id"], dev["text"])}
    task = FinetuneTask(model, tok, None, {}, freeze_steps=0, seed=0, metric="wer", dev=dev, dev_targets=targets)
    metrics, report = task.dev_metrics(model.eval())
    hyps, losses = [], []
    with torch.no_grad():
        for path, uid in zip(dev["audio"], dev["id"]):
            wave = torch.from_numpy(load(path, 16000))[None]
            logits, frames = model(wave, torch.tensor([wave.shape[1]]))
            hyps.append(greedy_decode(logits[0], tok))
            losses.append(float(ctc_loss_sum(logits, frames, [targets[uid]])[0]))
    alone = score(list(dev["text"]), hyps)
    assert len(set(dev["duration"])) == 3  # three lengths: the batch is padded
    assert [r.hypothesis for r in report.rows] == [r.hypothesis for r in alone.rows]
    assert (metrics["dev_wer"], metrics["dev_cer"]) == (alone.wer, alone.cer)
    assert metrics["dev_loss"] == pytest.approx(sum(losses) / 3, rel=1e-4)


def test_selection_tie_break_never_outweighs_one_error():
    from lrasr.stages.finetune import selection_tie_break

    # one word error in 5000 words (WER step 2e-4) must beat any dev loss difference
    for units in (1, 12, 5000, 10**6):
        step = 1 / units
        worst = selection_tie_break(1e9, units)
        assert 0 < worst < step / 2 + 1e-15
        assert (0.1 + selection_tie_break(1e9, units)) < (0.1 + step + selection_tie_break(0.0, units))
    assert selection_tie_break(2.0, 100) > selection_tie_break(1.0, 100)  # lower loss wins a tie
    assert selection_tie_break(float("nan"), 100) == 0.0


def test_freeze_steps_train_only_the_head_then_everything_but_the_feature_encoder(trained, tmp_path):
    """From a checkpoint: during freeze_steps only the CTC head moves; the feature encoder never does."""
    import shutil

    import torch

    from lrasr.model.io import load_ctc_model
    from lrasr.stages.finetune import run_finetune

    root, work, recipe, summary = trained
    start, _ = load_ctc_model(work / "finetune" / "model")
    before = {k: v.clone() for k, v in start.state_dict().items()}

    def changed(model):
        after = model.state_dict()
        return {k.removeprefix("backbone.").split(".")[0] for k in before if not torch.equal(before[k], after[k])}

    # (mask_embedding: the learned vector that time masking writes, trained like the transformer)
    # freeze_feature_encoder: false trains the convolutional encoder too once the freeze is over
    everything = {"aux", "encoder", "mask_embedding", "feature_extractor"}
    for steps, unfreeze, expected in ((2, False, {"aux"}), (4, False, {"aux", "encoder", "mask_embedding"}),
                                      (2, True, {"aux"}), (4, True, everything)):
        w = tmp_path / f"w{steps}{unfreeze}"
        shutil.copytree(work / "prepare", w / "prepare")
        extra = {"freeze_feature_encoder": False} if unfreeze else {}
        rec = load_recipe(write_recipe(tmp_path, w, init_from=str(work / "finetune" / "model"), max_steps=steps,
                                       freeze_steps=2, eval_every=100, save_every=100, **extra))
        run_finetune(rec, device="cpu", resume=False)
        model, _ = load_ctc_model(w / "finetune" / "model")
        assert changed(model) == expected, (steps, unfreeze)
        init = json.loads((w / "finetune" / "init.json").read_text())
        assert init["freeze_feature_encoder"] is (not unfreeze)  # the effective choice is recorded


def test_same_seed_same_weights_and_metrics(trained, tmp_path):
    """Two CPU runs of one recipe (in different workdirs) train identical weights and report identical metrics."""
    import shutil

    from safetensors.torch import load_file

    from lrasr.stages.finetune import run_finetune

    root, work, recipe, summary = trained
    runs = []
    for name in ("a", "b"):
        w = tmp_path / name
        shutil.copytree(work / "prepare", w / "prepare")
        rec = load_recipe(write_recipe(tmp_path, w, max_steps=3, eval_every=3, save_every=3))
        out = run_finetune(rec, device="cpu", resume=False)
        runs.append(({k: out[k] for k in ("dev_wer", "dev_cer", "dev_loss", "train_loss", "best_step")},
                     load_file(str(w / "finetune" / "model" / "model.safetensors"))))
    (m1, w1), (m2, w2) = runs
    assert m1 == m2 and m1["train_loss"] is not None
    assert w1.keys() == w2.keys() and all(w1[k].equal(w2[k]) for k in w1)


def test_saved_model_is_the_best_evaluation_not_the_last_update(trained, tmp_path, monkeypatch):
    """When an earlier evaluation was the best, model/ holds that update's weights. (The dev
    selection value is scripted -- best at update 2 of 4 -- so the choice does not depend on
    how training went; everything else is the real run.)"""
    import shutil

    from safetensors.torch import load_file

    from lrasr.stages.finetune import FinetuneTask, run_finetune

    root, work, recipe, summary = trained
    real, scripted = FinetuneTask.dev_metrics, [0.1, 0.9]

    def dev_metrics(self, model):
        metrics, report = real(self, model)
        if scripted:
            metrics["dev_selection"] = scripted.pop(0)
        return metrics, report

    monkeypatch.setattr(FinetuneTask, "dev_metrics", dev_metrics)
    w = tmp_path / "w"
    shutil.copytree(work / "prepare", w / "prepare")
    out = run_finetune(load_recipe(write_recipe(tmp_path, w, max_steps=4, eval_every=2, save_every=2)),
                       device="cpu", resume=False)
    assert out["best_step"] == 2 and not scripted
    folder = w / "finetune" / "checkpoints"
    saved = load_file(str(w / "finetune" / "model" / "model.safetensors"))
    at2, at4 = (load_file(str(folder / f"step_000000{k}" / "model.safetensors")) for k in (2, 4))
    assert all(saved[k].equal(at2[k]) for k in saved)
    assert not all(saved[k].equal(at4[k]) for k in saved)


def test_dev_wer_computed_when_every_dev_utterance_is_ctc_infeasible(trained, tmp_path):
    """Dev utterances too short for their transcripts still get WER/CER; only the dev loss skips them."""
    import shutil

    from lrasr.stages.finetune import run_finetune

    root, work, recipe, summary = trained
    w = tmp_path / "w"
    shutil.copytree(work / "prepare", w / "prepare")
    dev = read_manifest(w / "prepare" / "dev" / "manifest.tsv")
    dev["text"] = [" ".join(SENTENCES * 8)] * len(dev)  # ~250 labels on clips of ~1-2 s (< 100 frames)
    write_manifest(dev, w / "prepare" / "dev" / "manifest.tsv")
    rec = load_recipe(write_recipe(tmp_path, w, max_steps=2, eval_every=2, save_every=100))
    out = run_finetune(rec, device="cpu", resume=False)
    assert out["dev_utterances"] == 3 and out["dev_loss"] is None
    assert out["dev_wer"] is not None and 0.9 <= out["dev_wer"] <= 1.0 and out["dev_cer"] is not None
    with open(w / "finetune" / "metrics.csv", newline="") as handle:
        assert any(r.get("dev_wer") not in (None, "") for r in csv.DictReader(handle))  # evaluated in training
    assert (w / "finetune" / "checkpoints" / "best" / "best.json").is_file()
    with open(w / "finetune" / "dev" / "utterances.tsv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle, delimiter="\t"))) == 3  # each scored in the report


def test_reinit_layers_resets_only_the_top_transformer_layers(trained):
    """finetune.reinit_layers: the top N layers get a fresh init, everything below keeps the checkpoint."""
    import torch
    from safetensors.torch import load_file

    from lrasr.stages.finetune import build_model

    root, work, recipe, summary = trained
    tok = CharTokenizer.from_texts(SENTENCES)
    saved = load_file(str(work / "finetune" / "model" / "model.safetensors"))
    rec = load_recipe(write_recipe(root, work, init_from=str(work / "finetune" / "model"), reinit_layers=1))
    model, info = build_model(rec, tok)
    state = model.state_dict()
    top = len(model.backbone.encoder.transformer.layers) - 1
    assert info["reinit_layers"] == [top]
    prefix = f"backbone.encoder.transformer.layers.{top}."
    top_keys = [k for k in state if k.startswith(prefix)]
    assert top_keys
    for key in top_keys:
        if key.endswith("layer_norm.weight"):
            assert torch.equal(state[key], torch.ones_like(state[key])), key
        elif key.endswith("bias"):
            assert torch.equal(state[key], torch.zeros_like(state[key])), key
        else:  # fresh N(0, 0.02) linears: nothing like the trained weights
            assert not torch.allclose(state[key], saved[key]), key
            assert abs(float(state[key].std()) - 0.02) < 0.005, key
    for key, value in state.items():
        if not key.startswith(prefix):
            torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    with pytest.raises(LrasrError, match="reinit_layers is 9 but the checkpoint has"):
        build_model(load_recipe(write_recipe(root, work, init_from=str(work / "finetune" / "model"),
                                             reinit_layers=9)), tok)


def test_reinitialized_layers_train_during_freeze_steps(trained, tmp_path):
    """With reinit_layers, the fresh top layer trains with the head from update 1 (a frozen random
    layer would only feed the head noise); the pretrained layers below stay frozen until freeze_steps."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from lrasr.model.io import load_ctc_model
    from lrasr.stages.finetune import run_finetune

    root, work, recipe, summary = trained
    w = tmp_path / "w"
    shutil.copytree(work / "prepare", w / "prepare")
    rec = load_recipe(write_recipe(tmp_path, w, init_from=str(work / "finetune" / "model"), max_steps=2,
                                   freeze_steps=2, reinit_layers=1, eval_every=100, save_every=100))
    run_finetune(rec, device="cpu", resume=False)
    model, _ = load_ctc_model(w / "finetune" / "model")
    after = model.state_dict()
    saved = load_file(str(work / "finetune" / "model" / "model.safetensors"))
    top = len(model.backbone.encoder.transformer.layers) - 1
    moved = {k for k in saved if not torch.equal(saved[k], after[k])}
    fresh = {k for k in saved if k.startswith(f"backbone.encoder.transformer.layers.{top}.")}
    # the head and the re-initialized layer differ from the checkpoint; nothing else does
    assert {k.removeprefix("backbone.").split(".")[0] for k in moved - fresh} == {"aux"}
    # and the fresh layer trained: it is not just its new initialization (N(0, 0.02), zero biases)
    bias = f"backbone.encoder.transformer.layers.{top}.feed_forward.output_dense.bias"
    assert bias in after and float(after[bias].abs().max()) > 0
