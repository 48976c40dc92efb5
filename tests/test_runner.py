"""The recipe runner's logic on a miniature recipe with small stand-in stage functions.

The stand-ins write real files where the real stages would (manifests, a results.json), so the
runner's fingerprints see real inputs change; they also record how they were called.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from lrasr import runner
from lrasr.errors import LrasrError
from lrasr.recipe import load_recipe

RECIPE = """\
name: mini
language: ml
seed: 7
workdir: work
corpora:
  unlabeled:
    - path: data/raw
  labeled:
    - format: tsv
      path: data/labeled/transcripts.tsv
  text:
    - path: data/text.txt
prepare:
  split: {dev: 0.2, test: 0.2, by: speaker}
pretrain: {model: tiny, max_steps: 3}
finetune: {max_steps: 4}
lm: {order: 2}
"""


class Fakes:
    """Stand-in stages: each appends (stage, kwargs) to ``calls`` and writes its outputs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail_once: set[str] = set()
        self.random_draws: list[float] = []

    def _record(self, stage, recipe, kwargs):
        self.calls.append((stage, kwargs))
        self.random_draws.append(random.random())
        if stage in self.fail_once:
            self.fail_once.discard(stage)
            (recipe.stage_dir(stage) / "partial.bin").write_bytes(b"half")
            raise KeyboardInterrupt  # as when the user presses Ctrl-C or the job is killed

    def prepare(self, recipe, jobs=None, shard=None, strict=False, merge=False):
        self._record("prepare", recipe, {"jobs": jobs})
        d = recipe.stage_dir("prepare")
        raw = sorted(p.name for p in recipe.corpora.unlabeled[0].path.iterdir())
        labeled = recipe.corpora.labeled[0].path.read_text(encoding="utf-8").splitlines()[1:]
        (d / "unlabeled").mkdir(parents=True, exist_ok=True)
        (d / "unlabeled" / "manifest.tsv").write_text(
            "id\taudio\tduration\n" + "".join(f"{n}\t{n}\t3600\n" for n in raw), encoding="utf-8")
        n_dev = max(1, int(len(labeled) * recipe.prepare.split.dev))
        parts = {"dev": labeled[:n_dev], "test": labeled[n_dev:2 * n_dev], "train": labeled[2 * n_dev:]}
        for split, rows in parts.items():
            (d / split).mkdir(exist_ok=True)
            (d / split / "manifest.tsv").write_text(
                "id\taudio\tduration\ttext\n" + "".join(f"{i}\t{r.split()[0]}\t1800\t{r}\n" for i, r in enumerate(rows)),
                encoding="utf-8")
        (d / "tokenizer").mkdir(exist_ok=True)
        (d / "tokenizer" / "labels.txt").write_text(recipe.prepare.tokenizer.type, encoding="utf-8")
        return {"hours": 1.0}

    def pretrain(self, recipe, device=None, resume=True, max_steps=None):
        self._record("pretrain", recipe, {"resume": resume, "device": device})
        (recipe.stage_dir("pretrain") / "model.txt").write_text(str(recipe.pretrain.max_steps))
        return {"steps": recipe.pretrain.max_steps}

    def finetune(self, recipe, device=None, resume=True, max_steps=None):
        self._record("finetune", recipe, {"resume": resume, "device": device})
        (recipe.stage_dir("finetune") / "model.txt").write_text(str(recipe.finetune.max_steps))
        return {"steps": recipe.finetune.max_steps}

    def lm(self, recipe):
        self._record("lm", recipe, {})
        (recipe.stage_dir("lm") / "lm.arpa").write_text(f"order {recipe.lm.order}")
        return {"order": recipe.lm.order}

    def evaluate(self, recipe, device=None):
        self._record("evaluate", recipe, {"device": device})
        results = {"greedy": {"wer": 0.5, "cer": 0.2, "utterances": 2},
                   "lm": {"wer": 0.25, "cer": 0.1, "utterances": 2},
                   "dev_greedy": {"wer": 0.4, "cer": 0.15, "utterances": 2}}
        (recipe.workdir / "results.json").write_text(json.dumps(results))
        return results

    def ran(self) -> list[str]:
        out = [s for s, _ in self.calls]
        self.calls.clear()
        return out


