"""Pictures of an env's state, drawn with matplotlib: the helpers behind :meth:`Env.render` and env ``draw`` hooks.

An env draws itself in its own ``draw(axes, index)`` (see :meth:`warpdrive.core.env.Env.draw`); these helpers
are what envs with agents on a plane share (:func:`draw_agents_on_plane`), and what the base class uses to turn a
drawing into an RGB array (:func:`rgb_frame`) and to draw an env without a picture of its own
(:func:`draw_returns`). matplotlib is imported only when something is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from warpdrive.core.env import Env

__all__ = ["COLOURS", "draw_agents_on_plane", "draw_returns", "rgb_frame"]

#: one colour per agent group, in the order of ``env.groups()``
COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def rgb_frame(draw: Callable[[Any], None], title: str, size: tuple[int, int] = (400, 400)) -> np.ndarray:
    """Call ``draw(axes)`` on a fresh figure of ``size`` (width, height) pixels and return it as an RGB array
    [height, width, 3] uint8 (no window: matplotlib's Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 80
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    draw(axes)
    axes.set_title(title, fontsize=9)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def draw_agents_on_plane(axes: Any, env: Env, x: np.ndarray, y: np.ndarray, extent: float, *,
                         grid: bool = False, out: Sequence[bool] | np.ndarray | None = None,
                         marked: int | None = None, origin: float = 0.0) -> None:
    """Agents as dots coloured by group on the square ``[origin, origin + extent]``.

    Args:
        x, y: positions of one replica's agents [A].
        origin: lower corner of the square on both axes.
        grid: an integer grid: one tick per cell.
        out: [A] True for agents out of the game (drawn hollow).
        marked: an agent to mark with a star (e.g. a runner just tagged).
    """
    out_of_game = np.zeros(len(x), dtype=bool) if out is None else np.asarray(out, dtype=bool)
    for colour, (group, ids) in zip(COLOURS, env.groups().items(), strict=False):
        inside = [i for i in ids if not out_of_game[i]]
        gone = [i for i in ids if out_of_game[i]]
        axes.scatter(x[inside], y[inside], s=60, color=colour, label=group, zorder=3)
        if gone:
            axes.scatter(x[gone], y[gone], s=60, facecolors="none", edgecolors=colour, zorder=3)
    if marked is not None:
        axes.scatter([x[marked]], [y[marked]], s=400, marker="*", color="gold", edgecolors="black", zorder=4,
                     label="tagged")
    pad = 0.05 * extent
    axes.set_xlim(origin - pad, origin + extent + pad)
    axes.set_ylim(origin - pad, origin + extent + pad)
    if grid:
        axes.set_xticks(range(int(extent) + 1))
        axes.set_yticks(range(int(extent) + 1))
        axes.grid(alpha=0.3)
    axes.set_aspect("equal")
    axes.legend(loc="upper right", fontsize=8)


def draw_returns(axes: Any, env: Env, index: int) -> None:
    """Each group's mean return so far in replica ``index``, as bars: the picture of an env without one."""
    returns = env.store["episode_return"][index].float().cpu().numpy()
    groups = env.groups()
    axes.bar(list(groups), [float(returns[ids].mean()) for ids in groups.values()],
             color=[COLOURS[i % len(COLOURS)] for i in range(len(groups))])
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_ylabel("return so far")
