"""Transcribe audio files of any length: chunk, run the acoustic model in batches, decode, merge.

The pipeline streams: chunks from one file after another are gathered into windows of about
``batch_seconds`` of audio, the model runs on each window (length-sorted batches), and each chunk's
log-probabilities go to the decoder (greedy here, beam search in the worker pool) while the next
window is read. Memory is bounded by one window plus the pending beam searches, whatever the input.
With a journal (``transcribe_paths(..., journal=...)``, see ``lrasr.decode.journal``) every finished
recording is saved at once and a later run with the same settings skips it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from lrasr import recipe as recipe_defaults
from lrasr.audio.decode import AudioError, cut_off_wav_seconds, probe
from lrasr.data.manifest import audio_paths, read_user_tsv, with_audio_column
from lrasr.decode.chunking import Chunk, iter_chunks, vad_segmenter
from lrasr.decode.greedy import greedy_hypothesis
from lrasr.decode.types import Hypothesis, merge_hypotheses
from lrasr.errors import LrasrError
from lrasr.io import usable_cores
from lrasr.report import err_console, progress, warn

AUDIO_EXTENSIONS = {"." + ext for ext in recipe_defaults.AUDIO_EXTENSIONS}


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Audio files, folders (searched recursively, sorted) and manifests (``.tsv`` with an ``audio``
    column) -> audio paths in order. A missing input is an ``LrasrError``."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out.extend(_folder_audio(path))
        elif path.is_file() and path.suffix.lower() == ".tsv":
            out.extend(_manifest_audio(path))
        elif path.exists() or path.suffix.lower() in AUDIO_EXTENSIONS:
            out.append(path)  # unreadable files are reported (and skipped) when transcribed
        else:
            raise LrasrError("input not found (give audio files, folders or a manifest .tsv)", path)
    return out


def _folder_audio(folder: Path) -> list[Path]:
    """Audio files below ``folder``, sorted; broken links with an audio extension are kept (they are
    reported as unreadable later) and every other file is counted in one warning, never dropped silently."""
    found, skipped = [], []
    visited = {folder.resolve()}  # linked subfolders are entered (as prepare does), each once: no loops
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = {d: (Path(root) / d).resolve() for d in dirs}
        dirs[:] = sorted(d for d in dirs if real[d] not in visited)
        visited.update(real[d] for d in dirs)
        for name in files:
            p = Path(root) / name
            if p.suffix.lower() in AUDIO_EXTENSIONS and (p.is_file() or (p.is_symlink() and not p.exists())):
                found.append(p)
            elif p.is_file():
                skipped.append(p)
    found.sort()
    skipped.sort()
    if not found:
        warn(f"{folder}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) in this folder")
    if skipped:
        warn(f"{folder}: {len(skipped)} file(s) skipped, extension not one of {', '.join(sorted(AUDIO_EXTENSIONS))} "
             f"(e.g. {skipped[0].name}); give them as files to try them anyway")
    return found


def _manifest_audio(path: Path) -> list[Path]:
    """Audio paths of a manifest: lrasr's ``audio`` column, or ``path`` as in a labeled corpus TSV."""
    frame = read_user_tsv(path)
    named = with_audio_column(frame)
    if named is None:
        found = ", ".join(map(str, frame.columns))
        raise LrasrError(f"no `audio` or `path` column naming the audio files (found: {found})", path)
    return audio_paths(named, path)


@dataclass
class FileResult:
    path: Path
    hypothesis: Hypothesis
    seconds: float = 0.0
    error: str | None = None


@dataclass
class TranscribeStats:
    files: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    chunks: int = 0
    resumed: int = 0  # recordings whose transcripts came from an earlier run's journal (not counted above)

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time / audio duration (below 1 = faster than real time)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else float("nan")

    def summary(self) -> dict:
        return {"files": self.files, "failed": self.failed, "audio_seconds": round(self.audio_seconds, 2),
                "wall_seconds": round(self.wall_seconds, 2), "chunks": self.chunks,
                "real_time_factor": round(self.rtf, 4) if self.audio_seconds else None, "resumed": self.resumed}


