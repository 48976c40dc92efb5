"""Batched acoustic inference: waveforms -> CTC log-probabilities, length-sorted, bf16 (or fp16) on CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lrasr.audio.decode import SAMPLE_RATE
from lrasr.errors import LrasrError

MIN_SAMPLES = 400


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; the same rules and errors as training."""
    from lrasr.train.distributed import resolve_device as resolve

    return resolve(device)


def inference_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for inference on ``device``: None (float32) on the CPU; bf16 on GPUs that
    compute it natively (Ampere and later); fp16 on older GPUs (V100, T4), where bf16 is only
    emulated and slow (``AcousticModel`` reruns a batch whose fp16 logits overflow in float32)."""
    if device.type != "cuda":
        return None
    from lrasr.train.distributed import native_bf16

    return torch.bfloat16 if native_bf16(device) else torch.float16


def run_model(model: torch.nn.Module, waveforms: torch.Tensor, lengths: torch.Tensor,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A CTC model's forward pass under ``inference_dtype(device)``: waveforms [B, S] on ``device``,
    lengths [B] (best on the CPU, where the model's frame bookkeeping is) -> (logits [B, F, V], frames [B]).
    fp16 logits that overflowed (inf/NaN) are computed again in float32 for this batch."""
    dtype = inference_dtype(device)
    if dtype is None:
        return model(waveforms, lengths)
    with torch.autocast(device.type, dtype=dtype):
        logits, frames = model(waveforms, lengths)
    if dtype == torch.float16 and not bool(torch.isfinite(logits).all()):
        return model(waveforms, lengths)
    return logits, frames


def load_model(model_dir: str | Path, device: torch.device):
    """Load a fine-tuned CTC model folder -> (model in eval mode, tokenizer); clear errors for bad folders."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LrasrError("model folder not found; give the folder written by `lrasr finetune` "
                         "(<workdir>/finetune/model)", model_dir)
    if not (model_dir / "config.json").is_file():
        inner = model_dir / "model"  # given the stage folder (<workdir>/finetune) instead of its model
        hint = f"; did you mean {inner}?" if (inner / "config.json").is_file() else ""
        raise LrasrError(f"not a model folder (no config.json){hint}", model_dir)
    from lrasr.model.io import load_ctc_model

    try:
        model, tokenizer = load_ctc_model(model_dir, device=str(device))
    except LrasrError:
        raise
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise LrasrError(f"cannot load the CTC model ({exc})", model_dir) from None
    if tokenizer is None:
        raise LrasrError("the model folder has no tokenizer files, so its outputs cannot be turned into text; "
                         "copy <workdir>/prepare/tokenizer/* into it or re-save it with `lrasr finetune`", model_dir)
    model.eval()
    return model, tokenizer


def batches_by_seconds(lengths: Sequence[int], batch_seconds: float) -> list[list[int]]:
    """Indices grouped so that (longest item x batch size) stays within ``batch_seconds`` of audio,
    longest first (padding is small when neighbours have similar lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    limit = batch_seconds * SAMPLE_RATE
    out: list[list[int]] = []
    for i in order:
        if out and lengths[out[-1][0]] * (len(out[-1]) + 1) <= limit:
            out[-1].append(i)
        else:
            out.append([i])
    return out


class AcousticModel:
    """A CTC model plus its tokenizer; ``log_probs(waves)`` runs it in length-sorted batches."""

    def __init__(self, model_dir: str | Path, device: str | None = None, batch_seconds: float = 120.0):
        self.device = resolve_device(device)
        self.model, self.tokenizer = load_model(model_dir, self.device)
        self.batch_seconds = batch_seconds
        self.model_dir = Path(model_dir)

    @torch.inference_mode()
    def log_probs(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """[T_i] float32 16 kHz waves -> [F_i, V] float32 log-probabilities (valid frames only), in input order.

        A batch that runs out of GPU memory is split in halves (and later batches are kept to the size
        that fitted); a single chunk that does not fit is a one-line ``LrasrError``.
        """
        out: list[np.ndarray | None] = [None] * len(waves)
        # the feature encoder's first convolution needs 400 samples (25 ms): shorter input is zero-padded
        lengths = [max(len(w), MIN_SAMPLES) for w in waves]
        pending = batches_by_seconds(lengths, self.batch_seconds)[::-1]  # a stack, longest batch on top
        while pending:
            group = pending.pop()
            try:
                logp, out_lens = self._run(waves, lengths, group)
            except torch.OutOfMemoryError:
                longest = max(lengths[i] for i in group)
                if len(group) == 1:
                    raise LrasrError(f"out of {self.device} memory on one {longest / SAMPLE_RATE:.1f} s chunk: lower "
                                     "the chunk length (--chunk-seconds, decode.chunk_seconds) or use --device cpu",
                                     self.model_dir) from None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                # this batch and all later ones (this call's and the next calls') at most half as big
                self.batch_seconds = min(self.batch_seconds, (len(group) + 1) // 2 * longest / SAMPLE_RATE)
                rest = group + [i for g in reversed(pending) for i in g]
                pending = [[rest[j] for j in g]
                           for g in batches_by_seconds([lengths[i] for i in rest], self.batch_seconds)][::-1]
                continue
            for row, i in enumerate(group):
                out[i] = np.ascontiguousarray(logp[row, : int(out_lens[row])])
        return out  # type: ignore[return-value]

    def _run(self, waves: Sequence[np.ndarray], lengths: list[int], group: list[int]) -> tuple[np.ndarray, list[int]]:
        """One padded batch -> (log-probs [B, F, V] float32, valid frames per row)."""
        batch = torch.zeros(len(group), max(lengths[i] for i in group))
        for row, i in enumerate(group):
            wave = np.asarray(waves[i], dtype=np.float32)
            batch[row, : len(wave)] = torch.from_numpy(wave)
        # lengths stay on the CPU, where the model does its frame bookkeeping (no device round trip)
        lens = torch.tensor([lengths[i] for i in group])
        logits, out_lens = run_model(self.model, batch.to(self.device), lens, self.device)
        # CTC decoding needs normalized scores; float32 because bf16 rounds small log-probs coarsely
        logp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return logp, (out_lens.cpu().tolist() if out_lens is not None else [logp.shape[1]] * len(group))
