"""Audio decoding to 16 kHz mono float32, whole or in blocks.

soundfile (libsndfile) reads wav, flac, ogg/vorbis, ogg/opus and mp3 quickly and can seek; everything
else (m4a, mp4, webm, aac, ...) goes through torchcodec with Debian's ffmpeg, decoded at the file's own
rate; resampling is torchaudio's for every format. Long recordings are read block by block so a
2-hour file never sits in memory at once.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from lrasr.audio.joins import QUIET_RELATIVE, SILENCE, JoinError, join_offset, loudest
from lrasr.errors import LrasrError
from lrasr.io import atomic_path

SAMPLE_RATE = 16_000
# Recorded beside every FLAC written from decoded audio (labeled items, parquet rows): a FLAC whose
# sidecar names another version is decoded again. Bump it whenever what ``load``/``load_bytes``
# return for the same input changes (decoders, resampling, channel mixing, trimming).
DECODE_VERSION = 1
HEADER_LENGTH_EXTENSIONS = {".flac", ".mp3"}  # length read from a header that survives truncation
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".oga", ".au"}


class AudioError(LrasrError):
    """A file that cannot be decoded as audio. ``reason`` is the message without the file name, for
    rejected rows that name the file in their own column."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message, path, line)
        self.reason = message


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int
    num_channels: int
    backend: str  # "soundfile" or "torchcodec"

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate if self.sample_rate else 0.0


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioError("file not found", path)
    if not path.is_file():
        raise AudioError("not a regular file", path)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)", path)


def _torchcodec_decoder(path: Path):
    """A torchcodec decoder at the file's own rate and channels."""
    try:
        from torchcodec.decoders import AudioDecoder
    except (ImportError, RuntimeError, OSError) as exc:  # missing ffmpeg shared libraries
        raise AudioError(
            f"cannot decode this format without torchcodec+ffmpeg ({exc}); install ffmpeg (apt-get install ffmpeg)", path
        ) from None
    try:
        return AudioDecoder(str(path))
    except Exception as exc:  # torchcodec raises plain RuntimeError/ValueError for bad input
        raise AudioError(f"not decodable audio ({_short(exc)})", path) from None


def _short(exc: BaseException) -> str:
    """First line of a library's message, without C++ source locations, at most 200 characters."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    return re.sub(r"^\w+, \S+\.(?:cpp|cc|c|h):\d+, ", "", text[0]).strip()[:200]


def probe(path: str | Path) -> AudioInfo:
    """Sample rate, length and channels of a file without decoding it all. Raises ``AudioError``."""
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            info = sf.info(str(path))
            if info.frames > 0 or info.format != "MPEG":
                return AudioInfo(info.samplerate, int(info.frames), info.channels, "soundfile")
        except (sf.LibsndfileError, RuntimeError):
            pass  # fall through to ffmpeg, which knows more containers
    decoder = _torchcodec_decoder(path)
    meta = decoder.metadata
    rate = int(meta.sample_rate or 0)
    seconds = meta.duration_seconds or meta.duration_seconds_from_header
    if not rate or seconds is None:
        raise AudioError("no audio stream with a known sample rate and duration", path)
    return AudioInfo(rate, int(round(seconds * rate)), int(meta.num_channels or 1), "torchcodec")


def check_end(path: str | Path, info: AudioInfo) -> None:
    """Raise ``AudioError`` when the last samples ``info`` promises cannot be read.

    A cut-off FLAC or MP3 keeps a header that claims the full length, so ``probe`` alone accepts it;
    reading from 1024 samples before the promised end (a seek, about a millisecond) finds the damage.
    WAV and Ogg lengths come from the data itself (checking them costs up to 3 ms each for nothing);
    files that only ffmpeg reads are not checked here.
    """
    if info.backend != "soundfile" or info.num_frames <= 0:
        return
    if Path(path).suffix.lower() not in HEADER_LENGTH_EXTENSIONS:
        return
    want = min(1024, info.num_frames)
    try:
        with sf.SoundFile(str(path)) as handle:
            handle.seek(info.num_frames - want)
            got = handle.read(want, dtype="float32", always_2d=True).shape[0]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"damaged or truncated: cannot read its end ({_short(exc)})", path) from None
    if got == 0:  # not got < want: an MP3 header's length is an estimate, often a few ms long
        raise AudioError(f"damaged or truncated: the header promises {info.duration:.2f} s but the data ends earlier",
                         path)


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
            data, rate = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"not decodable audio ({_short(exc)})", path) from None
        return resample(_to_mono(data), rate, sample_rate)
    decoder = _torchcodec_decoder(path)
    try:
        samples = decoder.get_samples_played_in_range(start, end)
    except Exception as exc:
        raise AudioError(f"decoding failed ({_short(exc)})", path) from None
    return resample(samples.data.mean(dim=0).numpy(), int(samples.sample_rate), sample_rate)


def load_bytes(data: bytes, sample_rate: int = SAMPLE_RATE, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded audio file held in memory (a parquet row's audio) to mono float32 [T].

    soundfile first (wav, flac, ogg, mp3), then torchcodec for anything else, as ``load`` does for
    files. ``name`` only labels errors. Raises ``AudioError`` with a one-line reason.
    """
    if not data:
        raise AudioError("empty audio (0 bytes)", name)
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
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
        with (sf.SoundFile(str(path)) if info.backend == "soundfile" else _CodecReader(path, info)) as handle:
            yield from _iter_blocks_sequential(handle, block, margin, period_in, period_out, sample_rate, failure)
    except (sf.LibsndfileError, RuntimeError) as exc:
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


