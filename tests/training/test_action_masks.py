"""Action masks from the env: declared as an array, honoured by samplers, policies, storage and updates,
enforced by validation."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive import ArraySpec, Env, kernel_function
from warpdrive.core.actions import InvalidActionError
from warpdrive.core.compile import per_agent
from warpdrive.core.device import cuda_available
from warpdrive.core.sampling import check_mask_allows_some
from warpdrive.envs import REGISTRY, register
from warpdrive.training.config import load_config
from warpdrive.training.trainer import Trainer

# Two heads of 3 and 4 choices. Head 0 allows two of its three choices, which rotate with time; head 1
# allows {0, 2} to agent 0 and {1, 3} to the others. Reward 1 when head 0 takes the allowed choice t % 3.


@kernel_function
def _write_mask(env, agent, p, s):
    t = s.t[env]
    for j in range(3):
        s.action_mask[env, agent, j] = j == t % 3 or j == (t + 1) % 3
    for j in range(4):
        s.action_mask[env, agent, 3 + j] = (j % 2 == 0) == (agent == 0)
    s.obs[env, agent, 0] = np.float32(t % 3)
    s.obs[env, agent, 1] = np.float32(agent)


@kernel_function
def _reward(env, agent, p, s):
    s.rewards[env, agent] = np.float32(1.0) if s.actions[env, agent, 0] == (s.t[env] - 1) % 3 else np.float32(0.0)


@dataclass(frozen=True)
class MaskedConfig:
    num_agents: int = 2
    episode_length: int = 6

    def validate(self) -> None:
        if self.num_agents < 1:
            raise ValueError(f"num_agents must be >= 1, got {self.num_agents}")


class MaskedChoice(Env):
    name = "masked_choice"
    Config = MaskedConfig
    step_phases = (per_agent(_reward, _write_mask),)
    reset_phases = (per_agent(_write_mask),)

    @classmethod
    def num_agents_of(cls, config: MaskedConfig) -> int:
        return config.num_agents

    def single_action_space(self) -> gym.spaces.MultiDiscrete:
        return gym.spaces.MultiDiscrete([3, 4])

    def observation_size(self) -> int:
        return 2

    def state_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("action_mask", "agent", torch.bool, "action_mask", (7,))]


@pytest.fixture(scope="module", autouse=True)
def registered():
    register("masked_choice", f"{__name__}:MaskedChoice")
    yield
    REGISTRY.pop("masked_choice")


def allowed(actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[..., 2] actions under [..., 7] masks -> [..., 2] bool."""
    offsets = torch.tensor([0, 3])
    return mask.gather(-1, actions.long() + offsets)


def test_sampling_draws_only_allowed_actions_and_validation_rejects_the_others() -> None:
    env = MaskedChoice(num_envs=64, device="cpu")
    env.reset()
    drawn = []
    for _ in range(5):
        mask = env.action_mask.clone()
        actions = env.sample_actions().clone()
        assert allowed(actions, mask).all()
        drawn.append(actions)
        env.step()
    drawn = torch.stack(drawn)
    assert set(drawn[..., 0, 1].unique().tolist()) == {0, 2} and set(drawn[..., 1, 1].unique().tolist()) == {1, 3}
    env.reset()
    bad = torch.zeros(64, 2, 2, dtype=torch.int32)  # head 0 choice 0 is allowed at t=0, head 1 choice 0 not for agent 1
    with pytest.raises(ValueError, match=r"actions\[0, 1, 1\] = 0 is masked out"):
        env.step(bad)


def test_the_step_kernel_names_a_masked_out_action_and_takes_a_safe_one() -> None:
    env = MaskedChoice(num_envs=2, backend="cpu", validate=False)
    env.reset(seed=0)
    actions = env.sample_actions(torch.Generator().manual_seed(0)).clone()
    actions[1, 1, 1] = 2  # agent 1 may take only 1 or 3 on head 1
    with pytest.raises(InvalidActionError, match=r"actions\[1, 1, 1\] = 2, expected .*allowed by env.action_mask"):
        env.step(actions)
    assert env.actions[1, 1, 1] == 0 and int(env.store["t"][1]) == 1  # the step ran with a safe action


