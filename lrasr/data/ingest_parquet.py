"""Parquet shards as published on the Hugging Face hub (Kathbath, IndicVoices, Shrutilipi, FLEURS and
Common Voice exports): each row holds its audio inline, a ``{bytes, path}`` struct (the datasets
library's Audio feature) or plain bytes, beside text/speaker/... columns.

Inline audio cannot be referenced in place, so every kept row is decoded (soundfile, else
torchcodec), resampled to 16 kHz mono and written as FLAC under ``<audio_dir>/parquet/<shard>/``
at ingest, whatever ``prepare.labeled_audio`` says (``reference`` is no error: there is nothing else
to refer to): with ``reference`` the manifests point at these FLACs; with ``flac`` at hard links to
them under the names that mode uses (made by ``ingest_audio.check_audio``, only in that mode), so no
row is stored twice. Rows are read one row group at a time (the datasets library writes audio shards
in row groups of 100 rows: its PARQUET_ROW_GROUP_SIZE_FOR_AUDIO_DATASETS), so a multi-GB
shard never sits in memory: measured with pyarrow 25, reading a row group's audio in batches of
``BATCH_ROWS`` peaks at about twice that row group's bytes (pyarrow reads a column chunk whole), so
the bound is the row group, not the batch: a shard written by pandas is one row group, and a warning
names it when the audio of a huge group is read (``HUGE_GROUP_BYTES``, ``HUGE_GROUP_ROWS``). A decoding worker
killed (for memory, mostly) stops the run with an ``LrasrError`` naming the shard; the rows written
before it are reused by the next run. The audio column is read only for row groups that still
have a FLAC to write, so a re-run reuses the FLACs
(each has a sidecar recording the shard's identity and row, as ``ingest_audio`` does) without
reading the audio again.

A row with no audio bytes, undecodable audio or empty text is rejected naming the shard (``source``),
its 1-based row number (``line``) and, in the reason, the 0-based row index ``datasets`` uses
(``ds[i]``). A shard without the audio or text column raises ``LrasrError`` naming it.
Splits: ``split_column`` when set; else, with ``file_splits``, the split named by each shard's file
name (``train-00000-of-00010.parquet``) or folder (``default/test/0000.parquet``), used only when
some shard names a dev or test split (a corpus of train shards alone is split by ratio).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any, Callable, Iterator

from lrasr.audio.decode import SAMPLE_RATE, AudioError, load_bytes, save_flac
from lrasr.data.ingest import Item, normalize_gender
from lrasr.data.ingest_audio import reusable_flac, sidecar, sidecar_path, source_key
from lrasr.data.manifest import RejectLog
from lrasr.errors import LrasrError
from lrasr.io import write_json_atomic
from lrasr.report import err_console, progress, warn
from lrasr.recipe import PARQUET_AUDIO_COLUMN, LabeledCorpus

BATCH_ROWS = 32  # rows of audio held at once (tens of MB for long utterances)
POOL_MIN_ROWS = 1000  # about 20 s of decoding at ~20 ms a row: less does not pay for starting workers
# A row group's audio is read whole (about twice its bytes at the peak, see above), whatever BATCH_ROWS
# says. 512 MiB of audio (about 4.5 hours of 16 kHz 16-bit WAV; ~1 GiB at the peak, more than a small
# machine spares beside decoding workers) or 20000 rows (200 of the datasets library's 100-row groups,
# so a shard written in one group, by pandas say; the byte count can be missing or dictionary-encoded)
# gets a warning that says how to rewrite the shard.
HUGE_GROUP_BYTES = 512 << 20
HUGE_GROUP_ROWS = 20_000
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "dev", "valid": "dev", "dev": "dev",
               "test": "test"}


@dataclass
class ReadStats:
    """What reading cost, for the summary and for tests that check reading stays incremental."""

    row_groups: int = 0  # row groups whose metadata columns were read
    audio_batches: int = 0  # batches of the audio column read
    max_batch_rows: int = 0  # most rows of audio held at once
    decoded: int = 0  # rows decoded and written as FLAC
    reused: int = 0  # rows whose FLAC from an earlier run was reused


def split_name(value: Any) -> str | None:
    """train/dev/test for the names corpora use (validation, valid, test_known, ...), else None."""
    text = str(value or "").strip().lower()
    if text in SPLIT_NAMES:
        return SPLIT_NAMES[text]
    head = re.split(r"[_.]", text, maxsplit=1)[0]
    return SPLIT_NAMES.get(head)


def file_split(path: Path, root: Path) -> str | None:
    """The split a shard's name (``test-00000-of-00002``) or, failing that, a folder below ``root`` names."""
    found = split_name(path.stem.split("-")[0])
    if found:
        return found
    parents = path.parent.relative_to(root).parts if path.is_relative_to(root) else ()
    return next((s for s in map(split_name, reversed(parents)) if s), None)


