"""Float functions that give the same bits on the CPU and the GPU: ``sin``/``cos``, ``exp``, ``log`` and ``log1p``
(float32), ``sin``/``cos`` in float64 (:func:`sincos64`, at the end), and ``fmod``/``mod``.

Kernels are compiled so that ``+``, ``-``, ``*``, ``/`` and ``sqrt`` round alike on both targets (see
:mod:`warpdrive.core.compile`). Two common operations do not:

- ``%`` on floats: the CPU computes an exact ``fmod``; the CUDA target expands it as ``x - floor(x / y) * y``,
  which rounds. Use :func:`mod32`/:func:`mod64` (Python's and NumPy's sign rule) or :func:`fmod32`/:func:`fmod64`
  (C's), exact on both targets.
- ``math.sin``/``math.cos``: see below.

``math.sin`` compiles to the C library's ``sinf`` on the CPU and to libdevice's ``__nv_sinf`` on CUDA; the
two differ by an ulp or two on a few percent of inputs, and in a simulation such differences grow until
CPU and GPU runs part. These functions use only float32 ``+``, ``-`` and ``*`` in a fixed order, which both
targets round alike (the CUDA compilation does not contract multiply-adds; see :mod:`warpdrive.core.compile`):
the same bits everywhere, within 2**-23 of the exact value (and 2 ulp where the result is not near 0) for
``|x| < 8192``.

The method is Cephes' ``sinf``/``cosf`` (S. L. Moshier): reduce by multiples of pi/4 with pi/4 split into
three parts (Cody-Waite), then a degree-7 odd polynomial for sin and a degree-8 even one for cos on
[-pi/4, pi/4]. ``exp``, ``log`` and ``log1p`` (``math.exp`` and friends differ between the targets in the same
way) follow Cephes' ``expf`` and ``logf``: a Cody-Waite reduction by ln 2 and a polynomial, the power of two
applied through the float's bits (exact); within a few ulp of the exact values.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from warpdrive.core.device import bits_double, bits_float, double_bits, float_bits, kernel_function

__all__ = ["cos32", "cos64", "exp32", "fmod32", "fmod64", "log1p32", "log32", "mod32", "mod64", "sin32", "sin64",
           "sincos32", "sincos64"]

_FOUR_OVER_PI = np.float32(1.27323954473516)
# pi/4 = _PI4_A + _PI4_B + _PI4_C; the first two have few significant bits, so y * _PI4_A and y * _PI4_B are
# exact for the multiples y used here
_PI4_A = np.float32(0.78515625)
_PI4_B = np.float32(2.4187564849853515625e-4)
_PI4_C = np.float32(3.77489497744594108e-8)
_SIN_1 = np.float32(-1.9515295891e-4)
_SIN_2 = np.float32(8.3321608736e-3)
_SIN_3 = np.float32(-1.6666654611e-1)
_COS_1 = np.float32(2.443315711809948e-5)
_COS_2 = np.float32(-1.388731625493765e-3)
_COS_3 = np.float32(4.166664568298827e-2)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)


@kernel_function
def _unreduced(sin_r, cos_r, quadrant, negative):
    """(sin x, cos x) from those of x's remainder r after ``quadrant`` (0-3) quarter turns of |x|, and x's sign."""
    if quadrant == 1 or quadrant == 3:
        s, c = cos_r, sin_r
    else:
        s, c = sin_r, cos_r
    if quadrant == 2 or quadrant == 3:
        s = -s
    if quadrant == 1 or quadrant == 2:
        c = -c
    if negative:
        s = -s
    return s, c


@kernel_function
def sincos32(x):
    """``(sin x, cos x)`` of a float32 ``x`` (finite; within 2**-23 of the exact values for ``|x| < 8192``)."""
    negative = x < 0
    a = -x if negative else x
    octant = int(a * _FOUR_OVER_PI)
    octant = (octant + 1) & ~1  # the nearest even multiple of pi/4: the remainder lies in [-pi/4, pi/4]
    y = np.float32(octant)
    r = ((a - y * _PI4_A) - y * _PI4_B) - y * _PI4_C
    z = r * r
    sin_r = ((_SIN_1 * z + _SIN_2) * z + _SIN_3) * z * r + r
    cos_r = ((_COS_1 * z + _COS_2) * z + _COS_3) * z * z - _HALF * z + _ONE
    quadrant = (octant >> 1) & 3
    return _unreduced(sin_r, cos_r, quadrant, negative)


@kernel_function
def sin32(x):
    """``sin x`` in float32, the same bits on every target (see :func:`sincos32`)."""
    return sincos32(x)[0]


@kernel_function
def cos32(x):
    """``cos x`` in float32, the same bits on every target (see :func:`sincos32`)."""
    return sincos32(x)[1]


# --------------------------------------------------------------------------------------------------
# exp, log, log1p (Cephes' expf and logf)

_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO; z * _LN2_HI is exact for the z used here
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_MAX = np.float32(88.72283905206835)  # above: inf
_EXP_MIN = np.float32(-103.972084045410)  # below: 0 (the smallest subnormal is about e**-103.28)
_EXP_P = (np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3),
          np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1))
_LOG_P = (np.float32(7.0376836292e-2), np.float32(-1.1514610310e-1), np.float32(1.1676998740e-1),
          np.float32(-1.2420140846e-1), np.float32(1.4249322787e-1), np.float32(-1.6668057665e-1),
          np.float32(2.0000714765e-1), np.float32(-2.4999993993e-1), np.float32(3.3333331174e-1))
_SQRT_HALF = np.float32(0.707106781186547524)
_INF32 = np.float32(np.inf)
_ZERO32 = np.float32(0.0)


@kernel_function
def _power_of_two(n):
    """``2**n`` as a float32, for ``-126 <= n <= 127`` (exact: built from its bits)."""
    return bits_float(np.uint32((n + 127) << 23))


@kernel_function
def exp32(x):
    """``e**x`` of a float32 ``x``, the same bits on every target (NaN gives NaN)."""
    if x != x:
        return x
    if x > _EXP_MAX:
        return _INF32
    if x < _EXP_MIN:
        return _ZERO32
    # (int: CUDA's floor of a float32 is a float32, where Python's and the CPU's is an int)
    n = int(math.floor(_LOG2E * x + _HALF))  # noqa: RUF046
    z = np.float32(n)
    r = (x - z * _LN2_HI) - z * _LN2_LO
    r2 = r * r
    p = _EXP_P[0] * r + _EXP_P[1]
    p = p * r + _EXP_P[2]
    p = p * r + _EXP_P[3]
    p = p * r + _EXP_P[4]
    p = p * r + _EXP_P[5]
    y = p * r2 + r + _ONE
    # y * 2**n, in two exact scalings where 2**n is not a normal float32
    if n > 127:
        y = y * _power_of_two(127)
        n -= 127
    elif n < -126:
        y = y * _power_of_two(-126)
        n += 126
    return y * _power_of_two(n)


@kernel_function
def log32(x):
    """``ln x`` of a float32 ``x``, the same bits on every target (``x <= 0`` gives -inf or NaN; subnormal ``x``
    are scaled into the normal range first)."""
    if x != x or x == _INF32:
        return x
    if x <= _ZERO32:
        return -_INF32 if x == _ZERO32 else np.float32(np.nan)
    scale = 0
    if x < _power_of_two(-126):  # subnormal: bring it into the normal range (exact)
        x = x * _power_of_two(25)
        scale = -25
    bits = float_bits(x)
    e = int((bits >> np.uint32(23)) & np.uint32(0xFF)) - 126 + scale
    m = bits_float(np.uint32((bits & np.uint32(0x807FFFFF)) | np.uint32(0x3F000000)))  # in [0.5, 1)
    if m < _SQRT_HALF:
        e -= 1
        m = m + m - _ONE
    else:
        m = m - _ONE
    z = m * m
    # Horner's scheme, written out as exp32's is
    y = _LOG_P[0] * m + _LOG_P[1]
    y = y * m + _LOG_P[2]
    y = y * m + _LOG_P[3]
    y = y * m + _LOG_P[4]
    y = y * m + _LOG_P[5]
    y = y * m + _LOG_P[6]
    y = y * m + _LOG_P[7]
    y = y * m + _LOG_P[8]
    y = y * m * z
    fe = np.float32(e)
    y = y + _LN2_LO * fe
    y = y - _HALF * z
    return (m + y) + _LN2_HI * fe


@kernel_function
def log1p32(x):
    """``ln(1 + x)`` of a float32 ``x > -1``, accurate for small ``x`` too, the same bits on every target."""
    u = _ONE + x
    if u == _ONE or u == _INF32:  # noqa: SIM109 - two comparisons, not a tuple, in compiled code
        return x
    # log(u) * x / (u - 1) corrects for the rounding of 1 + x (Goldberg's method)
    return log32(u) * (x / (u - _ONE))


# --------------------------------------------------------------------------------------------------
# exact fmod: the remainder of two floats is always representable, and is found here on the integer
# significands by shift-and-subtract (the method of the C libraries' fmod), so no step rounds.


@kernel_function
def _fmod_bits(x_bits, y_bits, mantissa_bits, exponent_mask, sign_shift, nan_bits):
    """``fmod`` on IEEE-754 bit patterns held in uint64 (float32 or float64, by the field sizes given)."""
    one = np.uint64(1)
    sign_bit = one << np.uint64(sign_shift)
    sign = x_bits & sign_bit
    ax = x_bits & (sign_bit - one)
    ay = y_bits & (sign_bit - one)
    shift = np.uint64(mantissa_bits)
    hidden = one << shift
    ex = np.int64(ax >> shift)
    ey = np.int64(ay >> shift)
    if ay == 0 or ey == exponent_mask or ex == exponent_mask:
        if ey == exponent_mask and (ay & (hidden - one)) == 0 and ex != exponent_mask:
            return x_bits  # fmod(x, +-inf) = x for finite x
        return nan_bits
    if ax < ay:
        return x_bits
    if ax == ay:
        return sign
    # significands with the hidden bit; subnormals are normalised by shifting
    mx = ax & (hidden - one)
    if ex == 0:
        ex = 1
        while mx < hidden:
            mx <<= one
            ex -= 1
    else:
        mx |= hidden
    my = ay & (hidden - one)
    if ey == 0:
        ey = 1
        while my < hidden:
            my <<= one
            ey -= 1
    else:
        my |= hidden
    while ex > ey:
        if mx >= my:
            mx -= my
            if mx == 0:
                return sign
        mx <<= one
        ex -= 1
    if mx >= my:
        mx -= my
        if mx == 0:
            return sign
    while mx < hidden:
        mx <<= one
        ex -= 1
    if ex > 0:
        return sign | (np.uint64(ex) << shift) | (mx - hidden)
    return sign | (mx >> np.uint64(1 - ex))


@kernel_function
def fmod32(x, y):
    """C's ``fmodf(x, y)``: ``x - n * y`` with ``n = trunc(x / y)``, exact (the sign of ``x``)."""
    bits = _fmod_bits(np.uint64(float_bits(x)), np.uint64(float_bits(y)), 23, 0xFF, 31,
                      np.uint64(0x7FC00000))
    return bits_float(np.uint32(bits))


