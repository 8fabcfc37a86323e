"""Training-test setup.

With small models on a machine with few cores, PyTorch's CPU threads compete with the env's Numba
threads (and with other processes) and slow training several-fold; one PyTorch thread is fastest.
Training tests run with one, and the setting is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
