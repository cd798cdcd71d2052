"""Mamba's selective scan (S6) and its one-step decoding update.

For each batch row, channel ``i < d`` and state ``j < n`` (``x_{-1} = 0``, or the given state)::

    Δ_t   = softplus(δ_t + δ_bias)   if delta_softplus   else   δ_t + δ_bias
    x_t   = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t           (exact exp for A, Euler for B)
    y_t   = Σ_j C_t x_t  (+ D u_t)                         (2·Re(Σ_j C_t x_t) for complex A)
    out_t = y_t · silu(z_t)                                when z is given

``B_t, C_t``: fixed ``(d, n)``, varying ``(b, n, L)`` (shared by the channels) or grouped
``(b, g, n, L)`` (channel ``i`` reads group ``i // (d/g)``); for complex ``A`` a varying B/C is
complex, or real with ``(re, im)`` interleaved on the time axis, ``(b, n, 2L)`` (mamba's layout).

Implementation: everything is moved to a time-first layout ``(L, b, d, n)`` and the recurrence is
one call of :func:`~ssmref.selective.functional.diagonal_scan` (the adjoint primitive
``ssmref.recurrence.linear_recurrence``, or the associative scan); :func:`selective_core` is that
math, unchecked, shared by :func:`selective_scan` and :func:`selective_state_update`.

Reference: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
Algorithm 2; mamba_ssm's ``selective_scan_ref`` and ``selective_state_update_ref``.
"""

from typing import NamedTuple

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.selective import args
from ssmref.selective.functional import contiguous, diagonal_scan, silu, step_size


class Grouped(NamedTuple):
    """A time-varying B or C shared by groups of channels: ``values: (L, b, g, n)``; channel
    ``i < d`` reads group ``i // (d/g)`` (``g = 1``: shared by all channels)."""
    values: object


