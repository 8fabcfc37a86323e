"""Value decomposition for cooperative teams with discrete actions: VDN (Sunehag et al. 2017,
arXiv:1706.05296) and QMIX (Rashid et al. 2018, arXiv:1803.11485).

A policy's ``A`` agents are one team. Each agent has a utility ``Q_a(o_a, u_a)`` from one network shared by
the team (parameter sharing), whose input is the agent's observation followed by its one-hot agent id
(agent ``a`` is the policy's ``a``-th agent in env order). A mixer combines the utilities of the actions
taken into the team's value:

- VDN: ``Q_tot = sum_a Q_a``.
- QMIX: ``Q_tot = f_s(Q_1, ..., Q_A)``, a two-layer network (ELU between) whose weights are produced from the
  global state ``s`` by hypernetworks and passed through ``abs``, so that ``dQ_tot/dQ_a >= 0``: each
  agent's greedy action is then the team's greedy joint action.

Learning is off-policy Q-learning on joint transitions, one row per env-step with every agent of the team
([N, A, ...], in :class:`~warpdrive.training.storage.ReplayBuffer`), sampled uniformly. The target is
``y = r + gamma * (1 - terminated) * Q_tot'(s', argmax_u Q_a(o'_a, u))`` (double Q-learning: the online
network picks each agent's next action, the target networks ``Q'`` value it); an episode cut by the time
limit (truncated) bootstraps from its final observation, one that ended by the env's rules (terminated)
does not. The loss is the mean squared TD error of ``Q_tot``; every ``target_update_interval`` gradient
steps the targets move by ``tau`` towards the online networks (``tau = 1``: a hard copy, as PyMARL).

Choices to know:

- Team reward: ``r`` is the mean over the team's agents of their rewards (``team_reward: mean``, the scale
  of one agent's return whatever the team size) or their sum (``team_reward: sum``). simple_spread's reward
  is mostly shared already: every agent gets the same landmark term, plus its own collision penalty.
- Global state (QMIX's hypernetworks): the env's :meth:`~warpdrive.core.env.Env.global_state` when the
  policy sets ``model.critic_input: global`` (the trainer then stores it, as for centralised critics),
  else the team's observations concatenated, [A * D].
- Exploration: epsilon-greedy, with ``epsilon`` annealed linearly from ``epsilon_start`` to
  ``epsilon_finish`` over ``epsilon_anneal_steps`` env-steps; the counter is a device tensor advanced by
  every training rollout step, so acting never waits for the host (and a captured CUDA graph keeps
  annealing). Evaluation and rendering act greedily.
- Action spaces: Discrete; MultiDiscrete as one flat choice over the product of its heads (up to
  ``MAX_JOINT_CHOICES``). Box spaces are refused.
- n-step targets (``n_step``): a transition's ``r`` is then its discounted rewards over up to n steps (cut where
  its episode ends and at the end of the rollout that stored it) and the bootstrap is discounted by
  ``gamma ** steps``. One-step targets (the default, PyMARL's) let QMIX's mixed value drift upward on
  simple_spread until the team's return collapses; its packaged config uses 5.
- Agent networks are feed-forward (no recurrence, no last-action input, unlike PyMARL's GRU agents).
- Action masks restrict acting (greedy and random choices); the TD target's maximum is over every action,
  since the replay does not hold the next step's mask.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch
from torch import nn

from warpdrive.core.sampling import categorical_from_probs, discrete_choices
from warpdrive.core.typed import ConfigError, bounded
from warpdrive.training.algorithms.base import ALGORITHMS, Act, PolicySettings, register_algorithm
from warpdrive.training.algorithms.replay import ReplayLearner, soft_update
from warpdrive.training.models import ACTIVATIONS, mlp
from warpdrive.training.returns import n_step_returns
from warpdrive.training.storage import ReplayBuffer, RolloutStorage

__all__ = [
    "MAX_JOINT_CHOICES",
    "QMIX",
    "VDN",
    "AgentQNetwork",
    "QMIXConfig",
    "QMixer",
    "VDNConfig",
    "ValueDecomposition",
    "ValueDecompositionConfig",
    "linear_epsilon",
]

#: The most choices a MultiDiscrete space may flatten to (one Q-value per choice per agent).
MAX_JOINT_CHOICES = 4096


@dataclass
class ValueDecompositionConfig:
    """What VDN and QMIX share (PyMARL's defaults where it has one, adapted to env-steps)."""

    gamma: float = bounded(0.99, ge=0.0, le=1.0)
    """Discount factor."""
    buffer_size: int = bounded(100_000, ge=1)
    """Replay capacity in env-steps (each row holds every agent of the team)."""
    batch_size: int = bounded(256, ge=1)
    """Env-steps (joint transitions) per gradient step."""
    learning_starts: int = bounded(1_000, ge=0)
    """Env-steps stored before learning begins."""
    gradient_steps: int | None = bounded(None, ge=1)
    """Gradient steps per iteration; ``null``: one per rollout step (``rollout_length``)."""
    epsilon_start: float = bounded(1.0, ge=0.0, le=1.0)
    """Probability of a uniformly random action at the start."""
    epsilon_finish: float = bounded(0.05, ge=0.0, le=1.0)
    """... once ``epsilon_anneal_steps`` env-steps have been taken (PyMARL: 0.05)."""
    epsilon_anneal_steps: int = bounded(50_000, ge=1)
    """Env-steps of linear annealing (one step of one env replica counts one, as ``total_env_steps``)."""
    target_update_interval: int = bounded(200, ge=1)
    """Gradient steps between target-network updates."""
    tau: float = bounded(1.0, gt=0.0, le=1.0)
    """Each target update moves the targets this fraction of the way to the online networks (1: a hard
    copy, PyMARL's; e.g. 0.005 with ``target_update_interval: 1`` for Polyak averaging)."""
    double_q: bool = True
    """The online network picks the next actions that the target networks value (double Q-learning)."""
    team_reward: Literal["mean", "sum"] = "mean"
    """The team's reward: the mean or the sum of its agents' rewards."""
    max_grad_norm: float | None = bounded(10.0, gt=0.0)
    """Clip the gradient norm of all the networks together to this (PyMARL: 10); ``null``: no clipping."""
    n_step: int = bounded(1, ge=1)
    """Each transition's target looks ahead this many env-steps (n-step returns, cut where an episode ends and at
    the end of the rollout that stored it), bootstrapping with ``gamma ** steps``; 1: one-step Q-learning. Fewer
    bootstrapped steps keep QMIX's mixed value from drifting above what the team can get (pymarl2 uses
    TD(lambda) for the same reason)."""

    def validate(self, path: str) -> None:
        if self.epsilon_finish > self.epsilon_start:
            raise ConfigError(f"{path}.epsilon_finish", f"expected at most epsilon_start ({self.epsilon_start}), "
                              f"got {self.epsilon_finish}")


@dataclass
class VDNConfig(ValueDecompositionConfig):
    """VDN's hyperparameters: those of :class:`ValueDecompositionConfig` (the sum has none)."""


@dataclass
class QMIXConfig(ValueDecompositionConfig):
    """QMIX's hyperparameters: those of :class:`ValueDecompositionConfig` and the mixer's sizes (PyMARL's)."""

    mixing_embed_dim: int = bounded(32, ge=1)
    """Width of the mixing network's hidden layer."""
    hypernet_hidden_dim: int = bounded(64, ge=1)
    """Width of the hidden layer of the hypernetworks that produce the mixing weights."""


def linear_epsilon(steps: torch.Tensor, start: float, finish: float, anneal_steps: int) -> torch.Tensor:
    """``epsilon`` after ``steps`` env-steps (a 0-dim device tensor): ``start`` annealed linearly to
    ``finish`` over ``anneal_steps``, then ``finish``; a 0-dim float32 tensor on the same device."""
    fraction = (steps.double() / anneal_steps).clamp(max=1.0)
    return (start + (finish - start) * fraction).float()


class AgentQNetwork(nn.Module):
    """Every agent's utilities from one network: input ``[o_a, onehot(a)]``, output ``Q_a(o_a, .)``.

    Args:
        obs_size: D.
        num_agents: A, the team's size (the length of the one-hot id).
        num_choices: J, the actions of one agent.
    """

    agent_ids: torch.Tensor

    def __init__(self, obs_size: int, num_agents: int, num_choices: int, hidden_sizes: list[int],
                 activation: str) -> None:
        super().__init__()
        self.net = mlp(obs_size + num_agents, hidden_sizes, activation, num_choices, out_gain=1.0)
        self.register_buffer("agent_ids", torch.eye(num_agents), persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``Q`` [..., A, J] (float32) from ``obs`` [..., A, D]."""
        ids = self.agent_ids.to(obs.dtype).expand(*obs.shape[:-1], self.agent_ids.shape[0])
        return self.net(torch.cat([obs, ids], dim=-1)).float()


class QMixer(nn.Module):
    """QMIX's monotonic mixing network: ``Q_tot = w2(s) . elu(W1(s) q + b1(s)) + b2(s)`` with ``W1 = |.|``
    and ``w2 = |.|`` of hypernetwork outputs (two layers each, as PyMARL's ``hypernet_layers: 2``), and
    ``b2(s)`` a state value from a two-layer network.

    Args:
        num_agents: A.
        state_size: S, the size of the global state.
    """

    def __init__(self, num_agents: int, state_size: int, embed_dim: int, hypernet_hidden_dim: int) -> None:
        super().__init__()
        self.num_agents, self.embed_dim = num_agents, embed_dim
        relu = ACTIVATIONS["relu"]
        self.hyper_w1 = nn.Sequential(nn.Linear(state_size, hypernet_hidden_dim), relu(),
                                      nn.Linear(hypernet_hidden_dim, num_agents * embed_dim))
        self.hyper_b1 = nn.Linear(state_size, embed_dim)
        self.hyper_w2 = nn.Sequential(nn.Linear(state_size, hypernet_hidden_dim), relu(),
                                      nn.Linear(hypernet_hidden_dim, embed_dim))
        self.state_value = nn.Sequential(nn.Linear(state_size, embed_dim), relu(), nn.Linear(embed_dim, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``Q_tot`` [...] (float32) from the agents' utilities ``q`` [..., A] and the state [..., S]."""
        w1 = self.hyper_w1(state).abs().unflatten(-1, (self.num_agents, self.embed_dim))  # [..., A, E]
        hidden = nn.functional.elu(torch.einsum("...a,...ae->...e", q.to(w1.dtype), w1) + self.hyper_b1(state))
        w2 = self.hyper_w2(state).abs()  # [..., E]
        return ((hidden * w2).sum(-1) + self.state_value(state).squeeze(-1)).float()


class ValueDecomposition(ReplayLearner):
    """What VDN and QMIX share: agent networks, epsilon-greedy acting, replay, double-Q targets, target updates.

    Subclasses build their mixer in :meth:`build_mixer` (``None``: the sum).
    """

    discrete = True
    continuous = False
    default_model = None
    Config: ClassVar[type[ValueDecompositionConfig]]
    config: ValueDecompositionConfig

    def __init__(self, spec: PolicySettings, obs_size: int, action_space: gym.spaces.Space, global_state_size: int,
                 device: torch.device, *args: Any, **kwargs: Any) -> None:
        super().__init__(spec, obs_size, action_space, global_state_size, device, *args, **kwargs)
        self.global_state_size = global_state_size
        """G when the env's global state is stored (``model.critic_input: global``), else 0."""
        space = self.action_space
        if isinstance(space, gym.spaces.Box):
            instead = [a.name for a in ALGORITHMS.values() if a.trainable and a.supports_action_space(space)]
            raise TypeError(f"{self.name} needs Discrete (or MultiDiscrete) actions, got {space}; for Box actions "
                            f"use {', '.join(instead)}")
        if self.spec.model.name is not None:
            raise ValueError(f"{self.name} builds its own agent Q network; leave model.name unset "
                             f"(got {self.spec.model.name!r})")
        choices = discrete_choices(space)
        assert choices is not None  # a Box was refused above
        self.num_choices = math.prod(choices)
        if self.num_choices > MAX_JOINT_CHOICES:
            raise ValueError(f"{self.name} flattens {space} into {self.num_choices} choices per agent, more than "
                             f"{MAX_JOINT_CHOICES}; use ppo or a2c (one categorical per head)")
        # head h of a flat choice j is (j // strides[h]) % sizes[h] (row-major: the first head varies slowest)
        strides = [math.prod(choices[h + 1:]) for h in range(len(choices))]
        self.sizes = torch.tensor(choices, device=self.device)
        self.strides = torch.tensor(strides, device=self.device)
        offsets = [sum(choices[:h]) for h in range(len(choices))]
        # mask_index[j, h]: where head h's choice of flat choice j sits in an action mask [n_1 + ... + n_H]
        self.mask_index = torch.tensor([[offsets[h] + (j // strides[h]) % choices[h] for h in range(len(choices))]
                                        for j in range(self.num_choices)], device=self.device)

        c = self.config
        a, model = self.num_agents, self.spec.model
        self.q_network = AgentQNetwork(self.obs_size, a, self.num_choices, model.hidden_sizes,
                                       model.activation).to(self.device)
        self.model = self.q_network
        self.acting_model = self.q_network  # acting runs under autocast with mixed precision
        self.state_size = self.global_state_size or a * self.obs_size
        self.mixer = self.build_mixer(self.state_size)
        self.target_q_network = copy.deepcopy(self.q_network).requires_grad_(False)
        self.target_mixer = None if self.mixer is None else copy.deepcopy(self.mixer).requires_grad_(False)
        self.optimizer = self.make_optimizer(self.online_parameters())
        self.replay = ReplayBuffer(c.buffer_size, self.obs_size, 1, self.device, num_agents=a,
                                   global_state_size=self.global_state_size, multi_step=c.n_step > 1)
        self.env_steps = torch.zeros((), dtype=torch.int64, device=self.device)
        """Env-steps taken by training rollouts (drives epsilon): a device counter, advanced without a sync."""

    # -- what a subclass gives ---------------------------------------------------------------------

    def build_mixer(self, state_size: int) -> nn.Module | None:
        """The mixing network, on the device; ``None`` for VDN's sum."""
        raise NotImplementedError

    # -- acting -------------------------------------------------------------------------------------

    def online_parameters(self) -> list[nn.Parameter]:
        """The online networks' parameters (agent network, then mixer)."""
        params = list(self.q_network.parameters())
        return params + (list(self.mixer.parameters()) if self.mixer is not None else [])

    def epsilon(self) -> torch.Tensor:
        """The current exploration rate, a 0-dim device tensor."""
        c = self.config
        return linear_epsilon(self.env_steps, c.epsilon_start, c.epsilon_finish, c.epsilon_anneal_steps)

    def act(self, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            mask: torch.Tensor | None = None, explore: bool = True) -> Act:
        """Epsilon-greedy actions [E, A, H] for ``obs`` [E, A, D]; greedy when ``deterministic`` or not
        ``explore``. Training rollouts (``explore``) advance the epsilon counter by E env-steps."""
        with self.autocast():
            q = self.q_network(obs)  # [E, A, J]
        allowed = None if mask is None else self.flat_mask(mask)
        if allowed is not None:
            q = q.masked_fill(~allowed, float("-inf"))
        choice = q.argmax(-1)
        if explore and not deterministic:
            if allowed is None:
                uniform = torch.empty_like(choice).random_(0, self.num_choices, generator=self.generator)
            else:
                uniform = categorical_from_probs(allowed.float(), self.generator)
            explores = torch.rand(choice.shape, device=choice.device, generator=self.generator) < self.epsilon()
            choice = torch.where(explores, uniform, choice)
            self.env_steps += obs.shape[0]
        actions = self.to_heads(choice)
        return Act(actions, actions)

    def to_heads(self, choice: torch.Tensor) -> torch.Tensor:
        """Flat choices [...] -> the env's actions [..., H] (int64)."""
        return (choice.unsqueeze(-1) // self.strides) % self.sizes

    def to_flat(self, actions: torch.Tensor) -> torch.Tensor:
        """The env's actions [..., H] -> flat choices [...] (int64)."""
        return (actions.long() * self.strides).sum(-1)

    def flat_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """An action mask [..., n_1 + ... + n_H] -> [..., J]: a flat choice is allowed when each head's is."""
        if self.mask_index.shape[1] == 1:
            return mask
        return mask[..., self.mask_index].all(-1)

    # -- learning -----------------------------------------------------------------------------------

    def transitions(self, storage: RolloutStorage) -> dict[str, torch.Tensor]:
        """The rollout as joint transitions, one per env-step (N = T * E), in the replay's fields: ``obs`` and
        ``next_obs`` [N, A, D], ``actions`` [N, A, 1] (flat choices, float32), ``rewards`` [N, A],
        ``terminated`` [N] (float32); with the env's global state, ``global_state`` and
        ``next_global_state`` [N, G]; with ``n_step > 1``, ``steps`` [N] (float32). ``next_obs`` is the
        final observation where an episode ended; with ``n_step > 1``, ``rewards`` are each transition's
        n-step return and ``next_obs``, ``next_global_state`` and ``terminated`` those of its last step
        (:func:`~warpdrive.training.returns.n_step_returns`)."""
        rewards, reached = storage.rewards, storage.next_obs
        terminated, next_state = storage.terminated, storage.next_global_state
        steps = None
        if self.config.n_step > 1:
            rewards, last = n_step_returns(rewards, storage.dones, self.config.n_step, self.config.gamma)
            envs = torch.arange(last.shape[1], device=last.device).expand_as(last)
            reached, terminated = reached[last, envs], terminated[last, envs]
            next_state = None if next_state is None else next_state[last, envs]
            steps = (last - torch.arange(last.shape[0], device=last.device).unsqueeze(1) + 1).flatten().float()
        out = {
            "obs": storage.obs.flatten(0, 1),
            "actions": self.to_flat(storage.actions).flatten(0, 1).unsqueeze(-1).float(),
            "rewards": rewards.flatten(0, 1),
            "next_obs": reached.flatten(0, 1),
            "terminated": terminated.flatten().float(),
        }
        if self.global_state_size:
            state = storage.global_state
            if state is None or next_state is None:
                raise RuntimeError(f"{self.name} was built for the env's global state, but the rollout holds none")
            out.update(global_state=state.flatten(0, 1), next_global_state=next_state.flatten(0, 1))
        if steps is not None:
            out["steps"] = steps
        return out

    def mix(self, mixer: nn.Module | None, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``Q_tot`` [B] of the agents' utilities ``q`` [B, A] in ``state`` [B, S]."""
        return q.sum(-1) if mixer is None else mixer(q, state)

    def states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixer's state before and after each transition, [B, S] each (see the module doc)."""
        if self.global_state_size:
            return batch["global_state"], batch["next_global_state"]
        return batch["obs"].flatten(1), batch["next_obs"].flatten(1)

    def td_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``r + gamma^steps * (1 - terminated) * Q_tot'(s', u')`` [B] for transitions ``batch`` (fields of
        :meth:`transitions`; ``steps`` 1 without n-step returns), ``u'`` each agent's greedy next action (by the
        online network with ``double_q``, else by the target network)."""
        c = self.config
        with torch.no_grad(), self.autocast():
            next_q = self.target_q_network(batch["next_obs"])  # [B, A, J]
            chooser = self.q_network(batch["next_obs"]) if c.double_q else next_q
            next_q = next_q.gather(-1, chooser.argmax(-1, keepdim=True)).squeeze(-1)
            next_total = self.mix(self.target_mixer, next_q, self.states(batch)[1])
            rewards = batch["rewards"].mean(-1) if c.team_reward == "mean" else batch["rewards"].sum(-1)
            discount = c.gamma ** batch["steps"] if "steps" in batch else c.gamma
            return rewards + discount * (1.0 - batch["terminated"]) * next_total.float()

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss_td`` (mean squared TD error of ``Q_tot``) and, for logging, ``q_total`` and ``td_target``."""
        target = self.td_target(batch)
        with self.autocast():
            q = self.q_network(batch["obs"]).gather(-1, batch["actions"].long()).squeeze(-1)  # [B, A]
            total = self.mix(self.mixer, q, self.states(batch)[0]).float()
        return {"loss_td": ((total - target) ** 2).mean(), "q_total": total.detach().mean(),
                "td_target": target.mean()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def store_rollout(self, storage: RolloutStorage) -> None:
        self.replay.add(**self.transitions(storage))

    def gradient_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        step = self.loss(batch)
        step["grad_norm"] = self.optimizer_step(self.optimizer, step["loss_td"], self.online_parameters(),
                                                c.max_grad_norm)
        if (self.gradient_steps + 1) % c.target_update_interval == 0:
            soft_update(self.target_q_network, self.q_network, c.tau)
            if self.mixer is not None and self.target_mixer is not None:
                soft_update(self.target_mixer, self.mixer, c.tau)
        return step

    def iteration_metrics(self) -> dict[str, torch.Tensor | float]:
        return {**super().iteration_metrics(), "epsilon": self.epsilon()}

    # -- checkpoints --------------------------------------------------------------------------------

    def modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"model": self.q_network, "target": self.target_q_network}
        if self.mixer is not None and self.target_mixer is not None:
            modules.update(mixer=self.mixer, target_mixer=self.target_mixer)
        return modules

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "env_steps": self.env_steps.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.env_steps.copy_(state["env_steps"])


@register_algorithm
class VDN(ValueDecomposition):
    """VDN: the team's value is the sum of its agents' utilities."""

    name = "vdn"
    Config = VDNConfig
    global_critic = False

    def build_mixer(self, state_size: int) -> nn.Module | None:
        return None


@register_algorithm
class QMIX(ValueDecomposition):
    """QMIX: a monotonic mixing network conditioned on the global state."""

    name = "qmix"
    Config = QMIXConfig
    global_critic = True
    centralised = "mixer"
    config: QMIXConfig

    def build_mixer(self, state_size: int) -> nn.Module | None:
        c = self.config
        return QMixer(self.num_agents, state_size, c.mixing_embed_dim, c.hypernet_hidden_dim).to(self.device)
