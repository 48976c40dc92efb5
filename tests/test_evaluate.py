"""lrasr.evaluate: WER/CER against hand-computed values, Indic normalization, reports."""

from __future__ import annotations

import json
import math
import unicodedata

import pytest

from lrasr.data.manifest import read_manifest
from lrasr.errors import LrasrError
from lrasr.evaluate import EMPTY, score, write_report


def test_hand_computed_wer_cer_and_breakdown():
    refs = ["the cat sat", "hello world"]
    hyps = ["the bat sat down", "hello"]
    rep = score(refs, hyps, ids=["u1", "u2"], speakers=["s1", "s2"])
    # u1: cat->bat (S) + down (I) = 2 of 3 words; chars: c->b + " down" inserted = 6 of 11
    # u2: world deleted = 1 of 2 words; chars: " world" deleted = 6 of 11
    assert (rep.words, rep.word_errors) == (5, 3)
    assert (rep.substitutions, rep.deletions, rep.insertions) == (1, 1, 1)
    assert rep.wer == pytest.approx(3 / 5)
    assert (rep.chars, rep.char_errors) == (22, 12)
    assert rep.cer == pytest.approx(12 / 22)
    assert [(r.id, r.word_errors, r.char_errors) for r in rep.rows] == [("u1", 2, 6), ("u2", 1, 6)]
    spk = {s.speaker: s for s in rep.speakers}
    assert spk["s1"].wer == pytest.approx(2 / 3) and spk["s2"].wer == pytest.approx(1 / 2)
    assert spk["s1"].cer == pytest.approx(6 / 11)
    assert ("c", "b", 1) in rep.confusions
    deleted = sum(c for r, h, c in rep.confusions if h == EMPTY)
    inserted = sum(c for r, h, c in rep.confusions if r == EMPTY)
    assert (deleted, inserted) == (6, 5)


def test_perfect_and_empty_sides():
    rep = score(["a b", ""], ["a b", ""])
    assert rep.wer == 0 and rep.cer == 0
    rep = score(["a b"], [""])
    assert rep.wer == 1.0 and rep.deletions == 2
    rep = score([""], [""])
    assert rep.wer == 0.0  # nothing to say, nothing said
    assert math.isnan(score([""], ["x"]).wer)  # insertions against nothing: undefined, not 0 or inf
    assert score([], []).utterances == 0
    with pytest.raises(LrasrError, match="pair up"):
        score(["a"], [])


def test_indic_nfc_nfd_pair_scores_zero():
    # Malayalam "കൊടി" with ൊ as one code point (NFC) vs. െ + ാ (NFD); Hindi ज़ with and without
    # the precomposed nukta letter (U+095B is composition-excluded: NFC splits it)
    ml_nfc = "കൊടി മരം"
    ml_nfd = unicodedata.normalize("NFD", ml_nfc)
    hi_a, hi_b = "\u095b\u0930\u093e", "\u091c\u093c\u0930\u093e"
    assert ml_nfc != ml_nfd and hi_a != hi_b
    rep = score([ml_nfc, hi_a], [ml_nfd, hi_b])
    assert rep.word_errors == 0 and rep.char_errors == 0 and rep.wer == 0 and rep.cer == 0
    # whitespace differences are not errors either
    assert score(["a  b "], [" a b"]).cer == 0


def test_language_normalizer_applies_to_both_sides():
    class Lower:
        def normalize(self, text: str) -> str:
            return text.lower().replace(",", "")

    rep = score(["Hello, World"], ["hello world"], normalizer=Lower())
    assert rep.wer == 0
    assert score(["Hello, World"], ["hello world"]).wer == 1.0  # without it: both words differ


def test_project_normalizer_when_available():
    normalize = pytest.importorskip("lrasr.text.normalize")
    from lrasr.recipe import TextConfig

    norm = normalize.Normalizer("ml", TextConfig())
    ref = "കൊടി, മരം."
    hyp = unicodedata.normalize("NFD", "കൊടി മരം")
    rep = score([ref], [hyp], normalizer=norm)
    assert rep.wer == 0 and rep.cer == 0


def test_write_report_files(tmp_path):
    rep = score(["the cat sat", "hello world"], ["the bat sat", "hello world"], ids=["u1", "u2"],
                speakers=["s1", "s1"])
    paths = write_report(rep, tmp_path / "eval")
    utt = read_manifest(paths["utterances"], required=("id", "speaker", "reference", "hypothesis",
                                                       "word_errors", "char_errors"))
    assert list(utt["id"]) == ["u1", "u2"]
    assert list(utt["word_errors"].astype(int)) == [1, 0]
    assert list(utt["hypothesis"]) == ["the bat sat", "hello world"]
    spk = read_manifest(paths["speakers"], required=("speaker", "wer", "cer"))
    assert list(spk["speaker"]) == ["s1"]
    conf = read_manifest(paths["confusions"], required=("reference", "hypothesis", "count"))
    assert conf.iloc[0]["reference"] == "c" and conf.iloc[0]["hypothesis"] == "b"
    summary = json.loads(paths["summary"].read_text())
    assert summary["wer"] == pytest.approx(1 / 5) and summary["utterances"] == 2
    # an empty report still writes headers
    empty = write_report(score([], []), tmp_path / "empty")
    assert empty["utterances"].read_text().startswith("id\tspeaker\treference")
