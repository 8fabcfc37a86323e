"""Tag in continuous 2D space: taggers chase runners in a square arena of side ``L``.

Semantics: ``shared/specs/tag_continuous.md`` (the reference WarpDrive's Tag-continuous, CPU version,
rl-warp-drive 2.7.1): same initial state and actions give the same observations, rewards and done flags.

Agents ``0 .. N-1`` (``N = num_taggers + num_runners``); which ids are taggers is fixed for the env (drawn
like the reference from ``config.seed``, or given as ``tagger_ids``). State per agent: ``x, y`` in
``[0, L]``, ``speed``, ``acc`` (acceleration is state: it accumulates), ``direction`` in ``[0, 2pi)``,
``still`` (in the game). Actions: ``MultiDiscrete([A_acc, A_turn])`` indexing the tables
``[0] + linspace(min, max, levels)`` (index 0: no change).

Observation, feature-major, ``K`` others: ``[dx_1..K, dy_1..K, dv_1..K, dacc_1..K, ddir_1..K, type_1..K,
still_1..K, t/T]`` (size ``7K + 1``): full observation sees the ``N - 1`` others in id order, partial the
``k`` nearest others still in the game (nearest first, lower id on ties, zero padded).

How one step runs (phases separated by barriers; see :mod:`warpdrive.core.compile`):

1. ``_begin_grid_step`` / ``_move``: size this step's grid (partial observation), turn, accelerate, move,
   clip at the edges, base rewards; agents still in the game are counted into the cells of the grid.
2. ``_sum_row``, ``_scan_rows``, ``_scan_row_cells``: an exclusive prefix sum of the cell counts by rows of
   cells (no thread walks all cells); ``_scatter`` writes each agent in the game, with a copy of its
   position, to its cell's slot: the agents in the game, sorted by cell.
3. ``_find_neighbours``: for each agent in the game (by cell-sorted position, so that no thread idles on
   agents out of the game), the ``k`` nearest others, by rings of cells outward until the ``k``-th best is
   provably nearer than any unvisited cell. With few agents the grid is one cell: a scan of all.
4. ``_write_obs_pair``: the 7 values of one (observer, slot) pair per index, so that consecutive threads
   write nearly consecutive floats.
5. ``_tag``: each runner still in the game finds its nearest tagger within the tagging distance; the
   tagger's reward is credited with an atomic add (several runners may be tagged by one tagger in a step).

Reset runs ``_begin_grid_episode`` / ``_place`` and then steps 2-4: the first observation is computed from
the start state with time 0, for partial observation too. (The spec says partial observations are all zero
at reset; the reference's CPU code, which the spec defines as the semantics, computes them, and so does this.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.compile import per_agent, per_env, per_index
from warpdrive.core.device import atomic_add, kernel_function
from warpdrive.core.env import Env
from warpdrive.core.random import randint, uniform
from warpdrive.core.store import ArraySpec

#: Start directions the reference draws from.
HEADINGS = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2], dtype=np.float32)
#: With ``grid_cells_per_side=None``, partial observation uses an adaptive grid from this many agents on;
#: below it a grid of one cell (a scan of all agents in the game) measured faster on an H100.
GRID_MIN_AGENTS = 192
#: Agents per cell the automatic grid aims at (the k-nearest search then visits about 9 cells).
AGENTS_PER_CELL = 3.0
#: Largest automatic grid: cells per side.
MAX_CELLS_PER_SIDE = 64
#: Random draws per agent at a random start: x, y, direction.
DRAWS_PER_AGENT = 3

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_INF = np.float32(np.inf)
_TWO_PI = np.float32(2 * np.pi)  # the reference's modulus: 2*pi rounded to float32
_TAGGER = 1


@dataclass(frozen=True)
class TagContinuousConfig:
    """Parameters of Tag-continuous (defaults: the reference's; its training config in brackets)."""

    num_taggers: int = 1
    """Number of taggers [10]."""
    num_runners: int = 10
    """Number of runners [100]."""
    grid_length: float = 10.0
    """L: the arena is the square [0, L] x [0, L] [20.0]."""
    episode_length: int = 100
    """T: the episode is truncated after T steps [500]."""
    max_speed: float = 1.0
    """Top speed before the skill multiplier; also the speed and acceleration normaliser."""
    skill_level_runner: float = 1.0
    """A runner's top speed is max_speed * skill_level_runner."""
    skill_level_tagger: float = 1.0
    """A tagger's top speed is max_speed * skill_level_tagger."""
    max_acceleration: float = 1.0
    """Largest acceleration action [0.1]."""
    min_acceleration: float = -1.0
    """Smallest acceleration action [-0.1]."""
    max_turn: float = np.pi / 2
    """Largest turn action, radians [2.356]."""
    min_turn: float = -np.pi / 2
    """Smallest turn action, radians [-2.356]."""
    num_acceleration_levels: int = 10
    """Acceleration actions evenly spaced in [min, max], plus index 0 (no change) [20]."""
    num_turn_levels: int = 10
    """Turn actions evenly spaced in [min, max], plus index 0 (no turn) [20]."""
    edge_hit_penalty: float = -0.0
    """Reward (<= 0) of an agent in the game in a step where it crossed the edge and was clipped [0.0]."""
    use_full_observation: bool = True
    """Full (all N-1 others, 7(N-1)+1 values) or partial (k nearest, 7k+1 values) observation [False]."""
    num_other_agents_observed: int = 2
    """k: neighbours in the partial observation (1 <= k <= N; slots beyond the others left are 0) [10]."""
    tagging_distance: float = 0.01
    """A runner nearer than tagging_distance * L to a tagger is tagged (0 <= value <= 1) [0.02]."""
    tag_reward_for_tagger: float = 1.0
    """Reward (>= 0) of a tagger per runner it tags [10.0]."""
    step_penalty_for_tagger: float = -0.0
    """Reward (<= 0) of every tagger every step [0.0]."""
    tag_penalty_for_runner: float = -1.0
    """Reward (<= 0) of a runner when tagged [-10.0]."""
    step_reward_for_runner: float = 0.0
    """Reward (>= 0) of every runner in the game every step."""
    end_of_game_reward_for_runner: float = 1.0
    """Reward (>= 0) at step T of every runner still in the game."""
    runner_exits_game_after_tagged: bool = True
    """A tagged runner leaves the game (freezes, gets no rewards); when none is left the episode ends."""
    tagger_ids: tuple[int, ...] | None = None
    """Ids of the taggers (num_taggers distinct ids in [0, N)); default: drawn from ``seed``."""
    starting_location_x: tuple[float, ...] | None = None
    """x of every agent at the identical start (N values in [0, L]); default: drawn from ``seed``."""
    starting_location_y: tuple[float, ...] | None = None
    """y of every agent at the identical start (N values in [0, L]); give both x and y or neither."""
    starting_directions: tuple[float, ...] | None = None
    """Direction of every agent at the identical start (N values, radians); default: drawn from ``seed``."""
    seed: int = 0
    """Seed of the reference-style draw of the defaults above: ``np.random.seed(seed)``, then tagger ids,
    x = L*rand(N), y = L*rand(N), directions = choice([0, pi/2, pi, 3pi/2], N). Give it in the config
    (``TagContinuous({"seed": 7})``): the constructor's ``seed=`` keyword seeds the random starts."""
    grid_cells_per_side: int | None = None
    """Speed only, not semantics: the neighbour grid of partial observation. None: one cell (a scan of all
    agents in the game) below GRID_MIN_AGENTS agents, else about AGENTS_PER_CELL agents per cell, resized
    every step to the agents still in the game; G >= 1: always G x G cells."""

    def __post_init__(self) -> None:
        # lists and arrays (from YAML or NumPy) become tuples, so that configs compare and hash by value
        for name in ("tagger_ids", "starting_location_x", "starting_location_y", "starting_directions"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(np.asarray(value).reshape(-1).tolist()))

    @property
    def num_agents(self) -> int:
        return self.num_taggers + self.num_runners

    def validate(self) -> None:
        """Raise ``ValueError`` (or ``TypeError``) naming the first bad value and what was expected."""
        for name in ("num_taggers", "num_runners", "episode_length", "num_acceleration_levels",
                     "num_turn_levels", "num_other_agents_observed", "seed"):
            _check_int(name, getattr(self, name))
        for name in ("use_full_observation", "runner_exits_game_after_tagged"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("grid_length", "max_speed", "skill_level_runner", "skill_level_tagger", "max_acceleration",
                     "min_acceleration", "max_turn", "min_turn", "edge_hit_penalty", "tagging_distance",
                     "tag_reward_for_tagger", "step_penalty_for_tagger", "tag_penalty_for_runner",
                     "step_reward_for_runner", "end_of_game_reward_for_runner"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")

        _require(self.num_taggers >= 1, "num_taggers must be >= 1", self.num_taggers)
        _require(self.num_runners >= 1, "num_runners must be >= 1", self.num_runners)
        _require(self.episode_length >= 1, "episode_length must be >= 1", self.episode_length)
        _require(self.grid_length > 0, "grid_length must be > 0", self.grid_length)
        _require(self.max_speed > 0, "max_speed must be > 0", self.max_speed)
        _require(self.skill_level_runner >= 0, "skill_level_runner must be >= 0", self.skill_level_runner)
        _require(self.skill_level_tagger >= 0, "skill_level_tagger must be >= 0", self.skill_level_tagger)
        _require(self.min_acceleration <= self.max_acceleration,
                 f"min_acceleration must be <= max_acceleration={self.max_acceleration}", self.min_acceleration)
        _require(self.min_turn <= self.max_turn, f"min_turn must be <= max_turn={self.max_turn}", self.min_turn)
        _require(self.num_acceleration_levels >= 0, "num_acceleration_levels must be >= 0",
                 self.num_acceleration_levels)
        _require(self.num_turn_levels >= 0, "num_turn_levels must be >= 0", self.num_turn_levels)
        _require(self.edge_hit_penalty <= 0, "edge_hit_penalty must be <= 0", self.edge_hit_penalty)
        _require(0 <= self.tagging_distance <= 1, "tagging_distance must be in [0, 1]", self.tagging_distance)
        _require(self.tag_reward_for_tagger >= 0, "tag_reward_for_tagger must be >= 0", self.tag_reward_for_tagger)
        _require(self.step_penalty_for_tagger <= 0, "step_penalty_for_tagger must be <= 0",
                 self.step_penalty_for_tagger)
        _require(self.tag_penalty_for_runner <= 0, "tag_penalty_for_runner must be <= 0",
                 self.tag_penalty_for_runner)
        _require(self.step_reward_for_runner >= 0, "step_reward_for_runner must be >= 0",
                 self.step_reward_for_runner)
        _require(self.end_of_game_reward_for_runner >= 0, "end_of_game_reward_for_runner must be >= 0",
                 self.end_of_game_reward_for_runner)
        _require(0 <= self.seed < 2**32, "seed must be in [0, 2**32) (NumPy's legacy seeding)", self.seed)

        n, k = self.num_agents, self.num_other_agents_observed
        _require(k <= n, f"num_other_agents_observed must be <= the number of agents ({n})", k)
        if not self.use_full_observation:
            # k = N is allowed (as in the reference): the last slot is then always zero padding
            _require(k >= 1, "num_other_agents_observed must be >= 1 with partial observation", k)
        if self.grid_cells_per_side is not None:
            _check_int("grid_cells_per_side", self.grid_cells_per_side)
            _require(1 <= self.grid_cells_per_side <= 1024, "grid_cells_per_side must be None or in [1, 1024]",
                     self.grid_cells_per_side)

        if self.tagger_ids is not None:
            ids = self._sequence("tagger_ids", self.tagger_ids, self.num_taggers, "num_taggers")
            for i in ids:
                _check_int("tagger_ids", i)
                _require(0 <= i < n, f"tagger_ids must lie in [0, N={n})", i)
            if len(set(ids)) != len(ids):
                raise ValueError(f"tagger_ids must be distinct, got {list(ids)}")
        if (self.starting_location_x is None) != (self.starting_location_y is None):
            raise ValueError("give both starting_location_x and starting_location_y, or neither")
        for name in ("starting_location_x", "starting_location_y", "starting_directions"):
            value = getattr(self, name)
            if value is None:
                continue
            entries = self._sequence(name, value, n, "N = num_taggers + num_runners")
            try:
                values = np.array(entries, dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be numbers, got {list(value)}") from None
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{name} must be finite, got {list(value)}")
            if name != "starting_directions" and not np.all((values >= 0) & (values <= self.grid_length)):
                bad = values[(values < 0) | (values > self.grid_length)][0]
                raise ValueError(f"{name} values must lie in [0, grid_length={self.grid_length}], got {bad}")

    @staticmethod
    def _sequence(name: str, value: Any, expected: int, what: str) -> tuple[Any, ...]:
        if not isinstance(value, tuple):
            raise TypeError(f"{name} must be a sequence of {expected} values, got {value!r}")
        if len(value) != expected:
            raise ValueError(f"{name} must have {expected} values ({what}), got {len(value)}")
        return value


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")


def _require(ok: bool, message: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{message}, got {value!r}")


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
        x, y = config.starting_location_x, config.starting_location_y
    if config.starting_directions is None:
        direction = rng.choice([0, np.pi / 2, np.pi, np.pi * 3 / 2], n, replace=True)
    else:
        direction = config.starting_directions
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


@dataclass(frozen=True)
class GridShape:
    """The neighbour grid of partial observation: at most ``max_cells_per_side`` squared cells (0: none, for
    full observation). ``adaptive``: each step, each env sizes its grid to the agents still in the game
    (about ``AGENTS_PER_CELL`` per cell); otherwise the grid is always ``max_cells_per_side`` wide."""

    max_cells_per_side: int
    adaptive: bool


def grid_shape_of(config: TagContinuousConfig) -> GridShape:
    """The grid partial observation uses (none for full observation: it reads every agent anyway).

    A grid of one cell is a scan of all agents in the game: the cheapest for few agents.
    """
    g = config.grid_cells_per_side
    if config.use_full_observation:
        return GridShape(0, False)
    if g is not None:
        return GridShape(g, False)
    n = config.num_agents
    if n < GRID_MIN_AGENTS:
        return GridShape(1, False)
    return GridShape(max(1, min(MAX_CELLS_PER_SIDE, int(math.sqrt(n / AGENTS_PER_CELL)))), True)


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU). Every float is float32, as in the reference:
# constants are float32 globals and integers are converted before they meet a float.


@kernel_function
def _distance(ax, ay, bx, by):
    """Euclidean distance in float32, rounded as the reference's ``np.sqrt`` of float32 squares."""
    dx = ax - bx
    dy = ay - by
    return np.float32(math.sqrt(dx * dx + dy * dy))


@kernel_function
def _wrap_direction(direction):
    """``direction mod 2pi`` in float32 with Python's sign rule (fmod, then + 2pi when negative), as NumPy
    computes it."""
    return direction % _TWO_PI


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


# ---- the grid: cells of side s.cell_size[env], s.grid_side[env] per side, rebuilt every step --------


@kernel_function
def _cell_coord(v, inv_cell, side):
    """Cell index along one axis of a coordinate (clamped to the grid; monotonic in ``v``)."""
    return min(int(max(v, _ZERO) * inv_cell), side - 1)


@kernel_function
def _prepare_grid(env, in_game, p, s):
    """Choose this step's grid for ``in_game`` agents. Its cell counts are zero: they start at zero and
    ``_scan_row_cells`` zeroes each count it has read."""
    side = p.max_cells_per_side
    if p.adaptive_grid:
        side = max(1, min(side, int(math.sqrt(np.float32(in_game) * p.inv_agents_per_cell))))
    s.grid_side[env] = side
    s.cell_size[env] = p.grid_length / np.float32(side)
    s.inv_cell_size[env] = np.float32(side) / p.grid_length


@kernel_function
def _begin_grid_step(env, p, s):
    if p.max_cells_per_side > 0:
        _prepare_grid(env, p.num_taggers + s.runners_left[env], p, s)


@kernel_function
def _begin_grid_episode(env, p, s):
    s.runners_left[env] = p.num_runners
    if p.max_cells_per_side > 0:
        _prepare_grid(env, p.num_agents, p, s)


@kernel_function
def _count_into_cell(env, agent, x, y, p, s):
    """Count an agent in the game into its cell (grid only); its slot in the cell is the old count."""
    if p.max_cells_per_side > 0:
        side = s.grid_side[env]
        inv_cell = s.inv_cell_size[env]
        cell = _cell_coord(y, inv_cell, side) * side + _cell_coord(x, inv_cell, side)
        s.agent_cell[env, agent] = cell
        s.agent_slot[env, agent] = atomic_add(s.cell_count, (env, cell), np.int32(1))


@kernel_function
def _grid_row_count(p, s):
    return p.max_cells_per_side


@kernel_function
def _sum_row(env, row, p, s):
    """Agents per row of cells (the prefix sum over cells runs in rows: no thread walks all cells)."""
    side = s.grid_side[env]
    if row < side:
        total = 0
        for cell in range(row * side, (row + 1) * side):
            total += s.cell_count[env, cell]
        s.row_start[env, row] = total


@kernel_function
def _scan_rows(env, p, s):
    """Row totals -> exclusive row starts (one thread, one value per row)."""
    if p.max_cells_per_side > 0:
        side = s.grid_side[env]
        running = 0
        for row in range(side):
            total = s.row_start[env, row]
            s.row_start[env, row] = running
            running += total
        s.cell_start[env, side * side] = running


@kernel_function
def _scan_row_cells(env, row, p, s):
    side = s.grid_side[env]
    if row < side:
        running = s.row_start[env, row]
        for cell in range(row * side, (row + 1) * side):
            s.cell_start[env, cell] = running
            running += s.cell_count[env, cell]
            s.cell_count[env, cell] = 0  # ready for the next build (saves a clearing pass)


@kernel_function
def _scatter(env, agent, p, s):
    """Each agent in the game to its cell's slot, with a copy of its position (contiguous per cell)."""
    if p.max_cells_per_side > 0 and s.still[env, agent]:
        pos = s.cell_start[env, s.agent_cell[env, agent]] + s.agent_slot[env, agent]
        s.cell_agent[env, pos] = agent
        s.cell_x[env, pos] = s.x[env, agent]
        s.cell_y[env, pos] = s.y[env, agent]


# ---- one step of the dynamics ---------------------------------------------------------------------


@kernel_function
def _move(env, agent, p, s):
    """Steps 2-7 and 9a of the spec for one agent; counts it into its cell when the grid is used."""
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
    x = s.x[env, agent] + speed * np.float32(math.cos(direction))
    y = s.y[env, agent] + speed * np.float32(math.sin(direction))
    length = p.grid_length
    crossed = x < _ZERO or x > length or y < _ZERO or y > length
    x = min(max(x, _ZERO), length)
    y = min(max(y, _ZERO), length)
    s.x[env, agent] = x
    s.y[env, agent] = y
    s.speed[env, agent] = speed
    s.acc[env, agent] = acc
    s.direction[env, agent] = direction

    reward = _ZERO
    if still:
        reward = reward + (p.edge_hit_penalty if crossed else _ZERO)
        reward = reward + (p.step_penalty_for_tagger if s.agent_type[agent] == _TAGGER else p.step_reward_for_runner)
        _count_into_cell(env, agent, x, y, p, s)
    s.rewards[env, agent] = reward


# ---- k nearest neighbours (partial observation) -------------------------------------------------


@kernel_function
def _worst(k, best_d, best_id):
    """The last of the k-best set in (distance, id) order: ``(distance, id, slot)``. The k loads do not
    depend on each other, so they cost about one memory latency."""
    worst_d = best_d[0]
    worst_id = np.int64(best_id[0])
    worst_slot = 0
    for m in range(1, k):
        d = best_d[m]
        j = np.int64(best_id[m])
        if d > worst_d or (d == worst_d and j > worst_id):
            worst_d = d
            worst_id = j
            worst_slot = m
    return worst_d, worst_id, worst_slot


@kernel_function
def _offer(j, d, count, worst, k, best_d, best_id):
    """Offer candidate ``j`` at distance ``d`` to the k-best set ``best_d[:count], best_id[:count]``.

    The set is kept unsorted: a better candidate replaces the worst entry, whose ``(distance, id, slot)``
    (``worst``, valid once ``count == k``) is carried in registers, so that a rejected candidate touches no
    memory and an accepted one costs one store and one pass of independent loads (a sorted insertion would
    chain a load and a store per shifted entry). Order: (distance, id) lexicographic, i.e. the reference's
    stable sort of float32 distances over ids. Returns ``(count, worst)``.
    """
    if count < k:
        best_d[count] = d
        best_id[count] = j
        count += 1
        if count == k:
            worst = _worst(k, best_d, best_id)
        return count, worst
    if d > worst[0] or (d == worst[0] and j > worst[1]):
        return count, worst
    best_d[worst[2]] = d
    best_id[worst[2]] = j
    return count, _worst(k, best_d, best_id)


@kernel_function
def _offer_cell(env, pos_self, cell, x, y, count, worst, k, best_d, best_id, s):
    """Offer every agent of one grid cell (but the searching agent, at ``pos_self``)."""
    for pos in range(s.cell_start[env, cell], s.cell_start[env, cell + 1]):
        if pos != pos_self:
            d = _distance(x, y, s.cell_x[env, pos], s.cell_y[env, pos])
            count, worst = _offer(np.int64(s.cell_agent[env, pos]), d, count, worst, k, best_d, best_id)
    return count, worst


@kernel_function
def _nearest_in_grid(env, pos_self, x, y, k, best_d, best_id, p, s):
    """The k nearest others in the game, visiting rings of cells around the agent's cell; returns how many.

    Ring ``d`` is the square of cells at Chebyshev distance ``d`` from the agent's cell, walked side by
    side (one call site, so that the compiled loop stays small). After ring ``d`` every unvisited agent lies
    outside the block of visited cells, so it is at least ``bound`` (the distance to the block's nearest
    side that is not the arena's edge) away. The search stops once the k-th best is nearer than that by
    ``p.search_margin``, which covers float32 rounding in the cell assignment, so ties are still resolved
    by id exactly.
    """
    g = s.grid_side[env]
    size = s.cell_size[env]
    cx = _cell_coord(x, s.inv_cell_size[env], g)
    cy = _cell_coord(y, s.inv_cell_size[env], g)
    count = 0
    worst = (_INF, np.int64(-1), 0)
    d = 0
    while True:
        # ring d: 4 sides of 2d cells each (each corner counted once); ring 0 is the agent's own cell
        for side in range(4 if d > 0 else 1):
            for t in range(max(2 * d, 1)):
                if side == 0:
                    gx, gy = cx - d + t, cy - d
                elif side == 1:
                    gx, gy = cx + d, cy - d + t
                elif side == 2:
                    gx, gy = cx + d - t, cy + d
                else:
                    gx, gy = cx - d, cy + d - t
                if 0 <= gx < g and 0 <= gy < g:
                    count, worst = _offer_cell(env, pos_self, gy * g + gx, x, y, count, worst, k, best_d, best_id,
                                               s)
        bound = _INF
        if cx - d > 0:
            bound = min(bound, x - np.float32(cx - d) * size)
        if cx + d < g - 1:
            bound = min(bound, np.float32(cx + d + 1) * size - x)
        if cy - d > 0:
            bound = min(bound, y - np.float32(cy - d) * size)
        if cy + d < g - 1:
            bound = min(bound, np.float32(cy + d + 1) * size - y)
        if bound == _INF or (count == k and worst[0] < bound - p.search_margin):
            return count
        d += 1


@kernel_function
def _grid_agent_count(p, s):
    return p.num_agents if p.max_cells_per_side > 0 else 0


@kernel_function
def _find_neighbours(env, pos, p, s):
    """Partial observation: ids of the k nearest others in the game, nearest first ->
    ``s.neighbours[env, :, agent]`` (-1 where fewer remain), for the agent at ``pos`` of the cell-sorted
    arrays.

    Indexing by cell-sorted position visits only agents in the game (no idle threads for those out) and
    gives neighbouring threads neighbouring agents (similar searches, shared cache lines). The k-best set
    is collected unsorted in ``s.candidate_distance`` / ``s.candidate_id`` (axis order [env, slot, pos]:
    the threads of a warp touch neighbouring addresses, and k has no fixed maximum), then each entry goes to
    its rank.
    """
    side = s.grid_side[env]
    if pos >= s.cell_start[env, side * side]:
        return  # fewer agents in the game than positions
    k = p.num_other_agents_observed
    best_d = s.candidate_distance[env, :, pos]
    best_id = s.candidate_id[env, :, pos]
    count = _nearest_in_grid(env, pos, s.cell_x[env, pos], s.cell_y[env, pos], k, best_d, best_id, p, s)
    agent = s.cell_agent[env, pos]
    for m in range(count):
        d = best_d[m]
        j = best_id[m]
        rank = 0
        for other in range(count):
            other_d = best_d[other]
            if other_d < d or (other_d == d and best_id[other] < j):
                rank += 1
        s.neighbours[env, rank, agent] = j
    for m in range(count, k):
        s.neighbours[env, m, agent] = -1


# ---- observations -------------------------------------------------------------------------------


@kernel_function
def _obs_pair_count(p, s):
    return p.num_agents * p.obs_others


@kernel_function
def _write_obs_pair(env, index, p, s):
    """The 7 values of one (observer, slot) pair, and the time value with slot 0.

    One index per pair: consecutive threads write runs of consecutive floats of ``s.obs`` (nearly
    coalesced), and the pair's two agents are read once for all 7 features.
    """
    others = p.obs_others
    agent = _quotient(index, others, p.inv_obs_others)
    slot = index - agent * others
    still = s.still[env, agent]
    obs = s.obs
    if slot == 0:
        obs[env, agent, 7 * others] = np.float32(s.t[env]) / np.float32(p.episode_length) if still else _ZERO
    if p.use_full_observation:
        other = slot + 1 if slot >= agent else slot  # the others in id order, skipping self
        kind = np.float32(s.agent_type[other])
        other_still = _ONE if s.still[env, other] else _ZERO
        visible = still  # out of the game: zeros, but the others' type and still are kept
    else:
        other = s.neighbours[env, slot, agent] if still else -1
        visible = other >= 0
        kind = np.float32(s.agent_type[other]) if visible else _ZERO
        other_still = _ONE if visible else _ZERO  # neighbours are in the game; padding is 0
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


# ---- tagging and rewards ------------------------------------------------------------------------


@kernel_function
def _tag(env, agent, p, s):
    """Steps 9b and 9c for one runner: tagged by its nearest tagger within reach; end-of-game bonus."""
    if s.agent_type[agent] == _TAGGER or not s.still[env, agent]:
        return
    x = s.x[env, agent]
    y = s.y[env, agent]
    best_d = _INF
    best = -1
    if p.max_cells_per_side > 0:
        # only taggers within reach matter; the cells overlapping the disc (with margin) hold them all
        reach = p.tag_distance + p.search_margin
        g = s.grid_side[env]
        inv_cell = s.inv_cell_size[env]
        for gy in range(_cell_coord(y - reach, inv_cell, g), _cell_coord(y + reach, inv_cell, g) + 1):
            for gx in range(_cell_coord(x - reach, inv_cell, g), _cell_coord(x + reach, inv_cell, g) + 1):
                cell = gy * g + gx
                for pos in range(s.cell_start[env, cell], s.cell_start[env, cell + 1]):
                    j = s.cell_agent[env, pos]
                    if s.agent_type[j] == _TAGGER:
                        d = _distance(x, y, s.cell_x[env, pos], s.cell_y[env, pos])
                        if d < best_d or (d == best_d and j < best):
                            best_d = d
                            best = j
    else:
        for i in range(p.num_taggers):
            j = s.tagger_list[i]  # ascending ids: the first of equal distances is the lowest id
            d = _distance(x, y, s.x[env, j], s.y[env, j])
            if d < best_d:
                best_d = d
                best = j
    still = True
    if best >= 0 and best_d < p.tag_distance:
        s.rewards[env, agent] += p.tag_penalty_for_runner
        atomic_add(s.rewards, (env, best), p.tag_reward_for_tagger)
        atomic_add(s.metrics, (env, 0), _ONE)
        atomic_add(s.metrics, (env, 1), p.inv_num_runners)
        if p.runner_exits_game_after_tagged:
            still = False
            s.still[env, agent] = False
            if atomic_add(s.runners_left, env, np.int32(-1)) == 1:
                s.terminated[env] = True
    if still and s.t[env] == p.episode_length:
        s.rewards[env, agent] += p.end_of_game_reward_for_runner


# ---- episode start ------------------------------------------------------------------------------


@kernel_function
def _place(env, agent, p, s):
    """Start of an episode: the identical start, or a random one drawn per env and episode."""
    if p.random_start:
        episode = s.episode[env]
        base = agent * DRAWS_PER_AGENT
        x = p.grid_length * uniform(p.seed, env, episode, base)
        y = p.grid_length * uniform(p.seed, env, episode, base + 1)
        s.direction[env, agent] = s.headings[randint(p.seed, env, episode, base + 2, 4)]
    else:
        x = s.start_x[agent]
        y = s.start_y[agent]
        s.direction[env, agent] = s.start_direction[agent]
    s.x[env, agent] = x
    s.y[env, agent] = y
    s.speed[env, agent] = _ZERO
    s.acc[env, agent] = _ZERO
    s.still[env, agent] = True
    _count_into_cell(env, agent, x, y, p, s)


# After the agents are counted into their cells: finish the grid, find neighbours, write observations.
_OBSERVE_PHASES = (
    per_index(_sum_row, _grid_row_count),
    per_env(_scan_rows),
    per_index(_scan_row_cells, _grid_row_count),
    per_agent(_scatter),
    per_index(_find_neighbours, _grid_agent_count),
    per_index(_write_obs_pair, _obs_pair_count),
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
    ``neighbours``                                   [E, k, N]      int32      scratch: partial observation's neighbours
    ``candidate_id``, ``candidate_distance``         [E, k, N]      int32/f32  scratch: the unsorted k-best set
    ``grid_side``                                    [E]            int32      scratch: this step's grid, cells per side
    ``cell_size``, ``inv_cell_size``                 [E]            float32    scratch: its cell side and inverse
    ``cell_count``, ``cell_start``                   [E, G*G (+1)]  int32      scratch: agents per cell, cell offsets
    ``row_start``                                    [E, G]         int32      scratch: offsets of rows of cells
    ``cell_agent``, ``cell_x``, ``cell_y``           [E, N]         int32/f32  scratch: agents in the game by cell
    ``agent_cell``, ``agent_slot``                   [E, N]         int32      scratch: each agent's cell and slot in it
    ===============================================  =============  =========  =========================================

    Metrics per episode: ``runners_tagged`` (tag events) and ``tag_rate`` (tag events / num_runners).
    """

    name = "tag_continuous"
    Config = TagContinuousConfig

    step_phases = (
        per_env(_begin_grid_step),
        per_agent(_move),
        *_OBSERVE_PHASES,
        per_agent(_tag),
    )
    reset_phases = (
        per_env(_begin_grid_episode),
        per_agent(_place),
        *_OBSERVE_PHASES,
    )

    @classmethod
    def num_agents_of(cls, config: TagContinuousConfig) -> int:
        return config.num_agents

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

    def state_arrays(self) -> list[ArraySpec]:
        c = self.config
        n = c.num_agents
        grid = grid_shape_of(c)
        k = 1 if c.use_full_observation else c.num_other_agents_observed
        acc_levels, turn_levels = c.num_acceleration_levels + 1, c.num_turn_levels + 1
        side = max(grid.max_cells_per_side, 1)
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
            ArraySpec("neighbours", "env", torch.int32, "scratch", (k, n)),
            ArraySpec("candidate_id", "env", torch.int32, "scratch", (k, n)),
            ArraySpec("candidate_distance", "env", torch.float32, "scratch", (k, n)),
            ArraySpec("grid_side", "env", torch.int32, "scratch"),
            ArraySpec("cell_size", "env", torch.float32, "scratch"),
            ArraySpec("inv_cell_size", "env", torch.float32, "scratch"),
            ArraySpec("cell_count", "env", torch.int32, "scratch", (side * side,)),
            ArraySpec("cell_start", "env", torch.int32, "scratch", (side * side + 1,)),
            ArraySpec("row_start", "env", torch.int32, "scratch", (side,)),
            ArraySpec("cell_agent", "agent", torch.int32, "scratch"),
            ArraySpec("cell_x", "agent", torch.float32, "scratch"),
            ArraySpec("cell_y", "agent", torch.float32, "scratch"),
            ArraySpec("agent_cell", "agent", torch.int32, "scratch"),
            ArraySpec("agent_slot", "agent", torch.int32, "scratch"),
        ]

    def kernel_params(self) -> dict[str, Any]:
        c = self.config
        grid = grid_shape_of(c)
        length = np.float32(c.grid_length)
        others = (self.observation_size() - 1) // 7
        return {
            "num_taggers": c.num_taggers,
            "num_runners": c.num_runners,
            "grid_length": length,
            "edge_hit_penalty": np.float32(c.edge_hit_penalty),
            "step_penalty_for_tagger": np.float32(c.step_penalty_for_tagger),
            "step_reward_for_runner": np.float32(c.step_reward_for_runner),
            "tag_reward_for_tagger": np.float32(c.tag_reward_for_tagger),
            "tag_penalty_for_runner": np.float32(c.tag_penalty_for_runner),
            "end_of_game_reward_for_runner": np.float32(c.end_of_game_reward_for_runner),
            # float32(float32(d) * L): the reference's (tagging_distance * grid_length).astype(float32)
            "tag_distance": np.float32(np.float32(c.tagging_distance) * length),
            "runner_exits_game_after_tagged": bool(c.runner_exits_game_after_tagged),
            "use_full_observation": bool(c.use_full_observation),
            "num_other_agents_observed": c.num_other_agents_observed,
            "obs_others": others,
            "inv_obs_others": np.float32(1.0 / max(others, 1)),
            "inv_position_scale": np.float32(1.0 / (float(length) * math.sqrt(2))),
            "inv_speed_scale": np.float32(1.0 / float(np.float32(c.max_speed) + np.float32(1e-10))),
            "inv_direction_scale": np.float32(1.0 / float(_TWO_PI)),
            "inv_num_runners": np.float32(1.0 / c.num_runners),
            "max_cells_per_side": grid.max_cells_per_side,
            "adaptive_grid": grid.adaptive,
            "inv_agents_per_cell": np.float32(1.0 / AGENTS_PER_CELL),
            # float32 rounding in cell assignment and distances is a few ulps of L; this is far above it
            "search_margin": np.float32(1e-5 * float(length)),
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
