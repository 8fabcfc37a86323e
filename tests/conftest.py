"""Test-session setup.

Without a GPU, CUDA kernels run in Numba's simulator: ``NUMBA_ENABLE_CUDASIM=1`` must be set before
Numba is first imported, which is why it is set here, at collection time. With a GPU the ``cuda``
backend is tested for real.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest


@pytest.fixture(scope="session")
def gpu_backend() -> str:
    """The backend that runs the CUDA compilation of the kernels here: real ``cuda`` or ``cudasim``."""
    return "cudasim" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else "cuda"
