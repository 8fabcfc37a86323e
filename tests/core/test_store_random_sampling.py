"""Data store, counter-based random numbers and device action sampling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from warpdrive.core import random as wrandom
from warpdrive.core.sampling import categorical, categorical_from_probs, gaussian, uniform_actions
from warpdrive.core.store import ArraySpec, DataStore
from warpdrive.core.targets import kernel_target
from warpdrive.envs import make


def test_store_shapes_roles_and_zero_copy_views() -> None:
    specs = [
        ArraySpec("pos", "agent", torch.float32, "state", (2,)),
        ArraySpec("count", "env", torch.int32),
        ArraySpec("table", "global", torch.float32, "constant", (5,)),
    ]
    store = DataStore(specs, num_envs=4, num_agents=3, device=torch.device("cpu"))
    assert store["pos"].shape == (4, 3, 2) and store["count"].shape == (4,) and store["table"].shape == (5,)
    assert store.names("constant") == ["table"]
    import collections

    views = store.kernel_views(collections.namedtuple("V", ["pos", "count"]), kernel_target("cpu"))
    views.pos[1, 2, 0] = 7.5  # a kernel writing through its view changes the tensor: no copy
    assert store["pos"][1, 2, 0].item() == 7.5
    assert DataStore.required_bytes(specs, 4, 3) == (4 * 3 * 2 + 5) * 4 + 4 * 4


def test_store_rejects_duplicates_unknown_roles_and_missing_names() -> None:
    with pytest.raises(ValueError, match="declared twice: \\['a'\\]"):
        DataStore([ArraySpec("a", "env", torch.float32), ArraySpec("a", "env", torch.int32)], 1, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="role 'weird' is not one of"):
        DataStore([ArraySpec("a", "env", torch.float32, "weird")], 1, 1, torch.device("cpu"))  # type: ignore[arg-type]
    store = DataStore([ArraySpec("a", "env", torch.float32)], 1, 1, torch.device("cpu"))
    with pytest.raises(KeyError, match="no array named 'b'; the store holds \\['a'\\]"):
        store["b"]


@njit
def _draw_compiled(seed, episodes, counters):
    out = np.empty((episodes, counters), np.float32)
    for e in range(episodes):
        for c in range(counters):
            out[e, c] = wrandom.uniform(seed, 3, e, c)
    return out


def test_random_streams_are_uniform_and_identical_compiled_or_not() -> None:
    compiled = _draw_compiled(7, 40, 500)
    python = np.array([[wrandom.uniform(7, 3, e, c) for c in range(500)] for e in range(3)], np.float32)
    np.testing.assert_array_equal(compiled[:3], python)  # the CUDA simulator runs the Python body
    assert compiled.min() >= 0.0 and compiled.max() < 1.0
    counts, _ = np.histogram(compiled, bins=20, range=(0, 1))
    expected = compiled.size / 20
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 45.0  # 19 degrees of freedom: p ~ 0.001
    assert not np.array_equal(_draw_compiled(8, 1, 50), _draw_compiled(7, 1, 50))


def test_randint_covers_its_range() -> None:
    draws = np.array([wrandom.randint(1, 0, 0, c, 6) for c in range(3000)])
    assert set(draws.tolist()) == set(range(6))
    assert abs(np.bincount(draws).min() - 500) < 100


def test_categorical_matches_probabilities_and_respects_masks() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.6, 0.0, 0.3])
    draws = categorical_from_probs(probs.expand(20000, 4), generator)
    freq = torch.bincount(draws, minlength=4).float() / 20000
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    logits = torch.zeros(3, 5, 2, 4)
    logits[..., 1] = float("-inf")  # masked out
    out = torch.empty(3, 5, 2, dtype=torch.int32)
    categorical(logits, generator, out=out)
    assert out.dtype == torch.int32 and not (out == 1).any()


def test_gaussian_moments_and_bounds() -> None:
    generator = torch.Generator().manual_seed(0)
    mean, std = torch.full((50000,), 0.5), torch.full((50000,), 2.0)
    x = gaussian(mean, std, generator)
    assert abs(x.mean().item() - 0.5) < 0.05 and abs(x.std().item() - 2.0) < 0.05
    clipped = gaussian(mean, std, generator, low=torch.tensor(-1.0), high=torch.tensor(1.0))
    assert clipped.min() >= -1.0 and clipped.max() <= 1.0


@pytest.mark.parametrize("space", [gym.spaces.Discrete(5), gym.spaces.MultiDiscrete([3, 7]),
                                   gym.spaces.Box(-2.0, 1.0, (2,), np.float32)])
def test_uniform_actions_stay_in_the_space(space: gym.spaces.Space) -> None:
    heads = 1 if isinstance(space, gym.spaces.Discrete) else 2
    dtype = torch.float32 if isinstance(space, gym.spaces.Box) else torch.int32
    out = torch.empty(200, 10, heads, dtype=dtype)
    uniform_actions(space, out, torch.Generator().manual_seed(0))
    for row in out.reshape(-1, heads)[:500]:
        value = row.numpy().astype(space.dtype)
        assert space.contains(value[0] if isinstance(space, gym.spaces.Discrete) else value)
    if not isinstance(space, gym.spaces.Box):
        limits = [space.n] if isinstance(space, gym.spaces.Discrete) else list(space.nvec)
        for head, n in enumerate(limits):
            assert set(out[..., head].unique().tolist()) == set(range(int(n)))


@given(seed=st.integers(0, 2**64 - 1), replica=st.integers(0, 2**40), episode=st.integers(0, 10**6),
       counter=st.integers(0, 10**6))
def test_replica_seed_moves_a_replicas_streams_to_replica_zero(seed: int, replica: int, episode: int,
                                                               counter: int) -> None:
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as it does in the kernels
        moved = wrandom.random_bits(wrandom.replica_seed(seed, replica), 0, episode, counter)
        assert moved == wrandom.random_bits(seed, replica, episode, counter)
        if replica > 0:  # a seed of its own, not the batch's: replica 0 of the batch draws something else
            assert moved != wrandom.random_bits(seed, 0, episode, counter)


def test_a_lone_replica_seeded_with_replica_seed_steps_as_that_replica_of_a_batch() -> None:
    batch = make("cartpole", num_envs=5, device="cpu", seed=11)
    alone = make("cartpole", num_envs=1, device="cpu", seed=batch.replica_seed(4))
    other = make("cartpole", num_envs=1, device="cpu", seed=11)  # the batch's seed: replica 0's streams
    for env in (batch, alone, other):
        env.reset()
    assert torch.equal(batch.obs[4], alone.obs[0]) and not torch.equal(batch.obs[4], other.obs[0])
    for _ in range(30):  # random actions drawn in the kernel, episodes ending and restarting on their own
        for env in (batch, alone):
            env.random_step()
        assert torch.equal(batch.actions[4], alone.actions[0])
        for field in ("obs", "rewards", "done"):
            assert torch.equal(batch.store[field][4], alone.store[field][0]), field


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "3"])
def test_seeds_outside_64_bits_are_refused(seed: object) -> None:
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*64\), got "):
        make("cartpole", num_envs=2, device="cpu", seed=seed)
    env = make("cartpole", num_envs=2, device="cpu")
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*64\), got "):
        env.reset(seed=seed)
    with pytest.raises(ValueError, match=r"^replica must be an integer in \[0, 2\), got "):
        env.replica_seed(2)


def test_the_largest_seed_runs() -> None:
    env = make("cartpole", num_envs=2, device="cpu", seed=2**64 - 1)
    env.reset()
    assert bool(torch.isfinite(env.obs).all()) and not torch.equal(env.obs[0], env.obs[1])
