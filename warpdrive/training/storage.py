"""Preallocated buffers on the device: one rollout's transitions, the rollout flattened into a batch of
samples, and a replay ring buffer.

Nothing here leaves the device. Writes go through ``index_copy_`` at a step index held in a device
tensor, so that a CUDA graph captured once can write step after step.
"""

from __future__ import annotations

import torch

from warpdrive.training.models import critic_input

__all__ = ["EnvRollout", "FlatBatch", "ReplayBuffer", "RolloutStorage", "agent_selector", "select_agents"]


def agent_selector(ids: list[int] | torch.Tensor, device: torch.device) -> slice | torch.Tensor:
    """How to pick agents ``ids`` out of an agent axis: a ``slice`` when they are a contiguous range (a
    view, no copy: the common case, as env groups are contiguous), else an int64 index tensor."""
    ids = [int(i) for i in ids]
    if ids and ids == list(range(ids[0], ids[0] + len(ids))):
        return slice(ids[0], ids[0] + len(ids))
    return torch.tensor(ids, dtype=torch.int64, device=device)


def select_agents(x: torch.Tensor, agents: slice | torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` restricted to ``agents`` along ``dim``: a view for a slice, a gathered copy for an index."""
    if isinstance(agents, slice):
        return x.narrow(dim, agents.start, agents.stop - agents.start)
    return x.index_select(dim, agents)


class EnvRollout:
    """What the envs produced during one rollout of ``T`` steps, for all ``A`` agents.

    Written once per step for every policy at once (a few whole-tensor copies, whatever the number of
    policies); each policy reads its agents through a :class:`RolloutStorage`.

    ======================  ==============  ========  =================================================
    field                   shape           dtype     meaning
    ======================  ==============  ========  =================================================
    ``obs``                 [T, E, A, D]    float32   observation the step's action was taken from
    ``rewards``             [T, E, A]       float32   reward of the step
    ``terminated``          [T, E]          bool      the step ended the episode by the env's rules
    ``truncated``           [T, E]          bool      the step ended the episode at the time limit
    ``final_obs``           [T, E, A, D]    float32   last observation of the episode the step ended (the
                                                      env's ``final_obs``); valid where terminated or
                                                      truncated
    ``action_mask``         [T, E, A, M]    bool      with envs that mask actions: what was allowed at
                                                      ``obs`` (``None`` otherwise)
    ``last_obs``            [E, A, D]       float32   observation after the last step (bootstrap)
    ``global_state``        [T, E, G]       float32   with centralised critics: the env's state
    ``final_global_state``  [T, E, G]       float32   ... and that of ``final_obs``
    ``last_global_state``   [E, G]          float32   ... and that of ``last_obs``
    ======================  ==============  ========  =================================================
    """

    def __init__(self, num_steps: int, num_envs: int, num_agents: int, obs_size: int, device: torch.device, *,
                 global_state_size: int = 0, action_mask_size: int = 0) -> None:
        t, e, a = num_steps, num_envs, num_agents
        self.num_steps, self.num_envs, self.num_agents = t, e, a

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.obs = zeros(t, e, a, obs_size)
        self.rewards = zeros(t, e, a)
        self.terminated = zeros(t, e, dtype=torch.bool)
        self.truncated = zeros(t, e, dtype=torch.bool)
        self.final_obs = zeros(t, e, a, obs_size)
        self.last_obs = zeros(e, a, obs_size)
        self.action_mask = zeros(t, e, a, action_mask_size, dtype=torch.bool) if action_mask_size else None
        g = global_state_size
        self.global_state = zeros(t, e, g) if g else None
        self.final_global_state = zeros(t, e, g) if g else None
        self.last_global_state = zeros(e, g) if g else None

    def write(self, step: torch.Tensor, **fields: torch.Tensor) -> None:
        """Store one step: ``fields[name]`` [E, ...] goes to ``self.<name>[step]``.

        Args:
            step: int64 tensor [1] on the device (so that a captured CUDA graph writes where it points).
        """
        _write(self, step, fields)


def _write(owner: object, step: torch.Tensor, fields: dict[str, torch.Tensor]) -> None:
    for name, value in fields.items():
        getattr(owner, name).index_copy_(0, step, value.unsqueeze(0))


class RolloutStorage:
    """One policy's rollout: the env's fields for the policy's agents, and what the policy decided.

    The env's fields (``obs``, ``rewards``, ``terminated``, ``truncated``, ``final_obs``, ``last_obs``,
    the global states; see :class:`EnvRollout`) are read through to ``env_rollout``, restricted to the
    policy's ``A_p`` agents: views when the agents are a contiguous range, copies otherwise. The policy's
    own fields:

    ========================  ==============  ========  ===============================================
    field                     shape           dtype     meaning
    ========================  ==============  ========  ===============================================
    ``actions``               [T, E, A_p, H]  int64 or  action taken (float32 for Box spaces; unclipped,
                                              float32   as sampled)
    ``logprobs``              [T, E, A_p]     float32   on-policy: log-probability of the action
    ``values``                [T, E, A_p]     float32   on-policy: ``V(obs)``
    ``initial_state``         [E, A_p, S]     float32   recurrent policies: the state the agents entered the
                                                        rollout with (``None`` otherwise; see
                                                        :mod:`~warpdrive.training.recurrent`)
    ========================  ==============  ========  ===============================================
    """

    def __init__(self, env_rollout: EnvRollout, agents: slice | torch.Tensor, action_size: int,
                 action_dtype: torch.dtype, *, on_policy: bool = True, reads_global_state: bool = True) -> None:
        self.env_rollout = env_rollout
        self.agents = agents
        self.reads_global_state = reads_global_state
        """False for a policy without a global critic: its view shows no global state even where the rollout
        stores one for another policy (its critic takes observations only)."""
        t, e = env_rollout.num_steps, env_rollout.num_envs
        a = len(range(env_rollout.num_agents)[agents]) if isinstance(agents, slice) else int(agents.numel())
        self.num_steps, self.num_envs, self.num_agents = t, e, a
        device = env_rollout.obs.device
        self.actions = torch.zeros(t, e, a, action_size, dtype=action_dtype, device=device)
        self.on_policy = on_policy
        if on_policy:
            self.logprobs = torch.zeros(t, e, a, device=device)
            self.values = torch.zeros(t, e, a, device=device)
        self.initial_state: torch.Tensor | None = None

    def write(self, step: torch.Tensor, **fields: torch.Tensor) -> None:
        """Store the policy's fields for one step (as :meth:`EnvRollout.write`)."""
        _write(self, step, fields)

    def _select(self, x: torch.Tensor, dim: int = 2) -> torch.Tensor:
        return select_agents(x, self.agents, dim)

    @property
    def obs(self) -> torch.Tensor:
        return self._select(self.env_rollout.obs)

    @property
    def rewards(self) -> torch.Tensor:
        return self._select(self.env_rollout.rewards)

    @property
    def final_obs(self) -> torch.Tensor:
        return self._select(self.env_rollout.final_obs)

    @property
    def last_obs(self) -> torch.Tensor:
        return self._select(self.env_rollout.last_obs, dim=1)

    @property
    def action_mask(self) -> torch.Tensor | None:
        mask = self.env_rollout.action_mask
        return None if mask is None else self._select(mask)

    @property
    def terminated(self) -> torch.Tensor:
        return self.env_rollout.terminated

    @property
    def truncated(self) -> torch.Tensor:
        return self.env_rollout.truncated

    @property
    def global_state(self) -> torch.Tensor | None:
        return self.env_rollout.global_state if self.reads_global_state else None

    @property
    def final_global_state(self) -> torch.Tensor | None:
        return self.env_rollout.final_global_state if self.reads_global_state else None

    @property
    def last_global_state(self) -> torch.Tensor | None:
        return self.env_rollout.last_global_state if self.reads_global_state else None

    @property
    def dones(self) -> torch.Tensor:
        """[T, E] bool: the step ended the episode (terminated or truncated)."""
        return self.terminated | self.truncated

    @property
    def next_obs(self) -> torch.Tensor:
        """[T, E, A_p, D] the observation each step reached: ``final_obs`` where the episode ended, else the
        next step's observation (``last_obs`` after the last step)."""
        obs = self.obs
        following = torch.cat([obs[1:], self.last_obs.unsqueeze(0)], dim=0)
        return torch.where(self.dones[:, :, None, None], self.final_obs, following)

    @property
    def next_global_state(self) -> torch.Tensor | None:
        """[T, E, G] the global state each step reached, as :attr:`next_obs` (``final_global_state`` where the
        episode ended); ``None`` when the rollout stores no global state."""
        state, final, last = self.global_state, self.final_global_state, self.last_global_state
        if state is None or final is None or last is None:
            return None
        following = torch.cat([state[1:], last.unsqueeze(0)], dim=0)
        return torch.where(self.dones[:, :, None], final, following)


class FlatBatch:
    """One policy's rollout as a batch of ``B = T * E * A_p`` samples, for an on-policy update (the storage
    holds log-probabilities and values).

    Per-agent fields [T, E, A_p, ...] are flattened to [B, ...] in (step, env, agent) order: ``obs``,
    ``actions``, ``logprobs``, ``values``, ``action_mask`` (envs that mask actions) and the tensors given as
    ``per_sample`` (e.g. ``advantages``, ``returns`` [T, E, A_p]). The env's global state stays one row per
    env-step, [T * E, G]: sample ``i`` was taken at env-step ``i // A_p`` and reads that row, so the state is
    not repeated for every agent in memory.
    """

    def __init__(self, storage: RolloutStorage, **per_sample: torch.Tensor) -> None:
        self.num_agents = storage.num_agents
        fields = {"obs": storage.obs.flatten(0, 2), "actions": storage.actions.flatten(0, 2),
                  "logprobs": storage.logprobs.flatten(), "values": storage.values.flatten()}
        fields.update({name: value.flatten() for name, value in per_sample.items()})
        if storage.action_mask is not None:
            fields["action_mask"] = storage.action_mask.flatten(0, 2)
        self.fields = fields
        self.global_state = storage.global_state.flatten(0, 1) if storage.global_state is not None else None
        self.size = fields["obs"].shape[0]

    def __getitem__(self, name: str) -> torch.Tensor:
        """Field ``name`` of every sample, [B, ...]."""
        return self.fields[name]

    def samples(self, index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every field at samples ``index`` [b] (int64; ``None``: all B, without copies), plus ``critic_obs``
        [b, C]: the critic's input (the sample's global state, then its observation, for a global critic)."""
        batch = dict(self.fields) if index is None else {name: value[index] for name, value in self.fields.items()}
        batch["critic_obs"] = critic_input(batch["obs"], self.global_rows(index))
        return batch

    def global_rows(self, index: torch.Tensor | None = None) -> torch.Tensor | None:
        """The global state [b, G] of samples ``index`` [b] (``None``: all B), or ``None`` without one."""
        if self.global_state is None:
            return None
        if index is None:
            index = torch.arange(self.size, device=self.global_state.device)
        return self.global_state[index // self.num_agents]


class ReplayBuffer:
    """A ring buffer of transitions on the device (DDPG's replay memory).

    Fields ``obs`` [N, D], ``actions`` [N, H], ``rewards`` [N], ``next_obs`` [N, D], ``terminated`` [N]
    (float, 1.0 where the transition ended the episode by the env's rules: no bootstrap). The write
    position and fill level are host integers: how many transitions arrive is known on the host, so no
    sync is needed to track them.

    With ``num_agents = A``, a row is one env-step of ``A`` agents (joint transitions, for centralised
    critics): ``obs`` [N, A, D], ``actions`` [N, A, H], ``rewards`` [N, A], ``next_obs`` [N, A, D] and
    ``terminated`` [N].

    With ``global_state_size = G > 0``, rows also hold ``global_state`` [N, G] and ``next_global_state``
    [N, G]: the env's state before and after the step (for critics or mixers conditioned on it).

    With ``multi_step``, rows also hold ``steps`` [N] (float): the env-steps a row spans (n-step returns: its
    ``rewards`` are their discounted sum and ``next_obs`` is where the last of them arrived).
    """

    def __init__(self, capacity: int, obs_size: int, action_size: int, device: torch.device, *,
                 num_agents: int | None = None, global_state_size: int = 0, multi_step: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        agents = () if num_agents is None else (num_agents,)
        self.obs = torch.zeros(capacity, *agents, obs_size, device=device)
        self.actions = torch.zeros(capacity, *agents, action_size, device=device)
        self.rewards = torch.zeros(capacity, *agents, device=device)
        self.next_obs = torch.zeros(capacity, *agents, obs_size, device=device)
        self.terminated = torch.zeros(capacity, device=device)
        self.fields: tuple[str, ...] = self._FIELDS
        """The fields a row holds, in :meth:`add`'s order."""
        if global_state_size:
            self.global_state = torch.zeros(capacity, global_state_size, device=device)
            self.next_global_state = torch.zeros(capacity, global_state_size, device=device)
            self.fields += ("global_state", "next_global_state")
        if multi_step:
            self.steps = torch.ones(capacity, device=device)
            self.fields += ("steps",)
        self.pos = 0
        self.size = 0

    _FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
            terminated: torch.Tensor, global_state: torch.Tensor | None = None,
            next_global_state: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> None:
        """Append N transitions (``obs`` [N, D] or [N, A, D], ``actions`` [N, H] or [N, A, H], ...), overwriting
        the oldest."""
        n = obs.shape[0]
        optional = {"global_state": global_state, "next_global_state": next_global_state, "steps": steps}
        held = self.fields[len(self._FIELDS):]
        given = tuple(name for name, value in optional.items() if value is not None)
        if given != held:
            raise ValueError(f"this replay holds {', '.join(self.fields)}: of {', '.join(optional)} give exactly "
                             f"{', '.join(held) or 'none'} (got {', '.join(given) or 'none'})")
        values = [obs, actions, rewards, next_obs, terminated.float(),
                  *(value for value in optional.values() if value is not None)]
        if n > self.capacity:  # only the newest ``capacity`` transitions would survive anyway
            values = [v[n - self.capacity:] for v in values]
            n = self.capacity
        index = (torch.arange(n, device=self.device) + self.pos) % self.capacity
        for name, value in zip(self.fields, values, strict=True):
            getattr(self, name).index_copy_(0, index, value.to(getattr(self, name).dtype))
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly with replacement (from ``generator``; ``None``: torch's
        default), as a dict of [B, ...] tensors."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return {name: getattr(self, name)[index] for name in self.fields}

    def state_dict(self) -> dict[str, object]:
        return {"pos": self.pos, "size": self.size, **{n: getattr(self, n) for n in self.fields}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])  # type: ignore[call-overload]
        for name in self.fields:
            getattr(self, name).copy_(state[name])
