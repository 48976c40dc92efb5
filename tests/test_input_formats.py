"""Input formats decoded sample for sample as ffmpeg's command decodes them (CAF, WMA), and labeled
TSVs written by spreadsheets (quoted fields)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import espeak
from lrasr.audio import codec_reader
from lrasr.audio.decode import iter_blocks, load, load_bytes, probe


def _need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed: it makes the test files and is the reference decoder")


def _convert(src: Path, dst: Path, *args: str) -> Path:
    _need_ffmpeg()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


def _ffmpeg_decode(path: Path, channels: int) -> np.ndarray:
    """What ``ffmpeg -i path -f f32le -`` decodes, channels averaged as lrasr does: [T]."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "f32le", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(out, dtype="<f4").reshape(-1, channels).mean(axis=1)


def _assert_like_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """probe, load (whole and a cut) and iter_blocks at the file's own rate give ffmpeg's samples."""
    info = probe(path)
    rate = info.sample_rate
    reference = _ffmpeg_decode(path, info.num_channels)
    whole = load(path, sample_rate=rate)
    assert whole.size == reference.size, (info.backend, whole.size, reference.size)
    np.testing.assert_array_equal(whole, reference)
    blocks = np.concatenate(list(iter_blocks(path, block_seconds=1.0, sample_rate=rate)))
    np.testing.assert_array_equal(blocks, reference)
    np.testing.assert_array_equal(load(path, sample_rate=rate, start=1.0, end=2.5), reference[rate: int(2.5 * rate)])
    return reference, info.num_frames


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """espeak-ng speech (22.05 kHz) whose trailing silence is cut: the file ends inside the last word."""
    folder = tmp_path_factory.mktemp("speech")
    wav = espeak("This recording ends in the middle of a spoken word", folder / "speech.wav", voice="en")
    wave, rate = sf.read(wav, dtype="float32")
    loud = np.flatnonzero(np.abs(wave) > 0.05)
    sf.write(folder / "cut.wav", wave[: loud[-1] - 200], rate)
    return folder / "cut.wav"


# ------------------------------------------------------------------------------------------- CAF
@pytest.mark.parametrize("rate", [16000, 22050])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("writer,codec", [("ffmpeg", "alac"), ("soundfile", "ALAC_16"), ("ffmpeg", "pcm_s16le")])
def test_caf_decodes_like_ffmpeg(tmp_path, speech, rate, channels, writer, codec):
    """ALAC in CAF lost its first packet through torchcodec (4096 samples, 0.19 s at 22.05 kHz). Now
    libsndfile reads it (ffmpeg's files through a header view): probe's length and every sample of
    load and iter_blocks equal ffmpeg's decode, for ffmpeg's and libsndfile's own CAF files."""
    path = tmp_path / "speech.caf"
    if writer == "ffmpeg":
        _convert(speech, path, "-ar", str(rate), "-ac", str(channels), "-c:a", codec)
    else:
        wav = _convert(speech, tmp_path / "s.wav", "-ar", str(rate), "-ac", str(channels), "-c:a", "pcm_s16le")
        wave, _ = sf.read(wav, dtype="int16", always_2d=True)
        sf.write(path, wave, rate, format="CAF", subtype=codec)
    reference, promised = _assert_like_ffmpeg(path)
    assert promised == reference.size
    assert probe(path).backend == "soundfile"
    assert np.abs(reference[:4096]).max() > 0.01  # the first packet holds speech: losing it shows


def test_caf_alac_24_bit_and_bytes(tmp_path):
    """24-bit ALAC (its depth read from the cookie), and a CAF held in memory (a parquet row's audio)."""
    t = np.arange(44100 * 3) / 44100
    tone = 0.4 * np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 470 * t)], axis=1)
    sf.write(tmp_path / "tone.wav", tone, 44100, subtype="PCM_24")
    path = _convert(tmp_path / "tone.wav", tmp_path / "tone.caf", "-c:a", "alac", "-sample_fmt", "s32p")
    reference, promised = _assert_like_ffmpeg(path)
    assert promised == reference.size == t.size
    np.testing.assert_allclose(load_bytes(path.read_bytes()), load(path), atol=1e-6)


def test_caf_opus_goes_through_the_ffmpeg_command(tmp_path, speech):
    """Opus in CAF (libsndfile lacks it) lost its first 960 samples through torchcodec."""
    path = _convert(speech, tmp_path / "speech.caf", "-c:a", "libopus")
    assert probe(path).backend == "ffmpeg"
    _assert_like_ffmpeg(path)


