"""The precisions a port is checked in: rounding to them, arithmetic in them, and the tolerance
table.

Rounding: float64 values to float32, float16 (NumPy's correctly rounded conversions) or bfloat16
(emulated on the float32 bit pattern, round to nearest even, as ``torch`` converts).

Tolerances, per output, for the expected ``y`` (float64) and the candidate ``x``::

    s      = max_i |y_i|                        (the output's scale; 1 if y is all zeros)
    tol_i  = rtol |y_i| + atol s g(L)           (table mode)
    g(L)   = max(1, sqrt(L / 64))               (L: the effective length of a recurrence)

``(rtol, atol)`` from :data:`VALUE_TOLERANCES`, both doubled for gradients (:data:`GRAD_FACTOR`);
``κ`` is the output's cancellation factor (1 unless the kind states one, see
:func:`ssmref.crosscheck.registry.condition`), which scales ``atol`` in every dtype and mode.

Power: an output ``x = (1 + δ) y`` off by a relative ``δ`` fails iff ``|δ| > rtol + tol_abs / s``
(at the entry with ``|y_i| = s``), so ``d = rtol + tol_abs / s`` is the smallest relative error
the tolerance can detect (:func:`detectable`).  A check whose ``d`` exceeds the power limit of
its dtype (:data:`POWER_LIMITS`) cannot tell a correct port from a wrong one: an output within it
is *inconclusive*, not passed.
"""

import math

import numpy as onp

DTYPES = ("float64", "float32", "float16", "bfloat16")

#: ``(rtol, atol)`` for values; ``atol`` is multiplied by the output's scale ``s = max |y|``.
VALUE_TOLERANCES = {
    "float64": (1e-7, 1e-7),      # torch.testing.assert_close defaults for float64
    "float32": (1.3e-6, 1e-5),    # torch.testing.assert_close defaults for float32
    "float16": (1e-3, 5e-3),      # rtol: torch.testing (float16); atol: Mamba's fp16 kernel tests
    "bfloat16": (1.6e-2, 5e-2),   # rtol: torch.testing (bfloat16); atol: Mamba's bf16 kernel tests
}
#: Gradients (a second, reverse pass plus sums over time) get both tolerances multiplied by 2,
#: as Mamba's tests do for the input gradients (``rtol * 2, atol * 2``).
GRAD_FACTOR = 2.0
#: ``g(L) = max(1, sqrt(L / LENGTH_REF))``: the table applies as it is up to 64 effective steps.
LENGTH_REF = 64
#: Baseline mode: a candidate may be this many times less accurate than the less accurate of the
#: two naive computations, the step loop and the log-depth form (``tol = k E_base + atol s``).
DEFAULT_K = 4.0
#: An output within its tolerance is *inconclusive* (not passed) when the smallest relative error
#: the tolerance can detect (:func:`detectable`) exceeds the limit of the port's dtype: 1 % in
#: float64 and float32; in float16 2.5 %, above its gradients' table tolerance (1.2 %: every
#: gradient check would be inconclusive at 1 %) and below 3 %; in bfloat16 15 %, above its table
#: tolerance for gradients (13.2 %; values 6.6 %: at 1 % no bfloat16 check could pass) and half
#: the 30 % that must never pass.  Long memories grow a tolerance past these limits:
#: inconclusive, with a remedy.
POWER_LIMITS = {"float64": 0.01, "float32": 0.01, "float16": 0.025, "bfloat16": 0.15}
POWER_LIMIT = POWER_LIMITS["float64"]


def check_dtype(dtype, name="dtype"):
    """``dtype`` if it is one of :data:`DTYPES`, else ``ValueError``."""
    if dtype not in DTYPES:
        raise ValueError(f"{name} must be one of {list(DTYPES)}, got {dtype!r}")
    return dtype


# torch's float32 -> bfloat16: add 0x7FFF + lsb to the bit pattern, clear the low 16 bits.
def bfloat16_round(x32):
    """float32 array -> float32 array holding the nearest bfloat16 (ties to even).  Infinities stay
    infinite, values beyond the largest bfloat16 round to inf, NaNs stay NaN (quiet)."""
    x32 = onp.asarray(x32, dtype=onp.float32)
    bits = onp.array(x32, order="C").reshape(-1).view(onp.uint32).astype(onp.uint64)
    lsb = (bits >> onp.uint64(16)) & onp.uint64(1)
    rounded = (bits + onp.uint64(0x7FFF) + lsb) & onp.uint64(0xFFFF0000)
    quiet_nan = (bits | onp.uint64(0x00400000)) & onp.uint64(0xFFFF0000)
    out = onp.where(onp.isnan(x32).reshape(-1), quiet_nan, rounded).astype(onp.uint32)
    return out.view(onp.float32).reshape(x32.shape)


