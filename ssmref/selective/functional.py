"""The pieces every selective SSM shares: the step-size map, the gate and the diagonal scan.

    softplus(x) = log(1 + e^x)                  exact: logaddexp(0, x), no threshold
    silu(z)     = z σ(z),   σ(z) = (1 + tanh(z/2)) / 2
    Δ           = clip(softplus?(δ + bias), lo, hi)        (each part optional)
    h_t         = a_t ⊙ h_{t-1} + b_t,   h_{-1} = h0       (time on axis 0)

The scan has two evaluations that agree to rounding: ``"recurrence"`` is
:func:`ssmref.recurrence.linear_recurrence` (one autograd primitive, adjoint VJP, one tape node per
call, sequential depth T); ``"parallel"`` is :func:`ssmref.ssm.associative_scan` over the pairs
``(a_t, b_t)`` with the composition of affine maps ``x -> a x + b`` (depth log T, ~2x the work).

Everything here is unchecked math: the public functions of :mod:`ssmref.selective` validate first.
"""

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp, primitive

from ssmref.recurrence import diagonal_combine, linear_recurrence
from ssmref.ssm import associative_scan

SCAN_METHODS = ("recurrence", "parallel")


def softplus(x):
    """``log(1 + e^x)`` without overflow or threshold: ``logaddexp(0, x)``; its derivative is
    ``σ(x) = exp(x - softplus(x))``, also stable, and smooth to every order."""
    return np.logaddexp(0.0, x)


def sigmoid(x):
    """``σ(x) = 1 / (1 + e^-x)`` as ``(1 + tanh(x/2)) / 2`` (no overflow for any finite ``x``)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def silu(z):
    """``silu(z) = z σ(z)`` (torch's ``F.silu``), the gate of ``out = y · silu(z)``."""
    return z * sigmoid(z)


def step_size(dt, bias=None, softplus_=False, limit=None):
    """``Δ = clip(softplus(dt + bias), *limit)``: the bias first, then the (exact) softplus, then
    the clamp, in mamba's order (``_chunk_cumsum_fwd``); each part only when given/true.
    ``bias`` broadcasts against ``dt`` (the caller aligns the axes)."""
    if bias is not None:
        dt = dt + bias
    if softplus_:
        dt = softplus(dt)
    if limit is not None:
        dt = np.clip(dt, limit[0], limit[1])
    return dt


@primitive
def contiguous(x):
    """``x`` as a C-contiguous array (a copy only if needed); its VJP makes the cotangent
    contiguous too.  The identity in value: used around batched ``matmul``, which leaves BLAS for
    a slow loop when a transposed view has unusual batch strides (10-100x here)."""
    return onp.ascontiguousarray(x)


defvjp(contiguous, lambda ans, x: lambda g: contiguous(g))


def matmul(a, b):
    """``a @ b`` (batched) on contiguous operands, with a contiguous cotangent in reverse mode."""
    return contiguous(np.matmul(contiguous(a), contiguous(b)))


def diagonal_scan(a, b, h0=None, method="recurrence"):
    """All states ``h: (T, ...)`` of ``h_t = a_t ⊙ h_{t-1} + b_t`` with ``h_{-1} = h0``.

    ``b: (T, ...)``; ``a: (T, ...)`` broadcastable to ``b`` with the same leading T (a decay shared
    by trailing axes stays unexpanded); ``h0`` broadcastable to ``b[0]`` or ``None`` (zeros).  ``method="recurrence"``: the adjoint primitive;
    ``"parallel"``: the log-depth associative scan (``h0`` enters as ``b_0 + a_0 h0``).
    """
    if method == "recurrence":
        return linear_recurrence(a, b, h0)
    if h0 is not None:
        b = np.concatenate([(b[0] + a[0] * h0)[None], b[1:]], axis=0)       # (T, ...)
    _, h = associative_scan(diagonal_combine, (a, b))
    return h
