"""Splits: speaker-disjoint by ratio and seed, corpus-defined, explicit lists; OOV rate and stats."""

from __future__ import annotations

import pytest

from lrasr.data.splits import SplitInput, assign_splits, oov_rate, split_stats
from lrasr.errors import LrasrError
from lrasr.recipe import SplitConfig


def items(n_speakers: int = 20, per: int = 5, seconds: float = 2.0) -> list[SplitInput]:
    return [SplitInput(f"s{s:02d}_u{u}", seconds + 0.1 * u, f"spk{s:02d}") for s in range(n_speakers) for u in range(per)]


def test_speaker_disjoint_ratio_and_deterministic():
    data = items()
    placed, left = assign_splits(data, SplitConfig(dev=0.1, test=0.2), seed=1)
    assert not left and set(placed) == {it.id for it in data}
    spk_split = {}
    for it in data:
        assert spk_split.setdefault(it.speaker, placed[it.id]) == placed[it.id]  # no speaker in two splits
    seconds = {s: sum(it.duration for it in data if placed[it.id] == s) for s in ("train", "dev", "test")}
    total = sum(seconds.values())
    assert seconds["test"] / total == pytest.approx(0.2, abs=0.05)
    assert seconds["dev"] / total == pytest.approx(0.1, abs=0.05)
    # same seed, shuffled input order: same result; another seed: a different one
    assert assign_splits(list(reversed(data)), SplitConfig(dev=0.1, test=0.2), seed=1)[0] == placed
    assert assign_splits(data, SplitConfig(dev=0.1, test=0.2), seed=2)[0] != placed


def test_few_speakers_keep_train_non_empty():
    data = items(n_speakers=3, per=4)
    placed, _ = assign_splits(data, SplitConfig(dev=0.1, test=0.1), seed=0)
    assert sorted(set(placed.values())) == ["dev", "test", "train"]  # each takes the smallest group it can
    placed, _ = assign_splits(items(n_speakers=1), SplitConfig(dev=0.1, test=0.1), seed=0)
    assert set(placed.values()) == {"train"}
    # ratios that would take every speaker: the last one left stays in train
    placed, _ = assign_splits(items(n_speakers=2), SplitConfig(dev=0.45, test=0.45), seed=0)
    assert sorted(placed.values()) == ["test"] * 5 + ["train"] * 5


def test_unknown_speakers_split_per_utterance_and_by_utterance():
    data = [SplitInput(f"u{i}", 1.0) for i in range(50)]
    placed, _ = assign_splits(data, SplitConfig(dev=0.2, test=0.2), seed=0)
    assert sum(v == "dev" for v in placed.values()) == 10 and sum(v == "test" for v in placed.values()) == 10
    placed, _ = assign_splits(items(n_speakers=2, per=10, seconds=1.0), SplitConfig(by="utterance", dev=0.1, test=0.1), 0)
    assert sum(v == "test" for v in placed.values()) == 2


def test_corpus_defined_and_explicit_lists(tmp_path):
    data = [SplitInput("a", 1, "x", "test"), SplitInput("b", 1, "y"), SplitInput("c", 1, "z"), SplitInput("d", 1, "w")]
    placed, _ = assign_splits(data, SplitConfig(by="corpus"), seed=0)
    assert placed == {"a": "test", "b": "train", "c": "train", "d": "train"}
    (tmp_path / "dev.txt").write_text("b\n\n", encoding="utf-8")
    placed, left = assign_splits(data, SplitConfig(lists={"dev": tmp_path / "dev.txt"}, by="corpus"), seed=0)
    assert placed["b"] == "dev" and placed["a"] == "test" and not left
    (tmp_path / "train.txt").write_text("c\na\n", encoding="utf-8")
    cfg = SplitConfig(lists={"dev": tmp_path / "dev.txt", "train": tmp_path / "train.txt"})
    placed, left = assign_splits(data, cfg, seed=0)
    assert placed == {"a": "train", "b": "dev", "c": "train"} and left == ["d"]
    (tmp_path / "test.txt").write_text("b\n", encoding="utf-8")
    with pytest.raises(LrasrError, match="listed for both"):
        assign_splits(data, SplitConfig(lists={"dev": tmp_path / "dev.txt", "test": tmp_path / "test.txt"}), 0)
    with pytest.raises(LrasrError, match="split list for test not found"):
        assign_splits(data, SplitConfig(lists={"test": tmp_path / "nope.txt"}), 0)


def test_oov_rate_and_stats():
    assert oov_rate(["a b c"], ["a x", "y"]) == pytest.approx(2 / 3)
    assert oov_rate(["a"], []) is None
    rows = {"train": [{"duration": 1800.0, "speaker": "s1", "text": "a b"}, {"duration": 1800.0, "speaker": "", "text": "c"}],
            "dev": [{"duration": 360.0, "speaker": "s1", "text": "a z"}], "test": []}
    stats = split_stats(rows)
    assert stats["train"] == {"utterances": 2, "hours": 1.0, "speakers": 1}
    assert stats["dev"] == {"utterances": 1, "hours": 0.1, "speakers": 1, "oov_rate": 0.5}
    assert stats["test"]["oov_rate"] is None and stats["shared_speakers"] == 1
