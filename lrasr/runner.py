"""`lrasr run`: a recipe's stages in order, each skipped when its inputs are unchanged.

Each stage writes under ``<workdir>/<stage>/``. When it completes, the runner writes
``<stage>/.stamp.json`` with the fingerprint of its inputs (see ``STAGE_INPUTS``): the recipe sections
it reads, the completion tokens of the stages it consumes, the content of its input files, and
lrasr's version. A stage whose current fingerprint equals its stamp's is skipped. A rerun stage gets a
new token, so everything downstream of it reruns too, and nothing else does.

While a stage runs, ``<stage>/.running.json`` holds the fingerprint it started with and there is no
stamp. A stage killed half-way therefore reruns next time; when its inputs are the same it is called
with ``resume=True`` (its own checkpoints continue), otherwise with ``resume=False``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from lrasr import __version__
from lrasr.errors import LrasrError
from lrasr.fingerprint import MISSING, HashCache, changed_parts, combine, json_digest, select, strip_non_result
from lrasr.io import write_json_atomic
from lrasr.recipe import STAGES, Recipe, recipe_to_dict
from lrasr.runner_notes import check_eval_split, never_run_reason, stage_note

# stage -> (module, function), imported only when the stage runs. Tests replace entries with callables.
STAGE_REGISTRY: dict[str, tuple[str, str] | Callable[..., Any]] = {
    "prepare": ("lrasr.stages.prepare", "run_prepare"),
    "pretrain": ("lrasr.stages.pretrain", "run_pretrain"),
    "finetune": ("lrasr.stages.finetune", "run_finetune"),
    "lm": ("lrasr.stages.lm", "run_lm"),
    "evaluate": ("lrasr.stages.evaluate", "run_evaluate"),
}

STAMP = ".stamp.json"
RUNNING = ".running.json"


class StageNotImplemented(LrasrError):
    """A stage whose code is not part of this lrasr yet."""


@dataclass(frozen=True)
class StageInputs:
    """What one stage reads: recipe sections (dotted keys), upstream stages, files and folders."""

    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    files: tuple[Path, ...]


def finetune_uses_pretrain(recipe: Recipe) -> bool:
    """Fine-tuning starts from the recipe's own pretraining when there is one and init_from allows."""
    if recipe.pretrain is None or recipe.finetune is None:
        return False
    return recipe.finetune.init_from in (None, "pretrain")


def _init_path(value: Any) -> list[Path]:
    if value in (None, "pretrain", "none"):
        return []
    return [Path(str(value))]


def stage_inputs(recipe: Recipe, stage: str) -> StageInputs:
    """The dependency map: which settings, stages and files decide each stage's output."""
    prep = recipe.stage_dir("prepare")
    if stage == "prepare":
        files = [e.path for e in recipe.corpora.unlabeled]
        # a labeled table names audio beside it: its whole folder is the input
        for e in recipe.corpora.labeled:
            files += [e.path.parent, e.path] if e.path.is_file() else [e.path]
        files += [e.path for e in recipe.corpora.text if recipe.prepare.tokenizer.use_text_corpus]
        files += list((recipe.prepare.split.lists or {}).values())
        return StageInputs(("language", "seed", "corpora.unlabeled", "corpora.labeled", "prepare"), (),
                           tuple(files))
    if stage == "pretrain":
        assert recipe.pretrain is not None
        files = [prep / "unlabeled" / "manifest.tsv"]
        if recipe.pretrain.include_labeled:
            files.append(prep / "train" / "manifest.tsv")
        return StageInputs(("seed", "pretrain"), ("prepare",), tuple(files + _init_path(recipe.pretrain.init_from)))
    if stage == "finetune":
        assert recipe.finetune is not None
        upstream = ("prepare", "pretrain") if finetune_uses_pretrain(recipe) else ("prepare",)
        files = [prep / "train" / "manifest.tsv", prep / "dev" / "manifest.tsv", prep / "tokenizer"]
        return StageInputs(("language", "seed", "finetune", "prepare.tokenizer", "prepare.text"), upstream,
                           tuple(files + _init_path(recipe.finetune.init_from)))
    if stage == "lm":
        files = [e.path for e in recipe.corpora.text]
        # the LM reads prepare's output only through the training transcripts
        uses_train = recipe.lm is None or recipe.lm.include_train_text
        if uses_train:
            files.append(prep / "train" / "manifest.tsv")
        return StageInputs(("language", "lm", "prepare.text", "corpora.text"), ("prepare",) if uses_train else (),
                           tuple(files))
    if stage == "evaluate":
        upstream = ("prepare", "finetune") + (("lm",) if recipe.lm is not None else ())
        files = (prep / "dev" / "manifest.tsv", prep / "test" / "manifest.tsv")
        return StageInputs(("language", "seed", "decode", "evaluate", "prepare.text"), upstream, files)
    raise ValueError(f"unknown stage {stage!r}")