def _read_pieces(handle: sf.SoundFile, want: int, piece: int, failure: list[BaseException]) -> np.ndarray:
    """Up to ``want`` mono samples, read ``piece`` at a time; stops early at the end or a decoding error."""
    parts, got = [], 0
    while got < want:
        n = min(piece, want - got)
        try:
            chunk = _to_mono(handle.read(n, dtype="float32", always_2d=True))
        except (sf.LibsndfileError, RuntimeError) as exc:
            failure.append(exc)
            break
        parts.append(chunk)
        got += chunk.size
        if chunk.size < n:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class _CodecReader:
    """A torchcodec-decodable file read front to back at its own rate, like a ``sf.SoundFile``.

    The decoder is asked for whole seconds only at the file's own rate: letting ffmpeg resample each
    requested range put block joins up to 6 ms off (repeated or missing samples). Resampling is then
    torchaudio's, as for every other format. The header's duration is only an estimate for some
    containers (raw ADTS AAC): the piece that reaches it reads on to the stream's true end, and
    ``frames`` stays "unknown" (huge) so the caller stops when reads come back short.

    Only the range from 0 is trimmed exactly at the stream's start. A later range is placed by
    packet timestamps, which can be off by a few samples: Matroska/WebM rounds them to whole
    milliseconds (Opus's 6.5 ms encoder delay stamped as 7 ms put every later range 24 samples at
    48 kHz early, and the first join repeated them; Vorbis's offset changes from join to join). So
    each later piece is decoded from OVERLAP_SECONDS before the samples already delivered, its offset
    measured against them (``join_offset``), and it is cut to continue exactly where they end.

    Where those delivered samples are too quiet to measure against (digital silence, a fade) while
    the new piece is not, the piece is decoded again from the last whole second of delivered audio
    that could be measured (the "anchor", at most a piece back when speech goes on), or from the
    stream's start when nothing before was loud enough: an offset guessed from an earlier join would
    be wrong for Vorbis. A quiet piece keeps the last measured offset (where it lands cannot be heard),
    and so does a piece after more than MAX_REDECODE_SECONDS of silence (exact for Opus and AAC, whose
    offset is the same at every join). A best match that is no match, or lies at the search limit,
    raises ``AudioError`` naming the file (see ``lrasr.audio.joins``) instead of shifting the rest.
    """

    PIECE_SECONDS = 10
    OVERLAP_SECONDS = 1
    SETTLE_SECONDS = 0.15  # a decoder starting mid-stream (Opus, AAC) is inexact for its first frames
    WINDOW_SECONDS = 0.2  # compared to find the offset
    MAX_OFFSET_SECONDS = 0.15  # WMA (ASF) ranges start ~92 ms early, ALAC in CAF up to a 4096-sample packet
    MAX_REDECODE_SECONDS = 120  # decoding again from an anchor further back holds too much at once

    def __init__(self, path: Path, info: AudioInfo):
        self._path = path
        self._decoder = _torchcodec_decoder(path)
        self.samplerate = info.sample_rate
        self.frames = 1 << 62
        self._duration = info.duration
        self._next_second = 0
        self._ended = False
        self._buffer = np.zeros(0, dtype=np.float32)
        self._delivered = 0  # samples handed to the buffer so far
        self._tail = np.zeros(0, dtype=np.float32)  # the last OVERLAP_SECONDS of them
        self._offset_seen = 0  # the last offset measured (kept by a piece too quiet to place)
        self._level = 0.0  # the loudest window's mean square delivered so far (for the quiet threshold)
        self._anchor: tuple[int, np.ndarray] | None = None  # (second s, delivered [s, s + 1 s)), measurable

    def __enter__(self) -> "_CodecReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self._decoder = None

    def read(self, frames: int, dtype: str = "float32", always_2d: bool = False) -> np.ndarray:
        """Up to ``frames`` mono samples [n] (fewer only at the end); decoding errors raise RuntimeError,
        a join that cannot be placed raises ``AudioError``."""
        rate = self.samplerate
        while self._buffer.size < frames and not self._ended:
            start = self._next_second
            last = start + self.PIECE_SECONDS >= self._duration - 1e-6
            stop = None if last else start + self.PIECE_SECONDS
            if not self._delivered:
                begin, piece = 0, self._decode(0, stop, fresh=False)
            else:
                begin, piece = self._placed_piece(max(0, start - self.OVERLAP_SECONDS), stop)
            ended = last or piece.size == 0  # (an overlap alone means the stream ended before ``start``)
            self._deliver(piece)
            self._next_second += self.PIECE_SECONDS
            self._ended = ended
        out, self._buffer = self._buffer[:frames], self._buffer[frames:]
        return out

    def _decode(self, begin: int, stop: int | None, fresh: bool = True) -> np.ndarray:
        """Mono samples [n] of seconds ``begin``..``stop`` at the file's rate. Going back needs a seek,
        which a used decoder does not always place right (Opus in MP4 resumed where it had stopped):
        a fresh one seeks from scratch (about 2 ms)."""
        try:
            decoder = _torchcodec_decoder(self._path) if fresh else self._decoder
            samples = decoder.get_samples_played_in_range(begin, stop)
        except AudioError as exc:
            raise RuntimeError(exc.reason) from None
        except Exception as exc:  # torchcodec raises RuntimeError/ValueError for damaged data
            raise RuntimeError(_short(exc)) from None
        return samples.data.mean(dim=0).numpy().astype(np.float32)

    def _placed_piece(self, begin: int, stop: int | None) -> tuple[int, np.ndarray]:
        """A later piece decoded from second ``begin`` (or earlier, see the class) and cut to start at
        the first sample not yet delivered: (the second it was decoded from, samples [n])."""
        rate = self.samplerate
        piece = self._decode(begin, stop)
        offset = self._join(self._tail, self._delivered - self._tail.size, piece, begin)
        if offset is None:  # nothing loud enough in the overlap to measure against
            rest = piece[max(0, self._delivered - begin * rate - self._offset_seen):]
            back = self._anchor[0] if self._anchor is not None else 0
            if loudest(rest, int(self.WINDOW_SECONDS * rate)) < self._quiet():
                offset = self._offset_seen  # a quiet piece: its exact place cannot be heard
            elif begin - back > self.MAX_REDECODE_SECONDS:
                # after minutes of silence: the last offset measured (Vorbis in WebM can land up to
                # a millisecond off, ALAC in CAF up to a packet)
                offset = self._offset_seen
            elif self._anchor is not None:
                begin, ref = self._anchor
                piece = self._decode(begin, stop)
                offset = self._join(ref, begin * rate, piece, begin, quiet=SILENCE)
                if offset is None:  # the anchor was measurable when kept: this cannot happen
                    raise AudioError(f"cannot place the decoded audio after {begin} s: its reference went "
                                     "silent; convert the file to FLAC (ffmpeg -i FILE out.flac)", self._path)
            else:  # nothing loud delivered yet: the range from 0 is trimmed exactly
                begin, piece, offset = 0, self._decode(0, stop), 0
        # piece[j] holds stream sample begin * rate + j + offset
        return begin, piece[max(0, self._delivered - begin * rate - offset):]

    def _join(self, ref: np.ndarray, ref_start: int, piece: np.ndarray, begin: int,
              quiet: float | None = None) -> int | None:
        """``join_offset`` of ``piece`` (decoded from second ``begin``) against delivered samples
        ``ref`` (stream positions from ``ref_start``); a bad match raises ``AudioError`` naming the file."""
        rate = self.samplerate
        try:
            offset = join_offset(ref, ref_start, piece, begin * rate, int(self.WINDOW_SECONDS * rate),
                                 int(self.MAX_OFFSET_SECONDS * rate), int(self.SETTLE_SECONDS * rate),
                                 self._quiet() if quiet is None else quiet)
        except JoinError as exc:
            raise AudioError(f"cannot join the pieces decoded before and after {begin + self.OVERLAP_SECONDS} s "
                             f"sample-exactly ({exc}); convert the file to FLAC (ffmpeg -i FILE out.flac) and use "
                             "that", self._path) from None
        if offset is not None:
            self._offset_seen = offset
        return offset

    def _quiet(self) -> float:
        """Mean square below which a window is not measured: QUIET_RELATIVE of the loudest so far."""
        return max(SILENCE, QUIET_RELATIVE * self._level)

    def _deliver(self, piece: np.ndarray) -> None:
        """Append ``piece`` [n] to the output and keep what later joins measure against."""
        rate = self.samplerate
        width = int(self.WINDOW_SECONDS * rate)
        self._level = max(self._level, loudest(piece, width))
        history = np.concatenate([self._tail, piece])
        history_start = self._delivered - self._tail.size
        self._buffer = np.concatenate([self._buffer, piece])
        self._delivered += piece.size
        self._tail = history[-self.OVERLAP_SECONDS * rate:]
        # the anchor: the latest whole second of this history whose measured windows (past the settle
        # time, away from the edges) hold something loud enough
        lo = int(self.SETTLE_SECONDS * rate) + int(self.MAX_OFFSET_SECONDS * rate)
        hi = rate - int(self.MAX_OFFSET_SECONDS * rate)
        second = (history_start + history.size) // rate - 1
        while second * rate >= history_start and (self._anchor is None or second > self._anchor[0]):
            slot = history[second * rate - history_start: (second + 1) * rate - history_start]
            if loudest(slot[lo:hi], width) >= self._quiet():
                self._anchor = (second, slot.copy())
                break
            second -= 1


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
