"""Animations of one episode of a trained policy (GIF or MP4): each frame is the env's own picture
(:meth:`warpdrive.core.env.Env.render`, drawn by the env's ``draw`` hook)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from warpdrive.training.trainer import Trainer

__all__ = ["output_path", "render_episode"]


def output_path(out: str | Path) -> Path:
    """``out`` as a path, checked to be a file name that :func:`render_episode` can write (.gif or .mp4).

    Raises:
        ValueError: another suffix.
    """
    out = Path(out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"the output must end in .gif or .mp4, got {out.name!r}")
    return out


def render_episode(trainer: Trainer, out: str | Path, *, deterministic: bool = False, fps: int = 10,
                   seed: int | None = None) -> Path:
    """Play one episode of replica 0 with the trainer's policies and write it to ``out`` (.gif or .mp4).

    Steps use ``env.step_without_reset()``, so the last frame shows how the episode ended.
    """
    out = output_path(out)
    env = trainer.env
    env.reset(seed=trainer.config.seed if seed is None else seed)
    frames = [env.render(0)]
    with torch.no_grad():
        for _ in range(env.config.episode_length):
            trainer.act(deterministic=deterministic)
            env.step_without_reset()
            frames.append(env.render(0))
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
