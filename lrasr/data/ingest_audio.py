"""Audio checks for labeled items: exists, decodes, agrees with its declared length, fits the limits.

Items are referenced in place (``prepare.labeled_audio: reference``: only the header is probed) or
re-written as 16 kHz mono FLAC (``flac``: fully decoded and resampled). Segments of longer recordings
(Kaldi ``segments``, NeMo ``offset``) are always cut to FLAC, because split manifests list whole files;
a segment that spans its whole file is referenced like a file.
An existing FLAC from an earlier run is reused (its name hashes the source path and times), so a
re-run only does the work that is missing: only while the sidecar ``<name>.flac.json`` written with
it still matches the source file as it is now (size, modification and change times, inode), names
the current decoder version for its format (``lrasr.audio.decode.decode_version``) and the FLAC still
holds the number of samples written. A source replaced since, even by a file with an
older or the same modification time, is decoded again. A source that is itself a FLAC lrasr wrote
(a parquet row's) is hard-linked under the new name instead of decoded again (``link_own_flac``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator

from lrasr.audio.decode import SAMPLE_RATE, AudioError, check_end, decode_version, load, probe, save_flac
from lrasr.errors import LrasrError
from lrasr.io import atomic_path, write_json_atomic
from lrasr.recipe import FilterConfig


@dataclass(frozen=True)
class AudioJob:
    audio: str
    start: float | None
    end: float | None
    duration: float | None  # declared seconds
    samples: int | None  # declared samples at the file's own rate
    flac_out: str  # where a 16 kHz FLAC of the item goes when one is written
    rewrite: bool  # always write the FLAC (labeled_audio: flac); else only to cut a segment
    min_seconds: float
    max_seconds: float
    tolerance: float


@dataclass(frozen=True)
class AudioResult:
    ok: bool
    duration: float = 0.0  # seconds of the utterance as kept
    audio: str = ""  # the file the manifest should point to
    reason: str = ""


def flac_name(item_id: str, audio: Path, start: float | None, end: float | None) -> str:
    """A file name for the re-written item: readable id + a hash of where the audio came from."""
    safe = re.sub(r"[^\w.-]", "_", item_id)[:120] or "utt"
    digest = hashlib.sha1(f"{audio}|{start}|{end}".encode("utf-8")).hexdigest()[:10]
    return f"{safe}-{digest}.flac"


def check_audio(job: AudioJob) -> AudioResult:
    """Probe (and for FLAC output decode) one item's audio; a failed check gives a named reason."""
    path = Path(job.audio)
    if not path.exists():
        return AudioResult(False, reason=f"missing audio: {path} not found")
    try:
        info = probe(path)
    except AudioError as exc:
        return AudioResult(False, reason=f"undecodable audio: {path}: {exc.reason}")
    if info.num_frames <= 0:
        return AudioResult(False, reason=f"undecodable audio: {path}: no samples")
    file_seconds = info.duration
    if job.samples is not None and abs(info.num_frames - job.samples) / info.sample_rate > job.tolerance:
        return AudioResult(False, reason=f"duration mismatch: declared {job.samples} samples, audio has "
                                         f"{info.num_frames} at {info.sample_rate} Hz")
    seconds = file_seconds
    cut = False
    if job.start is not None:
        end = file_seconds if job.end is None else job.end
        if job.start < 0:  # soundfile would read a negative start from the end of the file
            return AudioResult(False, reason=f"bad segment: negative start {job.start:.2f} s")
        if job.start >= file_seconds or end > file_seconds + job.tolerance:
            return AudioResult(False, reason=f"bad segment: {job.start:.2f}-{end:.2f} s lies beyond the end of "
                                             f"{path} ({file_seconds:.2f} s)")
        seconds = min(end, file_seconds) - job.start
        # a "segment" covering the whole file (offset 0, duration = file) is just the file
        cut = job.start > 0 or end < file_seconds - job.tolerance
    if job.duration is not None and abs(job.duration - seconds) > job.tolerance:
        return AudioResult(False, reason=f"duration mismatch: declared {job.duration:.2f} s, audio {seconds:.2f} s")
    if seconds < job.min_seconds:
        return AudioResult(False, reason=f"too short: {seconds:.2f} s < filters.min_seconds {job.min_seconds}")
    if seconds > job.max_seconds:
        return AudioResult(False, reason=f"too long: {seconds:.2f} s > filters.max_seconds {job.max_seconds}")
    if not cut:
        try:  # a cut-off file would pair its transcript with part of the audio (a WAV decodes anyway)
            check_end(path, info)
        except AudioError as exc:
            return AudioResult(False, reason=f"undecodable audio: {path}: {exc.reason}")
    if not (job.rewrite or cut):
        return AudioResult(True, file_seconds, str(path))
    out = Path(job.flac_out)
    # taken before decoding: a source changed while it is read no longer matches on the next run
    key = source_key(path, job.start, job.end if cut else None)
    reused = reusable_flac(out, key)
    if reused is not None:
        return AudioResult(True, reused, str(out))
    linked = None if cut else link_own_flac(path, out)
    if linked is not None:
        return AudioResult(True, linked, str(out))
    try:
        wave = load(path, SAMPLE_RATE, start=job.start or 0.0, end=job.end if cut else None)
    except AudioError as exc:
        return AudioResult(False, reason=f"undecodable audio: {path}: {exc.reason}")
    if wave.size == 0:
        return AudioResult(False, reason=f"undecodable audio: {path}: decoded to no samples")
    save_flac(out, wave, SAMPLE_RATE)
    # after the FLAC: a run killed in between leaves no sidecar, so the FLAC is written again
    write_json_atomic(sidecar_path(out), sidecar(key, int(wave.size)))
    return AudioResult(True, wave.size / SAMPLE_RATE, str(out))


