"""Batches bounded by seconds of audio, length-bucketed, deterministic, shardable and resumable.

An epoch's *plan* is a list of update groups. A group holds the utterances of one optimizer update
(padded length x count <= ``batch_seconds``) and is split into micro-batches that each fit one device
(padded length x count <= ``max_device_batch_seconds``); micro-batch ``j`` of a group goes to rank
``j % world_size``. The groups depend only on the lengths, ``batch_seconds``, the seed and the epoch --
not on the number of processes -- so the effective batch is the same with 1 or 8 processes; only the
number of micro-batches each process accumulates changes (that is the derived gradient accumulation).
A data position is (epoch, group index): resuming skips the groups already trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from lrasr.audio.decode import SAMPLE_RATE, AudioError, load
from lrasr.data.manifest import audio_paths, read_manifest
from lrasr.errors import LrasrError
from lrasr.io import usable_cores

# Length jitter (fraction) when sorting for buckets: groups change from epoch to epoch even when the
# utterance lengths do not (fine-tuning), at the cost of a few percent more padding.
SORT_JITTER = 0.05


@dataclass
class Batch:
    """A padded micro-batch. ``waveforms [B, T] float32``, ``lengths [B] int64`` (samples, on the CPU)."""

    waveforms: torch.Tensor
    lengths: torch.Tensor
    ids: list[str]
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE

    def to(self, device: torch.device | str) -> "Batch":
        """The waveforms on ``device``; ``lengths`` stay on the CPU, where their consumers use them (the
        models' frame bookkeeping and masks, ``seconds``, CTC's input lengths): a device copy would
        cost a blocking copy there and another one back per micro-batch. Code that needs them on the
        device (``normalize_waveform``) moves them itself."""
        return Batch(self.waveforms.to(device, non_blocking=True), self.lengths, self.ids, self.rows)

    def pin_memory(self) -> "Batch":
        """The waveforms in page-locked memory (DataLoader's ``pin_memory`` calls this), so that ``to``
        a GPU really is asynchronous: from pageable memory CUDA copies through a staging buffer and
        the host waits."""
        return Batch(self.waveforms.pin_memory(), self.lengths, self.ids, self.rows)


@dataclass
class MicroBatchSpec:
    """One process's micro-batch of an update group: dataset indices (may be empty)."""

    epoch: int
    group: int
    indices: tuple[int, ...]


class AudioDataset:
    """Utterances from TSV manifests (id, audio, duration), optionally randomly cropped.

    With ``crop_min_seconds``/``crop_max_seconds`` set (pretraining), an item is a crop whose length
    is drawn uniformly from that range (whole utterance when shorter) at a random offset; the draw is
    a pure function of (seed, epoch, index), so plans are reproducible and workers agree. Without
    crops an item is the whole utterance. Rows outside ``min_seconds``..``max_seconds`` are left out
    and counted in ``skipped`` (reason -> count).
    """

    def __init__(self, manifests: Sequence[str | Path | tuple[str, Any]], crop_min_seconds: float | None = None,
                 crop_max_seconds: float | None = None, min_seconds: float = 0.0,
                 max_seconds: float | None = None, seed: int = 0, sample_rate: int = SAMPLE_RATE):
        """``manifests``: TSV paths, or ``(name, frame)`` pairs of already-read manifest rows whose
        ``audio`` paths are absolute (a DDP rank that must not write a manifest of its own)."""
        if (crop_min_seconds is None) != (crop_max_seconds is None):
            raise ValueError("set both crop_min_seconds and crop_max_seconds, or neither")
        if crop_min_seconds is not None and crop_max_seconds is not None and crop_min_seconds > crop_max_seconds:
            raise LrasrError(f"crop_min_seconds ({crop_min_seconds}) is larger than crop_max_seconds ({crop_max_seconds})")
        self.crop = (crop_min_seconds, crop_max_seconds) if crop_min_seconds is not None else None
        self.sample_rate = sample_rate
        self.seed = seed
        self.skipped: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []
        paths: list[Path] = []
        durations: list[float] = []
        self.manifests = [Path(m[0] if isinstance(m, tuple) else m) for m in manifests]
        for source, manifest in zip(manifests, self.manifests):
            if isinstance(source, tuple):
                frame = source[1]
                audio = [Path(str(a)) for a in frame["audio"]]
            else:
                frame = read_manifest(manifest)
                audio = audio_paths(frame, manifest)
            for row, path in zip(frame.to_dict("records"), audio):
                dur = row.get("duration")
                if dur is None or not np.isfinite(dur) or dur <= 0:
                    self._skip(f"no valid duration in {manifest.name}")
                    continue
                if dur < min_seconds:
                    self._skip(f"shorter than {min_seconds:g} s")
                    continue
                if max_seconds is not None and self.crop is None and dur > max_seconds:
                    self._skip(f"longer than {max_seconds:g} s")
                    continue
                self.rows.append(row)
                paths.append(path)
                durations.append(float(dur))
        self.paths = paths
        self.durations = np.asarray(durations, dtype=np.float64)
        if self.crop is not None and max_seconds is not None and self.crop[1] > max_seconds:
            self.crop = (min(self.crop[0], max_seconds), max_seconds)
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self.unreadable: set[int] = set()  # indices that failed to decode (warned once each)
        self.empty: set[int] = set()  # indices that decoded to no sample (warned once each)

    def restrict(self, max_seconds: float) -> None:
        """Make every item fit one device: crops are capped; longer whole utterances are left out
        (and counted in ``skipped``). The training loop calls this with ``max_device_batch_seconds``."""
        if self.crop is not None:
            if self.crop[1] > max_seconds:
                self.crop = (min(self.crop[0], max_seconds), max_seconds)
                self._epoch_cache = None
            return
        keep = self.durations <= max_seconds
        if keep.all():
            return
        self.skipped[f"longer than {max_seconds:g} s (max_device_batch_seconds)"] = int((~keep).sum())
        self.rows = [r for r, k in zip(self.rows, keep) if k]
        self.paths = [p for p, k in zip(self.paths, keep) if k]
        self.durations = self.durations[keep]
        self._epoch_cache = None

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def total_seconds(self) -> float:
        return float(self.durations.sum())

    def _epoch_draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(item lengths in samples [N], crop offsets in samples [N]) for ``epoch``."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1], self._epoch_cache[2]
        full = np.floor(self.durations * self.sample_rate).astype(np.int64)
        if self.crop is None:
            lengths, offsets = full, np.zeros_like(full)
        else:
            rng = np.random.default_rng([self.seed, epoch, 0x5EED])
            want = np.floor(rng.uniform(self.crop[0], self.crop[1], len(full)) * self.sample_rate).astype(np.int64)
            lengths = np.minimum(full, want)
            offsets = np.floor(rng.random(len(full)) * (full - lengths + 1)).astype(np.int64)
        self._epoch_cache = (epoch, lengths, offsets)
        return lengths, offsets

    def lengths_seconds(self, epoch: int) -> np.ndarray:
        """Per-item length in seconds for ``epoch`` (after cropping) [N]."""
        return self._epoch_draws(epoch)[0] / self.sample_rate

    def load_item(self, epoch: int, index: int) -> np.ndarray:
        """The waveform of item ``index`` in ``epoch`` [T] float32 at 16 kHz."""
        lengths, offsets = self._epoch_draws(epoch)
        start = offsets[index] / self.sample_rate
        end = (offsets[index] + lengths[index]) / self.sample_rate
        path = self.paths[index]
        wave = load(path, self.sample_rate, start=start, end=end if self.crop is not None else None)
        return wave[: int(lengths[index])] if self.crop is not None else wave

    def collate(self, spec: MicroBatchSpec) -> Batch:
        """Load and zero-pad the items of ``spec`` into a Batch (empty spec -> empty Batch)."""
        waves, kept = [], []
        for index in spec.indices:
            try:
                wave = self.load_item(spec.epoch, index)
            except AudioError as exc:
                # one unreadable file must not stop a long run: leave it out of this batch, say so
                _warn_once(self.unreadable, index, f"{exc} -- left out of training (fix or remove its manifest row)")
                continue
            if len(wave) == 0:
                # an empty file, or a manifest duration longer than the audio (a crop past its end)
                _warn_once(self.empty, index, f"{self.paths[index]}: no sample decoded (the manifest says "
                                              f"{self.durations[index]:g} s) -- left out of its batch (fix the "
                                              "file or its manifest row)")
                continue
            waves.append(torch.from_numpy(np.ascontiguousarray(wave)))
            kept.append(index)
        longest = max((w.numel() for w in waves), default=0)
        out = torch.zeros(len(waves), longest, dtype=torch.float32)
        for i, w in enumerate(waves):
            out[i, : w.numel()] = w
        lengths = torch.tensor([w.numel() for w in waves], dtype=torch.int64)
        rows = [self.rows[i] for i in kept]
        return Batch(out, lengths, [str(r.get("id", "")) for r in rows], rows)


def filler_batch(dataset: AudioDataset) -> Batch:
    """A one-utterance batch (the shortest readable item) for a DDP rank short of data.

    It is run with weight 0 so that the rank still takes part in the gradient all-reduce; a real
    item, so the task's ``compute_loss`` (which may look up transcripts by id) accepts it.
    """
    lengths = dataset.lengths_seconds(0)
    for index in np.argsort(lengths, kind="stable")[:100]:
        batch = dataset.collate(MicroBatchSpec(0, -1, (int(index),)))
        if len(batch):
            return batch
    raise LrasrError("none of the 100 shortest training utterances could be read (a DDP rank needs one "
                     "to run when it has no data for an update); check the manifest's audio files")


def plan_groups(lengths: np.ndarray, batch_seconds: float, seed: int, epoch: int) -> list[np.ndarray]:
    """Update groups of one epoch: arrays of item indices, in training order.

    ``lengths`` [N] seconds. Items are sorted by length (with a small random jitter) so a group holds
    similar lengths; a group grows while count x longest <= ``batch_seconds`` (one item at least); the
    group order is shuffled. Depends only on the arguments (not on the number of processes).
    """
    rng = np.random.default_rng([seed, epoch, 0xBA7C])
    if len(lengths) == 0:
        return []
    key = lengths * (1.0 + rng.uniform(-SORT_JITTER, SORT_JITTER, len(lengths)))
    order = np.lexsort((rng.random(len(lengths)), key))
    groups: list[np.ndarray] = []
    start, longest = 0, 0.0
    for pos in range(len(order)):
        item_len = float(lengths[order[pos]])
        new_longest = max(longest, item_len)
        if pos > start and (pos - start + 1) * new_longest > batch_seconds:
            groups.append(order[start:pos])
            start, new_longest = pos, item_len
        longest = new_longest
    groups.append(order[start:])
    return [groups[i] for i in rng.permutation(len(groups))]


def split_group(group: np.ndarray, lengths: np.ndarray, max_device_seconds: float, world_size: int) -> list[np.ndarray]:
    """Split an update group into micro-batches that each fit ``max_device_seconds`` (padded).

    Returns a multiple of ``world_size`` micro-batches (some may be empty when the group has fewer
    items than processes); micro-batch ``j`` belongs to rank ``j % world_size``.
    """
    if len(group) == 0:
        return [group[:0]] * world_size
    ordered = group[np.argsort(lengths[group], kind="stable")]
    longest = float(lengths[ordered].max())
    per_batch = max(1, int(math.floor(max_device_seconds / longest + 1e-9)))
    count = math.ceil(len(ordered) / per_batch)
    count = math.ceil(count / world_size) * world_size
    return list(np.array_split(ordered, count))


def accumulation_steps(batch_seconds: float, max_device_batch_seconds: float, world_size: int) -> int:
    """Nominal micro-batches per process per update: ceil(batch_seconds / (world x device seconds))."""
    return max(1, math.ceil(batch_seconds / (world_size * max_device_batch_seconds) - 1e-9))


@dataclass
class EpochPlan:
    """One epoch's update groups, split for ``world_size`` processes."""

    epoch: int
    micro: list[list[np.ndarray]] = field(default_factory=list)  # [group][j] -> indices

    def __len__(self) -> int:
        return len(self.micro)

    def rank_specs(self, rank: int, world_size: int, start_group: int = 0) -> Iterator[MicroBatchSpec]:
        for g in range(start_group, len(self.micro)):
            for j in range(rank, len(self.micro[g]), world_size):
                yield MicroBatchSpec(self.epoch, g, tuple(int(i) for i in self.micro[g][j]))

    def group_seconds(self, group: int, lengths: np.ndarray) -> float:
        return float(sum(lengths[m].sum() for m in self.micro[group]))


def plan_epoch(dataset: AudioDataset, epoch: int, batch_seconds: float, max_device_batch_seconds: float,
               world_size: int, seed: int) -> EpochPlan:
    """The deterministic plan of ``epoch`` (same on every rank given the same arguments)."""
    lengths = dataset.lengths_seconds(epoch)
    groups = plan_groups(lengths, batch_seconds, seed, epoch)
    return EpochPlan(epoch, [split_group(g, lengths, max_device_batch_seconds, world_size) for g in groups])


class _SpecDataset(torch.utils.data.Dataset):
    """Map-style view of a rank's micro-batch specs so a DataLoader can prefetch in workers."""

    def __init__(self, dataset: AudioDataset, specs: list[MicroBatchSpec]):
        self.dataset, self.specs = dataset, specs

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> tuple[MicroBatchSpec, Batch]:
        return self.specs[i], self.dataset.collate(self.specs[i])


def usable_workers(asked: int) -> int:
    """``asked`` loader processes, at most as many as the CPU cores this process may run on: more only
    compete with training for the cores (and torch warns about them in several lines every epoch)."""
    return max(0, min(asked, usable_cores()))


def iterate_groups(dataset: AudioDataset, plan: EpochPlan, rank: int, world_size: int, start_group: int = 0,
                   num_workers: int = 0, pin_memory: bool = False) -> Iterator[tuple[int, list[Batch]]]:
    """Yield (group index, this rank's micro-batches of the group) from ``start_group`` on, loaded by
    ``num_workers`` processes (capped by ``usable_workers``). ``pin_memory`` (for a CUDA device) puts each
    batch's waveforms in page-locked memory."""
    specs = list(plan.rank_specs(rank, world_size, start_group))
    loader = torch.utils.data.DataLoader(_SpecDataset(dataset, specs), batch_size=None, shuffle=False,
                                         num_workers=usable_workers(num_workers), collate_fn=_identity,
                                         persistent_workers=False, pin_memory=pin_memory)
    current, batches = None, []
    for spec, batch in loader:
        if current is not None and spec.group != current:
            yield current, batches
            batches = []
        current = spec.group
        batches.append(batch)
    if current is not None:
        yield current, batches


def _identity(x: Any) -> Any:
    return x


def _warn_once(seen: set[int], index: int, message: str) -> None:
    """Warn about item ``index`` the first time only (``seen`` records it): a bad file is drawn every epoch."""
    if index not in seen:
        seen.add(index)
        from lrasr.report import warn

        warn(message)