def test_caf_is_searched_in_folders():
    from lrasr.recipe import AUDIO_EXTENSIONS, UnlabeledCorpus

    assert "caf" in AUDIO_EXTENSIONS
    assert "caf" in UnlabeledCorpus(path=Path(".")).extensions


# ------------------------------------------------------------------------------------------- WMA
@pytest.mark.parametrize("rate,channels", [(16000, 1), (22050, 2)])
def test_wma_keeps_its_last_frame(tmp_path, speech, rate, channels):
    """torchcodec dropped WMA's last decoded frame (512 samples at 16 kHz, 1024 at 22.05 kHz): the end
    of a word here. The ffmpeg command decodes it; lrasr's samples equal its decode."""
    path = _convert(speech, tmp_path / "speech.wma", "-ar", str(rate), "-ac", str(channels), "-c:a", "wmav2")
    reference, _ = _assert_like_ffmpeg(path)
    tail = reference[-(512 if rate == 16000 else 1024):]
    assert np.sqrt(np.mean(tail**2)) > 0.005  # speech, not padding


def test_wma_name_like_an_option_or_a_protocol(tmp_path, speech, monkeypatch):
    """Given relative to the current folder, a name that ffmpeg would read as an option ('-y.wma') or as a
    protocol ('concat:x.wma', 'subfile,,...') is still just that file: it is passed as file:<absolute path>."""
    reference = load(_convert(speech, tmp_path / "plain.wma", "-c:a", "wmav2"))
    monkeypatch.chdir(tmp_path)
    for name in ("-y.wma", "concat:x.wma"):
        (tmp_path / name).write_bytes((tmp_path / "plain.wma").read_bytes())
        np.testing.assert_array_equal(load(Path(name)), reference)


def test_without_the_ffmpeg_command_torchcodec_is_used(tmp_path, speech, monkeypatch):
    path = _convert(speech, tmp_path / "speech.wma", "-c:a", "wmav2")
    monkeypatch.setattr(codec_reader, "ffmpeg_command", lambda: None)
    info = probe(path)
    assert info.backend == "torchcodec"
    assert abs(load(path).size - info.num_frames * 16000 / info.sample_rate) < 0.1 * 16000


# ------------------------------------------------------------------------------ spreadsheet TSVs
SPREADSHEET_ROWS = [
    ["path", "text", "speaker"],
    ["a.wav", "plain words", "s1"],
    ["b.wav", "a tab\there", "s2"],                   # Excel encloses it in quotes
    ["c.wav", 'he said "hi"', "s3"],                  # quoted, inner quotes doubled
    ["d.wav", "two lines\nin one cell", "s4"],        # Alt+Enter in a cell
    ["e.wav", '"Hello," she said', "s5"],
]


def _spreadsheet_tsv(path: Path) -> Path:
    """The rows as Excel writes "Text (Tab delimited)" (the csv module's excel-tab dialect: quotes
    only where needed, CRLF), then a row broken by hand (an unquoted tab) and a Common Voice style row
    whose quotes are literal text."""
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, dialect="excel-tab").writerows(SPREADSHEET_ROWS)
    text = out.getvalue() + "f.wav\tan unquoted\ttab\ts6\r\n" + 'g.wav\t"Run," he said\ts7\r\n'
    path.write_bytes(text.encode("utf-8"))
    return path


def test_spreadsheet_tsv_is_ingested_with_its_quoting(tmp_path):
    """Excel's quoted fields (a tab, a quote or a line break in a transcript) were rejected as
    "malformed row" or kept their quotes; a row that is really broken is still rejected, by line."""
    from lrasr.data.ingest import ingest_corpus
    from lrasr.recipe import LabeledCorpus

    path = _spreadsheet_tsv(tmp_path / "t.tsv")
    assert b'"a tab\there"' in path.read_bytes()  # the file really is quoted
    items, rejects = ingest_corpus(LabeledCorpus(format="tsv", path=path))
    got = [(it.audio.name, it.text, it.speaker, it.line) for it in items]
    assert got == [("a.wav", "plain words", "s1", 2), ("b.wav", "a tab\there", "s2", 3),
                   ("c.wav", 'he said "hi"', "s3", 4), ("d.wav", "two lines\nin one cell", "s4", 5),
                   ("e.wav", '"Hello," she said', "s5", 7), ("g.wav", '"Run," he said', "s7", 9)]
    assert [(r["source"], r["line"]) for r in rejects.rows] == [(str(path), 8)]
    assert rejects.rows[0]["reason"].startswith("malformed row: 4 fields, header has 3")