def link_own_flac(path: Path, out: Path) -> float | None:
    """Seconds of ``out`` made a hard link to ``path`` when ``path`` is itself a 16 kHz FLAC that lrasr
    wrote from decoded audio (a parquet row's, with its sidecar naming this decoder version): decoding
    it again would only store the same samples twice. None when it is not, or links are not supported."""
    try:
        recorded = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    source = recorded.get("source") if isinstance(recorded, dict) else None
    if (not isinstance(source, dict) or path.suffix != ".flac"
            or recorded.get("decoder") != decode_version(source.get("path"))):
        return None
    try:
        info = probe(path)
    except AudioError:
        return None
    if info.sample_rate != SAMPLE_RATE or info.num_channels != 1 or info.num_frames != recorded.get("samples"):
        return None
    try:
        with atomic_path(out, suffix=".flac") as tmp:
            tmp.unlink()
            os.link(path, tmp)
    except OSError:
        return None  # another file system, or no hard links there: the caller writes a copy
    # after linking: a new link changes the source's change time, which the key records
    write_json_atomic(sidecar_path(out), sidecar(source_key(path, None, None), info.num_frames))
    return info.num_frames / SAMPLE_RATE


def sidecar_path(flac: Path) -> Path:
    return flac.with_name(flac.name + ".json")


def sidecar(key: dict, samples: int) -> dict:
    """What ``<name>.flac.json`` records: the source as ``key`` describes it, the samples written, and
    the decoder's version for that source (``decode_version``), so a change to decoding does not reuse
    older FLACs."""
    return {"source": key, "samples": samples, "decoder": decode_version(key.get("path"))}


def source_key(path: Path, start: float | None, end: float | None) -> dict:
    """What a re-written FLAC was made from: the source's identity as the file system tells it (no
    content hash: that would read every source on every run) and the cut. The change time and inode
    catch a replacement that kept, or went back to, the old size and modification time."""
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "start": start, "end": end}


def reusable_flac(out: Path, key: dict) -> float | None:
    """Seconds of ``out`` when an earlier run wrote it from the source as ``key`` describes it now."""
    try:
        recorded = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none (or from an older lrasr, or half-written): write the FLAC again
    if not isinstance(recorded, dict) or recorded.get("source") != key:
        return None
    if recorded.get("decoder") != decode_version(key.get("path")):
        return None  # made by another decoder version (or before versions were recorded): decode again
    try:
        info = probe(out)
    except AudioError:
        return None  # unreadable leftover: write it again
    if info.num_frames != recorded.get("samples") or info.sample_rate != SAMPLE_RATE:
        return None
    return info.num_frames / SAMPLE_RATE


def _checked(job: AudioJob) -> AudioResult:
    """``check_audio`` that turns an unexpected failure (a library bug, a full disk) into this item's
    rejection, as the unlabeled path does: one bad file never stops the others."""
    try:
        return check_audio(job)
    except Exception as exc:  # noqa: BLE001
        return AudioResult(False, reason=f"internal error: {type(exc).__name__}: {exc}"[:300])


def make_job(audio: Path, start: float | None, end: float | None, duration: float | None, samples: int | None,
             flac_out: Path, rewrite: bool, filters: FilterConfig) -> AudioJob:
    return AudioJob(str(audio), start, end, duration, samples, str(flac_out), rewrite,
                    filters.min_seconds, filters.max_seconds, filters.duration_tolerance)


# A spawned worker pays a few seconds importing torch/torchaudio before its first item; probing a header
# takes about a millisecond and decoding + resampling + FLAC writing tens of milliseconds, so the pool is
# used only when the serial estimate is large enough for it to pay off.
POOL_MIN_SECONDS = 20.0
PROBE_SECONDS, DECODE_SECONDS = 0.001, 0.02  # measured: 0.7 ms per Opus header, ~17 ms per short file


def check_all(jobs: Iterable[AudioJob], workers: int = 1) -> Iterator[AudioResult]:
    """Results in job order; ``workers > 1`` probes/decodes in a pool of spawned processes when the
    work is large enough (spawned, not forked: the parent may already run torch threads, which fork
    would copy mid-use)."""
    jobs = list(jobs)
    estimate = sum(DECODE_SECONDS if j.rewrite or j.start else PROBE_SECONDS for j in jobs)
    if workers <= 1 or len(jobs) < 2 or estimate < POOL_MIN_SECONDS:
        yield from map(_checked, jobs)
        return
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        try:
            for result in pool.map(_checked, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 4)))):
                done += 1
                yield result
        except BrokenProcessPool:
            # a worker killed (for memory, mostly) is not this item's fault, but nothing tells which it was
            raise LrasrError(f"a worker process checking labeled audio died (most often killed for memory) at or "
                             f"after item {done + 1} of {len(jobs)}; run prepare again with fewer --jobs (FLACs "
                             "already written are reused)", jobs[done].audio) from None
