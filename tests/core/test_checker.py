"""The consistency checker finds the first divergence and names it."""

from __future__ import annotations

import numpy as np
import pytest

from warpdrive import kernel_function, per_agent
from warpdrive.core.checker import GPU_TOLERANCE, check_consistency
from warpdrive.envs.tag_gridworld import TagGridWorld
from warpdrive.envs.tag_gridworld import env as gridworld


@kernel_function
def _move_off_by_one(env, agent, p, s):
    gridworld._move(env, agent, p, s)
    if agent == 2 and s.t[env] == 3 and env == 1:  # a planted bug: one agent, one env, one step
        s.rewards[env, agent] += np.float32(0.5)


class BuggyGridWorld(TagGridWorld):
    step_phases = tuple(
        per_agent(_move_off_by_one) if phase.fns == (gridworld._move,) else phase for phase in TagGridWorld.step_phases
    )


def test_reports_first_divergence_with_env_agent_step_and_field() -> None:
    kwargs = dict(num_taggers=3, num_envs=2, episode_length=8, backend="cpu")
    report = check_consistency(TagGridWorld(**kwargs), BuggyGridWorld(**kwargs), seed=0)
    assert not report.ok
    d = report.divergence
    assert (d.step, d.field, d.env, d.agent) == (3, "rewards", 1, 2)
    assert d.actual == pytest.approx(d.expected + 0.5)
    assert "step 3" in str(report) and "'rewards'" in str(report)


def test_consistent_runs_report_ok_over_autoresets() -> None:
    kwargs = dict(num_taggers=2, num_envs=3, episode_length=4, backend="cpu")
    report = check_consistency(TagGridWorld(**kwargs), TagGridWorld(**kwargs), steps=13)
    assert report.ok and report.steps == 13 and report.episodes_finished >= 9


def test_refuses_to_compare_different_configs() -> None:
    with pytest.raises(ValueError, match="same config"):
        check_consistency(TagGridWorld(num_taggers=2, backend="cpu"), TagGridWorld(num_taggers=2, grid_length=5,
                                                                                    backend="cpu"))


@kernel_function
def _move_off_by_a_millionth(env, agent, p, s):
    gridworld._move(env, agent, p, s)
    if agent == 1 and s.t[env] == 2:  # a planted difference far below the 1e-5 tolerance
        s.rewards[env, agent] += np.float32(1e-6)


class SlightlyOffGridWorld(TagGridWorld):
    step_phases = tuple(
        per_agent(_move_off_by_a_millionth) if phase.fns == (gridworld._move,) else phase
        for phase in TagGridWorld.step_phases
    )


def test_bit_identical_envs_are_compared_exactly_by_default() -> None:
    kwargs = dict(num_taggers=3, num_envs=2, episode_length=8, backend="cpu")
    reference = TagGridWorld(**kwargs)
    assert reference.bit_identical_on_gpu
    report = check_consistency(reference, SlightlyOffGridWorld(**kwargs), seed=0)
    assert not report.ok and (report.divergence.step, report.divergence.field) == (2, "rewards")
    # an env whose CPU and GPU round differently by design gets a tolerance against a real GPU only: CPU vs CPU
    # (and CPU vs Numba's simulator, which computes with the CPU's arithmetic) stays bit for bit
    reference.bit_identical_on_gpu = False
    report = check_consistency(reference, SlightlyOffGridWorld(**kwargs), seed=0)
    assert not report.ok and report.exact and str(report).endswith("(exact)")
    on_gpu = SlightlyOffGridWorld(**kwargs)
    on_gpu.backend = "cuda"  # (only the default tolerance reads it; the kernels still run on the CPU)
    report = check_consistency(reference, on_gpu, seed=0)
    assert report.ok and (report.atol, report.rtol) == (GPU_TOLERANCE, GPU_TOLERANCE)
    assert not check_consistency(reference, on_gpu, seed=0, atol=0.0, rtol=0.0).ok
