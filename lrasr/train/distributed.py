"""torch.distributed set-up from torchrun's environment, and the DistributedDataParallel wrapper.

Under torchrun the loop calls the model through ``Replica.wrapper()`` (a ``DistributedDataParallel``
whose gradient all-reduce overlaps the backward pass); one process (no torchrun) never wraps.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# how long a rank may wait in a collective for the others (evaluation and checkpoints run on rank 0 only)
COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank, world size and local rank from torchrun's variables (1 process without them)."""
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                    int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(requested: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``auto``/None/"" -> cuda:LOCAL_RANK when CUDA is available, else cpu; ``cuda`` -> cuda:LOCAL_RANK.

    Anything else than cpu, cuda or an existing cuda:N is an ``LrasrError`` (one line, no traceback).
    """
    from lrasr.errors import LrasrError

    name = str(requested or "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LrasrError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
        try:
            device = torch.device(name if ":" in name else f"cuda:{local_rank}")
        except RuntimeError:
            raise LrasrError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            if ":" not in name:  # cuda:LOCAL_RANK: more processes on this node than GPUs
                raise LrasrError(f"this process is LOCAL_RANK {local_rank} but the node has {count} CUDA device(s): "
                                 f"start at most {count} process(es) per node (torchrun --nproc_per_node {count})")
            raise LrasrError(f"device {name!r}: this machine has {count} CUDA device(s)")
        return device
    if name != "cpu":
        raise LrasrError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` (CUDA) has bf16 tensor cores (compute capability 8.0+, or ROCm).

    Not ``torch.cuda.is_bf16_supported()``: by default it also says True where bf16 is only emulated
    (V100, T4), where bf16 training runs several times slower than fp16; and it asks the current
    device, not necessarily ``device``.
    """
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); no-op for one process."""
    info = env_info()
    if info.active and device.type == "cuda" and device.index != info.local_rank:
        from lrasr.errors import LrasrError

        # DDP runs one process per GPU (cuda:LOCAL_RANK); a fixed cuda:N would stack every
        # process of the node on one GPU, which NCCL refuses
        raise LrasrError(f"under torchrun each process trains on cuda:LOCAL_RANK (here cuda:{info.local_rank}), "
                         f"not {device}; use --device cuda (or auto)")
    cuda = device.type == "cuda"
    if cuda:
        # also with one process: whatever uses "the current device" (library code, a bare "cuda" tensor)
        # must not open a context on GPU 0 when --device cuda:1 was asked for (GPU 0 may be full)
        torch.cuda.set_device(device)
    if info.active and not dist.is_initialized():
        # rank 0 alone runs the task's evaluation (dev WER with beam search can take a while) while the
        # others wait in a collective: NCCL's default 10-minute timeout would kill them. device_id binds
        # the NCCL group to this process's GPU (barriers then need no guess of the device)
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://", timeout=COLLECTIVE_TIMEOUT,
                                device_id=device if cuda else None)
    return info


def shutdown_distributed(completed: bool = True) -> None:
    """Leave the process group at the end of a torchrun job.

    After a completed run every rank first frees what still holds the group (the DDP wrapper and its
    reducer sit in reference cycles that only the garbage collector breaks) and waits for the others
    (rank 0 is still writing the model). Left to interpreter shutdown, gloo's objects were destroyed
    with their worker threads still joinable: the rank that finished first died with SIGABRT
    ("terminate called without an active exception") in about one two-node run in seven, and
    torchrun's agent on the other node then waited minutes in its exit barrier. After a failure no
    barrier: the other ranks may be inside a collective that a barrier would wrongly pair with.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    try:
        if completed:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def broadcast_model(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's parameters and buffers (as DDP does at construction)."""
    if not info.active:
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.active:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's boolean, on every rank."""
    if not info.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item() > 0)


