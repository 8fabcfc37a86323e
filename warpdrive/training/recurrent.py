"""Recurrent policies: a GRU or LSTM core between the encoder and the heads of the actor and of the critic.

Chosen in a policy's config with ``model: {recurrent: gru}`` (or ``lstm``; ``recurrent_size`` sets the width)
for the actor-critic algorithms that declare ``recurrent = True`` (PPO and A2C, MAPPO among them with
``critic_input: global``).

How the state flows:

- **Acting.** A policy's state lives on the device, one row per env replica and agent,
  [E, A_p, S] (:class:`RecurrentMemory`), updated in place at every step, so that a captured CUDA graph
  replays it. Before a step, the rows of the replicas whose observation is the first of an episode
  (``env.t == 0``: after the env's SAME_STEP autoreset, or after an explicit ``reset``) are zeroed on the device.
- **Storing.** Before a rollout, the state its agents enter the rollout with is copied into the rollout
  storage (``storage.initial_state``); with the stored done flags that is enough to run the rollout again:
  inside the rollout, the state entering step ``t`` is zeroed where step ``t - 1`` ended an episode.
- **Learning.** The update unrolls the core over the whole rollout from the stored initial states
  (truncated backpropagation through time over ``T = rollout_length`` steps), in minibatches of whole
  (env, agent) sequences (:class:`SequenceBatch`): PPO's minibatches are sets of sequences, A2C takes them
  all at once. Before any weight changes, this reproduces the rollout's log-probabilities and values
  (the first epoch's ratio is 1).

The state of one agent is the actor core's state followed by the critic core's (none with ``shared_trunk``:
one core serves both heads); an LSTM core's state is its ``h`` followed by its ``c``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import nn

from warpdrive.training.models import (
    ActorCritic,
    DiagGaussian,
    ModelSpec,
    MultiCategorical,
    critic_input,
    layer_init,
    register_model,
)
from warpdrive.training.returns import next_state_values
from warpdrive.training.storage import RolloutStorage

__all__ = ["RECURRENT_MODEL", "RecurrentActorCritic", "RecurrentMemory", "SequenceBatch", "batch_outputs",
           "recurrent_next_values"]

#: The built-in model of a policy whose ``model.recurrent`` is ``gru`` or ``lstm`` (and ``model.name`` unset).
RECURRENT_MODEL = "recurrent_actor_critic"

Distribution = MultiCategorical | DiagGaussian


def _core(kind: str, in_size: int, size: int) -> nn.GRUCell | nn.LSTMCell:
    """A GRU or LSTM cell, initialised as CleanRL's recurrent PPO does: orthogonal weights, zero biases."""
    cell = nn.GRUCell(in_size, size) if kind == "gru" else nn.LSTMCell(in_size, size)
    for name, param in cell.named_parameters():
        if name.startswith("weight"):
            nn.init.orthogonal_(param, 1.0)
        else:
            nn.init.zeros_(param)
    return cell


