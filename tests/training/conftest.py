"""Training-test setup: one PyTorch thread and one Numba thread per test (restored afterwards).

With small models and few envs on a machine with few cores, threads only compete: PyTorch's with the
env's Numba workers, and both with other processes. OpenMP workers (Numba's default layer) spin after
each parallel step, and a preempted one stalls the next step by a whole time slice; under load that
made PPO on CartPole take 127 s instead of 23 s. Single-threaded, these tests are fast and steady.
"""

from __future__ import annotations

from collections.abc import Iterator

import numba
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread_each() -> Iterator[None]:
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)
