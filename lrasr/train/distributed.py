"""torch.distributed set-up from torchrun's environment, and the per-update gradient reduction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

# all-reduce gradients in buckets of this many elements (bounds the extra memory of the flat buffer)
BUCKET_ELEMENTS = 32 * 1024 * 1024
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
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LrasrError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    if name != "cpu":
        raise LrasrError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); no-op for one process."""
    info = env_info()
    if info.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # rank 0 alone runs the task's evaluation (dev WER with beam search can take a while) while the
        # others wait in a collective: NCCL's default 10-minute timeout would kill them
        dist.init_process_group(backend=backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def reduce_gradients(params: list[torch.nn.Parameter], info: DistInfo, scale: float) -> None:
    """Sum gradients over ranks, then multiply by ``scale`` (1 / global sample size).

    A parameter with no gradient on any rank keeps ``grad=None`` (Adam leaves it alone, as it would
    with one process); one with a gradient on some rank gets the sum (zeros standing in for ranks
    where it was unused, e.g. a layer dropped by layerdrop).
    """
    if not info.active:
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale)
        return
    device = params[0].device if params else torch.device("cpu")
    has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=device)
    dist.all_reduce(has, op=dist.ReduceOp.SUM)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.Tensor] = []
    size = 0
    for p in used:
        bucket.append(p.grad)
        size += p.grad.numel()
        if size >= BUCKET_ELEMENTS:
            _reduce_bucket(bucket, scale)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket, scale)


def _reduce_bucket(grads: list[torch.Tensor], scale: float) -> None:
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.mul_(scale)
    for g, reduced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(reduced)


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Every rank's ``obj`` (for the metric sums at log time)."""
    if not info.active:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
