"""Greedy and KenLM beam decoding on log-probabilities built to be ambiguous between a right and a
misspelled word: the LM (built from real Malayalam transcripts) must fix the spelling."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

from lrasr.decode.beam import BeamDecoder
from lrasr.decode.greedy import best_path, greedy_decode, greedy_hypothesis
from lrasr.decode.lm import build_lm, normalized_lines
from lrasr.errors import LrasrError

pytest.importorskip("kenlm")
pytest.importorskip("pyctcdecode")
FRAMES_PER_TOKEN = 3


def _wer(refs, hyps):
    import jiwer

    return jiwer.wer(refs, hyps)


def logprobs_for(ids: list[int], vocab: int, confusions: dict[int, int] | None = None) -> np.ndarray:
    """[F, V] log-probs: each token peaks on one frame followed by two blank frames; at the positions
    in ``confusions`` a wrong token is slightly MORE likely than the right one (greedy picks it)."""
    lp = np.full((len(ids) * FRAMES_PER_TOKEN, vocab), -9.0, dtype=np.float32)
    for k, tok in enumerate(ids):
        f = k * FRAMES_PER_TOKEN
        lp[f, tok] = -0.05
        lp[f + 1, 0] = lp[f + 2, 0] = -0.05
        if confusions and k in confusions:
            lp[f, tok], lp[f, confusions[k]] = np.log(0.42), np.log(0.55)
    return lp


@pytest.fixture(scope="module")
def ml_setup(shared_corpora, tmp_path_factory):
    from lrasr.recipe import TextConfig
    from lrasr.text.normalize import Normalizer
    from lrasr.text.tokenizer import CharTokenizer

    with open(shared_corpora / "ml_smc_msc_crowd" / "transcripts.tsv", encoding="utf-8") as handle:
        raw = [row["text"] for row in csv.DictReader(handle, delimiter="\t")]
    normalizer = Normalizer("ml", TextConfig())
    texts = list(normalized_lines(raw, normalizer))
    out = tmp_path_factory.mktemp("lm") / "lm"
    build_lm(texts, out, order=3, normalizer=normalizer, language="ml")
    return texts, CharTokenizer.from_texts(texts), out


def _misspelled_fixture(texts, tok, n=12, seed=0):
    """Sentences with one letter of one word swapped for another so that the word leaves the vocabulary."""
    vocab = {w for t in texts for w in t.split()}
    letters = [c for c in tok.labels[3:] if c.isalpha()]
    rng = random.Random(seed)
    cases = []
    for text in rng.sample([t for t in texts if 2 <= len(t.split()) <= 5], 60):
        ids = tok.encode(text)
        positions = [i for i, t in enumerate(ids) if tok.labels[t].isalpha()]
        rng.shuffle(positions)
        for pos in positions:
            wrong = tok.labels.index(rng.choice(letters))
            bad = tok.decode(ids[:pos] + [wrong] + ids[pos + 1:])
            changed = [w for w, r in zip(bad.split(), text.split()) if w != r]
            if wrong != ids[pos] and changed and changed[0] not in vocab:
                cases.append((text, ids, {pos: wrong}))
                break
        if len(cases) == n:
            break
    return cases


@pytest.mark.shared
def test_lm_fixes_spelling_that_greedy_gets_wrong(ml_setup):
    texts, tok, lm = ml_setup
    cases = _misspelled_fixture(texts, tok)
    assert len(cases) == 12
    logps = [logprobs_for(ids, len(tok.labels), conf) for _, ids, conf in cases]
    refs = [text for text, _, _ in cases]
    greedy = [greedy_decode(lp, tok) for lp in logps]
    assert _wer(refs, greedy) > 0.1  # the fixture really misleads greedy decoding
    with BeamDecoder(tok, lm, alpha=0.5, beta=1.0, beam_width=50, processes=2) as decoder:
        beam = [h.text for h in decoder.decode_batch(logps)]
        serial = [decoder.decode(lp).text for lp in logps]
    assert beam == serial  # the process pool changes nothing but speed
    assert _wer(refs, beam) <= _wer(refs, greedy)
    assert _wer(refs, beam) < 0.5 * _wer(refs, greedy), list(zip(refs, beam))
    # without an LM the beam search finds the same best path as greedy
    no_lm = BeamDecoder(tok, None, beam_width=20)
    assert [no_lm.decode(lp).text for lp in logps[:4]] == greedy[:4]


@pytest.mark.shared
def test_beta_rewards_words_and_reaches_the_search(ml_setup):
    """beta is a bonus per word: where the word delimiter is fairly likely after every letter
    (0.4), a large beta with a weak LM splits the sentence into letters; beta 0 does not. The
    weights given per call are the ones used (the tuning grid relies on it), in either order."""
    texts, tok, lm = ml_setup
    text = next(t for t in texts if 3 <= len(t.split()) <= 4)
    ids = tok.encode(text)
    lp = logprobs_for(ids, len(tok.labels))
    delim = tok.labels.index("|")
    for k, t in enumerate(ids):
        if t != delim:
            f = k * FRAMES_PER_TOKEN + 1
            lp[f, 0], lp[f, delim] = np.log(0.6), np.log(0.4)
    decoder = BeamDecoder(tok, lm, beam_width=30)
    plain, rewarded = decoder.decode(lp, alpha=0.1, beta=0.0).text, decoder.decode(lp, alpha=0.1, beta=6.0).text
    assert plain == text and len(rewarded.split()) > 2 * len(text.split()), rewarded
    assert BeamDecoder(tok, lm, alpha=0.1, beta=6.0, beam_width=30).decode(lp).text == rewarded
    assert decoder.decode(lp, alpha=0.1, beta=0.0).text == plain


@pytest.mark.shared
def test_beam_word_timestamps_and_hotwords(ml_setup):
    texts, tok, lm = ml_setup
    text, ids, conf = _misspelled_fixture(texts, tok, n=1, seed=3)[0]
    lp = logprobs_for(ids, len(tok.labels), conf)
    decoder = BeamDecoder(tok, lm, beam_width=30)
    hyp = decoder.decode(lp)
    assert hyp.text == text
    words = text.split()
    assert [w.text for w in hyp.words] == words
    # word k starts on the frame of its first letter (3 frames = 60 ms per token in the fixture)
    first = 0
    for word, got in zip(words, hyp.words):
        assert got.start == pytest.approx(first * FRAMES_PER_TOKEN * 0.02)
        assert got.end == pytest.approx(((first + len(word) - 1) * FRAMES_PER_TOKEN + 1) * 0.02)
        first += len(word) + 1
    assert greedy_hypothesis(logprobs_for(ids, len(tok.labels)), tok).words == hyp.words
    # a hotword with a big weight wins over the LM: the misspelled form comes back
    misspelled = greedy_decode(lp, tok)
    bad_word = next(w for w, r in zip(misspelled.split(), words) if w != r)
    boosted = BeamDecoder(tok, lm, beam_width=30, hotwords=[bad_word], hotword_weight=40.0)
    assert bad_word in boosted.decode(lp).text.split()


@pytest.mark.shared
def test_sentencepiece_labels_decode_words(ml_setup, tmp_path):
    from lrasr.recipe import TokenizerConfig
    from lrasr.text.tokenizer import train_tokenizer

    texts, _, lm = ml_setup
    sp = train_tokenizer(texts, TokenizerConfig(type="sentencepiece", vocab_size=120), tmp_path / "sp")
    sentence = texts[5]
    lp = logprobs_for(sp.encode(sentence), len(sp.labels))
    hyp = greedy_hypothesis(lp, sp)
    assert hyp.text == sentence and " ".join(w.text for w in hyp.words) == sentence
    beam = BeamDecoder(sp, lm, beam_width=20).decode(lp)
    assert beam.text == sentence and [w.text for w in beam.words] == sentence.split()


@pytest.mark.shared
def test_bad_decoder_inputs(ml_setup, shared_corpora, tmp_path):
    texts, tok, lm = ml_setup
    with pytest.raises(LrasrError, match="LM path not found"):
        BeamDecoder(tok, tmp_path / "missing")
    with open(shared_corpora / "multi_respin_samples" / "transcripts.tsv", encoding="utf-8") as handle:
        hindi = [r["text"] for r in csv.DictReader(handle, delimiter="\t")]
    build_lm(hindi, tmp_path / "hi", order=2)
    with pytest.raises(LrasrError, match="does not match the model's labels"):
        BeamDecoder(tok, tmp_path / "hi")
    arpa_only = tmp_path / "arpa_only"
    arpa_only.mkdir()
    (arpa_only / "lm.arpa").write_text((lm / "lm.arpa").read_text(encoding="utf-8").replace("\t</s>\t", "\t<S>\t", 1)
                                      .replace("\t</s>\n", "\t<S>\n", 1), encoding="utf-8")
    with pytest.raises(LrasrError, match="no </s>"):
        BeamDecoder(tok, arpa_only)
    decoder = BeamDecoder(tok, lm)
    with pytest.raises(LrasrError, match="labels"):
        decoder.decode(np.zeros((10, len(tok.labels) + 2), np.float32))
    assert decoder.decode(np.zeros((0, len(tok.labels)), np.float32)).text == ""


def test_best_path_collapses_repeats_and_blanks():
    lp = np.full((7, 4), -5.0, np.float32)
    for frame, tok in enumerate([1, 1, 0, 1, 2, 2, 0]):
        lp[frame, tok] = 0.0
    assert best_path(lp) == [(1, 0, 2), (1, 3, 4), (2, 4, 6)]


def test_greedy_word_times_span_each_words_frames():
    """A word starts at its first letter's first frame and ends after its last letter's last frame
    (letters held over several frames, as a trained model emits them), 20 ms per frame."""
    from lrasr.text.tokenizer import CharTokenizer

    tok = CharTokenizer.from_texts(["ab c"])
    a, b, c, bar = (tok.labels.index(x) for x in "abc|")
    lp = np.full((11, len(tok.labels)), -5.0, np.float32)
    for frame, t in enumerate([a, a, 0, b, b, b, bar, 0, c, c, 0]):
        lp[frame, t] = 0.0
    hyp = greedy_hypothesis(lp, tok)
    assert hyp.text == "ab c"
    assert [(w.text, w.start, w.end) for w in hyp.words] == [("ab", 0.0, 0.12), ("c", 0.16, 0.2)]


@pytest.mark.shared
def test_skipping_sure_blank_frames_changes_nothing(ml_setup, monkeypatch):
    """Runs of near-certain blanks (as a trained model emits between letters) are skipped in beam
    search: same text, same word times as decoding every frame."""
    from lrasr.decode import beam as beam_mod

    texts, tok, lm = ml_setup
    rng = np.random.default_rng(0)
    cases = _misspelled_fixture(texts, tok, n=4, seed=7)
    logps = []
    for _, ids, conf in cases:
        rows = []
        for k, t in enumerate(ids):
            tok_row = np.full(len(tok.labels), -12.0, np.float32)
            tok_row[t] = -0.05
            if k in conf:
                tok_row[t], tok_row[conf[k]] = np.log(0.42), np.log(0.55)
            rows.append(tok_row)
            for _ in range(int(rng.integers(1, 7))):  # a run of sure blanks
                blank_row = np.full(len(tok.labels), -14.0, np.float32)
                blank_row[0] = -1e-5
                rows.append(blank_row)
        logps.append(np.stack(rows))
    assert beam_mod.blank_run_mask(logps[0], 0).mean() < 0.8  # frames really are skipped
    fast = BeamDecoder(tok, lm, beam_width=20)
    skipped = [fast.decode(lp) for lp in logps]
    monkeypatch.setattr(beam_mod, "blank_run_mask", lambda lp, blank: np.ones(len(lp), dtype=bool))
    full = [BeamDecoder(tok, lm, beam_width=20).decode(lp) for lp in logps]
    assert [h.text for h in skipped] == [h.text for h in full] == [t for t, _, _ in cases]
    assert [h.words for h in skipped] == [h.words for h in full]
