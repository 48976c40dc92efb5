"""KenLM n-gram language models: build (lmplz + build_binary) and locate/validate for decoding.

An LM folder holds ``lm.bin`` (KenLM trie), ``lm.arpa`` (the text model it came from),
``unigrams.txt`` (one word a line: a binary LM carries no vocabulary list and pyctcdecode decodes
noticeably worse without one) and ``lm.json`` (how it was built, and the characters its words use,
which decoding checks against the acoustic model's labels).

The LM is always over words, whatever the acoustic tokenizer: sentencepiece models decode through
pyctcdecode's ``▁`` convention into the same words.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from lrasr.errors import LrasrError
from lrasr.io import atomic_path, write_json_atomic
from lrasr.recipe import KENLM_MEMORY

REPO = Path(__file__).resolve().parents[2]
LM_BINARY = "lm.bin"
LM_ARPA = "lm.arpa"
UNIGRAMS = "unigrams.txt"
LM_INFO = "lm.json"
KENLM_APT = ("cmake build-essential libboost-program-options-dev libboost-system-dev "
             "libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev")


class KenlmMissing(LrasrError):
    """lmplz/build_binary cannot be found."""


def find_kenlm_tool(name: str) -> Path:
    """Path of a KenLM program (``lmplz`` or ``build_binary``).

    Looks on PATH, then in ``<repo>/tools/bin`` (filled by ``make kenlm``), then in the folder named by
    the ``LRASR_KENLM_BIN`` environment variable. Raises ``KenlmMissing`` saying what to install.
    """
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = [REPO / "tools" / "bin" / name]
    env = os.environ.get("LRASR_KENLM_BIN")
    if env:
        candidates.append(Path(env) / name)
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise KenlmMissing(
        f"KenLM's `{name}` was not found on PATH, in {REPO / 'tools' / 'bin'} or in $LRASR_KENLM_BIN. "
        f"Build it with `make kenlm` in {REPO} (needs: sudo apt-get install -y {KENLM_APT}), "
        "or point LRASR_KENLM_BIN at a folder holding lmplz and build_binary."
    )


# ------------------------------------------------------------------------------------------ text
def basic_normalize(text: str) -> str:
    """Normalization used when no language is known: NFC, lowercase, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


@dataclass
class TextStats:
    """What happened to the LM text: kept and skipped lines, with reasons (nothing dropped silently)."""

    sentences: int = 0
    words: int = 0
    empty: int = 0
    foreign: int = 0
    foreign_chars: set[str] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)


def normalized_lines(lines: Iterable[str], normalizer=None, stats: TextStats | None = None) -> Iterable[str]:
    """Normalize each line as the acoustic transcripts are; yield the non-empty, in-script ones.

    ``normalizer`` is an ``lrasr.text.normalize.Normalizer`` (its ``.check`` reports characters outside
    the language's whitelist: such lines are skipped and counted, as the labeled data would reject
    them) or ``None`` for :func:`basic_normalize`.
    """
    stats = stats if stats is not None else TextStats()
    for raw in lines:
        if normalizer is None:
            text, bad = basic_normalize(raw), set()
        elif hasattr(normalizer, "check"):
            text, bad = normalizer.check(raw)
        else:
            text, bad = normalizer(raw), set()
        text = " ".join(text.split())
        if bad:
            stats.foreign += 1
            stats.foreign_chars |= set(bad)
            continue
        if not text:
            stats.empty += 1
            continue
        stats.sentences += 1
        stats.words += len(text.split())
        yield text


def read_text_files(paths: Sequence[str | Path]) -> Iterable[str]:
    """Lines of UTF-8 text files; of a ``.tsv`` table with a ``text`` column (a manifest, a labeled
    corpus TSV) or a ``sentence`` column (Common Voice), that column's cells: read as plain text, its
    header, audio paths and speaker ids went into the LM. Raises ``LrasrError`` naming a missing or
    undecodable file, or a .tsv table with neither column."""
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise LrasrError("LM text file not found", path)
        column = _text_column(path)
        if column is not None:
            from lrasr.data.manifest import read_user_tsv

            yield from (f"{cell}\n" for cell in read_user_tsv(path)[column])
            continue
        with open(path, encoding="utf-8") as handle:
            line_no = 0
            try:
                for line_no, line in enumerate(handle, 1):
                    yield line
            except UnicodeDecodeError as exc:
                raise LrasrError(f"not UTF-8 text ({exc.reason}); convert it with iconv", path, line_no + 1) from None


TEXT_COLUMNS = ("text", "sentence")  # lrasr's manifests and labeled TSVs; Common Voice's tables


