"""Seconds-bounded, length-bucketed, deterministic, shardable batching; LR schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrasr.errors import LrasrError
from lrasr.train.batching import (AudioDataset, MicroBatchSpec, accumulation_steps, iterate_groups, plan_epoch, plan_groups,
                                  split_group)
from lrasr.train.schedule import from_config, polynomial_decay, tri_stage
from test_train_support import make_manifest, small_cfg


def _check_plan(plan, lengths, batch_seconds, device_seconds, world):
    for micro in plan.micro:
        assert len(micro) % world == 0
        items = np.concatenate(micro)
        longest = lengths[items].max()
        assert len(items) == 1 or len(items) * longest <= batch_seconds + 1e-9
        for m in micro:
            if len(m):
                assert len(m) * lengths[m].max() <= device_seconds + 1e-9


def test_groups_bounded_by_seconds_and_cover_every_item(rng):
    lengths = rng.uniform(1.0, 15.0, 500)
    groups = plan_groups(lengths, batch_seconds=60.0, seed=3, epoch=0)
    items = np.concatenate(groups)
    assert sorted(items.tolist()) == list(range(500))  # nothing dropped, nothing twice
    for g in groups:
        assert len(g) == 1 or len(g) * lengths[g].max() <= 60.0
    # bucketing keeps padding low: padded total within 25% of the audio
    padded = sum(len(g) * lengths[g].max() for g in groups)
    assert padded < 1.25 * lengths.sum()
    # unbucketed (random) grouping would pad far more; the test would catch a sort that got lost
    shuffled = rng.permutation(500)
    rand_padded = sum(len(c) * lengths[c].max() for c in np.array_split(shuffled, len(groups)))
    assert padded < 0.9 * rand_padded


def test_plan_deterministic_per_seed_and_epoch(rng):
    lengths = rng.uniform(1.0, 15.0, 200)
    a = plan_groups(lengths, 40.0, seed=1, epoch=0)
    b = plan_groups(lengths, 40.0, seed=1, epoch=0)
    c = plan_groups(lengths, 40.0, seed=1, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_effective_batch_same_for_one_and_two_processes(tmp_path):
    manifest = make_manifest(tmp_path, count=40, min_s=0.5, max_s=3.0)
    data = AudioDataset([manifest], crop_min_seconds=0.5, crop_max_seconds=2.5, seed=7)
    data.restrict(2.0)  # crops capped to what one device holds
    lengths = data.lengths_seconds(0)
    assert lengths.min() >= 0.5 - 1e-3 and lengths.max() <= 2.0 + 1e-3
    assert (lengths > 1.5).any()  # crops really vary between min and max
    one = plan_epoch(data, 0, batch_seconds=8.0, max_device_batch_seconds=2.0, world_size=1, seed=7)
    two = plan_epoch(data, 0, batch_seconds=8.0, max_device_batch_seconds=2.0, world_size=2, seed=7)
    _check_plan(one, lengths, 8.0, 2.0, 1)
    _check_plan(two, lengths, 8.0, 2.0, 2)
    assert len(one) == len(two)
    for g in range(len(one)):
        # same utterances and the same seconds per update, whatever the number of processes
        assert sorted(np.concatenate(one.micro[g]).tolist()) == sorted(np.concatenate(two.micro[g]).tolist())
        assert math.isclose(one.group_seconds(g, lengths), two.group_seconds(g, lengths))
    # the two ranks' shares partition each update exactly
    shares = [[s.indices for s in two.rank_specs(r, 2)] for r in range(2)]
    for g in range(len(two)):
        r0 = [i for s in two.rank_specs(0, 2) if s.group == g for i in s.indices]
        r1 = [i for s in two.rank_specs(1, 2) if s.group == g for i in s.indices]
        assert not set(r0) & set(r1)
        assert sorted(r0 + r1) == sorted(np.concatenate(one.micro[g]).tolist())
    assert shares[0] and shares[1]
    # derived accumulation: 8 s per update, 2 s per device -> 4 micro-batches on 1 process, 2 on 2
    assert accumulation_steps(8.0, 2.0, 1) == 4 and accumulation_steps(8.0, 2.0, 2) == 2
    assert accumulation_steps(8.0, 2.0, 8) == 1


def test_split_group_respects_device_limit():
    lengths = np.array([1.0, 1.0, 1.0, 2.0, 3.9])
    micro = split_group(np.arange(5), lengths, max_device_seconds=4.0, world_size=2)
    assert len(micro) % 2 == 0 and sorted(np.concatenate(micro).tolist()) == [0, 1, 2, 3, 4]
    for m in micro:
        assert len(m) == 0 or len(m) * lengths[m].max() <= 4.0
    # fewer items than processes: empty micro-batches, still one per rank
    micro = split_group(np.arange(1), lengths, 4.0, world_size=4)
    assert len(micro) == 4 and sum(len(m) for m in micro) == 1


def test_dataset_loads_crops_resumes_position_and_reports_skips(tmp_path):
    manifest = make_manifest(tmp_path, count=10, min_s=0.4, max_s=1.5)
    data = AudioDataset([manifest], max_seconds=1.0)
    assert sum(data.skipped.values()) == 10 - len(data)  # long rows counted, not silently lost
    assert data.skipped and all("longer than 1" in k for k in data.skipped)
    whole = AudioDataset([manifest])
    whole.restrict(1.0)
    assert len(whole) == len(data) and sum(whole.skipped.values()) == 10 - len(data)
    cropped = AudioDataset([manifest], crop_min_seconds=0.3, crop_max_seconds=0.5, seed=1)
    plan = plan_epoch(cropped, 2, 1.0, 1.0, 1, seed=1)
    groups = list(iterate_groups(cropped, plan, 0, 1))
    assert [g for g, _ in groups] == list(range(len(plan)))
    for _, batches in groups:
        for b in batches:
            assert b.waveforms.shape[1] == int(b.lengths.max())
            assert (b.lengths <= int(0.5 * 16000)).all()
            assert float(b.waveforms.abs().sum()) > 0
    # a worker process loads exactly what the main process does
    workers = list(iterate_groups(cropped, plan, 0, 1, num_workers=1))
    assert [g for g, _ in workers] == [g for g, _ in groups]
    assert all(torch.equal(x.waveforms, y.waveforms) for (_, a), (_, b) in zip(groups, workers) for x, y in zip(a, b))
    # resuming at group 2 yields exactly the remaining groups, with identical audio
    resumed = list(iterate_groups(cropped, plan, 0, 1, start_group=2))
    assert [g for g, _ in resumed] == [g for g, _ in groups[2:]]
    for (_, a), (_, b) in zip(groups[2:], resumed):
        assert all(np.array_equal(x.waveforms, y.waveforms) for x, y in zip(a, b))


def test_crops_are_windows_of_the_audio_at_random_offsets_drawn_anew_each_epoch(tmp_path):
    from lrasr.audio.decode import load

    manifest = make_manifest(tmp_path, count=6, min_s=1.0, max_s=1.5)
    data = AudioDataset([manifest], crop_min_seconds=0.3, crop_max_seconds=0.6, seed=2)
    assert not np.allclose(data.lengths_seconds(0), data.lengths_seconds(1))
    starts = []
    for epoch in (0, 1):
        for i in range(len(data)):
            crop, full = data.load_item(epoch, i), load(data.paths[i], 16000)
            assert len(crop) == round(data.lengths_seconds(epoch)[i] * 16000)
            # where in the recording the crop comes from: the 16 samples it starts with, then all of it
            heads = np.lib.stride_tricks.sliding_window_view(full, 16)
            at = [p for p in np.flatnonzero((heads == crop[:16]).all(1)) if np.array_equal(full[p: p + len(crop)], crop)]
            assert len(at) == 1, (epoch, i)
            starts.append(at[0])
    assert max(starts) > 4800 and len(set(starts)) == len(starts)  # not from the start, not repeated


def test_dataset_errors(tmp_path):
    with pytest.raises(LrasrError, match="manifest not found"):
        AudioDataset([tmp_path / "missing.tsv"])
    manifest = make_manifest(tmp_path, count=2)
    with pytest.raises(LrasrError, match="crop_min_seconds"):
        AudioDataset([manifest], crop_min_seconds=3.0, crop_max_seconds=2.0)


def test_polynomial_decay_schedule():
    assert polynomial_decay(0, 10, 100) == pytest.approx(0.1)
    assert polynomial_decay(9, 10, 100) == pytest.approx(1.0)
    assert polynomial_decay(55, 10, 100) == pytest.approx(0.5)
    assert polynomial_decay(100, 10, 100) == pytest.approx(0.0)
    values = [polynomial_decay(s, 10, 100) for s in range(100)]
    assert max(values) == pytest.approx(1.0) and values.index(max(values)) == 9
    assert all(a >= b for a, b in zip(values[9:], values[10:]))


def test_tri_stage_schedule():
    total = 100
    assert tri_stage(0, total) == pytest.approx(0.01)
    assert tri_stage(10, total) == pytest.approx(1.0)
    assert tri_stage(49, total) == pytest.approx(1.0)
    assert tri_stage(75, total) == pytest.approx(0.05 ** 0.5)
    assert tri_stage(100, total) == pytest.approx(0.05)
    assert tri_stage(500, total) == pytest.approx(0.05)


def test_schedule_chosen_from_config():
    from lrasr.recipe import FinetuneConfig

    pre = from_config(small_cfg(warmup_steps=None), 100)
    assert pre(7) == pytest.approx(1.0) and pre(3) == pytest.approx(0.5)  # default warmup 8% = 8 steps
    fine = from_config(FinetuneConfig(), 100)
    assert fine(0) == pytest.approx(0.01) and fine(100) == pytest.approx(0.05)
    # the recipe's stage ratios and final scale: 20 warmup, 30 hold, 50 decay to 0.1
    own = from_config(FinetuneConfig(tri_stage=(0.2, 0.3, 0.5), final_lr_scale=0.1), 100)
    assert own(10) == pytest.approx(0.505) and own(20) == own(49) == 1.0 and own(50) == 1.0
    assert own(75) == pytest.approx(0.1 ** 0.5) and own(100) == pytest.approx(0.1)


def test_unreadable_audio_is_left_out_with_a_warning(tmp_path, capsys):
    manifest = make_manifest(tmp_path, count=4)
    (tmp_path / "utt001.wav").write_bytes(b"not audio at all")
    data = AudioDataset([manifest])
    batch = data.collate(MicroBatchSpec(0, 0, (0, 1, 2)))
    assert batch.ids == ["utt000", "utt002"] and batch.waveforms.shape[0] == 2
    assert "utt001.wav" in capsys.readouterr().err
    assert data.unreadable == {1}


def test_a_file_without_samples_is_left_out_with_one_warning(tmp_path, capsys):
    import soundfile as sf

    manifest = make_manifest(tmp_path, count=3)
    sf.write(tmp_path / "utt001.wav", np.zeros(0, np.float32), 16000)  # a header, no samples
    data = AudioDataset([manifest])
    for _ in range(2):
        batch = data.collate(MicroBatchSpec(0, 0, (0, 1, 2)))
        assert batch.ids == ["utt000", "utt002"] and batch.waveforms.shape == (2, int(batch.lengths.max()))
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert err.count("utt001.wav") == 1 and "no sample decoded" in err  # once per file, not per batch
    assert data.empty == {1} and data.unreadable == set()


def test_batch_to_moves_the_waveforms_and_keeps_lengths_on_the_cpu(tmp_path):
    """The models' frame bookkeeping, masks, ``Batch.seconds`` and CTC lengths read ``lengths`` on the
    CPU; a device copy meant a blocking copy there and back per micro-batch. ("meta" stands in for a
    GPU on a machine without one: the tensors that move land there.)"""
    data = AudioDataset([make_manifest(tmp_path, count=2)])
    batch = data.collate(MicroBatchSpec(0, 0, (0, 1)))
    moved = batch.to("meta")
    assert moved.waveforms.device.type == "meta" and moved.lengths.device.type == "cpu"
    assert torch.equal(moved.lengths, batch.lengths) and moved.seconds == batch.seconds and moved.ids == batch.ids
