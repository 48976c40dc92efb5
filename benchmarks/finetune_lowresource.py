"""Does pretraining help? Fine-tune `tiny` from scratch vs after `lrasr pretrain`, with 10 min and all labels.

On the real Malayalam crowd-sourced set (../shared/corpora/ml_smc_msc_crowd, about 1 h, 82 speakers),
`lrasr prepare` makes speaker-disjoint train/dev/test splits. Then:

  (b) `lrasr pretrain` on the train split's audio (its transcripts unused; dev/test audio never seen),
  for each label budget (10 min of train, all of train):
      (a) fine-tune `tiny` from scratch       (finetune.init_from: none)
      (b) fine-tune from the pretrained model (finetune.init_from: <pretrain/model>)
  with the same labeled data, steps, batch seconds and learning rate, then greedy dev/test CER/WER.

Prints a table (dev/test CER and WER, fine-tuning CPU minutes, pretraining CPU minutes for (b); CPU
minutes are the training loops' process time as the stage summaries report it, summed over resumed runs) and
writes ``<workdir>/results.json``. Every stage resumes, so a killed run continues where it stopped.

    .venv/bin/python benchmarks/finetune_lowresource.py --pretrain-steps 2000 --finetune-steps 1500
    .venv/bin/python benchmarks/finetune_lowresource.py --pretrain-steps 60 --finetune-steps 60  # smoke

On a 2-core machine the two arms can run side by side, one thread each (pretraining happens only in the
process that runs the pretrained arm; the scratch process waits for nothing but prepare):

    .venv/bin/python benchmarks/finetune_lowresource.py --arms pretrained &
    .venv/bin/python benchmarks/finetune_lowresource.py --arms scratch
    .venv/bin/python benchmarks/finetune_lowresource.py --arms none   # just print the table

Pretraining settings for a run of a few thousand updates (the paper's are for 400k): lr 2e-3 and the
Gumbel temperature decay scaled so it reaches its floor half-way through the run (the paper's per-update
decay would keep it near 2.0, where the quantized targets are nearly random).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lrasr.data.manifest import audio_paths, read_manifest, write_manifest  # noqa: E402
from lrasr.evaluate import evaluate_model  # noqa: E402
from lrasr.recipe import load_recipe  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpora" / "ml_smc_msc_crowd"
ARMS = ("scratch", "pretrained", "pretrained-encoder", "pretrained-reinit")


def write_recipe(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def base_recipe(args: argparse.Namespace, workdir: Path) -> dict:
    return {
        "name": "finetune_lowresource", "language": "ml", "seed": args.seed, "workdir": str(workdir),
        "corpora": {"labeled": [{"format": "tsv", "path": str(args.corpus / "transcripts.tsv"),
                                 "audio_column": "path", "text_column": "text", "speaker_column": "speaker_id",
                                 "duration_column": "duration_s"}]},
        "prepare": {"split": {"dev": 0.1, "test": 0.1, "by": "speaker"}, "tokenizer": {"type": "char"},
                    "labeled_audio": "flac", "jobs": 2},
    }


def subset_seconds(frame, seconds: float, seed: int):
    """A seeded random subset of rows whose durations add up to at most ``seconds``."""
    order = np.random.default_rng(seed).permutation(len(frame))
    keep, total = [], 0.0
    for i in order:
        d = float(frame["duration"].iloc[i])
        if total + d <= seconds:
            keep.append(i)
            total += d
    return frame.iloc[sorted(keep)].reset_index(drop=True)


def make_condition_prepare(base: Path, target: Path, train_seconds: float | None, seed: int) -> float:
    """<target>/prepare with (a subset of) base's train split, its dev/test and tokenizer."""
    for split in ("train", "dev", "test"):
        manifest = base / "prepare" / split / "manifest.tsv"
        frame = read_manifest(manifest)
        frame["audio"] = [str(p) for p in audio_paths(frame, manifest)]
        if split == "train" and train_seconds is not None:
            frame = subset_seconds(frame, train_seconds, seed)
        if split == "train":
            hours = float(frame["duration"].sum()) / 3600
        write_manifest(frame, target / "prepare" / split / "manifest.tsv")
    tok = target / "prepare" / "tokenizer"
    if tok.exists():
        shutil.rmtree(tok)
    shutil.copytree(base / "prepare" / "tokenizer", tok)
    return hours


