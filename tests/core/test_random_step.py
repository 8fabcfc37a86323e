"""Random actions drawn inside the step kernel (``Env.random_step``): valid, uniform, the same on both targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from warpdrive.envs import make


def in_env_group(name: str, kwargs: dict) -> object:
    """In its env's pytest-xdist group (tests/envs/test_contract.py), whose worker compiles its programs once."""
    return pytest.param(name, kwargs, marks=pytest.mark.xdist_group(name))


@pytest.mark.cudasim
@pytest.mark.parametrize(("name", "kwargs"), [
    in_env_group("tag_gridworld", {"num_taggers": 3, "episode_length": 5}),
    # (k = 3 in one grid cell: the program of test_tag_continuous's partial-one-cell case, compiled once)
    in_env_group("tag_continuous", {"num_taggers": 2, "num_runners": 3, "episode_length": 4,
                                    "use_full_observation": False, "num_other_agents_observed": 3}),
    in_env_group("pendulum", {}),
])
def test_random_steps_are_identical_on_both_targets(name: str, kwargs: dict, gpu_backend: str) -> None:
    cpu = make(name, num_envs=3, backend="cpu", **kwargs)
    gpu = make(name, num_envs=3, backend=gpu_backend, **kwargs)
    cpu.reset(seed=5)
    gpu.reset(seed=5)
    taken = []
    for _ in range(7):  # past an episode end: the draws depend on (episode, t)
        for env in (cpu, gpu):
            env.random_step()
        assert torch.equal(cpu.actions, gpu.actions.cpu())
        for field in ("obs", "rewards", "done"):
            assert torch.equal(cpu.store[field], gpu.store[field].cpu()), field
        taken.append(cpu.actions.clone())
    assert not all(torch.equal(taken[0], a) for a in taken[1:])  # fresh actions every step


def test_discrete_draws_are_uniform_over_each_head() -> None:
    env = make("tag_continuous", num_envs=50, backend="cpu", num_taggers=4, num_runners=36, episode_length=1000,
               num_acceleration_levels=4, num_turn_levels=2)
    env.reset(seed=1)
    counts = [np.zeros(5), np.zeros(3)]
    for _ in range(40):
        env.random_step()
        for head, n in enumerate((5, 3)):
            counts[head] += np.bincount(env.actions[..., head].reshape(-1).numpy(), minlength=n)
    for head_counts in counts:
        draws = head_counts.sum()  # 80,000 per head
        expected = draws / head_counts.size
        # binomial standard deviation <= sqrt(draws / 4) ~ 141: 6 of them is far outside chance
        assert np.abs(head_counts - expected).max() < 6 * np.sqrt(draws / 4), head_counts


def test_box_draws_cover_the_bounds() -> None:
    env = make("pendulum", num_envs=2000, backend="cpu")
    env.reset(seed=0)
    env.random_step()
    torques = env.actions.reshape(-1).numpy()
    assert torques.min() >= -2.0 and torques.max() <= 2.0
    assert torques.min() < -1.95 and torques.max() > 1.95
    assert abs(torques.mean()) < 0.1  # uniform on [-2, 2]: standard error 0.026


def test_the_seed_picks_the_actions() -> None:
    def actions(seed: int) -> torch.Tensor:
        env = make("tag_gridworld", num_envs=4, backend="cpu", num_taggers=5)
        env.reset(seed=seed)
        env.random_step()
        return env.actions.clone()

    assert torch.equal(actions(3), actions(3))
    assert not torch.equal(actions(3), actions(4))