@register_model(RECURRENT_MODEL)
class RecurrentActorCritic(ActorCritic):
    """:class:`~warpdrive.training.models.ActorCritic` with a GRU or LSTM core after each MLP trunk (one shared
    core with ``shared_trunk``); the heads read the core's output.

    It has no stateless ``distribution`` / ``value``: it steps with a state (:meth:`step`), unrolls over
    sequences (:meth:`unroll`), and values a critic input from a given state (:meth:`value_after`).
    ``S`` (:attr:`state_size`) is the size of one agent's state.
    """

    recurrent = True

    def __init__(self, obs_size: int, action_space: gym.spaces.Space, spec: ModelSpec,
                 critic_input_size: int) -> None:
        if spec.recurrent == "none":
            raise ValueError(f"{RECURRENT_MODEL} needs model.recurrent: gru or lstm, got 'none'")
        super().__init__(obs_size, action_space, spec, critic_input_size)
        hidden, size = spec.hidden_sizes, spec.recurrent_size
        self.kind = spec.recurrent
        self.core_size = size
        self.actor_core = _core(spec.recurrent, hidden[-1] if hidden else obs_size, size)
        self.critic_core = None if self.critic_trunk is None else _core(
            spec.recurrent, hidden[-1] if hidden else critic_input_size, size)
        # the heads now read the core (ActorCritic's read the trunk): built again with the core's width
        self.actor_head = layer_init(nn.Linear(size, self.actor_head.out_features), gain=0.01)
        self.value_head = layer_init(nn.Linear(size, 1), gain=1.0)
        per_core = size * (2 if spec.recurrent == "lstm" else 1)
        self.actor_state_size = per_core
        self.state_size = per_core * (1 if self.critic_core is None else 2)
        """S: the actor core's state, then the critic core's (if it has its own)."""

    # -- the stateless API of ActorCritic does not apply -------------------------------------------------

    def distribution(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> Distribution:
        raise TypeError("a recurrent model acts from a state: use step() or unroll()")

    def value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        raise TypeError("a recurrent model values from a state: use step(), unroll() or value_after()")

    def distribution_and_value(self, obs: torch.Tensor, critic_obs: torch.Tensor,
                               mask: torch.Tensor | None = None) -> tuple[Distribution, torch.Tensor]:
        raise TypeError("a recurrent model acts from a state: use step() or unroll()")

    # -- one step ------------------------------------------------------------------------------------

    def _cell(self, core: nn.Module, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of ``core`` on features ``x`` [..., F] from ``state`` [..., s]: (output [..., H], new state
        [..., s])."""
        lead, dtype = x.shape[:-1], x.dtype
        if x.dim() != 2:  # the cells take [B, F]
            x, state = x.reshape(-1, x.shape[-1]), state.reshape(-1, state.shape[-1])
        # The cells run in float32 whatever the precision of the rest (their weights stay float32 in a bf16
        # acting copy, see float32_cores): a state rounded to bf16 at every step drifts (measured on the memory
        # task on a GPU: 72% of cues named instead of 99% after the same training).
        with torch.autocast(x.device.type, enabled=False):
            x, state = x.float(), state.float()
            if self.kind == "lstm":
                h, c = core(x, state.split(self.core_size, dim=-1))
                out, new = h, torch.cat([h, c], dim=-1)
            else:
                out = new = core(x, state)
        out = out.to(dtype)
        if len(lead) != 1:
            out, new = out.reshape(*lead, -1), new.reshape(*lead, -1)
        return out, new

    def float32_cores(self) -> RecurrentActorCritic:
        """Keep the cores' weights in float32 (for a copy of the model otherwise cast to bf16); returns it."""
        self.actor_core.float()
        if self.critic_core is not None:
            self.critic_core.float()
        return self

    def _critic_step(self, critic_features: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.critic_core is not None  # called only for a critic with its own core
        return self._cell(self.critic_core, critic_features, state[..., self.actor_state_size:])

    def step(self, obs: torch.Tensor, critic_obs: torch.Tensor, state: torch.Tensor,
             mask: torch.Tensor | None = None) -> tuple[Distribution, torch.Tensor, torch.Tensor]:
        """One step from ``state`` [..., S] (already zeroed where an episode starts).

        Args:
            obs: [..., D]; critic_obs: [..., C]; mask: optional [..., M] (see ``ActorCritic.distribution``).

        Returns:
            (the action distribution, values [...], the state after the step [..., S]).
        """
        actor_out, actor_state = self._cell(self.actor_core, self.actor_trunk(obs),
                                            state[..., :self.actor_state_size])
        if self.critic_core is None:
            critic_out, new_state = actor_out, actor_state
        else:
            assert self.critic_trunk is not None  # it has its own core, so its own trunk
            critic_out, critic_state = self._critic_step(self.critic_trunk(critic_obs), state)
            new_state = torch.cat([actor_state, critic_state], dim=-1)
        dist = self._distribution(self.actor_head(actor_out), mask)
        return dist, self.value_head(critic_out).squeeze(-1).float(), new_state

    def value_after(self, critic_obs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The value [...] of ``critic_obs`` [..., C] reached with ``state`` [..., S] (used as it is: the state
        after the step that led there, e.g. to value the ``final_obs`` of a truncated episode)."""
        if self.critic_core is None:
            out, _ = self._cell(self.actor_core, self.actor_trunk(critic_obs), state[..., :self.actor_state_size])
        else:
            assert self.critic_trunk is not None
            out, _ = self._critic_step(self.critic_trunk(critic_obs), state)
        return self.value_head(out).squeeze(-1).float()

    # -- sequences -----------------------------------------------------------------------------------

    def unroll(self, obs: torch.Tensor, critic_obs: torch.Tensor, state: torch.Tensor, starts: torch.Tensor,
               mask: torch.Tensor | None = None) -> tuple[Distribution, torch.Tensor, torch.Tensor]:
        """Run ``T`` steps of ``N`` sequences from their initial states, zeroing a sequence's state where its
        episode starts.

        Args:
            obs: [T, N, D]; critic_obs: [T, N, C]; mask: optional [T, N, M].
            state: [N, S], the state entering step 0.
            starts: [T, N] bool, True where the observation at step ``t`` is the first of an episode: the
                state entering that step is zeroed.

        Returns:
            (the action distribution over [T, N], values [T, N], the state after each step [T, N, S]).
        """
        # The trunks and heads do not depend on the state: one pass over every step; only the cells loop.
        actor_x = self.actor_trunk(obs)
        critic_x = None if self.critic_trunk is None else self.critic_trunk(critic_obs)
        keep = (~starts).unsqueeze(-1).to(actor_x.dtype)  # [T, N, 1]: 0 zeroes the state entering the step
        actor_state, critic_state = state[:, :self.actor_state_size], state[:, self.actor_state_size:]
        actor_outs, actor_states, critic_outs, critic_states = [], [], [], []
        for t in range(obs.shape[0]):
            actor_out, actor_state = self._cell(self.actor_core, actor_x[t], actor_state * keep[t])
            actor_outs.append(actor_out)
            actor_states.append(actor_state)
            if critic_x is not None:
                assert self.critic_core is not None  # a critic trunk of its own comes with a core of its own
                critic_out, critic_state = self._cell(self.critic_core, critic_x[t], critic_state * keep[t])
                critic_outs.append(critic_out)
                critic_states.append(critic_state)
        actor_out = torch.stack(actor_outs)
        critic_out = actor_out if critic_x is None else torch.stack(critic_outs)
        states = torch.stack(actor_states) if critic_x is None else \
            torch.cat([torch.stack(actor_states), torch.stack(critic_states)], dim=-1)
        dist = self._distribution(self.actor_head(actor_out), mask)
        return dist, self.value_head(critic_out).squeeze(-1).float(), states


class RecurrentMemory:
    """One policy's recurrent state while it acts: [E, A_p, S] float32 on the device, updated in place.

    Allocated (zeros) at the first step, shaped by the observations; a step with another number of replicas
    or agents starts from zeros again.
    """

    def __init__(self, state_size: int, device: torch.device) -> None:
        self.state_size = state_size
        self.device = device
        self.state: torch.Tensor | None = None
        """[E, A_p, S], or ``None`` before the first step."""

    def current(self, num_envs: int, num_agents: int) -> torch.Tensor:
        """The state [E, A_p, S] (zeros when first asked for, or asked for with another shape)."""
        shape = (num_envs, num_agents, self.state_size)
        if self.state is None or self.state.shape != shape:
            self.state = torch.zeros(shape, device=self.device)
        return self.state

    def reset(self, starts: torch.Tensor) -> None:
        """Zero the state of the replicas where ``starts`` [E] (bool) is True: their observation is the first
        of an episode. In place, on the device."""
        if self.state is not None and self.state.shape[0] == starts.shape[0]:
            self.state.masked_fill_(starts.view(-1, 1, 1), 0.0)

    def step(self, model: Any, obs: torch.Tensor, critic_obs: torch.Tensor,
             mask: torch.Tensor | None) -> tuple[Distribution, torch.Tensor]:
        """One step of ``model`` (a :class:`RecurrentActorCritic`) for ``obs`` [E, A_p, D] from the state,
        which it then holds the step's result: (the action distribution, values [E, A_p])."""
        state = self.current(obs.shape[0], obs.shape[1])
        dist, values, new_state = model.step(obs, critic_obs, state, mask)
        state.copy_(new_state)
        return dist, values

    def store_initial_state(self, storage: RolloutStorage, starts: torch.Tensor) -> None:
        """Before a rollout: zero the state where an episode starts (``starts`` [E]) and copy it into
        ``storage.initial_state`` [E, A_p, S] (allocated once, then written in place: a captured update reads
        it)."""
        state = self.current(storage.num_envs, storage.num_agents)
        self.reset(starts)
        if storage.initial_state is None or storage.initial_state.shape != state.shape:
            storage.initial_state = torch.empty_like(state)
        storage.initial_state.copy_(state)

    def state_dict(self) -> torch.Tensor | None:
        return self.state

    def load_state_dict(self, state: torch.Tensor | None) -> None:
        if state is None:
            self.state = None
        elif self.state is not None and self.state.shape == state.shape:
            self.state.copy_(state)  # in place: a captured rollout step reads this tensor
        else:
            self.state = state.to(self.device, torch.float32).clone()


class SequenceBatch:
    """One policy's rollout as ``N = E * A_p`` sequences of ``T`` steps, one per (env, agent), for a recurrent
    model's update: the counterpart of :class:`~warpdrive.training.storage.FlatBatch`, whose samples are whole
    sequences.

    Per-agent fields [T, E, A_p, ...] become [T, N, ...], sequence ``n`` being env ``n // A_p``, agent
    ``n % A_p``: ``obs``, ``actions``, ``logprobs``, ``values``, ``action_mask`` (envs that mask actions) and
    the tensors given as ``per_step`` (``advantages``, ``returns`` [T, E, A_p]). Besides: ``starts`` [T, N]
    (the state entering step ``t`` is zeroed: step ``t - 1`` ended the episode; never at step 0, whose state
    was zeroed before it was stored) and ``initial_state`` [N, S]. The global state stays one row per
    env-step, [T, E, G].
    """

    def __init__(self, storage: RolloutStorage, **per_step: torch.Tensor) -> None:
        if storage.initial_state is None:
            raise ValueError("the rollout storage holds no initial state: a recurrent policy's rollout stores "
                             "it before its first step (RecurrentMemory.store_initial_state)")
        t, e, a = storage.num_steps, storage.num_envs, storage.num_agents
        self.num_agents = a
        n = e * a

        def sequences(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(t, n, *x.shape[3:])

        fields = {"obs": sequences(storage.obs), "actions": sequences(storage.actions),
                  "logprobs": sequences(storage.logprobs), "values": sequences(storage.values)}
        fields.update({name: sequences(value) for name, value in per_step.items()})
        if storage.action_mask is not None:
            fields["action_mask"] = sequences(storage.action_mask)
        ended = storage.dones[:-1].unsqueeze(-1).expand(t - 1, e, a).reshape(t - 1, n)
        fields["starts"] = torch.cat([torch.zeros_like(ended[:1]), ended]) if t > 1 else \
            torch.zeros(1, n, dtype=torch.bool, device=ended.device)
        self.fields = fields
        self.initial_state = storage.initial_state.reshape(n, -1)
        self.global_state = storage.global_state
        self.size = n

    def __getitem__(self, name: str) -> torch.Tensor:
        """Field ``name`` of every sequence, [T, N, ...]."""
        return self.fields[name]

    def samples(self, index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every field of sequences ``index`` [n] (int64; ``None``: all N), [T, n, ...], plus
        ``initial_state`` [n, S] and ``critic_obs`` [T, n, C] (the env's global state, then the agent's
        observation, for a global critic)."""
        if index is None:
            batch = dict(self.fields)
            batch["initial_state"] = self.initial_state
        else:
            batch = {name: value[:, index] for name, value in self.fields.items()}
            batch["initial_state"] = self.initial_state[index]
        state = self.global_state
        if state is not None:
            envs = torch.arange(self.size, device=state.device) // self.num_agents if index is None \
                else index // self.num_agents
            state = state[:, envs]
        batch["critic_obs"] = critic_input(batch["obs"], state)
        return batch


def batch_outputs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[Distribution, torch.Tensor]:
    """The action distribution and values of a batch: of samples [B, ...] (a
    :class:`~warpdrive.training.storage.FlatBatch`'s), or, for a recurrent model, of whole sequences [T, n,
    ...] unrolled from their initial states (a :class:`SequenceBatch`'s)."""
    if "initial_state" in batch:
        dist, values, _ = model.unroll(batch["obs"], batch["critic_obs"], batch["initial_state"], batch["starts"],
                                       batch.get("action_mask"))
        return dist, values
    dist, values = model.distribution_and_value(batch["obs"], batch["critic_obs"], batch.get("action_mask"))
    return dist, values


def recurrent_next_values(model: RecurrentActorCritic, storage: RolloutStorage) -> torch.Tensor:
    """A recurrent critic's value of the state each stored step reached, [T, E, A_p] (as
    ``ActorCriticAlgorithm.next_values``): the next step's stored value where the episode goes on, ``V`` of
    ``last_obs`` after the last step, ``V(final_obs)`` where the episode was truncated, 0 where it terminated.

    ``V(final_obs)`` and ``V(last_obs)`` need the state each step left, so the rollout is unrolled again from
    its initial state; every step's ``V(final_obs)`` is computed (one batched pass, no host sync) and used where
    truncated. Call under ``torch.no_grad()``.
    """
    t, e, a = storage.num_steps, storage.num_envs, storage.num_agents
    batch = SequenceBatch(storage).samples()
    _, _, after = model.unroll(batch["obs"], batch["critic_obs"], batch["initial_state"], batch["starts"],
                               batch.get("action_mask"))
    after = after.reshape(t, e, a, -1)
    final_values = model.value_after(critic_input(storage.final_obs, storage.final_global_state), after)
    last_state = torch.where(storage.dones[-1].view(e, 1, 1), torch.zeros_like(after[-1]), after[-1])
    last_values = model.value_after(critic_input(storage.last_obs, storage.last_global_state), last_state)
    return next_state_values(storage.values, last_values, final_values, storage.terminated, storage.truncated)
