"""The particle world shared by the MPE envs: mpe2's physics, action mapping, starts and observation pieces.

Semantics in full: docs/envs/mpe.md.

The envs (``simple_tag``, ``simple_spread``, ``simple_adversary``) follow the ``mpe2`` package (Farama's MPE2,
1.1; ``mpe2/_mpe_utils/core.py`` and ``simple_env.py``): its code is the spec. One world step, per agent:

1. Action force: discrete action ``a`` in ``0..4`` (none, -x, +x, -y, +y) gives the unit vector ``u``;
   continuous actions ``[_, a1, a2, a3, a4]`` in ``[0, 1]`` (clipped, as mpe2's ``ClipOutOfBoundsWrapper``)
   give ``u = (a2 - a1, a4 - a3)``. The force is ``u * accel`` (``accel``: per agent type; 5 where mpe2's
   agent has none).
2. Contact forces, from every other colliding entity (agents in id order, then landmarks): with
   ``d = p_i - p_j``, ``dist = |d|`` and ``dist_min = size_i + size_j``, the force on ``i`` is
   ``contact_force * d / dist * k * softplus((dist_min - dist) / k)``, ``k = contact_margin``
   (``contact_force = 100``, ``contact_margin = 1e-3``). Landmarks do not move.
3. Semi-implicit Euler with damping (``dt = 0.1``, ``damping = 0.25``, mass 1):
   ``p += v dt``; ``v = v (1 - damping) + F dt``; then, where the agent type has a ``max_speed``,
   ``v`` is scaled down to it when faster.

Forces are computed from the positions before the step, for all agents, before any agent moves (a barrier
separates the two phases).

Precision: the state is float32 (mpe2 computes in float64); a contact term whose ``softplus`` argument is
below ``SOFTPLUS_CUTOFF`` (the entities are farther apart than ``dist_min + 40 k``) is taken as zero: its
force, under ``1e-17``, is below float32's resolution of any force sum here. ``softplus`` and simple_tag's
bounds penalty use :mod:`warpdrive.core.exactmath`'s ``exp32``/``log1p32`` (not the targets' own, which round
differently in the last bit), so CPU and GPU results are bit-identical.

Starts: every agent uniform in ``[-1, 1)^2`` at rest; landmarks uniform in ``[-r, r)^2`` (``r`` per env: 0.9
for simple_tag's obstacles, 1 otherwise), drawn from the core's counter-based streams (draw ``2i, 2i+1``
for agent ``i``, ``2N + 2l, 2N + 2l + 1`` for landmark ``l``), as mpe2's ``reset_world`` draws them
uniformly.

Observation of the others: mpe2's full layout lists every other agent (``O(N)`` values per agent,
``O(N^2)`` per env: 2.4 MB per env of 1,000 agents just for the relative positions, rewritten every step).
With ``k_nearest = k`` only the ``k`` nearest others are observed, nearest first, zero padded (mpe2's
``num_agent_neighbors``), found with the core's neighbour grid (:mod:`warpdrive.core.spatial`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.compile import Phase, per_agent, per_env, per_index
from warpdrive.core.device import kernel_function
from warpdrive.core.env import Env
from warpdrive.core.exactmath import exp32, log1p32
from warpdrive.core.random import uniform
from warpdrive.core.spatial import (
    NeighbourGrid,
    automatic_grid,
    begin_grid,
    count_into_cell,
    distance,
    grid_build_phases,
    k_nearest_phases,
)
from warpdrive.core.store import ArraySpec
from warpdrive.core.typed import bounded

# mpe2's World defaults
DT = 0.1
DAMPING = 0.25
CONTACT_FORCE = 100.0
CONTACT_MARGIN = 1e-3
#: the action force's gain where an agent type sets no ``accel`` (mpe2's ``sensitivity``)
DEFAULT_ACCEL = 5.0
#: softplus arguments below this contribute nothing in float32 (see the module docstring)
SOFTPLUS_CUTOFF = -40.0
#: discrete actions: none, -x, +x, -y, +y; continuous: 5 values in [0, 1]
NUM_ACTIONS = 5
#: the neighbour grid covers the start square [-1, 1]^2 (agents outside it are found too, in border cells)
GRID_ORIGIN = -1.0
GRID_SIDE = 2.0
DRAWS_PER_ENTITY = 2

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@dataclass(frozen=True)
class MPEConfig:
    """Parameters every MPE env has."""

    episode_length: int = bounded(25, ge=1)
    """mpe2's ``max_cycles``: episodes are truncated after this many steps."""
    continuous_actions: bool = False
    """mpe2's ``continuous_actions``: Box(0, 1, (5,)) actions instead of Discrete(5)."""
    k_nearest: int | None = bounded(None, ge=1)
    """None: mpe2's full observation of every other agent (O(agents^2) per env); k >= 1: only the k nearest
    others (mpe2's ``num_agent_neighbors = k``), zero padded where fewer exist."""


