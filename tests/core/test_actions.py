"""The step kernel's own check of the actions (``Env.check_actions``, no host sync): without the host check, an
action outside the action space is replaced by a safe one, and the first of each replica is named at the next sync
point; the same code on the CPU and in the CUDA compilation. (Every registered env gets the contract's version of
these checks: warpdrive.core.contract.check_actions.)"""

from __future__ import annotations

import math

import pytest
import torch

from warpdrive.core.actions import InvalidActionError
from warpdrive.envs.pendulum import Pendulum
from warpdrive.envs.tag_gridworld import TagGridWorld


@pytest.mark.parametrize("on_cuda", [False, True], ids=["cpu", "cuda-code"])
def test_discrete_faults_are_named_first_by_replica_then_agent_and_head(on_cuda: bool, gpu_backend: str) -> None:
    env = TagGridWorld(num_taggers=2, grid_length=5, num_envs=3, validate=False,
                       backend=gpu_backend if on_cuda else "cpu")
    env.reset(seed=0)
    generator = torch.Generator(env.device).manual_seed(0)  # the simulator's device is the CPU, a GPU's is not
    actions = env.sample_actions(generator).clone()
    actions[2, 0, 0] = 5  # Discrete(5): one past the last index
    actions[1, 2, 0] = 2**31 - 1  # read past the move table before the check existed
    actions[1, 1, 0] = -1
    with pytest.raises(InvalidActionError, match=r"actions\[1, 1, 0\] = -1, expected 0 <= index < 5"):
        env.step(actions)
    # every bad action was replaced by index 0, the others kept, and the step ran
    assert env.actions[2, 0, 0] == 0 and env.actions[1, 2, 0] == 0 and env.actions[1, 1, 0] == 0
    assert torch.equal(env.actions[0], actions[0])
    assert torch.equal(env.store["t"], torch.ones(3, dtype=torch.int32, device=env.device))
    env.step(env.sample_actions(generator))  # the records were cleared by the error


def test_int64_actions_saturate_instead_of_wrapping_into_int32() -> None:
    env = TagGridWorld(num_taggers=2, grid_length=5, num_envs=2, validate=False, backend="cpu")
    env.reset(seed=0)
    actions = env.sample_actions(torch.Generator().manual_seed(0)).to(torch.int64)
    actions[0, 1, 0] = 2**32 + 3  # would wrap to the valid index 3
    with pytest.raises(InvalidActionError, match=r"actions\[0, 1, 0\] = 2147483647 \(or beyond int32\)"):
        env.step(actions)


@pytest.mark.parametrize("on_cuda", [False, True], ids=["cpu", "cuda-code"])
def test_nan_and_infinite_box_actions_are_named_finite_ones_left_to_the_env(on_cuda: bool, gpu_backend: str) -> None:
    env = Pendulum(num_envs=2, validate=False, backend=gpu_backend if on_cuda else "cpu")
    env.reset(seed=0)
    for value in (math.nan, -math.inf):
        actions = torch.zeros(2, 1, 1, device=env.device)
        actions[1, 0, 0] = value
        with pytest.raises(InvalidActionError, match=rf"actions\[1, 0, 0\] = {value}, expected a finite value"):
            env.step(actions)
        assert env.actions[1, 0, 0] == 0.0  # 0 clipped to the bounds
    env.step(torch.full((2, 1, 1), 2.5, device=env.device))  # Pendulum clips the torque to [-2, 2], as Gymnasium's does


def test_the_host_check_raises_before_the_step_and_the_kernel_check_can_be_switched_off() -> None:
    env = TagGridWorld(num_taggers=2, grid_length=5, num_envs=2, validate=True, backend="cpu")
    env.reset(seed=0)
    actions = env.sample_actions(torch.Generator().manual_seed(0)).clone()
    actions[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"action out of range: actions\[0, 0, 0\] = 9"):
        env.step(actions)
    assert int(env.store["t"].max()) == 0  # refused before the step
    unchecked = TagGridWorld(num_taggers=2, grid_length=5, num_envs=2, validate=False, check_actions=False,
                             backend="cpu")
    assert not unchecked.params.check_actions and env.params.check_actions
