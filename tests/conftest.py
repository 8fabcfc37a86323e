"""Test-session setup.

Without a GPU, CUDA kernels run in Numba's simulator: ``NUMBA_ENABLE_CUDASIM=1`` must be set before
Numba is first imported, which is why it is set here, at collection time. With a GPU the ``cuda``
backend is tested for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest


@pytest.fixture(scope="session")
def gpu_backend() -> str:
    """The backend that runs the CUDA compilation of the kernels here: real ``cuda`` or ``cudasim``."""
    return "cudasim" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else "cuda"


@pytest.fixture(scope="session")
def run_with_cuda_target() -> Callable[[str], None]:
    """Run Python ``code`` in a fresh process where Numba's real CUDA target is loaded, not the simulator
    (PTX compilation needs it, and it needs no GPU); the test fails with the process's stderr."""

    def run(code: str) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
        result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    return run