@dataclass(frozen=True)
class AgentTypes:
    """Per-agent physical properties [N] (mpe2's ``size``, ``accel``, ``max_speed``, ``adversary``) and the
    landmarks' sizes [L]; ``None`` for accel or max_speed means what it means in mpe2."""

    size: list[float]
    accel: Sequence[float | None]
    max_speed: Sequence[float | None]
    adversary: list[bool]
    landmark_size: list[float]


# --------------------------------------------------------------------------------------------------
# kernel functions. Arrays: x, y, vx, vy [E, N]; fx, fy [E, N] (scratch); lx, ly [E, L]; constants
# size, accel, max_speed, adversary [N], landmark_size [L].


@kernel_function
def softplus(z):
    """``log(1 + exp(z))`` in float32 without overflow (``logaddexp(0, z)``)."""
    # max(z, 0) + log(1 + exp(-|z|)): one call of each function, not one per branch (NVVM compiles each inlined copy)
    return max(z, _ZERO) + log1p32(exp32(-abs(z)))


@kernel_function
def _contact(dx, dy, dist_min, p):
    """Contact force ``(fx, fy)`` on an entity at offset ``(dx, dy)`` from another (mpe2's
    ``get_collision_force``)."""
    dist = np.float32(math.sqrt(dx * dx + dy * dy))
    z = (dist_min - dist) / p.contact_margin
    if z < p.softplus_cutoff:
        return _ZERO, _ZERO
    scale = p.contact_force / dist * (softplus(z) * p.contact_margin)
    return dx * scale, dy * scale


@kernel_function
def _action_force(env, agent, p, s):
    if p.continuous_actions:
        a = s.actions
        ux = min(max(a[env, agent, 2], _ZERO), _ONE) - min(max(a[env, agent, 1], _ZERO), _ONE)
        uy = min(max(a[env, agent, 4], _ZERO), _ONE) - min(max(a[env, agent, 3], _ZERO), _ONE)
    else:
        action = s.actions[env, agent, 0]
        ux = uy = _ZERO
        if action == 1:
            ux = -_ONE
        elif action == 2:
            ux = _ONE
        elif action == 3:
            uy = -_ONE
        elif action == 4:
            uy = _ONE
    accel = s.accel[agent]
    return ux * accel, uy * accel


@kernel_function
def _force(env, agent, p, s):
    """Action plus contact forces on ``agent``, from the positions before the step, into ``fx, fy``."""
    fx, fy = _action_force(env, agent, p, s)
    x = s.x[env, agent]
    y = s.y[env, agent]
    size = s.size[agent]
    if p.agents_collide:
        for j in range(p.num_agents):
            if j != agent:
                cx, cy = _contact(x - s.x[env, j], y - s.y[env, j], size + s.size[j], p)
                fx += cx
                fy += cy
    if p.landmarks_collide:
        for j in range(p.num_landmarks):
            cx, cy = _contact(x - s.lx[env, j], y - s.ly[env, j], size + s.landmark_size[j], p)
            fx += cx
            fy += cy
    s.fx[env, agent] = fx
    s.fy[env, agent] = fy


@kernel_function
def _integrate(env, agent, p, s):
    vx = s.vx[env, agent]
    vy = s.vy[env, agent]
    s.x[env, agent] += vx * p.dt
    s.y[env, agent] += vy * p.dt
    vx = vx * p.one_minus_damping + s.fx[env, agent] * p.dt
    vy = vy * p.one_minus_damping + s.fy[env, agent] * p.dt
    top = s.max_speed[agent]  # +inf where the type has none
    speed = np.float32(math.sqrt(vx * vx + vy * vy))
    if speed > top:
        vx = vx / speed * top
        vy = vy / speed * top
    s.vx[env, agent] = vx
    s.vy[env, agent] = vy


