"""Checks that an env's CPU and CUDA compilations agree, and that it compiles for the GPU at all.

:func:`check_consistency` steps two copies of an env side by side, one per backend, from the same seed with
the same random actions over whole episodes (autoresets included), and compares observations, rewards and
done flags after every step. It reports the first divergence: step, field, env and agent. Without a GPU
the CUDA side runs in Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``), which executes the same kernel
source thread by thread.

How exact the comparison is by default (:func:`default_tolerance`): bit for bit, except where one side is a
real GPU (backend ``"cuda"``) and the env does not declare
:attr:`~warpdrive.core.env.Env.bit_identical_on_gpu` (CUDA's libdevice rounds some transcendental functions
differently from the CPU's libm, and the GPU compiler may fuse multiply-adds). The simulator computes with
NumPy on the CPU, i.e. with the CPU's arithmetic, so a CPU-vs-simulator comparison is exact for every env:
a tolerance there would hide a real difference in the kernel code.

:meth:`Env.cuda_ptx <warpdrive.core.env.Env.cuda_ptx>` compiles an env's kernels to PTX without any GPU (it
needs only NVVM, e.g. from ``pip install "numba-cuda[cu13]"``): a fast way to catch code that the CPU target
accepts but the CUDA target rejects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from warpdrive.core.env import Env

__all__ = ["GPU_TOLERANCE", "ConsistencyReport", "Divergence", "check_consistency", "default_tolerance"]

_COMPARED = ("obs", "rewards", "terminated", "truncated", "done", "final_obs")

#: the default ``atol`` and ``rtol`` of a comparison with a real GPU for an env that does not promise
#: bit-identity (:attr:`~warpdrive.core.env.Env.bit_identical_on_gpu` False)
GPU_TOLERANCE = 1e-5


def default_tolerance(reference: Env, candidate: Env) -> float:
    """The default ``atol`` (and ``rtol``) of :func:`check_consistency` for these two envs.

    0 (bit-identical) unless one of them runs on a real GPU (backend ``"cuda"``) and the env does not declare
    :attr:`~warpdrive.core.env.Env.bit_identical_on_gpu`; then :data:`GPU_TOLERANCE`. The CPU backend and
    Numba's simulator (``"cudasim"``) both compute with the CPU's arithmetic, so comparing them (or two CPU
    runs) is exact for every env: only the GPU's own libdevice functions and fused multiply-adds round
    differently.
    """
    on_gpu = "cuda" in (reference.backend, candidate.backend)
    return GPU_TOLERANCE if on_gpu and not reference.bit_identical_on_gpu else 0.0


@dataclass(frozen=True)
class Divergence:
    """Where two runs first differ."""

    step: int
    field: str
    env: int
    agent: int | None
    index: tuple[int, ...]
    expected: float
    actual: float

    def __str__(self) -> str:
        where = f"env {self.env}" + (f", agent {self.agent}" if self.agent is not None else "")
        return (f"first divergence at step {self.step} in {self.field!r} ({where}, index {self.index}): "
                f"{self.expected!r} vs {self.actual!r}")


@dataclass
class ConsistencyReport:
    steps: int
    episodes_finished: int
    divergence: Divergence | None = None
    max_abs_error: dict[str, float] = field(default_factory=dict)
    #: the tolerances the float fields were compared to (0: bit for bit)
    atol: float = 0.0
    rtol: float = 0.0

    @property
    def ok(self) -> bool:
        return self.divergence is None

    @property
    def exact(self) -> bool:
        """True when the comparison was bit for bit (no tolerance)."""
        return self.atol == 0.0 and self.rtol == 0.0

    def __str__(self) -> str:
        tolerance = "exact" if self.exact else f"atol {self.atol:g}, rtol {self.rtol:g}"
        status = "consistent" if self.ok else str(self.divergence)
        return f"{self.steps} steps, {self.episodes_finished} episodes finished: {status} ({tolerance})"


def _first_difference(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float
                      ) -> tuple[tuple[tuple[int, ...], float, float] | None, float]:
    """(index, a's value, b's value) where ``a`` and ``b`` first differ beyond the tolerances, or ``None``; and
    the largest absolute difference."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.dtype == torch.bool or not a.is_floating_point():
        bad = a != b
        err = float(bad.any())
    else:
        diff = (a.double() - b.double()).abs()
        bad = diff > atol + rtol * b.double().abs()
        bad |= torch.isnan(a) != torch.isnan(b)
        err = float(diff.nan_to_num(0.0).max()) if diff.numel() else 0.0
    if not bool(bad.any()):
        return None, err
    index = tuple(int(i) for i in bad.nonzero()[0])
    return (index, a[index].item(), b[index].item()), err


def check_consistency(
    reference: Env,
    candidate: Env,
    *,
    steps: int | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
) -> ConsistencyReport:
    """Step two envs of the same class and config side by side and compare every output.

    Args:
        reference: usually the ``cpu`` backend.
        candidate: usually the ``cuda`` backend, or ``cudasim`` without a GPU.
        steps: how many steps; default two full episodes plus one step (so that autoresets are covered).
        seed: seeds both envs' random starts and the random actions.
        atol, rtol: tolerances for float fields (integer and boolean fields must match exactly); by default
            :func:`default_tolerance`: 0 (bit-identical), except :data:`GPU_TOLERANCE` when one side is a real
            GPU and the env does not declare :attr:`~warpdrive.core.env.Env.bit_identical_on_gpu`. CPU vs
            simulator is always exact by default.

    Returns:
        A report; ``report.ok`` is False when any field differed, and ``report.divergence`` says where.
    """
    if reference.name != candidate.name or reference.num_agents != candidate.num_agents:
        raise TypeError(f"cannot compare {type(reference).__name__} ({reference.num_agents} agents) with "
                        f"{type(candidate).__name__} ({candidate.num_agents} agents)")
    if reference.config != candidate.config:
        raise ValueError("the two envs must have the same config")
    if (reference.num_envs, reference.start) != (candidate.num_envs, candidate.start):
        raise ValueError("the two envs must have the same num_envs and start mode")
    if steps is None:
        steps = 2 * reference.config.episode_length + 1
    default = default_tolerance(reference, candidate)
    atol = default if atol is None else atol
    rtol = default if rtol is None else rtol
    generator = torch.Generator().manual_seed(seed)
    report = ConsistencyReport(steps=0, episodes_finished=0, atol=atol, rtol=rtol)
    reference.reset(seed=seed)
    candidate.reset(seed=seed)
    pairs = [("obs", reference.obs, candidate.obs)]
    for step in range(steps + 1):
        if step > 0:
            actions = reference.sample_actions(generator).cpu()
            reference.step(actions.to(reference.device))
            candidate.step(actions.to(candidate.device))
            pairs = [(n, reference.store[n], candidate.store[n]) for n in _COMPARED]
            report.episodes_finished += int(reference.store["done"].sum())
        for name, a, b in pairs:
            found, err = _first_difference(a, b, atol, rtol)
            report.max_abs_error[name] = max(report.max_abs_error.get(name, 0.0), err)
            if name == "final_obs" and found is not None:
                # final_obs is only meaningful where the episode ended
                done = reference.store["done"].cpu()
                if not bool(done[found[0][0]]):
                    continue
            if found is not None:
                index, expected, actual = found
                agent = index[1] if a.dim() >= 2 else None
                report.divergence = Divergence(step, name, index[0], agent, index, expected, actual)
                report.steps = step
                return report
        report.steps = step
    return report
