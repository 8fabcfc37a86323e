"""Exact arithmetic on both targets: exact mode keeps multiply-adds apart, one float32 and one float64 sin/cos,
exact fmod/mod.

The CUDA simulator computes with NumPy, so it cannot see what NVVM does to the arithmetic; these tests read
the PTX that the real CUDA target produces (no GPU needed, only NVVM).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from decimal import Decimal, localcontext

import numpy as np
import pytest
from numba import cuda, njit  # cuda at module level: the simulator swaps it in the kernel's globals

from warpdrive.core.device import simulator_enabled
from warpdrive.core.exactmath import exp32, fmod32, fmod64, log1p32, log32, mod32, mod64, sincos32, sincos64
from warpdrive.core.targets import exact_cuda_arithmetic


def test_exact_mode_compiles_without_contraction_and_links_that_ptx(run_with_cuda_target) -> None:
    """Both hooks of exact mode (see exact_cuda_arithmetic): NVVM is asked for no contraction, and the linker
    gets PTX, not LTO-IR that nvJitLink would compile again with contraction (what parted CPU and GPU on an
    H200 although the PTX that the contract scans had no fma); both are restored afterwards."""
    run_with_cuda_target(r"""
from numba.cuda.cudadrv import driver, nvvm
from warpdrive.core.targets import exact_cuda_arithmetic

seen = {}
nvvm.compile_ir = lambda ir, **options: seen.update(options)
with exact_cuda_arithmetic():
    nvvm.compile_ir("", opt=3)
    inside = driver._Linker(cc=(9, 0), lto=True)
assert seen == {"opt": 3, "fma": False}, seen
assert inside.lto is False
assert driver._Linker(cc=(9, 0), lto=True).lto is True
seen.clear()
nvvm.compile_ir("", opt=3)
assert seen == {"opt": 3}, seen
""")


def test_the_scan_sees_contraction_and_explicit_fma(run_with_cuda_target) -> None:
    """The same kernel without exact mode does contract (so the contract's PTX scan of every env,
    tests/envs/test_contract.py, can fail), and an explicit fma stays one marked instruction in exact mode."""
    run_with_cuda_target(r"""
import numpy as np
from numba import typeof
from warpdrive.core.targets import kernel_target
from warpdrive.core.device import FMA_PTX_MARKER, fma, kernel_function

@kernel_function
def runner(env, lane, lanes, active, p, s):
    if active:
        s.out[env] = s.a[env] * s.b[env] + s.c[env]
        s.out2[env] = fma(s.a[env], s.b[env], s.c[env])

