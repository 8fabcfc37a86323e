"""What every env's programs share: the phases the core adds around an env's own, and how the step and reset
programs are assembled from them.

Step: draw (``random_step``, ``p.draw_actions``) or check (``p.check_actions``) the actions, begin the step, the
env's step phases, add the rewards to the episode returns, end the step (truncation, done); then, in envs whose
episode ended and when the step autoresets (``p.autoreset``), finish the episode (final observations, returns,
lengths and metrics) and run the reset phases. Reset: the reset phases in envs whose ``s.reset_mask`` is set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from warpdrive.core.compile import (
    LaunchBoundary,
    Phase,
    only_where_done,
    per_agent,
    per_env,
    sequence,
    split_at_launches,
)
from warpdrive.core.device import atomic_max, float_bits, kernel_function
from warpdrive.core.random import randint, uniform

__all__ = ["program_stages"]


@kernel_function
def _begin_step(env, p, s):
    s.t[env] += 1
    s.terminated[env] = False
    s.truncated[env] = False


@kernel_function
def _end_step(env, p, s):
    truncated = s.t[env] >= p.episode_length and not s.terminated[env]
    s.truncated[env] = truncated
    s.done[env] = s.terminated[env] or truncated


@kernel_function
def _add_reward(env, agent, p, s):
    s.episode_return[env, agent] += s.rewards[env, agent]


@kernel_function
def _finish_agent(env, agent, p, s):
    for j in range(s.obs.shape[2]):
        s.final_obs[env, agent, j] = s.obs[env, agent, j]
    episode_return = s.episode_return[env, agent]
    s.final_return[env, agent] = episode_return
    s.finished_return[env, agent] += episode_return
    s.episode_return[env, agent] = 0.0


@kernel_function
def _finish_env(env, p, s):
    s.final_length[env] = s.t[env]
    s.finished_episodes[env] += 1.0
    s.finished_length[env] += s.t[env]
    for j in range(s.metrics.shape[1]):
        s.final_metrics[env, j] = s.metrics[env, j]
        s.finished_metrics[env, j] += s.metrics[env, j]


#: where the counters of the action draws start: far from the env's own draws (``agent * draws + k``)
_ACTION_STREAM = np.int64(1 << 62)


@kernel_function
def _action_counter(env, agent, p, s):
    """Counter of head 0 of this step's random action of ``agent``: ``(t * agents + agent) * heads``."""
    return _ACTION_STREAM + (np.int64(s.t[env]) * p.num_agents + agent) * s.actions.shape[2]


@kernel_function
def _draw_discrete_actions(env, agent, p, s):
    base = _action_counter(env, agent, p, s)
    for head in range(s.actions.shape[2]):
        s.actions[env, agent, head] = randint(p.seed, env, s.episode[env], base + head, s.action_choices[head])


@kernel_function
def _draw_masked_actions(env, agent, p, s):
    """Each head uniformly among its allowed choices (choice 0 where a head allows none)."""
    base = _action_counter(env, agent, p, s)
    start = 0
    for head in range(s.actions.shape[2]):
        n = s.action_choices[head]
        allowed = 0
        for i in range(n):
            allowed += s.action_mask[env, agent, start + i]
        rank = randint(p.seed, env, s.episode[env], base + head, max(allowed, 1))
        choice = 0
        for i in range(n):
            if s.action_mask[env, agent, start + i]:
                if rank == 0:
                    choice = i
                rank -= 1
        s.actions[env, agent, head] = choice
        start += n


@kernel_function
def _draw_box_actions(env, agent, p, s):
    base = _action_counter(env, agent, p, s)
    for head in range(s.actions.shape[2]):
        low = s.action_low[head]
        u = uniform(p.seed, env, s.episode[env], base + head)
        s.actions[env, agent, head] = min(low + (s.action_high[head] - low) * u, s.action_high[head])


# ---- the step kernel's action check (p.check_actions): an invalid action is replaced by a safe one and the first
# of each env recorded in s.action_fault[env] as ((A * H - (agent * H + head)) << 32) | (the value's 32 bits):
# atomic_max keeps the lowest (agent, head) with its value; 0 means none.


@kernel_function
def _record_action_fault(env, agent, head, bits, p, s):
    heads = s.actions.shape[2]
    rank = np.int64(p.num_agents) * heads - (np.int64(agent) * heads + head)
    atomic_max(s.action_fault, env, (rank << np.int64(32)) | np.int64(bits))


