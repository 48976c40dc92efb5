"""Core Audio Format (.caf) files with ALAC that libsndfile refuses only for a header field.

ffmpeg's CAF muxer leaves the ``desc`` chunk's format flags at 0 for ALAC, where Apple's tools and
libsndfile record the source bit depth there (1 = 16 bit, 2 = 20, 3 = 24, 4 = 32); libsndfile then
refuses the file ("unsupported encoding"). The same bit depth is in the ALAC magic cookie (``kuki``
chunk), so a read-only view of the file that shows the flags the cookie implies lets libsndfile decode
it, sample for sample as ffmpeg's command does. torchcodec, the other route, drops the first packet of
ALAC in CAF (4096 samples, 0.19 s at 22.05 kHz), so it is not used for these.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

ALAC_FLAGS = {16: 1, 20: 2, 24: 3, 32: 4}  # CAF's kAppleLosslessFormatFlag_<n>BitSourceData
FLAGS_OFFSET = 32  # file header (8) + desc chunk header (12) + mSampleRate (8) + mFormatID (4)
MAX_CHUNKS = 64  # desc, chan, kuki, info, pakt, free ... come before the audio data in practice
MAX_COOKIE = 4096  # an ALAC cookie is 24 bytes, 48 with QuickTime's frma/alac atoms around it


def alac_flags_fix(handle: BinaryIO) -> bytes | None:
    """The 4 big-endian bytes to show at ``FLAGS_OFFSET`` of a CAF file whose ALAC ``desc`` says 0
    where the bit depth belongs, taken from its cookie; None when the file needs no fix (not CAF, not
    ALAC, flags already set) or the cookie names no depth CAF knows. Leaves ``handle`` at offset 0."""
    try:
        handle.seek(0)
        head = handle.read(FLAGS_OFFSET + 4)
        if (len(head) < FLAGS_OFFSET + 4 or head[:4] != b"caff" or head[8:12] != b"desc"
                or head[28:32] != b"alac" or head[32:36] != bytes(4)):
            return None
        pos = 8
        for _ in range(MAX_CHUNKS):
            handle.seek(pos)
            header = handle.read(12)
            if len(header) < 12:
                return None
            kind, size = header[:4], int.from_bytes(header[4:], "big", signed=True)
            if kind == b"kuki" and 0 < size <= MAX_COOKIE:
                flag = ALAC_FLAGS.get(_cookie_bit_depth(handle.read(size)))
                return None if flag is None else flag.to_bytes(4, "big")
            if kind == b"data" or size < 0:  # the audio (size -1: "to the end of the file") comes last
                return None
            pos += 12 + size
        return None
    finally:
        handle.seek(0)


def _cookie_bit_depth(cookie: bytes) -> int | None:
    """bitDepth of an ALAC magic cookie: the ALACSpecificConfig (frameLength u32, compatibleVersion u8,
    bitDepth u8, ...), bare as Apple and libsndfile write it or after 'frma' and 'alac' atoms (ffmpeg)."""
    if cookie[4:8] == b"frma":
        cookie = cookie[int.from_bytes(cookie[:4], "big"):]
    if cookie[4:8] == b"alac":
        cookie = cookie[12:]  # atom size, type, version and flags
    return cookie[5] if len(cookie) >= 24 else None


class FlagsFixed(io.RawIOBase):
    """``raw`` (a seekable binary file) read-only, showing ``flags`` at ``FLAGS_OFFSET``. Closing it
    closes ``raw``."""

    def __init__(self, raw: BinaryIO, flags: bytes):
        super().__init__()
        self._raw = raw
        self._flags = flags

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        pos = self._raw.tell()
        got = self._raw.readinto(view)
        lo, hi = max(pos, FLAGS_OFFSET), min(pos + (got or 0), FLAGS_OFFSET + 4)
        if lo < hi:
            view[lo - pos: hi - pos] = self._flags[lo - FLAGS_OFFSET: hi - FLAGS_OFFSET]
        return got

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def fixed_view(handle: BinaryIO) -> BinaryIO | None:
    """``handle`` (an open CAF file or bytes in a BytesIO) as libsndfile can read it, or None when it
    needs no fix; the view then owns ``handle``."""
    flags = alac_flags_fix(handle)
    return None if flags is None else FlagsFixed(handle, flags)


class _ViewSoundFile(sf.SoundFile):
    """A ``sf.SoundFile`` reading a file-like view that it closes with itself."""

    def __init__(self, view: BinaryIO):
        self._view = view
        try:
            super().__init__(view)
        except BaseException:
            view.close()
            raise

    def close(self) -> None:
        super().close()
        self._view.close()


def open_fixed(path: Path) -> sf.SoundFile | None:
    """libsndfile's reader of the CAF file ``path`` through ``fixed_view``, or None when it needs no fix
    (open it as usual). Raises OSError when the file cannot be read, ``sf.LibsndfileError`` when
    libsndfile still cannot decode it."""
    handle = open(path, "rb")  # a name that is not UTF-8 opens as well as any
    try:
        view = fixed_view(handle)
    except BaseException:
        handle.close()
        raise
    if view is None:
        handle.close()
        return None
    return _ViewSoundFile(view)
