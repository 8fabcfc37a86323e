"""Models (heads, masks, initialisation, registry) and the device buffers."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from warpdrive.training.models import (
    MODELS,
    ActorCritic,
    DeterministicActorCritic,
    ModelSpec,
    build_model,
    register_model,
)
from warpdrive.training.storage import EnvRollout, FlatBatch, ReplayBuffer, RolloutStorage, agent_selector


def test_discrete_head_samples_log_probs_and_entropy() -> None:
    torch.manual_seed(0)
    model = ActorCritic(6, gym.spaces.Discrete(5), ModelSpec(), 6)
    obs = torch.randn(4, 3, 6)
    dist = model.distribution(obs)
    actions = dist.sample()
    assert actions.shape == (4, 3, 1) and actions.dtype == torch.int64
    reference = torch.distributions.Categorical(logits=dist.logits[..., 0, :])
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions[..., 0]))
    torch.testing.assert_close(dist.entropy(), reference.entropy())
    assert model.value(obs).shape == (4, 3)


def test_multidiscrete_heads_of_different_sizes_and_masks() -> None:
    torch.manual_seed(0)
    model = ActorCritic(4, gym.spaces.MultiDiscrete([3, 2]), ModelSpec(), 4)
    obs = torch.randn(1000, 4)
    mask = torch.ones(1000, 5, dtype=torch.bool)
    mask[:, 1] = False  # head 0: action 1 is not allowed
    mask[:, 4] = False  # head 1: only action 0 is allowed
    dist = model.distribution(obs, mask)
    actions = dist.sample()
    assert actions.shape == (1000, 2)
    assert not (actions[:, 0] == 1).any() and set(actions[:, 0].tolist()) == {0, 2}
    assert (actions[:, 1] == 0).all()
    assert (actions[:, 1] < 2).all()  # the padding of the smaller head is never drawn
    assert torch.isfinite(dist.entropy()).all() and torch.isfinite(dist.log_prob(actions)).all()
    (dist.entropy().sum() + dist.log_prob(actions).sum()).backward()  # masked logits: no NaN gradients
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the joint log-probability is the sum over heads
    heads = [torch.distributions.Categorical(logits=dist.logits[:, h, : n]) for h, n in enumerate([3, 2])]
    expected = sum(h.log_prob(actions[:, i]) for i, h in enumerate(heads))
    torch.testing.assert_close(dist.log_prob(actions), expected)


def test_gaussian_head() -> None:
    torch.manual_seed(0)
    model = ActorCritic(3, gym.spaces.Box(-2, 2, (2,)), ModelSpec(log_std_init=-0.5), 3)
    obs = torch.randn(7, 3)
    dist = model.distribution(obs)
    actions = dist.sample()
    reference = torch.distributions.Normal(dist.mean, torch.full_like(dist.mean, math.exp(-0.5)))
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(), reference.entropy().sum(-1))


def test_cleanrl_initialisation() -> None:
    torch.manual_seed(0)
    model = ActorCritic(8, gym.spaces.Discrete(4), ModelSpec(hidden_sizes=[64, 64]), 8).requires_grad_(False)
    head = model.actor_head.weight
    # orthogonal with gain 0.01: rows are orthogonal with norm 0.01
    torch.testing.assert_close(head @ head.T, 0.01**2 * torch.eye(4), atol=1e-7, rtol=0)
    hidden = model.actor_trunk[0].weight  # [64, 8]: columns orthonormal times sqrt(2)
    torch.testing.assert_close(hidden.T @ hidden, 2.0 * torch.eye(8), atol=1e-5, rtol=0)
    assert float(model.value_head.weight.norm()) == pytest.approx(1.0, rel=1e-5)
    assert all(float(b.abs().max()) == 0.0 for n, b in model.named_parameters() if n.endswith("bias"))


def test_shared_trunk_is_one_set_of_weights() -> None:
    model = ActorCritic(5, gym.spaces.Discrete(3), ModelSpec(shared_trunk=True), 5)
    assert model.critic_trunk is None
    assert not any(k.startswith("critic_trunk") for k in model.state_dict())
    assert model.value(torch.randn(2, 5)).shape == (2,)


def test_ddpg_model_stays_in_bounds() -> None:
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    model = DeterministicActorCritic(3, space, ModelSpec(), 3)
    with torch.no_grad():
        for layer in model.actor:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(1000)  # saturate the tanh
        action = model.action(torch.randn(500, 3))
    assert (action[:, 0] >= -2).all() and (action[:, 0] <= 2).all()
    assert (action[:, 1] >= 0).all() and (action[:, 1] <= 1).all()
    assert model.q(torch.randn(500, 3), action).shape == (500,)
    with pytest.raises(TypeError, match="needs a Box action space"):
        DeterministicActorCritic(3, gym.spaces.Discrete(2), ModelSpec(), 3)


def test_register_custom_model() -> None:
    @register_model("tiny_test_model")
    class Tiny(ActorCritic):
        def __init__(self, obs_size, action_space, spec, critic_input_size):
            super().__init__(obs_size, action_space, ModelSpec(hidden_sizes=[spec.kwargs["width"]]),
                             critic_input_size)

    try:
        model = build_model("tiny_test_model", 4, gym.spaces.Discrete(2), ModelSpec(kwargs={"width": 7}), 4)
        assert model.actor_trunk[0].out_features == 7
    finally:
        MODELS.pop("tiny_test_model")
    with pytest.raises(KeyError, match="unknown model 'nope'; registered models"):
        build_model("nope", 4, gym.spaces.Discrete(2), ModelSpec(), 4)


def test_rollout_storage_shapes_and_writes() -> None:
    cpu = torch.device("cpu")
    env_rollout = EnvRollout(5, 3, 4, 2, cpu, global_state_size=8)
    assert env_rollout.obs.shape == env_rollout.final_obs.shape == (5, 3, 4, 2)
    assert env_rollout.rewards.shape == (5, 3, 4) and env_rollout.terminated.shape == (5, 3)
    assert env_rollout.global_state.shape == env_rollout.final_global_state.shape == (5, 3, 8)
    assert env_rollout.last_global_state.shape == (3, 8) and env_rollout.last_obs.shape == (3, 4, 2)
    first = RolloutStorage(env_rollout, agent_selector([0, 1], cpu), 1, torch.int64)
    assert first.agents == slice(0, 2)
    assert first.obs.shape == (5, 3, 2, 2) and first.actions.shape == (5, 3, 2, 1)
    assert first.actions.dtype == torch.int64
    assert first.rewards.shape == first.values.shape == first.logprobs.shape == (5, 3, 2)
    assert first.last_obs.shape == (3, 2, 2) and first.global_state is env_rollout.global_state
    step = torch.tensor([2])
    obs = torch.arange(24.0).reshape(3, 4, 2)
    env_rollout.write(step, obs=obs, terminated=torch.tensor([True, False, True]))
    assert env_rollout.obs[2].equal(obs) and env_rollout.obs[[0, 1, 3, 4]].eq(0).all()
    assert first.obs[2].equal(obs[:, :2]) and first.obs.data_ptr() == env_rollout.obs.data_ptr()  # a view
    scattered = RolloutStorage(env_rollout, agent_selector([1, 3], cpu), 2, torch.float32, on_policy=False)
    assert isinstance(scattered.agents, torch.Tensor) and scattered.obs[2].equal(obs[:, [1, 3]])
    assert not hasattr(scattered, "values")
    env_rollout.write(step, truncated=torch.tensor([False, True, False]))
    assert first.dones[2].tolist() == [True, True, True]


def test_next_obs_is_the_final_obs_where_an_episode_ended() -> None:
    cpu = torch.device("cpu")
    env_rollout = EnvRollout(3, 2, 1, 1, cpu)
    env_rollout.obs.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).view(3, 2, 1, 1))
    env_rollout.final_obs.fill_(-1.0)
    env_rollout.last_obs.fill_(9.0)
    env_rollout.truncated[0, 1] = True
    env_rollout.terminated[2, 0] = True
    storage = RolloutStorage(env_rollout, slice(0, 1), 1, torch.float32, on_policy=False)
    assert storage.next_obs.view(3, 2).tolist() == [[3.0, -1.0], [5.0, 6.0], [-1.0, 9.0]]


def test_flat_batch_gives_every_agent_its_env_steps_global_state() -> None:
    """Samples are (step, env, agent) in row-major order; each reads the global state of its env-step, for a
    minibatch as for the whole batch."""
    torch.manual_seed(0)
    steps, envs, agents, obs_size, state_size = 4, 3, 5, 2, 6
    env_rollout = EnvRollout(steps, envs, agents, obs_size, torch.device("cpu"), global_state_size=state_size,
                             action_mask_size=3)
    env_rollout.obs.normal_()
    env_rollout.global_state.normal_()
    env_rollout.action_mask.bernoulli_(torch.full(env_rollout.action_mask.shape, 0.5))
    storage = RolloutStorage(env_rollout, slice(1, 4), 1, torch.int64)  # agents 1, 2, 3 of 5
    storage.actions.random_(0, 3)
    storage.values.normal_()
    advantages = torch.randn(steps, envs, 3)
    batch = FlatBatch(storage, advantages=advantages)
    assert batch.size == steps * envs * 3 and batch["advantages"].equal(advantages.flatten())
    index = torch.tensor([0, 7, 20, 35])
    for samples, ids in ((batch.samples(index), index.tolist()), (batch.samples(), range(batch.size))):
        for row, i in enumerate(ids):
            t, e, a = i // (envs * 3), i // 3 % envs, i % 3
            expected = torch.cat([env_rollout.global_state[t, e], env_rollout.obs[t, e, 1 + a]])
            assert samples["critic_obs"][row].equal(expected), i
            assert samples["action_mask"][row].equal(env_rollout.action_mask[t, e, 1 + a])
            assert samples["values"][row] == storage.values[t, e, a]
    local = FlatBatch(RolloutStorage(EnvRollout(steps, envs, agents, obs_size, torch.device("cpu")), slice(0, 2), 1,
                                     torch.int64))
    assert local.global_rows() is None and local.samples(index[:3])["critic_obs"].shape == (3, obs_size)


def test_replay_buffer_ring() -> None:
    buffer = ReplayBuffer(5, 2, 1, torch.device("cpu"))
    for start in (0, 3):
        n = 3
        ids = torch.arange(start, start + n, dtype=torch.float32)
        buffer.add(ids[:, None].expand(n, 2), ids[:, None], ids, ids[:, None].expand(n, 2) + 1, ids > 4)
    assert buffer.size == 5 and buffer.pos == 1
    assert buffer.rewards.tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]  # the oldest (0) was overwritten
    buffer.add(torch.zeros(12, 2), torch.zeros(12, 1), torch.arange(12.0), torch.zeros(12, 2), torch.zeros(12))
    assert sorted(buffer.rewards.tolist()) == [7.0, 8.0, 9.0, 10.0, 11.0]  # only the newest 5 of 12 survive
    batch = buffer.sample(64)
    assert batch["obs"].shape == (64, 2) and batch["terminated"].dtype == torch.float32
    restored = ReplayBuffer(5, 2, 1, torch.device("cpu"))
    restored.load_state_dict(buffer.state_dict())
    assert restored.pos == buffer.pos and torch.equal(restored.rewards, buffer.rewards)
    with pytest.raises(RuntimeError, match="empty replay buffer"):
        ReplayBuffer(5, 2, 1, torch.device("cpu")).sample(1)