def finetune_section(args: argparse.Namespace, init_from: str, train_encoder: bool = False,
                     reinit_layers: int = 0) -> dict:
    extra = {"freeze_feature_encoder": False} if train_encoder else {}
    if reinit_layers:
        extra["reinit_layers"] = reinit_layers
    if args.freeze_steps is not None and init_from != "none":
        extra["freeze_steps"] = args.freeze_steps
    return {**extra, "model": "tiny", "init_from": init_from, "max_steps": args.finetune_steps, "lr": args.lr,
            "batch_seconds": args.batch_seconds, "max_device_batch_seconds": args.batch_seconds,
            "eval_every": args.eval_every, "log_every": 10, "save_every": args.eval_every,
            "mask_time_prob": args.mask_time_prob, "mask_channel_prob": args.mask_channel_prob,
            "layerdrop": 0.0, "metric": "cer"}


def print_table(work: Path, labels: list[str]) -> None:
    """The table of every finished condition under ``work`` (from each one's ``result.json``)."""
    runs = []
    for label in labels:
        for kind in ARMS:
            path = work / f"{label}_{kind}" / "result.json"
            if path.is_file():
                runs.append(json.loads(path.read_text()))
    # dev CTC loss per utterance: moves long before greedy CER leaves 100 % (all-blank output)
    print("\n| labels | arm | train h | steps | dev loss | dev CER | dev WER | test CER | test WER | finetune CPU min | pretrain CPU min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        loss = "-" if r.get("dev_loss") is None else f"{r['dev_loss']:.1f}"
        print(f"| {r['labels']} | {r['arm']} | {r['train_hours']} | {r['steps']} | {loss} | {pct(r['dev_cer'])} | "
              f"{pct(r['dev_wer'])} | {pct(r['test_cer'])} | {pct(r['test_wer'])} | {r['finetune_cpu_minutes']} | "
              f"{r['pretrain_cpu_minutes']} |")
    (work / "results.json").write_text(json.dumps({"runs": runs}, indent=2, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lrasr_bench_finetune"))
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--pretrain-batch-seconds", type=float, default=32.0)
    ap.add_argument("--pretrain-lr", type=float, default=2e-3)
    ap.add_argument("--finetune-steps", type=int, default=1500)
    ap.add_argument("--batch-seconds", type=float, default=60.0)
    ap.add_argument("--lr", type=float, default=5e-4, help="fine-tuning peak LR (same for both arms)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--mask-time-prob", type=float, default=0.3)
    ap.add_argument("--mask-channel-prob", type=float, default=0.1)
    ap.add_argument("--labels", default="10,all", help="comma list: minutes of labels, or 'all'")
    ap.add_argument("--arms", default="scratch,pretrained-reinit",
                    help="comma list of scratch, pretrained (feature encoder frozen, as in the paper), "
                         "pretrained-encoder (feature encoder fine-tuned too, as from scratch), "
                         "pretrained-reinit (as pretrained, with the top --reinit-layers transformer layers "
                         "re-initialized), or none")
    ap.add_argument("--freeze-steps", type=int, default=None,
                    help="updates before the pretrained transformer trains (default: the recipe's, 10%% of "
                         "the run); scratch never freezes")
    ap.add_argument("--reinit-layers", type=int, default=1,
                    help="top transformer layers reset in the pretrained-reinit arm (tiny has 2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    if not (args.corpus / "transcripts.tsv").is_file():
        sys.exit(f"corpus not found: {args.corpus} (../shared/corpora/ml_smc_msc_crowd)")
    torch.set_num_threads(args.threads)
    from lrasr.stages.finetune import run_finetune
    from lrasr.stages.prepare import run_prepare
    from lrasr.stages.pretrain import run_pretrain

    work = args.workdir.resolve()
    base = work / "base"
    recipe = base_recipe(args, base)
    if not (base / "prepare" / "test" / "manifest.tsv").is_file():
        t = time.process_time()
        run_prepare(load_recipe(write_recipe(work / "prepare.yaml", recipe)))
        print(f"prepare: {(time.process_time() - t) / 60:.1f} CPU min")

    labels = args.labels.split(",")
    arms = [a for a in args.arms.split(",") if a in ARMS]
    pre_minutes, pre_model = 0.0, base / "pretrain" / "model"
    if any(a.startswith("pretrained") for a in arms):
        # (b)'s pretraining: the train split's audio only (no transcripts; dev/test audio unseen)
        decay = 0.25 ** (1.0 / (0.5 * args.pretrain_steps))  # 2.0 -> floor 0.5 half-way through the run
        pre = dict(recipe, pretrain={"model": {"preset": "tiny", "latent_temp": [2.0, 0.5, decay]},
                                     "max_steps": args.pretrain_steps, "include_labeled": True,
                                     "lr": args.pretrain_lr, "batch_seconds": args.pretrain_batch_seconds,
                                     "max_device_batch_seconds": args.pretrain_batch_seconds,
                                     "crop_min_seconds": 2.0, "crop_max_seconds": 8.0,
                                     "log_every": 10, "save_every": 100})
        done = base / "pretrain" / "summary.json"
        if done.is_file() and json.loads(done.read_text()).get("steps") == args.pretrain_steps and pre_model.is_dir():
            # finished: reuse it as is (a later lrasr may have added pretraining settings that its
            # checkpoint does not record, and resuming would refuse it)
            pre_summary = json.loads(done.read_text())
        else:
            pre_summary = run_pretrain(load_recipe(write_recipe(work / "pretrain.yaml", pre)), device="cpu")
        # the training's CPU time, summed over resumed runs (None: a run from before lrasr recorded it)
        pre_minutes = pre_summary.get("cpu_minutes")
        print(f"pretraining: {json.dumps(pre_summary, default=str)[:600]}")

    for label in labels:
        seconds = None if label == "all" else float(label) * 60
        for kind in arms:
            arm, init = {"scratch": ("a: scratch", "none"), "pretrained": ("b: pretrained", str(pre_model)),
                         "pretrained-encoder": ("b': pretrained, encoder fine-tuned", str(pre_model)),
                         "pretrained-reinit": (f"b'': pretrained, top {args.reinit_layers} layer(s) reset",
                                               str(pre_model))}[kind]
            name = f"{label}_{kind}"
            cond = work / name
            if (cond / "result.json").is_file():
                continue
            hours = make_condition_prepare(base, cond, seconds, args.seed)
            rec = dict(base_recipe(args, cond),
                       finetune=finetune_section(args, init, train_encoder=kind == "pretrained-encoder",
                                                 reinit_layers=args.reinit_layers if kind == "pretrained-reinit" else 0))
            summary = run_finetune(load_recipe(write_recipe(work / f"{name}.yaml", rec)), device="cpu")
            minutes = float(summary["cpu_minutes"])  # summed over resumed runs
            test = evaluate_model(cond / "finetune" / "model", cond / "prepare" / "test" / "manifest.tsv",
                                  cond / "finetune" / "test", device="cpu")
            row = {"labels": label, "arm": arm, "train_hours": round(hours, 3), "steps": summary["steps"],
                   "dev_loss": summary.get("dev_loss"), "dev_cer": summary.get("dev_cer"),
                   "dev_wer": summary.get("dev_wer"), "test_cer": test.cer, "test_wer": test.wer,
                   "finetune_cpu_minutes": round(minutes, 2), "pretrain_cpu_minutes": None if pre_minutes is None else round(float(pre_minutes), 2),
                   "finetune": {"steps": args.finetune_steps, "batch_seconds": args.batch_seconds, "lr": args.lr}}
            (cond / "result.json").write_text(json.dumps(row, indent=2, default=str))
            print(json.dumps(row, default=str))

    print_table(work, labels)
    print(f"\npretraining: {args.pretrain_steps} updates of {args.pretrain_batch_seconds:g} s, lr {args.pretrain_lr:g}; "
          f"fine-tuning: {args.finetune_steps} updates of {args.batch_seconds:g} s, lr {args.lr:g}; "
          f"results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
