"""Export prepared split manifests to other toolkits' layouts.

- fairseq (wav2vec 2.0): ``<split>.tsv`` (first line the audio root, then ``relative/path<TAB>samples``),
  ``<split>.wrd`` (words), ``<split>.ltr`` (letters separated by spaces, ``|`` after each word) and
  ``dict.ltr.txt`` (``symbol count`` per line, most frequent first, from the train split).
  fairseq reads audio at 16 kHz: files at another rate are counted in the summary (prepare with
  ``prepare.labeled_audio: flac`` to get 16 kHz files).
- NeMo: ``<split>.json``, one JSON object per line with ``audio_filepath`` (absolute), ``duration``,
  ``text``, plus ``id`` and ``speaker`` when known (NeMo ignores extra keys).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from lrasr.audio.decode import SAMPLE_RATE, AudioError, probe
from lrasr.data.manifest import audio_paths, read_manifest
from lrasr.errors import LrasrError
from lrasr.io import write_text_atomic

SPLITS = ("train", "dev", "test")


def letters(text: str) -> str:
    """``"ab cd"`` -> ``"a b | c d |"`` (fairseq's .ltr line)."""
    return " ".join(" ".join(word) + " |" for word in text.split())


def _split_manifests(prepare_dir: Path) -> dict[str, Path]:
    found = {s: prepare_dir / s / "manifest.tsv" for s in SPLITS if (prepare_dir / s / "manifest.tsv").is_file()}
    if not found:
        raise LrasrError("no split manifests here (expected train/, dev/, test/ with manifest.tsv); "
                         "run `lrasr prepare` first", prepare_dir)
    return found


def export_fairseq(prepare_dir: Path, output: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    ltr_counts: Counter[str] = Counter()
    not_16k = 0
    for split, manifest in _split_manifests(prepare_dir).items():
        frame = read_manifest(manifest, required=("id", "audio", "duration", "text"))
        paths = [p.resolve() for p in audio_paths(frame, manifest)]
        root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else prepare_dir.resolve()
        tsv, wrd, ltr = [str(root)], [], []
        for path, text in zip(paths, frame["text"]):
            try:
                info = probe(path)
            except AudioError as exc:
                raise LrasrError(f"cannot export: {exc}", manifest) from None
            not_16k += info.sample_rate != SAMPLE_RATE
            tsv.append(f"{os.path.relpath(path, root)}\t{info.num_frames}")
            wrd.append(text)
            ltr.append(letters(text))
            if split == "train":
                ltr_counts.update(ltr[-1].split())
        write_text_atomic(output / f"{split}.tsv", "\n".join(tsv) + "\n")
        write_text_atomic(output / f"{split}.wrd", "".join(t + "\n" for t in wrd))
        write_text_atomic(output / f"{split}.ltr", "".join(t + "\n" for t in ltr))
        summary[f"{split}_utterances"] = len(wrd)
    if not ltr_counts:  # no train split: take the letters of whatever was exported
        for split in summary:
            path = output / f"{split.rsplit('_', 1)[0]}.ltr"
            ltr_counts.update(path.read_text(encoding="utf-8").split())
    ordered = sorted(ltr_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    write_text_atomic(output / "dict.ltr.txt", "".join(f"{sym} {n}\n" for sym, n in ordered))
    summary["letters"] = len(ordered)
    summary["files_not_16khz"] = not_16k
    return summary


def export_nemo(prepare_dir: Path, output: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for split, manifest in _split_manifests(prepare_dir).items():
        frame = read_manifest(manifest, required=("id", "audio", "duration", "text"))
        lines = []
        for path, (_, row) in zip(audio_paths(frame, manifest), frame.iterrows()):
            obj: dict[str, Any] = {"audio_filepath": str(path.resolve()), "duration": float(row["duration"]),
                                   "text": row["text"], "id": row["id"]}
            if row.get("speaker"):
                obj["speaker"] = row["speaker"]
            lines.append(json.dumps(obj, ensure_ascii=False))
        write_text_atomic(output / f"{split}.json", "".join(line + "\n" for line in lines))
        summary[f"{split}_utterances"] = len(lines)
    return summary


def export_manifests(prepare_dir: str | Path, fmt: str, output: str | Path) -> dict[str, Any]:
    """Write the prepared train/dev/test manifests of ``prepare_dir`` in ``fmt`` (fairseq or nemo)."""
    prepare_dir, output = Path(prepare_dir), Path(output)
    if fmt not in ("fairseq", "nemo"):
        raise LrasrError(f"unknown export format {fmt!r}; supported: fairseq, nemo")
    output.mkdir(parents=True, exist_ok=True)
    summary = export_fairseq(prepare_dir, output) if fmt == "fairseq" else export_nemo(prepare_dir, output)
    return {"format": fmt, "output": str(output), **summary}
