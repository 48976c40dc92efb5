"""A Telugu team's first recipe: what they meet between `recipe validate` and `lrasr run`.

Real Common Voice Telugu (119 clips, 3 speakers, MP3) read in place from ../shared/corpora; each test
fails on the code before the fix it names (layout check ignoring `split:`, silent 1-3 speaker splits,
unnamed missing tokenizer characters, an unused `speaker_id` column, a multi-line card error, the
runner's 'not run yet' after `lrasr prepare`, an LM built from 104 transcripts without a word).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lrasr.errors import LrasrError, RecipeError
from lrasr.recipe import Recipe, SplitConfig, load_recipe

CV = "te_commonvoice_119"


def _cv_recipe(tmp_path: Path, shared: Path, split: str = "other_original", extra: str = "") -> Path:
    path = tmp_path / "te.yaml"
    path.write_text(f"""\
name: te-first
language: te
workdir: {tmp_path / 'work'}
corpora:
  labeled:
    - card: commonvoice
      format: commonvoice
      path: {shared / CV}
      split: {split}
prepare:
  split: {{dev: 0.1, test: 0.1, by: speaker}}
{extra}""", encoding="utf-8")
    return path


def test_card_layout_checks_the_table_the_entry_reads(shared_corpora, tmp_path):
    # the shared release folder has other_original.tsv and no validated.tsv: with split: other_original the
    # card check used to demand validated.tsv anyway, and stopped `recipe validate` and `prepare` alike
    recipe = load_recipe(_cv_recipe(tmp_path, shared_corpora))
    assert recipe.corpora.labeled[0].split == "other_original"
    with pytest.raises(RecipeError) as err:
        load_recipe(_cv_recipe(tmp_path, shared_corpora, split="other"))
    message = str(err.value)
    assert "expected other.tsv under it" in message and "validated.tsv" not in message
    assert "split: could be" in message and "other_original" in message and "\n" not in message


def test_card_show_explains_the_split_placeholder():
    from lrasr.corpora import load_card, render_card

    text = render_card(load_card("commonvoice"))
    assert "must contain: <split>.tsv (<split> = the entry's split:, default validated)" in text
    assert "{split}" not in text


def test_missing_commonvoice_table_names_only_real_split_tables(shared_corpora):
    from lrasr.data.ingest_formats import read_commonvoice
    from lrasr.data.manifest import RejectLog
    from lrasr.recipe import LabeledCorpus

    corpus = LabeledCorpus(format="commonvoice", path=shared_corpora / CV, split="validated")
    with pytest.raises(LrasrError, match="no validated.tsv") as err:
        read_commonvoice(corpus, RejectLog())
    # clip_durations.tsv and transcripts.tsv have no path+sentence columns: not splits to offer
    assert str(err.value).endswith("(set the corpus's split: to one of other_original)")


def test_three_speaker_split_is_explained_and_missing_characters_named(shared_corpora, tmp_path, capsys):
    from lrasr.stages.prepare import run_prepare

    recipe = load_recipe(_cv_recipe(tmp_path, shared_corpora))
    summary = run_prepare(recipe)["labeled"]
    assert (summary["train_speakers"], summary["dev_speakers"], summary["test_speakers"]) == (1, 1, 1)
    warnings = " ".join(summary["warnings"])
    assert "only 3 speakers for a speaker-disjoint split (per split: train 1, dev 1, test 1)" in warnings
    # 'ఓ' occurs only in a dev/test transcript: the train-text tokenizer lacks it, and now says which
    assert summary["dev_test_chars_not_in_tokenizer"] == ["'ఓ' U+0C13 TELUGU LETTER OO x1"]
    assert "lacks 'ఓ' U+0C13 TELUGU LETTER OO" in warnings
    out = capsys.readouterr()
    assert "only 3 speakers" in " ".join(out.err.split())  # shown, not only in report.json
    # paths get their own lines instead of being cut off inside the 80-column table
    assert f"tokenizer: {recipe.workdir / 'prepare' / 'tokenizer'}" in out.out
    assert "prepa…" not in out.out and "labele…" not in out.out


@pytest.mark.parametrize("speakers", [1, 2])
def test_one_or_two_speakers_leave_dev_empty_and_say_why(shared_corpora, tmp_path, speakers):
    from lrasr.stages.prepare_labeled import prepare_labeled

    source = (shared_corpora / CV / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:]
    table = tmp_path / "t.tsv"
    table.write_text("path\tspeaker\ttext\n" + "".join(
        f"{shared_corpora / CV / line.split(chr(9))[0]}\ts{i % speakers}\t{line.split(chr(9))[2]}\n"
        for i, line in enumerate(source)), encoding="utf-8")
    recipe = Recipe.model_validate({"name": "t", "language": "te", "workdir": str(tmp_path / "w"),
                                    "corpora": {"labeled": [{"format": "tsv", "path": str(table)}]}})
    summary, _ = prepare_labeled(recipe)
    assert summary["dev_utterances"] == 0
    warnings = summary["warnings"]
    assert any(w.startswith("prepare.split.dev: 10% asked for, but dev is empty: the speaker-disjoint split keeps "
                            f"each of the {speakers} speaker(s) whole") and "prepare.split.by: utterance" in w
               for w in warnings)
    if speakers == 2:  # one speaker became the test split: half the audio, not 10%
        assert summary["test_speakers"] == 1
        assert any(w.startswith("prepare.split.test: 5") and "(10% asked for)" in w for w in warnings)


def test_split_warnings_leave_corpus_and_list_splits_alone():
    from lrasr.data.splits import split_warnings

    rows = {"train": [{"duration": 5.0, "speaker": "a", "split": None}],
            "dev": [{"duration": 5.0, "speaker": "b", "split": "dev"}], "test": []}
    assert split_warnings(rows, SplitConfig(dev=0.1, test=0.0)) == []  # the corpus gave dev; test not asked
    many = {"train": [{"duration": 8.0, "speaker": f"s{i}"} for i in range(20)],
            "dev": [{"duration": 1.0, "speaker": "d"}], "test": [{"duration": 1.0, "speaker": "t"}]}
    assert split_warnings(many, SplitConfig(dev=0.01, test=0.01)) == []
    assert split_warnings(many, SplitConfig(by="corpus")) == []


def test_tsv_with_speaker_id_column_gets_named_in_the_warning(shared_corpora, tmp_path, capsys):
    from lrasr.data.ingest_formats import read_table
    from lrasr.data.manifest import RejectLog
    from lrasr.recipe import LabeledCorpus

    path = shared_corpora / CV / "transcripts.tsv"  # columns path, speaker_id, text
    items = read_table(LabeledCorpus(format="tsv", path=path), RejectLog())
    assert len(items) == 119 and all(it.speaker is None for it in items)  # not used unless named
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}: no 'speaker' column, but 'speaker_id' looks like one: set the corpus's speaker_column: speaker_id" in err
    items = read_table(LabeledCorpus(format="tsv", path=path, speaker_column="speaker_id"), RejectLog())
    assert len({it.speaker for it in items}) == 3 and "looks like one" not in capsys.readouterr().err


def test_broken_corpus_card_is_one_line_with_its_line_number(tmp_path, monkeypatch):
    from lrasr.corpora import load_card

    monkeypatch.setenv("LRASR_CARDS", str(tmp_path))
    (tmp_path / "x.yaml").write_text("name: x\nsources:\n  layout: a folder: with a colon\n", encoding="utf-8")
    with pytest.raises(LrasrError) as err:
        load_card("x")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'x.yaml'}:3: cannot read corpus card (mapping values")


def test_run_after_prepare_says_why_prepare_reruns_and_what_the_lm_was_built_from(shared_corpora, tmp_path):
    from lrasr import runner
    from lrasr.stages.prepare import run_prepare

    recipe = load_recipe(_cv_recipe(tmp_path, shared_corpora, extra="lm: {order: 2}\n"))
    run_prepare(recipe)  # `lrasr prepare` alone leaves outputs but no record of a completed run
    plan = {p.stage: p for p in runner.make_plan(recipe)}
    assert plan["prepare"].action == "run"
    assert "no completed run with the recipe's settings recorded" in plan["prepare"].reason
    assert "`lrasr prepare RECIPE` records one" in plan["prepare"].reason
    said: list[str] = []
    runner.run_recipe(recipe, echo=said.append)
    note = [s for s in said if s.startswith("lm: 2-gram from")]
    assert note and "the train transcripts only (add corpora.text" in note[0], said


def test_recipe_from_nothing_gets_the_missing_format_choices_and_the_language_code(tmp_path):
    from lrasr.recipe_checks import semantic_problems

    path = tmp_path / "r.yaml"
    path.write_text("name: x\nlanguage: te\nworkdir: w\ncorpora:\n  labeled:\n    - path: t.tsv\n", encoding="utf-8")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, check_paths=False)
    assert str(err.value) == (f"{path}: corpora.labeled[0].format: required key missing: one of tsv, csv, kaldi, "
                              "commonvoice, fairseq, nemo, folder, parquet")  # was pydantic's 'Field required'
    path.write_text("name: x\nlanguage: telugu\nworkdir: w\n", encoding="utf-8")
    assert semantic_problems(load_recipe(path)) == ["language: 'telugu' is a language name: write its code, language: te"]


def test_commonvoice_path_one_folder_too_deep_says_so(shared_corpora):
    from lrasr.data.ingest_formats import read_commonvoice
    from lrasr.data.manifest import RejectLog
    from lrasr.recipe import LabeledCorpus

    clips = shared_corpora / CV / "clips"
    with pytest.raises(LrasrError, match=f"this is the clips folder: set the corpus's path to the release folder "
                                         f"above it, {shared_corpora / CV}$"):
        read_commonvoice(LabeledCorpus(format="commonvoice", path=clips, split="other_original"), RejectLog())


def test_digits_and_english_words_rejected_with_what_to_do(shared_corpora, tmp_path):
    from lrasr.stages.prepare_labeled import prepare_labeled

    rows = (shared_corpora / CV / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:13]
    lines = []
    for i, row in enumerate(rows):
        clip, speaker, text = row.split("\t")
        text += " 2023లో" if i % 3 == 0 else (" SBI bank" if i % 3 == 1 else "")
        lines.append(f"{shared_corpora / CV / clip}\t{speaker}\t{text}\n")
    (tmp_path / "t.tsv").write_text("path\tspeaker\ttext\n" + "".join(lines), encoding="utf-8")
    recipe = Recipe.model_validate({"name": "t", "language": "te", "workdir": str(tmp_path / "w"),
                                    "corpora": {"labeled": [{"format": "tsv", "path": str(tmp_path / "t.tsv")}]}})
    summary, _ = prepare_labeled(recipe)
    advice = summary["warnings"][0]
    assert advice.startswith("8 of 12 utterances (67%) rejected for characters outside the telugu whitelist; digits:")
    assert "prepare.text.digits: keep" in advice and "Latin letters (English words)" in advice


def test_stage_that_cannot_work_is_refused_before_prepare(tmp_path):
    from lrasr import runner
    from lrasr.recipe_checks import semantic_problems

    path = tmp_path / "r.yaml"
    (tmp_path / "t.tsv").write_text("path\ttext\n", encoding="utf-8")
    base = f"name: x\nlanguage: te\nworkdir: {tmp_path / 'w'}\ncorpora: {{labeled: [{{format: tsv, path: t.tsv}}]}}\n"
    path.write_text(base + "pretrain: {max_steps: 2}\nfinetune: {init_from: pretrain}\n", encoding="utf-8")
    recipe = load_recipe(path)
    assert semantic_problems(recipe) == [
        "pretrain: no corpora.unlabeled recordings to pretrain on; add them, set pretrain.include_labeled: true "
        "(pretrain on the labeled audio), or remove the pretrain section"]
    with pytest.raises(LrasrError, match="no corpora.unlabeled recordings to pretrain on"):
        runner.run_recipe(recipe, echo=lambda _: None)  # `lrasr run` used to start prepare first
    assert not (tmp_path / "w" / "prepare").exists()
    path.write_text(base + "finetune: {init_from: pretrain}\n", encoding="utf-8")
    assert semantic_problems(load_recipe(path)) == [
        "finetune.init_from: 'pretrain', but the recipe has no pretrain section; add one, or set init_from to a "
        "checkpoint or 'none'"]
    path.write_text(base + f"finetune: {{init_from: {tmp_path / 'xlsr'}}}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=f"finetune.init_from: {tmp_path / 'xlsr'} does not exist"):
        load_recipe(path)
    path.write_text(f"name: x\nlanguage: te\nworkdir: w\ncorpora: {{unlabeled: [{{path: {tmp_path}}}]}}\n"
                    "pretrain: {max_steps: 2}\nfinetune: {max_steps: 2}\n", encoding="utf-8")
    assert semantic_problems(load_recipe(path)) == [  # finetune failed with 'no tokenizer: run `lrasr prepare` first'
        "finetune: no corpora.labeled to fine-tune on (its tokenizer and splits come from them); add a labeled "
        "corpus, or remove the finetune section to pretrain only"]


@pytest.mark.parametrize("speakers, lm, empty", [(1, "", "test"), (2, "lm: {order: 2}\n", "dev")])
def test_run_stops_after_prepare_when_a_split_evaluate_needs_is_empty(shared_corpora, tmp_path, speakers, lm, empty):
    from lrasr import runner

    source = (shared_corpora / CV / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:21]
    (tmp_path / "t.tsv").write_text("path\tspeaker\ttext\n" + "".join(
        f"{shared_corpora / CV / line.split(chr(9))[0]}\ts{i % speakers}\t{line.split(chr(9))[2]}\n"
        for i, line in enumerate(source)), encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(f"name: x\nlanguage: te\nworkdir: {tmp_path / 'w'}\ncorpora:\n  labeled:\n"
                    f"    - {{format: tsv, path: {tmp_path / 't.tsv'}}}\nfinetune: {{max_steps: 1}}\n{lm}", encoding="utf-8")
    said: list[str] = []
    why = "evaluate scores it" if empty == "test" else "evaluate tunes the LM weights alpha/beta on it"
    with pytest.raises(LrasrError, match=f"prepare left the {empty} split empty and {why}, so evaluate would fail "
                                         "after training"):
        runner.run_recipe(load_recipe(path), echo=said.append)
    assert said[-1].startswith("prepare: done") and not (tmp_path / "w" / "finetune").exists()


def test_the_first_recipe_in_recipes_readme_validates(shared_corpora, tmp_path):
    from lrasr.recipe_checks import semantic_problems

    readme = (Path(__file__).resolve().parents[1] / "recipes" / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Your first recipe", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "te-first.yaml"
    path.write_text(block, encoding="utf-8")
    recipe = load_recipe(path, check_paths=False)
    assert recipe.stages() == ["prepare", "pretrain", "finetune", "lm", "evaluate"] and not semantic_problems(recipe)
    # pointed at real data (the shared release keeps its 'other' table as other_original.tsv), paths and card pass
    path.write_text(block.replace("/data/te/recordings", str(shared_corpora / "multi_respin_samples" / "audio" / "te"))
                    .replace("/data/cv-corpus/te", str(shared_corpora / CV))
                    .replace("split: validated", "split: other_original"), encoding="utf-8")
    assert load_recipe(path).corpora.labeled[0].path == shared_corpora / CV


def test_speaker_counts_not_claimed_when_some_utterances_have_no_speaker():
    from lrasr.data.splits import split_warnings

    rows = {"train": [{"duration": 5.0, "speaker": "a"}] + [{"duration": 5.0, "speaker": ""} for _ in range(30)],
            "dev": [{"duration": 5.0, "speaker": ""} for _ in range(3)],
            "test": [{"duration": 5.0, "speaker": "b"}] + [{"duration": 5.0, "speaker": ""} for _ in range(2)]}
    assert split_warnings(rows, SplitConfig()) == []
    known = {"train": rows["train"][:1], "dev": [], "test": rows["test"][:1]}  # speakers a and b only
    assert any(w.startswith("only 2 speakers") for w in split_warnings(known, SplitConfig()))


def test_table_whose_audio_paths_start_elsewhere_gets_one_line_saying_so(tmp_path):
    from lrasr.stages.prepare_labeled import prepare_labeled

    (tmp_path / "t.tsv").write_text("path\ttext\n" + "".join(f"clips/c{i}.mp3\tనీరు ప్రవహించింది\n" for i in range(4)),
                                    encoding="utf-8")
    recipe = Recipe.model_validate({"name": "t", "language": "te", "workdir": str(tmp_path / "w"),
                                    "corpora": {"labeled": [{"format": "tsv", "path": str(tmp_path / "t.tsv")}]}})
    summary, rejects = prepare_labeled(recipe)
    assert len(rejects) == 4 and summary["utterances"] == 0
    assert summary["warnings"][0] == (
        f"4 of 4 audio files not found (first: {tmp_path / 'clips' / 'c0.mp3'}): relative audio paths are read "
        f"from the folder of the table naming them ({tmp_path}); write absolute paths or keep the table where the "
        "paths start")


def test_language_recipe_without_kathbath_is_told_to_set_a_dev_ratio():
    from lrasr.recipe_checks import semantic_problems

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "te.yaml", check_paths=False)
    assert semantic_problems(recipe) == []  # Kathbath's valid shards fill dev
    recipe.corpora.labeled = [c for c in recipe.corpora.labeled if c.card != "kathbath"]
    assert semantic_problems(recipe) == [
        "prepare.split.dev: nothing goes to dev (ratio 0 and no corpus assigns it), but evaluate tunes the LM weights "
        "alpha/beta on it; set prepare.split.dev: 0.1, or give a corpus assign_split: dev"]
    recipe.prepare.split.dev = 0.1
    assert semantic_problems(recipe) == []
    assert "Without Kathbath, set dev: 0.1" in (Path(__file__).resolve().parents[1] / "recipes" / "te.yaml").read_text(
        encoding="utf-8")


def test_clips_given_as_both_raw_recordings_and_labeled_data_are_flagged(shared_corpora, tmp_path):
    from lrasr.stages.prepare import run_prepare

    rows = (shared_corpora / CV / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:25]
    audio = [str(shared_corpora / CV / r.split("\t")[0]) for r in rows]
    (tmp_path / "t.tsv").write_text("path\tspeaker\ttext\n" + "".join(
        f"{a}\ts{i % 12}\t{r.split(chr(9))[2]}\n" for i, (a, r) in enumerate(zip(audio, rows))), encoding="utf-8")
    raw = audio[::2]  # every other labeled clip also handed over as a 'raw recording'
    recipe = Recipe.model_validate({
        "name": "t", "language": "te", "workdir": str(tmp_path / "w"), "pretrain": {"max_steps": 1},
        "corpora": {"unlabeled": [{"path": a} for a in raw], "labeled": [{"format": "tsv", "path": str(tmp_path / "t.tsv")}]},
        "prepare": {"split": {"dev": 0.25, "test": 0.25}}})
    summary = run_prepare(recipe)["labeled"]
    scored = [line.split("\t")[1] for s in ("dev", "test")
              for line in (tmp_path / "w" / "prepare" / s / "manifest.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    shared = sum(a in raw for a in scored)
    assert shared and len(scored) > shared  # the seed puts some shared clips in dev/test, not all
    assert [w for w in summary["warnings"] if "also unlabeled recordings" in w] == [
        f"{shared} of {len(scored)} dev/test utterances are also unlabeled recordings (corpora.unlabeled): pretraining "
        "hears the audio they are scored on, so dev/test scores are optimistic; keep the labeled clips out of the "
        "unlabeled folders"]
    recipe.pretrain = None  # nothing pretrains on them: no warning
    assert not [w for w in run_prepare(recipe)["labeled"]["warnings"] if "also unlabeled" in w]


def test_snr_filter_dropping_much_of_the_speech_is_said(shared_corpora, tmp_path, capsys):
    from lrasr.stages.prepare import _snr_advice, run_prepare

    raw = shared_corpora / "multi_respin_samples" / "audio" / "te"  # 20 phone-quality Telugu recordings
    recipe = Recipe.model_validate({"name": "t", "language": "te", "workdir": str(tmp_path / "w"),
                                    "corpora": {"unlabeled": [{"path": str(raw)}]},
                                    "prepare": {"filters": {"min_snr_db": 25}}})
    un = run_prepare(recipe)["unlabeled"]
    share = (un["hours_after_clipping"] - un["hours_after_snr"]) / un["hours_speech"]
    assert share > 0.2
    assert un["warnings"] == [_snr_advice(un, 25)]
    assert un["warnings"][0].startswith(f"the SNR filter dropped {share:.0%} of the speech found (")
    assert "prepare.filters.min_snr_db 25 dB); for phone or field recordings try 10" in un["warnings"][0]
    assert "the SNR filter dropped" in " ".join(capsys.readouterr().err.split())
    quiet = {"hours_speech": 1.0, "hours_after_clipping": 1.0, "hours_after_snr": 0.9}
    assert _snr_advice(quiet, 15) is None and _snr_advice({**quiet, "hours_after_snr": 0.1}, None) is None


def test_labeled_summary_shows_the_splits_side_by_side():
    from lrasr.stages.prepare import _labeled_rows, _split_rows

    summary = {"utterances": 119, "train_utterances": 104, "train_hours": 0.109, "train_speakers": 1,
               "dev_utterances": 10, "dev_hours": 0.0143, "dev_speakers": 1, "dev_oov_rate": 0.333,
               "test_utterances": 5, "test_hours": 0.0092, "test_speakers": 1, "test_oov_rate": 0.364,
               "tokenizer": "char (55 labels) in /w/prepare/tokenizer", "figure": "/w/prepare/labeled.png"}
    assert _split_rows(summary) == [("train", 104, 0.109, 1, None), ("dev", 10, 0.0143, 1, 0.333),
                                    ("test", 5, 0.0092, 1, 0.364)]
    assert dict(_labeled_rows(summary)) == {"utterances": 119, "tokenizer": "char (55 labels)"}