@kernel_function
def fmod64(x, y):
    """C's ``fmod(x, y)`` for float64, exact (the sign of ``x``)."""
    return bits_double(_fmod_bits(double_bits(x), double_bits(y), 52, 0x7FF, 63,
                                  np.uint64(0x7FF8000000000000)))


@kernel_function
def mod32(x, y):
    """``x % y`` in float32 as Python and NumPy define it (the sign of ``y``), the same bits on every target."""
    r = fmod32(x, y)
    if r == 0:
        return np.float32(0.0) if y > 0 else -np.float32(0.0)  # a zero takes the sign of y, as in NumPy
    if (r < 0) != (y < 0):
        r = r + y
    return r


@kernel_function
def mod64(x, y):
    """``x % y`` in float64 as Python and NumPy define it (the sign of ``y``), the same bits on every target."""
    r = fmod64(x, y)
    if r == 0:
        return 0.0 if y > 0 else -0.0  # a zero takes the sign of y, as in NumPy
    if (r < 0) != (y < 0):
        r = r + y
    return r


# --------------------------------------------------------------------------------------------------
# float64 sin and cos, correctly rounded in practice (double-double arithmetic)
#
# The classic-control envs compute in float64 as Gymnasium does. The targets' own sin and cos round some inputs
# differently (the C library misrounds about 0.1%, libdevice's are within 2 ulp), which a chaotic env (Acrobot)
# amplified until CPU and GPU parted after a few hundred steps. These carry about 68 bits through the reduction
# and the polynomial, so the rounded result is the correctly rounded one but for inputs within about 2**-68 of a
# rounding boundary (5 misses in 600,000 random inputs), and the same bits on every target always.