def times_input(v, B):
    """``v_t ⊙ B_t``: ``v: (L, b, *c)`` -> ``(L, b, *c, n)``.  Grouped B: one batched outer
    product ``(k, 1) @ (1, n)`` per group (its reverse mode is matrix products, not reductions);
    otherwise B broadcasts against ``(L, b, *c, n)``."""
    if isinstance(B, Grouped):
        L, b, d = np.shape(v)
        g, n = np.shape(B.values)[2:]
        outer = np.matmul(np.reshape(v, (L, b, g, d // g, 1)), B.values[:, :, :, None, :])
        return np.reshape(outer, (L, b, d, n))                     # (L, b, g, k, n) -> (L, b, d, n)
    return v[..., None] * B


def read_out(x, C):
    """``Σ_n C_t x_t``: ``x: (L, b, *c, n)`` -> ``(L, b, *c)`` (grouped C: batched mat-vec)."""
    if isinstance(C, Grouped):
        L, b, d, n = np.shape(x)
        g = np.shape(C.values)[2]
        y = np.matmul(np.reshape(x, (L, b, g, d // g, n)), C.values[..., None])    # (L, b, g, k, 1)
        return np.reshape(y, (L, b, d))
    return np.sum(C * x, axis=-1)


def selective_core(u, dt, A, B, C, D=None, z=None, h0=None, method="recurrence"):
    """The selective recurrence on time-first arrays (unchecked, differentiable).

    ``u, dt, z: (L, b, *c)`` with channel dims ``c`` (``(d,)`` or ``(h, d)``), ``dt`` already
    processed (bias, softplus); ``A: (*c, n)``; ``B, C`` broadcastable to ``(L, b, *c, n)``, or
    :class:`Grouped` ``(L, b, g, n)`` when ``c = (d,)``;
    ``D: c`` or ``None``; ``h0``: broadcastable to ``(b, *c, n)`` or ``None`` (zeros).
    Returns ``out: (L, b, *c)`` and the last state ``x_{L-1}: (b, *c, n)``.
    """
    # x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t
    decay = np.exp(dt[..., None] * A)                              # (L, b, *c, n)
    drive = times_input(dt * u, B)                                 # (L, b, *c, n)
    x = diagonal_scan(decay, drive, h0, method)                    # (L, b, *c, n)
    # y_t = Σ_j C_t x_t (2·Re for complex A) + D u_t
    y = read_out(x, C)                                             # (L, b, *c)
    if onp.iscomplexobj(y):
        y = 2.0 * np.real(y)
    if D is not None:
        y = y + D * u
    # out_t = y_t · silu(z_t)
    if z is not None:
        y = y * silu(z)
    return y, x[-1]


def time_first_bc(X, complex_A):
    """B or C of the selective scan, time first: fixed ``(d, n)`` -> ``(1, 1, d, n)``; varying
    ``(b, n, L)``, grouped ``(b, g, n, L)`` -> ``(L, b, g, n)`` (varying: ``g = 1``); for complex
    ``A`` a real one is ``(re, im)`` interleaved, ``(b, [g,] n, 2L)``, and is made complex (exact).
    The one decoding of the layouts, used by every form of the scan and by the kit."""
    if np.ndim(X) == 2:
        return X[None, None]                                       # (1, 1, d, n)
    if np.ndim(X) == 3:
        X = X[:, None]                                             # (b, 1, n, Lx)
    if complex_A and not onp.iscomplexobj(getval(X)):
        X = X[..., 0::2] + 1j * X[..., 1::2]                       # (b, g, n, L) from (re, im)
    return np.transpose(X, (3, 0, 1, 2))                           # (L, b, g, n)


def _operand(X, complex_A):
    # time_first_bc in selective_core's form: fixed as is, the others Grouped (contiguous)
    V = time_first_bc(X, complex_A)
    return V if np.ndim(X) == 2 else Grouped(contiguous(V))


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, method="recurrence"):
    """Mamba's selective scan: ``out (b, d, L)``, or ``(out, last_state (b, d, n))``.

        Δ_t = softplus(δ_t + δ_bias) (if delta_softplus),   x_t = exp(Δ_t A) x_{t-1} + Δ_t B_t u_t,
        y_t = Σ_n C_t x_t (2·Re for complex A) + D u_t,     out = y · silu(z),   x_{-1} = 0.

    Shapes (mamba_ssm's ``selective_scan_fn``): ``u, delta, z: (b, d, L)`` real; ``A: (d, n)`` real
    or complex; ``B, C``: ``(d, n)``, ``(b, n, L)``, ``(b, g, n, L)`` with ``d % g == 0``, and for
    complex ``A`` complex or real interleaved ``(b, [g,] n, 2L)``; ``D, delta_bias: (d,)`` real.
    ``last_state`` is complex for complex ``A`` and differentiable (mamba's CUDA op drops its
    gradient).  ``method``: ``"recurrence"`` (default; the adjoint primitive) or ``"parallel"``
    (log-depth associative scan); they agree to rounding.  Nothing is modified in place.
    See docs/selective.md for the conventions; softplus is exact (no threshold at 20).
    """
    a = args.scan_args(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                       method)
    t_first = lambda v: None if v is None else np.transpose(v, (2, 0, 1))   # noqa: E731  (L, b, d)
    dt = step_size(t_first(a.delta), a.delta_bias, delta_softplus)  # (L, b, d)
    cA = args.is_complex(a.A)
    out, last = selective_core(t_first(a.u), dt, a.A, _operand(a.B, cA), _operand(a.C, cA), a.D,
                               t_first(a.z), method=method)
    out = np.transpose(out, (1, 2, 0))                             # (b, d, L)
    return (out, last) if return_last_state else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decoding step of the selective SSM: ``(out, new_state)``; ``state`` is not modified.

        Δ = softplus(dt + dt_bias) (if dt_softplus),   new_state = exp(Δ A) ⊙ state + Δ B x,
        out = Σ_n C new_state (2·Re for complex A) + D x,   out = out · silu(z).

    Shapes (mamba_ssm's ``selective_state_update``), without heads: ``state (b, d, n)``,
    ``x, dt, z (b, d)``, ``A (d, n)``, ``B, C (b, n)`` (or ``(b, 1, n)``), ``D, dt_bias (d,)``;
    with heads: ``state (b, h, d, n)``, ``x, dt, z (b, h, d)``, ``A (h, d, n)``, ``B, C (b, g, n)``
    with ``h % g == 0`` (head ``i`` reads group ``i // (h/g)``), ``D, dt_bias (h, d)``.
    ``out`` has the shape of ``x``.  Complex ``A`` (complex ``state``, ``B``, ``C`` allowed) is an
    extension with :func:`selective_scan`'s ``2·Re`` convention; mamba's kernel is real only.
    """
    a = args.step_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    state, x, A, B, C = a.state, a.x, a.A, a.B, a.C
    h = np.shape(state)[1]
    g = np.shape(B)[1]
    if g > 1:
        B, C = (np.repeat(X, h // g, axis=1) for X in (B, C))      # (b, h, n): head i -> group i // (h/g)
    delta = step_size(a.dt, a.dt_bias, dt_softplus)                # (b, h, d)
    add_t = lambda v: None if v is None else v[None]               # noqa: E731  (1, b, h, d)
    out, new_state = selective_core(x[None], delta[None], A, B[None, :, :, None, :],
                                     C[None, :, :, None, :], a.D, add_t(a.z), h0=state)
    out = out[0]                                                   # (b, h, d)
    if not a.has_heads:
        out, new_state = out[:, 0], new_state[:, 0]                # (b, d), (b, d, n)
    return out, new_state
