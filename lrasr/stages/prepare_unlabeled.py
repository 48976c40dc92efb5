"""`prepare` for unlabeled raw recordings: find inputs, segment each (in parallel), assemble manifests.

Layout under ``<workdir>/prepare/unlabeled/``:
  records/<key>.json       one per input, written atomically when the input is finished: the unit of
                           resumption (valid while the file's content and the VAD/filter settings match)
  segments/<name>/*.flac   16 kHz mono FLAC per kept segment
  manifest.tsv             kept segments (id, audio, duration, source, start, end, snr_db, sha1)
  segments.tsv             every segment VAD found, with its quality numbers and status
  shards/I-of-N/           the same two tables for a ``--shard I/N`` run; ``merge_unlabeled`` (or a
                           plain run) joins all shards' records into the top-level tables
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrasr.audio.decode import AudioError, probe
from lrasr.data.manifest import RejectLog, relative_audio, write_manifest
from lrasr.errors import StageError
from lrasr.io import file_sha1, text_sha1, utf8_name, write_json_atomic
from lrasr.recipe import STAGES
from lrasr.report import progress, warn
from lrasr.vad.recording import RECORD_VERSION, input_key, process_recording

HOUR = 3600.0


# ------------------------------------------------------------------------------------------ inputs
def list_inputs(recipe) -> tuple[list[Path], RejectLog, int]:
    """All input files of ``corpora.unlabeled`` in a stable order, rejects for unusable corpus paths,
    and the number of files skipped for their extension."""
    rejects, inputs, ignored = RejectLog(), [], 0
    workdir = Path(recipe.workdir).resolve()
    # what lrasr writes (as the runner's input digest sees it): never taken as input, whether the
    # workdir sits inside the corpus folder, the corpus folder is the workdir, or lies inside it
    outputs = {workdir / s for s in STAGES} | {workdir / ".cache"}
    for corpus in recipe.corpora.unlabeled:
        exts = {"." + e.lower().lstrip(".") for e in corpus.extensions}
        root = Path(corpus.path)
        own = next((o for o in outputs if root.resolve() == o or o in root.resolve().parents), None)
        if own is not None:
            rejects.add(root, f"lrasr output: inside {own}, which a stage wrote (not input); put the recordings "
                              "outside the workdir's stage folders")
        elif root.is_file() or (root.is_symlink() and not root.exists()):
            inputs.append(root)
        elif root.is_dir():
            found: list[Path] = []

            def on_error(err: OSError) -> None:
                rejects.add(err.filename or root, f"unreadable: cannot list folder ({err.strerror})")

            visited = {root.resolve()}  # folders reached through links: each walked once (loops end)
            skip = outputs | {workdir}  # (the workdir itself when it is below the corpus folder)
            for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=True):
                real = {d: (Path(folder) / d).resolve() for d in dirs}
                dirs[:] = sorted(d for d in dirs if real[d] not in skip and real[d] not in visited)
                visited.update(real[d] for d in dirs)
                for name in files:
                    if (Path(folder) / name).suffix.lower() in exts:
                        found.append(Path(folder) / name)
                    else:
                        ignored += 1
            inputs.extend(sorted(found))
        else:
            rejects.add(root, "unreadable: path does not exist or is not a file or folder")
    seen: set[Path] = set()
    unique = [p for p in inputs if not (p.resolve() in seen or seen.add(p.resolve()))]
    return _utf8_names(unique, rejects), rejects, ignored


def _utf8_names(paths: list[Path], rejects: RejectLog) -> list[Path]:
    """``paths`` whose names are valid UTF-8; the others are rejected (manifests, records and ids are
    UTF-8 text, and a name Python holds as lone surrogates cannot be written into them)."""
    kept = []
    for path in paths:
        try:
            str(path).encode("utf-8")
            kept.append(path)
        except UnicodeEncodeError:
            rejects.add(utf8_name(str(path)), "unreadable: file name is not valid UTF-8; rename it "
                               "(e.g. convmv -f latin1 -t utf8 --notest -r FOLDER)")
    return kept


def settings_fingerprint(recipe) -> str:
    """What a record depends on besides the input's bytes."""
    payload = {"version": RECORD_VERSION, "vad": recipe.prepare.vad.model_dump(mode="json"),
               "filters": recipe.prepare.filters.model_dump(mode="json", include={"min_snr_db", "max_clipping"})}
    return text_sha1(json.dumps(payload, sort_keys=True))[:16]


def record_path(out_dir: Path, source: Path) -> Path:
    return out_dir / "records" / f"{input_key(source)}.json"


