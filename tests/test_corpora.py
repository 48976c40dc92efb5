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
