"""Adapters: warpdrive envs as the env types of other RL libraries.

- :mod:`warpdrive.adapters.gymnasium`: a ``gymnasium.vector.VectorEnv`` for single-agent envs, and
  ``warpdrive/<Gymnasium id>`` ids of the classic-control envs for ``gymnasium.make_vec``;
- :mod:`warpdrive.adapters.sb3`: a Stable-Baselines3 ``VecEnv`` for single-agent envs;
- :mod:`warpdrive.adapters.pettingzoo`: a PettingZoo ``ParallelEnv`` of one replica of any env;
- :mod:`warpdrive.adapters.torchrl`: a TorchRL ``EnvBase`` over the whole batch, agent groups as nested keys.

Each module imports its library when it is itself imported: warpdrive depends on none of them (Gymnasium
aside, which it always uses). Nothing is imported or registered by importing this package.
"""

from __future__ import annotations

import torch

from warpdrive.core.env import Env


def share_cpu_with_numba(env: Env, torch_threads: int | None) -> None:
    """Give PyTorch ``torch_threads`` intra-op threads when ``env`` runs on the CPU (``None``: leave it).

    On the CPU the env's kernels run on Numba's worker threads, one per core, and a library's policy runs
    on PyTorch's pool, also one thread per core by default. The two pools then compete for the same cores,
    and each waits for the other's preempted threads: a user found Stable-Baselines3 on a warpdrive env
    6x slower with PyTorch's default thread count than with one thread. The adapters therefore default to
    one PyTorch thread beside Numba's workers. ``torch.set_num_threads`` is process-wide.
    """
    if torch_threads is None:
        return
    if not isinstance(torch_threads, int) or isinstance(torch_threads, bool) or torch_threads < 1:
        raise ValueError(f"torch_threads must be an integer >= 1 or None (leave PyTorch's setting), "
                         f"got {torch_threads!r}")
    if env.device.type == "cpu":
        torch.set_num_threads(torch_threads)


def restart_every_replica(env: Env, seed: int | None) -> torch.Tensor:
    """Start a new episode in every replica; returns ``env.obs`` [E, A, D].

    With a seed, every replica's random stream restarts from it (``env.reset(seed=seed)``). Without one,
    the streams carry on, so the starts are fresh draws, as Gymnasium's reset without a seed continues its
    generator; ``env.reset()`` would restart them from the env's last seed and repeat the same starts.
    """
    if seed is not None:
        return env.reset(seed=seed)
    return env.reset(mask=torch.ones(env.num_envs, dtype=torch.bool, device=env.device))


def check_render_mode(render_mode: str | None, render_modes: list[str]) -> str | None:
    """``render_mode``, checked to be ``None`` or one of ``render_modes``."""
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"render_mode must be None or one of {render_modes}, got {render_mode!r}")
    return render_mode


def single_agent(env: Env, adapter: str) -> Env:
    """``env``, checked to have one agent per replica (``adapter`` names the caller in the error)."""
    if not isinstance(env, Env):
        raise TypeError(f"{adapter} wraps a warpdrive Env, got {type(env).__name__}")
    if env.num_agents != 1:
        raise ValueError(f"{adapter} is for single-agent envs; {type(env).__name__} has {env.num_agents} agents "
                         "per replica: use warpdrive.adapters.pettingzoo or warpdrive.adapters.torchrl")
    return env
