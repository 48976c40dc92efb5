"""What `lrasr run` tells a user besides running stages: why a stage made by its own command runs again,
what the LM was built from, and an evaluate split that prepare left empty (found before training)."""

from __future__ import annotations

from typing import Any

from lrasr.errors import LrasrError
from lrasr.recipe import Recipe


def never_run_reason(recipe: Recipe, stage: str, markers: tuple[str, ...]) -> str:
    """Why a stage without a stamp runs: outputs left by a run that was not the recipe's own (`lrasr
    pretrain --max-steps`, `lrasr prepare --shard`) or by an lrasr before stage commands recorded their
    runs carry no fingerprint, so `lrasr run` cannot know what they were made from and makes them again."""
    folder = recipe.stage_dir(stage)
    if folder.is_dir() and any(p.name not in markers for p in folder.iterdir()):
        if stage in STAGE_COMMANDS:
            return (f"no completed run with the recipe's settings recorded (`lrasr {stage} RECIPE` records one; "
                    f"--max-steps, --shard or calling the stage function does not); the outputs in {folder} are "
                    "made again")
        # `lrasr lm build/tune` and `lrasr evaluate` take no recipe: only `lrasr run` records these stages
        return (f"no completed `lrasr run` of this stage recorded (files written into {folder} by other "
                "commands are not); its outputs are made again")
    return "not run yet"


STAGE_COMMANDS = ("prepare", "pretrain", "finetune")  # the stages whose own command records its run (stage_command)


def check_eval_split(recipe: Recipe) -> None:
    """``LrasrError`` when prepare left a split evaluate needs empty (one or two speakers and a speaker-disjoint
    split, ``test: 0``): the scored split, and dev where an LM's weights are tuned on it. Evaluate would
    fail only after pretraining and fine-tuning."""
    from lrasr.recipe_checks import evaluate_splits

    for split, why in evaluate_splits(recipe).items():
        manifest = recipe.stage_dir("prepare") / split / "manifest.tsv"
        try:
            with manifest.open(encoding="utf-8") as handle:
                empty = sum(1 for line in handle if line.strip()) <= 1  # the header alone
        except OSError:
            continue  # not prepared: the stage that needs it says so
        if empty:
            raise LrasrError(f"prepare left the {split} split empty and {why}, so evaluate would fail after training "
                             f"(prepare's warnings say why); set prepare.split.{split} or prepare.split.by: utterance"
                             f"{', or evaluate.split' if split == recipe.evaluate.split else ''}, then run again; "
                             "or stop before evaluate with --to finetune", manifest)


def stage_note(recipe: Recipe, stage: str, summary: Any) -> str | None:
    """One line on what a stage made when its own output says little (the lm stage prints nothing)."""
    if stage != "lm" or not isinstance(summary, dict) or "sentences" not in summary:
        return None
    if recipe.corpora.text:
        with_train = recipe.lm is None or recipe.lm.include_train_text
        what = ", ".join(str(c.path) for c in recipe.corpora.text) + (" and the train transcripts" if with_train else "")
    else:
        what = "the train transcripts only (add corpora.text, sentences of the language, for a useful LM)"
    return (f"lm: {summary.get('order')}-gram from {summary['sentences']:,} sentences "
            f"({summary.get('unigrams', 0):,} distinct words): {what}")
