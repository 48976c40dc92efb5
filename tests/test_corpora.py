"""Corpus cards: every card loads, names its sources, and `lrasr corpora list/show` print them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrasr.cli import app
from lrasr.corpora import card_names, layout_mismatch, list_cards, load_card
from lrasr.errors import LrasrError

EXPECTED = {"commonvoice", "fleurs", "indicvoices", "kathbath", "shrutilipi", "mucs2021", "openslr63", "openslr53",
            "openslr_google_indic", "smc_msc", "respin"}


def test_every_card_loads_and_names_its_sources():
    cards = list_cards()
    assert EXPECTED <= {c.name for c in cards}
    for card in cards:
        assert card.url.startswith("http"), card.name
        assert card.languages and card.layout.required, card.name
        # every headline fact has a source entry (or says unknown)
        for fact in ("licence", "size", "layout"):
            assert fact in card.sources, f"{card.name}: no source for {fact}"
        assert card.licence and card.size


def test_unknown_card_lists_known_ones():
    with pytest.raises(LrasrError, match="known cards: .*commonvoice"):
        load_card("no_such_corpus")
    with pytest.raises(LrasrError):
        load_card("../recipes/demo")


def test_bad_card_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LRASR_CARDS", str(tmp_path))
    (tmp_path / "x.yaml").write_text("name: x\ntitle: X\nurl: http://x\nlicence: l\nsize: s\nlanguages: [ml]\n"
                                     "ingest: {format: tsv}\nlayout: {required: ['a']}\ncolour: red\n")
    with pytest.raises(LrasrError, match=r"x\.yaml: colour: unknown key"):
        load_card("x")
    assert card_names() == ["x"]


def test_layout_mismatch_says_what_was_expected(tmp_path):
    card = load_card("commonvoice")
    assert "expected a folder" in layout_mismatch(card, tmp_path / "nothing.tsv")
    why = layout_mismatch(card, tmp_path)
    assert "clips/*.mp3" in why and "validated.tsv" in why
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp3").write_bytes(b"")
    (tmp_path / "validated.tsv").write_text("path\tsentence\n")
    assert layout_mismatch(card, tmp_path) is None


def test_cards_match_the_real_corpora_in_shared(shared_corpora):
    assert layout_mismatch(load_card("smc_msc"), shared_corpora / "ml_smc_msc_crowd" / "transcripts.tsv") is None
    # a Common Voice release folder (the shared sample keeps other.tsv, not validated.tsv)
    why = layout_mismatch(load_card("commonvoice"), shared_corpora / "te_commonvoice_119")
    assert why is not None and "validated.tsv" in why and "clips/*.mp3" not in why


def test_cli_list_and_show():
    cli = CliRunner()
    res = cli.invoke(app, ["corpora", "list"])
    assert res.exit_code == 0 and "kathbath" in res.output and "smc_msc" in res.output
    res = cli.invoke(app, ["corpora", "list", "--language", "kn"])
    assert res.exit_code == 0 and "kathbath" in res.output and "smc_msc" not in res.output
    res = cli.invoke(app, ["corpora", "show", "openslr63"])
    assert res.exit_code == 0
    for text in ("CC BY-SA 4.0", "line_index.tsv", "card: openslr63", "format: tsv", "sources:"):
        assert text in res.output
    res = cli.invoke(app, ["corpora", "show", "nope"])
    assert res.exit_code == 2 and "no corpus card named 'nope'" in res.output


def _kathbath_recipe(path: Path, fmt: str):
    from lrasr.recipe import Recipe

    return Recipe.model_validate({"name": "t", "language": "hi", "workdir": str(path / "work"),
                                  "corpora": {"labeled": [{"card": "kathbath", "format": fmt, "path": str(path),
                                                           "audio_column": "audio_filepath"}]}})


def test_parquet_cards_take_parquet_recipe_entries(tmp_path):
    from lrasr.corpora import card_problems

    assert {c.name for c in list_cards() if c.ingest.format == "parquet"} >= {"kathbath", "indicvoices", "shrutilipi"}
    folder = tmp_path / "hindi"
    folder.mkdir()
    # a parquet entry against the parquet card: the format agrees; the folder lacks shards, which the layout names
    problems = card_problems(_kathbath_recipe(folder, "parquet"))
    assert len(problems) == 1 and "corpora.labeled[0].path" in problems[0] and "train-*.parquet" in problems[0]
    (folder / "train-00000-of-00002.parquet").write_bytes(b"PAR1")
    problems = card_problems(_kathbath_recipe(folder, "parquet"))
    assert len(problems) == 1 and "valid-*.parquet" in problems[0] and "train-*" not in problems[0]
    (folder / "valid-00000-of-00001.parquet").write_bytes(b"PAR1")
    assert card_problems(_kathbath_recipe(folder, "parquet")) == []
    # the old export route (tsv) is now a format mismatch, even without path checks
    problems = card_problems(_kathbath_recipe(folder, "tsv"), check_layout=False)
    assert problems == ["corpora.labeled[0].format: 'tsv', but card 'kathbath' is read with format 'parquet'"]
    # the top folder of the release (all languages) is not a language folder
    assert "train-*.parquet" in layout_mismatch(load_card("kathbath"), tmp_path)


def test_card_schema_accepts_parquet_and_rejects_unknown_formats(tmp_path, monkeypatch):
    monkeypatch.setenv("LRASR_CARDS", str(tmp_path))
    base = ("name: {n}\ntitle: X\nurl: http://x\nlicence: l\nsize: s\nlanguages: [hi]\n"
            "ingest: {{format: {f}}}\nlayout: {{required: ['train-*.parquet']}}\n")
    (tmp_path / "p.yaml").write_text(base.format(n="p", f="parquet"))
    assert load_card("p").ingest.format == "parquet"
    (tmp_path / "q.yaml").write_text(base.format(n="q", f="arrow"))
    with pytest.raises(LrasrError, match=r"q\.yaml: ingest\.format"):
        load_card("q")
