"""KenLM building on real transcripts, ARPA checks, missing-tool and bad-input messages."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest

from lrasr.decode import lm as lmmod
from lrasr.decode.lm import (KenlmMissing, arpa_unigrams, build_lm, ensure_eos, locate_lm, normalized_lines,
                             read_text_files)
from lrasr.errors import LrasrError

kenlm = pytest.importorskip("kenlm")


def _transcripts(folder: Path) -> list[str]:
    with open(folder / "transcripts.tsv", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle, delimiter="\t")]


def _unigram_log10(arpa: Path) -> dict[str, float]:
    """The model's own unigram distribution (first ARPA section), as a unigram LM to compare with."""
    probs: dict[str, float] = {}
    with open(arpa, encoding="utf-8") as handle:
        inside = False
        for line in handle:
            line = line.rstrip("\n")
            if line == "\\1-grams:":
                inside = True
            elif inside and line.startswith("\\"):
                break
            elif inside and line:
                parts = line.split("\t")
                probs[parts[1]] = float(parts[0])
    return probs


def _perplexities(lm_dir: Path, held: list[str]) -> tuple[float, float]:
    model = kenlm.Model(str(lm_dir / "lm.bin"))
    uni = _unigram_log10(lm_dir / "lm.arpa")
    tokens = sum(len(s.split()) + 1 for s in held)  # words plus </s>
    ngram = sum(model.score(s, bos=True, eos=True) for s in held)
    unigram = sum(sum(uni.get(w, uni["<unk>"]) for w in s.split()) + uni["</s>"] for s in held)
    return 10 ** (-ngram / tokens), 10 ** (-unigram / tokens)


