"""MPE envs (simple_tag, simple_spread, simple_adversary): step by step against mpe2, CPU vs CUDA, k-nearest, bad input.

mpe2 is stepped beside our env with the same actions over whole episodes, its world's positions and velocities set
from ours (in float64) before every step, and observations, rewards, terminations and truncations are compared
after every step, and so are the agents' positions and velocities (except where an episode ended: our arrays then
hold the next start). The velocities are what checks the forces (actions and contacts) of simple_adversary: its
observations have none, and its positions after a step follow from the velocities before it, which the
re-synchronisation sets. Our state is float32 and mpe2's float64: one step differs by float32 rounding. Over
free-running episodes that difference grows through contacts (stiff: contact_margin = 1e-3) past 1e-4 in a few
dozen steps, hence the re-synchronisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from warpdrive.core.checker import check_consistency
from warpdrive.envs import make
from warpdrive.envs.mpe import SimpleAdversary, SimpleSpread, SimpleTag
from warpdrive.envs.mpe.physics import MPEEnv

mpe2 = pytest.importorskip("mpe2", reason="mpe2 (test extra)")
from mpe2 import simple_adversary_v3, simple_spread_v3, simple_tag_v3  # noqa: E402

pytestmark = pytest.mark.xdist_group("mpe")  # one worker: see test_contract.by_env

ATOL = 1e-4
RTOL = 1e-5


# --------------------------------------------------------------------------------------------------
# the two sides


def reference_of(env: MPEEnv, continuous: bool) -> Any:
    """mpe2's parallel env with ``env``'s sizes (before its state is copied in)."""
    c = env.config
    common = dict(max_cycles=c.episode_length, continuous_actions=continuous, num_agent_neighbors=c.k_nearest)
    if isinstance(env, SimpleTag):
        ref = simple_tag_v3.parallel_env(num_good=c.num_good, num_adversaries=c.num_adversaries,
                                         num_obstacles=c.num_obstacles, **common)
    elif isinstance(env, SimpleSpread):
        ref = simple_spread_v3.parallel_env(N=c.num_agents, local_ratio=c.local_ratio, **common)
    else:
        # mpe2 makes N + 1 agents, one of them an adversary, and N landmarks
        ref = simple_adversary_v3.parallel_env(N=env.num_agents - 1, **common)
    ref.reset(seed=0)
    if isinstance(env, SimpleAdversary):
        # the scenario's code reads every agent's flag: more adversaries are more flags
        for i, agent in enumerate(ref.unwrapped.world.agents):
            agent.adversary = i < c.num_adversaries
    return ref


def copy_state(env: MPEEnv, ref: Any, replica: int) -> None:
    """mpe2's world set to our replica's state (float64 copies)."""
    world = ref.unwrapped.world
    s = env.store
    assert len(world.agents) == env.num_agents and len(world.landmarks) == env.num_landmarks
    for i, agent in enumerate(world.agents):
        agent.state.p_pos = np.array([s["x"][replica, i], s["y"][replica, i]], dtype=np.float64)
        agent.state.p_vel = np.array([s["vx"][replica, i], s["vy"][replica, i]], dtype=np.float64)
    for j, landmark in enumerate(world.landmarks):
        landmark.state.p_pos = np.array([s["lx"][replica, j], s["ly"][replica, j]], dtype=np.float64)
    if isinstance(env, SimpleAdversary):
        goal = world.landmarks[int(s["goal"][replica])]
        for agent in world.agents:
            agent.goal_a = goal


def chase_actions(env: MPEEnv, continuous: bool, t: int) -> torch.Tensor:
    """Actions [E, N, H] that make things happen: adversaries (and, in simple_spread, every agent) run at
    the nearest other agent, good agents flee outwards (the bounds penalty), with a little noise."""
    s = env.store
    x, y = s["x"].double(), s["y"].double()
    dx, dy = x[:, None, :] - x[:, :, None], y[:, None, :] - y[:, :, None]  # [E, i, j]: j relative to i
    adversary = s["adversary"]
    # adversaries chase good agents, good agents (and simple_spread's agents) anyone
    unwanted = torch.eye(env.num_agents, dtype=torch.bool) | (adversary[:, None] & adversary[None, :])
    dist = (dx**2 + dy**2).sqrt() + unwanted * 1e9
    nearest = dist.argmin(-1, keepdim=True)
    vx, vy = dx.gather(-1, nearest)[..., 0], dy.gather(-1, nearest)[..., 0]
    # good agents of simple_tag flee outwards for 5 steps, then wait 5 (to be caught)
    flee = ~adversary & isinstance(env, SimpleTag)
    vx = torch.where(flee, x * (t % 10 < 5), vx)
    vy = torch.where(flee, y * (t % 10 < 5), vy)
    generator = torch.Generator().manual_seed(t)
    if continuous:
        noise = torch.rand(*x.shape, 5, generator=generator, dtype=torch.float64) * 0.3
        push = torch.stack([torch.zeros_like(vx), -vx, vx, -vy, vy], -1).clamp(0, 1)
        return (push + noise).clamp(0, 1).float()
    action = torch.where(vx.abs() > vy.abs(), torch.where(vx < 0, 1, 2), torch.where(vy < 0, 3, 4))
    action = torch.where((vx == 0) & (vy == 0), 0, action)
    action = torch.where(torch.rand(x.shape, generator=generator) < 0.15,
                         torch.randint(0, 5, x.shape, generator=generator), action)
    return action.to(torch.int32)[..., None]


def run_beside_mpe2(env: MPEEnv, continuous: bool, steps: int) -> dict[str, float]:
    """Step replica 0 of ``env`` and mpe2 with the same actions for ``steps`` steps, mpe2's world set to our
    state before every step (so that float32 rounding, which contacts amplify, does not accumulate over the
    episode; a new mpe2 env for each episode); returns what happened (for the tests to check coverage)."""
    names = None
    ref = None
    seen = {"contacts": 0, "out_of_bounds": 0, "truncations": 0, "tags": 0}
    for t in range(steps):
        if ref is None:
            ref = reference_of(env, continuous)
            names = list(ref.unwrapped.possible_agents)
        copy_state(env, ref, 0)
        actions = chase_actions(env, continuous, t)
        ref_actions = {name: (actions[0, i].numpy().copy() if continuous else int(actions[0, i, 0]))
                       for i, name in enumerate(names)}
        ref_obs, ref_rewards, ref_terminations, ref_truncations, _ = ref.step(ref_actions)
        obs, rewards, terminated, truncated, info = env.step(actions)
        at = f"step {t}"
        done = bool(info["done"][0])
        assert bool(terminated[0]) == any(ref_terminations.values()), at
        assert bool(truncated[0]) == all(ref_truncations.values()), at
        assert done == (bool(terminated[0]) or bool(truncated[0])), at
        ours = (info["final_obs"] if done else obs)[0].numpy()
        for i, name in enumerate(names):
            expected = ref_obs[name]
            row = ours[i]
            np.testing.assert_allclose(row[:len(expected)], expected, atol=ATOL, rtol=RTOL,
                                       err_msg=f"{at}, obs of {name}")
            assert not row[len(expected):].any(), f"{at}: padding of {name}"
            np.testing.assert_allclose(rewards[0, i].item(), ref_rewards[name], atol=ATOL, rtol=RTOL,
                                       err_msg=f"{at}, reward of {name}")
        world = ref.unwrapped.world
        if not done:  # after an autoreset our arrays hold the next episode's start
            state = np.stack([env.store[name][0].numpy() for name in ("x", "y", "vx", "vy")], -1)
            expected = np.array([[*a.state.p_pos, *a.state.p_vel] for a in world.agents])
            np.testing.assert_allclose(state, expected, atol=ATOL, rtol=RTOL,
                                       err_msg=f"{at}, positions and velocities (x, y, vx, vy)")
        seen["tags"] += isinstance(env, SimpleTag) and bool((rewards[0] >= 10).any())
        seen["contacts"] += any(np.linalg.norm(a.state.p_pos - b.state.p_pos) < a.size + b.size
                                for i, a in enumerate(world.agents) for b in world.agents[i + 1:])
        seen["out_of_bounds"] += any(np.abs(a.state.p_pos).max() > 0.9 for a in world.agents
                                     if not getattr(a, "adversary", False))
        if done:
            seen["truncations"] += int(bool(truncated[0]))
            ref = None
    return seen


# --------------------------------------------------------------------------------------------------
# parity with mpe2

PARITY_CASES = {
    "tag": (SimpleTag, dict(num_good=2, num_adversaries=3, num_obstacles=3)),
    "spread": (SimpleSpread, dict(num_agents=5, local_ratio=0.3)),
    "adversary": (SimpleAdversary, dict(num_good=3, num_adversaries=2, num_landmarks=4)),
}


# Discrete and continuous actions for every env (issue 10: both against mpe2). Each action type of each env is a
# compilation of its own, and compilations dominate this file's time.
@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_steps_match_mpe2(case: str, continuous: bool) -> None:
    cls, params = PARITY_CASES[case]
    env = cls(num_envs=1, backend="cpu", seed=5, episode_length=30, continuous_actions=continuous, **params)
    env.reset()
    seen = run_beside_mpe2(env, continuous, steps=65)
    assert seen["truncations"] == 2
    assert seen["contacts"] > 0
    if cls is SimpleTag:
        assert seen["out_of_bounds"] > 0 and seen["tags"] > 0


def test_k_nearest_matches_mpe2_num_agent_neighbors() -> None:
    """``k_nearest = k`` is mpe2's ``num_agent_neighbors = k``: the k nearest others (3 of 5), nearest first,
    velocities only of good ones."""
    env = SimpleTag(num_envs=1, backend="cpu", seed=2, episode_length=30, continuous_actions=True, num_good=2,
                    num_adversaries=4, num_obstacles=1, k_nearest=3)
    env.reset()
    assert run_beside_mpe2(env, True, steps=31)["truncations"] == 1


def test_k_nearest_with_every_other_is_the_full_layout_sorted() -> None:
    """With k = all others, each k-nearest row holds the full row's (position, velocity) entries, sorted by
    distance; with more slots than others, the extra ones are zero."""
    kwargs = dict(num_envs=3, backend="cpu", seed=1, num_good=2, num_adversaries=2, num_obstacles=1,
                  continuous_actions=True)
    full, near = SimpleTag(**kwargs), SimpleTag(**kwargs, k_nearest=3)
    full.reset(), near.reset()
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        actions = full.sample_actions(generator).clone()
        full.step(actions), near.step(actions)
    assert torch.equal(full.store["x"], near.store["x"])
    n, o = 4, 4 + 2  # agents; offset of the others' positions
    for e in range(3):
        for i in range(n):
            others = [j for j in range(n) if j != i]
            rel = full.obs[e, i, o:o + 6].reshape(3, 2)
            order = sorted(range(3), key=lambda q: float(rel[q].norm()))
            assert torch.equal(near.obs[e, i, :o], full.obs[e, i, :o])
            assert torch.equal(near.obs[e, i, o:o + 6].reshape(3, 2), rel[order])
            velocity = [torch.stack([full.store["vx"][e, j], full.store["vy"][e, j]]) * (j >= 2) for j in others]
            assert torch.equal(near.obs[e, i, o + 6:].reshape(3, 2), torch.stack(velocity)[order])


@pytest.mark.cudasim
@pytest.mark.parametrize(("cls", "params"), [
    (SimpleTag, dict(num_good=2, num_adversaries=2, num_obstacles=1)),
    (SimpleTag, dict(num_good=2, num_adversaries=2, num_obstacles=1, k_nearest=3, continuous_actions=True)),
    (SimpleAdversary, dict(num_good=2, num_adversaries=2)),
], ids=["tag", "tag-k3-continuous", "adversary"])
def test_cpu_and_cuda_compilations_agree(gpu_backend: str, cls: type[MPEEnv], params: dict) -> None:
    kwargs = dict(num_envs=2, seed=4, episode_length=6, **params)
    cpu, gpu = cls(backend="cpu", **kwargs), cls(backend=gpu_backend, **kwargs)
    report = check_consistency(cpu, gpu, seed=2)  # bit-identical (exactmath's exp32 and log1p32)
    assert report.ok, str(report)
    assert report.episodes_finished == 4


def test_random_starts_are_mpe2s_ranges() -> None:
    env = SimpleTag(num_envs=200, backend="cpu", seed=3, num_obstacles=2)
    env.reset()
    s = env.store
    for name, bound in (("x", 1.0), ("y", 1.0), ("lx", 0.9), ("ly", 0.9)):
        values = s[name]
        assert float(values.min()) >= -bound and float(values.max()) < bound, name
        assert float(values.min()) < -0.8 * bound and float(values.max()) > 0.8 * bound, name  # spread out
    assert not s["vx"].any() and not s["vy"].any()


def test_sizes_groups_and_spaces() -> None:
    tag = make("simple_tag", backend="cpu")
    assert tag.groups() == {"adversaries": [0, 1, 2], "agents": [3]}
    assert tag.observation_size() == 16 and tag.single_action_space().n == 5
    spread = make("simple_spread", backend="cpu", continuous_actions=True)
    assert spread.observation_size() == 18 and spread.single_action_space().shape == (5,)
    adversary = make("simple_adversary", backend="cpu", k_nearest=1)
    assert adversary.groups() == {"adversaries": [0], "agents": [1, 2]} and adversary.observation_size() == 8


@pytest.mark.parametrize(("cls", "params", "message"), [
    (SimpleTag, {"num_good": 0}, "^num_good: expected an integer >= 1, got 0$"),
    (SimpleTag, {"num_obstacles": -1}, "^num_obstacles: expected an integer >= 0, got -1$"),
    (SimpleTag, {"k_nearest": 0}, "^k_nearest: expected an integer >= 1, got 0$"),
    (SimpleTag, {"episode_length": 2.5}, "^episode_length: expected an integer >= 1, got 2.5$"),
    (SimpleTag, {"continuous_actions": "yes"}, "^continuous_actions: expected true or false, got 'yes'$"),
    (SimpleTag, {"num_obstacle": 1}, "^num_obstacle: unknown key; did you mean 'num_obstacles'\\?$"),
    (SimpleSpread, {"local_ratio": 1.5}, "^local_ratio: expected a float >= 0 and <= 1, got 1.5$"),
    (SimpleSpread, {"local_ratio": "half"}, "^local_ratio: expected a float >= 0 and <= 1, got 'half'$"),
    (SimpleSpread, {"num_landmarks": 0}, "^num_landmarks: expected an integer >= 1, got 0$"),
    (SimpleAdversary, {"num_adversaries": True}, "^num_adversaries: expected an integer >= 1, got True$"),
])
def test_bad_parameters_name_the_value(cls: type[MPEEnv], params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(backend="cpu", **params)