def parquet_files(corpus: LabeledCorpus) -> tuple[Path, list[Path]]:
    """(root folder, shards): the file itself, or the files ``pattern`` matches below the folder."""
    path = corpus.path
    if path.is_file():
        return path.parent, [path]
    files = sorted(p for p in path.glob(corpus.pattern) if p.is_file())
    if not files:
        raise LrasrError(f"no parquet files match pattern '{corpus.pattern}' in this folder (set the corpus's "
                         "pattern:, e.g. \"data/train-*.parquet\")", path)
    return path, files


def _shard_dir(audio_dir: Path, shard: Path) -> Path:
    safe = re.sub(r"[^\w.-]", "_", shard.stem)[:80] or "shard"
    return audio_dir / "parquet" / f"{safe}-{hashlib.sha1(str(shard.resolve()).encode()).hexdigest()[:10]}"


def _columns(corpus: LabeledCorpus, shard: Path, names: list[str]) -> dict[str, str | None]:
    """Column for each role; a required or explicitly named column missing raises ``LrasrError``."""
    set_ = corpus.model_fields_set
    audio = corpus.audio_column if "audio_column" in set_ else PARQUET_AUDIO_COLUMN
    roles: dict[str, str | None] = {"audio": audio, "text": corpus.text_column}
    optional = {"speaker": corpus.speaker_column, "gender": corpus.gender_column, "duration": corpus.duration_column,
                "split": corpus.split_column,
                # an id column only when named: FLEURS's `id` numbers sentences, shared by their speakers
                "id": corpus.id_column if "id_column" in set_ else None}
    missing = [c for c in (audio, corpus.text_column) if c not in names]
    for role, column in optional.items():
        explicit = f"{role}_column" in set_
        if column and column not in names and explicit:
            missing.append(column)
        roles[role] = column if column in names else None
    if missing:
        raise LrasrError(f"missing column(s) {', '.join(missing)} (found: {', '.join(names)}); set the corpus's "
                         "*_column keys to the names used", shard)
    return roles


def _audio_kind(pf: Any, column: str, shard: Path) -> str:
    """"struct" ({bytes, path}) or "binary"; anything else raises ``LrasrError``."""
    import pyarrow as pa

    typ = pf.schema_arrow.field(column).type
    if pa.types.is_struct(typ) and typ.get_field_index("bytes") >= 0:
        return "struct"
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return "binary"
    raise LrasrError(f"column {column} holds {typ}, not audio bytes (a {{bytes, path}} struct or binary); a "
                     "table of audio paths is read with format: tsv", shard)