@dataclass
class _Pending:
    result: FileResult
    parts: dict[int, object] = field(default_factory=dict)  # chunk index -> (start, Hypothesis or future)
    count: int | None = None  # number of chunks, once the file has been read to its end


class Transcriber:
    """An acoustic model plus a decoder; ``transcribe(paths)`` yields a ``FileResult`` per path, in order.

    ``decoder`` is ``None`` for greedy decoding or a ``lrasr.decode.beam.BeamDecoder``.
    ``segmenter`` finds speech in long files (``None``: no VAD, cut at quiet points only).
    """

    def __init__(self, acoustic, decoder=None, chunk_seconds: float = 20.0, batch_seconds: float = 120.0,
                 segmenter=None, block_seconds: float = 60.0):
        self.acoustic = acoustic
        self.decoder = decoder
        self.chunk_seconds = chunk_seconds
        self.batch_seconds = batch_seconds
        self.segmenter = segmenter
        self.block_seconds = block_seconds
        self.stats = TranscribeStats()

    def _chunks(self, paths: Sequence[Path], pending: list[_Pending]) -> Iterator[tuple[_Pending, int, Chunk]]:
        for path in paths:
            entry = _Pending(FileResult(path, Hypothesis("")))
            pending.append(entry)
            index = 0
            try:
                entry.result.seconds = probe(path).duration
                _warn_if_cut_off(path, entry.result.seconds)
                for index, chunk in enumerate(iter_chunks(path, self.chunk_seconds, self.segmenter,
                                                          self.block_seconds), 1):
                    yield entry, index - 1, chunk
                if index == 0:
                    entry.result.error = f"{path}: no speech found (silent file)"
            except AudioError as exc:
                entry.result.error = str(exc)
            entry.count = index

    def _decode(self, logp: np.ndarray):
        if self.decoder is None:
            return greedy_hypothesis(logp, self.acoustic.tokenizer)
        return self.decoder.submit(logp)

    def transcribe(self, paths: Sequence[Path], on_done: Callable[[FileResult], None] | None = None) -> list[FileResult]:
        """Transcribe ``paths``; unreadable or silent files give an empty transcript and a warning."""
        start_time = time.perf_counter()
        pending: list[_Pending] = []
        results: list[FileResult] = []
        window: list[tuple[_Pending, int, Chunk]] = []
        window_seconds = 0.0
        outstanding: deque = deque()  # beam searches not yet collected, oldest first
        # at most this many chunks wait for beam search: bounds the log-probs held in memory
        max_outstanding = 4 * max(1, getattr(self.decoder, "processes", 1)) + 16
        heard = 0.0

        def run_window() -> None:
            nonlocal window, window_seconds, heard
            if window:
                logps = self.acoustic.log_probs([c.wave for _, _, c in window])
                for (entry, idx, chunk), logp in zip(window, logps):
                    decoded = self._decode(logp)
                    entry.parts[idx] = (chunk.start, decoded)
                    if not isinstance(decoded, Hypothesis):
                        outstanding.append(decoded)
                    while len(outstanding) > max_outstanding:
                        outstanding.popleft().result()
                self.stats.chunks += len(window)
                heard += window_seconds
            window, window_seconds = [], 0.0

        def finish_ready(final: bool = False) -> None:
            while pending and pending[0].count is not None and (final or _complete(pending[0])):
                entry = pending.pop(0)
                hyps = [_resolve(entry.parts[i][1]).shifted(entry.parts[i][0]) for i in sorted(entry.parts)]
                entry.result.hypothesis = merge_hypotheses(hyps)
                self._account(entry.result)
                results.append(entry.result)
                if on_done:
                    on_done(entry.result)
            while outstanding and outstanding[0].done():
                outstanding.popleft()

        with progress() as bar:
            task = bar.add_task("transcribe", total=len(paths), info="")
            for entry, idx, chunk in self._chunks(paths, pending):
                window.append((entry, idx, chunk))
                window_seconds += chunk.seconds
                if window_seconds >= self.batch_seconds:
                    run_window()
                    finish_ready()
                    bar.update(task, completed=len(results), info=f"{heard / 60:.1f} min of speech")
            run_window()
            finish_ready(final=True)
            bar.update(task, completed=len(results), info=f"{heard / 60:.1f} min of speech")
        self.stats.wall_seconds += time.perf_counter() - start_time
        return results

    def _account(self, result: FileResult) -> None:
        self.stats.files += 1
        self.stats.audio_seconds += result.seconds
        if result.error:
            self.stats.failed += 1
            what = "keeping the text before the failure" if result.hypothesis.text else "writing an empty transcript"
            warn(f"{result.error}; {what}")