def load_valid_record(out_dir: Path, source: Path, settings: str) -> dict[str, Any] | None:
    """The stored record of ``source`` if it still describes this content under these settings."""
    path = record_path(out_dir, source)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        stat = source.stat()
    except (OSError, ValueError):
        return None
    if record.get("settings") != settings or record.get("source") != str(source) or "sha1" not in record:
        return None
    if (record.get("size"), record.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
        try:  # touched or copied: still done if the bytes are the same
            if file_sha1(source) != record["sha1"]:
                return None
        except OSError:
            return None
        record.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        write_json_atomic(path, record)
    return record


# -------------------------------------------------------------------------------------- processing
def _run_inputs(todo: list[Path], out_dir: Path, recipe, settings: str, jobs: int) -> dict[str, dict[str, Any]]:
    """Process inputs (in a spawn pool when jobs > 1); returns their records by source.

    Records of readable inputs are stored as each finishes; those of unreadable inputs and of inputs
    whose processing crashed (a bug, memory) are not, so a rerun looks at them again.
    """
    vad = recipe.prepare.vad.model_dump(mode="json")
    filters = recipe.prepare.filters.model_dump(mode="json")
    fresh: dict[str, dict[str, Any]] = {}

    def finished(source: Path, record: dict[str, Any] | None, exc: BaseException | None = None) -> None:
        if record is None:
            record = {"source": str(source), "duration": 0.0, "segments": [],
                      "problems": [{"reason": f"internal error: {type(exc).__name__}: {exc}"}]}
        elif "sha1" in record:
            write_json_atomic(record_path(out_dir, source), record)
        fresh[str(source)] = record

    with progress() as bar:
        task = bar.add_task("segmenting recordings", total=len(todo), info="")
        jobs = min(jobs, len(todo))  # no idle workers: each costs a process start and imports
        if jobs <= 1:
            for source in todo:
                bar.update(task, info=source.name)
                try:
                    finished(source, process_recording(str(source), str(out_dir), vad, filters, settings))
                except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
                    finished(source, None, exc)
                bar.advance(task)
            return fresh
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(process_recording, str(s), str(out_dir), vad, filters, settings): s for s in todo}
            for future in as_completed(futures):
                source = futures[future]
                try:
                    finished(source, future.result())
                except Exception as exc:  # noqa: BLE001
                    finished(source, None, exc)
                bar.update(task, advance=1, info=source.name)
    return fresh


def _readable(path: Path) -> bool:
    try:
        probe(path)
        return True
    except (AudioError, OSError):
        return False


# -------------------------------------------------------------------------------------- assembling
def assemble(records: list[dict[str, Any]], out_dir: Path, manifest_dir: Path, dedupe: bool,
             rejects: RejectLog) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """Manifest rows and per-segment table rows from records, in input order.

    Exact duplicates (same 16-bit audio) after the first are rejected and their files removed.
    Returns (manifest rows, segment rows, speech hours kept after each filter).
    """
    rows, table, seen = [], [], {}
    stages = {"speech": 0.0, "duration": 0.0, "clipping": 0.0, "snr": 0.0, "dedupe": 0.0}
    for record in records:
        source = record["source"]
        for problem in record.get("problems", []):
            rejects.add(source, problem["reason"], **{k: problem[k] for k in ("start", "end") if k in problem})
        for seg in record.get("segments", []):
            reason, dur = seg["reject"], seg["duration"]
            stages["speech"] += dur
            kind = (reason or "").split(":", 1)[0]
            stages["duration"] += dur * (kind not in ("too short", "too long"))
            stages["clipping"] += dur * (kind not in ("too short", "too long", "clipped"))
            stages["snr"] += dur * (reason is None)
            if reason is None:
                audio = out_dir / seg["audio"]
                if dedupe and seg["sha1"] in seen:
                    reason = f"duplicate: same audio as {seen[seg['sha1']]}"
                    audio.unlink(missing_ok=True)
                elif not audio.is_file():
                    reason = "segment file missing: its record was dropped, rerun prepare to rebuild it"
                    record_path(out_dir, Path(source)).unlink(missing_ok=True)
                else:
                    seen.setdefault(seg["sha1"], seg["id"])
                    stages["dedupe"] += dur
                    rows.append({"id": seg["id"], "audio": relative_audio(audio, manifest_dir),
                                 "duration": dur, "source": source, "start": seg["start"], "end": seg["end"],
                                 "snr_db": seg["snr_db"], "sha1": seg["sha1"]})
            if reason is not None:
                rejects.add(source, reason, start=seg["start"], end=seg["end"], id=seg["id"])
            table.append({"id": seg["id"], "duration": dur, "source": source, "start": seg["start"],
                          "end": seg["end"], "snr_db": seg["snr_db"], "clipping": seg["clipping"],
                          "status": reason or "kept"})
    return rows, table, {k: v / HOUR for k, v in stages.items()}


def _lacking_files(records: list[dict[str, Any]], out_dir: Path, dedupe: bool) -> set[str]:
    """Sources of ``records`` with a segment that ``assemble`` would keep but whose file is missing
    (same order and duplicate rule as ``assemble``)."""
    seen: set[str] = set()
    lacking: set[str] = set()
    for record in records:
        for seg in record.get("segments", []):
            if seg["reject"] is not None or (dedupe and seg["sha1"] in seen):
                continue
            if not (out_dir / seg["audio"]).is_file():
                lacking.add(record["source"])
            seen.add(seg["sha1"])  # rebuilt, it is the first copy again
    return lacking


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = np.percentile(np.asarray(values), [0, 5, 50, 95, 100])
    return {name: round(float(v), 3) for name, v in zip(("min", "p5", "p50", "p95", "max"), q)}


