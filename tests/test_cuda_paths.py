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