# Veltkamp's splitter: a double into two halves of 26 bits, whose products are exact
_SPLITTER = 134217729.0  # 2**27 + 1
_TWO_OVER_PI = 0.63661977236758134308
# pi/2 = _PIO2_1 + _PIO2_2 + _PIO2_3 + _PIO2_3T (fdlibm's parts): the first three have 33 significant bits, so
# n * part is exact for |n| < 2**20
_PIO2_1 = 1.57079632673412561417e+00
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3 = 2.02226624871116645580e-21
_PIO2_3T = 8.47842766036889956997e-32
_REDUCTION_LIMIT = 1.6e6  # |x| below: |n| < 2**20
_TWO_PI = 2 * math.pi
_TINY = 2.0**-27  # below: x**3 / 6 and x**2 / 2 are under half an ulp of x and of 1


def _double_double(value: Fraction) -> tuple[float, float]:
    """``value`` as (hi, lo) with hi + lo within 2**-106 of it."""
    hi = float(value)
    return hi, float(value - Fraction(hi))


def _taylor(first: int) -> list[Fraction]:
    """(-1)**k / (2k + first)! for k = 0, 1, ...: sin's (``first`` = 1) or cos's (0) series in z = x**2."""
    return [Fraction((-1) ** k, math.factorial(2 * k + first)) for k in range(10)]


