"""Shared fixtures: the real-speech corpora beside the checkout, generated audio, temp workdirs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = Path(os.environ.get("LRASR_SHARED_CORPORA", REPO.parent / "shared" / "corpora"))

# Tests share two cores with each other's processes: keep torch from oversubscribing.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_corpora() -> Path:
    """../shared/corpora (real recorded speech); tests that need it skip when it is absent."""
    if not SHARED_CORPORA.is_dir():
        pytest.skip(f"real-speech corpora not found at {SHARED_CORPORA} (set LRASR_SHARED_CORPORA)")
    return SHARED_CORPORA


def espeak(text: str, path: Path, voice: str = "ml", speed: int = 150, pitch: int = 50) -> Path:
    """Synthesize ``text`` to a WAV file with espeak-ng (22.05 kHz mono)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; `make test` installs it)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