def _text_column(path: Path) -> str | None:
    """The transcript column of a ``.tsv`` table (None: not a .tsv, or one column: plain text). A table
    with several columns but none of ``TEXT_COLUMNS`` raises ``LrasrError`` naming them."""
    if path.suffix.lower() != ".tsv":
        return None
    with open(path, "rb") as handle:
        header = handle.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n").split("\t")
    found = [c for c in TEXT_COLUMNS if c in header]
    if found:
        return found[0]
    if len(header) > 1:
        raise LrasrError(f"a table with columns {', '.join(header)} but no {' or '.join(TEXT_COLUMNS)} column: give "
                         "a plain text file (one sentence a line) or a table whose transcripts are in a 'text' column",
                         path)
    return None


# ------------------------------------------------------------------------------------------ ARPA
def arpa_unigrams(arpa: str | Path) -> list[str]:
    """Words of the ``\\1-grams:`` section of an ARPA file, in file order."""
    words: list[str] = []
    in_unigrams = False
    with open(arpa, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
                continue
            if in_unigrams:
                if line.startswith("\\"):
                    break
                parts = line.split("\t")
                if len(parts) >= 2:
                    words.append(parts[1])
    return words


def ensure_eos(arpa: str | Path) -> bool:
    """Add ``</s>`` to an ARPA's unigrams when missing (pyctcdecode scores sentence ends with it).

    Returns True when the file was changed. The added entry takes ``<unk>``'s log probability: a
    rare-word estimate, better than the -99 that copying ``<s>``'s line would give.
    """
    arpa = Path(arpa)
    text = arpa.read_text(encoding="utf-8")
    head, sep, rest = text.partition("\\1-grams:\n")
    if not sep:
        raise LrasrError("not an ARPA language model (no \\1-grams: section)", arpa)
    section, sep2, tail = rest.partition("\n\\")
    entries = section.split("\n")
    if any(e.split("\t")[1:2] == ["</s>"] for e in entries):
        return False
    unk = next((e.split("\t")[0] for e in entries if e.split("\t")[1:2] == ["<unk>"]), "-7.0")
    entries.insert(1 if entries and "<unk>" in entries[0] else 0, f"{unk}\t</s>")
    head = re.sub(r"ngram 1=(\d+)", lambda m: f"ngram 1={int(m.group(1)) + 1}", head, count=1)
    with atomic_path(arpa) as tmp:
        tmp.write_text(head + sep + "\n".join(entries) + sep2 + tail, encoding="utf-8")
    return True


def _run(cmd: list[str], what: str, stdin_path: Path | None = None) -> None:
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        proc = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True)
    finally:
        if stdin_path:
            stdin.close()
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        detail = " | ".join(lines[-3:])[:400] or f"exit status {proc.returncode}"
        raise LrasrError(f"{what} failed: {detail}")


# ----------------------------------------------------------------------------------------- build
@dataclass
class LmBuildResult:
    out_dir: Path
    order: int
    stats: TextStats
    unigrams: int

    def summary(self) -> dict:
        return {"lm_dir": str(self.out_dir), "order": self.order, "sentences": self.stats.sentences,
                "words": self.stats.words, "unigrams": self.unigrams,
                "skipped_empty": self.stats.empty, "skipped_foreign_script": self.stats.foreign}