# the series' first three coefficients in double-double, the rest (whose terms are below 5e-5 on [-pi/4, pi/4])
# in double
_SIN_0, _SIN_1D, _SIN_2D = (_double_double(c) for c in _taylor(1)[:3])
_COS_0, _COS_1D, _COS_2D = (_double_double(c) for c in _taylor(0)[:3])
_SIN_TAIL = tuple(float(c) for c in _taylor(1)[3:])
_COS_TAIL = tuple(float(c) for c in _taylor(0)[3:])


@kernel_function
def _two_sum(a, b):
    """(s, e): s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


@kernel_function
def _fast_two_sum(a, b):
    """(s, e) as :func:`_two_sum`, for ``|a| >= |b|`` (Dekker)."""
    s = a + b
    return s, b - (s - a)


@kernel_function
def _two_product(a, b):
    """(p, e): p = fl(a * b) and p + e = a * b exactly, without a fused multiply-add (Dekker, Veltkamp)."""
    p = a * b
    t = _SPLITTER * a
    a_hi = t - (t - a)
    a_lo = a - a_hi
    t = _SPLITTER * b
    b_hi = t - (t - b)
    b_lo = b - b_hi
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


@kernel_function
def _dd_add(a_hi, a_lo, b_hi, b_lo):
    s, e = _two_sum(a_hi, b_hi)
    return _fast_two_sum(s, e + (a_lo + b_lo))


@kernel_function
def _dd_mul(a_hi, a_lo, b_hi, b_lo):
    p, e = _two_product(a_hi, b_hi)
    return _fast_two_sum(p, e + (a_hi * b_lo + a_lo * b_hi))


@kernel_function
def _series(z_hi, z_lo, tail, c2, c1, c0):
    """c0 + c1 z + c2 z**2 + z**3 (tail's polynomial in z), in double-double (the tail in double)."""
    t = tail[len(tail) - 1]
    for k in range(len(tail) - 2, -1, -1):
        t = t * z_hi + tail[k]
    hi, lo = _dd_mul(t, 0.0, z_hi, z_lo)
    hi, lo = _dd_add(hi, lo, c2[0], c2[1])
    hi, lo = _dd_mul(hi, lo, z_hi, z_lo)
    hi, lo = _dd_add(hi, lo, c1[0], c1[1])
    hi, lo = _dd_mul(hi, lo, z_hi, z_lo)
    return _dd_add(hi, lo, c0[0], c0[1])


@kernel_function
def sincos64(x):
    """``(sin x, cos x)`` of a float64 ``x``, the same bits on every target: for ``|x| < 1.6e6`` the correctly
    rounded values but for inputs within about 2**-68 of a rounding boundary; beyond, ``x`` is first reduced
    exactly by 2 pi rounded to a double, which costs an absolute error up to about ``|x| * 4e-17``. NaN for NaN
    and infinities."""
    if not abs(x) < _REDUCTION_LIMIT:  # (NaN too)
        if x != x or abs(x) == math.inf:
            return math.nan, math.nan
        x = fmod64(x, _TWO_PI)
    if abs(x) < _TINY:  # sin x = x and cos x = 1 once rounded (the sign of a zero kept)
        return x, 1.0
    negative = x < 0
    a = -x if negative else x
    n = int(a * _TWO_OVER_PI + 0.5)  # the nearest multiple of pi/2: the remainder lies in [-pi/4, pi/4]
    fn = float(n)
    # r = a - n pi/2 in double-double: a - n * _PIO2_1 is exact (Sterbenz), n * _PIO2_2 and n * _PIO2_3 are
    # exact products
    if n == 0:  # (|x| < pi/4, as Cartpole's angles always are)
        r_hi, r_lo = a, 0.0
    else:
        r_hi, r_lo = _two_sum(a - fn * _PIO2_1, -fn * _PIO2_2)
        r_hi, r_lo = _dd_add(r_hi, r_lo, -fn * _PIO2_3, 0.0)
        p, e = _two_product(fn, _PIO2_3T)
        r_hi, r_lo = _dd_add(r_hi, r_lo, -p, -e)
    z_hi, z_lo = _dd_mul(r_hi, r_lo, r_hi, r_lo)
    s_hi, s_lo = _series(z_hi, z_lo, _SIN_TAIL, _SIN_2D, _SIN_1D, _SIN_0)
    sin_r = _dd_mul(s_hi, s_lo, r_hi, r_lo)[0]  # (the rounded sum of the normalised pair)
    cos_r = _series(z_hi, z_lo, _COS_TAIL, _COS_2D, _COS_1D, _COS_0)[0]
    quadrant = n & 3
    return _unreduced(sin_r, cos_r, quadrant, negative)


@kernel_function
def sin64(x):
    """``sin x`` in float64, the same bits on every target (see :func:`sincos64`)."""
    return sincos64(x)[0]


@kernel_function
def cos64(x):
    """``cos x`` in float64, the same bits on every target (see :func:`sincos64`)."""
    return sincos64(x)[1]