def _summarize(records, rows, table, stages, rejects, n_inputs, ignored) -> dict[str, Any]:
    speech_rejected = sum(r["duration"] for r in table if r["status"] != "kept") / HOUR
    kept = stages["dedupe"]
    return {
        "files": n_inputs,
        "files_ignored_other_extensions": ignored,
        "files_without_segments": sum(1 for r in records if not any(s["reject"] is None for s in r.get("segments", []))),
        "hours_in": sum(r.get("duration", 0.0) for r in records) / HOUR,
        "hours_speech": stages["speech"],
        "hours_after_duration": stages["duration"],
        "hours_after_clipping": stages["clipping"],
        "hours_after_snr": stages["snr"],
        "hours_kept": kept,
        "hours_speech_rejected": speech_rejected,
        "speech_accounting": {"found_h": stages["speech"], "kept_h": kept, "rejected_h": speech_rejected,
                              "balanced": abs(stages["speech"] - kept - speech_rejected) < 1e-6},
        "segments_found": len(table),
        "segments": len(rows),
        "segment_seconds": _percentiles([r["duration"] for r in rows]),
        "snr_db": _percentiles([r["snr_db"] for r in rows]),
        "rejected": len(rejects),
        "rejected_by_reason": rejects.counts(),
    }


# ------------------------------------------------------------------------------------------- entry
def prepare_unlabeled(recipe, jobs: int = 1, shard: tuple[int, int] | None = None,
                      process: bool = True) -> tuple[dict[str, Any], RejectLog]:
    """Segment ``recipe.corpora.unlabeled`` and write the manifests (see module docstring).

    ``shard=(i, n)`` processes only inputs i, i+n, i+2n, ... and writes ``shards/i-of-n/``.
    ``process=False`` only joins existing records (the merge step); inputs without a valid record
    are then an error. Returns (summary dict, rejected rows).
    """
    out_dir = recipe.workdir / "prepare" / "unlabeled"
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs, rejects, ignored = list_inputs(recipe)
    if shard is not None:
        index, count = shard
        inputs = inputs[index::count]
        if index != 0:  # unusable corpus paths are reported once, by shard 0
            rejects = RejectLog()
    if ignored:
        warn(f"{ignored} file(s) under corpora.unlabeled skipped: extension not in the corpus's `extensions`")
    settings = settings_fingerprint(recipe)
    records = {str(p): load_valid_record(out_dir, p, settings) for p in inputs}
    todo = [p for p in inputs if records[str(p)] is None]
    if not process:  # merging: unreadable inputs are re-checked (cheap), anything else must be done
        missing = [p for p in todo if _readable(p)]
        if missing:
            names = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise StageError(f"cannot merge: {len(missing)} input(s) not processed by any shard yet ({names}); "
                             "run the missing shards or run prepare without --shard", out_dir)
    fresh = _run_inputs(todo, out_dir, recipe, settings, max(1, jobs))
    ordered = [records[str(p)] or fresh[str(p)] for p in inputs]
    if process:
        # a stored record may list a segment whose file is gone: deleted as the duplicate of another
        # input's segment when that input was still there (or removed by hand). Rebuild those inputs
        # now, so the segment is kept in this run rather than rejected until the next one.
        lacking = _lacking_files(ordered, out_dir, recipe.prepare.filters.dedupe)
        rebuild = [p for p in inputs if str(p) in lacking and records[str(p)] is not None]
        if rebuild:
            fresh.update(_run_inputs(rebuild, out_dir, recipe, settings, max(1, jobs)))
            for p in rebuild:
                records[str(p)] = None
            todo += rebuild
            ordered = [records[str(p)] or fresh[str(p)] for p in inputs]
    table_dir = out_dir if shard is None else out_dir / "shards" / f"{shard[0]}-of-{shard[1]}"
    rows, table, stages = assemble(ordered, out_dir, table_dir, recipe.prepare.filters.dedupe, rejects)
    write_manifest(rows or _EMPTY_MANIFEST, table_dir / "manifest.tsv")
    write_manifest(table or _EMPTY_TABLE, table_dir / "segments.tsv")
    summary = _summarize(ordered, rows, table, stages, rejects, len(inputs), ignored)
    summary["manifest"] = str(table_dir / "manifest.tsv")
    summary["processed_now"] = len(todo)
    if shard is not None:
        summary["shard"] = f"{shard[0]}/{shard[1]}"
    return summary, rejects


def merge_unlabeled(recipe) -> tuple[dict[str, Any], RejectLog]:
    """Join what the shards produced into the top-level manifest (no input is processed)."""
    return prepare_unlabeled(recipe, shard=None, process=False)


_EMPTY_MANIFEST = pd.DataFrame(columns=["id", "audio", "duration", "source", "start", "end", "snr_db", "sha1"])
_EMPTY_TABLE = pd.DataFrame(columns=["id", "duration", "source", "start", "end", "snr_db", "clipping", "status"])
