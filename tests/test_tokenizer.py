"""Tokenizers: char (JSON) and sentencepiece (unigram, bpe) behind one interface."""

from __future__ import annotations

import json

import pytest

from lrasr.errors import LrasrError
from lrasr.recipe import TokenizerConfig
from lrasr.text.tokenizer import CharTokenizer, SentencePieceTokenizer, load_tokenizer, train_tokenizer

TEXTS = ["ഞാൻ ഒരു പാട്ട് പാടട്ടെ", "അത്തം പത്തോണം", "വേറെ വിശേഷമൊന്നുമില്ല", "കയ്യിൽ കാശുണ്ടോ"] * 5


def test_char_vocabulary_encode_decode_roundtrip(tmp_path):
    tok = train_tokenizer(TEXTS, TokenizerConfig(type="char"), tmp_path / "tok")
    assert isinstance(tok, CharTokenizer)
    assert tok.labels[:3] == ["<pad>", "<unk>", "|"] and tok.blank_id == 0
    assert set(tok.labels[3:]) == {c for t in TEXTS for c in t if c != " "}
    ids = tok.encode("ഞാൻ ഒരു")
    assert ids.count(tok.labels.index("|")) == 1 and 0 not in ids
    assert tok.decode(ids) == "ഞാൻ ഒരു"
    # unknown characters map to <unk> (decoded as ⁇); blanks in the id stream are ignored
    assert tok.encode("x")[0] == tok.unk_id
    assert tok.decode([0] + ids + [0]) == "ഞാൻ ഒരു"
    assert tok.decode(tok.encode("ഞാൻx")) == "ഞാൻ⁇"
    # a literal | in the text is an unknown character, never a word boundary
    bar = tok.encode("ഞാൻ|ഒരു")
    assert tok.labels.index("|") not in bar and bar.count(tok.unk_id) == 1
    meta = json.loads((tmp_path / "tok" / "tokenizer.json").read_text(encoding="utf-8"))
    assert meta["type"] == "char" and meta["labels"] == tok.labels
    again = load_tokenizer(tmp_path / "tok")
    assert again.labels == tok.labels and again.encode("അത്തം") == tok.encode("അത്തം")


def test_char_vocabulary_independent_of_text_order(tmp_path):
    a = train_tokenizer(TEXTS, TokenizerConfig(type="char"), tmp_path / "a")
    b = train_tokenizer(list(reversed(TEXTS)), TokenizerConfig(type="char"), tmp_path / "b")
    assert a.labels == b.labels


def test_char_pyctcdecode_labels():
    tok = CharTokenizer.from_texts(["ab c"])
    labels = tok.pyctcdecode_labels()
    assert labels[0] == "" and labels[tok.labels.index("|")] == " " and len(labels) == len(tok.labels)
    assert "|" not in labels and "<pad>" not in labels


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_roundtrip(tmp_path, model_type):
    cfg = TokenizerConfig(type="sentencepiece", model_type=model_type, vocab_size=40)
    tok = train_tokenizer(TEXTS, cfg, tmp_path / "spm")
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.labels[0] == "<pad>" and tok.blank_id == 0 and "<unk>" in tok.labels
    assert len(tok.labels) <= 40
    assert any(label.startswith("▁") for label in tok.labels)
    for text in ("ഞാൻ ഒരു പാട്ട് പാടട്ടെ", "കയ്യിൽ കാശുണ്ടോ"):
        ids = tok.encode(text)
        assert 0 not in ids and tok.decode(ids) == text
    assert (tmp_path / "spm" / "spm.model").is_file()
    again = load_tokenizer(tmp_path / "spm")
    assert again.labels == tok.labels and again.encode("അത്തം") == tok.encode("അത്തം")
    labels = again.pyctcdecode_labels()
    assert labels[0] == "" and "▁⁇▁" in labels


def test_sentencepiece_model_type_reaches_the_trainer(tmp_path):
    """unigram and bpe on the same text and size give different vocabularies (bpe fills the size,
    unigram stops short on this little text)."""
    models = {t: train_tokenizer(TEXTS, TokenizerConfig(type="sentencepiece", model_type=t, vocab_size=60),
                                 tmp_path / t) for t in ("unigram", "bpe")}
    assert len(models["bpe"].labels) == 60 and set(models["unigram"].labels) != set(models["bpe"].labels)


def test_sentencepiece_vocab_size_shrinks_on_little_text(tmp_path):
    tok = train_tokenizer(["ab ba", "abc"], TokenizerConfig(type="sentencepiece", vocab_size=256), tmp_path / "s")
    assert 3 < len(tok.labels) < 256


def test_bad_tokenizer_inputs(tmp_path):
    with pytest.raises(LrasrError, match="no training text"):
        train_tokenizer(["", "  "], TokenizerConfig(), tmp_path / "t")
    with pytest.raises(LrasrError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text('{"type": "wordpiece"}', encoding="utf-8")
    with pytest.raises(LrasrError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path / "bad")