# -------------------------------------------------------------------------------------- stamps
def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or half-written: treated as "not done"
    return value if isinstance(value, dict) else None


def read_stamp(recipe: Recipe, stage: str) -> dict[str, Any] | None:
    stamp = read_json(recipe.stage_dir(stage) / STAMP)
    return stamp if stamp and "fingerprint" in stamp and "token" in stamp else None


def compute_fingerprint(recipe: Recipe, stage: str, stamps: dict[str, dict[str, Any] | None],
                        cache: HashCache) -> dict[str, str]:
    """The named parts of ``stage``'s input fingerprint (``combine`` gives the digest)."""
    data = recipe_to_dict(recipe)
    spec = stage_inputs(recipe, stage)
    parts = {"lrasr": __version__}
    for key in spec.sections:
        parts[f"recipe.{key}"] = json_digest(strip_non_result(select(data, key)))
    for up in spec.upstream:
        stamp = stamps.get(up)
        parts[f"stage.{up}"] = stamp["token"] if stamp else MISSING
    for path in spec.files:
        parts[f"input:{_part_name(path, recipe.workdir)}"] = input_digest(cache, path, recipe)
    return parts


def input_digest(cache: HashCache, path: Path, recipe: Recipe) -> str:
    """``cache.digest(path)``, except that a folder input holding the workdir leaves the workdir out.

    A workdir placed inside a corpus folder (the labeled table's, an unlabeled one) holds the stages'
    own outputs and ``run.json``: counted as input, they would make every run rerun prepare. The
    digest of a folder without the workdir in it is exactly ``HashCache.digest``'s, so stamps written
    before stay valid.
    """
    path = Path(path)
    work = Path(recipe.workdir).resolve()
    if not path.is_dir():
        return cache.digest(path)
    root = path.resolve()
    if root != work and root not in work.parents:
        return cache.digest(path)
    # the workdir itself, or (when the input folder *is* the workdir) what the runner and stages write
    skip = {work} | {recipe.stage_dir(s).resolve() for s in STAGES} | {work / "run.json", work / "results.json"}
    return cache.digest(path, exclude=skip)


def _part_name(path: Path, workdir: Path) -> str:
    """Files inside the workdir are named relative to it, so a moved or copied workdir stays valid."""
    try:
        return Path(path).resolve().relative_to(Path(workdir).resolve()).as_posix()
    except ValueError:
        return str(path)


def describe_change(names: Iterable[str]) -> str:
    """A short reason from changed part names, e.g. 'recipe finetune changed, prepare reran'."""
    out = []
    for name in names:
        if name.startswith("recipe."):
            out.append(f"recipe {name[7:]} changed")
        elif name.startswith("stage."):
            out.append(f"{name[6:]} reran")
        elif name.startswith("input:"):
            out.append(f"{Path(name[6:]).name} changed")
        elif name == "lrasr":
            out.append("lrasr version changed")
    return ", ".join(out[:4]) + (f" (+{len(out) - 4} more)" if len(out) > 4 else "") or "inputs changed"


# ------------------------------------------------------------------------------------ the plan
@dataclass
class StagePlan:
    stage: str
    action: str  # run | skip | before-range | after-range
    reason: str
    resume: bool = False
    parts: dict[str, str] = field(default_factory=dict)


def check_range(recipe: Recipe, from_stage: str | None, to_stage: str | None, force: Sequence[str]) -> list[str]:
    """Validate --from/--to/--force against the recipe; returns the recipe's stages."""
    stages = recipe.stages()
    for opt, name in (("--from", from_stage), ("--to", to_stage), *(("--force", f) for f in force)):
        if name is None or (opt == "--force" and name == "all"):
            continue
        if name not in STAGES:
            raise LrasrError(f"{opt} {name}: not a stage; stages are {', '.join(STAGES)}")
        if name not in stages:
            raise LrasrError(f"{opt} {name}: this recipe has no '{name}' section; its stages are {', '.join(stages)}",
                             recipe.source)
    if from_stage and to_stage and stages.index(from_stage) > stages.index(to_stage):
        raise LrasrError(f"--from {from_stage} comes after --to {to_stage}")
    lo = stages.index(from_stage) if from_stage else 0
    hi = stages.index(to_stage) if to_stage else len(stages) - 1
    for name in force:
        # forcing a stage this run will not reach would silently do nothing
        if name != "all" and not lo <= stages.index(name) <= hi:
            raise LrasrError(f"--force {name}: '{name}' is outside this run's stages ({stages[lo]} to {stages[hi]}); "
                             f"widen --from/--to to include it, or leave out --force {name}")
    return stages


