"""CUDA-only logic exercised on a machine without a GPU: precision choice, inference casts, fake CUDA tensors.

No test here needs a GPU. What they cannot check (real kernels, NCCL, speed) is listed in the session
notes with the commands to run on a GPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch


def test_auto_precision_is_fp16_where_bf16_is_only_emulated(monkeypatch):
    """V100/T4 (compute capability 7.x): ``torch.cuda.is_bf16_supported()`` says True there (emulation),
    but training must take fp16 + GradScaler; Ampere and later take bf16. The capability asked is the
    training device's, not the current device's."""
    from lrasr.train.loop import resolve_precision

    asked = []
    capability = {0: (7, 0), 1: (8, 0), 2: (9, 0)}

    def get_capability(device=None):
        asked.append(torch.device(device).index)
        return capability[torch.device(device).index]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.version, "hip", None)
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp16"
    assert resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda:2")) == "bf16"
    assert asked == [0, 1, 2]
    assert resolve_precision("bf16", torch.device("cuda:0")) == "bf16"  # asked for explicitly: kept
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def _tiny_ctc(vocab: int = 6):
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC

    torch.manual_seed(0)
    return Wav2Vec2ForCTC(dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1), vocab).eval()


def _acoustic(model, device: str = "cpu"):
    from lrasr.decode.acoustic import AcousticModel

    acoustic = AcousticModel.__new__(AcousticModel)  # a model folder is not the point here
    acoustic.device, acoustic.model, acoustic.tokenizer, acoustic.batch_seconds = torch.device(device), model, None, 60.0
    return acoustic


def test_inference_casts_by_gpu_generation(monkeypatch):
    import lrasr.decode.acoustic as acoustic

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: {0: (7, 5), 1: (9, 0)}[torch.device(d).index])
    assert acoustic.inference_dtype(torch.device("cpu")) is None
    assert acoustic.inference_dtype(torch.device("cuda:0")) == torch.float16  # T4: no native bf16
    assert acoustic.inference_dtype(torch.device("cuda:1")) == torch.bfloat16


def test_fp16_inference_falls_back_to_float32_when_logits_overflow(monkeypatch):
    """Older GPUs run inference in fp16 (exercised here with CPU autocast): a batch whose logits
    overflow fp16's range is rerun in float32 instead of giving NaN log-probabilities; a batch that
    fits keeps the fp16 result. Lengths stay on the CPU (the model's bookkeeping is there)."""
    import numpy as np

    import lrasr.decode.acoustic as acoustic

    model = _tiny_ctc()
    seen = []
    original = model.forward

    def spy(waves, lengths):
        seen.append((lengths.device.type, torch.is_autocast_enabled("cpu")))
        return original(waves, lengths)

    model.forward = spy
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 6000)]
    reference = _acoustic(model).log_probs(waves)  # float32 on the CPU
    assert seen == [("cpu", False)]
    monkeypatch.setattr(acoustic, "inference_dtype", lambda device: torch.float16)
    seen.clear()
    fits = _acoustic(model).log_probs(waves)
    assert seen == [("cpu", True)]  # one fp16 pass, kept
    assert all(np.allclose(a, b, atol=0.1) for a, b in zip(fits, reference))
    with torch.no_grad():
        model.aux.weight.mul_(1e5)  # logits far beyond fp16's 65504
    reference = _acoustic(model).log_probs(waves)
    seen.clear()
    out = _acoustic(model).log_probs(waves)
    assert seen == [("cpu", True), ("cpu", False)]  # the fp16 pass overflowed: rerun in float32
    assert all(np.isfinite(a).all() and np.allclose(a, b, atol=1e-3) for a, b in zip(out, reference))
    # fine-tuning's dev evaluation and `lrasr evaluate` go through the same pass
    from lrasr.evaluate import forward_batches

    seen.clear()
    (idx, logits, frames), = forward_batches(model, waves, "cpu", 60.0)
    assert seen == [("cpu", True), ("cpu", False)] and torch.isfinite(logits).all()
