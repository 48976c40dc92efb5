"""alpha/beta tuning over cached log-probabilities, and the recipe's evaluate stage end to end."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest

from lrasr.decode.beam import BeamDecoder
from lrasr.decode.tune import SplitLogits, tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_decode_beam import FRAMES_PER_TOKEN, _misspelled_fixture, logprobs_for, ml_setup  # noqa: E402,F401
from test_transcribe import make_model_dir  # noqa: E402

pytest.importorskip("kenlm")


@pytest.mark.shared
def test_tune_prefers_the_lm_when_it_fixes_errors(ml_setup):
    texts, tok, lm = ml_setup
    cases = _misspelled_fixture(texts, tok, n=8, seed=5)
    # utterance 0 is split into two chunks, as a long recording would be
    ids0 = cases[0][1]
    first = logprobs_for(ids0, len(tok.labels), cases[0][2])
    cut = ids0.index(tok.labels.index("|"))  # at the first word boundary (the delimiter is dropped)
    second_start = (cut + 1) * FRAMES_PER_TOKEN
    split = [(0.0, first[: cut * FRAMES_PER_TOKEN]), (second_start * 0.02, first[second_start:])]
    chunks = [split] + [[(0.0, logprobs_for(ids, len(tok.labels), conf))] for _, ids, conf in cases[1:]]
    cached = SplitLogits([f"u{i}" for i in range(8)], [t for t, _, _ in cases], ["s"] * 8, chunks)
    with BeamDecoder(tok, lm, beam_width=30, processes=2) as decoder:
        result = tune(cached, tok, decoder, alphas=[0.0, 0.5, 1.0], betas=[0.0, 1.0])
    assert len(result.grid) == 6
    assert result.dev_greedy["wer"] > 0.1 and result.dev_lm["wer"] < result.dev_greedy["wer"]
    assert result.alpha > 0.0  # with alpha = 0 the LM cannot help
    assert result.dev_lm["wer"] == min(g["wer"] for g in result.grid)
    assert result.table_rows()[0][0] == "greedy" and result.dev_lm["utterances"] == 8
    # each grid point is what a decoder built with those weights gives (the per-call weights reach
    # the search; beta changes nothing on these peaked log-probs: the stand-in test below covers it)
    from lrasr.decode.tune import beam_texts, score_texts

    for point in result.grid:
        with BeamDecoder(tok, lm, alpha=point["alpha"], beta=point["beta"], beam_width=30) as fixed:
            own = score_texts(cached, beam_texts(cached, fixed))
        assert (point["wer"], point["cer"]) == pytest.approx((own.wer, own.cer)), point
    # the two chunks of utterance 0 are merged back into one text, as the unsplit utterance decodes
    from lrasr.decode.tune import greedy_texts

    assert greedy_texts(cached, tok)[0] == greedy_texts(
        SplitLogits(["u0"], [cases[0][0]], ["s"], [[(0.0, first)]]), tok)[0]


def test_tune_picks_lowest_wer_then_cer_then_smallest_weights():
    """The selection rule on a grid with ties: lowest WER; among those the lowest CER; among those the
    smallest |alpha| + |beta|. (A stand-in decoder gives each grid point a fixed transcript; the real
    decoder's grid is checked above.)"""
    import numpy as np

    from lrasr.decode.types import Hypothesis
    from lrasr.text.tokenizer import CharTokenizer

    ref = "a b c d"
    by_weights = {(1.0, 0.0): "a b c dd",  # WER 1/4, CER 1/7 -- tied with (0.5, 0), larger weights
                  (1.0, 1.0): "a b", (0.5, 0.0): "a b c dd", (0.5, 1.0): "x y c d",
                  (0.0, 0.0): "a b c",  # WER 1/4 with the smallest weights, but CER 2/7
                  (0.0, 1.0): ""}

    class StandIn:
        def decode_batch(self, logps, alpha=None, beta=None):
            return [Hypothesis(by_weights[(alpha, beta)]) for _ in logps]

    tok = CharTokenizer.from_texts([ref])
    lp = np.full((4, len(tok.labels)), -5.0, np.float32)
    lp[np.arange(4), [tok.labels.index(c) for c in "a|bb"]] = 0.0  # greedy: "a b"
    cached = SplitLogits(["u0"], [ref], ["s"], [[(0.0, lp)]])
    result = tune(cached, tok, StandIn(), alphas=[1.0, 0.5, 0.0], betas=[0.0, 1.0])
    assert (result.alpha, result.beta) == (0.5, 0.0)
    assert result.dev_lm == {"wer": 0.25, "cer": pytest.approx(1 / 7), "utterances": 1}
    assert result.dev_greedy["wer"] == 0.5
    # every grid point scored with its own transcript (both weights reach the decoder)
    assert [(g["alpha"], g["beta"], g["wer"]) for g in result.grid] == [
        (1.0, 0.0, 0.25), (1.0, 1.0, 0.5), (0.5, 0.0, 0.25), (0.5, 1.0, 0.5), (0.0, 0.0, 0.25), (0.0, 1.0, 1.0)]


def _write_split(workdir: Path, split: str, rows: list[tuple[Path, str]]) -> None:
    from lrasr.data.manifest import write_manifest

    write_manifest([{"id": f"{split}{i}", "audio": str(p), "duration": 1.0, "text": t, "speaker": f"spk{i % 2}"}
                    for i, (p, t) in enumerate(rows)], workdir / "prepare" / split / "manifest.tsv")


@pytest.mark.shared
def test_run_evaluate_writes_results_and_tunes_first(shared_corpora, tmp_path):
    from lrasr.audio.decode import load
    from lrasr.data.manifest import read_manifest
    from lrasr.decode.lm import build_lm
    from lrasr.recipe import Recipe, TextConfig
    from lrasr.stages.evaluate import run_evaluate
    from lrasr.text.normalize import Normalizer

    folder = shared_corpora / "ml_smc_msc_crowd"
    with open(folder / "transcripts.tsv", encoding="utf-8") as handle:
        rows = [(folder / r["path"], r["text"]) for r in csv.DictReader(handle, delimiter="\t")]
    normalizer = Normalizer("ml", TextConfig())
    rows = [(p, normalizer.normalize(t)) for p, t in rows]
    recipe = Recipe.model_validate({
        "name": "t", "language": "ml", "workdir": str(tmp_path / "exp"), "lm": {"order": 3},
        "decode": {"beam_width": 8, "tune_alpha": [0.0, 0.5], "tune_beta": [0.0, 1.0]}})
    work = recipe.workdir
    _write_split(work, "dev", rows[:4])
    _write_split(work, "test", rows[4:9] + [(tmp_path / "missing.wav", "ഒന്ന്")])
    make_model_dir(work / "finetune" / "model", [t for _, t in rows])
    build_lm([t for _, t in rows], work / "lm", order=3, normalizer=normalizer, language="ml")
    summary = run_evaluate(recipe, device="cpu")
    results = json.loads((work / "results.json").read_text(encoding="utf-8"))
    for key in ("greedy", "lm", "dev_greedy", "dev_lm"):
        assert set(results[key]) >= {"wer", "cer", "utterances"}, key
        assert results[key]["wer"] >= 0.0 and results[key]["cer"] >= 0.0
    assert results["greedy"]["utterances"] == results["lm"]["utterances"] == 6
    assert results["dev_lm"]["utterances"] == 4 and summary["unreadable"] == 1
    tuned = json.loads((work / "lm" / "tuned.json").read_text(encoding="utf-8"))
    assert (tuned["alpha"], tuned["beta"]) == (results["lm"]["alpha"], results["lm"]["beta"])
    assert len(tuned["grid"]) == 4
    utts = (work / "evaluate" / "lm" / "utterances.tsv").read_text(encoding="utf-8").splitlines()
    assert len(utts) == 7 and utts[0].startswith("id\t")
    assert (work / "evaluate" / "greedy" / "summary.json").is_file()
    # the numbers are those of the test split decoded each way, recomputed here from the model and
    # LM folders (the clips are shorter than one chunk): greedy, then beam + LM at the tuned weights
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.decode.greedy import greedy_decode
    from lrasr.evaluate import score

    acoustic = AcousticModel(work / "finetune" / "model", device="cpu")
    logps = acoustic.log_probs([load(p) for p, _ in rows[4:9]])
    refs = [t for _, t in rows[4:9]] + ["ഒന്ന്"]
    own_greedy = [greedy_decode(lp, acoustic.tokenizer) for lp in logps] + [""]
    with BeamDecoder(acoustic.tokenizer, work / "lm", alpha=tuned["alpha"], beta=tuned["beta"],
                     beam_width=8) as decoder:
        own_lm = [decoder.decode(lp).text for lp in logps] + [""]
    assert own_lm != own_greedy  # the LM changes some transcript: the two results can be told apart
    for key, hyps in (("greedy", own_greedy), ("lm", own_lm)):
        expected = score(refs, hyps, normalizer)
        assert (results[key]["wer"], results[key]["cer"]) == pytest.approx((expected.wer, expected.cer)), key
        listed = read_manifest(work / "evaluate" / key / "utterances.tsv", required=("hypothesis",))
        assert list(listed["hypothesis"].fillna("")) == [r.hypothesis for r in expected.rows], key
    # dev metrics are the tuning's, each under its own name
    assert (results["dev_greedy"], results["dev_lm"]) == (tuned["dev_greedy"], tuned["dev_lm"])
    assert results["dev_lm"]["wer"] == min(g["wer"] for g in tuned["grid"])
    # `lrasr lm tune RECIPE` re-tunes from the recipe file and prints the greedy-vs-LM table
    import yaml
    from typer.testing import CliRunner

    from lrasr.cli import app

    (work / "lm" / "tuned.json").unlink()
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump({"name": "t", "language": "ml", "workdir": str(work), "lm": {"order": 3},
                                           "decode": {"beam_width": 4, "tune_alpha": [0.5], "tune_beta": [1.0]}}),
                           encoding="utf-8")
    res = CliRunner().invoke(app, ["lm", "tune", str(recipe_file), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "greedy" in res.output and "beam + LM" in res.output
    assert json.loads((work / "lm" / "tuned.json").read_text(encoding="utf-8"))["alpha"] == 0.5
    # evaluate reuses weights tuned for this model, LM and search grid ...
    tuned_file = work / "lm" / "tuned.json"
    same_search = recipe.model_copy(update={"decode": recipe.decode.model_copy(
        update={"beam_width": 4, "tune_alpha": [0.5], "tune_beta": [1.0]})})
    before = tuned_file.stat().st_mtime_ns
    run_evaluate(same_search, device="cpu")
    assert tuned_file.stat().st_mtime_ns == before
    assert json.loads((work / "results.json").read_text(encoding="utf-8"))["lm"]["alpha"] == 0.5
    # ... tunes again when the search grid changed ...
    run_evaluate(recipe, device="cpu")
    assert len(json.loads(tuned_file.read_text(encoding="utf-8"))["grid"]) == 4
    # ... and once the model has changed
    before = tuned_file.stat().st_mtime_ns
    weights = work / "finetune" / "model" / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    run_evaluate(recipe, device="cpu")
    assert tuned_file.stat().st_mtime_ns != before
    assert len(json.loads(tuned_file.read_text(encoding="utf-8"))["grid"]) == 4
    # ... or the LM, or the dev split (each alone)
    for changed in (work / "lm" / "lm.bin", work / "prepare" / "dev" / "manifest.tsv"):
        before = tuned_file.stat().st_mtime_ns
        os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
        run_evaluate(recipe, device="cpu")
        assert tuned_file.stat().st_mtime_ns != before, changed


def test_run_evaluate_without_prepare_says_what_to_do(tmp_path):
    from lrasr.errors import StageError
    from lrasr.recipe import Recipe
    from lrasr.stages.evaluate import run_evaluate

    recipe = Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(tmp_path)})
    with pytest.raises(StageError, match="run the prepare stage first"):
        run_evaluate(recipe)