def decide(recipe: Recipe, stage: str, stamps: dict[str, dict[str, Any] | None], cache: HashCache,
           forced: bool, upstream_runs: set[str]) -> StagePlan:
    """Whether ``stage`` must run now, and why."""
    spec = stage_inputs(recipe, stage)
    stamp = stamps.get(stage)
    running = read_json(recipe.stage_dir(stage) / RUNNING)
    pending = [u for u in spec.upstream if u in upstream_runs]
    if pending:
        # its inputs do not exist yet: decided without hashing them
        return StagePlan(stage, "run", f"{', '.join(pending)} will rerun first")
    parts = compute_fingerprint(recipe, stage, stamps, cache)
    digest = combine(parts)
    resume = bool(running and running.get("fingerprint") == digest and not forced)
    if forced:
        return StagePlan(stage, "run", "forced (--force)", False, parts)
    if stamp is None:
        reason = "interrupted earlier: resuming" if resume else (
            "interrupted earlier with other inputs: starting over" if running else never_run_reason(recipe, stage, (STAMP, RUNNING)))
        return StagePlan(stage, "run", reason, resume, parts)
    if stamp["fingerprint"] == digest:
        return StagePlan(stage, "skip", "up to date", False, parts)
    return StagePlan(stage, "run", describe_change(changed_parts(stamp.get("parts", {}), parts)), False, parts)


def make_plan(recipe: Recipe, from_stage: str | None = None, to_stage: str | None = None,
              force: Sequence[str] = ()) -> list[StagePlan]:
    """What a run would do, stage by stage (used by --dry-run; touches nothing but the hash cache)."""
    stages = check_range(recipe, from_stage, to_stage, force)
    cache = HashCache(recipe.workdir / ".cache" / "file_hashes.json")
    stamps = {s: read_stamp(recipe, s) for s in stages}
    plans, runs = [], set()
    lo = stages.index(from_stage) if from_stage else 0
    hi = stages.index(to_stage) if to_stage else len(stages) - 1
    for i, stage in enumerate(stages):
        if i < lo:
            plans.append(StagePlan(stage, "before-range", "done earlier" if stamps[stage] else "NOT done (needed)"))
            continue
        if i > hi:
            plans.append(StagePlan(stage, "after-range", "after --to"))
            continue
        plan = decide(recipe, stage, stamps, cache, stage in force or "all" in force, runs)
        if plan.action == "run":
            runs.add(stage)
        plans.append(plan)
    return plans


# ------------------------------------------------------------------------------------- running
def load_stage(stage: str) -> Callable[..., Any]:
    """The stage function, imported now; ``StageNotImplemented`` when its code is not there yet."""
    target = STAGE_REGISTRY[stage]
    if callable(target):
        return target
    module_name, func_name = target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == "lrasr" or missing.startswith("lrasr."):
            raise StageNotImplemented(f"{stage}: not implemented yet ({missing} is missing)") from None
        raise LrasrError(f"{stage}: needs the Python package '{missing}'; install it "
                         f"(make env, or .venv/bin/pip install {missing})") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise StageNotImplemented(f"{stage}: not implemented yet ({module_name}.{func_name} is missing)")
    return func


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a stage's randomness depends on the recipe only."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def call_stage(func: Callable[..., Any], recipe: Recipe, options: dict[str, Any]) -> Any:
    """Call a stage with the options its signature accepts (device, resume, jobs, ...)."""
    params = inspect.signature(func).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in options.items() if v is not None and (takes_all or k in params)}
    return func(recipe, **kwargs)


