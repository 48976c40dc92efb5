"""Duplicate segments across inputs: when the input holding the kept copy disappears, the other
input's copy (whose file was removed as a duplicate) is rebuilt and kept in the same run."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from conftest import espeak
from lrasr.audio.decode import load
from lrasr.data.manifest import read_manifest
from lrasr.recipe import load_recipe
from lrasr.stages.prepare_unlabeled import prepare_unlabeled

SR = 16000
SENTENCES = ["നമസ്കാരം, ഇന്ന് നല്ല കാലാവസ്ഥയാണ്.", "കുട്ടികൾ സ്കൂളിലേക്ക് പോകുന്നു."]


def test_duplicate_of_a_vanished_input_is_rebuilt_in_the_same_run(tmp_path):
    rng = np.random.default_rng(0)
    parts = [np.zeros(SR // 2, np.float32)]
    for i, text in enumerate(SENTENCES):
        parts += [load(espeak(text, tmp_path / f"s{i}.wav")), np.zeros(int(1.2 * SR), np.float32)]
    wave = np.concatenate(parts)
    wave = (wave + 0.001 * rng.standard_normal(wave.size)).astype(np.float32)
    raw = tmp_path / "raw"
    raw.mkdir()
    sf.write(raw / "a.wav", wave, SR, subtype="PCM_16")
    sf.write(raw / "b.wav", wave, SR, subtype="PCM_16")  # the same audio again
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(f"name: t\nlanguage: ml\nworkdir: {tmp_path / 'exp'}\ncorpora:\n  unlabeled:\n"
                           f"    - path: {raw}\nprepare:\n  filters: {{min_snr_db: 5}}\n", encoding="utf-8")
    recipe = load_recipe(recipe_path)
    manifest = recipe.workdir / "prepare" / "unlabeled" / "manifest.tsv"

    summary, rejects = prepare_unlabeled(recipe)
    first = read_manifest(manifest)
    assert len(first) >= 2 and set(first["source"]) == {str(raw / "a.wav")}
    assert sum(str(r["reason"]).startswith("duplicate") for r in rejects.rows) == len(first)

    (raw / "a.wav").unlink()
    summary, rejects = prepare_unlabeled(recipe)
    second = read_manifest(manifest)
    assert not [r for r in rejects.rows if "missing" in str(r["reason"])], rejects.rows
    assert set(second["source"]) == {str(raw / "b.wav")} and len(second) == len(first)
    assert list(second["sha1"]) == list(first["sha1"])
    assert all((manifest.parent / a).is_file() for a in second["audio"])
    assert summary["processed_now"] == 1  # b rebuilt; nothing else

    summary, _ = prepare_unlabeled(recipe)  # and from then on it is simply up to date
    assert summary["processed_now"] == 0
    assert read_manifest(manifest).equals(second)
