"""Animations of one episode of a trained policy (GIF or MP4), drawn with matplotlib.

Envs with agents on a plane (arrays ``x`` and ``y`` per agent: Tag-gridworld, Tag-continuous) are drawn as
dots coloured by group; an agent out of the game (``still`` false) is drawn hollow, and a step in which
the runner is tagged (``tagged``) is marked with a star. CartPole and Pendulum are drawn from their state
vector. Any other env falls back to a plot of the return so far of each group.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from warpdrive.core.env import Env
from warpdrive.training.trainer import Trainer

__all__ = ["RENDERERS", "render_episode"]

_COLOURS = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"]

#: ``draw(axes, env, history)`` for one frame of replica 0; ``history`` holds the rewards so far [t, A].
Drawer = Callable[..., None]


def _draw_plane(axes, env: Env, history: list[np.ndarray]) -> None:
    store = env.store
    x = store["x"][0].float().cpu().numpy()
    y = store["y"][0].float().cpu().numpy()
    still = store["still"][0].cpu().numpy() if "still" in store else np.ones_like(x, dtype=bool)
    length = float(getattr(env.config, "grid_length", max(x.max(), y.max(), 1.0)))
    for colour, (group, ids) in zip(_COLOURS, env.groups().items(), strict=False):
        inside = [i for i in ids if still[i]]
        out = [i for i in ids if not still[i]]
        axes.scatter(x[inside], y[inside], s=60, color=colour, label=group, zorder=3)
        if out:
            axes.scatter(x[out], y[out], s=60, facecolors="none", edgecolors=colour, zorder=3)
    if "tagged" in store and bool(store["tagged"][0]):
        runner = env.groups().get("runner", [env.num_agents - 1])[0]
        axes.scatter([x[runner]], [y[runner]], s=400, marker="*", color="gold", edgecolors="black", zorder=4,
                     label="tagged")
    pad = 0.05 * length
    axes.set_xlim(-pad, length + pad)
    axes.set_ylim(-pad, length + pad)
    if not store["x"].is_floating_point():  # a grid: one tick per cell
        axes.set_xticks(range(int(length) + 1))
        axes.set_yticks(range(int(length) + 1))
        axes.grid(alpha=0.3)
    axes.set_aspect("equal")
    axes.legend(loc="upper right", fontsize=8)


def _draw_cartpole(axes, env: Env, history: list[np.ndarray]) -> None:
    x, _, theta, _ = env.store["state"][0].double().cpu().tolist()
    pole = 1.0
    axes.plot([-2.4, 2.4], [0, 0], color="grey")
    axes.add_patch(_rectangle((x - 0.25, -0.1), 0.5, 0.2))
    axes.plot([x, x + pole * math.sin(theta)], [0, pole * math.cos(theta)], color="tab:brown", linewidth=4)
    axes.set_xlim(-2.6, 2.6)
    axes.set_ylim(-0.5, 1.5)
    axes.set_aspect("equal")


def _draw_pendulum(axes, env: Env, history: list[np.ndarray]) -> None:
    theta = float(env.store["state"][0, 0])
    axes.plot([0, math.sin(theta)], [0, math.cos(theta)], color="tab:red", linewidth=6)
    axes.scatter([0], [0], color="black", zorder=3)
    axes.set_xlim(-1.2, 1.2)
    axes.set_ylim(-1.2, 1.2)
    axes.set_aspect("equal")


def _draw_returns(axes, env: Env, history: list[np.ndarray]) -> None:
    rewards = np.stack(history) if history else np.zeros((0, env.num_agents))
    for colour, (group, ids) in zip(_COLOURS, env.groups().items(), strict=False):
        axes.plot(np.cumsum(rewards[:, ids].mean(1)) if len(rewards) else [], color=colour, label=group)
    axes.set_xlim(0, env.config.episode_length)
    axes.set_xlabel("step")
    axes.set_ylabel("return so far")
    axes.legend(loc="upper left", fontsize=8)


def _rectangle(xy: tuple[float, float], width: float, height: float):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, color="tab:blue")


#: env name -> frame drawer; envs not listed get a plane drawing if they have ``x``/``y``, else returns.
RENDERERS: dict[str, Drawer] = {
    "tag_gridworld": _draw_plane,
    "tag_continuous": _draw_plane,
    "cartpole": _draw_cartpole,
    "pendulum": _draw_pendulum,
}


def _drawer(env: Env) -> Drawer:
    if env.name in RENDERERS:
        return RENDERERS[env.name]
    if "x" in env.store and "y" in env.store and env.store.specs["x"].per == "agent":
        return _draw_plane
    return _draw_returns


def render_episode(trainer: Trainer, out: str | Path, *, deterministic: bool = False, fps: int = 10,
                   seed: int | None = None) -> Path:
    """Play one episode of replica 0 with the trainer's policies and write it to ``out`` (.gif or .mp4).

    Steps use ``env.step_without_reset()``, so the last frame shows how the episode ended.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"the output must end in .gif or .mp4, got {out.name!r}")
    env = trainer.env
    env.reset(seed=trainer.config.seed if seed is None else seed)
    draw = _drawer(env)
    figure = Figure(figsize=(5, 5), dpi=80)
    canvas = FigureCanvasAgg(figure)
    history: list[np.ndarray] = []
    frames = []

    def frame(step: int) -> None:
        figure.clear()
        axes = figure.add_subplot()
        draw(axes, env, history)
        total = ", ".join(f"{g} {sum(r[ids].mean() for r in history):.2f}" for g, ids in env.groups().items())
        axes.set_title(f"{env.name}  t={step}  return: {total}", fontsize=9)
        canvas.draw()
        frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())

    frame(0)
    with torch.no_grad():
        for step in range(1, env.config.episode_length + 1):
            trainer.act(deterministic=deterministic)
            env.step_without_reset()
            history.append(env.store["rewards"][0].cpu().numpy().copy())  # the store's tensor changes in place
            frame(step)
            if bool(env.store["done"][0]):
                break

    import imageio.v3 as iio

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        iio.imwrite(out, np.stack(frames), duration=1000 / fps, loop=0)
    else:
        try:
            iio.imwrite(out, np.stack(frames), fps=fps, codec="libx264")
        except Exception as err:  # imageio raises plugin-specific errors when no video backend is installed
            raise RuntimeError(f"writing {out.name} needs a video backend for imageio (pip install imageio-ffmpeg "
                               f"or av); .gif needs none ({err})") from err
    return out
