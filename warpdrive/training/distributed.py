"""Training on several processes (one per GPU, on one node or many) through ``torch.distributed``.

``torchrun`` starts the processes and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``
and the rendezvous address; :func:`setup` reads them and joins the process group (NCCL on GPUs, gloo on
the CPU). Outside torchrun, or with one rank, it returns ``None`` and the trainer runs with no distributed
code at all.

Per rank: ``env.num_envs`` env replicas on GPU ``LOCAL_RANK`` (or the CPU), with the env seed and the
torch, NumPy and Python random streams of :func:`rank_seed`; its rollout storage and replay buffers.
Global: the networks and optimiser states (rank 0's initial networks are broadcast, then every rank
applies the same averaged gradients, so they stay bit-identical), the batch of an iteration
(``world_size * num_envs * rollout_length`` env-steps), the ``env_steps`` counter and the logged metrics.

Gradients are averaged by one all-reduce of the flattened gradients of each optimiser step, before
gradient clipping, so that every rank clips and steps the same gradient. Not DistributedDataParallel:
DDP averages only the gradients of losses computed through its wrapper's ``forward``, and the algorithms
call their models' own methods (``distribution_and_value``, ``value``, ``q``, ``action``), while
rollouts replay a CUDA graph of the bare model; for networks this small DDP would put every gradient in
one bucket anyway, that is one all-reduce per step, which is what this does, explicitly.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from warpdrive.core.device import cuda_available
from warpdrive.core.typed import ConfigError
from warpdrive.training.policies import Policy, policy_tensors

__all__ = ["TIMEOUT", "Ranks", "networks_digest", "rank_seed", "setup"]

#: How long a collective waits for the other ranks before the job fails (instead of hanging): long
#: enough for a rank that compiles its env kernels or writes a checkpoint while the others wait.
TIMEOUT = datetime.timedelta(minutes=10)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s env replicas and random streams: ``seed`` itself on rank 0, so that
    rank 0 of a run draws what a one-process run draws; on other ranks a 32-bit seed derived from
    ``(seed, rank)`` by NumPy's ``SeedSequence`` (the same pair always gives the same seed)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**64, rank]).generate_state(1)[0])


def _rank_device(device: str, local_rank: int, local_world_size: int) -> torch.device:
    """Rank ``local_rank``'s device for the config's ``device``: its own GPU, or the CPU."""
    if device == "cpu" or (device == "auto" and not cuda_available()):
        return torch.device("cpu")
    if device != "auto" and device != "cuda":
        raise ConfigError("device", f"{device!r} would put every rank on one GPU; under torchrun use device=cuda "
                          "(or auto): rank LOCAL_RANK takes GPU LOCAL_RANK")
    if not cuda_available():
        raise ConfigError("device", "'cuda' asked for, but no CUDA GPU is usable; use device=cpu or auto")
    count = torch.cuda.device_count()
    if local_world_size > count:
        raise ConfigError("device", f"torchrun started {local_world_size} ranks on this node, but it has {count} "
                          f"GPU(s) and each rank needs one: use --nproc-per-node={count} (or device=cpu)")
    return torch.device("cuda", local_rank)


def setup(device: str) -> Ranks | None:
    """Join the process group that ``torchrun`` set up the environment for; ``None`` for a one-process run.

    Args:
        device: the config's ``device``: ``auto`` or ``cuda`` (each rank takes GPU ``LOCAL_RANK``, NCCL), or
            ``cpu`` (gloo).

    Raises:
        ConfigError: before any work, when this node has fewer GPUs than ranks, or ``device`` names one GPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    rank_device = _rank_device(device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    if rank_device.type == "cuda":
        torch.cuda.set_device(rank_device)  # NCCL and gather_object use the current device
    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group("nccl" if rank_device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return Ranks(rank, world_size, rank_device, owner)


def networks_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of ``tensors`` (names and exact bytes): equal digests mean bit-identical networks."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().reshape(-1).cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _to_cpu(state: Any) -> Any:
    """``state`` (nested dicts, lists, tuples) with every tensor copied to the CPU."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_to_cpu(v) for v in state)
    return state


@dataclass(frozen=True)
class Ranks:
    """This process's place in a multi-process run, and the collectives the trainer uses."""

    rank: int
    """Global rank, 0 .. world_size - 1; rank 0 alone writes logs and checkpoints."""
    world_size: int
    device: torch.device
    """This rank's device: ``cuda:LOCAL_RANK`` or the CPU."""
    owns_group: bool = True
    """The process group was created by :func:`setup` (and is destroyed by :meth:`close`)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This rank's seed for the config's ``seed`` (:func:`rank_seed`)."""
        return rank_seed(seed, self.rank)

    def broadcast_networks(self, policies: list[Policy]) -> None:
        """Give every rank rank 0's networks (in place: their tensors keep their storage)."""
        for tensor in policy_tensors(policies).values():
            dist.broadcast(tensor, src=0)
        for policy in policies:
            policy.algorithm.sync_acting_model()

    def average_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Replace the gradients of ``parameters`` by their mean over the ranks: one all-reduce of them
        flattened. Parameters without a gradient are skipped (the same ones on every rank: the same code
        ran the backward pass)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        for grad, mean in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            grad.copy_(mean.view_as(grad))

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of ``value`` (a float tensor on this rank's device)."""
        total = value.clone()
        dist.all_reduce(total)
        return total / self.world_size

    def reduce_metrics(self, values: torch.Tensor, means: slice) -> torch.Tensor:
        """``values`` [M] summed over the ranks, except ``values[means]``, averaged."""
        total = values.clone()
        dist.all_reduce(total)
        total[means] /= self.world_size
        return total

    def gather_states(self, state: dict[str, Any], networks: dict[str, torch.Tensor]) -> list[dict[str, Any]] | None:
        """Every rank's ``state`` (tensors moved to the CPU), in rank order, at rank 0; ``None`` elsewhere.

        Each rank's entry also holds ``networks_sha256``, the :func:`networks_digest` of its ``networks``.

        Raises:
            RuntimeError: on rank 0, when the ranks' networks differ (they must stay bit-identical).
        """
        state = {**_to_cpu(state), "networks_sha256": networks_digest(networks)}
        states: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(state, states, dst=0)
        if states is not None and len({s["networks_sha256"] for s in states}) > 1:
            differ = [rank for rank, s in enumerate(states) if s["networks_sha256"] != states[0]["networks_sha256"]]
            raise RuntimeError(f"the networks of rank(s) {differ} differ from rank 0's: the ranks did not apply "
                               "the same updates (a bug: please report it)")
        return states

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` (a picklable object), on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group (after a run that ended normally)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