def _warn_if_cut_off(path: Path, seconds: float) -> None:
    """A WAV cut off after its header decodes to what is left without an error: say so (the transcript
    is written for the part that is there)."""
    promised = cut_off_wav_seconds(path, seconds)
    if promised is not None:
        warn(f"{path}: truncated: the header promises {promised:.1f} s but the file holds "
             f"{seconds:.1f} s; transcribing what is there")


def _resolve(value) -> Hypothesis:
    return value if isinstance(value, Hypothesis) else value.result()


def _complete(entry: _Pending) -> bool:
    """All chunks of a file decoded (without waiting for a beam search still running)."""
    return len(entry.parts) == entry.count and all(
        isinstance(v, Hypothesis) or v.done() for _, v in entry.parts.values())


def decode_config(decode_cfg=None, **overrides):
    """The recipe's ``DecodeConfig`` (defaults when ``None``) with ``overrides`` (beam_width, alpha, beta,
    hotwords, hotword_weight, chunk_seconds, batch_seconds; ``None`` values ignored), checked."""
    from pydantic import ValidationError

    from lrasr.recipe import DecodeConfig

    base = (decode_cfg or DecodeConfig()).model_dump()
    try:  # model_copy(update=...) would skip the field checks (chunk_seconds > 0, beam_width >= 1)
        return DecodeConfig.model_validate({**base, **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as err:
        raise LrasrError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())) from None


def build_transcriber(model_dir: str | Path, lm_dir: str | Path | None = None, decoder: str = "greedy",
                      device: str | None = None, decode_cfg=None, vad_cfg=None, processes: int | None = None,
                      **overrides) -> Transcriber:
    """A ``Transcriber`` from a model folder and (for ``decoder="beam"``) an optional LM folder.

    ``decode_cfg`` is the recipe's ``DecodeConfig`` (defaults when ``None``); ``overrides`` replace its
    fields (beam_width, alpha, beta, hotwords, hotword_weight, chunk_seconds, batch_seconds).
    """
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.recipe import VadConfig

    cfg = decode_config(decode_cfg, **overrides)
    if decoder != "beam" and lm_dir is not None:
        raise LrasrError("--lm needs the beam decoder (--decoder beam)")
    acoustic = AcousticModel(model_dir, device=device, batch_seconds=cfg.batch_seconds)
    beam = None
    if decoder == "beam":
        from lrasr.decode.beam import BeamDecoder

        beam = BeamDecoder(acoustic.tokenizer, lm_dir, alpha=cfg.alpha, beta=cfg.beta, beam_width=cfg.beam_width,
                           hotwords=cfg.hotwords, hotword_weight=cfg.hotword_weight,
                           processes=processes if processes is not None else default_processes())
    segmenter = vad_segmenter(vad_cfg or VadConfig(), cfg.chunk_seconds)
    return Transcriber(acoustic, beam, chunk_seconds=cfg.chunk_seconds, batch_seconds=cfg.batch_seconds,
                       segmenter=segmenter)


def default_processes() -> int:
    return min(8, usable_cores())