@pytest.fixture()
def mini(tmp_path, monkeypatch):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "a.wav").write_bytes(b"RIFF-not-really-audio")
    (tmp_path / "data" / "labeled").mkdir()
    (tmp_path / "data" / "labeled" / "transcripts.tsv").write_text(
        "path\ttext\tspeaker\n" + "".join(f"u{i}.wav\tword{i}\ts{i % 3}\n" for i in range(10)), encoding="utf-8")
    (tmp_path / "data" / "text.txt").write_text("some text\nmore text\n", encoding="utf-8")
    recipe_path = tmp_path / "mini.yaml"
    recipe_path.write_text(RECIPE, encoding="utf-8")
    fakes = Fakes()
    for stage in runner.STAGE_REGISTRY:
        monkeypatch.setitem(runner.STAGE_REGISTRY, stage, getattr(fakes, stage))
    return recipe_path, fakes


def _run(recipe_path, overrides=None, **kw):
    recipe = load_recipe(recipe_path, overrides)
    return runner.run_recipe(recipe, echo=lambda _: None, **kw)


def test_first_run_runs_all_and_rerun_skips_all(mini):
    path, fakes = mini
    out = _run(path)
    assert fakes.ran() == ["prepare", "pretrain", "finetune", "lm", "evaluate"]
    assert out.ran == ["prepare", "pretrain", "finetune", "lm", "evaluate"]
    for stage in out.ran:
        stamp = json.loads((path.parent / "work" / stage / ".stamp.json").read_text())
        assert stamp["fingerprint"] and stamp["lrasr"]
        assert not (path.parent / "work" / stage / ".running.json").exists()
    out2 = _run(path)
    assert fakes.ran() == []
    assert out2.skipped == ["prepare", "pretrain", "finetune", "lm", "evaluate"]


@pytest.mark.parametrize("override, expected", [
    ({"finetune.max_steps": 5}, ["finetune", "evaluate"]),
    ({"lm.order": 3}, ["lm", "evaluate"]),
    ({"pretrain.max_steps": 9}, ["pretrain", "finetune", "evaluate"]),
    ({"decode.beam_width": 7}, ["evaluate"]),
    ({"prepare.split": {"dev": 0.3, "test": 0.2}}, ["prepare", "pretrain", "finetune", "lm", "evaluate"]),
    ({"prepare.tokenizer": {"type": "sentencepiece", "vocab_size": 30}},
     ["prepare", "pretrain", "finetune", "lm", "evaluate"]),
    # speed-only settings never rerun anything
    ({"prepare.jobs": 2, "finetune.log_every": 3}, []),
])
def test_changed_setting_reruns_that_stage_and_downstream_only(mini, override, expected):
    path, fakes = mini
    _run(path)
    fakes.ran()
    out = _run(path, override)
    assert fakes.ran() == expected
    assert out.ran == expected
    # and the new state is stable
    _run(path, override)
    assert fakes.ran() == []


def test_naming_a_corpus_card_reruns_nothing(mini):
    """A card only checks a corpus folder's layout: adding one to a recipe that already ran used to rerun
    every stage (found by a user writing a first recipe, session 5)."""
    path, fakes = mini
    (path.parent / "data" / "labeled" / "audio").mkdir()
    (path.parent / "data" / "labeled" / "audio" / "u0.wav").write_bytes(b"RIFF")  # smc_msc's layout
    _run(path)
    fakes.ran()
    carded = [{"format": "tsv", "path": "data/labeled/transcripts.tsv", "card": "smc_msc"}]
    assert load_recipe(path, {"corpora.labeled": carded}).corpora.labeled[0].card == "smc_msc"
    _run(path, {"corpora.labeled": carded})
    assert fakes.ran() == []


