"""Which files ``prepare_unlabeled.list_inputs`` takes: never what lrasr itself wrote into the workdir,
wherever the workdir lies relative to the corpus folder (no audio is decoded here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from lrasr.recipe import Recipe
from lrasr.stages.prepare_unlabeled import list_inputs


def _wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(160, dtype=np.float32), 16000)
    return path


def _recipe(work: Path, *folders: Path) -> Recipe:
    return Recipe.model_validate({"name": "t", "language": "ml", "workdir": str(work),
                                  "corpora": {"unlabeled": [{"path": str(f)} for f in folders]}})


def _outputs(work: Path) -> None:
    """What earlier runs leave in a workdir: segments, a cache, other stages' files."""
    _wav(work / "prepare" / "unlabeled" / "segments" / "talk" / "talk_000001.flac")
    _wav(work / "prepare" / "labeled_audio" / "x.wav")
    _wav(work / "evaluate" / "y.wav")
    _wav(work / ".cache" / "z.wav")


def test_corpus_folder_that_is_the_workdir_skips_the_stage_outputs(tmp_path):
    work = tmp_path / "exp"
    talk = _wav(work / "talk.wav")
    more = _wav(work / "more" / "b.wav")
    _outputs(work)
    inputs, rejects, _ = list_inputs(_recipe(work, work))
    assert inputs == [more, talk] and not rejects.rows  # (sorted by path)


def test_corpus_folder_inside_the_workdir_and_links_back(tmp_path):
    work = tmp_path / "exp"
    talk = _wav(work / "raw" / "talk.wav")
    _outputs(work)
    (work / "raw" / "up").symlink_to(work)  # a link back to the workdir: neither walked again nor its outputs
    (work / "raw" / "segs").symlink_to(work / "prepare")
    inputs, rejects, _ = list_inputs(_recipe(work, work / "raw"))
    assert inputs == [talk] and not rejects.rows


def test_workdir_inside_the_corpus_folder_is_skipped(tmp_path):
    raw = tmp_path / "raw"
    talk = _wav(raw / "talk.wav")
    _outputs(raw / "exp")
    _wav(raw / "exp" / "notes.wav")  # anything in the workdir is lrasr's, as before
    inputs, rejects, _ = list_inputs(_recipe(raw / "exp", raw))
    assert inputs == [talk] and not rejects.rows


def test_corpus_folder_inside_a_stage_output_is_rejected_by_name(tmp_path):
    work = tmp_path / "exp"
    _outputs(work)
    segs = work / "prepare" / "unlabeled" / "segments"
    inputs, rejects, _ = list_inputs(_recipe(work, segs))
    assert inputs == []
    (row,) = rejects.rows
    assert row["source"] == str(segs) and row["reason"].startswith(f"lrasr output: inside {work / 'prepare'},")
