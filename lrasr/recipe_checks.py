"""Checks of a loaded recipe that its schema cannot make: values whose meaning lives in another module
(model presets and fields, the language's script). ``lrasr recipe validate`` runs them so a mistake is
found before the first stage starts, not when the stage that reads the value runs hours later."""

from __future__ import annotations

from lrasr.errors import LrasrError


def semantic_problems(recipe) -> list[str]:
    """One line per problem, each starting with the recipe key it is about (empty when all is well)."""
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.text.normalize import Normalizer

    problems = []
    for stage in ("pretrain", "finetune"):
        section = getattr(recipe, stage)
        if section is None:
            continue
        try:
            Wav2Vec2Config.from_recipe(section.model)
        except LrasrError as exc:
            problems.append(f"{stage}.model: {str(exc).removeprefix('recipe model: ')}")
    try:
        Normalizer(recipe.language, recipe.prepare.text)
    except LrasrError as exc:
        problems.append(f"language: {exc}")
    if recipe.finetune is not None and recipe.finetune.init_from == "pretrain" and recipe.pretrain is None:
        problems.append("finetune.init_from: 'pretrain', but the recipe has no pretrain section; add one, or set "
                        "init_from to a checkpoint or 'none'")
    if recipe.finetune is not None and not recipe.corpora.labeled:
        problems.append("finetune: no corpora.labeled to fine-tune on (its tokenizer and splits come from them); "
                        "add a labeled corpus, or remove the finetune section to pretrain only")
    problems += _unfillable_splits(recipe)
    pre = recipe.pretrain
    if pre is not None and not recipe.corpora.unlabeled and not pre.include_labeled:
        # found here, not after prepare has run
        problems.append("pretrain: no corpora.unlabeled recordings to pretrain on; add them, set "
                        "pretrain.include_labeled: true (pretrain on the labeled audio), or remove the pretrain section")
    return problems


def evaluate_splits(recipe) -> dict[str, str]:
    """The prepared splits evaluate needs, each with why: the scored one, and dev where it tunes the LM."""
    needed = {recipe.evaluate.split: "evaluate scores it"}
    if recipe.lm is not None:
        needed.setdefault("dev", "evaluate tunes the LM weights alpha/beta on it")
    return needed


def _unfillable_splits(recipe) -> list[str]:
    """A dev/test split evaluate needs whose ratio is 0 while no corpus can fill it (no ``assign_split``, no
    parquet shard or column splits, no list): evaluate would fail after training. Copying a language recipe
    and dropping Kathbath, whose valid shards were its dev, leaves exactly that."""
    if recipe.finetune is None or not recipe.corpora.labeled:
        return []
    cfg = recipe.prepare.split
    out = []
    for split, why in evaluate_splits(recipe).items():
        fillable = getattr(cfg, split) > 0 and cfg.by != "corpus"
        fillable = fillable or split in (cfg.lists or {}) or any(
            c.assign_split == split or c.format == "parquet" for c in recipe.corpora.labeled)
        if not fillable:
            out.append(f"prepare.split.{split}: nothing goes to {split} (ratio 0 and no corpus assigns it), but {why}; "
                       f"set prepare.split.{split}: 0.1, or give a corpus assign_split: {split}")
    return out