def test_evaluate_and_tune_run_on_the_recipes_device(tmp_path, monkeypatch):
    """A recipe that trains on the CPU (finetune.device: cpu, e.g. the GPU is busy) is evaluated and tuned
    there too; it used to be 'auto' (the GPU) unless --device was given. --device still wins."""
    import lrasr.decode.acoustic as acoustic_mod
    from lrasr.decode.tune import tune_recipe
    from lrasr.recipe import Recipe
    from lrasr.stages.evaluate import run_evaluate

    asked = []

    class Stop(Exception):
        pass

    def fake_model(folder, device=None, **kwargs):
        asked.append(device)
        raise Stop

    monkeypatch.setattr(acoustic_mod, "AcousticModel", fake_model)
    recipe = Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(tmp_path),
                                    "finetune": {"device": "cpu"}})
    for split in ("dev", "test"):
        (tmp_path / "prepare" / split).mkdir(parents=True)
        (tmp_path / "prepare" / split / "manifest.tsv").write_text("id\taudio\ttext\n", encoding="utf-8")
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "lm.arpa").write_text("", encoding="utf-8")
    for call in (lambda: run_evaluate(recipe), lambda: tune_recipe(recipe), lambda: run_evaluate(recipe, "cuda:1")):
        with pytest.raises(Stop):
            call()
    assert asked == ["cpu", "cpu", "cuda:1"]
