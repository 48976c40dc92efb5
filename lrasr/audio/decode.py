"""Audio decoding to 16 kHz mono float32, whole or in blocks.

soundfile (libsndfile) reads wav, flac, ogg/vorbis, ogg/opus, mp3, aiff and caf (PCM, ALAC) quickly and
can seek; everything else (m4a, mp4, webm, aac, ...) goes through torchcodec with Debian's ffmpeg,
decoded at the file's own rate, except WMA and the CAF codecs libsndfile lacks, which the ``ffmpeg``
command decodes (torchcodec loses a frame of those; see ``lrasr.audio.codec_reader``). Resampling is
torchaudio's for every format. Long recordings are read block by block so a 2-hour file never sits in
memory at once.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from lrasr.audio import caf, codec_reader
from lrasr.audio.codec_reader import FFMPEG_COMMAND_EXTENSIONS, CodecReader, FfmpegReader
from lrasr.audio.errors import AudioError
from lrasr.audio.errors import short_reason as _short
from lrasr.io import atomic_path

SAMPLE_RATE = 16_000
# Recorded beside every FLAC written from decoded audio (labeled items, parquet rows): a FLAC whose
# sidecar names another version is decoded again. Bump DECODE_VERSION whenever what ``load``/
# ``load_bytes`` return for the same input changes for every format (resampling, channel mixing,
# trimming); a change for some formats only goes in FORMAT_DECODE_VERSIONS, so that the FLACs of all the
# others (hours of MP3 decoding for a large corpus) stay valid.
DECODE_VERSION = 1
FORMAT_DECODE_VERSIONS = {".caf": 2, ".wma": 2}  # 2: CAF's first 0.19 s, WMA's last frame (torchcodec lost them)
HEADER_LENGTH_EXTENSIONS = {".flac", ".mp3"}  # length read from a header that survives truncation
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".oga", ".au", ".caf"}


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int
    num_channels: int
    backend: str  # "soundfile", "torchcodec" or "ffmpeg" (the command)

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate if self.sample_rate else 0.0


def decode_version(source: str | Path | None) -> int:
    """The decoder version of audio decoded from ``source`` (a file name; None or a parquet shard: the
    base version)."""
    suffix = Path(str(source)).suffix.lower() if source else ""
    return FORMAT_DECODE_VERSIONS.get(suffix, DECODE_VERSION)


def _native(path: str | Path) -> bytes:
    """The path as the OS's bytes: a name that is not valid UTF-8 (a latin-1 name from an old archive)
    is held by Python as lone surrogates, which soundfile cannot encode; bytes pass through unchanged."""
    return os.fsencode(path)


def _sound_file(path: Path) -> sf.SoundFile:
    """libsndfile's reader of ``path`` (a CAF with ALAC as ffmpeg writes it through ``caf.open_fixed``).
    Raises ``sf.LibsndfileError`` (or RuntimeError) when libsndfile cannot read it, OSError when the
    file cannot be opened."""
    if path.suffix.lower() == ".caf":
        fixed = caf.open_fixed(path)
        if fixed is not None:
            return fixed
    return sf.SoundFile(_native(path))


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioError("file not found", path)
    if not path.is_file():
        raise AudioError("not a regular file", path)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)", path)


def probe(path: str | Path) -> AudioInfo:
    """Sample rate, length and channels of a file without decoding it all. Raises ``AudioError``."""
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            with _sound_file(path) as handle:
                if handle.frames > 0 or handle.format != "MPEG":
                    return AudioInfo(handle.samplerate, int(handle.frames), handle.channels, "soundfile")
        except (sf.LibsndfileError, RuntimeError, OSError):
            pass  # fall through to ffmpeg, which knows more containers
    decoder = codec_reader.torchcodec_decoder(path)
    meta = decoder.metadata
    rate = int(meta.sample_rate or 0)
    seconds = meta.duration_seconds or meta.duration_seconds_from_header
    if not rate or seconds is None:
        raise AudioError("no audio stream with a known sample rate and duration", path)
    # the length is the header's for both backends: the ffmpeg command's decode differs by a frame or so
    backend = ("ffmpeg" if path.suffix.lower() in FFMPEG_COMMAND_EXTENSIONS and codec_reader.ffmpeg_command()
               else "torchcodec")
    return AudioInfo(rate, int(round(seconds * rate)), int(meta.num_channels or 1), backend)


def check_end(path: str | Path, info: AudioInfo) -> None:
    """Raise ``AudioError`` when the last samples ``info`` promises cannot be read.

    A cut-off FLAC or MP3 keeps a header that claims the full length, so ``probe`` alone accepts it;
    reading from 1024 samples before the promised end (a seek, about a millisecond) finds the damage.
    A cut-off WAV (a recorder that died, an interrupted copy) decodes without complaint to what is left,
    since libsndfile takes its length from the file size: its ``data`` chunk header says how much was
    written (``wav_shortfall``). Ogg lengths come from the data itself; files that only ffmpeg reads are
    not checked here.
    """
    if info.backend != "soundfile" or info.num_frames <= 0:
        return
    if Path(path).suffix.lower() == ".wav":
        promised = cut_off_wav_seconds(path, info.duration)
        if promised is not None:
            raise AudioError(f"damaged or truncated: the header promises {promised:.2f} s "
                             f"but the file holds {info.duration:.2f} s", path)
        return
    if Path(path).suffix.lower() not in HEADER_LENGTH_EXTENSIONS:
        return
    want = min(1024, info.num_frames)
    try:
        with _sound_file(Path(path)) as handle:
            handle.seek(info.num_frames - want)
            got = handle.read(want, dtype="float32", always_2d=True).shape[0]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"damaged or truncated: cannot read its end ({_short(exc)})", path) from None
    if got == 0:  # not got < want: an MP3 header's length is an estimate, often a few ms long
        raise AudioError(f"damaged or truncated: the header promises {info.duration:.2f} s but the data ends earlier",
                         path)


def cut_off_wav_seconds(path: str | Path, held_seconds: float) -> float | None:
    """The length a WAV's header promises when the file was cut off after it (``held_seconds``: what
    decodes), else None: not a .wav, complete, or unreadable (the decoder reports that itself)."""
    if Path(path).suffix.lower() != ".wav":
        return None
    try:
        shortfall = wav_shortfall(path)
    except OSError:
        return None
    if shortfall is None:
        return None
    declared, held = shortfall
    return held_seconds * declared / held


def wav_shortfall(path: str | Path, slack: int = 1024) -> tuple[int, int] | None:
    """(bytes the ``data`` chunk declares, bytes the file holds) of a RIFF/WAVE file cut off by more than
    ``slack`` bytes, else None (not a plain RIFF WAV, size unknown: 0 or 0xFFFFFFFF as streaming
    recorders write it, or complete). Reads only the chunk headers before ``data`` (tens of bytes
    usually; run for every labeled WAV)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        for _ in range(256):  # fmt, LIST, fact, bext, ... then data
            handle.seek(pos)
            header = handle.read(8)
            if len(header) < 8:
                return None
            chunk, length = header[:4], int.from_bytes(header[4:], "little")
            if chunk == b"data":
                held = size - (pos + 8)
                if length in (0, 0xFFFFFFFF) or held <= 0 or held >= length - slack:
                    return None
                return length, held
            pos += 8 + length + (length & 1)  # chunks are word-aligned
    return None


