"""Neighbour search for particle envs: a uniform grid per env, rebuilt every step, and the exact k nearest.

Any env whose agents have 2D positions in arrays ``s.x`` and ``s.y`` (shape [E, N], float32) can use it:

1. Declare the scratch arrays (:meth:`NeighbourGrid.arrays`) and parameters (:meth:`NeighbourGrid.params`).
2. Each step (and at reset), once per env, call :func:`begin_grid` with the number of agents that take part
   (``included``) before any agent is counted; then every agent calls :func:`count_into_cell` after its
   position is final (in the same phase as the move: it needs no barrier).
3. Run the grid's :meth:`NeighbourGrid.build_phases` (a prefix sum of the cell counts and a scatter): afterwards
   the agents that take part are sorted by cell, with copies of their positions (``s.cell_agent``,
   ``s.cell_x``, ``s.cell_y``; cell ``c`` holds positions ``s.cell_start[env, c]`` to
   ``s.cell_start[env, c + 1] - 1``), followed by the agents that do not take part.
4. Query it: :func:`k_nearest_phases` visit the k nearest others of every agent (nearest first, lower id on
   equal distance: the order of a stable sort of float32 distances over ids), and :func:`cell_range` gives
   the cells that a disc overlaps, for searches within a radius.

The grid covers the square ``[origin, origin + side_length]``; positions outside it fall into its border
cells (exact, only slower). Its number of cells per side is fixed (``cells_per_side``) or, with
``adaptive=True``, chosen each step per env from the agents taking part (about ``agents_per_cell`` a cell);
:func:`automatic_grid` is the choice envs make by default (Tag-continuous, the MPE envs).
A grid of one cell is a scan of all agents: the cheapest below a few hundred agents.

The k-best list lives in registers on the GPU (``local_array`` of k 64-bit keys ``distance bits << 32 | id``,
whose integer order is the (distance, id) order for distances >= 0), so k is a compile-time constant: one
compiled program per k. With ``search_lanes`` > 1, that many threads share each agent's search (each scans
every ``search_lanes``-th agent of each span and keeps its own list; the lists are merged): more threads per
step where an env has few agents. The nearest k are the same for any number of lanes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from warpdrive.core.compile import Phase, per_agent, per_env, per_index
from warpdrive.core.device import atomic_add, bits_float, float_bits, kernel_function, local_array
from warpdrive.core.store import ArraySpec

__all__ = ["NeighbourGrid", "automatic_grid", "begin_grid", "cell_range", "count_into_cell", "distance",
           "grid_build_phases", "k_nearest_phases", "squared_distance"]

#: below this many agents the automatic grid has one cell: a scan of all agents measured faster (H100)
AUTOMATIC_MIN_AGENTS = 192
#: agents per cell the automatic adaptive grid aims at (the k-nearest search then visits about 9 cells)
AUTOMATIC_AGENTS_PER_CELL = 3.0
#: the automatic grid's largest size: cells per side
AUTOMATIC_MAX_CELLS_PER_SIDE = 64
#: the most threads that share one agent's search (the merge reads every lane's list)
MAX_SEARCH_LANES = 32

_ZERO = np.float32(0.0)
_INF = np.float32(np.inf)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_SHIFT = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class NeighbourGrid:
    """The grid of one env class: its size and how it adapts.

    Args:
        side_length: side of the square the grid covers (e.g. the arena's side).
        cells_per_side: cells per side, the most an adaptive grid uses (>= 1).
        adaptive: size the grid each step to about ``agents_per_cell`` agents per cell.
        agents_per_cell: target occupancy of an adaptive grid.
        origin: lower corner of the square, on both axes.
        search_lanes: threads that share one agent's k-nearest search (see the module docstring): pass the same
            to :func:`k_nearest_phases`, and give the env's launch that many threads per agent
            (:meth:`~warpdrive.core.env.Env.threads_per_agent`). A speed knob for envs of few agents; measured on
            an H200 it did not help reliably (benchmarks/RESULTS.md).
    """

    side_length: float
    cells_per_side: int
    adaptive: bool = False
    agents_per_cell: float = 3.0
    origin: float = 0.0
    search_lanes: int = 1

    def __post_init__(self) -> None:
        _check_search_lanes(self.search_lanes)

    def arrays(self, k: int = 0) -> list[ArraySpec]:
        """Scratch arrays (E envs, N agents, G cells per side; one more cell for the agents left out; ``k``: the
        list length of the env's :func:`k_nearest_phases`, 0 without them):

        ==========================================  ==============  =========  =================================
        name                                        shape           dtype      meaning
        ==========================================  ==============  =========  =================================
        ``grid_side``                               [E]             int32      this step's cells per side
        ``cell_size``, ``inv_cell_size``            [E]             float32    its cell side and inverse
        ``cell_count``                              [E, G*G + 1]    int32      agents per cell (zero between steps)
        ``cell_start``                              [E, G*G + 2]    int32      first position of each cell
        ``row_start``                               [E, G]          int32      first position of each row of cells
        ``cell_agent``, ``cell_x``, ``cell_y``      [E, N]          i32/f32    agents by cell, with their position
        ``agent_cell``, ``agent_slot``              [E, N]          int32      each agent's cell and rank in it
        ``nearest``                                 [E, N, L, k]    int32      the k nearest that each of the L
                                                                               search lanes found for the agent at
                                                                               each position (ids, -1: none; after
                                                                               the merge, lane 0's are all lanes'
                                                                               k nearest; L = ``search_lanes``)
        ``nearest_distance``                        [E, N, L, k]    int32      their distances' float32 bits (only
                                                                               with L > 1, to merge by)
        ==========================================  ==============  =========  =================================
        """
        g = self.cells_per_side
        return [
            ArraySpec("grid_side", "env", torch.int32, "scratch"),
            ArraySpec("cell_size", "env", torch.float32, "scratch"),
            ArraySpec("inv_cell_size", "env", torch.float32, "scratch"),
            ArraySpec("cell_count", "env", torch.int32, "scratch", (g * g + 1,)),
            ArraySpec("cell_start", "env", torch.int32, "scratch", (g * g + 2,)),
            ArraySpec("row_start", "env", torch.int32, "scratch", (g,)),
            ArraySpec("cell_agent", "agent", torch.int32, "scratch"),
            ArraySpec("cell_x", "agent", torch.float32, "scratch"),
            ArraySpec("cell_y", "agent", torch.float32, "scratch"),
            ArraySpec("agent_cell", "agent", torch.int32, "scratch"),
            ArraySpec("agent_slot", "agent", torch.int32, "scratch"),
            *([ArraySpec("nearest", "agent", torch.int32, "scratch", (self.search_lanes, k)),
               ArraySpec("nearest_distance", "agent", torch.int32, "scratch", (self.search_lanes, k))] if k else []),
        ]

    def params(self) -> dict[str, Any]:
        """Kernel parameters (``p.grid_*``)."""
        length = np.float32(self.side_length)
        return {
            "grid_max_side": self.cells_per_side,
            "grid_adaptive": self.adaptive,
            "grid_inv_agents_per_cell": np.float32(1.0 / self.agents_per_cell),
            "grid_side_length": length,
            "grid_origin": np.float32(self.origin),
            # float32 rounding in cell assignment and distances is a few ulps of the side; this is far above it
            "grid_search_margin": np.float32(1e-5 * float(length)),
        }

    @property
    def one_cell(self) -> bool:
        """The grid has one cell at every step (its search is a scan of all agents taking part)."""
        return self.cells_per_side == 1

    def build_phases(self) -> tuple[Phase, ...]:
        """:func:`grid_build_phases` for this grid."""
        return grid_build_phases(self.one_cell)

    def k_nearest_phases(self, k: int, visit: Callable[..., Any]) -> tuple[Phase, ...]:
        """:func:`k_nearest_phases` for this grid (its search lanes, and the plain scan if it has one cell)."""
        return k_nearest_phases(k, visit, self.search_lanes, self.one_cell)


def adaptive_cells_per_side(num_agents: int, agents_per_cell: float = 3.0, largest: int = 64) -> int:
    """Cells per side for about ``agents_per_cell`` agents per cell, at most ``largest``."""
    return max(1, min(largest, int(math.sqrt(num_agents / agents_per_cell))))


def automatic_grid(side_length: float, num_agents: int, origin: float = 0.0) -> NeighbourGrid:
    """The grid an env gets unless it chooses one: one cell (a scan of all agents: the cheapest for few agents)
    below :data:`AUTOMATIC_MIN_AGENTS` agents, else adaptive, about :data:`AUTOMATIC_AGENTS_PER_CELL` agents a
    cell and at most :data:`AUTOMATIC_MAX_CELLS_PER_SIDE` cells a side."""
    if num_agents < AUTOMATIC_MIN_AGENTS:
        return NeighbourGrid(side_length, 1, origin=origin)
    side = adaptive_cells_per_side(num_agents, AUTOMATIC_AGENTS_PER_CELL, AUTOMATIC_MAX_CELLS_PER_SIDE)
    return NeighbourGrid(side_length, side, adaptive=True, agents_per_cell=AUTOMATIC_AGENTS_PER_CELL, origin=origin)


# --------------------------------------------------------------------------------------------------
# building the grid


@kernel_function
def squared_distance(ax, ay, bx, by):
    """The float32 sum of float32 squares that :func:`distance` takes the root of."""
    dx = ax - bx
    dy = ay - by
    return dx * dx + dy * dy


@kernel_function
def distance(ax, ay, bx, by):
    """Euclidean distance in float32 (``sqrt`` of the float32 sum of float32 squares)."""
    return np.float32(math.sqrt(squared_distance(ax, ay, bx, by)))


@kernel_function
def _squared_reach(d):
    """A float32 above every float32 ``q`` whose square root rounds to ``d`` or less (``d`` >= 0, not NaN).

    A correctly rounded root ``sqrt(q) <= d`` needs ``q <= (d + ulp(d) / 2) ** 2 <= d * d * (1 + 2 ** -22)``;
    the factor 1.00001 is far above that and above the rounding of the two products; the floor keeps the bound
    out of the subnormal range, where relative rounding no longer holds.
    """
    return max(d * d * np.float32(1.00001), np.float32(1e-30))


@kernel_function
def _cell_coord(v, p, inv_cell, side):
    """Cell index along one axis (clamped to the grid; monotonic in ``v``)."""
    return min(int(max(v - p.grid_origin, _ZERO) * inv_cell), side - 1)


@kernel_function
def begin_grid(env, included, p, s):
    """Size this step's grid for ``included`` agents (once per env, before :func:`count_into_cell`).

    The cell counts are then zero: they start at zero, the prefix sum zeroes each count it reads, and a grid of
    one cell (whose build has no prefix sum) zeroes its two counts here.
    """
    side = p.grid_max_side
    if p.grid_adaptive:
        side = max(1, min(side, int(math.sqrt(np.float32(included) * p.grid_inv_agents_per_cell))))
    s.grid_side[env] = side
    s.cell_size[env] = p.grid_side_length / np.float32(side)
    s.inv_cell_size[env] = np.float32(side) / p.grid_side_length
    if p.grid_max_side == 1:  # the one-cell build reads the counts without a prefix sum to zero them
        s.cell_count[env, 0] = 0
        s.cell_count[env, 1] = 0


@kernel_function
def count_into_cell(env, agent, included, p, s):
    """Count ``agent`` (at ``s.x``, ``s.y``) into its cell, or into the bucket after the last cell when it
    does not take part; its rank in the cell is the count before it (atomic: any order, same cells)."""
    side = s.grid_side[env]
    cell = side * side
    if included:
        inv_cell = s.inv_cell_size[env]
        cell = _cell_coord(s.y[env, agent], p, inv_cell, side) * side + _cell_coord(s.x[env, agent], p, inv_cell,
                                                                                    side)
    s.agent_cell[env, agent] = cell
    s.agent_slot[env, agent] = atomic_add(s.cell_count, (env, cell), np.int32(1))


@kernel_function
def _row_count(p, s):
    return p.grid_max_side


@kernel_function
def _sum_row(env, row, p, s):
    """Agents per row of cells (the prefix sum runs by rows: no thread walks every cell)."""
    side = s.grid_side[env]
    if row < side:
        total = 0
        for cell in range(row * side, (row + 1) * side):
            total += s.cell_count[env, cell]
        s.row_start[env, row] = total


@kernel_function
def _scan_rows(env, p, s):
    """Row totals -> first position of each row; the agents left out go after all cells."""
    side = s.grid_side[env]
    running = 0
    for row in range(side):
        total = s.row_start[env, row]
        s.row_start[env, row] = running
        running += total
    cells = side * side
    s.cell_start[env, cells] = running
    s.cell_start[env, cells + 1] = running + s.cell_count[env, cells]
    s.cell_count[env, cells] = 0


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
    """Each agent to its cell's slot, with a copy of its position (contiguous per cell)."""
    pos = s.cell_start[env, s.agent_cell[env, agent]] + s.agent_slot[env, agent]
    s.cell_agent[env, pos] = agent
    s.cell_x[env, pos] = s.x[env, agent]
    s.cell_y[env, pos] = s.y[env, agent]


_BUILD_PHASES = (
    per_index(_sum_row, _row_count),
    per_env(_scan_rows),
    per_index(_scan_row_cells, _row_count),
    per_agent(_scatter),
)


@kernel_function
def _scatter_one_cell(env, agent, p, s):
    """:func:`_scatter` for a grid of one cell: the agents taking part first (cell 0), then the others (the
    bucket after it); the cell starts follow from the count of cell 0 alone."""
    taking_part = s.cell_count[env, 0]
    pos = s.agent_slot[env, agent] + (taking_part if s.agent_cell[env, agent] != 0 else 0)
    s.cell_agent[env, pos] = agent
    s.cell_x[env, pos] = s.x[env, agent]
    s.cell_y[env, pos] = s.y[env, agent]
    if agent == 0:
        s.cell_start[env, 0] = 0
        s.cell_start[env, 1] = taking_part
        s.cell_start[env, 2] = p.num_agents


_ONE_CELL_BUILD_PHASES = (per_agent(_scatter_one_cell),)


def grid_build_phases(one_cell: bool) -> tuple[Phase, ...]:
    """The phases that sort the counted agents by cell (run after every agent was counted): a prefix sum of the
    cell counts and a scatter, or for a grid of one cell (``one_cell``) the scatter alone, without the prefix
    sum's barriers. The two differ in code: an env's program variant names which one it runs."""
    return _ONE_CELL_BUILD_PHASES if one_cell else _BUILD_PHASES


@kernel_function
def cell_range(env, x, y, reach, p, s):
    """``(x0, x1, y0, y1)``: the inclusive ranges of cell coordinates that the disc of radius ``reach``
    around ``(x, y)`` overlaps (add ``p.grid_search_margin`` to ``reach`` to cover float32 rounding).

    Cell ``(gx, gy)`` is ``gy * s.grid_side[env] + gx``."""
    side = s.grid_side[env]
    inv_cell = s.inv_cell_size[env]
    return (_cell_coord(x - reach, p, inv_cell, side), _cell_coord(x + reach, p, inv_cell, side),
            _cell_coord(y - reach, p, inv_cell, side), _cell_coord(y + reach, p, inv_cell, side))


# --------------------------------------------------------------------------------------------------
# k nearest


def _check_search_lanes(search_lanes: Any) -> None:
    if not isinstance(search_lanes, int) or not 1 <= search_lanes <= MAX_SEARCH_LANES:
        raise ValueError(f"search_lanes must be an integer in [1, {MAX_SEARCH_LANES}], got {search_lanes!r}")


@kernel_function
def _key_id(key):
    """The agent id of a k-best key (-1 for an empty slot)."""
    return np.int32(key & _LOW) if key != _EMPTY else np.int32(-1)


@cache
def k_nearest_phases(k: int, visit: Callable[..., Any], search_lanes: int = 1,
                     one_cell: bool = False) -> tuple[Phase, ...]:
    """Phases that call ``visit(env, agent, slot, other, p, s)`` for ``slot`` in ``range(k)`` for every
    agent: ``other`` is the id of its ``slot``-th nearest other agent that takes part (by distance, then
    id), or -1 where fewer remain and for every slot of an agent that does not take part. The env declares
    ``NeighbourGrid.arrays(k)`` of a grid with these ``search_lanes``: the first phase runs the search, one
    index per (agent, search lane), and keeps each lane's list there (``s.nearest``); with several lanes a
    second merges each agent's lists; the last calls ``visit`` once per (agent, slot) pair, in any order.

    The search visits the 3 x 3 cells around the agent's cell, then rings of cells outward until the k-th
    best is provably nearer than any unvisited cell; it walks each ring as row spans (contiguous agents),
    skips the spans that lie wholly beyond the k-th best so far, and takes the square root only of squared
    distances that may enter the list (the result is the same as a search without either shortcut, to the
    bit). A lane stops by its own list's k-th distance, at or beyond the whole search's: each lane's list
    holds every one of the k nearest that the lane scans, so the merged lists give them all. Agents are
    searched in cell order (threads of a warp search nearby, alike), and ``visit`` may run for the pairs of
    one agent in different threads, so it should write only what belongs to ``(agent, slot)``.

    ``one_cell``: the grid has one cell at every step (:attr:`NeighbourGrid.one_cell`; a grid that may have more
    needs False), and the search is a plain scan of every agent taking part, which loads each candidate one
    ahead (the same lists, fewer stalls). :meth:`NeighbourGrid.k_nearest_phases` passes the grid's own.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    _check_search_lanes(search_lanes)
    K = k  # compile-time constants of the closure: the k-best list's size,
    LANES = search_lanes  # the threads that share one agent's search,
    ONE_CELL = bool(one_cell)  # and a grid of one cell (a plain scan)

    @kernel_function
    def clear(best):
        for q in range(K):
            best[q] = _EMPTY

    @kernel_function
    def insert(key, best):
        # a sorted insertion as a min/max network with constant indices: branch-free, registers only
        for q in range(K - 1, 0, -1):
            best[q] = max(best[q - 1], min(key, best[q]))
        best[0] = min(key, best[0])

    @kernel_function
    def worst_distance(best):
        """The k-th best distance so far (infinite until k candidates were seen)."""
        worst = best[K - 1]
        return _INF if worst == _EMPTY else bits_float(np.uint32(worst >> _SHIFT))

    @kernel_function
    def enter(q, other, best):
        """Insert agent ``other`` at squared distance ``q`` (at most the reach) into the list; returns the new
        reach (the root is taken only where the candidate may enter: sqrt is monotonic, so a square above the
        reach of the k-th distance has a root above it, and the same keys enter as with every root taken)."""
        # a key at or above the k-th best leaves the list unchanged: no test before the insertion
        insert((np.uint64(float_bits(np.float32(math.sqrt(q)))) << _SHIFT) | np.uint64(other), best)
        return _squared_reach(worst_distance(best))

    @kernel_function
    def offer(env, pos_self, pos, x, y, reach, best, s):
        """Offer the agent at ``pos`` to the list; returns the new reach (its id is read only if it enters)."""
        q = squared_distance(x, y, s.cell_x[env, pos], s.cell_y[env, pos])
        if q <= reach and pos != pos_self:
            reach = enter(q, s.cell_agent[env, pos], best)
        return reach

    @kernel_function
    def edge(g, size):
        """Lower border of column (or row) ``g`` in the grid's coordinates; column 0 reaches beyond the grid
        (the border columns hold the agents outside it)."""
        return np.float32(g) * size if g > 0 else -_INF

    @kernel_function
    def gap(g0, g1, v, size, side):
        """How far coordinate ``v`` is from the cells of columns (or rows) ``g0..g1``: 0 inside."""
        lo = edge(g0, size)
        hi = edge(g1 + 1, size) if g1 < side - 1 else _INF
        return max(max(lo - v, v - hi), _ZERO)

    @kernel_function
    def span(level, j, cx, cy, lx, ly, far, size, side):
        """The ``j``-th row span of the cells that search level ``level`` adds (level 1: the 3 x 3 block
        around the agent's cell, 3 spans; level d > 1: the ring at distance d, 4d spans: its top and bottom
        rows and its two side cells in every row between), as ``(first cell, last cell)`` of one row (their
        agents are contiguous); ``(0, -1)`` where the span is off the grid or wholly beyond ``far``."""
        if level == 1:
            row = cy - 1 + j
            g0 = cx - 1
            g1 = cx + 1
        elif j < 2:
            row = cy - level if j == 0 else cy + level
            g0 = cx - level
            g1 = cx + level
        else:
            row = cy - level + 1 + (j - 2) // 2
            g0 = cx - level if j % 2 == 0 else cx + level
            g1 = g0
        g0 = max(g0, 0)
        g1 = min(g1, side - 1)
        if row < 0 or row >= side or g0 > g1:
            return 0, -1
        gx = gap(g0, g1, lx, size, side)
        gy = gap(row, row, ly, size, side)
        if gx * gx + gy * gy > far * far:
            return 0, -1
        return row * side + g0, row * side + g1

    @kernel_function
    def search(env, pos_self, lane, lanes, best, p, s):
        side = s.grid_side[env]
        size = s.cell_size[env]
        x = s.cell_x[env, pos_self]
        y = s.cell_y[env, pos_self]
        inv_cell = s.inv_cell_size[env]
        cx = _cell_coord(x, p, inv_cell, side)
        cy = _cell_coord(y, p, inv_cell, side)
        # cell borders in the grid's own coordinates
        lx = x - p.grid_origin
        ly = y - p.grid_origin
        margin = p.grid_search_margin
        reach = _INF
        level = 1
        while True:
            # The level's spans as one flat loop over their agents: the threads of a warp (nearby agents)
            # then run about as many iterations as the busiest of them, not the busiest cell of each span.
            spans = 3 if level == 1 else 4 * level
            j = 0
            pos = 0
            end = 0
            while True:
                while pos >= end and j < spans:
                    # spans wholly beyond the k-th distance so far (with a margin for rounding) are skipped
                    first, last = span(level, j, cx, cy, lx, ly, worst_distance(best) + margin, size, side)
                    j += 1
                    if first <= last:
                        pos = s.cell_start[env, first] + lane  # this lane's share: every lanes-th agent
                        end = s.cell_start[env, last + 1]
                if pos >= end:
                    break
                reach = offer(env, pos_self, pos, x, y, reach, best, s)
                pos += lanes
            # every unvisited agent lies beyond the nearest side of the visited square that is not the grid's
            # border (agents outside the grid are in border cells)
            bound = _INF
            if cx - level > 0:
                bound = min(bound, lx - np.float32(cx - level) * size)
            if cx + level < side - 1:
                bound = min(bound, np.float32(cx + level + 1) * size - lx)
            if cy - level > 0:
                bound = min(bound, ly - np.float32(cy - level) * size)
            if cy + level < side - 1:
                bound = min(bound, np.float32(cy + level + 1) * size - ly)
            if bound == _INF or worst_distance(best) < bound - margin:
                return
            level += 1

    @kernel_function
    def scan(env, pos_self, lane, lanes, best, p, s):
        """:func:`search` in a grid of one cell: every agent taking part is a candidate. Each candidate's
        position and id are loaded one candidate ahead, so that those loads overlap the previous candidate's
        arithmetic rather than stall it."""
        x = s.cell_x[env, pos_self]
        y = s.cell_y[env, pos_self]
        end = s.cell_start[env, 1]
        reach = _INF
        pos = lane
        if pos >= end:
            return
        other_x = s.cell_x[env, pos]
        other_y = s.cell_y[env, pos]
        other = s.cell_agent[env, pos]
        while True:
            after = pos + lanes
            next_x = other_x
            next_y = other_y
            next_other = other
            if after < end:
                next_x = s.cell_x[env, after]
                next_y = s.cell_y[env, after]
                next_other = s.cell_agent[env, after]
            q = squared_distance(x, y, other_x, other_y)
            if q <= reach and pos != pos_self:
                reach = enter(q, other, best)
            if after >= end:
                return
            pos = after
            other_x = next_x
            other_y = next_y
            other = next_other

    @kernel_function
    def search_count(p, s):
        return p.num_agents * LANES

    @kernel_function
    def k_nearest(env, index, p, s):
        # consecutive threads take the lanes of one agent: they read consecutive positions of each span
        pos = index // LANES
        lane = index - pos * LANES
        best = local_array(K, np.uint64)
        clear(best)
        side = s.grid_side[env]
        if pos < s.cell_start[env, side * side]:  # the agents left out come after every cell
            if ONE_CELL:
                scan(env, pos, lane, LANES, best, p, s)
            else:
                search(env, pos, lane, LANES, best, p, s)
        # ids, and the distances only where lists are merged (the ids of neighbouring agents stay contiguous)
        for q in range(K):
            key = best[q]
            s.nearest[env, pos, lane, q] = _key_id(key)
            if LANES > 1:
                s.nearest_distance[env, pos, lane, q] = np.int32(key >> _SHIFT)  # float32 bits >= 0: below 2**31

    @kernel_function
    def agent_count(p, s):
        return p.num_agents

    @kernel_function
    def merge(env, pos, p, s):
        """The lanes' lists of the agent at ``pos`` (each sorted) -> its k best, into lane 0's ids."""
        best = local_array(K, np.uint64)
        clear(best)
        for lane in range(LANES):
            for q in range(K):
                other = s.nearest[env, pos, lane, q]
                if other < 0:
                    break  # the list ends here
                key = (np.uint64(s.nearest_distance[env, pos, lane, q]) << _SHIFT) | np.uint64(other)
                if key >= best[K - 1]:
                    break  # the rest of this sorted list cannot enter
                insert(key, best)
        for q in range(K):
            s.nearest[env, pos, 0, q] = _key_id(best[q])

    @kernel_function
    def pair_count(p, s):
        return p.num_agents * K

    @kernel_function
    def visit_pair(env, index, p, s):
        # consecutive threads take consecutive slots of one agent: an observation laid out slot-fastest is
        # then written in runs of k consecutive values (nearly coalesced)
        pos = index // K
        slot = index - pos * K
        visit(env, s.cell_agent[env, pos], slot, s.nearest[env, pos, 0, slot], p, s)

    # what NeighbourGrid.arrays(k) declares for these lanes: Env construction checks it
    needs = (("nearest", (LANES, K)), ("nearest_distance", (LANES, K)))
    merged = (per_index(merge, agent_count, needs),) if LANES > 1 else ()  # one lane: no barrier for a merge
    return (per_index(k_nearest, search_count, needs), *merged, per_index(visit_pair, pair_count, needs))