def test_stray_quote_in_tsv_does_not_swallow_the_next_rows(tmp_path):
    """A literal quote that opens a field and is never closed (Common Voice style) leaves the rows after
    it alone, even when one of them ends with a quote."""
    from lrasr.data.ingest import ingest_corpus
    from lrasr.recipe import LabeledCorpus

    path = tmp_path / "t.tsv"
    path.write_text('path\ttext\na.wav\t"quoted words\nb.wav\tends with a quote"\nc.wav\tok\n', encoding="utf-8")
    items, rejects = ingest_corpus(LabeledCorpus(format="tsv", path=path))
    assert [(it.text, it.line) for it in items] == [('"quoted words', 2), ('ends with a quote"', 3), ("ok", 4)]
    assert not rejects.rows


def test_spreadsheet_tsv_as_a_labeled_manifest(tmp_path):
    """evaluate/tune read a user's labeled TSV too: quoted fields are unquoted; a broken row is a
    one-line error naming the file and line (every row must be scored)."""
    from lrasr.data.manifest import read_labeled_manifest
    from lrasr.errors import LrasrError

    path = _spreadsheet_tsv(tmp_path / "t.tsv")
    with pytest.raises(LrasrError, match=r"t\.tsv:8: this row has 4 fields, the header 3"):
        read_labeled_manifest(path)
    lines = path.read_bytes().split(b"\r\n")
    path.write_bytes(b"\r\n".join(line for line in lines if not line.startswith(b"f.wav")))
    frame = read_labeled_manifest(path)
    assert frame["text"].tolist() == [row[1] for row in SPREADSHEET_ROWS[1:]] + ['"Run," he said']
    assert frame["id"].tolist() == ["a", "b", "c", "d", "e", "g"]


def test_quoted_line_break_in_the_first_column(tmp_path):
    """A table whose first column is the transcript (text, path): a cell with a line break there was not
    joined (the line closing it has as many fields as a row), so the row was rejected and the rest of the
    cell was paired with its audio as a transcript. A literal quote opening such a row still stays text."""
    import csv
    import io

    from lrasr.data.ingest import ingest_corpus
    from lrasr.recipe import LabeledCorpus

    out = io.StringIO()
    csv.writer(out, dialect="excel-tab").writerows([["text", "path"], ["two lines\nin one cell", "a.wav"],
                                                    ["plain", "b.wav"]])
    path = tmp_path / "t.tsv"
    path.write_text(out.getvalue() + '"Hello," she said\tc.wav\r\nends with a quote"\td.wav\r\n', encoding="utf-8")
    corpus = LabeledCorpus(format="tsv", path=path, text_column="text", audio_column="path")
    items, rejects = ingest_corpus(corpus)
    assert [(it.audio.name, it.text, it.line) for it in items] == [
        ("a.wav", "two lines\nin one cell", 2), ("b.wav", "plain", 4), ("c.wav", '"Hello," she said', 5),
        ("d.wav", 'ends with a quote"', 6)]
    assert not rejects.rows


def test_labeled_wma_is_decoded_once_by_prepare(tmp_path, speech):
    """A labeled .wma clip, read in place (labeled_audio: reference), was decoded by a new ffmpeg process
    every epoch of fine-tuning (72 ms per 5 s clip against 2 ms through torchcodec); prepare now writes
    it as FLAC once, with ffmpeg's samples. A WAV stays referenced in place."""
    from lrasr.data.manifest import read_manifest
    from lrasr.recipe import load_recipe
    from lrasr.stages.prepare_labeled import prepare_labeled

    data = tmp_path / "data"
    data.mkdir()
    wma = _convert(speech, data / "a.wma", "-c:a", "wmav2")
    (data / "b.wav").write_bytes(speech.read_bytes())
    (data / "t.tsv").write_text("path\ttext\tspeaker\na.wma\tഒന്ന്\ts1\nb.wav\tരണ്ട്\ts2\n", encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nlanguage: ml\nworkdir: {tmp_path / 'w'}\ncorpora:\n  labeled:\n"
                      f"    - {{format: tsv, path: {data / 't.tsv'}}}\n"
                      "prepare: {split: {dev: 0.0, test: 0.0}}\n", encoding="utf-8")
    summary, rejects = prepare_labeled(load_recipe(recipe))
    assert not rejects.rows
    rows = read_manifest(tmp_path / "w" / "prepare" / "train" / "manifest.tsv")
    audio = {Path(a).suffix: (tmp_path / "w" / "prepare" / "train" / a).resolve() for a in rows["audio"]}
    assert set(audio) == {".flac", ".wav"} and audio[".wav"] == (data / "b.wav").resolve()
    np.testing.assert_allclose(load(audio[".flac"]), load(wma), rtol=0, atol=2 ** -15)  # FLAC: 16-bit samples