def read_parquet(corpus: LabeledCorpus, rejects: RejectLog, audio_dir: Path | None,
                 stats: ReadStats | None = None, jobs: int = 1) -> list[Item]:
    """Items of every row of every shard, their audio written as 16 kHz FLAC under ``audio_dir``
    (decoded by ``jobs`` processes when there is enough of it)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LrasrError("format parquet needs pyarrow: pip install 'pyarrow>=15'", corpus.path) from None
    if audio_dir is None:
        raise LrasrError("parquet audio is written out as FLAC at ingest: give ingest_corpus an audio_dir "
                         "(prepare uses <workdir>/prepare/labeled_audio)", corpus.path)
    stats = stats if stats is not None else ReadStats()
    root, shards = parquet_files(corpus)
    splits = {s: file_split(s, root) for s in shards} if corpus.file_splits else {}
    use_file_splits = any(v in ("dev", "test") for v in splits.values())
    unnamed = [s for s in shards if use_file_splits and splits.get(s) is None]
    if unnamed:
        # e.g. Common Voice's validated-*.parquet, which holds the train, dev and test rows again: putting
        # it in the ratio pool would leak test speakers into training
        raise LrasrError("this shard's name gives no split (train/validation/test) while other shards' names "
                         "do; narrow the corpus's pattern: to leave it out, or set file_splits: false",
                         unnamed[0])
    items: list[Item] = []
    derived: list[bool] = []
    total = sum(_open(pq, s).metadata.num_rows for s in shards)
    with progress() as bar, _decoder(jobs, total) as decode:
        task = bar.add_task("parquet rows", total=total, info="")
        for shard in shards:
            bar.update(task, info=shard.name)
            found, ids_derived = _read_shard(_open(pq, shard), shard, corpus, rejects, _shard_dir(audio_dir, shard),
                                             stats, splits.get(shard) if use_file_splits else None, root,
                                             lambda n: bar.advance(task, n), decode)
            items.extend(found)
            derived.extend(ids_derived)
    _unique_derived_ids(items, derived)
    err_console.print(f"parquet {corpus.path}: {total} rows; {stats.decoded} decoded to FLAC, {stats.reused} "
                      f"reused from an earlier run, {total - len(items)} rejected")
    return items


def _open(pq: Any, shard: Path) -> Any:
    try:
        return pq.ParquetFile(shard)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a file that is not parquet
        raise LrasrError(f"not a readable parquet file ({str(exc).splitlines()[0][:200]})", shard) from None


def _read_shard(pf: Any, shard: Path, corpus: LabeledCorpus, rejects: RejectLog, out_dir: Path,
                stats: ReadStats, shard_split: str | None, root: Path,
                advance: Callable[[int], Any], decode: Decode) -> tuple[list[Item], list[bool]]:
    cols = _columns(corpus, shard, pf.schema_arrow.names)
    kind = _audio_kind(pf, cols["audio"], shard)
    meta_cols = [c for role, c in cols.items() if c and role != "audio"]
    if kind == "struct" and "path" in pf.schema_arrow.field(cols["audio"]).type.names:
        meta_cols.append(f"{cols['audio']}.path")  # the file name inside the struct, without its bytes
    try:
        rel = shard.relative_to(root).with_suffix("").as_posix()
    except ValueError:
        rel = shard.stem
    # ids made from shard names get the corpus folder in front (its name and a short hash of its path):
    # two releases (Kathbath's and Shrutilipi's hindi/, say) both have a train-00000-of-00012.parquet,
    # and equal ids would reject the second corpus's rows as duplicates
    folder = hashlib.sha1(str(root.resolve()).encode("utf-8")).hexdigest()[:6]
    rel = f"{root.name}-{folder}/{rel}"
    items: list[Item] = []
    derived: list[bool] = []
    first_row = 0
    shard_key = source_key(shard, None, None)  # a FLAC is reused only while the shard is the same file
    warned = False
    for group in range(pf.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        try:
            meta = pf.read_row_group(group, columns=sorted(set(meta_cols))).to_pydict()
        except (OSError, ValueError) as exc:  # a damaged row group (pyarrow's errors derive from these)
            for k in range(rows):
                rejects.add(shard, f"unreadable row group {group}: row index {first_row + k}: {exc}",
                            line=first_row + k + 1)
            first_row += rows
            advance(rows)
            continue
        stats.row_groups += 1
        found: dict[int, tuple[Item, bool]] = {}  # offset in group -> (item, id derived)
        pending: dict[int, tuple[Item, Path, dict]] = {}  # the ones whose FLAC is still to write
        for k in range(rows):
            index = first_row + k
            item, is_derived = _row_item(meta, k, index, cols, shard, rel, rejects, shard_split)
            if item is None:
                continue
            flac = out_dir / f"{index:08d}.flac"
            key = {**shard_key, "row": index}
            seconds = reusable_flac(flac, key)
            item.audio = flac
            found[k] = (item, is_derived)
            if seconds is None:
                pending[k] = (item, flac, key)
            else:
                stats.reused += 1
        if pending:
            huge = None if warned else _huge_group(pf, group, cols["audio"])
            if huge is not None:
                warned = True
                warn(f"{shard}: row group {group} holds {huge[0] / 2**20:.0f} MiB of audio in {huge[1]} rows, read "
                     "into memory at once (about twice that at the peak); if memory runs out, rewrite the shard in "
                     "row groups of 100 rows (pyarrow.parquet.write_table(table, path, row_group_size=100))")
            rejected = _write_pending(pf, group, cols["audio"], kind, pending, shard, first_row, rejects, stats, decode)
            for k in rejected:
                del found[k]
        for k in sorted(found):
            items.append(found[k][0])
            derived.append(found[k][1])
        first_row += rows
        advance(rows)
    return items, derived


def _huge_group(pf: Any, group: int, audio_col: str) -> tuple[int, int] | None:
    """(audio bytes, rows) of a row group whose audio, read into memory at once (memory is bounded by
    the row group, not ``BATCH_ROWS``), exceeds ``HUGE_GROUP_BYTES`` or ``HUGE_GROUP_ROWS``; else None."""
    meta = pf.metadata.row_group(group)
    audio = sum(max(c.total_compressed_size, c.total_uncompressed_size)
                for c in (meta.column(i) for i in range(meta.num_columns))
                if c.path_in_schema.split(".")[0] == audio_col)
    return (audio, meta.num_rows) if audio > HUGE_GROUP_BYTES or meta.num_rows > HUGE_GROUP_ROWS else None


def _row_item(meta: dict[str, list], k: int, index: int, cols: dict[str, str | None], shard: Path, rel: str,
              rejects: RejectLog, shard_split: str | None) -> tuple[Item | None, bool]:
    """The item of row ``k`` of a row group (``index`` in the shard), or None after rejecting it."""
    def value(role: str) -> Any:
        return meta[cols[role]][k] if cols.get(role) else None

    text = value("text")
    given_id = value("id")
    uid = str(given_id).strip() if given_id is not None else ""
    audio_name = ""
    path_key = f"{cols['audio']}.path"
    if path_key in meta:
        audio_name = str(meta[path_key][k] or "")
    elif cols["audio"] in meta and isinstance(meta[cols["audio"]][k], dict):
        audio_name = str(meta[cols["audio"]][k].get("path") or "")
    if text is not None and not isinstance(text, str):
        rejects.add(shard, f"malformed row: row index {index}: text column holds {type(text).__name__}",
                    line=index + 1, id=uid or None)
        return None, False
    if not (text or "").strip():
        rejects.add(shard, f"empty text: row index {index}", line=index + 1, id=uid or None)
        return None, False
    duration = value("duration")
    try:
        duration = float(duration) if duration is not None else None
    except (TypeError, ValueError):
        rejects.add(shard, f"bad duration: row index {index}: {duration!r} is not a number", line=index + 1)
        return None, False
    is_derived = not uid
    if is_derived:
        uid = Path(audio_name).stem if audio_name else f"{rel}_{index:06d}"
    speaker = value("speaker")
    gender = value("gender")
    split = shard_split
    if cols.get("split"):
        raw_split = value("split")
        split = split_name(raw_split)
        if split is None and str(raw_split or "").strip():
            rejects.add(shard, f"unknown split {raw_split!r}: row index {index}", line=index + 1, id=uid)
            return None, False
    return Item(id=uid, audio=shard, text=text, source=str(shard), line=index + 1,
                speaker=(str(speaker).strip() or None) if speaker is not None else None,
                gender=normalize_gender(str(gender)) if gender is not None else None,
                duration=duration, split=split, extra={"row": str(index), "shard_id": f"{rel}_{index:06d}"}), is_derived


def _write_pending(pf: Any, group: int, audio_col: str, kind: str, pending: dict[int, tuple[Item, Path, dict]],
                   shard: Path, first_row: int, rejects: RejectLog, stats: ReadStats, decode: Decode) -> list[int]:
    """Read this row group's audio in batches; decode and write the rows still without a FLAC.
    Returns the offsets of the rows rejected."""
    failed: list[int] = []
    offset = 0
    batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=[audio_col])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (OSError, ValueError) as exc:  # damaged audio pages: the rows still pending are rejected
            for k in sorted(set(pending) - set(failed)):
                if k >= offset:
                    rejects.add(shard, f"unreadable audio in row group {group}: row index {first_row + k}: {exc}",
                                line=first_row + k + 1, id=pending[k][0].id)
                    failed.append(k)
            break
        stats.audio_batches += 1
        stats.max_batch_rows = max(stats.max_batch_rows, batch.num_rows)
        column = batch.column(0)
        tasks, rows = [], []
        for j in range(batch.num_rows):
            k = offset + j
            if k not in pending:
                continue
            item, flac, key = pending[k]
            index = first_row + k
            cell = column[j].as_py()
            data = cell.get("bytes") if kind == "struct" and cell is not None else cell
            if not data:
                rejects.add(shard, f"missing audio: row index {index} has no audio bytes"
                            + (f" (only the path {cell.get('path')!r})" if isinstance(cell, dict) and cell.get("path")
                               else ""), line=index + 1, id=item.id)
                failed.append(k)
                continue
            tasks.append((data, f"{shard} row {index}", str(flac), key))
            rows.append((k, index, item))
        try:
            results = decode(tasks)
        except BrokenProcessPool:
            raise LrasrError(f"a decoding worker process died (most often killed for memory) on row group {group} "
                             f"(row indices {first_row + offset}-{first_row + offset + batch.num_rows - 1}); run "
                             "prepare again with fewer --jobs (rows already written are reused)", shard) from None
        for (k, index, item), (samples, why) in zip(rows, results):
            if samples:
                stats.decoded += 1
            else:
                rejects.add(shard, f"undecodable audio: row index {index}: {why}", line=index + 1, id=item.id)
                failed.append(k)
        offset += batch.num_rows
    return failed


Decode = Callable[[list[tuple]], list[tuple[int, str]]]


def decode_row(task: tuple[bytes, str, str, dict]) -> tuple[int, str]:
    """(encoded bytes, name for errors, FLAC path, source key) -> (samples written, "") or (0, why not).
    Top-level so a process pool can run it."""
    data, name, flac, key = task
    try:
        wave = load_bytes(data, SAMPLE_RATE, name=name)
    except AudioError as exc:
        return 0, exc.reason
    except Exception as exc:  # noqa: BLE001  a library bug on one row must not stop the others
        return 0, f"{type(exc).__name__}: {exc}"[:250]
    if wave.size == 0:
        return 0, "decoded to no samples"
    save_flac(flac, wave, SAMPLE_RATE)
    # after the FLAC: a run killed in between leaves no sidecar, so the row is decoded again
    write_json_atomic(sidecar_path(Path(flac)), sidecar(key, int(wave.size)))
    return int(wave.size), ""


@contextmanager
def _decoder(jobs: int, rows: int) -> Iterator[Decode]:
    """Decode batches here, or with ``jobs > 1`` and enough rows in a pool of spawned processes (each
    pays seconds importing torch, so small corpora stay serial; spawned, not forked, as in ingest_audio)."""
    if jobs <= 1 or rows < POOL_MIN_ROWS:
        yield lambda tasks: [decode_row(t) for t in tasks]
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        yield lambda tasks: list(pool.map(decode_row, tasks))


def _unique_derived_ids(items: list[Item], derived: list[bool]) -> None:
    """Ids taken from the audio struct's file names stay when unique in the corpus; otherwise (every
    row named ``audio.wav``, say) those rows are named by shard and row index instead."""
    names = [it.id for it, d in zip(items, derived) if d]
    if len(set(names)) != len(names):
        for it, d in zip(items, derived):
            if d:
                it.id = it.extra["shard_id"]