def all_reduce_max(value: int, info: DistInfo, device: torch.device) -> int:
    """The largest ``value`` over ranks."""
    if not info.active:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def check_same_step(step: int, failed: bool, info: DistInfo, device: torch.device, folder: object = None) -> None:
    """Fail on every rank unless all ranks restored the same update (``step``; 0 = no checkpoint).

    Each rank resumes from the checkpoint on its own disk, and only rank 0 writes checkpoints: on nodes
    that do not share the workdir the others find none (or a stale one) and would train from other
    weights, optimizer moments and data positions than rank 0, silently. ``failed`` marks a rank whose
    restore raised (its own error follows): the others then stop too instead of waiting in the next
    collective. One ``all_gather`` (int64, on ``device`` as NCCL needs) gives every rank every step, so
    each can name the rank that differs. ``folder`` (this rank's checkpoints folder) prefixes the message.
    """
    if not info.active:
        return
    from lrasr.errors import LrasrError

    mine = torch.tensor([step, int(failed)], dtype=torch.int64, device=device)
    parts = [torch.zeros_like(mine) for _ in range(info.world_size)]
    dist.all_gather(parts, mine)
    table = torch.stack(parts).cpu().tolist()  # [world, 2]
    if failed:
        return  # this rank raises its own restore error
    broken = [r for r, (_, f) in enumerate(table) if f]
    if broken:
        raise LrasrError(f"rank {broken[0]} could not restore its checkpoint (its own error says why); "
                         "fix that node's workdir or rerun with --no-resume", folder)
    steps = [s for s, _ in table]
    if min(steps) != max(steps):
        other = next(r for r, s in enumerate(steps) if s != steps[0])
        raise LrasrError(f"rank {other} restored step {steps[other]}, rank 0 step {steps[0]}: the workdir must be "
                         "on a filesystem all nodes share, or copy the checkpoint to every node", folder)


def _sum_allreduce_hook(state, bucket):  # type: ignore[no-untyped-def]
    """DDP communication hook: the plain sum over ranks (DDP's default divides by the world size).

    (No annotations: DDP checks them at run time, and this module's are strings.)

    The loop divides by the global sample size afterwards, exactly as with one process, so the loss
    normalization never goes through a world-size division and back.
    """
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.SUM, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class Replica:
    """The ``DistributedDataParallel`` wrapper of ``module``, rebuilt when its trainable set changes.

    DDP fixes the parameters it reduces (those with ``requires_grad``) when it is built; fine-tuning
    unfreezes the transformer after ``freeze_steps``, so ``wrapper()`` compares the trainable set with
    the one the current wrapper was built for and builds a new one when it differs. The wrapper is
    only called (``wrapper()(inputs)``): weights, checkpoints and evaluation use ``module`` itself, so
    state-dict names never carry DDP's ``module.`` prefix.

    ``find_unused_parameters`` must be True when a parameter that requires grad can get no gradient
    in a forward pass (layerdrop, a frozen-by-``no_grad`` feature encoder, a loss that skips a
    module); it costs one autograd-graph traversal per synchronizing forward, so it is off otherwise.
    Gradients are summed over ranks (``_sum_allreduce_hook``); a parameter used on no rank keeps
    ``grad=None`` (Adam leaves it alone, as with one process).
    """

    def __init__(self, module: torch.nn.Module, device: torch.device, find_unused_parameters: bool):
        self.module = module
        self.device = device
        self.find_unused_parameters = find_unused_parameters
        self._signature: tuple[bool, ...] | None = None
        self._wrapper: torch.nn.parallel.DistributedDataParallel | None = None

    def wrapper(self) -> torch.nn.parallel.DistributedDataParallel:
        signature = tuple(p.requires_grad for p in self.module.parameters())
        if signature != self._signature:
            if not any(signature):
                from lrasr.errors import LrasrError

                raise LrasrError("no parameter of the model requires a gradient: nothing to train")
            if self._wrapper is not None:
                self._wrapper = None  # release the old reducer (and its autograd hooks) first
                gc.collect()
            # init_sync=False: ranks already hold rank 0's weights (broadcast_model at the start; every
            # update keeps them equal), so a rebuild need not broadcast the whole model again.
            # broadcast_buffers=False: wav2vec 2.0 has no running statistics (group/layer norm only).
            # device_ids=None also on CUDA (allowed for a module on one GPU): with device_ids DDP copies
            # every input tensor to the GPU, lengths too, which the model then copies back to the CPU for
            # its frame bookkeeping -- a sync that waits for the previous micro-batch's backward pass.
            # The loop already puts the waveforms on the device.
            wrapper = torch.nn.parallel.DistributedDataParallel(
                self.module, device_ids=None, output_device=None, broadcast_buffers=False,
                find_unused_parameters=self.find_unused_parameters, init_sync=False)
            wrapper.register_comm_hook(None, _sum_allreduce_hook)
            self._wrapper, self._signature = wrapper, signature
        assert self._wrapper is not None
        return self._wrapper


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Every rank's ``obj`` (for the metric sums at log time)."""
    if not info.active:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
