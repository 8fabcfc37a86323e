"""Rollout collection: ``T`` steps of every env replica into the policies' storage, without leaving the
device.

Per rollout step: store the env's observations once for all policies (:class:`EnvRollout`); for each
policy (``for policy in policies``, BenchMARL-style) take its agents' observations (a slice of the agent
axis), run the policy, sample on the device, write the actions into the env's action buffer at those
agents and store what the policy decided in its :class:`RolloutStorage`; then one ``env.step()`` for every
env at once, and store its rewards, done flags and final observations, again once for all policies.
Writes go to a step index held in a device tensor, so the loop has no host sync.

On CUDA, one rollout step (policy forward passes, sampling, the env kernel, storage writes) is captured
in a ``torch.cuda.CUDAGraph`` and replayed ``T`` times per rollout (the env's Numba kernels launch on
torch's current stream, so they are part of the graph); with several policies, their forward passes run on
streams of their own and overlap. Sampling draws from the policies' generators (the run's own), which the
graph registers: each replay draws fresh numbers.
"""

from __future__ import annotations

import logging

import torch

from warpdrive.core.env import Env
from warpdrive.training.graphs import capture, new_stream
from warpdrive.training.policies import Policy, global_state
from warpdrive.training.storage import EnvRollout, RolloutStorage

__all__ = ["RolloutCollector"]

log = logging.getLogger(__name__)

#: Eager rollout steps before a CUDA graph is captured (lazy initialisation must happen outside capture).
_GRAPH_WARMUP_STEPS = 3


class RolloutCollector:
    """Collects rollouts of ``num_steps`` steps of ``env`` acted in by ``policies``.

    Gives each trainable policy its :class:`RolloutStorage` (``policy.storage``), views of one
    :class:`EnvRollout` that holds what the env produced for all of them.

    Args:
        cuda_graph: capture one rollout step in a CUDA graph and replay it (CUDA only; ignored on the CPU).
    """

    def __init__(self, env: Env, policies: list[Policy], num_steps: int, global_state_size: int, *,
                 cuda_graph: bool = True) -> None:
        self.env = env
        self.policies = policies
        self.num_steps = num_steps
        device = env.device
        self.needs_global_state = any(p.global_critic for p in policies)
        self.env_rollout: EnvRollout | None = None
        if any(p.algorithm.trainable for p in policies):
            mask = env.action_mask
            self.env_rollout = EnvRollout(num_steps, env.num_envs, env.num_agents, env.observation_size(), device,
                                          global_state_size=global_state_size if self.needs_global_state else 0,
                                          action_mask_size=0 if mask is None else mask.shape[-1])
        for policy in policies:
            if policy.algorithm.trainable:
                assert self.env_rollout is not None  # built above, as a policy is trainable
                algorithm = policy.algorithm
                policy.storage = RolloutStorage(self.env_rollout, policy.agents, algorithm.action_size,
                                                algorithm.stored_action_dtype, on_policy=algorithm.on_policy,
                                                reads_global_state=policy.global_critic)
        self.step_index = torch.zeros(1, dtype=torch.int64, device=device)
        """Where the next step is written: a device tensor, so that a captured step writes where it points."""
        self._use_graph = cuda_graph and device.type == "cuda"
        self._graph: torch.cuda.CUDAGraph | None = None
        self._policy_streams: list[torch.cuda.Stream] = []
        if device.type == "cuda" and len(policies) > 1:
            self._policy_streams = [new_stream(device) for _ in policies]

    @property
    def uses_cuda_graph(self) -> bool:
        """True once rollout steps replay a captured CUDA graph."""
        return self._graph is not None

    def collect(self) -> None:
        """Collect ``num_steps`` steps of every env into the policies' storage."""
        self.step_index.zero_()
        with torch.no_grad():
            for policy in self.policies:
                policy.begin_rollout(self.env)
            remaining = self.num_steps
            if self._use_graph and self._graph is None:
                remaining -= self._capture_graph()
            for _ in range(remaining):
                if self._graph is not None:
                    self._graph.replay()
                else:
                    self.step()
            stored = self.env_rollout
            if stored is not None:
                stored.last_obs.copy_(self.env.obs)
                if stored.last_global_state is not None:
                    stored.last_global_state.copy_(global_state(self.env, self.env.obs))

    def act(self, deterministic: bool = False) -> None:
        """Write every policy's actions for the current observations into ``env.actions`` (for evaluation
        and rendering: nothing is stored, and no warm-up exploration is used)."""
        obs = self.env.obs
        state = global_state(self.env, obs) if self.needs_global_state else None
        with torch.no_grad():
            for policy in self.policies:
                policy.act(self.env, obs, state, deterministic, explore=False)

    def step(self) -> None:
        """One rollout step of every env; writes at :attr:`step_index` and advances it (graph-safe)."""
        env, t, stored = self.env, self.step_index, self.env_rollout
        obs = env.obs
        state = global_state(env, obs) if self.needs_global_state else None
        if stored is not None:
            fields = {"obs": obs}
            if stored.global_state is not None:
                assert state is not None  # the rollout stores a global state only when a policy needs one
                fields["global_state"] = state
            if stored.action_mask is not None:
                assert env.action_mask is not None  # stored only for an env that has one
                fields["action_mask"] = env.action_mask
            stored.write(t, **fields)
        if self._policy_streams:
            # The policies' forward passes are independent chains of small kernels: on streams of their own
            # they overlap (a CUDA graph captures the fork and the join). Every tensor that crosses streams
            # is allocated before the fork and held until after the join.
            main = torch.cuda.current_stream(env.device)
            for policy, stream in zip(self.policies, self._policy_streams, strict=True):
                stream.wait_stream(main)
                with torch.cuda.stream(stream):
                    self._act_and_store(policy, obs, state)
            for stream in self._policy_streams:
                main.wait_stream(stream)
        else:
            for policy in self.policies:
                self._act_and_store(policy, obs, state)

        _, rewards, terminated, truncated, info = env.step()

        if stored is not None:
            final_obs = info["final_obs"]
            stored.write(t, rewards=rewards, terminated=terminated, truncated=truncated, final_obs=final_obs)
            if stored.final_global_state is not None:
                stored.write(t, final_global_state=global_state(env, final_obs))
        t += 1

    def _act_and_store(self, policy: Policy, obs: torch.Tensor, state: torch.Tensor | None) -> None:
        """One policy's part of a rollout step: act for its agents, write their actions, store its fields."""
        act = policy.act(self.env, obs, state)
        if policy.storage is not None:
            fields = {"actions": act.actions}
            if policy.storage.on_policy:
                assert act.logprobs is not None and act.values is not None  # on-policy algorithms give both
                fields.update(logprobs=act.logprobs, values=act.values)
            policy.storage.write(self.step_index, **fields)

    def _capture_graph(self) -> int:
        """Capture one rollout step in a CUDA graph; returns the eager warm-up steps it took.

        The warm-up steps (lazy initialisation must happen before a capture) are real steps of the
        rollout; the captured step is recorded, not run. If the capture fails, the run goes on eagerly.
        """
        device = self.env.device
        warmup = min(_GRAPH_WARMUP_STEPS, self.num_steps)
        side = new_stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self.step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with capture(graph, [policy.algorithm.generator for policy in self.policies]):
                self.step()
        except RuntimeError as err:
            log.warning("CUDA graph capture of the rollout step failed (%s); continuing eagerly", err)
            self._use_graph = False
            return warmup
        self._graph = graph
        return warmup
