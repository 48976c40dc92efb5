"""Decoding every supported format to 16 kHz mono float32, whole and in blocks, and bad files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import espeak
from lrasr.audio.decode import AudioError, iter_blocks, load, probe, resample, save_flac

# (relative path, original rate, channels, subtype note) covering the formats of the shared corpora
REAL_FILES = [
    ("en_whisper_jfk/jfk.flac", 44100, 2),  # FLAC, stereo, 24-bit
    ("en_fsdd_testsplit/recordings/0_george_0.wav", 8000, 1),  # WAV 8 kHz
    ("en_speechbrain_samples/TTS/LJ050-0131.wav", 22050, 1),  # WAV 22.05 kHz
    ("ml_smc_msc_crowd/audio/007a1f8b-03e8-41d9-929c-b40873b8b229.opus", 48000, 1),  # Ogg Opus 48 kHz
    ("te_commonvoice_119/clips/common_voice_te_42973996.mp3", 32000, 1),  # MP3 32 kHz
    ("vad_silero/test.mp3", 44100, 2),  # MP3 stereo 44.1 kHz
]


def _ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


def _envelope(x: np.ndarray) -> np.ndarray:
    n = x.size // 160
    return np.sqrt((x[: n * 160].reshape(n, 160) ** 2).mean(axis=1))


def _best_envelope_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 20) -> float:
    ea, eb = _envelope(a), _envelope(b)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (ea[lag:], eb) if lag >= 0 else (ea, eb[-lag:])
        n = min(x.size, y.size)
        best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


@pytest.mark.parametrize("rel,rate,channels", REAL_FILES, ids=[r[0].split("/")[-1][:24] for r in REAL_FILES])
def test_real_speech_decodes_to_16k_mono(shared_corpora, rel, rate, channels):
    path = shared_corpora / rel
    info = probe(path)
    assert (info.sample_rate, info.num_channels) == (rate, channels)
    wave = load(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size / 16000 - info.duration) < 0.05 + 0.01 * info.duration
    assert np.isfinite(wave).all() and np.abs(wave).max() < 1.5
    assert np.sqrt(np.mean(wave**2)) > 1e-3, "decoded speech should not be silent"


def test_stereo_is_averaged_and_24bit_kept(shared_corpora):
    path = shared_corpora / "en_whisper_jfk/jfk.flac"
    raw, rate = sf.read(str(path), dtype="float64", always_2d=True)
    expected = resample(raw.mean(axis=1).astype(np.float32), rate)
    wave = load(path)
    assert wave.size == expected.size
    np.testing.assert_allclose(wave, expected, atol=1e-5)
    assert sf.info(str(path)).subtype == "PCM_24"
    # 24-bit input is not truncated to 16 bits on the way (values between 16-bit steps survive)
    steps = np.abs(raw[:, 0] * 32768 - np.round(raw[:, 0] * 32768))
    assert steps.max() > 0.1


@pytest.mark.parametrize("rel,block", [("en_whisper_jfk/jfk.flac", 3.0), ("vad_webrtcvad/leak-test.wav", 2.5),
                                       ("vad_silero/test.opus", 2.0)])
def test_blocks_concatenate_to_whole_file(shared_corpora, rel, block):
    path = shared_corpora / rel
    whole = load(path)
    blocks = list(iter_blocks(path, block_seconds=block))
    assert len(blocks) >= 2
    joined = np.concatenate(blocks)
    assert abs(joined.size - whole.size) <= 2
    n = min(joined.size, whole.size)
    np.testing.assert_allclose(joined[:n], whole[:n], atol=2e-4)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    return espeak("ഇത് ഒരു പരീക്ഷണ വാക്യമാണ്, ശബ്ദം വ്യക്തമായി കേൾക്കണം.",
                  tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.mark.parametrize("ext,args", [
    ("m4a", ["-c:a", "aac", "-b:a", "64k"]),
    ("webm", ["-c:a", "libopus", "-b:a", "32k"]),
    ("aac", ["-c:a", "aac"]),
    ("mp4", ["-c:a", "aac"]),
    ("ogg", ["-c:a", "libvorbis"]),
    ("flac", ["-ar", "48000", "-ac", "2"]),
    ("wav", ["-ar", "32000", "-c:a", "pcm_f32le"]),
])
def test_generated_formats_decode(tmp_path, speech_wav, ext, args):
    original = load(speech_wav)
    path = _ffmpeg(speech_wav, tmp_path / f"speech.{ext}", *args)
    wave = load(path)
    assert abs(wave.size - original.size) / 16000 < 0.1, (wave.size, original.size)
    rms_ratio = np.sqrt(np.mean(wave**2)) / np.sqrt(np.mean(original**2))
    assert 0.7 < rms_ratio < 1.3
    # lossy codecs smear samples and some (raw AAC) keep their encoder delay: the 10 ms loudness
    # envelope must match at some lag under 0.2 s
    assert _best_envelope_correlation(wave, original) > 0.9
    blocks = np.concatenate(list(iter_blocks(path, block_seconds=1.5)))
    assert abs(blocks.size - wave.size) < 0.05 * 16000


def test_float_and_high_rate_wav(tmp_path):
    t = np.arange(48000 * 2) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "tone.wav", tone, 48000, subtype="FLOAT")
    wave = load(tmp_path / "tone.wav")
    assert wave.size == 32000
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / wave.size - 440) < 2


def test_save_flac_roundtrip_int16_and_float(tmp_path):
    pcm = (np.random.default_rng(0).standard_normal(1600) * 3000).astype(np.int16)
    save_flac(tmp_path / "a.flac", pcm)
    back, rate = sf.read(tmp_path / "a.flac", dtype="int16")
    assert rate == 16000 and np.array_equal(back, pcm)
    save_flac(tmp_path / "b.flac", np.array([2.0, -2.0, 0.5], dtype=np.float32))
    back, _ = sf.read(tmp_path / "b.flac", dtype="float32")
    assert back.max() <= 1.0 and back.min() >= -1.0
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left behind"


def test_bad_files_raise_audio_error_naming_the_file(tmp_path, speech_wav):
    empty = tmp_path / "empty.wav"
    empty.touch()
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    missing = tmp_path / "missing.flac"
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    for path, words in [(empty, "empty"), (text, "decod"), (missing, "not found"), (folder, "not a regular file")]:
        with pytest.raises(AudioError) as err:
            load(path)
        assert str(path) in str(err.value) and words in str(err.value).lower(), str(err.value)


def test_check_end_finds_a_cut_off_wav(tmp_path, speech_wav):
    """libsndfile reads a cut-off WAV to what is left without a word; its data chunk header still says
    how much was written, so check_end (used before a labeled item is accepted) names the file and both
    lengths. A complete WAV, one cut by a few bytes, and a streaming header (size 0) pass."""
    from lrasr.audio.decode import check_end, wav_shortfall

    data = speech_wav.read_bytes()
    full = probe(speech_wav)
    check_end(speech_wav, full)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"damaged or truncated: the header promises (\d+\.\d+) s") as err:
        check_end(cut, probe(cut))
    assert str(cut) in str(err.value) and f"{full.duration:.2f} s but" in str(err.value)
    (tmp_path / "nearly.wav").write_bytes(data[:-100])
    assert wav_shortfall(tmp_path / "nearly.wav") is None
    pos = data.index(b"data")
    streamed = data[: pos + 4] + (0).to_bytes(4, "little") + data[pos + 8: len(data) // 2]
    (tmp_path / "streamed.wav").write_bytes(streamed)
    assert wav_shortfall(tmp_path / "streamed.wav") is None


def test_truncated_wav_decodes_what_is_there_or_fails_cleanly(tmp_path, speech_wav):
    data = speech_wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # header still claims the full length
    try:
        wave = load(cut)
    except AudioError as exc:
        assert str(cut) in str(exc)
    else:
        full = load(speech_wav)
        assert 0.3 * full.size < wave.size <= 0.6 * full.size


def test_damaged_flac_yields_the_audio_before_the_damage(tmp_path, speech_wav):
    wave = load(speech_wav)
    long = np.tile(wave, 4)
    sf.write(tmp_path / "ok.flac", long, 16000)
    data = (tmp_path / "ok.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(AudioError, match="damaged or truncated") as err:
        for block in iter_blocks(tmp_path / "cut.flac", block_seconds=60.0):
            got.append(block)
    assert str(tmp_path / "cut.flac") in str(err.value)
    decoded = np.concatenate(got)
    assert 0.25 * long.size < decoded.size < 0.6 * long.size
    np.testing.assert_allclose(decoded[:16000], long[:16000], atol=1e-3)


@pytest.mark.parametrize("ext,codec", [("m4a", "aac"), ("aac", "aac"), ("webm", "libopus"), ("webm", "libvorbis"),
                                       ("mp4", "libopus"), ("wma", "wmav2"), ("caf", "alac"), ("mka", "libmp3lame")])
def test_ffmpeg_format_blocks_join_sample_exactly(tmp_path, ext, codec):
    """Block joins of torchcodec-decoded files repeat or lose no samples (a chirp shows any jump).
    Opus in WebM: ranges after the first were placed 24 samples (48 kHz) early by millisecond
    timestamps; Opus in MP4: a used decoder resumed where it stopped instead of going back; WMA and
    ALAC in CAF: ranges start up to ~93 ms early, beyond the +-25 ms once searched (joins were off)."""
    t = np.arange(44100 * 22) / 44100  # two joins of the reader's 10 s pieces
    sf.write(tmp_path / "chirp.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t)).astype(np.float32), 44100)
    path = _ffmpeg(tmp_path / "chirp.wav", tmp_path / f"chirp.{ext}", "-c:a", codec)
    whole = load(path)
    joined = np.concatenate(list(iter_blocks(path, block_seconds=2.5)))  # joins at 2.5 s steps and 10 s pieces
    assert abs(joined.size - whole.size) <= 2
    n = min(joined.size, whole.size) - 16000 // 20  # the last 50 ms: resampling edge effects
    np.testing.assert_allclose(joined[:n], whole[:n], atol=1e-3)


def _chirp(seconds: float, rate: int = 44100) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t)).astype(np.float32)


@pytest.mark.parametrize("ext,codec", [("webm", "libopus"), ("webm", "libvorbis"), ("m4a", "aac")])
@pytest.mark.parametrize("silent", [(8.7, 11.5), (0.0, 12.0)], ids=["silent-join", "silent-start"])
def test_ffmpeg_blocks_join_exactly_after_silence(tmp_path, ext, codec, silent):
    """A join (the reader's 10 s pieces) inside digital silence cannot be measured there: the piece is
    placed against the last loud second before it, or decoded from the start when none was loud. Before,
    it kept offset 0, and WebM/Opus came out 8 samples (16 kHz) late after the silence."""
    wave = _chirp(22.0)
    wave[int(silent[0] * 44100): int(silent[1] * 44100)] = 0.0
    sf.write(tmp_path / "gap.wav", wave, 44100)
    path = _ffmpeg(tmp_path / "gap.wav", tmp_path / f"gap.{ext}", "-c:a", codec)
    whole = load(path)
    joined = np.concatenate(list(iter_blocks(path, block_seconds=2.5)))
    assert abs(joined.size - whole.size) <= 2
    n = min(joined.size, whole.size) - 16000 // 20
    np.testing.assert_allclose(joined[:n], whole[:n], atol=1e-3)


def test_ffmpeg_join_misplaced_beyond_search_raises(tmp_path, monkeypatch):
    """A container whose later ranges start 300 ms away from where they claim (beyond the +-150 ms
    searched) is an AudioError naming the file, not blocks shifted in silence."""
    import lrasr.audio.codec_reader as codec_reader

    sf.write(tmp_path / "c.wav", _chirp(14.0), 44100)
    path = _ffmpeg(tmp_path / "c.wav", tmp_path / "c.m4a", "-c:a", "aac")
    real = codec_reader.torchcodec_decoder

    class Misplaced:
        def __init__(self, inner):
            self.inner, self.metadata = inner, inner.metadata

        def get_samples_played_in_range(self, start, stop=None):
            return self.inner.get_samples_played_in_range(start + 0.3 if start else start, stop)

    monkeypatch.setattr(codec_reader, "torchcodec_decoder", lambda p: Misplaced(real(p)))
    with pytest.raises(AudioError, match="sample-exactly") as err:
        list(iter_blocks(path, block_seconds=2.5))
    assert str(path) in str(err.value)


def test_join_offset_checks_the_match():
    """join_offset: an exact match gives the offset; a piece of other audio, or one whose best match
    sits at the search limit, raises JoinError; a silent reference is "not measured" (None)."""
    from lrasr.audio.joins import JoinError, join_offset

    rng = np.random.default_rng(0)
    stream = rng.standard_normal(48000).astype(np.float32) * 0.1
    ref = stream[16000:32000]  # stream positions 16000..32000
    args = dict(width=3200, most=400, settle=1000, quiet=1e-12)
    assert join_offset(ref, 16000, stream[15000 + 7:], 15000, **args) == 7  # piece starts 7 samples late
    assert join_offset(ref, 16000, stream[15000 - 5:], 15000, **args) == -5
    with pytest.raises(JoinError, match="power"):
        join_offset(ref, 16000, rng.standard_normal(30000).astype(np.float32) * 0.1, 15000, **args)
    slow = (0.3 * np.sin(2 * np.pi * 3 * np.arange(48000) / 16000)).astype(np.float32)  # errors grow with lag
    with pytest.raises(JoinError, match="limit"):
        join_offset(slow[16000:32000], 16000, slow[15000 + 600:], 15000, **args)  # 600 > most: best at the edge
    assert join_offset(np.zeros_like(ref), 16000, stream[15000:], 15000, **args) is None
