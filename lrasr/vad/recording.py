"""One raw recording -> VAD segments -> quality filters -> 16 kHz mono FLAC files + a record.

Runs in a worker process. The record (a JSON-able dict) lists every segment VAD found, with its
quality numbers and either the FLAC it was written to or why it was rejected, plus file-level
problems. The caller stores it atomically; until then the input counts as not done.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any

from lrasr.audio.decode import SAMPLE_RATE, AudioError, cut_off_wav_seconds, iter_blocks, probe, save_flac
from lrasr.io import file_sha1
from lrasr.recipe import FilterConfig, VadConfig
from lrasr.vad.backends import to_int16
from lrasr.vad.quality import clipping_ratio, wada_snr
from lrasr.vad.segmenter import Segment, segment_stream

RECORD_VERSION = 5  # bump when a record's meaning, reason texts or decoded samples change


def safe_stem(path: Path) -> str:
    """A file-name-safe, id-safe short form of the input's stem (NFC, at most 60 characters).

    Letters, combining marks and digits of every script are kept: Indic vowel signs and viramas are
    marks, which ``\\w`` leaves out (a Malayalam name came out in fragments), and so are the zero-width
    (non-)joiners that select Indic letter forms. Anything else (spaces,
    punctuation, bytes that are not UTF-8) becomes one ``_``. Records written before keep their ids.
    """
    stem = unicodedata.normalize("NFC", path.stem)
    kept = "".join(c if c in ".-_\u200c\u200d" or unicodedata.category(c)[0] in "LMN" else " " for c in stem)
    return re.sub(r" +", "_", kept).strip("._")[:60] or "audio"


def input_key(path: Path) -> str:
    """Stable key of an input by its absolute path (names its record and segment folder)."""
    return hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:12]


def segment_dir_name(path: Path) -> str:
    return f"{safe_stem(path)}-{input_key(path)[:8]}"


def judge(seg_duration: float, snr: float, clip: float, vad: VadConfig, filters: FilterConfig) -> str | None:
    """The first filter a segment fails, as a readable reason, or None when it is kept.

    Order matters for the report's "hours kept after each filter": duration, clipping, SNR
    (duplicates are found later, across inputs).
    """
    if seg_duration + 1e-9 < vad.min_seconds:
        return f"too short: {seg_duration:.2f} s < vad.min_seconds {vad.min_seconds:g}"
    if seg_duration > vad.max_seconds + 1e-6:
        return f"too long: {seg_duration:.2f} s > vad.max_seconds {vad.max_seconds:g}"
    if filters.max_clipping is not None and clip > filters.max_clipping:
        return f"clipped: {100 * clip:.2f}% of samples at full scale > filters.max_clipping {100 * filters.max_clipping:g}%"
    if filters.min_snr_db is not None and snr < filters.min_snr_db:
        return f"low snr: {snr:.1f} dB < filters.min_snr_db {filters.min_snr_db:g}"
    return None


def process_recording(source: str, out_dir: str, vad: dict[str, Any], filters: dict[str, Any],
                      settings: str) -> dict[str, Any]:
    """Segment ``source`` into ``out_dir/segments/<name>/``; returns the input's record.

    Never raises for bad input: decoding problems become ``problems`` rows (a file that fails
    half-way keeps the segments decoded before the failure).
    """
    import torch

    torch.set_num_threads(1)  # one core per worker: --jobs is the parallelism
    vad_cfg, filter_cfg = VadConfig(**vad), FilterConfig(**filters)
    path = Path(source)
    name = segment_dir_name(path)
    seg_dir = Path(out_dir) / "segments" / name
    record: dict[str, Any] = {"version": RECORD_VERSION, "source": str(path), "settings": settings,
                              "duration": 0.0, "segments": [], "problems": []}
    try:
        info = probe(path)
        stat = path.stat()
        record.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        record["sha1"] = file_sha1(path)
    except AudioError as exc:
        record["problems"].append({"reason": f"unreadable: {exc.reason}"})
        return record
    except OSError as exc:
        record["problems"].append({"reason": f"unreadable: {exc.strerror or exc}"})
        return record
    # a rerun after a crash must not mix stale or half-written files with new ones
    if seg_dir.exists():
        shutil.rmtree(seg_dir)
    failure: list[AudioError] = []
    blocks = _counting(iter_blocks(path, vad_cfg.block_seconds), record, failure)
    for index, seg in enumerate(segment_stream(blocks, vad_cfg)):
        record["segments"].append(_handle_segment(seg, index, name, seg_dir, vad_cfg, filter_cfg))
    decoded = record["duration"]
    if failure:
        kept = sum(1 for s in record["segments"] if s["reject"] is None)
        record["problems"].append({"reason": f"decoding failed: stopped after {decoded:.1f} s of {info.duration:.1f} s "
                                             f"({failure[0].reason}); kept {kept} segment(s) before it",
                                   "start": round(decoded, 3), "end": round(info.duration, 3)})
    if not failure:
        _note_cut_off_wav(path, record)
    if decoded == 0.0 and not record["problems"]:
        record["problems"].append({"reason": "empty audio: no samples decoded"})
    elif not record["segments"] and not record["problems"]:
        record["problems"].append({"reason": f"no speech: VAD ({vad_cfg.backend}) found none in {decoded:.1f} s",
                                   "start": 0.0, "end": round(decoded, 3)})
    return record


def _note_cut_off_wav(path: Path, record: dict[str, Any]) -> None:
    """A WAV cut off after its header decodes to what is left without an error: its segments are kept,
    and a problem row says what is missing (records written before this check lack the row; it is not
    worth a RECORD_VERSION bump, which would segment every corpus again)."""
    decoded = record["duration"]
    promised = cut_off_wav_seconds(path, decoded)
    if promised is None:
        return
    kept = sum(1 for s in record["segments"] if s["reject"] is None)
    record["problems"].append({"reason": f"truncated: the header promises {promised:.1f} s but the file holds "
                                         f"{decoded:.1f} s; kept {kept} segment(s) before the cut",
                               "start": round(decoded, 3), "end": round(promised, 3)})


def _counting(blocks, record: dict[str, Any], failure: list[AudioError]):
    """Pass blocks through, adding their length to record['duration']; a decoding error ends the
    stream normally (so the open segment still closes) and is kept in ``failure``."""
    try:
        for block in blocks:
            record["duration"] += block.size / SAMPLE_RATE
            yield block
    except AudioError as exc:
        failure.append(exc)


def _handle_segment(seg: Segment, index: int, name: str, seg_dir: Path, vad: VadConfig,
                    filters: FilterConfig) -> dict[str, Any]:
    pcm = to_int16(seg.wave)
    snr = wada_snr(seg.wave)
    clip = clipping_ratio(seg.wave)
    seg_id = f"{name}-{index:05d}"
    row = {"id": seg_id, "start": round(seg.start_s, 3), "end": round(seg.end_s, 3),
           "duration": round(seg.duration, 3), "snr_db": round(snr, 2), "clipping": round(clip, 5),
           "sha1": hashlib.sha1(pcm.tobytes()).hexdigest(), "reject": judge(seg.duration, snr, clip, vad, filters)}
    if row["reject"] is None:
        rel = Path("segments") / name / f"{seg_id}.flac"
        seg_dir.mkdir(parents=True, exist_ok=True)
        save_flac(seg_dir / f"{seg_id}.flac", pcm)
        row["audio"] = rel.as_posix()
    return row
