"""Formats only ffmpeg reads (m4a, mp4, webm, aac, wma, ...), read front to back.

``CodecReader`` looks like a ``soundfile.SoundFile`` to ``lrasr.audio.decode.iter_blocks``: it decodes
the file through torchcodec in pieces at its own rate and joins them sample-exactly (see the class).
``FfmpegReader`` does the same through the ``ffmpeg`` command, for containers where torchcodec loses
audio that the command decodes (``FFMPEG_COMMAND_EXTENSIONS``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lrasr.audio.errors import AudioError, short_reason
from lrasr.audio.joins import QUIET_RELATIVE, SILENCE, JoinError, join_offset, loudest


# torchcodec 0.11 with ffmpeg 5.1 drops the decoder's last (flushed) frame of WMA, whose timestamp
# is unset: 512 samples at 16 kHz, 1024 at 22.05 kHz, the end of the speech when it ends the file; and
# the first packet of a CAF stream indexed by packet table (Opus, AAC; ALAC goes through libsndfile,
# see lrasr.audio.caf): 960 samples of Opus. The ffmpeg command decodes both completely.
FFMPEG_COMMAND_EXTENSIONS = {".wma", ".caf"}


@functools.lru_cache(maxsize=1)
def ffmpeg_command() -> str | None:
    """The ffmpeg executable, or None when it is not installed (torchcodec is used then); looked up once
    (a probe of every .wma/.caf asked PATH again)."""
    return shutil.which("ffmpeg")


def torchcodec_decoder(path: Path):
    """A torchcodec decoder at the file's own rate and channels."""
    try:
        from torchcodec.decoders import AudioDecoder
    except (ImportError, RuntimeError, OSError) as exc:  # missing ffmpeg shared libraries
        raise AudioError(
            f"cannot decode this format without torchcodec+ffmpeg ({exc}); install ffmpeg (apt-get install ffmpeg)", path
        ) from None
    try:
        # absolute: ffmpeg's libraries read a relative name such as 'concat:x.m4a' as a protocol
        source = os.path.abspath(path)
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:  # a name that is not UTF-8: torchcodec takes only UTF-8 names, or a file
            source = open(path, "rb")  # the decoder reads from it for its whole life
        return AudioDecoder(source)
    except Exception as exc:  # torchcodec raises plain RuntimeError/ValueError for bad input
        raise AudioError(f"not decodable audio ({short_reason(exc)})", path) from None


class CodecReader:
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

    def __init__(self, path: Path, sample_rate: int, duration: float):
        self._path = path
        self._decoder = torchcodec_decoder(path)
        self.samplerate = sample_rate
        self.frames = 1 << 62
        self._duration = duration
        self._next_second = 0
        self._ended = False
        self._buffer = np.zeros(0, dtype=np.float32)
        self._delivered = 0  # samples handed to the buffer so far
        self._tail = np.zeros(0, dtype=np.float32)  # the last OVERLAP_SECONDS of them
        self._offset_seen = 0  # the last offset measured (kept by a piece too quiet to place)
        self._level = 0.0  # the loudest window's mean square delivered so far (for the quiet threshold)
        self._anchor: tuple[int, np.ndarray] | None = None  # (second s, delivered [s, s + 1 s)), measurable

    def __enter__(self) -> "CodecReader":
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
            decoder = torchcodec_decoder(self._path) if fresh else self._decoder
            samples = decoder.get_samples_played_in_range(begin, stop)
        except AudioError as exc:
            raise RuntimeError(exc.reason) from None
        except Exception as exc:  # torchcodec raises RuntimeError/ValueError for damaged data
            raise RuntimeError(short_reason(exc)) from None
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


class FfmpegReader:
    """A file decoded front to back by the ``ffmpeg`` command at its own rate, like a ``sf.SoundFile``
    read for mono samples; ``frames`` is "unknown" (huge): the caller stops when a read comes back short.

    The command writes 32-bit float samples of the file's first audio stream to a pipe with all
    ``channels`` interleaved; they are averaged here as for every other format. The file is named
    ``file:<absolute path>`` so that no name reads as an option or a protocol.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int):
        command = ffmpeg_command()
        if command is None:
            raise AudioError("the ffmpeg command is needed for this format; install ffmpeg (apt-get install "
                             "ffmpeg)", path)
        self._path = path
        self.samplerate = sample_rate
        self.channels = max(1, channels)
        self.frames = 1 << 62
        self._errors = tempfile.TemporaryFile()
        self._process: subprocess.Popen | None = subprocess.Popen(
            [command, "-nostdin", "-hide_banner", "-loglevel", "error", "-i",
             b"file:" + os.fsencode(os.path.abspath(path)), "-vn", "-sn", "-dn", "-ac", str(self.channels),
             "-c:a", "pcm_f32le", "-f", "f32le", "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._errors)

    def __enter__(self) -> "FfmpegReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.stdout.close()
            self._process.wait()
            self._process = None
        self._errors.close()

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = False) -> np.ndarray:
        """Up to ``frames`` (all that is left when negative) mono samples [n], fewer only at the end;
        a command that fails raises RuntimeError with its last error line (what came before is kept)."""
        if self._process is None:
            return np.zeros(0, dtype=np.float32)
        width = 4 * self.channels
        data = self._process.stdout.read(frames * width if frames >= 0 else -1)
        whole = len(data) // width * width
        samples = np.frombuffer(data[:whole], dtype="<f4").reshape(-1, self.channels)
        mono = samples.mean(axis=1, dtype=np.float32) if self.channels > 1 else samples[:, 0].copy()
        if frames < 0 or len(data) < frames * width:  # the end: the command has finished
            self._finish()
        return mono

    def _finish(self) -> None:
        process, self._process = self._process, None
        process.stdout.close()
        code = process.wait()
        if code != 0:
            self._errors.seek(0)
            lines = self._errors.read().decode("utf-8", errors="replace").strip().splitlines()
            self._errors.close()
            last = re.sub(r"^\[[^]]*\] ", "", lines[-1]) if lines else f"exit status {code}"  # "[asf @ 0x..] "
            raise RuntimeError(f"ffmpeg failed: {last}")
