"""Re-written labeled audio (prepare.labeled_audio: flac) is reused on a rerun only while its source
is the file it was made from: a replacement with an older or the same modification time is decoded again."""

from __future__ import annotations

import os
from pathlib import Path

import dead_worker
import numpy as np
import pytest
import soundfile as sf

from lrasr.audio.decode import SAMPLE_RATE, load
from lrasr.data import ingest_audio
from lrasr.data.ingest_audio import check_audio, make_job
from lrasr.recipe import FilterConfig


def tone(path: Path, freq: float, seconds: float = 1.0, rate: int = 22050) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def dominant_hz(path: Path) -> float:
    wave = load(path, SAMPLE_RATE)
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[spectrum.argmax()])


def _job(src: Path, out: Path, start=None, end=None):
    return make_job(src, start, end, None, None, out, True, FilterConfig())


@pytest.mark.parametrize("mtime", ["same", "older"])
def test_replaced_source_is_decoded_again(tmp_path, mtime):
    src, out = tone(tmp_path / "a.wav", 440.0), tmp_path / "flac" / "a.flac"
    first = check_audio(_job(src, out))
    assert first.ok and first.audio == str(out) and abs(dominant_hz(out) - 440) < 5
    written = out.stat().st_mtime_ns
    # another recording of the same length (so the same size) put in its place, with the old or an
    # older modification time (cp -p, rsync, an archive restored)
    old = src.stat().st_mtime_ns
    tone(tmp_path / "b.wav", 1000.0).replace(src)
    stamp = old if mtime == "same" else old - 3_600 * 10**9
    os.utime(src, ns=(stamp, stamp))
    assert src.stat().st_mtime_ns <= written
    again = check_audio(_job(src, out))
    assert again.ok and abs(dominant_hz(out) - 1000) < 5  # not the stale 440 Hz FLAC


def test_unchanged_source_reuses_the_flac_and_a_damaged_flac_is_rewritten(tmp_path, monkeypatch):
    src, out = tone(tmp_path / "a.wav", 440.0, seconds=2.0), tmp_path / "a.flac"
    assert check_audio(_job(src, out, 0.5, 1.5)).ok
    assert (tmp_path / "a.flac.json").is_file()
    written = out.stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("the source was decoded again")

    with monkeypatch.context() as m:
        m.setattr(ingest_audio, "load", no_decoding)
        reused = check_audio(_job(src, out, 0.5, 1.5))
    assert reused.ok and reused.duration == pytest.approx(1.0) and out.stat().st_mtime_ns == written
    # another cut of the same source is not "the same" FLAC
    other = check_audio(_job(src, out, 0.0, 0.8))
    assert other.ok and other.duration == pytest.approx(0.8) and sf.info(str(out)).frames == int(0.8 * SAMPLE_RATE)
    # a FLAC cut short (no longer the samples written) is written again
    data, rate = sf.read(str(out), dtype="float32")
    sf.write(str(out), data[: len(data) // 2], rate, format="FLAC", subtype="PCM_16")
    fixed = check_audio(_job(src, out, 0.0, 0.8))
    assert fixed.ok and sf.info(str(out)).frames == len(data)


@pytest.mark.parametrize("recorded", ["missing", "other"])
def test_flac_from_another_decoder_version_is_decoded_again(tmp_path, monkeypatch, recorded):
    """The sidecar names the decoder version (DECODE_VERSION); a FLAC written by an lrasr whose decoding
    differed (another version, or one from before versions were recorded) is not reused."""
    import json

    from lrasr.audio.decode import DECODE_VERSION

    src, out = tone(tmp_path / "a.wav", 440.0), tmp_path / "a.flac"
    assert check_audio(_job(src, out)).ok
    side = tmp_path / "a.flac.json"
    meta = json.loads(side.read_text())
    assert meta["decoder"] == DECODE_VERSION
    if recorded == "missing":
        del meta["decoder"]
    else:
        meta["decoder"] = DECODE_VERSION + 1
    side.write_text(json.dumps(meta))
    decoded = []
    real = ingest_audio.load
    monkeypatch.setattr(ingest_audio, "load", lambda *a, **k: decoded.append(a) or real(*a, **k))
    assert check_audio(_job(src, out)).ok and len(decoded) == 1
    assert json.loads(side.read_text())["decoder"] == DECODE_VERSION  # rewritten under this version
    assert check_audio(_job(src, out)).ok and len(decoded) == 1  # ... and now reused



def test_a_format_decoder_change_redecodes_that_format_only(tmp_path, monkeypatch):
    """WMA's and CAF's decoding changed (session 5): their FLACs from the previous version are decoded
    again, while a WAV's (or an MP3's: hours for a large corpus) stay valid."""
    import json
    import shutil
    import subprocess

    from lrasr.audio.decode import DECODE_VERSION, decode_version

    assert decode_version("x.wma") == decode_version("a/b.CAF") == DECODE_VERSION + 1
    assert decode_version("x.mp3") == decode_version(None) == decode_version("s.parquet") == DECODE_VERSION
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg makes the WMA file")
    wav = tone(tmp_path / "a.wav", 440.0)
    wma = tmp_path / "b.wma"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "wmav2", str(wma)], check=True)
    jobs = {src: _job(src, tmp_path / f"{src.stem}.flac") for src in (wav, wma)}
    for job in jobs.values():
        assert check_audio(job).ok
    for src in jobs:  # as the previous lrasr recorded them
        side = tmp_path / f"{src.stem}.flac.json"
        meta = json.loads(side.read_text())
        assert meta["decoder"] == decode_version(src)
        side.write_text(json.dumps({**meta, "decoder": DECODE_VERSION}))
    decoded = []
    real = ingest_audio.load
    monkeypatch.setattr(ingest_audio, "load", lambda *a, **k: decoded.append(Path(a[0]).name) or real(*a, **k))
    assert all(check_audio(job).ok for job in jobs.values())
    assert decoded == ["b.wma"]


def test_killed_audio_worker_is_one_clear_error(tmp_path, monkeypatch):
    """BrokenProcessPool from a dead worker becomes an LrasrError that names an item's file and says to
    use fewer jobs, not a traceback."""
    from lrasr.errors import LrasrError

    monkeypatch.setattr(ingest_audio, "POOL_MIN_SECONDS", 0.0)
    monkeypatch.setattr(ingest_audio, "_checked", dead_worker.die)  # pickled by reference
    jobs = [dead_worker.Job(str(tmp_path / f"{i}.wav")) for i in range(2)]
    with pytest.raises(LrasrError, match="fewer --jobs") as err:
        list(ingest_audio.check_all(jobs, workers=2))
    assert str(err.value).startswith(str(tmp_path / "0.wav")) and "\n" not in str(err.value)
