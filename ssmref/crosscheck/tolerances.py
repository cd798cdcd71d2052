"""The tolerance table and its factors: ``(rtol, atol)`` per dtype, doubled for gradients,
grown by ``g(L)`` with a recurrence's effective length ``L``; which outputs are gradients, and
which axis of an output is its sequence axis."""

import math

import numpy as np

from ssmref.crosscheck.dtypes import _check_dtype

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
#: Baseline mode: a candidate may be this many times less accurate than the naive computation.
DEFAULT_K = 4.0


def length_factor(length):
    """``g(L) = max(1, sqrt(L / 64))``: how the tolerance grows with the effective length ``L``."""
    return max(1.0, math.sqrt(max(float(length), 1.0) / LENGTH_REF))


def tolerance(dtype, cls="value", length=1, *, rtol=None, atol=None):
    """``(rtol, atol)`` of the table for ``dtype``, output class ``"value"`` or ``"grad"``, and
    effective length ``length``; ``atol`` (relative to the output's scale) includes ``g(L)``.
    ``rtol`` / ``atol`` replace the table's values (the class and length factors still apply)."""
    _check_dtype(dtype)
    if cls not in ("value", "grad"):
        raise ValueError(f"cls must be 'value' or 'grad', got {cls!r}")
    r, a = VALUE_TOLERANCES[dtype]
    r, a = (r if rtol is None else rtol), (a if atol is None else atol)
    f = GRAD_FACTOR if cls == "grad" else 1.0
    return r * f, a * f * length_factor(length)


def _spectral_radius(A):
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(A, dtype=np.float64)))))


def effective_length(kind, inputs, attrs):
    """``L = min(T, 1 / (1 - rho(A)))`` for the recurrences (``T`` for ``rho >= 1``), else 1.

    ``T`` is the sequence length (the kernel's length for ``ssm_kernel``); ``1 / (1 - rho)`` is
    the number of past steps whose rounding errors still reach an output (``rho^k`` decays).
    """
    if kind in ("ssm_scan", "ssm_scan_vjp", "ssm_kernel", "policy"):
        A = inputs["params.ssm.A"] if kind == "policy" else inputs["A"]
        T = int(attrs["length"]) if kind == "ssm_kernel" else int(np.shape(inputs[
            "obs" if kind == "policy" else "u"])[1])
        rho = _spectral_radius(A)
        return float(T) if rho >= 1.0 else min(float(T), 1.0 / (1.0 - rho))
    return 1.0


def output_class(kind, name):
    """``"grad"`` for gradients (and the adapter's trajectory, made of gradient steps), else
    ``"value"``."""
    if kind == "ssm_scan_vjp" and name in ("dA", "dB", "dC", "dD", "du", "dh0"):
        return "grad"
    if name.startswith(("grad.", "meta_grad")) or kind == "adapter":
        return "grad"
    return "value"


def sequence_axis(kind, name):
    """``(axis, label)`` of an output's sequence axis (time ``t``, lag ``k``, adapter ``step``),
    or ``None``; the checker reports the first diverging index along it."""
    if kind in ("ssm_scan", "ssm_scan_vjp") and name in ("y", "du"):
        return 1, "t"
    if kind == "ssm_kernel" and name == "K":
        return 0, "k"
    if kind == "policy" and name in ("mean", "logits", "value", "log_prob"):
        return 1, "t"
    if kind == "adapter" and name.startswith("traj."):
        return 0, "step"
    return None