@pytest.mark.shared
@pytest.mark.parametrize("corpus,language", [("ml_smc_msc_crowd", "ml"), ("multi_respin_samples", "hi")])
def test_lm_on_real_transcripts_beats_unigram(shared_corpora, tmp_path, corpus, language):
    from lrasr.recipe import TextConfig
    from lrasr.text.normalize import Normalizer

    texts = _transcripts(shared_corpora / corpus)
    if language != "ml":
        # RESPIN mixes Devanagari, Bengali, Kannada and Telugu: keep the Devanagari (hi script) lines
        texts = [t for t in texts if any("\u0900" <= c <= "\u097f" for c in t)]
    random.Random(0).shuffle(texts)
    held_raw, train = texts[: len(texts) // 10], texts[len(texts) // 10:]
    normalizer = Normalizer(language, TextConfig())
    result = build_lm(train, tmp_path / "lm", order=3, normalizer=normalizer, language=language)
    out = tmp_path / "lm"
    assert {p.name for p in out.iterdir()} >= {"lm.bin", "lm.arpa", "unigrams.txt", "lm.json"}
    assert kenlm.Model(str(out / "lm.bin")).order == 3  # the order asked for, not lmplz's default
    assert result.stats.sentences > 0.8 * len(train)
    assert "</s>" in arpa_unigrams(out / "lm.arpa")
    unigrams = (out / "unigrams.txt").read_text(encoding="utf-8").split()
    assert len(unigrams) == result.unigrams > 100 and "<s>" not in unigrams
    # the words are spelled as the acoustic transcripts are: normalized and without punctuation
    assert all(normalizer.normalize(w) == w for w in unigrams[:200])
    held = list(normalized_lines(held_raw, normalizer))
    ngram, unigram = _perplexities(out, held)
    assert math.isfinite(ngram) and ngram < unigram, (ngram, unigram)
    files = locate_lm(out)
    assert files.kenlm_path.name == "lm.bin" and set(files.unigrams) == set(unigrams)


def test_ensure_eos_adds_missing_end_token(tmp_path):
    arpa = tmp_path / "x.arpa"
    arpa.write_text("\\data\\\nngram 1=3\nngram 2=1\n\n\\1-grams:\n-1.0\t<unk>\t0\n0\t<s>\t-0.3\n-0.5\tword\t-0.1\n\n"
                    "\\2-grams:\n-0.2\t<s> word\n\n\\end\\\n", encoding="utf-8")
    with pytest.raises(LrasrError, match="no </s>"):
        locate_lm(arpa)
    assert ensure_eos(arpa) is True
    assert ensure_eos(arpa) is False
    text = arpa.read_text(encoding="utf-8")
    assert "ngram 1=4" in text and "-1.0\t</s>" in text
    model = kenlm.Model(str(arpa))  # still a valid ARPA
    assert model.order == 2
    assert locate_lm(arpa).unigrams == ["word"]


def test_bad_lm_inputs(tmp_path):
    with pytest.raises(LrasrError, match="LM path not found"):
        locate_lm(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrasrError, match="not an LM folder"):
        locate_lm(tmp_path / "empty")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(LrasrError, match="no usable LM text"):
        build_lm(read_text_files([blank]), tmp_path / "out", order=3)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ok\n".encode("latin-1"))
    with pytest.raises(LrasrError, match="not UTF-8"):
        build_lm(read_text_files([latin1]), tmp_path / "out", order=3)
    with pytest.raises(LrasrError, match="order must be 2..6"):
        build_lm(["a b"], tmp_path / "out", order=1)
    with pytest.raises(LrasrError, match="prune"):
        build_lm(["a b"], tmp_path / "out", order=3, prune=[1, 1])
    # a memory size KenLM cannot parse used to surface as lmplz's raw multi-line error
    with pytest.raises(LrasrError, match=r"lm memory 'lots': give a size such as 10%"):
        build_lm(["a b"], tmp_path / "out", order=3, memory="lots")
    from pydantic import ValidationError

    from lrasr.recipe import LmConfig

    assert LmConfig(memory="2G").memory == "2G" and LmConfig(memory="1.5k").memory == "1.5k"
    with pytest.raises(ValidationError):
        LmConfig(memory="10 GB")


def test_foreign_script_lines_are_skipped_and_counted(tmp_path):
    from lrasr.recipe import TextConfig
    from lrasr.text.normalize import Normalizer

    lines = ["അത്തം പത്തോണം", "this is english", "പാലം കടക്കുവോളം നാരായണ", ""] * 5
    result = build_lm(lines, tmp_path / "lm", order=2, normalizer=Normalizer("ml", TextConfig()), language="ml")
    assert result.stats.sentences == 10 and result.stats.foreign == 5 and result.stats.empty == 5
    assert result.stats.words == 25  # 5 x (2 + 3)
    # without a language: NFC, lowercase, whitespace collapsed
    import unicodedata

    assert list(normalized_lines(["  Hello\tWorld ", unicodedata.normalize("NFD", "Café au lait")])) == [
        "hello world", "café au lait"]
    assert "english" not in (tmp_path / "lm" / "unigrams.txt").read_text(encoding="utf-8")


def test_missing_kenlm_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("LRASR_KENLM_BIN", raising=False)
    monkeypatch.setattr(lmmod, "REPO", tmp_path)
    with pytest.raises(KenlmMissing) as err:
        build_lm(["a b c"], tmp_path / "out", order=3)
    message = str(err.value)
    assert "make kenlm" in message and "libboost-program-options-dev" in message and "LRASR_KENLM_BIN" in message
    # LRASR_KENLM_BIN is the last place looked
    real = Path(__file__).resolve().parents[1] / "tools" / "bin"
    if (real / "lmplz").is_file():
        monkeypatch.setenv("LRASR_KENLM_BIN", str(real))
        assert lmmod.find_kenlm_tool("lmplz") == real / "lmplz"


def test_lm_build_cli(tmp_path):
    from typer.testing import CliRunner

    from lrasr.cli import app

    text = tmp_path / "text.txt"
    text.write_text("അത്തം പത്തോണം.\nപാലം കടക്കുവോളം നാരായണ\nഅത്തം കറുത്താൽ ഓണം വെളുക്കും\n", encoding="utf-8")
    out = tmp_path / "lm"
    res = CliRunner().invoke(app, ["lm", "build", str(text), "--order", "3", "--output", str(out), "--language", "ml"])
    assert res.exit_code == 0, res.output
    assert (out / "lm.bin").is_file()
    words = (out / "unigrams.txt").read_text(encoding="utf-8").split()
    assert "പത്തോണം" in words and "പത്തോണം." not in words  # punctuation normalized away
    res = CliRunner().invoke(app, ["lm", "build", str(tmp_path / "missing.txt"), "--output", str(out)])
    assert res.exit_code == 2 and "LM text file not found" in res.output


def test_run_lm_stage_uses_text_corpora_and_train_transcripts(tmp_path):
    from lrasr.data.manifest import write_manifest
    from lrasr.recipe import Recipe
    from lrasr.stages.lm import run_lm

    text = tmp_path / "text.txt"
    text.write_text("അത്തം പത്തോണം\nപാലം കടക്കുവോളം നാരായണ\n", encoding="utf-8")
    recipe = Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(tmp_path / "exp"),
                                    "corpora": {"text": [{"path": str(text)}]}, "lm": {"order": 2}})
    write_manifest([{"id": "u1", "audio": "a.wav", "duration": 1.0, "text": "ആന വീഴും"}],
                   recipe.workdir / "prepare" / "train" / "manifest.tsv")
    # weights tuned for an earlier LM do not survive a rebuild
    (recipe.workdir / "lm").mkdir(parents=True)
    (recipe.workdir / "lm" / "tuned.json").write_text('{"alpha": 0.5, "beta": 1.0}', encoding="utf-8")
    summary = run_lm(recipe)
    assert summary["sentences"] == 3 and summary["order"] == 2
    assert not (recipe.workdir / "lm" / "tuned.json").exists()
    words = set((recipe.workdir / "lm" / "unigrams.txt").read_text(encoding="utf-8").split())
    assert {"അത്തം", "ആന", "വീഴും"} <= words
    assert kenlm.Model(str(recipe.workdir / "lm" / "lm.bin")).order == 2  # lm.order reached lmplz
    # lm.prune reaches lmplz: every bigram here is seen once, so a threshold of 1 drops them
    bigrams = _ngram_counts(recipe.workdir / "lm" / "lm.arpa")[2]
    pruned = run_lm(recipe.model_copy(update={"lm": recipe.lm.model_copy(update={"prune": [0, 1]})}))
    assert pruned["order"] == 2 and _ngram_counts(recipe.workdir / "lm" / "lm.arpa")[2] < bigrams
    # lm.include_train_text: false leaves the transcripts out
    text_only = run_lm(recipe.model_copy(update={"lm": recipe.lm.model_copy(update={"include_train_text": False})}))
    words = set((recipe.workdir / "lm" / "unigrams.txt").read_text(encoding="utf-8").split())
    assert text_only["sentences"] == 2 and "ആന" not in words and "അത്തം" in words


def _ngram_counts(arpa: Path) -> dict[int, int]:
    """The ``ngram N=count`` lines of an ARPA header."""
    counts = {}
    for line in arpa.read_text(encoding="utf-8").splitlines():
        if line.startswith("ngram "):
            order, count = line[6:].split("=")
            counts[int(order)] = int(count)
        elif line.startswith("\\1-grams"):
            break
    return counts
