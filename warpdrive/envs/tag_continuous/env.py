"""Tag in continuous 2D space: taggers chase runners in a square arena of side ``L``.

Semantics in full: docs/envs/tag_continuous.md.

Semantics: the reference WarpDrive's Tag-continuous (rl-warp-drive 2.7.1, CPU version), which
``tests/envs/test_tag_continuous.py`` steps beside this env: same initial state and actions give the same
observations, rewards and done flags.

Agents ``0 .. N-1`` (``N = num_taggers + num_runners``); which ids are taggers is fixed for the env (drawn
like the reference from ``config.seed``, or given as ``tagger_ids``). State per agent: ``x, y`` in
``[0, L]``, ``speed``, ``acc`` (acceleration is state: it accumulates), ``direction`` in ``[0, 2pi)``,
``still`` (in the game). Actions: ``MultiDiscrete([A_acc, A_turn])`` indexing the tables
``[0] + linspace(min, max, levels)`` (index 0: no change).

Observation, feature-major, ``K`` others: ``[dx_1..K, dy_1..K, dv_1..K, dacc_1..K, ddir_1..K, type_1..K,
still_1..K, t/T]`` (size ``7K + 1``): full observation sees the ``N - 1`` others in id order, partial the
``k`` nearest others still in the game (nearest first, lower id on ties, zero padded).

How one step runs (phases separated by barriers; see :mod:`warpdrive.core.compile`):

1. ``_move``: turn, accelerate, move, clip at the edges, base rewards; with partial observation every agent
   is then counted into this step's neighbour grid (:mod:`warpdrive.core.spatial`; agents out of the game
   into a bucket of their own).
2. Partial observation: the grid's prefix sum and scatter sort the agents in the game by cell; then, per
   agent, the ``k`` nearest others in the game are found in a register list (rings of cells outward until
   the ``k``-th best is provably nearer than any unvisited cell) and kept; then one thread per (observer,
   slot) pair writes that slot's features (``_observe_neighbour``). Full observation: ``_observe_all_pair``
   writes one (observer, other) pair per thread, so that consecutive threads write nearly consecutive floats.
3. ``_tag``: each runner still in the game finds its nearest tagger within the tagging distance; the
   tagger's reward is credited with an atomic add (several runners may be tagged by one tagger in a step;
   every addend is the same constant, so the order of the additions does not change the sum).

Reset runs ``_place`` and then step 2: the first observation is computed from
the start state with time 0, for partial observation too. (The spec says partial observations are all zero
at reset; the reference's CPU code, which the spec defines as the semantics, computes them, and so does this.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.compile import NEW_LAUNCH, LaunchBoundary, Phase, per_agent, per_env, per_index
from warpdrive.core.device import atomic_add, kernel_function
from warpdrive.core.env import Env
from warpdrive.core.exactmath import mod32, sincos32
from warpdrive.core.random import randint, uniform
from warpdrive.core.spatial import (
    NeighbourGrid,
    automatic_grid,
    begin_grid,
    cell_range,
    count_into_cell,
    distance,
)
from warpdrive.core.store import ArraySpec
from warpdrive.core.typed import ConfigError, bounded, bounded_magnitude, join_path

#: Start directions the reference draws from.
HEADINGS = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2], dtype=np.float32)
#: Random draws per agent at a random start: x, y, direction.
DRAWS_PER_AGENT = 3

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_INF = np.float32(np.inf)
_TWO_PI = np.float32(2 * np.pi)  # the reference's modulus: 2*pi rounded to float32
_TAGGER = 1


@dataclass(frozen=True)
class TagContinuousConfig:
    """Parameters of Tag-continuous (defaults: the reference's; its training config in brackets).

    The rewards and the physical scales (lengths, speeds, skill levels, accelerations, turns) have a magnitude
    up to :data:`~warpdrive.core.typed.MAGNITUDE_LIMIT` (1e12), so that every sum and product the kernels form
    of them (a step's rewards, an episode's return, a top speed, a squared distance) stays finite in float32
    (:func:`~warpdrive.core.typed.bounded_magnitude` gives the rule).
    """

    num_taggers: int = bounded(1, ge=1)
    """Number of taggers [10]."""
    num_runners: int = bounded(10, ge=1)
    """Number of runners [100]."""
    grid_length: float = bounded_magnitude(10.0, gt=0)
    """L: the arena is the square [0, L] x [0, L] [20.0]."""
    episode_length: int = bounded(100, ge=1)
    """T: the episode is truncated after T steps [500]."""
    max_speed: float = bounded_magnitude(1.0, gt=0)
    """Top speed before the skill multiplier; also the speed and acceleration normaliser."""
    skill_level_runner: float = bounded_magnitude(1.0, ge=0)
    """A runner's top speed is max_speed * skill_level_runner."""
    skill_level_tagger: float = bounded_magnitude(1.0, ge=0)
    """A tagger's top speed is max_speed * skill_level_tagger."""
    max_acceleration: float = bounded_magnitude(1.0)
    """Largest acceleration action [0.1]."""
    min_acceleration: float = bounded_magnitude(-1.0)
    """Smallest acceleration action [-0.1]."""
    max_turn: float = bounded_magnitude(np.pi / 2)
    """Largest turn action, radians [2.356]."""
    min_turn: float = bounded_magnitude(-np.pi / 2)
    """Smallest turn action, radians [-2.356]."""
    num_acceleration_levels: int = bounded(10, ge=0, le=65_536)
    """Acceleration actions evenly spaced in [min, max], plus index 0 (no change) [20]."""
    num_turn_levels: int = bounded(10, ge=0, le=65_536)
    """Turn actions evenly spaced in [min, max], plus index 0 (no turn) [20]."""
    edge_hit_penalty: float = bounded_magnitude(-0.0, le=0)
    """Reward (<= 0) of an agent in the game in a step where it crossed the edge and was clipped [0.0]."""
    use_full_observation: bool = True
    """Full (all N-1 others, 7(N-1)+1 values) or partial (k nearest, 7k+1 values) observation [False]."""
    num_other_agents_observed: int = bounded(2, ge=0)
    """k: neighbours in the partial observation (1 <= k <= N; slots beyond the others left are 0) [10]."""
    tagging_distance: float = bounded(0.01, ge=0, le=1)
    """A runner nearer than tagging_distance * L to a tagger is tagged (0 <= value <= 1) [0.02]."""
    tag_reward_for_tagger: float = bounded_magnitude(1.0, ge=0)
    """Reward (>= 0) of a tagger per runner it tags [10.0]."""
    step_penalty_for_tagger: float = bounded_magnitude(-0.0, le=0)
    """Reward (<= 0) of every tagger every step [0.0]."""
    tag_penalty_for_runner: float = bounded_magnitude(-1.0, le=0)
    """Reward (<= 0) of a runner when tagged [-10.0]."""
    step_reward_for_runner: float = bounded_magnitude(0.0, ge=0)
    """Reward (>= 0) of every runner in the game every step."""
    end_of_game_reward_for_runner: float = bounded_magnitude(1.0, ge=0)
    """Reward (>= 0) at step T of every runner still in the game."""
    runner_exits_game_after_tagged: bool = True
    """A tagged runner leaves the game (freezes, gets no rewards); when none is left the episode ends."""
    tagger_ids: tuple[int, ...] | None = None
    """Ids of the taggers (num_taggers distinct ids in [0, N)); default: drawn from ``seed``."""
    starting_location_x: tuple[float, ...] | None = None
    """x of every agent at the identical start (N values in [0, L]); default: drawn from ``seed``."""
    starting_location_y: tuple[float, ...] | None = None
    """y of every agent at the identical start (N values in [0, L]); give both x and y or neither."""
    starting_directions: tuple[float, ...] | None = bounded_magnitude(None)
    """Direction of every agent at the identical start (N values, radians); default: drawn from ``seed``."""
    seed: int = bounded(0, ge=0, lt=2**32)
    """Seed of the reference-style draw of the defaults above: ``np.random.seed(seed)``, then tagger ids,
    x = L*rand(N), y = L*rand(N), directions = choice([0, pi/2, pi, 3pi/2], N). Give it in the config
    (``TagContinuous({"seed": 7})``): the constructor's ``seed=`` keyword seeds the random starts."""
    grid_cells_per_side: int | None = bounded(None, ge=1, le=1024)
    """Speed only, not semantics: the neighbour grid of partial observation. None: one cell (a scan of all
    agents in the game) below AUTOMATIC_MIN_AGENTS agents, else about AUTOMATIC_AGENTS_PER_CELL agents per cell, resized
    every step to the agents still in the game; G >= 1: always G x G cells."""
    search_lanes: int = bounded(1, ge=1, le=32)
    """Speed only, not semantics: threads that share each agent's k-nearest search (NeighbourGrid.search_lanes);
    the default launch gives each agent that many threads. Measured on an H200: not reliably faster (see the
    env's page), so 1 by default."""
    separate_search_launch: bool = False
    """Speed only, not semantics: with partial observation, run the k-nearest search and the observation
    write as CUDA kernels of their own (the search's registers then no longer limit the occupancy of the
    other phases, at the cost of two more launches per step). Measured on an H200 (benchmarks/RESULTS.md):
    no faster at 100 or 1000 agents, so off by default."""

    def __post_init__(self) -> None:
        # lists and arrays (from YAML or NumPy) become tuples, so that configs compare and hash by value
        for name in ("tagger_ids", "starting_location_x", "starting_location_y", "starting_directions"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(np.asarray(value).reshape(-1).tolist()))

    @property
    def num_agents(self) -> int:
        return self.num_taggers + self.num_runners

    def validate(self, path: str = "") -> None:
        """The rules across fields (each field's own type and limits are declared above)."""
        def fail(name: str, message: str) -> None:
            raise ConfigError(join_path(path, name), message)

        if self.min_acceleration > self.max_acceleration:
            fail("min_acceleration", f"expected <= max_acceleration={self.max_acceleration}, got "
                                     f"{self.min_acceleration}")
        if self.min_turn > self.max_turn:
            fail("min_turn", f"expected <= max_turn={self.max_turn}, got {self.min_turn}")
        n, k = self.num_agents, self.num_other_agents_observed
        if k > n:
            fail("num_other_agents_observed", f"expected <= the number of agents ({n}), got {k}")
        if not self.use_full_observation and k < 1:
            # k = N is allowed (as in the reference): the last slot is then always zero padding
            fail("num_other_agents_observed", f"expected >= 1 with partial observation, got {k}")
        if self.tagger_ids is not None:
            ids = self.tagger_ids
            if len(ids) != self.num_taggers:
                fail("tagger_ids", f"expected {self.num_taggers} values (num_taggers), got {len(ids)}")
            if any(not 0 <= i < n for i in ids):
                fail("tagger_ids", f"expected ids in [0, N={n}), got {list(ids)}")
            if len(set(ids)) != len(ids):
                fail("tagger_ids", f"expected distinct ids, got {list(ids)}")
        if (self.starting_location_x is None) != (self.starting_location_y is None):
            fail("starting_location_y" if self.starting_location_y is None else "starting_location_x",
                 "give both starting_location_x and starting_location_y, or neither")
        for name in ("starting_location_x", "starting_location_y", "starting_directions"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != n:
                fail(name, f"expected {n} values (N = num_taggers + num_runners), got {len(value)}")
            if name != "starting_directions" and any(not 0 <= v <= self.grid_length for v in value):
                bad = next(v for v in value if not 0 <= v <= self.grid_length)
                fail(name, f"expected values in [0, grid_length={self.grid_length}], got {bad}")


@dataclass(frozen=True)
class StartState:
    """The fixed part of an episode start: arrays of shape [N]."""

    tagger_ids: np.ndarray
    """int64, sorted."""
    x: np.ndarray
    """float32."""
    y: np.ndarray
    """float32."""
    direction: np.ndarray
    """float32."""


def start_state_of(config: TagContinuousConfig) -> StartState:
    """Tagger ids and the identical start, drawn as the reference draws them where not given explicitly.

    The reference calls ``np.random.seed(seed)`` and then, from the global stream in this order:
    ``choice(N, num_taggers, replace=False)``, ``L*rand(N)`` for x, ``L*rand(N)`` for y (only when no x and
    y are given), ``choice([0, pi/2, pi, 3pi/2], N)`` (only when no directions are given). A
    ``RandomState(seed)`` yields the same numbers.
    """
    n = config.num_agents
    rng = np.random.RandomState(config.seed)
    drawn_ids = rng.choice(np.arange(n), config.num_taggers, replace=False)
    ids = drawn_ids if config.tagger_ids is None else np.asarray(config.tagger_ids)
    if config.starting_location_x is None:
        # float32 L times float64 draws, stored as float32: the reference's arithmetic
        x = np.float32(config.grid_length) * rng.rand(n)
        y = np.float32(config.grid_length) * rng.rand(n)
    else:
        x, y = np.asarray(config.starting_location_x), np.asarray(config.starting_location_y)
    if config.starting_directions is None:
        direction = rng.choice([0, np.pi / 2, np.pi, np.pi * 3 / 2], n, replace=True)
    else:
        direction = np.asarray(config.starting_directions)
    return StartState(
        tagger_ids=np.sort(np.asarray(ids, dtype=np.int64)),
        x=np.asarray(x, dtype=np.float32),
        y=np.asarray(y, dtype=np.float32),
        direction=np.asarray(direction, dtype=np.float32),
    )


def action_tables(config: TagContinuousConfig) -> tuple[np.ndarray, np.ndarray]:
    """(acceleration, turn) tables, float32 [levels + 1]: ``[0] + linspace(min, max, levels)``."""
    c = config
    acc = np.linspace(np.float32(c.min_acceleration), np.float32(c.max_acceleration), c.num_acceleration_levels)
    turn = np.linspace(np.float32(c.min_turn), np.float32(c.max_turn), c.num_turn_levels)
    return np.insert(acc, 0, 0).astype(np.float32), np.insert(turn, 0, 0).astype(np.float32)


def neighbour_grid_of(config: TagContinuousConfig) -> NeighbourGrid | None:
    """The grid of partial observation's neighbour search (None for full observation, which reads every
    agent anyway). A grid of one cell is a scan of all agents in the game: the cheapest for few agents."""
    if config.use_full_observation:
        return None
    g = config.grid_cells_per_side
    grid = automatic_grid(config.grid_length, config.num_agents) if g is None else NeighbourGrid(config.grid_length, g)
    return replace(grid, search_lanes=config.search_lanes)


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU). Every float is float32, as in the reference:
# constants are float32 globals and integers are converted before they meet a float.


@kernel_function
def _wrap_direction(direction):
    """``direction mod 2pi`` in float32 as NumPy computes it (exact on both targets: ``%`` is not on CUDA)."""
    return mod32(direction, _TWO_PI)


@kernel_function
def _quotient(n, d, inv_d):
    """``n // d`` for ``n >= 0, d > 0`` from a float32 reciprocal ``inv_d`` and an exact correction
    (64-bit integer division costs dozens of instructions on a GPU; this runs once per observation pair)."""
    q = int(np.float32(n) * inv_d)
    r = n - q * d
    while r < 0:
        q -= 1
        r += d
    while r >= d:
        q += 1
        r -= d
    return q


# ---- one step of the dynamics ---------------------------------------------------------------------


@kernel_function
def _begin_grid_step(env, p, s):
    begin_grid(env, p.num_taggers + s.runners_left[env], p, s)


@kernel_function
def _begin_grid_episode(env, p, s):
    s.runners_left[env] = p.num_runners
    begin_grid(env, p.num_agents, p, s)


@kernel_function
def _begin_episode(env, p, s):
    s.runners_left[env] = p.num_runners


@kernel_function
def _move(env, agent, p, s):
    """Steps 2-7 and 9a of the spec for one agent; counts it into the neighbour grid (partial observation)."""
    still = s.still[env, agent]
    acc = s.acc[env, agent] + s.acc_table[s.actions[env, agent, 0]]
    direction = _wrap_direction(s.direction[env, agent] + s.turn_table[s.actions[env, agent, 1]])
    top = s.top_speed[agent]
    speed = min(max(s.speed[env, agent] + acc, _ZERO), top)
    if not still:
        direction = _ZERO
        speed = _ZERO
    if not (_ZERO < speed < top):
        acc = _ZERO  # the reference resets acceleration at a speed limit
    sin_d, cos_d = sincos32(direction)
    x = s.x[env, agent] + speed * cos_d
    y = s.y[env, agent] + speed * sin_d
    length = p.grid_length
    crossed = x < _ZERO or x > length or y < _ZERO or y > length
    s.x[env, agent] = min(max(x, _ZERO), length)
    s.y[env, agent] = min(max(y, _ZERO), length)
    s.speed[env, agent] = speed
    s.acc[env, agent] = acc
    s.direction[env, agent] = direction

    reward = _ZERO
    if still:
        reward = reward + (p.edge_hit_penalty if crossed else _ZERO)
        reward = reward + (p.step_penalty_for_tagger if s.agent_type[agent] == _TAGGER else p.step_reward_for_runner)
    s.rewards[env, agent] = reward


@kernel_function
def _count(env, agent, p, s):
    """Partial observation: the agent into this step's neighbour grid (those out of the game apart)."""
    count_into_cell(env, agent, s.still[env, agent], p, s)


# ---- observations -------------------------------------------------------------------------------


@kernel_function
def _write_features(env, agent, slot, other, visible, kind, other_still, p, s):
    """The 7 features of one (observer, slot) pair (feature-major rows), and the time with slot 0."""
    others = p.obs_others
    obs = s.obs
    if slot == 0:
        time = np.float32(s.t[env]) / np.float32(p.episode_length)
        obs[env, agent, 7 * others] = time if s.still[env, agent] else _ZERO
    dx = dy = dv = da = dd = _ZERO
    if visible:
        dx = (s.x[env, other] - s.x[env, agent]) * p.inv_position_scale
        dy = (s.y[env, other] - s.y[env, agent]) * p.inv_position_scale
        dv = (s.speed[env, other] - s.speed[env, agent]) * p.inv_speed_scale
        da = (s.acc[env, other] - s.acc[env, agent]) * p.inv_speed_scale
        dd = (s.direction[env, other] - s.direction[env, agent]) * p.inv_direction_scale
    obs[env, agent, slot] = dx
    obs[env, agent, others + slot] = dy
    obs[env, agent, 2 * others + slot] = dv
    obs[env, agent, 3 * others + slot] = da
    obs[env, agent, 4 * others + slot] = dd
    obs[env, agent, 5 * others + slot] = kind
    obs[env, agent, 6 * others + slot] = other_still


@kernel_function
def _obs_pair_count(p, s):
    return p.num_agents * p.obs_others


@kernel_function
def _observe_all_pair(env, index, p, s):
    """Full observation, one (observer, slot) pair per index: consecutive threads write runs of consecutive
    floats (nearly coalesced). Agents out of the game see zeros, but the others' type and still are kept."""
    others = p.obs_others
    agent = _quotient(index, others, p.inv_obs_others)
    slot = index - agent * others
    other = slot + 1 if slot >= agent else slot  # the others in id order, skipping self
    kind = np.float32(s.agent_type[other])
    other_still = _ONE if s.still[env, other] else _ZERO
    _write_features(env, agent, slot, other, s.still[env, agent], kind, other_still, p, s)


@kernel_function
def _observe_neighbour(env, agent, slot, other, p, s):
    """Partial observation: the ``slot``-th nearest other in the game (``other``; -1: zero padding)."""
    visible = other >= 0
    kind = np.float32(s.agent_type[other]) if visible else _ZERO
    other_still = _ONE if visible else _ZERO  # neighbours are in the game
    _write_features(env, agent, slot, other, visible, kind, other_still, p, s)


# ---- tagging and rewards ------------------------------------------------------------------------


@kernel_function
def _tag_seen_by_all(env, agent, p, s):
    """Steps 9b and 9c for one runner (full observation: every tagger is a candidate)."""
    if s.agent_type[agent] == _TAGGER or not s.still[env, agent]:
        return
    x = s.x[env, agent]
    y = s.y[env, agent]
    best_d = _INF
    best = -1
    for i in range(p.num_taggers):
        j = s.tagger_list[i]  # ascending ids: the first of equal distances is the lowest id
        d = distance(x, y, s.x[env, j], s.y[env, j])
        if d < best_d:
            best_d = d
            best = j
    _tag(env, agent, best, best_d, p, s)


@kernel_function
def _tag_in_grid(env, agent, p, s):
    """Steps 9b and 9c for one runner (partial observation: only the cells within reach are searched)."""
    if s.grid_side[env] == 1:
        # a grid of one cell holds every agent: the list of taggers is shorter (taggers are always in the game,
        # so both find the same nearest tagger, lower id on ties)
        _tag_seen_by_all(env, agent, p, s)
        return
    if s.agent_type[agent] == _TAGGER or not s.still[env, agent]:
        return
    x = s.x[env, agent]
    y = s.y[env, agent]
    best_d = _INF
    best = -1
    # only taggers within reach matter; the cells overlapping the disc (with margin) hold them all
    x0, x1, y0, y1 = cell_range(env, x, y, p.tag_distance + p.grid_search_margin, p, s)
    side = s.grid_side[env]
    for gy in range(y0, y1 + 1):
        for gx in range(x0, x1 + 1):
            cell = gy * side + gx
            for pos in range(s.cell_start[env, cell], s.cell_start[env, cell + 1]):
                j = s.cell_agent[env, pos]
                if s.agent_type[j] == _TAGGER:
                    d = distance(x, y, s.cell_x[env, pos], s.cell_y[env, pos])
                    if d < best_d or (d == best_d and j < best):
                        best_d = d
                        best = j
    _tag(env, agent, best, best_d, p, s)


@kernel_function
def _tag(env, runner, tagger, d, p, s):
    """The runner is tagged by its nearest tagger (-1: none) if it is within reach; end-of-game bonus."""
    still = True
    if tagger >= 0 and d < p.tag_distance:
        s.rewards[env, runner] += p.tag_penalty_for_runner
        # atomics on floats: every addend is one constant, so the order of the additions does not matter
        atomic_add(s.rewards, (env, tagger), p.tag_reward_for_tagger)
        atomic_add(s.metrics, (env, 0), _ONE)
        atomic_add(s.metrics, (env, 1), p.inv_num_runners)
        if p.runner_exits_game_after_tagged:
            still = False
            s.still[env, runner] = False
            if atomic_add(s.runners_left, env, np.int32(-1)) == 1:
                s.terminated[env] = True
    if still and s.t[env] == p.episode_length:
        s.rewards[env, runner] += p.end_of_game_reward_for_runner


# ---- episode start ------------------------------------------------------------------------------


@kernel_function
def _place(env, agent, p, s):
    """Start of an episode: the identical start, or a random one drawn per env and episode."""
    if p.random_start:
        episode = s.episode[env]
        base = agent * DRAWS_PER_AGENT
        s.x[env, agent] = p.grid_length * uniform(p.seed, env, episode, base)
        s.y[env, agent] = p.grid_length * uniform(p.seed, env, episode, base + 1)
        s.direction[env, agent] = s.headings[randint(p.seed, env, episode, base + 2, 4)]
    else:
        s.x[env, agent] = s.start_x[agent]
        s.y[env, agent] = s.start_y[agent]
        s.direction[env, agent] = s.start_direction[agent]
    s.speed[env, agent] = _ZERO
    s.acc[env, agent] = _ZERO
    s.still[env, agent] = True


_FULL_OBSERVATION_PHASES = (
    (per_agent(_move), per_index(_observe_all_pair, _obs_pair_count), per_agent(_tag_seen_by_all)),
    (per_env(_begin_episode), per_agent(_place), per_index(_observe_all_pair, _obs_pair_count)),
)


@cache
def _partial_observation_phases(k: int, separate_search: bool, grid: NeighbourGrid
                                ) -> tuple[tuple[Phase | LaunchBoundary, ...], tuple[Phase | LaunchBoundary, ...]]:
    search = grid.k_nearest_phases(k, _observe_neighbour)
    searched: tuple[Phase | LaunchBoundary, ...] = (NEW_LAUNCH, *search, NEW_LAUNCH) if separate_search else search
    observe = (*grid.build_phases(), *searched)
    return (
        (per_env(_begin_grid_step), per_agent(_move, _count), *observe, per_agent(_tag_in_grid)),
        (per_env(_begin_grid_episode), per_agent(_place, _count), *observe),
    )


class TagContinuous(Env):
    """Tag in continuous space: taggers chase runners; see the module docstring and the spec.

    Extra arrays (E envs, N agents, G the largest grid's cells per side, k observed neighbours):

    ===============================================  =============  =========  =========================================
    name                                             shape          dtype      meaning
    ===============================================  =============  =========  =========================================
    ``x``, ``y``, ``speed``, ``acc``, ``direction``  [E, N]         float32    agent state after the step
    ``still``                                        [E, N]         bool       still in the game
    ``runners_left``                                 [E]            int32      runners still in the game
    ``agent_type``                                   [N]            int32      1 tagger, 0 runner (fixed)
    ``top_speed``                                    [N]            float32    max_speed * skill level
    ``tagger_list``                                  [num_taggers]  int32      tagger ids, ascending
    ``start_x``, ``start_y``, ``start_direction``    [N]            float32    the identical start
    ``acc_table``, ``turn_table``                    [levels + 1]   float32    action tables (index 0: no change)
    ``headings``                                     [4]            float32    start directions of a random start
    ===============================================  =============  =========  =========================================

    Partial observation adds the neighbour grid's scratch arrays (:meth:`NeighbourGrid.arrays`).

    Metrics per episode: ``runners_tagged`` (tag events) and ``tag_rate`` (tag events / num_runners).
    """

    name = "tag_continuous"
    Config = TagContinuousConfig
    code_variants = ({"use_full_observation": False},)  # the partial observation compiles other code

    def program_phases(self) -> tuple[tuple[Phase | LaunchBoundary, ...], tuple[Phase | LaunchBoundary, ...]]:
        c = self.config
        if c.use_full_observation:
            return _FULL_OBSERVATION_PHASES
        grid = neighbour_grid_of(c)
        assert grid is not None
        return _partial_observation_phases(c.num_other_agents_observed, c.separate_search_launch, grid)

    def program_variant(self) -> str:
        c = self.config
        if c.use_full_observation:
            return "full"
        grid = neighbour_grid_of(c)
        assert grid is not None
        return (f"k{c.num_other_agents_observed}" + (f"_lanes{c.search_lanes}" if c.search_lanes > 1 else "")
                + ("_one_cell" if grid.one_cell else ""))

    @classmethod
    def num_agents_of(cls, config: TagContinuousConfig) -> int:
        return config.num_agents

    @classmethod
    def config_for_agents(cls, num_agents: int) -> dict[str, Any] | None:
        taggers = max(1, num_agents // 10)
        return {"num_taggers": taggers, "num_runners": num_agents - taggers} if num_agents >= 2 else None

    def groups(self) -> dict[str, list[int]]:
        taggers = [int(i) for i in self._start_of().tagger_ids]
        tagger_set = set(taggers)
        return {"taggers": taggers, "runners": [i for i in range(self.num_agents) if i not in tagger_set]}

    def single_action_space(self) -> gym.spaces.MultiDiscrete:
        c = self.config
        return gym.spaces.MultiDiscrete([c.num_acceleration_levels + 1, c.num_turn_levels + 1])

    def observation_size(self) -> int:
        c = self.config
        others = self.num_agents_of(c) - 1 if c.use_full_observation else c.num_other_agents_observed
        return 7 * others + 1

    def metric_names(self) -> list[str]:
        return ["runners_tagged", "tag_rate"]

    def threads_per_agent(self) -> int:
        grid = neighbour_grid_of(self.config)
        return 1 if grid is None else grid.search_lanes

    def state_arrays(self) -> list[ArraySpec]:
        c = self.config
        n = c.num_agents
        grid = neighbour_grid_of(c)
        acc_levels, turn_levels = c.num_acceleration_levels + 1, c.num_turn_levels + 1
        return [
            ArraySpec("x", "agent", torch.float32),
            ArraySpec("y", "agent", torch.float32),
            ArraySpec("speed", "agent", torch.float32),
            ArraySpec("acc", "agent", torch.float32),
            ArraySpec("direction", "agent", torch.float32),
            ArraySpec("still", "agent", torch.bool),
            ArraySpec("runners_left", "env", torch.int32),
            ArraySpec("agent_type", "global", torch.int32, "constant", (n,)),
            ArraySpec("top_speed", "global", torch.float32, "constant", (n,)),
            ArraySpec("tagger_list", "global", torch.int32, "constant", (c.num_taggers,)),
            ArraySpec("start_x", "global", torch.float32, "constant", (n,)),
            ArraySpec("start_y", "global", torch.float32, "constant", (n,)),
            ArraySpec("start_direction", "global", torch.float32, "constant", (n,)),
            ArraySpec("acc_table", "global", torch.float32, "constant", (acc_levels,)),
            ArraySpec("turn_table", "global", torch.float32, "constant", (turn_levels,)),
            ArraySpec("headings", "global", torch.float32, "constant", (4,)),
            *(grid.arrays(c.num_other_agents_observed) if grid is not None else []),
        ]

    def kernel_params(self) -> dict[str, Any]:
        c = self.config
        grid = neighbour_grid_of(c)
        length = np.float32(c.grid_length)
        others = (self.observation_size() - 1) // 7
        return {
            # float32(float32(d) * L): the reference's (tagging_distance * grid_length).astype(float32)
            "tag_distance": np.float32(np.float32(c.tagging_distance) * length),
            "obs_others": others,
            "inv_obs_others": np.float32(1.0 / max(others, 1)),
            "inv_position_scale": np.float32(1.0 / (float(length) * math.sqrt(2))),
            "inv_speed_scale": np.float32(1.0 / float(np.float32(c.max_speed) + np.float32(1e-10))),
            "inv_direction_scale": np.float32(1.0 / float(_TWO_PI)),
            "inv_num_runners": np.float32(1.0 / c.num_runners),
            **(grid.params() if grid is not None else {}),
        }

    def start_state(self) -> dict[str, np.ndarray]:
        c = self.config
        start = self._start_of()
        agent_type = np.zeros(c.num_agents, np.int32)
        agent_type[start.tagger_ids] = 1
        skill = np.where(agent_type == 1, np.float32(c.skill_level_tagger), np.float32(c.skill_level_runner))
        acc_table, turn_table = action_tables(c)
        return {
            "agent_type": agent_type,
            "top_speed": (np.float32(c.max_speed) * skill.astype(np.float32)).astype(np.float32),
            "tagger_list": start.tagger_ids.astype(np.int32),
            "start_x": start.x,
            "start_y": start.y,
            "start_direction": start.direction,
            "acc_table": acc_table,
            "turn_table": turn_table,
            "headings": HEADINGS,
        }

    def _start_of(self) -> StartState:
        cached = getattr(self, "_start_cache", None)
        if cached is None or cached[0] is not self.config:
            cached = (self.config, start_state_of(self.config))
            self._start_cache = cached
        return cached[1]

    def draw(self, axes: Any, index: int) -> None:
        """Agents on the square, coloured by group; runners out of the game hollow."""
        from warpdrive.core.render import draw_agents_on_plane

        s = self.store
        draw_agents_on_plane(axes, self, s["x"][index].cpu().numpy(), s["y"][index].cpu().numpy(),
                             self.config.grid_length, out=~s["still"][index].cpu().numpy())