@kernel_function
def _count(env, agent, p, s):
    count_into_cell(env, agent, True, p, s)


@kernel_function
def _begin_grid(env, p, s):
    begin_grid(env, p.num_agents, p, s)


@kernel_function
def _place_agent(env, agent, p, s):
    episode = s.episode[env]
    base = agent * DRAWS_PER_ENTITY
    s.x[env, agent] = np.float32(2.0) * uniform(p.seed, env, episode, base) - _ONE
    s.y[env, agent] = np.float32(2.0) * uniform(p.seed, env, episode, base + 1) - _ONE
    s.vx[env, agent] = _ZERO
    s.vy[env, agent] = _ZERO


@kernel_function
def _landmark_count(p, s):
    return p.num_landmarks


@kernel_function
def _place_landmark(env, landmark, p, s):
    episode = s.episode[env]
    base = (p.num_agents + landmark) * DRAWS_PER_ENTITY
    r = p.landmark_range
    s.lx[env, landmark] = np.float32(2.0) * r * uniform(p.seed, env, episode, base) - r
    s.ly[env, landmark] = np.float32(2.0) * r * uniform(p.seed, env, episode, base + 1) - r


@kernel_function
def entity_draws(p):
    """Counter of the first draw after the agents' and landmarks' start draws (for an env's own draws)."""
    return (p.num_agents + p.num_landmarks) * DRAWS_PER_ENTITY


@kernel_function
def colliding(env, a, b, p, s):
    """mpe2's ``is_collision`` of agents ``a`` and ``b``: nearer than the sum of their sizes."""
    return distance(s.x[env, a], s.y[env, a], s.x[env, b], s.y[env, b]) < s.size[a] + s.size[b]


@kernel_function
def write_own(env, agent, p, s):
    """The start of mpe2's simple_tag and simple_spread rows: own velocity, own position, then every landmark
    relative to the agent (from column 4)."""
    s.obs[env, agent, 0] = s.vx[env, agent]
    s.obs[env, agent, 1] = s.vy[env, agent]
    s.obs[env, agent, 2] = s.x[env, agent]
    s.obs[env, agent, 3] = s.y[env, agent]
    write_landmarks(env, agent, 4, p, s)


@kernel_function
def write_landmarks(env, agent, offset, p, s):
    """The landmarks' positions relative to ``agent``, in order, from ``offset`` of its observation."""
    x = s.x[env, agent]
    y = s.y[env, agent]
    for j in range(p.num_landmarks):
        s.obs[env, agent, offset + 2 * j] = s.lx[env, j] - x
        s.obs[env, agent, offset + 2 * j + 1] = s.ly[env, j] - y


@kernel_function
def _other_pair_count(p, s):
    return p.num_agents * (p.num_agents - 1)


def others_phase(offset: Any) -> Phase:
    """mpe2's full layout's other agents, in id order, relative to each agent: a phase of (agent, other) pairs
    writing the pair's two values at ``offset(env, agent, p, s) + 2 * slot`` of the agent's row.

    One pair per thread, consecutive threads on consecutive slots of one agent: a warp writes a run of 64
    consecutive floats of one row (one thread per agent writing its whole row would touch 32 rows per store).
    """

    @kernel_function
    def write_pair(env, index, p, s):
        others = p.num_agents - 1
        agent = index // others
        slot = index - agent * others
        other = slot + 1 if slot >= agent else slot  # every agent but itself, in id order
        column = offset(env, agent, p, s) + 2 * slot
        s.obs[env, agent, column] = s.x[env, other] - s.x[env, agent]
        s.obs[env, agent, column + 1] = s.y[env, other] - s.y[env, agent]

    return per_index(write_pair, _other_pair_count)


@kernel_function
def write_neighbour(env, agent, slot, other, offset, p, s):
    """k-nearest layout: the ``slot``-th nearest other's relative position (zeros for ``other = -1``)."""
    dx = dy = _ZERO
    if other >= 0:
        dx = s.x[env, other] - s.x[env, agent]
        dy = s.y[env, other] - s.y[env, agent]
    s.obs[env, agent, offset + 2 * slot] = dx
    s.obs[env, agent, offset + 2 * slot + 1] = dy


@kernel_function
def write_zeros(env, agent, start, stop, p, s):
    for j in range(start, stop):
        s.obs[env, agent, j] = _ZERO


