"""The `prepare` stage: unlabeled recordings (VAD segmentation) and labeled corpora, one report.

Writes under ``<workdir>/prepare/``: ``unlabeled/`` (see ``prepare_unlabeled``), the labeled outputs
(see ``lrasr.stages.prepare_labeled``), ``rejected.tsv`` (both paths merged; column ``input`` says
which), ``report.json`` and ``report.png`` (segment length and SNR histograms).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from lrasr.data.manifest import RejectLog, read_manifest, rejected_frame, write_manifest
from lrasr.data.splits import SPLITS
from lrasr.errors import LrasrError, StageError
from lrasr.io import write_json_atomic
from lrasr.report import console, histograms_png, summary_table, warn
from lrasr.stages.prepare_labeled import prepare_labeled
from lrasr.stages.prepare_unlabeled import merge_unlabeled, prepare_unlabeled

Shard = tuple[int, int]


def parse_shard(value: str | Shard | None) -> Shard | None:
    """``"I/N"`` (0 <= I < N) -> (I, N); raises ``LrasrError`` with the accepted form."""
    if value is None or isinstance(value, tuple):
        if value is not None and not (0 <= value[0] < value[1]):
            raise LrasrError(f"--shard {value[0]}/{value[1]}: need 0 <= I < N")
        return value
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if not match:
        raise LrasrError(f"--shard {value!r}: expected I/N with whole numbers, e.g. 0/4 (I counts from 0)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise LrasrError(f"--shard {value}: need N >= 1 and 0 <= I < N (I counts from 0)")
    return index, count


def _merged_rejects(unlabeled: RejectLog, labeled: RejectLog) -> pd.DataFrame:
    rows = [{"input": "unlabeled", **r} for r in unlabeled.rows] + [{"input": "labeled", **r} for r in labeled.rows]
    return rejected_frame(rows, first=("input",))


def _table_rows(un: dict[str, Any]) -> list[tuple[str, object]]:
    lengths, snr = un.get("segment_seconds") or {}, un.get("snr_db") or {}
    acc = un["speech_accounting"]
    return [
        ("input files", un["files"]),
        ("files with no kept segment", un["files_without_segments"]),
        ("hours in", un["hours_in"]),
        ("hours of speech (VAD)", un["hours_speech"]),
        ("  kept after duration filter", un["hours_after_duration"]),
        ("  kept after clipping filter", un["hours_after_clipping"]),
        ("  kept after SNR filter", un["hours_after_snr"]),
        ("  kept after duplicate filter", un["hours_kept"]),
        ("speech kept + rejected = found (h)",
         f"{acc['kept_h']:.4f} + {acc['rejected_h']:.4f} = {acc['found_h']:.4f}" + ("" if acc["balanced"] else " (MISMATCH)")),
        ("segments found / kept", f"{un['segments_found']:,} / {un['segments']:,}"),
        ("segment length p5 / p50 / p95 (s)",
         " / ".join(f"{lengths[k]:.2f}" for k in ("p5", "p50", "p95")) if lengths else "-"),
        ("segment SNR p5 / p50 / p95 (dB)", " / ".join(f"{snr[k]:.1f}" for k in ("p5", "p50", "p95")) if snr else "-"),
        ("rejected rows", un["rejected"]),
    ]


def run_prepare(recipe, jobs: int | None = None, shard: str | Shard | None = None, strict: bool = False,
                merge: bool = False) -> dict[str, Any]:
    """Run `prepare` for the recipe; returns a JSON-able summary (also written to report.json).

    ``shard="I/N"`` segments only every N-th unlabeled input (labeled corpora are left to the
    unsharded/merge run); ``merge=True`` joins the shards' results without processing inputs.
    Raises ``StageError`` when nothing usable was produced, or with ``strict`` when anything was
    rejected (the outputs are written first either way).
    """
    shard_t = parse_shard(shard)
    jobs = jobs or recipe.prepare.jobs
    out = recipe.workdir / "prepare"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LrasrError(f"cannot create the output folder ({exc.strerror}); set workdir (or --workdir) to a "
                         "writable folder", out) from None
    summary: dict[str, Any] = {"unlabeled": None, "labeled": None}
    un_rejects, lab_rejects = RejectLog(), RejectLog()
    # labeled first: a broken index file (a one-line error) then stops the run before hours of VAD
    if recipe.corpora.labeled and shard_t is None:
        summary["labeled"], lab_rejects = prepare_labeled(recipe, jobs=jobs)
    if recipe.corpora.unlabeled:
        if merge:
            summary["unlabeled"], un_rejects = merge_unlabeled(recipe)
        else:
            summary["unlabeled"], un_rejects = prepare_unlabeled(recipe, jobs=jobs, shard=shard_t)
    rejected = _merged_rejects(un_rejects, lab_rejects)
    target = out if shard_t is None else out / "unlabeled" / "shards" / f"{shard_t[0]}-of-{shard_t[1]}"
    write_manifest(rejected, target / "rejected.tsv", standard=tuple(rejected.columns))
    summary["rejected"] = len(rejected)
    summary["rejected_tsv"] = str(target / "rejected.tsv")
    un = summary["unlabeled"]
    if un is not None:
        console.print(summary_table("prepare: unlabeled recordings", _table_rows(un)))
        _histograms(recipe, target, un)
        advice = _snr_advice(un, recipe.prepare.filters.min_snr_db)
        if advice:
            un.setdefault("warnings", []).append(advice)
            warn(advice)
    if summary["labeled"] and un is not None and recipe.pretrain is not None:
        overlap = _scored_audio_in_pretraining(out, Path(un["manifest"]))
        if overlap:
            summary["labeled"].setdefault("warnings", []).append(overlap)
    if summary["labeled"]:
        lab = summary["labeled"]
        console.print(summary_table("prepare: labeled corpora", _labeled_rows(lab)))
        console.print(summary_table("prepare: splits", _split_rows(lab),
                                    columns=("split", "utterances", "hours", "speakers", "OOV word rate")))
        # paths on their own lines: in an 80-column table they were cut to '/tmp/.../prepa…'
        if "figure" in lab:
            console.print(f"labeled utterances: {lab['figure']}", soft_wrap=True)
        folder = str(lab.get("tokenizer", "")).partition(" in ")[2]
        if folder:
            console.print(f"tokenizer: {folder}", soft_wrap=True)
        for message in lab.get("warnings", []):
            warn(message)
    write_json_atomic(target / "report.json", summary)
    if len(rejected):
        kinds = rejected["reason"].astype(str).str.split(":", n=1).str[0].value_counts()
        detail = ", ".join(f"{kind} {count}" for kind, count in kinds.items())
        console.print(f"{len(rejected)} rejected ({detail}): see {target / 'rejected.tsv'}")
    usable = (un or {}).get("segments", 0) + (summary["labeled"] or {}).get("utterances", 0)
    if usable == 0:
        raise StageError("nothing usable was produced (see rejected.tsv for why)", target / "rejected.tsv")
    if strict and len(rejected):
        raise StageError(f"--strict: {len(rejected)} rejection(s)", target / "rejected.tsv")
    return summary


SPLIT_FIELDS = ("utterances", "hours", "speakers", "oov_rate")  # <split>_<field> keys of the labeled summary


def _split_rows(labeled: dict[str, Any]) -> list[tuple[object, ...]]:
    """One row per split (train has no OOV rate): side by side, not 13 alphabetized keys apart."""
    return [(split, *(labeled.get(f"{split}_{field}") for field in SPLIT_FIELDS)) for split in SPLITS]


def _labeled_rows(labeled: dict[str, Any]) -> list[tuple[str, object]]:
    """The labeled summary as table rows; the rejection counts and the most frequent rejected
    characters (what to add to the whitelist) are shown too, not only written to report.json."""
    rows: list[tuple[str, object]] = []
    per_split = {f"{split}_{field}" for split in SPLITS for field in SPLIT_FIELDS}
    for key, value in sorted(labeled.items()):
        if key in ("figure", "warnings", "dev_test_chars_not_in_tokenizer") or key in per_split:
            continue  # printed below the table: paths, warnings (the characters too), the splits table
        if key == "tokenizer":
            value = str(value).partition(" in ")[0]
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(map(str, value[:5])) + (" ..." if len(value) > 5 else "") if value else "-"
        rows.append((key, value))
    return rows


def _scored_audio_in_pretraining(out: Path, unlabeled_manifest: Path) -> str | None:
    """A warning when dev/test audio files are also unlabeled recordings (the same clips given as 'raw
    recordings'): pretraining then hears what the model is scored on. Labeled audio copied into the workdir
    (labeled_audio: flac) is not compared."""
    try:
        sources = set(read_manifest(unlabeled_manifest, required=("source",))["source"])
    except LrasrError:
        return None
    sources |= {str(Path(s).resolve()) for s in sources}
    scored = shared = 0
    for split in ("dev", "test"):
        manifest = out / split / "manifest.tsv"
        if not manifest.is_file():
            continue
        for audio in read_manifest(manifest, required=("audio",))["audio"]:
            scored += 1
            shared += Path(audio).is_absolute() and (audio in sources or str(Path(audio).resolve()) in sources)
    if not shared:
        return None
    return (f"{shared} of {scored} dev/test utterances are also unlabeled recordings (corpora.unlabeled): pretraining "
            "hears the audio they are scored on, so dev/test scores are optimistic; keep the labeled clips out of "
            "the unlabeled folders")


SNR_DROP_WARN = 0.2  # share of the VAD's speech the SNR filter may drop before prepare says so


def _snr_advice(un: dict[str, Any], min_snr_db: float | None) -> str | None:
    """One line when the SNR filter dropped much of the speech: 15 dB suits studio and broadcast audio;
    phone and field recordings often sit lower and would otherwise vanish from pretraining unremarked."""
    speech = un.get("hours_speech") or 0.0
    dropped = (un.get("hours_after_clipping") or 0.0) - (un.get("hours_after_snr") or 0.0)
    if min_snr_db is None or speech <= 0 or dropped / speech < SNR_DROP_WARN:
        return None
    return (f"the SNR filter dropped {dropped / speech:.0%} of the speech found ({dropped:.3g} of {speech:.3g} h below "
            f"prepare.filters.min_snr_db {min_snr_db:g} dB); for phone or field recordings try 10 (or null for no "
            "filter); report.png shows the SNR of every segment")


def _histograms(recipe, target, un: dict[str, Any]) -> None:
    # segments.tsv (every VAD segment with its status) sits beside the manifest prepare_unlabeled wrote
    table = read_manifest(Path(un["manifest"]).with_name("segments.tsv"), required=("duration", "snr_db", "status"))
    kept = table[table["status"] == "kept"]
    histograms_png(target / "report.png", {
        "kept segment length (s)": kept["duration"].tolist(),
        "SNR of every VAD segment (dB)": table["snr_db"].tolist(),
    }, title=f"{recipe.name}: prepare")