def write_stamp(out: Path, parts: dict[str, str], seconds: float, summary: Any) -> dict[str, Any]:
    """Mark the stage in ``out`` completed with inputs ``parts`` (a new token for downstream stages) and
    drop its running marker; returns the stamp."""
    stamp = {"fingerprint": combine(parts), "parts": parts, "token": uuid.uuid4().hex, "completed": time.time(),
             "seconds": seconds, "lrasr": __version__, "summary": _jsonable(summary)}
    write_json_atomic(out / STAMP, stamp)
    (out / RUNNING).unlink(missing_ok=True)
    return stamp


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return repr(value)


@dataclass
class RunOutcome:
    plans: list[StagePlan]
    ran: list[str]
    skipped: list[str]
    seconds: dict[str, float]
    results: dict[str, Any] | None


def run_recipe(recipe: Recipe, from_stage: str | None = None, to_stage: str | None = None,
               force: Sequence[str] = (), device: str | None = None, jobs: int | None = None,
               echo: Callable[[str], None] = print) -> RunOutcome:
    """Run the recipe's stages that are out of date, in order; returns what ran and was skipped."""
    from lrasr.recipe_checks import semantic_problems
    from lrasr.runinfo import finish_results, write_run_json

    stages = check_range(recipe, from_stage, to_stage, force)
    problems = semantic_problems(recipe)  # what `recipe validate` finds, before hours of prepare
    if problems:
        raise LrasrError("; ".join(problems), recipe.source)
    recipe.workdir.mkdir(parents=True, exist_ok=True)
    cache = HashCache(recipe.workdir / ".cache" / "file_hashes.json")
    stamps = {s: read_stamp(recipe, s) for s in stages}
    lo = stages.index(from_stage) if from_stage else 0
    hi = stages.index(to_stage) if to_stage else len(stages) - 1
    for stage in stages[:lo]:
        if stamps[stage] is None:
            raise LrasrError(f"--from {from_stage}: the earlier stage '{stage}' has not completed in "
                             f"{recipe.workdir}; run it first (leave out --from)")
        earlier = decide(recipe, stage, stamps, cache, False, set())
        if earlier.action == "run":
            echo(f"{stage}: out of date ({earlier.reason}) but before --from {from_stage}: its previous "
                 "outputs are used")
    info = write_run_json(recipe, stages, {"from": from_stage, "to": to_stage, "force": list(force)}, device)
    ran, skipped, seconds, plans = [], [], {}, []
    eval_split_checked = "evaluate" not in stages[lo:hi + 1]
    for stage in stages[lo:hi + 1]:
        if stage != "prepare" and not eval_split_checked:
            check_eval_split(recipe)  # before hours of training, not when evaluate finally starts
            eval_split_checked = True
        plan = decide(recipe, stage, stamps, cache, stage in force or "all" in force, set())
        cache.save()
        plans.append(plan)
        if plan.action == "skip":
            echo(f"{stage}: up to date, skipped")
            skipped.append(stage)
            info["stages"][stage] = {"action": "skipped"}
            continue
        func = load_stage(stage)
        out = recipe.stage_dir(stage)
        out.mkdir(parents=True, exist_ok=True)
        (out / STAMP).unlink(missing_ok=True)
        digest = combine(plan.parts)
        write_json_atomic(out / RUNNING, {"fingerprint": digest, "parts": plan.parts, "started": time.time()})
        echo(f"{stage}: running ({plan.reason})")
        seed_everything(recipe.seed)
        start = time.time()
        info["stages"][stage] = {"action": "running", "reason": plan.reason}
        write_run_json(recipe, stages, info["options"], device, info)
        try:
            summary = call_stage(func, recipe, {"device": device, "resume": plan.resume, "jobs": jobs})
        except BaseException as exc:
            # no stamp is written: the next run redoes (or resumes) this stage
            info["stages"][stage] = {"action": "failed", "reason": plan.reason, "error": str(exc)[:500],
                                     "seconds": round(time.time() - start, 2)}
            write_run_json(recipe, stages, info["options"], device, info)
            raise
        took = time.time() - start
        stamps[stage] = write_stamp(out, plan.parts, took, summary)
        ran.append(stage)
        seconds[stage] = took
        info["stages"][stage] = {"action": "ran", "reason": plan.reason, "seconds": round(took, 2)}
        note = stage_note(recipe, stage, summary)
        if note:
            echo(note)
        echo(f"{stage}: done in {took:.1f} s")
    results = finish_results(recipe, stamps) if "evaluate" in stages[: hi + 1] else None
    info["finished"] = time.time()
    write_run_json(recipe, stages, info["options"], device, info)
    return RunOutcome(plans, ran, skipped, seconds, results)
