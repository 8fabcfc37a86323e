"""Counter-based random numbers for env kernels: the same bits on the CPU and the GPU.

A draw is a pure function of ``(seed, env, episode, counter)``: no generator state is stored or shared
between threads, so agents draw in parallel without coordination, a replica's draws do not depend on how
many replicas run beside it (:func:`replica_seed` gives the seed that makes a lone replica draw what replica
``i`` of a batch draws), and the CPU and CUDA compilations of an env produce bit-identical starts.
The mixing function is SplitMix64's finaliser (Steele, Lea & Flood, 2014), applied three times.
Convention inside envs: ``counter = agent * draws_per_agent + k`` for the k-th draw of an agent.
"""

from __future__ import annotations

import numpy as np

from warpdrive.core.device import kernel_function

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S40 = np.uint64(40)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_U32_MASK = np.uint64(0xFFFFFFFF)
_INV_2_24 = np.float32(1.0 / (1 << 24))

#: seeds are unsigned 64-bit integers: ``[0, SEED_LIMIT)``
SEED_LIMIT = 1 << 64


def replica_seed(seed: int, replica: int) -> int:
    """The seed under which replica 0 draws exactly what replica ``replica`` draws under ``seed``.

    Every draw mixes ``seed + GOLDEN * (env + 1)`` first (:func:`random_bits`), so shifting the seed by
    ``GOLDEN * replica`` (mod 2**64) moves replica ``replica``'s streams to replica 0: a one-replica env with this
    seed reproduces that replica of a batch, starts, random actions and resets included (batch invariance).
    """
    return (seed + int(_GOLDEN) * replica) % SEED_LIMIT


@kernel_function
def mix64(x):
    """SplitMix64 finaliser: a bijection on uint64 with good avalanche."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


@kernel_function
def random_bits(seed, env, episode, counter):
    """64 random bits for draw ``counter`` of episode ``episode`` of replica ``env`` under ``seed``."""
    h = mix64(np.uint64(seed) + _GOLDEN * (np.uint64(env) + _ONE))
    h = mix64(h ^ (_GOLDEN * (np.uint64(episode) + _ONE)))
    return mix64(h ^ (_M1 * (np.uint64(counter) + _ONE)))


@kernel_function
def uniform(seed, env, episode, counter):
    """A float32 uniform in [0, 1) with 24 random bits (exact in float32 on every target)."""
    return np.float32(random_bits(seed, env, episode, counter) >> _S40) * _INV_2_24


@kernel_function
def randint(seed, env, episode, counter, n):
    """An integer uniform in [0, n) for 0 < n < 2**32 (multiply-shift, no modulo bias to speak of)."""
    bits = random_bits(seed, env, episode, counter) >> _S32
    return np.int64((bits * (np.uint64(n) & _U32_MASK)) >> _S32)