def test_random_steps_draw_only_allowed_actions() -> None:
    env = MaskedChoice(num_envs=64, device="cpu")
    env.reset(seed=2)
    drawn = []
    for _ in range(5):
        mask = env.action_mask.clone()
        env.random_step()  # draws from the mask of the observation it acts on, inside the kernel
        assert allowed(env.actions, mask).all()
        drawn.append(env.actions.clone())
    drawn = torch.stack(drawn)
    assert set(drawn[..., 0, 1].unique().tolist()) == {0, 2} and set(drawn[..., 1, 1].unique().tolist()) == {1, 3}
    assert set(drawn[..., 0].unique().tolist()) == {0, 1, 2}  # head 0's allowed pair rotates with time


def test_a_mask_that_does_not_fit_the_action_space_is_refused() -> None:
    class Wrong(MaskedChoice):
        def state_arrays(self) -> list[ArraySpec]:
            return [ArraySpec("action_mask", "agent", torch.bool, "action_mask", (5,))]

    with pytest.raises(ValueError, match=r"action_mask must be .*\(7,\)\) \(one flag per choice of \[3, 4\]\)"):
        Wrong(num_envs=2, device="cpu")


@pytest.mark.parametrize("algorithm", ["ppo", "a2c", "random"])
def test_training_acts_within_the_mask_and_learns_from_it(algorithm: str) -> None:
    config = {"env": {"name": "masked_choice", "num_envs": 16}, "rollout_length": 12, "total_env_steps": 16 * 12 * 30,
              "device": "cpu", "seed": 1,
              "policies": {"shared": {"algorithm": algorithm, "optimizer": {"lr": 0.01}}}}
    trainer = Trainer(load_config(config))
    first = trainer.train_iteration()
    storage = trainer.policies[0].storage
    if storage is not None:
        assert storage.action_mask.shape == (12, 16, 2, 7)
        assert allowed(storage.actions, storage.action_mask).all()
        assert torch.isfinite(storage.logprobs).all()
    while not trainer.done:
        last = trainer.train_iteration()
    assert all(np.isfinite(v) for k, v in last.items() if k.startswith("losses/"))
    # within the two allowed choices of head 0, one pays: random earns about half a step's reward
    if algorithm == "random":
        assert 0.35 < last["charts/episodic_return/agents"] / 6 < 0.65
    else:
        assert last["charts/episodic_return/agents"] > first["charts/episodic_return/agents"] + 1.0
        assert last["charts/episodic_return/agents"] / 6 > 0.75


def test_an_all_masked_head_is_an_error_in_validate_mode_only() -> None:
    config = {"env": {"name": "masked_choice", "num_envs": 4, "kwargs": {"num_agents": 3}}, "rollout_length": 2,
              "total_env_steps": 8, "device": "cpu",
              "policies": {"shared": {"algorithm": "ppo"}}}
    trainer = Trainer(load_config(config))
    assert trainer.env.validate  # the CPU default
    trainer.env.action_mask[2, 1, 3:] = False  # env 2, agent 1: head 1 allows nothing
    with pytest.raises(ValueError, match=r"allows no action for env 2, agent 1, head 1 \(all 4 choices masked out\)"):
        trainer.act()
    trainer.env.validate = False  # not checked: the sampler stays free of host syncs
    trainer.act()


def test_the_mask_check_names_the_env_agent_of_a_policy_slice() -> None:
    mask = torch.ones(2, 2, 7, dtype=torch.bool)
    check_mask_allows_some(mask, [3, 4], agent_ids=[5, 9])
    mask[1, 1, :3] = False
    with pytest.raises(ValueError, match=r"env 1, agent 9, head 0 \(all 3 choices"):
        check_mask_allows_some(mask, [3, 4], agent_ids=[5, 9])


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_masked_rollouts_replayed_from_a_cuda_graph_stay_within_the_mask() -> None:
    config = {"env": {"name": "masked_choice", "num_envs": 256}, "rollout_length": 12, "total_env_steps": 256 * 12 * 3,
              "device": "cuda", "policies": {"shared": {"algorithm": "ppo"}}}
    trainer = Trainer(load_config(config))
    for _ in range(3):
        trainer.train_iteration()
    assert trainer.uses_cuda_graph
    storage = trainer.policies[0].storage
    assert allowed(storage.actions.cpu(), storage.action_mask.cpu()).all()
