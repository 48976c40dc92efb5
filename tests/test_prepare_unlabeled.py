"""`lrasr prepare` on unlabeled raw recordings: real and generated formats, bad inputs, a 3-hour
file, speech accounting, idempotent reruns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import espeak
from lrasr.audio.decode import iter_blocks, load
from lrasr.data.manifest import read_manifest
from lrasr.recipe import load_recipe
from lrasr.stages.prepare import run_prepare
from lrasr.vad import segment_stream

SR = 16000
SENTENCES = ["നമസ്കാരം, ഇന്ന് നല്ല കാലാവസ്ഥയാണ്.", "ഞാൻ ഒരു പുസ്തകം വായിക്കുന്നു.",
             "കുട്ടികൾ സ്കൂളിലേക്ക് പോകുന്നു.", "അവൻ വേഗത്തിൽ ഓടി വീട്ടിലെത്തി."]
REAL = ["en_whisper_jfk/jfk.flac", "vad_webrtcvad/leak-test.wav",
        "ml_smc_msc_crowd/audio/007a1f8b-03e8-41d9-929c-b40873b8b229.opus",
        "te_commonvoice_119/clips/common_voice_te_42973996.mp3"]
SPEECH_AT_3H = (3600.0, 10780.0)  # where the 3-hour file has speech
REPO = Path(__file__).resolve().parents[1]
MEASURED_RUN = """
import json, resource, sys
import torch
torch.set_num_threads(1)
import matplotlib.pyplot, pandas, soundfile, torchcodec.decoders, webrtcvad
from lrasr.recipe import load_recipe
from lrasr.stages.prepare import run_prepare
recipe = load_recipe(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = run_prepare(recipe)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"summary": summary, "added_rss_mb": (after - before) / 1024}))
"""


def utterance_mix(folder: Path, seed: int = 0, gap: float = 1.2) -> np.ndarray:
    """Espeak sentences separated by pauses with light noise, 16 kHz [T]."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(SR // 2, np.float32)]
    for i, text in enumerate(SENTENCES):
        parts += [load(espeak(text, folder / f"s{seed}_{i}.wav", speed=150 + 10 * i)),
                  np.zeros(int(gap * SR), np.float32)]
    wave = np.concatenate(parts)
    return (wave + 0.001 * rng.standard_normal(wave.size)).astype(np.float32)


def ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


