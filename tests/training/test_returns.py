"""GAE, discounted and n-step returns against slow reference loops, with terminations and truncations."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from warpdrive.training.returns import discounted_returns, gae, n_step_returns, next_state_values


def reference_gae(rewards, values, last_values, final_values, terminated, truncated, gamma, lam):
    """Element by element, walking each agent's trajectory backwards."""
    steps, envs, agents = rewards.shape
    advantages = torch.zeros(steps, envs, agents, dtype=torch.float64)
    for e in range(envs):
        for a in range(agents):
            running = 0.0
            for t in reversed(range(steps)):
                if terminated[t, e]:
                    next_value, goes_on = 0.0, 0.0  # the episode ended by the rules: nothing follows
                elif truncated[t, e]:
                    next_value, goes_on = float(final_values[t, e, a]), 0.0  # cut by the time limit
                else:
                    next_value = float(values[t + 1, e, a]) if t + 1 < steps else float(last_values[e, a])
                    goes_on = 1.0
                delta = float(rewards[t, e, a]) + gamma * next_value - float(values[t, e, a])
                running = delta + gamma * lam * goes_on * running
                advantages[t, e, a] = running
    return advantages


def reference_returns(rewards, last_values, final_values, terminated, truncated, gamma):
    steps, envs, agents = rewards.shape
    returns = torch.zeros(steps, envs, agents, dtype=torch.float64)
    for e in range(envs):
        for a in range(agents):
            following = float(last_values[e, a])
            for t in reversed(range(steps)):
                if terminated[t, e]:
                    following = 0.0
                elif truncated[t, e]:
                    following = float(final_values[t, e, a])
                following = float(rewards[t, e, a]) + gamma * following
                returns[t, e, a] = following
    return returns


def random_rollout(steps: int, envs: int, agents: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(steps, envs, agents, generator=g)
    values = torch.randn(steps, envs, agents, generator=g)
    last_values = torch.randn(envs, agents, generator=g)
    final_values = torch.randn(steps, envs, agents, generator=g)
    ends = torch.rand(steps, envs, generator=g)
    terminated = ends < 0.15
    truncated = (ends >= 0.15) & (ends < 0.3)
    return rewards, values, last_values, final_values, terminated, truncated


def test_gae_matches_reference_loop() -> None:
    rewards, values, last_values, final_values, terminated, truncated = random_rollout(17, 5, 3, seed=0)
    assert terminated.any() and truncated.any()
    next_values = next_state_values(values, last_values, final_values, terminated, truncated)
    advantages, returns = gae(rewards, values, next_values, terminated | truncated, 0.97, 0.9)
    expected = reference_gae(rewards, values, last_values, final_values, terminated, truncated, 0.97, 0.9)
    torch.testing.assert_close(advantages.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(returns, advantages + values)


def test_discounted_returns_match_reference_loop() -> None:
    rewards, values, last_values, final_values, terminated, truncated = random_rollout(13, 4, 2, seed=1)
    next_values = next_state_values(values, last_values, final_values, terminated, truncated)
    returns = discounted_returns(rewards, next_values, terminated | truncated, 0.9)
    expected = reference_returns(rewards, last_values, final_values, terminated, truncated, 0.9)
    torch.testing.assert_close(returns.double(), expected, atol=1e-5, rtol=1e-5)


def test_truncation_bootstraps_from_final_value_and_termination_does_not() -> None:
    # one env, one agent, reward 1 per step, gamma 0.5: truncated at t=1 (final value 10), terminated at t=3
    rewards = torch.ones(5, 1, 1)
    values = torch.full((5, 1, 1), 100.0)  # the next episode's values must never leak into the last step
    final_values = torch.tensor([0.0, 10.0, 0.0, 0.0, 0.0]).reshape(5, 1, 1)
    terminated = torch.tensor([[False], [False], [False], [True], [False]])
    truncated = torch.tensor([[False], [True], [False], [False], [False]])
    last_values = torch.tensor([[8.0]])
    next_values = next_state_values(values, last_values, final_values, terminated, truncated)
    assert next_values.flatten().tolist() == [100.0, 10.0, 100.0, 0.0, 8.0]
    returns = discounted_returns(rewards, next_values, terminated | truncated, 0.5)
    assert returns.flatten().tolist() == [1 + 0.5 * 6, 1 + 0.5 * 10, 1 + 0.5 * 1, 1, 1 + 0.5 * 8]
    _, gae_returns = gae(rewards, values, next_values, terminated | truncated, 0.5, 1.0)
    torch.testing.assert_close(gae_returns, returns)


def test_per_agent_done_flags() -> None:
    rewards, values, last_values, final_values, terminated, truncated = random_rollout(6, 2, 3, seed=2)
    per_agent = (terminated.unsqueeze(-1).expand(-1, -1, 3), truncated.unsqueeze(-1).expand(-1, -1, 3))
    a = next_state_values(values, last_values, final_values, terminated, truncated)
    b = next_state_values(values, last_values, final_values, *per_agent)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(gae(rewards, values, a, terminated | truncated, 0.9, 0.8)[0],
                               gae(rewards, values, b, per_agent[0] | per_agent[1], 0.9, 0.8)[0])


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 9), envs=st.integers(1, 4), agents=st.integers(1, 3), seed=st.integers(0, 10**6),
       gamma=st.floats(0.0, 1.0))
def test_gae_with_lambda_one_equals_discounted_returns(steps, envs, agents, seed, gamma) -> None:
    rewards, values, last_values, final_values, terminated, truncated = random_rollout(steps, envs, agents, seed)
    next_values = next_state_values(values, last_values, final_values, terminated, truncated)
    dones = terminated | truncated
    _, returns = gae(rewards, values, next_values, dones, gamma, 1.0)
    torch.testing.assert_close(returns, discounted_returns(rewards, next_values, dones, gamma), atol=1e-4, rtol=1e-4)


def reference_n_step(rewards, dones, n, gamma):
    """Transition by transition: add discounted rewards until ``n`` of them, the rollout's end or a done step."""
    steps, envs, agents = rewards.shape
    returns = torch.zeros(steps, envs, agents, dtype=torch.float64)
    last = torch.zeros(steps, envs, dtype=torch.int64)
    for e in range(envs):
        for t in range(steps):
            k = 0
            while True:
                returns[t, e] += gamma**k * rewards[t + k, e].double()
                if k + 1 == n or t + k + 1 == steps or dones[t + k, e]:
                    break
                k += 1
            last[t, e] = t + k
    return returns, last


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 12), envs=st.integers(1, 4), agents=st.integers(1, 3), n=st.integers(1, 14),
       seed=st.integers(0, 10**6), gamma=st.floats(0.0, 1.0))
def test_n_step_returns_match_reference_loop(steps, envs, agents, n, seed, gamma) -> None:
    rewards, _, _, _, terminated, truncated = random_rollout(steps, envs, agents, seed)
    dones = terminated | truncated
    returns, last = n_step_returns(rewards, dones, n, gamma)
    expected, expected_last = reference_n_step(rewards, dones, n, gamma)
    assert torch.equal(last, expected_last)
    torch.testing.assert_close(returns.double(), expected, atol=1e-5, rtol=1e-5)
    if n == 1:
        assert torch.equal(returns, rewards) and torch.equal(last, torch.arange(steps).unsqueeze(1).expand(-1, envs))