def round_to_dtype(x, dtype):
    """``x`` rounded to the nearest ``dtype`` value, returned as float64 (exactly representable).

    float32 and float16: NumPy's correctly rounded conversion from float64.  bfloat16: first to
    float32, then :func:`bfloat16_round` (the double rounding ``torch`` does too).  Complex arrays
    have their real and imaginary parts rounded (complex128 returned).  Integer arrays are returned
    unchanged.
    """
    check_dtype(dtype)
    a = onp.asarray(x)
    if a.dtype.kind == "c":
        return round_to_dtype(a.real, dtype) + 1j * round_to_dtype(a.imag, dtype)
    if a.dtype.kind != "f":
        return a
    with onp.errstate(over="ignore", invalid="ignore"):
        if dtype == "float64":
            return a.astype(onp.float64)
        if dtype == "float32":
            return a.astype(onp.float32).astype(onp.float64)
        if dtype == "float16":
            return a.astype(onp.float16).astype(onp.float64)
        return bfloat16_round(a.astype(onp.float32)).astype(onp.float64)


def rounder(dtype):
    """``(work, R)`` for computing naively in ``dtype``: the working NumPy dtype and the function
    that rounds an array of it to the nearest ``dtype`` value (float16 and bfloat16 values are
    held in float32, so products accumulate in float32, as GPUs do).  ``R`` rounds the real and
    imaginary parts of a complex array (kept in the complex counterpart of ``work``)."""
    check_dtype(dtype)
    if dtype == "float64":
        work, real = onp.float64, lambda x: onp.asarray(x, dtype=onp.float64)
    elif dtype == "float32":
        work, real = onp.float32, lambda x: onp.asarray(x, dtype=onp.float32)
    elif dtype == "float16":
        work, real = onp.float32, lambda x: onp.asarray(x, dtype=onp.float16).astype(onp.float32)
    else:
        work, real = onp.float32, bfloat16_round

    def R(x):
        if onp.iscomplexobj(x):
            return (real(onp.real(x)) + 1j * real(onp.imag(x))).astype(onp.result_type(work, 1j))
        return real(x)
    return work, R


def length_factor(length):
    """``g(L) = max(1, sqrt(L / 64))``: how the tolerance grows with the effective length ``L``."""
    return max(1.0, math.sqrt(max(float(length), 1.0) / LENGTH_REF))


def detectable(rtol, tol_abs, scale):
    """``rtol + tol_abs / s``: the smallest relative error ``δ`` of an output ``x = (1 + δ) y``
    that its tolerance ``tol_i = rtol |y_i| + tol_abs`` detects (``rtol`` ``None``: 0)."""
    return (rtol or 0.0) + tol_abs / scale


def check_power_limit(power_limit, dtype="float64"):
    """``power_limit`` if it is a number in ``(0, inf]`` (``None``: the limit of ``dtype``,
    :data:`POWER_LIMITS`), else ``ValueError``."""
    if power_limit is None:
        return POWER_LIMITS[check_dtype(dtype)]
    if isinstance(power_limit, bool) or not isinstance(power_limit, (int, float)) \
            or not power_limit > 0:
        raise ValueError(f"power_limit must be a number > 0 (inf: never inconclusive), got "
                         f"{power_limit!r}")
    return float(power_limit)


def tolerance(dtype, cls="value", length=1, *, rtol=None, atol=None, kappa=1.0):
    """``(rtol, atol)`` of the table for ``dtype``, output class ``"value"`` or ``"grad"``, and
    effective length ``length``; ``atol`` (relative to the output's scale) includes ``g(L)`` and
    the output's cancellation factor ``kappa`` (``κ >= 1``).
    ``rtol`` / ``atol`` replace the table's values (the class, length and κ factors still apply)."""
    check_dtype(dtype)
    if cls not in ("value", "grad"):
        raise ValueError(f"cls must be 'value' or 'grad', got {cls!r}")
    r, a = VALUE_TOLERANCES[dtype]
    r, a = (r if rtol is None else rtol), (a if atol is None else atol)
    f = GRAD_FACTOR if cls == "grad" else 1.0
    return r * f, a * f * length_factor(length) * max(float(kappa), 1.0)
