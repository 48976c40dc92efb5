"""export-manifest: fairseq and NeMo layouts, and a fairseq -> lrasr -> fairseq round trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrasr.cli import app
from lrasr.data.manifest import read_manifest
from lrasr.data.export import export_manifests, letters
from lrasr.recipe import Recipe
from lrasr.stages.prepare_labeled import prepare_labeled
from test_ingest import ML, tone  # tests/ is on sys.path (pytest rootdir conftest)


def fairseq_corpus(folder: Path, n: int = 6) -> list[tuple[str, int, str]]:
    """A fairseq train.tsv/.wrd/.ltr over generated 16 kHz audio in sub-folders; returns (rel, samples, text)."""
    rows = []
    for i in range(n):
        rel = f"spk{i % 2}/utt{i}.wav"
        seconds = 0.5 + 0.1 * i
        tone(folder / "audio" / rel, seconds, freq=200 + 30 * i)
        rows.append((rel, int(seconds * 16000), ML[i % len(ML)] + (" " + ML[(i + 1) % len(ML)] if i >= len(ML) else "")))
    (folder / "train.tsv").write_text(str(folder / "audio") + "\n" + "".join(f"{r}\t{s}\n" for r, s, _ in rows),
                                      encoding="utf-8")
    (folder / "train.wrd").write_text("".join(t + "\n" for *_, t in rows), encoding="utf-8")
    (folder / "train.ltr").write_text("".join(letters(t) + "\n" for *_, t in rows), encoding="utf-8")
    return rows


def read_fairseq(folder: Path, split: str) -> set[tuple[str, int, str, str]]:
    lines = (folder / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    root = Path(lines[0])
    wrd = (folder / f"{split}.wrd").read_text(encoding="utf-8").splitlines()
    ltr = (folder / f"{split}.ltr").read_text(encoding="utf-8").splitlines()
    assert len(lines) - 1 == len(wrd) == len(ltr)
    out = set()
    for line, w, l in zip(lines[1:], wrd, ltr):
        rel, samples = line.split("\t")
        out.add((str((root / rel).resolve()), int(samples), w, l))
    return out


def test_letters():
    assert letters("ab  cd") == "a b | c d |"


@pytest.mark.parametrize("labels", ["wrd", "ltr"])
def test_fairseq_roundtrip_keeps_every_utterance(tmp_path, labels):
    src = tmp_path / "src"
    rows = fairseq_corpus(src)
    rec = Recipe.model_validate({"name": "rt", "language": "ml", "workdir": str(tmp_path / "work"),
                                 "corpora": {"labeled": [{"format": "fairseq", "path": str(src), "labels": labels}]},
                                 "prepare": {"split": {"by": "corpus"}}})
    summary, rejects = prepare_labeled(rec)
    assert summary["utterances"] == len(rows) and len(rejects) == 0
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export-manifest", str(rec.workdir / "prepare"), "--format", "fairseq",
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert read_fairseq(out, "train") == read_fairseq(src, "train")
    assert (out / "dev.tsv").read_text(encoding="utf-8").count("\n") == 1  # empty split: just the root line
    entries = [line.split() for line in (out / "dict.ltr.txt").read_text(encoding="utf-8").splitlines()]
    symbols = [sym for sym, _ in entries]
    assert symbols[0] == "|" and set(symbols) == {c for *_, t in rows for c in t if c != " "} | {"|"}
    # each symbol's count in the train letters, most frequent first
    counts = Counter(sym for *_, t in rows for sym in letters(t).split())
    assert {sym: int(n) for sym, n in entries} == counts
    assert [int(n) for _, n in entries] == sorted(counts.values(), reverse=True)


def test_nemo_export_and_back(tmp_path):
    src = tmp_path / "src"
    rows = fairseq_corpus(src, n=4)
    work = tmp_path / "work"
    base = {"name": "n", "language": "ml", "prepare": {"split": {"dev": 0.25, "test": 0.25}}}
    rec = Recipe.model_validate({**base, "workdir": str(work),
                                 "corpora": {"labeled": [{"format": "fairseq", "path": str(src)}]}})
    first, _ = prepare_labeled(rec)
    summary = export_manifests(work / "prepare", "nemo", tmp_path / "nemo")
    assert sum(summary[f"{s}_utterances"] for s in ("train", "dev", "test")) == len(rows)
    objs = [json.loads(line) for s in ("train", "dev", "test")
            for line in (tmp_path / "nemo" / f"{s}.json").read_text(encoding="utf-8").splitlines()]
    assert all(Path(o["audio_filepath"]).is_absolute() and o["duration"] > 0 for o in objs)
    assert all("speaker" not in o for o in objs)
    # each line pairs the right audio file with its own transcript and duration
    source = {(str((src / "audio" / rel).resolve()), samples / 16000, text) for rel, samples, text in rows}
    assert {(o["audio_filepath"], round(o["duration"], 3), o["text"]) for o in objs} == source
    # NeMo -> lrasr gives the same utterances back, each in the split it was exported from
    # (assign_split per file)
    back = Recipe.model_validate({**base, "workdir": str(tmp_path / "work2"), "prepare": {"split": {"by": "corpus"}},
                                  "corpora": {"labeled": [{"format": "nemo", "path": str(tmp_path / "nemo" / f"{s}.json"),
                                                           "assign_split": s} for s in ("train", "dev", "test")]}})
    second, rejects = prepare_labeled(back)
    assert second["utterances"] == len(rows) and len(rejects) == 0

    def utterances(workdir: Path) -> set[tuple[str, str, str, float]]:
        out = set()
        for s in ("train", "dev", "test"):
            frame = read_manifest(workdir / "prepare" / s / "manifest.tsv")
            out |= {(s, str(Path(a).resolve()), t, round(float(d), 3))
                    for a, t, d in zip(frame["audio"], frame["text"], frame["duration"])}
        return out

    assert utterances(tmp_path / "work2") == utterances(work) and len(utterances(work)) == len(rows)


def test_export_errors(tmp_path):
    result = CliRunner().invoke(app, ["export-manifest", str(tmp_path), "--format", "fairseq", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no split manifests" in result.output
    result = CliRunner().invoke(app, ["export-manifest", str(tmp_path), "--format", "kaldi", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown export format" in result.output
