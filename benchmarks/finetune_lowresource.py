"""Does pretraining help? Fine-tune `tiny` from scratch vs after `lrasr pretrain`, with 10 min and all labels.

On the real Malayalam crowd-sourced set (../shared/corpora/ml_smc_msc_crowd, about 1 h, 82 speakers),
`lrasr prepare` makes speaker-disjoint train/dev/test splits. Then:

  (b) `lrasr pretrain` on the train split's audio (its transcripts unused; dev/test audio never seen),
  for each label budget (10 min of train, all of train):
      (a) fine-tune `tiny` from scratch       (finetune.init_from: none)
      (b) fine-tune from the pretrained model (finetune.init_from: <pretrain/model>)
  with the same labeled data, steps, batch seconds and learning rate, then greedy dev/test CER/WER.

Prints a table (dev/test CER and WER, fine-tuning CPU minutes, pretraining CPU minutes for (b)) and
writes ``<workdir>/results.json``. Every stage resumes, so a killed run continues where it stopped.

    .venv/bin/python benchmarks/finetune_lowresource.py --pretrain-steps 2000 --finetune-steps 1500
    .venv/bin/python benchmarks/finetune_lowresource.py --pretrain-steps 60 --finetune-steps 60  # smoke
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


def finetune_section(args: argparse.Namespace, init_from: str) -> dict:
    return {"model": "tiny", "init_from": init_from, "max_steps": args.finetune_steps, "lr": args.lr,
            "batch_seconds": args.batch_seconds, "max_device_batch_seconds": args.batch_seconds,
            "eval_every": args.eval_every, "log_every": 10, "save_every": args.eval_every,
            "mask_time_prob": args.mask_time_prob, "mask_channel_prob": args.mask_channel_prob,
            "layerdrop": 0.0, "metric": "cer"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lrasr_bench_finetune"))
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--pretrain-batch-seconds", type=float, default=60.0)
    ap.add_argument("--finetune-steps", type=int, default=1500)
    ap.add_argument("--batch-seconds", type=float, default=60.0)
    ap.add_argument("--lr", type=float, default=5e-4, help="fine-tuning peak LR (same for both arms)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--mask-time-prob", type=float, default=0.3)
    ap.add_argument("--mask-channel-prob", type=float, default=0.1)
    ap.add_argument("--labels", default="10,all", help="comma list: minutes of labels, or 'all'")
    ap.add_argument("--threads", type=int, default=2)
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

    # (b)'s pretraining: the train split's audio only (no transcripts; dev/test audio unseen)
    pre = dict(recipe, pretrain={"model": "tiny", "max_steps": args.pretrain_steps, "include_labeled": True,
                                 "batch_seconds": args.pretrain_batch_seconds,
                                 "max_device_batch_seconds": args.pretrain_batch_seconds,
                                 "crop_max_seconds": 8.0, "log_every": 10, "save_every": 100})
    t = time.process_time()
    pre_summary = run_pretrain(load_recipe(write_recipe(work / "pretrain.yaml", pre)), device="cpu")
    pre_minutes = (time.process_time() - t) / 60
    pre_model = base / "pretrain" / "model"
    results = {"pretrain": {"steps": args.pretrain_steps, "cpu_minutes_this_run": round(pre_minutes, 2),
                            "summary": pre_summary}, "runs": []}

    for label in args.labels.split(","):
        seconds = None if label == "all" else float(label) * 60
        for arm, init in (("a: scratch", "none"), ("b: pretrained", str(pre_model))):
            name = f"{label}_{'scratch' if init == 'none' else 'pretrained'}"
            cond = work / name
            hours = make_condition_prepare(base, cond, seconds, args.seed)
            rec = dict(base_recipe(args, cond), finetune=finetune_section(args, init))
            t = time.process_time()
            summary = run_finetune(load_recipe(write_recipe(work / f"{name}.yaml", rec)), device="cpu")
            minutes = (time.process_time() - t) / 60
            test = evaluate_model(cond / "finetune" / "model", cond / "prepare" / "test" / "manifest.tsv",
                                  cond / "finetune" / "test", device="cpu")
            row = {"labels": label, "arm": arm, "train_hours": round(hours, 3), "steps": summary["steps"],
                   "dev_loss": summary.get("dev_loss"), "dev_cer": summary.get("dev_cer"), "dev_wer": summary.get("dev_wer"), "test_cer": test.cer,
                   "test_wer": test.wer, "finetune_cpu_minutes": round(minutes, 2),
                   "pretrain_cpu_minutes": round(pre_minutes, 2) if init != "none" else 0.0}
            results["runs"].append(row)
            (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
            print(json.dumps(row))

    # dev CTC loss per utterance: moves long before greedy CER leaves 100 % (all-blank output)
    print("\n| labels | arm | train h | dev loss | dev CER | dev WER | test CER | test WER | finetune CPU min | pretrain CPU min |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        loss = "-" if r.get("dev_loss") is None else f"{r['dev_loss']:.1f}"
        print(f"| {r['labels']} | {r['arm']} | {r['train_hours']} | {loss} | {pct(r['dev_cer'])} | {pct(r['dev_wer'])} | "
              f"{pct(r['test_cer'])} | {pct(r['test_wer'])} | {r['finetune_cpu_minutes']} | {r['pretrain_cpu_minutes']} |")
    print(f"\npretraining: {args.pretrain_steps} updates of {args.pretrain_batch_seconds:g} s; fine-tuning: "
          f"{args.finetune_steps} updates of {args.batch_seconds:g} s, lr {args.lr:g}; results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