def build_lm(
    lines: Iterable[str],
    out_dir: str | Path,
    order: int = 3,
    prune: Sequence[int] | None = None,
    memory: str = "10%",
    normalizer=None,
    language: str | None = None,
    sources: Sequence[str] = (),
) -> LmBuildResult:
    """Normalize text lines, train a KenLM model and write the LM folder (see module docstring).

    ``prune`` are lmplz count thresholds per order (the unigram one must be 0); ``memory`` caps lmplz's
    sorting memory (it takes 80% of RAM otherwise). Raises ``LrasrError`` for no usable text, bad
    options or a failing KenLM program.
    """
    out_dir = Path(out_dir)
    if not 2 <= order <= 6:
        # KenLM's query side (kenlm.Model, build_binary) cannot load unigram-only models
        raise LrasrError(f"LM order must be 2..6 (KenLM cannot load a unigram model), got {order}")
    if not re.fullmatch(KENLM_MEMORY, str(memory)):
        raise LrasrError(f"lm memory {memory!r}: give a size such as 10% (of RAM), 500M or 2G (KenLM's -S; "
                         "suffixes % b K M G T, a bare number means kilobytes)")
    if prune:
        prune = list(prune)
        if len(prune) > order or prune[0] != 0 or any(b < a for a, b in zip(prune, prune[1:])):
            raise LrasrError(f"lm prune {prune}: give at most {order} non-decreasing counts starting with 0 "
                             "(KenLM cannot prune unigrams), e.g. [0, 0, 1]")
    lmplz, build_binary = find_kenlm_tool("lmplz"), find_kenlm_tool("build_binary")
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = TextStats(sources=[str(s) for s in sources])
    vocab: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="lm.", dir=out_dir) as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus.txt"
        with open(corpus, "w", encoding="utf-8") as handle:
            for text in normalized_lines(lines, normalizer, stats):
                handle.write(text + "\n")
                for word in text.split():
                    vocab[word] = vocab.get(word, 0) + 1
        if stats.sentences == 0:
            raise LrasrError(
                f"no usable LM text: {stats.empty} empty line(s), {stats.foreign} line(s) outside the script "
                f"{''.join(sorted(stats.foreign_chars))[:40]!r}; give text files in the recipe's language")
        arpa_tmp = tmp / LM_ARPA
        cmd = [str(lmplz), "-o", str(order), "-S", memory, "-T", str(tmp) + "/", "--discount_fallback",
               "--text", str(corpus), "--arpa", str(arpa_tmp)]
        if prune:
            cmd += ["--prune", *[str(p) for p in prune]]
        _run(cmd, "lmplz (KenLM training)")
        ensure_eos(arpa_tmp)
        bin_tmp = tmp / LM_BINARY
        _run([str(build_binary), "-S", memory, "-T", str(tmp) + "/", "trie", str(arpa_tmp), str(bin_tmp)],
             "build_binary")
        unigrams = [w for w in arpa_unigrams(arpa_tmp) if w not in ("<s>", "</s>", "<unk>")]
        os.replace(arpa_tmp, out_dir / LM_ARPA)
        os.replace(bin_tmp, out_dir / LM_BINARY)
    with atomic_path(out_dir / UNIGRAMS) as tmp_path:
        tmp_path.write_text("".join(w + "\n" for w in unigrams), encoding="utf-8")
    chars = sorted({c for w in vocab for c in w})
    write_json_atomic(out_dir / LM_INFO, {
        "order": order, "prune": prune or None, "language": language, "sentences": stats.sentences,
        "words": stats.words, "unigrams": len(unigrams), "skipped_empty": stats.empty,
        "skipped_foreign_script": stats.foreign, "foreign_chars": "".join(sorted(stats.foreign_chars)),
        "alphabet": "".join(chars), "sources": stats.sources,
    })
    return LmBuildResult(out_dir, order, stats, len(unigrams))


# -------------------------------------------------------------------------------------- locate
@dataclass(frozen=True)
class LmFiles:
    """A validated LM ready for pyctcdecode: the KenLM file and its word list."""

    kenlm_path: Path
    unigrams: list[str]


def load_unigrams(path: str | Path) -> list[str]:
    return [w for w in Path(path).read_text(encoding="utf-8").split("\n") if w and w not in ("<s>", "</s>", "<unk>")]


def locate_lm(path: str | Path) -> LmFiles:
    """Resolve an LM folder (from ``lrasr lm build``) or a ``.arpa``/``.bin`` file to ``LmFiles``.

    Raises ``LrasrError`` for a missing path, a folder without a model, a binary without a unigram
    list, or an ARPA whose unigrams lack ``</s>``.
    """
    path = Path(path)
    if not path.exists():
        raise LrasrError("LM path not found; build one with `lrasr lm build TEXT... --output DIR`", path)
    if path.is_dir():
        binary, arpa, uni = path / LM_BINARY, path / LM_ARPA, path / UNIGRAMS
        if binary.is_file():
            if not uni.is_file() and not arpa.is_file():
                raise LrasrError(f"LM folder has {LM_BINARY} but no {UNIGRAMS}; rebuild it with `lrasr lm build`", path)
            if arpa.is_file():
                _check_arpa_eos(arpa)
            words = load_unigrams(uni) if uni.is_file() else _arpa_words(arpa)
            return LmFiles(binary, words)
        if arpa.is_file():
            return locate_lm(arpa)
        raise LrasrError(f"not an LM folder (no {LM_BINARY} or {LM_ARPA}); build one with `lrasr lm build`", path)
    if path.suffix == ".arpa":
        _check_arpa_eos(path)
        uni = path.parent / UNIGRAMS
        return LmFiles(path, load_unigrams(uni) if uni.is_file() else _arpa_words(path))
    uni = path.parent / UNIGRAMS
    if not uni.is_file():
        raise LrasrError(f"a binary KenLM file carries no word list: put {UNIGRAMS} beside it "
                         "(one word a line) or pass the LM folder from `lrasr lm build`", path)
    return LmFiles(path, load_unigrams(uni))


def _arpa_words(arpa: Path) -> list[str]:
    return [w for w in arpa_unigrams(arpa) if w not in ("<s>", "</s>", "<unk>")]


def _check_arpa_eos(arpa: Path) -> None:
    words = arpa_unigrams(arpa)
    if not words:
        raise LrasrError("not an ARPA language model (no unigrams found)", arpa)
    if "</s>" not in words:
        raise LrasrError("ARPA has no </s> among its unigrams, so sentence ends cannot be scored; rebuild it "
                         "with `lrasr lm build` (which adds it) or add a `</s>` line to the \\1-grams: section", arpa)