def test_stage_commands_record_completion_for_run(mini, monkeypatch):
    """`lrasr prepare RECIPE` then `lrasr run RECIPE` made prepare again (hours on a large corpus): the
    stage commands now stamp their stage as `lrasr run` does (session 5). A run with --max-steps other than
    the recipe's (or a --shard of prepare) is not the recipe's result: it leaves no stamp, and drops an
    older one."""
    from typer.testing import CliRunner

    from lrasr.cli import app
    from lrasr.stages import finetune, prepare, pretrain

    path, fakes = mini
    for module, stage in ((prepare, "prepare"), (pretrain, "pretrain"), (finetune, "finetune")):
        monkeypatch.setattr(module, f"run_{stage}", getattr(fakes, stage))
    monkeypatch.setattr(pretrain, "summary_rows", lambda summary: list(summary.items()))
    cli = CliRunner()
    for args in (["prepare", str(path)], ["pretrain", str(path)], ["finetune", str(path)]):
        res = cli.invoke(app, args)
        assert res.exit_code == 0, res.output
    assert fakes.ran() == ["prepare", "pretrain", "finetune"]
    stamp = json.loads((path.parent / "work" / "prepare" / ".stamp.json").read_text())
    assert stamp["summary"] == {"hours": 1.0}
    out = _run(path)
    assert fakes.ran() == ["lm", "evaluate"] and out.skipped == ["prepare", "pretrain", "finetune"]
    # not the recipe's own settings: no stamp, the old one dropped; `lrasr run` redoes it and what follows
    res = cli.invoke(app, ["finetune", str(path), "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert not (path.parent / "work" / "finetune" / ".stamp.json").exists()
    fakes.ran()
    _run(path)
    assert fakes.ran() == ["finetune", "evaluate"]


def test_lm_without_train_text_does_not_follow_prepare(mini):
    path, fakes = mini
    no_train = {"lm.include_train_text": False}
    _run(path, no_train)
    fakes.ran()
    _run(path, {**no_train, "prepare.split": {"dev": 0.3, "test": 0.2}})
    assert fakes.ran() == ["prepare", "pretrain", "finetune", "evaluate"]


def test_input_content_change_reruns_but_a_touch_does_not(mini):
    path, fakes = mini
    _run(path)
    fakes.ran()
    text = path.parent / "data" / "text.txt"
    st = text.stat()
    os.utime(text, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    _run(path)
    assert fakes.ran() == []
    text.write_text("other text\n", encoding="utf-8")
    _run(path)
    assert fakes.ran() == ["lm", "evaluate"]
    (path.parent / "data" / "raw" / "b.wav").write_bytes(b"another recording")
    _run(path)
    assert fakes.ran() == ["prepare", "pretrain", "finetune", "lm", "evaluate"]


def test_from_to_and_force(mini):
    path, fakes = mini
    _run(path, to_stage="pretrain")
    assert fakes.ran() == ["prepare", "pretrain"]
    assert not (path.parent / "work" / "results.json").exists()
    _run(path, from_stage="finetune", to_stage="finetune")
    assert fakes.ran() == ["finetune"]
    _run(path, from_stage="lm")
    assert fakes.ran() == ["lm", "evaluate"]
    # an out-of-date stage before --from is not rerun, but the run says so
    said = []
    load = load_recipe(path, {"prepare.split": {"dev": 0.3, "test": 0.2}})
    runner.run_recipe(load, from_stage="evaluate", force=["evaluate"], echo=said.append)
    assert fakes.ran() == ["evaluate"]
    assert any(line.startswith("prepare: out of date (recipe prepare changed)") for line in said)
    _run(path, force=["pretrain"])
    assert fakes.ran() == ["pretrain", "finetune", "evaluate"]
    _run(path, force=["all"])
    assert fakes.ran() == ["prepare", "pretrain", "finetune", "lm", "evaluate"]


def test_range_errors(mini, tmp_path):
    path, fakes = mini
    with pytest.raises(LrasrError, match="earlier stage 'prepare' has not completed"):
        _run(path, from_stage="finetune")
    assert fakes.ran() == []
    with pytest.raises(LrasrError, match="not a stage"):
        _run(path, to_stage="decode")
    with pytest.raises(LrasrError, match="comes after"):
        _run(path, from_stage="lm", to_stage="prepare")
    no_lm = tmp_path / "nolm.yaml"
    no_lm.write_text(RECIPE.replace("lm: {order: 2}\n", ""), encoding="utf-8")
    with pytest.raises(LrasrError, match="no 'lm' section"):
        _run(no_lm, force=["lm"])


def test_recipe_without_pretrain_or_lm(mini, tmp_path):
    path, fakes = mini
    short = tmp_path / "short.yaml"
    short.write_text(RECIPE.replace("lm: {order: 2}\n", "").replace("pretrain: {model: tiny, max_steps: 3}\n", ""),
                     encoding="utf-8")
    _run(short)
    assert fakes.ran() == ["prepare", "finetune", "evaluate"]


def test_killed_stage_reruns_and_resumes(mini):
    path, fakes = mini
    fakes.fail_once.add("finetune")
    with pytest.raises(KeyboardInterrupt):
        _run(path)
    assert fakes.ran() == ["prepare", "pretrain", "finetune"]
    work = path.parent / "work"
    assert not (work / "finetune" / ".stamp.json").exists()
    assert (work / "finetune" / ".running.json").exists()
    assert json.loads((work / "run.json").read_text())["stages"]["finetune"]["action"] == "failed"
    plan = {p.stage: p for p in runner.make_plan(load_recipe(path))}
    assert plan["finetune"].action == "run" and "resuming" in plan["finetune"].reason
    _run(path)
    calls = fakes.calls[:]
    assert [s for s, _ in calls] == ["finetune", "lm", "evaluate"]
    assert calls[0][1]["resume"] is True  # same inputs: the stage continues from its checkpoints
    # killed, then the settings change: the stage starts over instead of resuming stale work
    fakes.calls.clear()
    fakes.fail_once.add("finetune")
    with pytest.raises(KeyboardInterrupt):
        _run(path, {"finetune.max_steps": 8})
    fakes.calls.clear()
    _run(path, {"finetune.max_steps": 9})
    assert fakes.calls[0] == ("finetune", {"resume": False, "device": None})


def test_dry_run_plans_without_running(mini):
    path, fakes = mini
    plans = runner.make_plan(load_recipe(path))
    assert [p.action for p in plans] == ["run"] * 5
    assert fakes.ran() == []
    assert not (path.parent / "work" / "prepare").exists()
    _run(path)
    fakes.ran()
    plans = runner.make_plan(load_recipe(path, {"lm.order": 4}))
    assert {p.stage: p.action for p in plans} == {
        "prepare": "skip", "pretrain": "skip", "finetune": "skip", "lm": "run", "evaluate": "run"}
    assert "recipe lm changed" in plans[3].reason
    assert "lm will rerun" in plans[4].reason
    assert fakes.ran() == []
    plans = runner.make_plan(load_recipe(path), from_stage="finetune", to_stage="lm")
    assert [p.action for p in plans] == ["before-range", "before-range", "skip", "skip", "after-range"]


def test_run_json_seeds_and_results(mini):
    path, fakes = mini
    out = _run(path, device="cpu")
    work = path.parent / "work"
    info = json.loads((work / "run.json").read_text())
    assert info["recipe"]["name"] == "mini" and info["seeds"]["torch"] == 7
    assert info["packages"]["torch"] and info["device"]["requested"] == "cpu"
    assert info["stages"]["finetune"]["action"] == "ran"
    assert "finished" in info
    # every stage starts from the recipe's seed: the same draw in each
    assert len(set(fakes.random_draws)) == 1
    assert fakes.calls[1][1]["device"] == "cpu"
    results = json.loads((work / "results.json").read_text())
    assert results["greedy"]["wer"] == 0.5  # evaluate's own keys are kept
    run = results["run"]
    assert run["hours"]["unlabeled"] == pytest.approx(1.0)
    assert run["hours"]["dev"] == pytest.approx(1.0) and run["hours"]["train"] == pytest.approx(3.0)
    assert run["steps"] == {"pretrain": 3, "finetune": 4} and run["model"] == "tiny"
    assert out.results["run"] == run


def test_results_rows_show_percentages():
    from lrasr.runinfo import results_rows

    rows = results_rows({"greedy": {"wer": 0.5, "cer": 0.25}, "dev_greedy": {"wer": 0.4, "cer": 0.2},
                         "lm": {"wer": 0.3, "cer": 0.1}, "run": {"hours": {"train": 0.1}, "model": "tiny",
                                                                 "steps": {"finetune": 300}}})
    table = {r[0]: r[1:] for r in rows}
    assert table["WER % greedy"] == ("40.0", "50.0")
    assert table["WER % with LM"] == ("-", "30.0")
    assert table["finetune steps"] == (300, "")
    # no LM tuned: the dev column shows finetune's greedy dev scores instead of '-'
    rows = results_rows({"greedy": {"wer": 0.5, "cer": 0.25}, "dev_greedy": None, "lm": None,
                         "run": {"finetune_dev": {"wer": 0.45, "cer": 0.2}}})
    assert {r[0]: r[1:] for r in rows}["WER % greedy"] == ("45.0", "50.0")


def test_missing_stage_module_says_not_implemented(mini, monkeypatch):
    path, fakes = mini
    monkeypatch.setitem(runner.STAGE_REGISTRY, "lm", ("lrasr.stages.no_such_stage", "run_lm"))
    with pytest.raises(runner.StageNotImplemented, match="lm: not implemented yet"):
        _run(path)
    assert fakes.ran() == ["prepare", "pretrain", "finetune"]


def test_cli_run_and_dry_run(mini):
    from typer.testing import CliRunner

    from lrasr.cli import app

    path, fakes = mini
    cli = CliRunner()
    res = cli.invoke(app, ["run", str(path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "not run yet" in res.output and fakes.ran() == []
    res = cli.invoke(app, ["run", str(path), "--to", "lm"])
    assert res.exit_code == 0, res.output
    assert fakes.ran() == ["prepare", "pretrain", "finetune", "lm"]
    res = cli.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    assert "up to date, skipped" in res.output and "WER % greedy" in res.output
    assert fakes.ran() == ["evaluate"]
    other = path.parent / "elsewhere"
    res = cli.invoke(app, ["run", str(path), "--workdir", str(other), "--to", "prepare"])
    assert res.exit_code == 0 and (other / "prepare" / ".stamp.json").exists()
    res = cli.invoke(app, ["run", str(path), "--from", "nonsense"])
    assert res.exit_code == 2 and "not a stage" in res.output
    # Ctrl-C inside a stage: one line saying how to go on, no traceback
    fakes.fail_once.add("evaluate")
    res = cli.invoke(app, ["run", str(path), "--force", "evaluate"])
    assert res.exit_code == 130 and "run the same command again" in res.output
    assert "Traceback" not in res.output


DRIVER = """\
import sys, time
from pathlib import Path
from lrasr import runner
from lrasr.recipe import load_recipe

log = Path(sys.argv[2])

def stage(name, slow=False):
    def run(recipe, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{name} resume={kwargs.get('resume')}\\n")
        out = recipe.stage_dir(name)
        (out / "out.txt").write_text(name)
        if slow and (out / "slow").exists() is False:
            (out / "slow").write_text("")
            time.sleep(60)  # killed here on the first run
        if name == "evaluate":
            (recipe.workdir / "results.json").write_text('{"greedy": {"wer": 0.5, "cer": 0.25}}')
        return {}
    return run

for name in runner.STAGE_REGISTRY:
    runner.STAGE_REGISTRY[name] = stage(name, slow=(name == "finetune"))
runner.run_recipe(load_recipe(sys.argv[1]), echo=lambda line: None)
"""


def test_sigkill_mid_stage_then_rerun_resumes(mini, tmp_path):
    """A real process killed with SIGKILL inside a stage leaves no stamp; the next run resumes it."""
    import signal
    import subprocess
    import sys
    import time

    path, _ = mini
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    log = tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, str(driver), str(path), str(log)])
    work = path.parent / "work"
    deadline = time.time() + 60
    while not (work / "finetune" / "slow").exists():
        assert proc.poll() is None and time.time() < deadline, "the driver never reached finetune"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (work / "pretrain" / ".stamp.json").exists()
    assert not (work / "finetune" / ".stamp.json").exists() and (work / "finetune" / ".running.json").exists()
    subprocess.run([sys.executable, str(driver), str(path), str(log)], check=True, timeout=120)
    calls = log.read_text().splitlines()
    assert calls == ["prepare resume=False", "pretrain resume=False", "finetune resume=False",
                     "finetune resume=True", "lm resume=False", "evaluate resume=False"]
    assert (work / "finetune" / ".stamp.json").exists() and not (work / "finetune" / ".running.json").exists()


def test_a_moved_workdir_stays_up_to_date(mini):
    import shutil

    path, fakes = mini
    _run(path)
    fakes.ran()
    shutil.move(str(path.parent / "work"), str(path.parent / "moved"))
    _run(path, {"workdir": str(path.parent / "moved")})
    assert fakes.ran() == []


def test_force_outside_from_to_is_an_error(mini):
    path, fakes = mini
    _run(path)
    fakes.ran()
    for kw in ({"from_stage": "finetune", "force": ["prepare"]}, {"to_stage": "pretrain", "force": ["lm"]},
               {"from_stage": "lm", "to_stage": "lm", "force": ["finetune", "lm"]}):
        with pytest.raises(LrasrError, match=r"--force \w+: '\w+' is outside this run's stages"):
            _run(path, **kw)
        with pytest.raises(LrasrError, match="outside this run's stages"):
            runner.make_plan(load_recipe(path), kw.get("from_stage"), kw.get("to_stage"), kw["force"])
        assert fakes.ran() == []
    # inside the range (and 'all' with a range) it still forces
    _run(path, from_stage="lm", to_stage="lm", force=["lm"])
    assert fakes.ran() == ["lm"]
    _run(path, from_stage="finetune", to_stage="finetune", force=["all"])
    assert fakes.ran() == ["finetune"]


def test_cli_force_outside_range_says_so_in_one_line(mini):
    from typer.testing import CliRunner

    from lrasr.cli import app

    path, fakes = mini
    for extra in ([], ["--dry-run"]):
        res = CliRunner().invoke(app, ["run", str(path), "--to", "pretrain", "--force", "evaluate", *extra])
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert "--force evaluate: 'evaluate' is outside this run's stages (prepare to pretrain)" in res.output
    assert fakes.ran() == []


@pytest.mark.parametrize("inside", ["data/labeled/work", "data/raw/work"])
def test_workdir_inside_a_corpus_folder_does_not_rerun_prepare(mini, inside):
    path, fakes = mini
    path.write_text(RECIPE.replace("workdir: work", f"workdir: {inside}"), encoding="utf-8")
    _run(path, to_stage="prepare")
    assert fakes.ran() == ["prepare"]
    assert (path.parent / inside / "prepare" / "train" / "manifest.tsv").is_file()  # inside the corpus folder
    _run(path, to_stage="prepare")
    assert fakes.ran() == []  # its own outputs and run.json are not inputs
    # a real change to the corpus folder still reruns it
    (path.parent / "data" / "labeled" / "u1.wav").write_bytes(b"new audio")
    (path.parent / "data" / "raw" / "b.wav").write_bytes(b"new recording")
    _run(path, to_stage="prepare")
    assert fakes.ran() == ["prepare"]


def test_folder_digest_without_workdir_is_unchanged(tmp_path, mini):
    """Stamps written before the workdir exclusion existed stay valid: same digest as HashCache.digest."""
    from lrasr.fingerprint import HashCache

    path, _ = mini
    recipe = load_recipe(path)
    folder = path.parent / "data"
    (folder / "labeled" / "sub").mkdir()
    (folder / "labeled" / "sub" / "x.wav").write_bytes(b"x")
    cache = HashCache(None)
    assert runner.input_digest(cache, folder, recipe) == cache.digest(folder)
    assert runner.input_digest(cache, folder / "text.txt", recipe) == cache.digest(folder / "text.txt")


def test_never_run_reason_names_only_commands_that_exist(mini):
    """A stage folder holding files but no stamp: the reason told users of the lm stage that `lrasr lm RECIPE`
    records a run, a command that does not exist (`lrasr lm` is build/tune, with no recipe; review V)."""
    from lrasr.runner_notes import never_run_reason

    path, _ = mini
    recipe = load_recipe(path)
    for stage in ("finetune", "lm", "evaluate"):
        recipe.stage_dir(stage).mkdir(parents=True, exist_ok=True)
        (recipe.stage_dir(stage) / "left.bin").write_bytes(b"x")
    assert "`lrasr finetune RECIPE` records one" in never_run_reason(recipe, "finetune", ())
    for stage in ("lm", "evaluate"):
        reason = never_run_reason(recipe, stage, ())
        assert f"`lrasr {stage} RECIPE`" not in reason and "no completed `lrasr run` of this stage" in reason