def _to_mono(block: np.ndarray) -> np.ndarray:
    """[frames, channels] or [frames] -> [frames] float32, channels averaged."""
    if block.ndim == 2:
        block = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
    return np.ascontiguousarray(block, dtype=np.float32)


def resample(wave: np.ndarray | torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio, sinc/Hann). [T] -> [T * new/orig]."""
    tensor = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if orig_rate == new_rate:
        return tensor.numpy()
    return AF.resample(tensor, orig_rate, new_rate).numpy()


def load(path: str | Path, sample_rate: int = SAMPLE_RATE, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Decode ``path`` (optionally the ``start``..``end`` seconds) to mono float32 at ``sample_rate``.

    Returns [T]. Raises ``AudioError`` with a one-line reason for unreadable input.
    """
    path = Path(path)
    info = probe(path)
    if info.backend == "soundfile":
        first = int(start * info.sample_rate)
        last = info.num_frames if end is None else min(info.num_frames, int(math.ceil(end * info.sample_rate)))
        try:
            with _sound_file(path) as handle:
                if first:
                    handle.seek(first)
                data, rate = handle.read(max(0, last - first), dtype="float32", always_2d=True), handle.samplerate
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(f"not decodable audio ({_short(exc)})", path) from None
        return resample(_to_mono(data), rate, sample_rate)
    if info.backend == "ffmpeg":
        return resample(_ffmpeg_range(path, info, start, end), info.sample_rate, sample_rate)
    decoder = codec_reader.torchcodec_decoder(path)
    try:
        samples = decoder.get_samples_played_in_range(start, end)
    except Exception as exc:
        raise AudioError(f"decoding failed ({_short(exc)})", path) from None
    return resample(samples.data.mean(dim=0).numpy(), int(samples.sample_rate), sample_rate)