def transcribe_files(inputs: Iterable[str | Path], model_dir: str | Path, lm_dir: str | Path | None = None,
                     decoder: str = "greedy", device: str | None = None,
                     **options) -> tuple[list[FileResult], TranscribeStats]:
    """Transcribe audio files, folders or manifests with a model folder -> (results in order, stats).
    ``options`` go to ``transcribe_paths`` (journal, resume, decoder settings); ``lrasr.decode.output.
    transcribe_to`` is the whole command (destination checks, outputs)."""
    paths = expand_inputs(list(inputs))
    if not paths:
        raise LrasrError("no audio files to transcribe")
    return transcribe_paths(paths, model_dir, lm_dir, decoder, device, **options)


def transcribe_paths(paths: Sequence[Path], model_dir: str | Path, lm_dir: str | Path | None = None,
                     decoder: str = "greedy", device: str | None = None, journal: str | Path | None = None,
                     resume: bool = True, decode_cfg=None, vad_cfg=None, processes: int | None = None,
                     **overrides) -> tuple[list[FileResult], TranscribeStats]:
    """Transcribe audio ``paths`` -> (results in order, stats of the recordings transcribed now).

    With ``journal`` (a file path; see ``lrasr.decode.journal``) each finished recording is saved there at
    once, and recordings an earlier run with the same settings saved are taken from it (``resume=False``:
    the earlier journal is ignored and replaced). The caller deletes the journal (``Journal.remove`` or
    ``Path.unlink``) once the outputs are written. ``overrides``: ``DecodeConfig`` fields."""
    from lrasr.decode.journal import Journal, recording_stamp, settings_parts
    from lrasr.recipe import VadConfig

    cfg = decode_config(decode_cfg, **overrides)
    vad_cfg = vad_cfg or VadConfig()
    saved: dict[int, FileResult] = {}
    log = None
    if journal is not None:
        log = Journal.open(journal, settings_parts(model_dir, lm_dir, decoder, cfg, vad_cfg), resume)
        _say_discarded(log)
        for i, path in enumerate(paths):
            if (found := log.take(path)) is not None:
                saved[i] = found
        if saved:
            _info(f"resuming: {len(saved)} of {len(paths)} recordings already transcribed"
                 + f"; journal {_shown(log.path)}" + (" (its incomplete last line ignored)" if log.ignored else ""))
    todo = [p for i, p in enumerate(paths) if i not in saved]
    stats = TranscribeStats(resumed=len(saved))
    fresh: list[FileResult] = []
    if todo:
        transcriber = build_transcriber(model_dir, lm_dir, decoder, device, decode_cfg=cfg, vad_cfg=vad_cfg,
                                        processes=processes)
        transcriber.stats = stats
        try:
            on_done = None
            if log is not None:
                log.begin()
                # stamped before reading: a recording changed while it is transcribed is done again next time
                stamps = iter([recording_stamp(p) for p in todo])
                on_done = lambda result: log.append(result, next(stamps))  # noqa: E731 (results come in order)
            fresh = transcriber.transcribe(todo, on_done=on_done)
        except KeyboardInterrupt:
            if log is not None:
                done = len(saved) + log.appended
                _info(f"interrupted: {done} of {len(paths)} recordings are saved in {_shown(log.path)}; run the "
                     "same command again to go on from there")
            raise
        finally:
            if transcriber.decoder is not None:
                transcriber.decoder.close()
            if log is not None:
                log.close()
    new = iter(fresh)
    return [saved[i] if i in saved else next(new) for i in range(len(paths))], stats


def _info(message: str) -> None:
    err_console.print(message, soft_wrap=True)


def _say_discarded(log) -> None:
    if log.discarded == "--no-resume":
        _info(f"--no-resume: ignoring the journal of an earlier run ({_shown(log.path)}); transcribing everything")
    elif log.discarded:
        warn(f"{_shown(log.path)}: earlier run's journal {log.discarded}; transcribing everything again")


def _shown(path: Path) -> str:
    from rich.markup import escape

    return escape(str(path))