def write_recipe(path: Path, workdir: Path, inputs: list[Path], extra: str = "") -> Path:
    lines = [f"name: t", "language: ml", f"workdir: {workdir}", "corpora:", "  unlabeled:"]
    lines += [f"    - path: {p}" for p in inputs]
    lines += ["prepare:", "  filters: {min_snr_db: 5}", extra]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_three_hour_flac(path: Path, speech: np.ndarray) -> Path:
    """3 hours of 16 kHz digital silence with ``speech`` at SPEECH_AT_3H, written block by block."""
    total = 3 * 3600 * SR
    with sf.SoundFile(str(path), "w", SR, 1, format="FLAC", subtype="PCM_16") as out:
        block = 600 * SR
        for first in range(0, total, block):
            chunk = np.zeros(min(block, total - first), np.float32)
            for at in SPEECH_AT_3H:
                lo = int(at * SR) - first
                if -speech.size < lo < chunk.size:
                    a, b = max(lo, 0), min(lo + speech.size, chunk.size)
                    chunk[a:b] = speech[a - lo: b - lo]
            out.write(chunk)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_corpora):
    root = tmp_path_factory.mktemp("prep")
    raw = root / "raw"
    raw.mkdir()
    work = root / "gen"
    work.mkdir()
    mix = utterance_mix(work)
    sf.write(raw / "talk.wav", mix, SR, subtype="PCM_16")
    shutil.copy(raw / "talk.wav", raw / "talk_copy.wav")  # exact duplicate audio
    ffmpeg(raw / "talk.wav", raw / "talk.m4a", "-c:a", "aac", "-b:a", "96k")
    other = utterance_mix(work, seed=1, gap=0.9)
    sf.write(work / "other.wav", other, SR)
    ffmpeg(work / "other.wav", raw / "other.webm", "-c:a", "libopus", "-ar", "48000")
    sf.write(work / "other2.flac", np.tile(other, 2), SR)
    data = (work / "other2.flac").read_bytes()
    (raw / "truncated.flac").write_bytes(data[: len(data) // 2])  # FLAC loses sync half-way
    data = (raw / "talk.wav").read_bytes()
    (raw / "truncated.wav").write_bytes(data[: len(data) // 3])
    (raw / "empty.wav").touch()
    (raw / "notes.wav").write_text("not audio at all\n" * 100)
    (raw / "gone.flac").symlink_to(root / "does-not-exist.flac")
    sf.write(raw / "silence.wav", np.zeros(8 * SR, np.float32), SR)
    (raw / "readme.txt").write_text("ignored: not an audio extension")
    make_three_hour_flac(raw / "three_hours.flac", mix[: 12 * SR])
    inputs = [raw] + [shared_corpora / r for r in REAL]
    recipe_path = write_recipe(root / "recipe.yaml", root / "exp", inputs)
    recipe = load_recipe(recipe_path)
    # run in a fresh process to measure the memory the stage adds on top of its imports
    child = subprocess.run([sys.executable, "-c", MEASURED_RUN, str(recipe_path)], cwd=REPO,
                           capture_output=True, text=True, check=True)
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    return {"root": root, "raw": raw, "recipe": recipe, "summary": measured["summary"], "mix": mix,
            "added_rss_mb": measured["added_rss_mb"],
            "out": recipe.workdir / "prepare", "shared": shared_corpora}


def _rejected(out: Path) -> pd.DataFrame:
    return read_manifest(out / "rejected.tsv", required=("input", "source", "reason"))


def test_manifest_rows_are_16k_mono_flac_matching_their_times(corpus):
    out = corpus["out"]
    manifest = read_manifest(out / "unlabeled/manifest.tsv")
    assert list(manifest.columns[:7]) == ["id", "audio", "duration", "source", "start", "end", "snr_db"]
    assert manifest["id"].is_unique and len(manifest) >= 10
    for row in manifest.itertuples():
        path = out / "unlabeled" / row.audio
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert abs(info.frames / SR - row.duration) < 0.002
        assert abs(row.end - row.start - row.duration) < 0.002
        assert 1.0 <= row.duration <= 15.0 and row.snr_db >= 5
    sources = set(manifest["source"])
    for rel in REAL:  # every real format produced segments
        assert str(corpus["shared"] / rel) in sources, rel
    for name in ("talk.wav", "talk.m4a", "other.webm", "three_hours.flac"):
        assert str(corpus["raw"] / name) in sources, name
    assert not list((out / "unlabeled").rglob(".*.tmp*")), "no temporary files left"


def test_segment_audio_is_the_source_audio(corpus):
    out = corpus["out"]
    manifest = read_manifest(out / "unlabeled/manifest.tsv")
    row = manifest[manifest["source"] == str(corpus["raw"] / "talk.wav")].iloc[1]
    seg, _ = sf.read(str(out / "unlabeled" / row["audio"]), dtype="float32")
    source = corpus["mix"][int(round(row["start"] * SR)): int(round(row["end"] * SR))]
    assert seg.size == source.size
    assert np.abs(seg - source).max() < 1e-3  # 16-bit rounding only


def test_every_bad_input_has_a_readable_reason(corpus):
    rejected = _rejected(corpus["out"])
    assert set(rejected["input"]) == {"unlabeled"}
    reasons = {Path(s).name: r for s, r in zip(rejected["source"], rejected["reason"])}
    assert "empty" in reasons["empty.wav"]
    assert reasons["notes.wav"].startswith("unreadable")
    assert "not found" in reasons["gone.flac"]
    assert reasons["silence.wav"].startswith("no speech")
    dup = rejected[rejected["source"] == str(corpus["raw"] / "talk_copy.wav")]
    assert len(dup) > 0 and dup["reason"].str.startswith("duplicate: same audio as talk-").all()
    manifest = read_manifest(corpus["out"] / "unlabeled/manifest.tsv")
    truncated = str(corpus["raw"] / "truncated.wav")
    # a WAV cut off after its header: what is left is segmented (here its segments repeat talk.wav's and
    # are rejected as duplicates), and a file-level row says what is missing
    cut_rows = rejected[(rejected["source"] == truncated) & (rejected["id"] == "")]
    assert len(cut_rows) == 1 and cut_rows["reason"].iloc[0].startswith("truncated: the header promises")
    assert (rejected[rejected["source"] == truncated]["id"] != "").any()
    damaged = str(corpus["raw"] / "truncated.flac")
    damaged_rows = rejected[(rejected["source"] == damaged) & (rejected["id"] == "")]  # file-level rows
    assert len(damaged_rows) == 1 and damaged_rows["reason"].iloc[0].startswith("decoding failed: stopped after")
    assert (manifest["source"] == damaged).sum() >= 2  # the audio before the damage is used
    assert "readme.txt" not in reasons
    assert corpus["summary"]["unlabeled"]["files_ignored_other_extensions"] == 1


def test_three_hour_file_is_processed_in_blocks(corpus):
    manifest = read_manifest(corpus["out"] / "unlabeled/manifest.tsv")
    rows = manifest[manifest["source"] == str(corpus["raw"] / "three_hours.flac")]
    assert len(rows) >= 2
    for at in SPEECH_AT_3H:
        near = rows[(rows["start"] > at - 1) & (rows["end"] < at + 13)]
        assert len(near) >= 1, (at, rows[["start", "end"]].values)
    segments = read_manifest(corpus["out"] / "unlabeled/segments.tsv", required=("id", "status"))
    assert segments[segments["source"] == str(corpus["raw"] / "three_hours.flac")]["start"].max() > 10779


def test_three_hour_file_never_sits_in_memory(corpus):
    # decoded at 16 kHz float32 the 3-hour file alone would add 691 MB; a 60 s block takes 3.8 MB
    # (what is added is codec state, resampling kernels, segment tables)
    assert corpus["added_rss_mb"] < 250, corpus["added_rss_mb"]


def test_speech_kept_plus_rejected_equals_speech_found(corpus):
    """Checked per input against an independent VAD pass over the same file."""
    out, recipe = corpus["out"], corpus["recipe"]
    manifest = read_manifest(out / "unlabeled/manifest.tsv")
    rejected = _rejected(out)
    for source in [corpus["raw"] / "talk.wav", corpus["raw"] / "talk_copy.wav", corpus["raw"] / "other.webm",
                   corpus["shared"] / REAL[0], corpus["shared"] / REAL[1]]:
        found = sum(s.duration for s in segment_stream(iter_blocks(source, 60.0), recipe.prepare.vad))
        kept = manifest.loc[manifest["source"] == str(source), "duration"].sum()
        rej = rejected[(rejected["source"] == str(source)) & rejected["start"].notna() & (rejected["id"] != "")]
        assert abs(kept + (rej["end"] - rej["start"]).sum() - found) < 0.01, source
    acc = corpus["summary"]["unlabeled"]["speech_accounting"]
    assert acc["balanced"] and acc["rejected_h"] > 0
    report = json.loads((out / "report.json").read_text())
    assert report["unlabeled"]["speech_accounting"]["found_h"] == pytest.approx(acc["found_h"])
    assert (out / "report.png").stat().st_size > 5000


def test_report_hours_shrink_filter_by_filter(corpus):
    un = corpus["summary"]["unlabeled"]
    chain = [un["hours_in"], un["hours_speech"], un["hours_after_duration"], un["hours_after_clipping"],
             un["hours_after_snr"], un["hours_kept"]]
    assert all(a >= b - 1e-9 for a, b in zip(chain[:-1], chain[1:])), chain
    assert un["hours_in"] > 3.0 and un["hours_kept"] < un["hours_after_snr"]  # duplicates removed
    assert un["segments"] == len(read_manifest(corpus["out"] / "unlabeled/manifest.tsv"))
    assert set(un["segment_seconds"]) == {"min", "p5", "p50", "p95", "max"}


def test_rerun_skips_finished_inputs_and_changes_nothing(corpus):
    out = corpus["out"]
    before = (out / "unlabeled/manifest.tsv").read_text()
    rejected_before = (out / "rejected.tsv").read_text()
    summary = run_prepare(corpus["recipe"])
    assert summary["unlabeled"]["processed_now"] == 3  # only the 3 unreadable inputs are looked at again
    assert (out / "unlabeled/manifest.tsv").read_text() == before
    assert (out / "rejected.tsv").read_text() == rejected_before


def test_cli_exit_codes(tmp_path, corpus):
    from lrasr.cli import app

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(corpus["raw"] / "silence.wav", raw / "silence.wav")
    shutil.copy(corpus["raw"] / "notes.wav", raw / "notes.wav")
    bad = write_recipe(tmp_path / "bad.yaml", tmp_path / "exp", [raw])
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", str(bad)])
    assert result.exit_code == 2 and "nothing usable" in result.output
    assert len(_rejected(tmp_path / "exp/prepare")) == 2  # the report is written anyway
    shutil.copy(corpus["raw"] / "talk.wav", raw / "talk.wav")
    result = runner.invoke(app, ["prepare", str(bad)])
    assert result.exit_code == 0, result.output
    assert "rejected" in result.output and "hours of speech" in result.output
    assert runner.invoke(app, ["prepare", str(bad), "--strict"]).exit_code == 2
    for value in ("2/2", "a/b", "1-3"):
        result = runner.invoke(app, ["prepare", str(bad), "--shard", value])
        assert result.exit_code == 2 and "--shard" in result.output, result.output


def test_workdir_inside_the_corpus_folder_is_not_read_back(tmp_path, corpus):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(corpus["raw"] / "talk.wav", raw / "talk.wav")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", raw / "exp", [raw]))
    first = run_prepare(recipe)["unlabeled"]
    second = run_prepare(recipe)["unlabeled"]
    assert first["files"] == second["files"] == 1 and second["processed_now"] == 0
    assert second["segments"] == first["segments"] > 0


@pytest.mark.parametrize("where", ["is-workdir", "inside-workdir"])
def test_corpus_folder_that_is_or_is_inside_the_workdir_is_not_read_back(tmp_path, corpus, where):
    """An unlabeled folder that IS the workdir (or lies inside it) would find the segments the first run
    wrote under <workdir>/prepare as new inputs: they are never listed, and a rerun does nothing."""
    work = tmp_path / "exp"
    raw = work if where == "is-workdir" else work / "raw"
    raw.mkdir(parents=True)
    shutil.copy(corpus["raw"] / "talk.wav", raw / "talk.wav")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", work, [raw]))
    first = run_prepare(recipe)["unlabeled"]
    assert any((work / "prepare" / "unlabeled").rglob("*.flac"))
    second = run_prepare(recipe)["unlabeled"]
    assert first["files"] == second["files"] == 1 and second["processed_now"] == 0
    assert second["segments"] == first["segments"] > 0
