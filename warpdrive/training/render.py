"""Animations of one episode (GIF or MP4), of a trained policy or of uniformly random actions: each frame is
the env's own picture (:meth:`warpdrive.core.env.Env.render`, drawn by the env's ``draw`` hook)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from warpdrive.core.env import Env
from warpdrive.training.trainer import Trainer

__all__ = ["output_path", "render_episode", "render_random_episode"]


def output_path(out: str | Path) -> Path:
    """``out`` as a path, checked to be a file name that :func:`render_episode` can write (.gif or .mp4).

    Raises:
        ValueError: another suffix, or .mp4 without a video backend for imageio (checked before any episode is
            played).
    """
    out = Path(out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"the output must end in .gif or .mp4, got {out.name!r}")
    if out.suffix.lower() == ".mp4" and not any(importlib.util.find_spec(m) for m in ("imageio_ffmpeg", "av")):
        raise ValueError(f"writing {out.name} needs a video backend for imageio (pip install imageio-ffmpeg or av); "
                         ".gif needs none")
    return out


def render_episode(trainer: Trainer, out: str | Path, *, deterministic: bool = False, fps: int = 10,
                   seed: int | None = None) -> Path:
    """Play one episode of replica 0 with the trainer's policies and write it to ``out`` (.gif or .mp4).

    Steps use ``env.step_without_reset()``, so the last frame shows how the episode ended.
    """
    out = output_path(out)  # before the episode is played
    return _write(_play(trainer.env, lambda: trainer.act(deterministic=deterministic),
                        trainer.config.seed if seed is None else seed), out, fps)


def render_random_episode(env: Env, out: str | Path, *, fps: int = 10, seed: int = 0) -> Path:
    """Play one episode of replica 0 of ``env`` with uniformly random actions (among the allowed ones where
    the env masks actions) and write it to ``out`` (.gif or .mp4): what an env looks like before training."""
    out = output_path(out)  # before the episode is played
    generator = torch.Generator(env.device).manual_seed(seed)
    return _write(_play(env, lambda: env.sample_actions(generator), seed), out, fps)


def _play(env: Env, act: Callable[[], object], seed: int) -> list[np.ndarray]:
    """The frames of replica 0's episode from ``env.reset(seed=seed)``, ``act()`` writing each step's actions."""
    env.reset(seed=seed)
    frames = [env.render(0)]
    with torch.no_grad():
        for _ in range(env.config.episode_length):
            act()
            env.step_without_reset()
            frames.append(env.render(0))
            if bool(env.store["done"][0]):
                break
    return frames


def _write(frames: list[np.ndarray], out: Path, fps: int) -> Path:
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
