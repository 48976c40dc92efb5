"""CTC output vocabularies: characters with ``|`` between words, or sentencepiece pieces.

Both kinds share one interface (:class:`Tokenizer`): index 0 is the CTC blank ``<pad>``, ``encode``
maps normalized text to ids, ``decode`` maps already CTC-collapsed ids (blanks removed) back to text,
and ``pyctcdecode_labels`` gives the label list pyctcdecode expects (blank as ``""``; ``|`` as ``" "``
for characters; ``▁``-prefixed pieces for sentencepiece). A tokenizer folder holds ``tokenizer.json``
(type and, for characters, the labels) and, for sentencepiece, ``spm.model``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import Iterable

from lrasr.errors import LrasrError
from lrasr.io import atomic_path, write_json_atomic
from lrasr.recipe import TokenizerConfig

BLANK = "<pad>"
UNK = "<unk>"
WORD_DELIMITER = "|"
SPM_MODEL = "spm.model"
META_FILE = "tokenizer.json"


class Tokenizer(ABC):
    """Maps text to CTC label ids and back. ``labels[0]`` is the blank ``<pad>``."""

    type: str = ""
    labels: list[str]
    blank_id: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def vocab_size(self) -> int:
        return len(self.labels)

    @property
    def unk_id(self) -> int:
        return self.labels.index(UNK)

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Normalized text -> label ids (no blanks)."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """CTC-collapsed ids (blanks already removed; stray blanks are ignored) -> text."""

    @abstractmethod
    def pyctcdecode_labels(self) -> list[str]:
        """The labels in the form pyctcdecode's ``build_ctcdecoder`` expects, same order as ``labels``."""

    @abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer files into ``directory`` (created). Returns the directory."""


class CharTokenizer(Tokenizer):
    """Characters of the training text; words separated by ``|``; unknown characters map to ``<unk>``."""

    type = "char"

    def __init__(self, labels: list[str]):
        if not labels or labels[0] != BLANK or UNK not in labels or WORD_DELIMITER not in labels:
            raise ValueError(f"char labels must start with {BLANK} and contain {UNK} and {WORD_DELIMITER}")
        if len(set(labels)) != len(labels):
            raise ValueError("char labels must be unique")
        self.labels = list(labels)
        self._index = {c: i for i, c in enumerate(self.labels)}
        self._delim = self._index[WORD_DELIMITER]
        self._unk = self._index[UNK]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Vocabulary = every character of ``texts`` except whitespace and the reserved ``|``."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(ch for ch in text if not ch.isspace())
        counts.pop(WORD_DELIMITER, None)
        # sorted by code point: the same texts always give the same ids whatever their order
        return cls([BLANK, UNK, WORD_DELIMITER] + sorted(counts))

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in text.split():
            if ids:
                ids.append(self._delim)
            ids.extend(self._index.get(ch, self._unk) if ch != WORD_DELIMITER else self._unk for ch in word)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.blank_id or not 0 <= i < len(self.labels):
                continue
            out.append(" " if i == self._delim else ("⁇" if i == self._unk else self.labels[i]))
        return " ".join("".join(out).split())

    def pyctcdecode_labels(self) -> list[str]:
        mapping = {BLANK: "", WORD_DELIMITER: " ", UNK: "⁇"}
        return [mapping.get(label, label) for label in self.labels]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / META_FILE, {"type": self.type, "labels": self.labels, "blank": BLANK,
                                                 "unk": UNK, "word_delimiter": WORD_DELIMITER})
        return directory


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model (unigram or BPE) trained with ``<pad>`` at id 0 and ``<unk>`` at id 1."""

    type = "sentencepiece"

    def __init__(self, model_file: str | Path):
        import sentencepiece as spm

        self.model_file = Path(model_file)
        self._model_bytes = self.model_file.read_bytes()
        self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        self.labels = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        if self.labels[0] != BLANK or UNK not in self.labels:
            raise LrasrError(f"sentencepiece model must have {BLANK} at id 0 and an {UNK} piece; "
                             "train it with lrasr (train_tokenizer)", self.model_file)

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._sp.encode(text, out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        keep = [int(i) for i in ids if int(i) != self.blank_id and 0 <= int(i) < len(self.labels)]
        return " ".join(self._sp.decode(keep).split())

    def pyctcdecode_labels(self) -> list[str]:
        # pyctcdecode recognises BPE alphabets by the ▁ prefix and its unknown token by "▁⁇▁"
        return ["" if label == BLANK else ("▁⁇▁" if label == UNK else label) for label in self.labels]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / SPM_MODEL) as tmp:
            tmp.write_bytes(self._model_bytes)
        write_json_atomic(directory / META_FILE, {"type": self.type, "model": SPM_MODEL, "blank": BLANK,
                                                 "unk": UNK, "vocab_size": len(self.labels)})
        return directory


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load the tokenizer saved in ``directory`` (``tokenizer.json`` [+ ``spm.model``])."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise LrasrError(f"no {META_FILE} here; run `lrasr prepare` to train a tokenizer", directory)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LrasrError(f"not a valid tokenizer file ({exc})", meta_path) from None
    kind = meta.get("type")
    if kind == "char":
        try:
            return CharTokenizer(list(meta["labels"]))
        except (KeyError, ValueError) as exc:
            raise LrasrError(f"invalid char tokenizer ({exc})", meta_path) from None
    if kind == "sentencepiece":
        model = directory / str(meta.get("model", SPM_MODEL))
        if not model.is_file():
            raise LrasrError("sentencepiece model file missing beside tokenizer.json", model)
        return SentencePieceTokenizer(model)
    raise LrasrError(f"unknown tokenizer type {kind!r} (expected char or sentencepiece)", meta_path)


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, out_dir: str | Path) -> Tokenizer:
    """Build a tokenizer from normalized ``texts`` as ``cfg`` says and save it into ``out_dir``.

    ``texts`` are the training-split transcripts (plus the recipe's text corpus when the caller was
    asked to add it). Sentencepiece gets ``vocab_size`` as an upper bound: on little text it shrinks
    the vocabulary instead of failing.
    """
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise LrasrError("no training text to build a tokenizer from (every utterance was rejected?)")
    if cfg.type == "char":
        tok: Tokenizer = CharTokenizer.from_texts(texts)
    else:
        tok = _train_sentencepiece(texts, cfg)
    tok.save(out_dir)
    return tok


def _train_sentencepiece(texts: list[str], cfg: TokenizerConfig) -> SentencePieceTokenizer:
    import sentencepiece as spm

    work = Path(tempfile.mkdtemp(prefix="lrasr-spm-"))
    try:
        prefix = work / "spm"
        # identity normalization: the text is already normalized per language (NFC, whitelist);
        # sentencepiece's default NFKC would undo choices such as keeping ZWJ/ZWNJ.
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=str(prefix), vocab_size=cfg.vocab_size,
            model_type=cfg.model_type, character_coverage=1.0, normalization_rule_name="identity",
            pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece=BLANK, unk_piece=UNK,
            hard_vocab_limit=False, num_threads=1, minloglevel=2, max_sentence_length=65536,
        )
        return SentencePieceTokenizer(prefix.with_suffix(".model"))  # keeps the model's bytes
    except RuntimeError as exc:
        raise LrasrError(f"sentencepiece training failed ({str(exc).strip().splitlines()[-1][:200]})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