from collections import namedtuple
S = namedtuple("S", "a b c out out2")
arrays = S(*(np.ones(4, np.float32) for _ in range(5)))
args = (typeof(np.int64(0)), typeof(arrays), typeof(1), typeof(1))
exact = kernel_target("cuda").ptx(runner, "x", "exact", args, exact=True)
fused = kernel_target("cuda").ptx(runner, "x", "fused", args, exact=False)
assert sum("fma.rn.f32" in line and FMA_PTX_MARKER not in line for line in exact.splitlines()) == 0, exact
assert sum(FMA_PTX_MARKER in line for line in exact.splitlines()) == 1, exact
assert sum("fma.rn.f32" in line and FMA_PTX_MARKER not in line for line in fused.splitlines()) == 1, fused
""")


def test_sincos32_is_accurate_everywhere_it_is_used() -> None:
    @njit
    def run(xs, sines, cosines):
        for i in range(xs.size):
            sines[i], cosines[i] = sincos32(xs[i])

    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-50, 50, 200_000), np.linspace(-4 * np.pi, 4 * np.pi, 100_001),
                         np.float32([0.0, -0.0, np.pi / 2, np.pi, 2 * np.pi, 1e-30])]).astype(np.float32)
    sines, cosines = np.empty_like(xs), np.empty_like(xs)
    run(xs, sines, cosines)
    for got, exact in ((sines, np.sin(xs.astype(np.float64))), (cosines, np.cos(xs.astype(np.float64)))):
        error = np.abs(got - exact)
        assert error.max() <= 2.0**-23, (xs[error.argmax()], got[error.argmax()], exact[error.argmax()])
        away_from_zeros = np.abs(exact) > 0.25  # relative accuracy, where no cancellation is inherent
        ulps = error[away_from_zeros] / np.spacing(np.abs(exact[away_from_zeros]).astype(np.float32))
        assert ulps.max() <= 2.0
    assert sines[-6] == 0.0 and cosines[-6] == 1.0


def test_sincos32_on_the_cuda_target_equals_the_cpu() -> None:
    """Bit-identical to the CPU compilation: in the simulator (the same operations in NumPy float32) and, on a
    machine with a GPU, compiled without contraction."""

    @cuda.jit
    def kernel(xs, sines, cosines):
        i = cuda.grid(1)
        if i < xs.size:
            sines[i], cosines[i] = sincos32(xs[i])

    @njit
    def on_cpu(xs, sines, cosines):
        for i in range(xs.size):
            sines[i], cosines[i] = sincos32(xs[i])

    xs = np.random.default_rng(1).uniform(-20, 20, 64).astype(np.float32)
    expected = np.empty_like(xs), np.empty_like(xs)
    on_cpu(xs, *expected)
    got = np.empty_like(xs), np.empty_like(xs)
    with nullcontext() if simulator_enabled() else exact_cuda_arithmetic():
        kernel[2, 32](xs, *got)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@njit
def _remainders32(xs, ys, fmods, mods):
    for i in range(xs.size):
        fmods[i] = fmod32(xs[i], ys[i])
        mods[i] = mod32(xs[i], ys[i])


@njit
def _remainders64(xs, ys, fmods, mods):
    for i in range(xs.size):
        fmods[i] = fmod64(xs[i], ys[i])
        mods[i] = mod64(xs[i], ys[i])


def test_fmod_and_mod_are_exact_and_follow_c_and_numpy() -> None:
    """Bit for bit what C's fmod and NumPy's ``%`` give, over ordinary, huge, subnormal and special values
    (the CUDA target's own ``%`` rounds: these are what envs use instead)."""
    rng = np.random.default_rng(0)
    n = 20_000
    specials = [(0.0, 1.0), (-0.0, 1.0), (np.inf, 1.0), (np.nan, 1.0), (5.0, np.inf), (-5.0, 2.5), (1e-45, 1e-45),
                (3.0, 0.0), (7.0, -np.inf), (-7.25, 2.0), (7.25, -2.0)]
    xs = np.concatenate([rng.uniform(-20, 20, n), rng.standard_normal(n) * 1e30, rng.standard_normal(n) * 1e-38,
                         [x for x, _ in specials]])
    ys = np.concatenate([np.full(n, 2 * np.pi), rng.standard_normal(n) * 1e-3, rng.standard_normal(n) * 1e-39,
                         [y for _, y in specials]])
    for dtype, run, bits in ((np.float32, _remainders32, np.uint32), (np.float64, _remainders64, np.uint64)):
        x, y = xs.astype(dtype), ys.astype(dtype)
        fmods, mods = np.empty_like(x), np.empty_like(x)
        run(x, y, fmods, mods)
        with np.errstate(all="ignore"):
            expected = np.fmod(x, y), np.remainder(x, y)
        for got, want in zip((fmods, mods), expected, strict=True):
            nan = np.isnan(want)
            assert np.array_equal(np.isnan(got), nan)
            assert np.array_equal(got[~nan].view(bits), want[~nan].view(bits)), dtype


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Errors in units of the float32 spacing at the exact value (where that is a normal, finite float32)."""
    exact32 = exact.astype(np.float32)
    normal = np.isfinite(exact32) & (np.abs(exact32) >= np.finfo(np.float32).tiny)
    return np.abs(got[normal] - exact[normal]) / np.spacing(np.abs(exact32[normal]))


def test_exp32_log32_log1p32_are_accurate_and_handle_the_edges() -> None:
    @njit
    def run(xs, exps, logs, log1ps):
        for i in range(xs.size):
            exps[i] = exp32(xs[i])
            logs[i] = log32(abs(xs[i]))
            log1ps[i] = log1p32(abs(xs[i]))

    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-110, 90, 200_000), rng.uniform(-1, 1, 200_000),
                         10.0 ** rng.uniform(-44, 38, 100_000)]).astype(np.float32)
    exps, logs, log1ps = np.empty_like(xs), np.empty_like(xs), np.empty_like(xs)
    run(xs, exps, logs, log1ps)
    wide = xs.astype(np.float64)
    with np.errstate(over="ignore", divide="ignore"):
        assert _ulps(exps, np.exp(wide)).max() <= 1.0
        assert _ulps(logs, np.log(np.abs(wide))).max() <= 1.0
    assert _ulps(log1ps, np.log1p(np.abs(wide))).max() <= 2.5
    edges = np.float32([0.0, -0.0, 88.8, -104.0, np.inf, -np.inf, np.nan, 1e-45])
    out = np.empty_like(edges), np.empty_like(edges), np.empty_like(edges)
    run(edges, *out)
    np.testing.assert_array_equal(out[0], np.float32([1, 1, np.inf, 0, np.inf, 0, np.nan, 1]))
    np.testing.assert_array_equal(out[1], np.float32([-np.inf, -np.inf, np.log(np.float64(88.8)).astype(np.float32),
                                                      np.log(104.0).astype(np.float32), np.inf, np.inf, np.nan,
                                                      np.log(np.float64(np.float32(1e-45))).astype(np.float32)]))
    assert out[2][0] == 0.0 and out[2][4] == np.inf and out[2][7] == np.float32(1e-45)


def test_exp32_and_log1p32_on_the_cuda_target_equal_the_cpu() -> None:
    @cuda.jit
    def kernel(xs, out):
        i = cuda.grid(1)
        if i < xs.size:
            out[i] = log1p32(exp32(xs[i]))

    @njit
    def on_cpu(xs, out):
        for i in range(xs.size):
            out[i] = log1p32(exp32(xs[i]))

    xs = np.random.default_rng(2).uniform(-30, 30, 64).astype(np.float32)
    expected, got = np.empty_like(xs), np.empty_like(xs)
    on_cpu(xs, expected)
    with nullcontext() if simulator_enabled() else exact_cuda_arithmetic():
        kernel[2, 32](xs, got)
    np.testing.assert_array_equal(got, expected)


def test_every_exactmath_function_compiles_for_the_gpu_without_contraction(run_with_cuda_target) -> None:
    """The simulator runs the Python bodies, so only NVVM sees how the CUDA target types them (CUDA's floor of a
    float32 is a float32: exp32 once failed to type there, and an env calling it never finished compiling)."""
    run_with_cuda_target(r"""
import numpy as np
from collections import namedtuple
from numba import typeof
from warpdrive.core import exactmath
from warpdrive.core.device import kernel_function
from warpdrive.core.targets import kernel_target

@kernel_function
def runner(env, lane, lanes, active, p, s):
    if active:
        x, y = s.a[env], s.b[env]
        sin, cos = exactmath.sincos32(x)
        wide = exactmath.mod64(np.float64(x), 3.0)
        sin64, cos64 = exactmath.sincos64(np.float64(y))
        s.out[env] = (exactmath.exp32(x) + exactmath.log32(y) + exactmath.log1p32(x) + sin + cos
                      + exactmath.mod32(x, y) + exactmath.fmod32(x, y) + np.float32(wide) + np.float32(sin64 + cos64))

S = namedtuple("S", "a b out")
arrays = S(*(np.ones(4, np.float32) for _ in range(3)))
args = (typeof(np.int64(0)), typeof(arrays), typeof(1), typeof(1))
ptx = kernel_target("cuda").ptx(runner, "x", "exactmath", args, exact=True)
assert "fma.rn.f32" not in ptx and "fma.rn.f64" not in ptx
""")


def test_exact_hooks_stay_until_the_last_block_of_any_thread_ends(run_with_cuda_target) -> None:
    """Runs at once (threads) enter and leave exact blocks in any order: the hooks stay while any block is open
    (a thread's exit must not restore contraction under another's compilation) and the originals come back
    after the last."""
    run_with_cuda_target(r"""
import threading
from numba.cuda.cudadrv import driver, nvvm
from warpdrive.core.targets import exact_cuda_arithmetic

original = (nvvm.compile_ir, driver._Linker)
first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
seen = {}

def first():
    with exact_cuda_arithmetic():
        first_in.set()
        second_in.wait()
    first_out.set()

def second():
    first_in.wait()
    with exact_cuda_arithmetic():
        second_in.set()
        first_out.wait()
        seen["inside"] = (nvvm.compile_ir, driver._Linker)

threads = [threading.Thread(target=first), threading.Thread(target=second)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert seen["inside"][0] is not original[0] and seen["inside"][1] is not original[1], "unhooked under a block"
assert (nvvm.compile_ir, driver._Linker) == original, "originals not restored"
""")


# --------------------------------------------------------------------------------------------------
# sincos64: correctly rounded in practice (against a 60-digit reference)

_PI_60 = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640628620899863")


def _reference_sincos(x: float) -> tuple[float, float]:
    """sin and cos of the double ``x`` to 60 digits (its exact value reduced by 2 pi, then Taylor), rounded to
    the nearest double."""
    with localcontext() as context:
        context.prec = 80
        two_pi = 2 * _PI_60
        r = Decimal(x) % two_pi  # (Decimal(x) is x exactly)
        term, sin, cos, cos_term = r, Decimal(0), Decimal(0), Decimal(1)
        for k in range(1, 200):
            sin, cos = sin + term, cos + cos_term
            if abs(term) < Decimal("1e-75") and abs(cos_term) < Decimal("1e-75"):
                break
            term = -term * r * r / ((2 * k) * (2 * k + 1))
            cos_term = -cos_term * r * r / ((2 * k - 1) * (2 * k))
        return float(sin), float(cos)  # (float(Decimal) rounds to nearest)


@njit(cache=False)
def _sincos64_all(xs, out):
    for i in range(xs.size):
        out[i, 0], out[i, 1] = sincos64(xs[i])


def test_sincos64_is_correctly_rounded_nearly_always() -> None:
    """Against 60-digit values over the classic-control envs' range and beyond: at most one miss in 3000 (measured:
    5 in 600,000), each by one ulp; the C library's ``math.sin``/``math.cos`` miss about 0.1% on such inputs (so
    they could not serve: they also differ from libdevice's)."""
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-8, 8, 2000), rng.uniform(-1e5, 1e5, 500), rng.uniform(-1e-6, 1e-6, 200),
                         np.array([0.0, np.pi / 4, np.pi / 2, np.pi, 3 * np.pi / 4, 1e6, -1.5e6]),
                         rng.uniform(-1e-300, 1e-300, 50)])
    got = np.empty((xs.size, 2))
    _sincos64_all(xs, got)
    expected = np.array([_reference_sincos(float(x)) for x in xs])
    wrong = got != expected
    assert int(wrong.sum()) <= 1, xs[wrong.any(axis=1)]
    assert np.all(np.abs(got - expected) <= np.spacing(np.abs(expected)))


def test_sincos64_beyond_its_reduction_range_and_at_special_values() -> None:
    """Beyond 1.6e6 the argument is reduced exactly by 2 pi rounded to a double: an absolute error up to about
    |x| * 4e-17, the same bits everywhere; NaN and infinities give NaN."""
    for x in (2.0e6, -3.3e7, 1e12):
        sin, cos = sincos64(x)
        reference = _reference_sincos(x)
        assert abs(sin - reference[0]) <= abs(x) * 4e-17 and abs(cos - reference[1]) <= abs(x) * 4e-17, x
        assert sin * sin + cos * cos == pytest.approx(1.0, abs=1e-15)
    for x in (np.nan, np.inf, -np.inf):
        assert all(np.isnan(v) for v in sincos64(x))
    assert sincos64(0.0) == (0.0, 1.0)
    sin, cos = sincos64(-0.0)
    assert sin == 0.0 and math.copysign(1.0, sin) == -1.0 and cos == 1.0  # sin(-0) is -0, as IEEE 754 has it
