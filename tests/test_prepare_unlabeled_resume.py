"""`prepare` for unlabeled audio: a killed run resumes without duplicates or half-written files;
--shard I/N + merge gives what one unsharded run gives; --jobs N gives what one process gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lrasr.data.manifest import read_manifest
from lrasr.errors import StageError
from lrasr.recipe import load_recipe
from lrasr.stages.prepare import run_prepare
from test_prepare_unlabeled import ffmpeg, utterance_mix, write_recipe

SR = 16000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A small corpus: 5 recordings (wav, flac 48 kHz, m4a, a long one) and a zero-length file."""
    root = tmp_path_factory.mktemp("resume")
    raw = root / "raw"
    raw.mkdir()
    gen = root / "gen"
    gen.mkdir()
    mixes = [utterance_mix(gen, seed=s, gap=0.8 + 0.2 * s) for s in range(3)]
    sf.write(raw / "a.wav", mixes[0], SR, subtype="PCM_16")
    sf.write(gen / "b.wav", mixes[1], SR)
    ffmpeg(gen / "b.wav", raw / "b.flac", "-ar", "48000")
    ffmpeg(gen / "b.wav", raw / "c.m4a", "-c:a", "aac")
    # d: about 3 minutes of speech at 44.1 kHz, long enough to be killed half-way through
    long = np.tile(mixes[2], int(180 * SR / mixes[2].size) + 1)
    sf.write(gen / "d16.wav", long, SR)
    ffmpeg(gen / "d16.wav", raw / "d.flac", "-ar", "44100")
    (raw / "e_empty.wav").touch()
    return raw


def _tables(workdir: Path) -> tuple[str, str]:
    out = workdir / "prepare"
    return (out / "unlabeled/manifest.tsv").read_text(), (out / "rejected.tsv").read_text()


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory):
    """One plain, uninterrupted, unsharded run."""
    root = tmp_path_factory.mktemp("ref")
    recipe = load_recipe(write_recipe(root / "r.yaml", root / "exp", [raw]))
    summary = run_prepare(recipe)
    assert summary["unlabeled"]["segments"] > 20
    return _tables(recipe.workdir)


def test_killed_run_resumes_without_duplicates(raw, reference, tmp_path):
    recipe_path = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", [raw])
    seg_root = tmp_path / "exp/prepare/unlabeled/segments"
    proc = subprocess.Popen([sys.executable, "-m", "lrasr", "prepare", str(recipe_path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        # kill as soon as the long input has written its first segment: it is half-way through
        while time.time() < deadline and not list(seg_root.glob("d-*/*.flac")):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    records = tmp_path / "exp/prepare/unlabeled/records"
    done_before = {p.name for p in records.glob("*.json")}
    assert len(done_before) < 4, "the long input must not have finished"
    assert not (tmp_path / "exp/prepare/unlabeled/manifest.tsv").exists()
    summary = run_prepare(load_recipe(recipe_path))
    assert summary["unlabeled"]["processed_now"] == 5 - len(done_before)
    assert _tables(tmp_path / "exp") == reference
    manifest = read_manifest(tmp_path / "exp/prepare/unlabeled/manifest.tsv")
    on_disk = sorted(p.relative_to(seg_root.parent).as_posix() for p in seg_root.rglob("*") if p.is_file())
    assert on_disk == sorted(manifest["audio"]), "exactly the manifest's files: no leftovers, no temporaries"


def test_shards_then_merge_equal_one_run(raw, reference, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "exp", [raw]))
    with pytest.raises(StageError, match="not processed by any shard"):
        run_prepare(recipe, merge=True)
    first = run_prepare(recipe, shard="0/2", jobs=2)
    second = run_prepare(recipe, shard=(1, 2))
    assert first["unlabeled"]["files"] + second["unlabeled"]["files"] == 5
    shards = tmp_path / "exp/prepare/unlabeled/shards"
    assert {p.name for p in shards.iterdir()} == {"0-of-2", "1-of-2"}
    for shard in ("0-of-2", "1-of-2"):
        rows = read_manifest(shards / shard / "manifest.tsv")
        assert all((shards / shard / a).is_file() for a in rows["audio"])  # paths relative to the shard table
    merged = run_prepare(recipe, merge=True)
    assert merged["unlabeled"]["processed_now"] == 1  # only the unreadable empty file is looked at again
    assert _tables(tmp_path / "exp") == reference
