"""Recipe loading: every problem reported with the file and the key's dotted path, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrasr.cli import app
from lrasr.errors import RecipeError
from lrasr.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
language: ML
workdir: out
corpora:
  unlabeled:
    - path: raw
  labeled:
    - format: tsv
      path: lab/transcripts.tsv
  text:
    - path: text.txt
finetune: {max_steps: 5}
"""


@pytest.fixture()
def recipe_dir(tmp_path: Path) -> Path:
    (tmp_path / "raw").mkdir()
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "transcripts.tsv").write_text("path\ttext\n", encoding="utf-8")
    (tmp_path / "text.txt").write_text("x\n", encoding="utf-8")
    (tmp_path / "r.yaml").write_text(GOOD, encoding="utf-8")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_paths_resolve_against_the_recipe_folder(recipe_dir, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    recipe = load_recipe(recipe_dir / "r.yaml")
    assert recipe.workdir == (recipe_dir / "out").resolve()
    assert recipe.corpora.labeled[0].path == (recipe_dir / "lab" / "transcripts.tsv").resolve()
    assert recipe.corpora.unlabeled[0].path == (recipe_dir / "raw").resolve()
    assert recipe.language == "ml"
    assert recipe.stages() == ["prepare", "finetune", "evaluate"]


def test_unknown_key_names_file_and_dotted_path(recipe_dir):
    path = write(recipe_dir, GOOD.replace("finetune: {max_steps: 5}", "finetune: {max_step: 5}"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and "finetune.max_step: unknown key (did you mean max_steps?)" in str(err.value)
    path = write(recipe_dir, GOOD.replace("      path: lab/transcripts.tsv", "      path: lab/transcripts.tsv\n      colour: red"))
    with pytest.raises(RecipeError, match=r"corpora\.labeled\[0\]\.colour: unknown key$"):  # nothing close
        load_recipe(path)
    path = write(recipe_dir, GOOD.replace("finetune: {max_steps: 5}", "finetune: {max_steps: 5}\nprepare: {splt: {dev: 0.1}}"))
    with pytest.raises(RecipeError, match=r"prepare\.splt: unknown key \(did you mean split\?\)"):
        load_recipe(path)


def test_a_recipe_without_finetune_stops_before_evaluate(recipe_dir):
    """evaluate needs finetune's model: a prepare-only (or prepare + pretrain) recipe does not list it."""
    path = write(recipe_dir, GOOD.replace("finetune: {max_steps: 5}", ""))
    assert load_recipe(path).stages() == ["prepare"]
    path = write(recipe_dir, GOOD.replace("finetune: {max_steps: 5}", "pretrain: {max_steps: 5}"))
    assert load_recipe(path).stages() == ["prepare", "pretrain"]


def test_wrong_type_and_value(recipe_dir):
    path = write(recipe_dir, GOOD.replace("max_steps: 5", "max_steps: lots"))
    with pytest.raises(RecipeError, match=r"finetune\.max_steps: .*integer"):
        load_recipe(path)
    path = write(recipe_dir, GOOD.replace("format: tsv", "format: mp3"))
    with pytest.raises(RecipeError, match=r"corpora\.labeled\[0\]\.format"):
        load_recipe(path)


def test_missing_path_and_no_check_paths(recipe_dir):
    (recipe_dir / "text.txt").unlink()
    with pytest.raises(RecipeError, match=r"corpora\.text\[0\]\.path: .*text\.txt does not exist"):
        load_recipe(recipe_dir / "r.yaml")
    assert load_recipe(recipe_dir / "r.yaml", check_paths=False).name == "t"


def test_bad_yaml_gives_the_line(recipe_dir):
    path = write(recipe_dir, GOOD + "prepare: {vad: [\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert f"{path}:" in str(err.value) and "not valid YAML" in str(err.value)


def test_cli_override_beats_the_recipe(recipe_dir):
    recipe = load_recipe(recipe_dir / "r.yaml", {"workdir": str(recipe_dir / "w2"), "finetune.max_steps": 9})
    assert recipe.workdir == recipe_dir / "w2" and recipe.finetune.max_steps == 9
    res = CliRunner().invoke(app, ["run", str(recipe_dir / "r.yaml"), "--dry-run", "--workdir", str(recipe_dir / "w3")])
    assert res.exit_code == 0, res.output
    assert str(recipe_dir / "w3") in res.output.replace("\n", "")


def test_validate_command_reports_without_traceback(recipe_dir):
    path = write(recipe_dir, GOOD.replace("finetune: {max_steps: 5}", "finetune: {max_step: 5}"))
    res = CliRunner().invoke(app, ["recipe", "validate", str(path)])
    assert res.exit_code == 2
    assert "finetune.max_step: unknown key" in res.output and "Traceback" not in res.output


def test_card_reference_checked(recipe_dir):
    text = GOOD.replace("    - format: tsv\n      path: lab/transcripts.tsv",
                        "    - format: tsv\n      card: smc_msc\n      path: lab/transcripts.tsv")
    path = write(recipe_dir, text)
    # the folder has no audio/ beside the table: the message says what the card expects
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "corpora.labeled[0].path" in msg and "card 'smc_msc'" in msg and "audio/*" in msg
    (recipe_dir / "lab" / "audio").mkdir()
    (recipe_dir / "lab" / "audio" / "a.opus").write_bytes(b"x")
    assert load_recipe(path).corpora.labeled[0].card == "smc_msc"
    # the format must be the one the card's corpus is read with
    with pytest.raises(RecipeError, match=r"corpora\.labeled\[0\]\.format: 'kaldi', but card 'smc_msc'"):
        load_recipe(write(recipe_dir, text.replace("format: tsv", "format: kaldi")))
    # an unknown card is reported even without path checks
    with pytest.raises(RecipeError, match=r"corpora\.labeled\[0\]\.card: no corpus card named 'nosuch'"):
        load_recipe(write(recipe_dir, text.replace("smc_msc", "nosuch")), check_paths=False)


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path, check_paths=False)
    assert recipe.name and recipe.finetune is not None and "evaluate" in recipe.stages()
    if path.stem not in ("demo", "ml-smc"):
        assert recipe.name == recipe.language == path.stem
        assert all(e.card for e in recipe.corpora.labeled), "language recipes point at corpus cards"


def test_demo_recipe_is_the_issue_text():
    """recipes/demo.yaml must keep every key of issue 2's example (keys may only be added)."""
    import yaml

    expected = yaml.safe_load("""
name: demo
language: ml
seed: 1234
workdir: ../exp/demo
corpora:
  unlabeled:
    - path: ../corpora/demo/raw
  labeled:
    - format: tsv
      path: ../corpora/demo/labeled/transcripts.tsv
  text:
    - path: ../corpora/demo/text.txt
prepare:
  vad: {aggressiveness: 2, frame_ms: 30, padding_ms: 300, min_seconds: 1.0, max_seconds: 15.0}
  filters: {min_snr_db: 10}
  split: {dev: 0.1, test: 0.1, by: speaker}
  tokenizer: {type: char}
pretrain: {model: tiny, max_steps: 200}
finetune: {max_steps: 300}
lm: {order: 3}
decode: {beam_width: 50}
""")
    actual = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text(encoding="utf-8"))

    def contains(big, small, where="") -> None:
        if isinstance(small, dict):
            for key, value in small.items():
                assert key in big, f"{where}{key} missing"
                contains(big[key], value, f"{where}{key}.")
        elif isinstance(small, list):
            assert len(big) == len(small)
            for i, (b, s) in enumerate(zip(big, small)):
                contains(b, s, f"{where}[{i}].")
        else:
            assert big == small, f"{where}: {big!r} != {small!r}"

    contains(actual, expected)


def test_ml_smc_reads_the_shared_corpus_in_place(shared_corpora):
    recipe = load_recipe(REPO / "recipes" / "ml-smc.yaml")
    table = recipe.corpora.labeled[0].path
    assert table == (shared_corpora / "ml_smc_msc_crowd" / "transcripts.tsv").resolve()
    header = table.read_text(encoding="utf-8").splitlines()[0].split("\t")
    entry = recipe.corpora.labeled[0]
    for column in (entry.audio_column, entry.text_column, entry.speaker_column, entry.duration_column):
        assert column in header
    assert not str(recipe.workdir).startswith(str(shared_corpora))