@kernel_function
def _check_discrete_actions(env, agent, p, s):
    for head in range(s.actions.shape[2]):
        a = s.actions[env, agent, head]
        if a < 0 or a >= s.action_choices[head]:
            _record_action_fault(env, agent, head, np.uint32(a), p, s)
            s.actions[env, agent, head] = 0


@kernel_function
def _check_masked_actions(env, agent, p, s):
    start = 0
    for head in range(s.actions.shape[2]):
        a = s.actions[env, agent, head]
        n = s.action_choices[head]
        if a < 0 or a >= n or not s.action_mask[env, agent, start + a]:
            _record_action_fault(env, agent, head, np.uint32(a), p, s)
            s.actions[env, agent, head] = 0
        start += n


@kernel_function
def _check_box_actions(env, agent, p, s):
    # only NaN and infinities: a finite value outside the bounds is the env's to clip (as Gymnasium's envs do)
    for head in range(s.actions.shape[2]):
        a = s.actions[env, agent, head]
        if not abs(a) < np.float32(np.inf):  # NaN fails the comparison
            _record_action_fault(env, agent, head, float_bits(a), p, s)
            s.actions[env, agent, head] = min(max(np.float32(0.0), s.action_low[head]), s.action_high[head])


@kernel_function
def _clear_return(env, agent, p, s):
    s.episode_return[env, agent] = 0.0


@kernel_function
def _begin_episode(env, p, s):
    s.t[env] = 0
    s.episode[env] += 1
    for j in range(s.metrics.shape[1]):
        s.metrics[env, j] = 0.0


def _draw_or_check_actions(draw: Any, check: Any) -> Any:
    """Random actions drawn (``random_step``), or the given ones checked (``p.check_actions``)."""

    @kernel_function
    def run(env, agent, p, s):
        if p.draw_actions:
            draw(env, agent, p, s)
        elif p.check_actions:
            check(env, agent, p, s)

    return run


def _only_where_autoreset(runner: Any) -> Any:
    """Run ``runner`` only in envs whose episode ended this step, when the step autoresets (``p.autoreset``)."""
    return only_where_done(_only_if_autoreset(runner))


def _only_if_autoreset(runner: Any) -> Any:
    @kernel_function
    def run(env, lane, lanes, active, p, s):
        runner(env, lane, lanes, active and p.autoreset, p, s)

    return run


def _only_where_reset_asked(runner: Any) -> Any:
    """Run ``runner`` only in envs whose ``s.reset_mask[env]`` is set (:meth:`Env.reset`)."""

    @kernel_function
    def run(env, lane, lanes, active, p, s):
        runner(env, lane, lanes, active and s.reset_mask[env], p, s)

    return run


#: the functions that draw and check the actions of each action kind (see ``Env._action_kind``)
_ACTIONS = {
    "": (_draw_discrete_actions, _check_discrete_actions),
    "_masked": (_draw_masked_actions, _check_masked_actions),
    "_box": (_draw_box_actions, _check_box_actions),
}


def program_stages(name: str, step_phases: tuple[Phase | LaunchBoundary, ...],
                   reset_phases: tuple[Phase | LaunchBoundary, ...], action_kind: str) -> list[Any]:
    """The runners of program ``name`` (``"step"`` or ``"reset"``) of an env with these phases, separated where
    the env put launch boundaries (each one kernel on CUDA); ``action_kind``: ``""`` (discrete), ``"_masked"``
    or ``"_box"``."""
    if name not in ("step", "reset"):
        raise KeyError(name)
    reset = split_at_launches((per_env(_begin_episode), *reset_phases))
    if name == "reset":
        first = sequence(per_agent(_clear_return), *reset[0])
        return [_only_where_reset_asked(first), *(_only_where_reset_asked(sequence(*r)) for r in reset[1:])]
    draw, check = _ACTIONS[action_kind]
    step = (per_agent(_draw_or_check_actions(draw, check)), per_env(_begin_step), *step_phases,
            per_agent(_add_reward), per_env(_end_step))
    stages = split_at_launches(step)
    # the episodes that ended are finished and restarted in the same launches (unless p.autoreset is off):
    # the reset's first stage right after the step's last one, and its later stages as launches of their own
    keep = (per_agent(_finish_agent), per_env(_finish_env))
    last = sequence(*stages[-1], _only_where_autoreset(sequence(*keep, *reset[0])))
    return [*(sequence(*stage) for stage in stages[:-1]), last,
            *(_only_where_autoreset(sequence(*r)) for r in reset[1:])]