def _ffmpeg_range(path: Path, info: AudioInfo, start: float, end: float | None) -> np.ndarray:
    """Mono samples [n] of ``start``..``end`` seconds at the file's rate, decoded by the ffmpeg command
    from the start and counted in samples (as ``iter_blocks`` places them), ten seconds at a time."""
    rate = info.sample_rate
    first = int(start * rate)
    last = None if end is None else int(math.ceil(end * rate))
    parts, got = [], 0
    try:
        with FfmpegReader(path, rate, info.num_channels) as reader:
            while last is None or got < last:
                want = 10 * rate if last is None else min(10 * rate, last - got)
                piece = reader.read(want)
                if got + piece.size > first:
                    parts.append(piece[max(0, first - got):])
                got += piece.size
                if piece.size < want:
                    break
    except (RuntimeError, OSError) as exc:
        raise AudioError(f"decoding failed ({_short(exc)})", path) from None
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def load_bytes(data: bytes, sample_rate: int = SAMPLE_RATE, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded audio file held in memory (a parquet row's audio) to mono float32 [T].

    soundfile first (wav, flac, ogg, mp3), then torchcodec for anything else, as ``load`` does for
    files. ``name`` only labels errors. Raises ``AudioError`` with a one-line reason.
    """
    if not data:
        raise AudioError("empty audio (0 bytes)", name)
    try:
        buffer = io.BytesIO(data)
        wave, rate = sf.read(caf.fixed_view(buffer) or buffer, dtype="float32", always_2d=True)
        return resample(_to_mono(wave), rate, sample_rate)
    except (sf.LibsndfileError, RuntimeError):
        pass  # not a format libsndfile knows: ffmpeg may
    try:
        from torchcodec.decoders import AudioDecoder
    except (ImportError, RuntimeError, OSError) as exc:
        raise AudioError(f"not decodable by soundfile, and torchcodec+ffmpeg is unavailable ({exc})", name) from None
    try:
        samples = AudioDecoder(data).get_all_samples()
    except Exception as exc:  # torchcodec raises plain RuntimeError/ValueError for bad input
        raise AudioError(f"not decodable audio ({_short(exc)})", name) from None
    return resample(samples.data.mean(dim=0).numpy(), int(samples.sample_rate), sample_rate)


def iter_blocks(path: str | Path, block_seconds: float = 60.0, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield consecutive mono blocks of about ``block_seconds`` at ``sample_rate``.

    Concatenating the blocks gives the same signal as ``load`` (up to float rounding): each block is
    resampled with extra input context on both sides that is then trimmed, and block boundaries sit on
    multiples of the rates' common period so output sample positions stay exact.
    """
    path = Path(path)
    info = probe(path)
    rate = info.sample_rate
    g = math.gcd(rate, sample_rate)
    period_in, period_out = rate // g, sample_rate // g
    block = max(1, int(block_seconds * rate) // period_in) * period_in
    margin = max(1, int(0.05 * rate) // period_in + 1) * period_in  # 50 ms of filter context
    failure: list[BaseException] = []
    try:
        reader = (_sound_file(path) if info.backend == "soundfile"
                  else FfmpegReader(path, info.sample_rate, info.num_channels) if info.backend == "ffmpeg"
                  else CodecReader(path, info.sample_rate, info.duration))
        with reader as handle:
            yield from _iter_blocks_sequential(handle, block, margin, period_in, period_out, sample_rate, failure)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"decoding failed ({_short(exc)})", path) from None
    if failure:
        raise AudioError(f"damaged or truncated: {_short(failure[0])}", path)


def _iter_blocks_sequential(handle: sf.SoundFile, block: int, margin: int, period_in: int, period_out: int,
                            sample_rate: int, failure: list[BaseException]) -> Iterator[np.ndarray]:
    """Read the file front to back once, keeping ``margin`` input samples of context around blocks.

    No seeking: compressed formats (Opus, MP3) do not decode sample-exactly after a seek, and
    re-decoding the margins would cost time. Reads go in pieces of about a second so a truncated or
    corrupt file yields everything before the damage; the error is then put in ``failure``.
    """
    rate = handle.samplerate
    total = handle.frames
    data = np.zeros(0, dtype=np.float32)  # input samples [data_lo, data_lo + data.size)
    data_lo = 0
    first = 0
    while first < total:
        hi = min(total, first + block + margin)
        want = hi - (data_lo + data.size)
        if want > 0:
            chunk = _read_pieces(handle, want, rate, failure)
            data = np.concatenate([data, chunk])
            if chunk.size < want:  # the header promised more than the file holds, or it is damaged
                total = data_lo + data.size
                hi = total
                if first >= total:
                    break
        lo = max(0, first - margin)
        out = resample(data[lo - data_lo: hi - data_lo], rate, sample_rate)
        skip = (first - lo) // period_in * period_out
        keep = (min(first + block, total) - first) * sample_rate // rate
        yield out[skip: skip + keep]
        first += block
        drop = max(0, first - margin) - data_lo
        if drop > 0:
            data, data_lo = data[drop:], data_lo + drop


@contextmanager
def _quiet_mpg123() -> Iterator[None]:
    """Hold back libmpg123's stderr lines while the body runs; everything else written to stderr passes.

    libsndfile's MP3 decoder prints "part2_3_length (N) too large for available bit count" on
    piecewise reads of valid files (hundreds for a long talk) although the samples equal a whole-file
    read: a user reading "error" hundreds of times would think the file broken. The C library writes to
    file descriptor 2 directly, so the descriptor itself is pointed at a temporary file meanwhile.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if b"libmpg123" not in line]
            if kept:
                os.write(2, b"".join(kept))


def _read_pieces(handle: sf.SoundFile, want: int, piece: int, failure: list[BaseException]) -> np.ndarray:
    """Up to ``want`` mono samples, read ``piece`` at a time; stops early at the end or a decoding error."""
    parts, got = [], 0
    quiet = _quiet_mpg123 if str(getattr(handle, "subtype", "")).startswith("MPEG_") else nullcontext
    while got < want:
        n = min(piece, want - got)
        try:
            with quiet():
                chunk = _to_mono(handle.read(n, dtype="float32", always_2d=True))
        except (sf.LibsndfileError, RuntimeError) as exc:
            failure.append(exc)
            break
        parts.append(chunk)
        got += chunk.size
        if chunk.size < n:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def save_flac(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write [T] audio as 16-bit FLAC atomically (float in [-1, 1], or int16 written unchanged)."""
    path = Path(path)
    data = wave if wave.dtype == np.int16 else np.clip(wave, -1.0, 1.0)
    # encode in memory: libsndfile fsyncs real files on close, which costs more than the encoding
    # when thousands of segments are written; the atomic rename still guards against half-written files
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, format="FLAC", subtype="PCM_16")
    with atomic_path(path, suffix=".flac") as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path