def neighbour_grid(num_agents: int) -> NeighbourGrid:
    """The k-nearest search's grid (the core's automatic one, over the start square)."""
    return automatic_grid(GRID_SIDE, num_agents, origin=GRID_ORIGIN)


def world_phases(observe: tuple[Phase, ...], rewards: tuple[Phase, ...], visit: Any, k: int | None, *,
                 one_cell: bool = False, step_start: tuple[Any, ...] = (), episode_start: tuple[Any, ...] = ()
                 ) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
    """``(step phases, reset phases)`` of an MPE env.

    Step: ``step_start`` (per-env functions), forces, integration (and counting into the neighbour grid);
    with ``k``, the grid's build (``one_cell``: the grid's build for one cell, see :meth:`NeighbourGrid.build_phases`)
    and the k-nearest phases calling ``visit(env, agent, slot, other, p, s)``;
    the ``observe`` phases (the rest of the observation, e.g. :func:`others_phase`); then the env's ``rewards``
    phases. Reset: ``episode_start`` (per-env functions), agent and landmark starts, then the same observation
    phases.
    """
    if k is None:
        grid_start: tuple[Any, ...] = ()
        move = per_agent(_integrate)
        place = per_agent(_place_agent)
        neighbours: tuple[Phase, ...] = ()
    else:
        grid_start = (_begin_grid,)
        move = per_agent(_integrate, _count)
        place = per_agent(_place_agent, _count)
        neighbours = (*grid_build_phases(one_cell), *k_nearest_phases(k, visit, one_cell=one_cell))
    begin_step = (per_env(*step_start, *grid_start),) if step_start or grid_start else ()
    begin_episode = (per_env(*episode_start, *grid_start),) if episode_start or grid_start else ()
    step = (*begin_step, per_agent(_force), move, *neighbours, *observe, *rewards)
    reset = (*begin_episode, place, per_index(_place_landmark, _landmark_count), *neighbours, *observe)
    return step, reset


