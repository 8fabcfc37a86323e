"""Preallocated buffers on the device: one rollout's transitions, and a replay ring buffer.

Nothing here leaves the device. Writes go through ``index_copy_`` at a step index held in a device
tensor, so that a CUDA graph captured once can write step after step.
"""

from __future__ import annotations

import torch

__all__ = ["ReplayBuffer", "RolloutStorage"]


class RolloutStorage:
    """One policy's rollout, ``T`` steps of ``E`` envs for its ``A`` agents.

    ========================  ==============  ========  ===============================================
    field                     shape           dtype     meaning
    ========================  ==============  ========  ===============================================
    ``obs``                   [T, E, A, D]    float32   observation the action was taken from
    ``actions``               [T, E, A, H]    int64 or  action taken (float32 for Box spaces; unclipped,
                                              float32   as sampled)
    ``rewards``               [T, E, A]       float32   reward of the step
    ``terminated``            [T, E]          bool      the step ended the episode by the env's rules
    ``truncated``             [T, E]          bool      the step ended the episode at the time limit
    ``logprobs``              [T, E, A]       float32   on-policy: log-probability of the action
    ``values``                [T, E, A]       float32   on-policy: ``V(obs)``
    ``final_values``          [T, E, A]       float32   on-policy: ``V(final_obs)``, valid where truncated
    ``next_obs``              [T, E, A, D]    float32   off-policy: the observation reached (``final_obs``
                                                        where the episode ended)
    ``global_state``          [T, E, G]       float32   when the critic is global: the env's state
    ``last_obs``              [E, A, D]       float32   observation after the last step (bootstrap)
    ``last_global_state``     [E, G]          float32   its global state, when the critic is global
    ========================  ==============  ========  ===============================================
    """

    def __init__(self, num_steps: int, num_envs: int, num_agents: int, obs_size: int, action_size: int,
                 action_dtype: torch.dtype, device: torch.device, *, on_policy: bool = True,
                 global_state_size: int = 0) -> None:
        t, e, a = num_steps, num_envs, num_agents
        self.num_steps, self.num_envs, self.num_agents = t, e, a

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.obs = zeros(t, e, a, obs_size)
        self.actions = zeros(t, e, a, action_size, dtype=action_dtype)
        self.rewards = zeros(t, e, a)
        self.terminated = zeros(t, e, dtype=torch.bool)
        self.truncated = zeros(t, e, dtype=torch.bool)
        self.on_policy = on_policy
        if on_policy:
            self.logprobs = zeros(t, e, a)
            self.values = zeros(t, e, a)
            self.final_values = zeros(t, e, a)
        else:
            self.next_obs = zeros(t, e, a, obs_size)
        self.global_state = zeros(t, e, global_state_size) if global_state_size else None
        self.last_obs = zeros(e, a, obs_size)
        self.last_global_state = zeros(e, global_state_size) if global_state_size else None

    def write(self, step: torch.Tensor, **fields: torch.Tensor) -> None:
        """Store one step: ``fields[name]`` [E, ...] goes to ``self.<name>[step]``.

        Args:
            step: int64 tensor [1] on the device (so that a captured CUDA graph writes where it points).
        """
        for name, value in fields.items():
            getattr(self, name).index_copy_(0, step, value.unsqueeze(0))

    @property
    def dones(self) -> torch.Tensor:
        """[T, E] bool: the step ended the episode (terminated or truncated)."""
        return self.terminated | self.truncated


class ReplayBuffer:
    """A ring buffer of transitions on the device (DDPG's replay memory).

    Fields ``obs`` [N, D], ``actions`` [N, H], ``rewards`` [N], ``next_obs`` [N, D], ``terminated`` [N]
    (float, 1.0 where the transition ended the episode by the env's rules: no bootstrap). The write
    position and fill level are host integers: how many transitions arrive is known on the host, so no
    sync is needed to track them.
    """

    def __init__(self, capacity: int, obs_size: int, action_size: int, device: torch.device) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        self.obs = torch.zeros(capacity, obs_size, device=device)
        self.actions = torch.zeros(capacity, action_size, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.next_obs = torch.zeros(capacity, obs_size, device=device)
        self.terminated = torch.zeros(capacity, device=device)
        self.pos = 0
        self.size = 0

    _FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
            terminated: torch.Tensor) -> None:
        """Append N transitions (flat: ``obs`` [N, D], ``actions`` [N, H], ...), overwriting the oldest."""
        n = obs.shape[0]
        values = [obs, actions, rewards, next_obs, terminated.float()]
        if n > self.capacity:  # only the newest ``capacity`` transitions would survive anyway
            values = [v[n - self.capacity:] for v in values]
            n = self.capacity
        index = (torch.arange(n, device=self.device) + self.pos) % self.capacity
        for name, value in zip(self._FIELDS, values, strict=True):
            getattr(self, name).index_copy_(0, index, value.to(getattr(self, name).dtype))
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly with replacement, as a dict of [B, ...] tensors."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {name: getattr(self, name)[index] for name in self._FIELDS}

    def state_dict(self) -> dict[str, object]:
        return {"pos": self.pos, "size": self.size, **{n: getattr(self, n) for n in self._FIELDS}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])  # type: ignore[call-overload]
        for name in self._FIELDS:
            getattr(self, name).copy_(state[name])  # type: ignore[arg-type]
