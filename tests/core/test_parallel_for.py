"""ParallelFor: one kernel function run for every index on the tensors' device (the CPU target here; the
GPU one is checked against it in tests/training/test_gpu.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from warpdrive import kernel_function
from warpdrive.core.compile import ParallelFor


@kernel_function
def _running_sum_of_column(i, args):
    values, scale, out = args
    total = np.float32(0.0)
    for t in range(values.shape[0]):
        total += values[t, i] * scale
        out[t, i] = total


running_sum = ParallelFor(_running_sum_of_column, "tests.core.running_sum")


def test_every_index_runs_once_with_tensors_and_scalars() -> None:
    values = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    out = torch.full_like(values, -1.0)
    running_sum(3, (values, np.float32(2.0), out))
    torch.testing.assert_close(out, 2.0 * values.cumsum(0))
    untouched = torch.full_like(values, -1.0)
    running_sum(0, (values, np.float32(2.0), untouched))  # nothing to do: no launch
    assert untouched.eq(-1.0).all()


def test_arguments_without_a_tensor_are_refused() -> None:
    with pytest.raises(ValueError, match="expected at least one tensor argument"):
        running_sum(3, (np.float32(1.0),))