class MPEEnv(Env):
    """What the MPE envs share: the world's arrays, parameters, actions and program variants.

    Arrays (E envs, N agents, L landmarks; L is at least 1 in the shapes, ``p.num_landmarks`` is the count):

    ==============================================  =========  ========  =========================================
    name                                            shape      dtype     meaning
    ==============================================  =========  ========  =========================================
    ``x``, ``y``, ``vx``, ``vy``                    [E, N]     float32   agent positions and velocities
    ``fx``, ``fy``                                  [E, N]     float32   this step's forces (scratch)
    ``lx``, ``ly``                                  [E, L]     float32   landmark positions
    ``size``, ``accel``, ``max_speed``              [N]        float32   per agent (max_speed +inf: none)
    ``adversary``                                   [N]        bool      adversaries (their ids come first)
    ``landmark_size``                               [L]        float32   per landmark
    ==============================================  =========  ========  =========================================

    With ``k_nearest`` the neighbour grid's scratch arrays are added (:meth:`NeighbourGrid.arrays`).
    Subclasses give ``agent_types()``, ``num_landmarks_of``, ``observation_size``, their phases and
    extra arrays and derived parameters (``extra_params``; the config's int, float and bool fields reach
    ``p`` by themselves).
    """

    start_modes = ("random",)
    #: whether agents, and landmarks, exert contact forces (mpe2's ``collide`` of each kind)
    agents_collide: bool = True
    landmarks_collide: bool = False
    #: landmarks start uniform in [-landmark_range, landmark_range)^2
    landmark_range: float = 1.0

    @classmethod
    def num_landmarks_of(cls, config: Any) -> int:
        raise NotImplementedError

    def agent_types(self) -> AgentTypes:
        raise NotImplementedError

    def phases_for(self, k: int | None, one_cell: bool) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
        """The env's :func:`world_phases` with ``k`` nearest observed (None: all), searched in a grid of one cell or
        not."""
        raise NotImplementedError

    def extra_arrays(self) -> list[ArraySpec]:
        return []

    def extra_params(self) -> dict[str, Any]:
        return {}

    @property
    def num_landmarks(self) -> int:
        return self.num_landmarks_of(self.config)

    def program_phases(self) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
        return self.phases_for(self.config.k_nearest, self._one_cell_search())

    def program_variant(self) -> str:
        k = self.config.k_nearest
        return "full" if k is None else f"k{k}" + ("_one_cell" if self._one_cell_search() else "")

    def _one_cell_search(self) -> bool:
        return self.config.k_nearest is not None and neighbour_grid(self.num_agents).one_cell

    def single_action_space(self) -> gym.spaces.Space:
        if self.config.continuous_actions:
            return gym.spaces.Box(0.0, 1.0, (NUM_ACTIONS,), np.float32)
        return gym.spaces.Discrete(NUM_ACTIONS)

    def state_arrays(self) -> list[ArraySpec]:
        n, slots = self.num_agents, max(self.num_landmarks, 1)
        grid = [] if self.config.k_nearest is None else neighbour_grid(n).arrays(self.config.k_nearest)
        return [
            *(ArraySpec(name, "agent", torch.float32) for name in ("x", "y", "vx", "vy")),
            ArraySpec("fx", "agent", torch.float32, "scratch"),
            ArraySpec("fy", "agent", torch.float32, "scratch"),
            ArraySpec("lx", "env", torch.float32, "state", (slots,)),
            ArraySpec("ly", "env", torch.float32, "state", (slots,)),
            *(ArraySpec(name, "global", torch.float32, "constant", (n,)) for name in ("size", "accel", "max_speed")),
            ArraySpec("adversary", "global", torch.bool, "constant", (n,)),
            ArraySpec("landmark_size", "global", torch.float32, "constant", (slots,)),
            *grid,
            *self.extra_arrays(),
        ]

    def kernel_params(self) -> dict[str, Any]:
        # derived values and constants only: the config's int/float/bool fields (continuous_actions, ...) are
        # added by the base class
        k = self.config.k_nearest
        return {
            "num_landmarks": self.num_landmarks,
            "agents_collide": self.agents_collide,
            "landmarks_collide": self.landmarks_collide,
            "landmark_range": self.landmark_range,
            "dt": DT,
            "one_minus_damping": 1.0 - DAMPING,
            "contact_force": CONTACT_FORCE,
            "contact_margin": CONTACT_MARGIN,
            "softplus_cutoff": SOFTPLUS_CUTOFF,
            **({} if k is None else neighbour_grid(self.num_agents).params()),
            **self.extra_params(),
        }

    def start_state(self) -> dict[str, np.ndarray]:
        types = self.agent_types()
        landmark_size = np.zeros(max(self.num_landmarks, 1), np.float32)
        landmark_size[:self.num_landmarks] = types.landmark_size
        return {
            "size": np.asarray(types.size, np.float32),
            "accel": np.asarray([DEFAULT_ACCEL if a is None else a for a in types.accel], np.float32),
            "max_speed": np.asarray([np.inf if m is None else m for m in types.max_speed], np.float32),
            "adversary": np.asarray(types.adversary, bool),
            "landmark_size": landmark_size,
        }

    def draw(self, axes: Any, index: int) -> None:
        """Landmarks as grey discs of their size, agents coloured by group, on mpe2's view of [-1.5, 1.5]^2."""
        from warpdrive.core.render import draw_agents_on_plane

        s = self.store
        for j in range(self.num_landmarks):
            centre = (float(s["lx"][index, j]), float(s["ly"][index, j]))
            axes.add_patch(_disc(centre, float(s["landmark_size"][j])))
        draw_agents_on_plane(axes, self, s["x"][index].cpu().numpy(), s["y"][index].cpu().numpy(), 3.0,
                             origin=-1.5)


def _disc(centre: tuple[float, float], radius: float) -> Any:
    from matplotlib.patches import Circle

    return Circle(centre, radius, color="grey", alpha=0.6, zorder=2)


class TwoTeamEnv(MPEEnv):
    """An MPE env of adversaries and good agents: ids ``0 .. num_adversaries - 1`` are the adversaries, the rest the
    good agents (the config's ``num_adversaries`` and ``num_good``)."""

    @classmethod
    def num_agents_of(cls, config: Any) -> int:
        return config.num_adversaries + config.num_good

    @classmethod
    def config_for_agents(cls, num_agents: int) -> dict[str, Any] | None:
        adversaries = max(1, num_agents // 4)
        return {"num_adversaries": adversaries, "num_good": num_agents - adversaries} if num_agents >= 2 else None

    def groups(self) -> dict[str, list[int]]:
        a = self.config.num_adversaries
        return {"adversaries": list(range(a)), "agents": list(range(a, self.num_agents))}
