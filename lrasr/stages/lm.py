"""The recipe's `lm` stage: a KenLM word model from the recipe's text corpora and training transcripts.

Writes ``<workdir>/lm/`` (lm.bin, lm.arpa, unigrams.txt, lm.json); see ``lrasr.decode.lm``. Text goes
through the same ``Normalizer(language, prepare.text)`` as the acoustic transcripts, so the LM's words
are spelled exactly as the model learned to write them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from lrasr.errors import StageError


def train_transcripts(recipe) -> Path:
    return recipe.workdir / "prepare" / "train" / "manifest.tsv"


def _manifest_texts(path: Path) -> Iterator[str]:
    from lrasr.data.manifest import read_manifest

    frame = read_manifest(path, required=("text",))
    yield from frame["text"].astype(str)


def lm_sources(recipe) -> tuple[list[str], Iterable[str]]:
    """(source names, lines): the recipe's text corpora, then (``lm.include_train_text``) the
    normalized training transcripts; text corpora that are folders contribute their ``*.txt`` files."""
    from lrasr.decode.lm import read_text_files

    files: list[Path] = []
    for corpus in recipe.corpora.text:
        path = Path(corpus.path)
        files.extend(sorted(path.rglob("*.txt")) if path.is_dir() else [path])
    names = [str(f) for f in files]
    cfg = recipe.lm
    include_train = cfg is None or cfg.include_train_text
    manifest = train_transcripts(recipe)
    if include_train and manifest.is_file():
        names.append(str(manifest))

    def lines() -> Iterator[str]:
        yield from read_text_files(files)
        if include_train and manifest.is_file():
            yield from _manifest_texts(manifest)

    if not names:
        raise StageError("no LM text: add corpora.text entries to the recipe or run `prepare` first "
                         f"(for {manifest}) with lm.include_train_text: true", recipe.source)
    return names, lines()


def run_lm(recipe) -> dict:
    """Build ``<workdir>/lm/`` from the recipe's text; returns a JSON-able summary."""
    from lrasr.decode.lm import build_lm
    from lrasr.recipe import LmConfig
    from lrasr.text.normalize import Normalizer

    cfg = recipe.lm or LmConfig()
    names, lines = lm_sources(recipe)
    normalizer = Normalizer(recipe.language, recipe.prepare.text)
    out_dir = recipe.stage_dir("lm")
    result = build_lm(lines, out_dir, order=cfg.order, prune=cfg.prune, memory=cfg.memory,
                      normalizer=normalizer, language=recipe.language, sources=names)
    # a rebuilt LM invalidates weights tuned for the previous one
    tuned = out_dir / "tuned.json"
    if tuned.exists():
        tuned.unlink()
    return result.summary()
