"""The definitions, written as plain loops over time, with their arithmetic passed in.

    Δ_t   = clip(softplus(δ_t + δ_bias), lo, hi)      softplus(v) = max(v, 0) + log1p(e^{−|v|})
    selective scan:  x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t,   y_t = Σ_n C_t x_t (2·Re for complex A)
    SSD:             s_t = exp(Δ_t A_h) s_{t-1} + Δ_t x_t B_tᵀ,  y_t = s_t C_t
    out_t = (y_t + D u_t) · silu(z_t),   silu(z) = z · 1 / (1 + e^{−z})

Each loop takes an :class:`Arithmetic`: ``R`` is applied to the result of every operation, so
the same code is the float64 definition (``EXACT``: ``R`` the identity, the baseline every fast
form is tested against) and, with ``R`` rounding to a dtype, the cross-check kit's naive
computation in that dtype (:mod:`ssmref.crosscheck.families.selective_naive`).  Same arguments
and results as :func:`ssmref.selective.selective_scan`, :func:`ssmref.selective.ssd` and
:func:`ssmref.selective.selective_state_update` (head form), but no validation, no layout tricks
(groups copied per channel, one step per Python iteration, a segment restart as a 0/1 factor on
the state) and autograd taping every step: slow, for small tests.  Inputs must already be valid.

Reference: Gu & Dao (2023), Algorithm 2; Dao & Gu (ICML 2024); mamba_ssm's ``selective_scan_ref``,
``ssd_minimal_discrete`` and ``selective_state_update_ref``.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.selective.scan import time_first_bc


class Arithmetic:
    """The arithmetic a loop runs in: ``R(v)`` rounds the result of an operation (``None``: the
    identity, exact float64) and ``work`` is the NumPy dtype values are held in."""

    def __init__(self, R=None, work=onp.float64):
        self.R = (lambda v: v) if R is None else R
        self.work = work

    def arr(self, v):
        """An input (float64 or complex128) in the working precision, rounded; integer arrays
        unchanged."""
        v = onp.asarray(v)
        if v.dtype.kind == "c":
            return self.R(v.astype(onp.result_type(self.work, onp.complex64)))
        return self.R(v.astype(self.work)) if v.dtype.kind == "f" else v

    def step(self, dt, bias=None, softplus=False, limit=None):
        """``Δ = clip(softplus(dt + bias), *limit)``, each part when given."""
        R = self.R
        if bias is not None:
            dt = R(dt + bias)
        if softplus:
            dt = R(np.maximum(dt, 0.0) + R(np.log1p(R(np.exp(-np.abs(dt))))))
        if limit is not None:
            dt = np.clip(dt, limit[0], limit[1])                   # exact
        return dt

    def silu(self, z):
        R = self.R
        return R(z * R(1.0 / R(1.0 + R(np.exp(-z)))))

    def gate(self, y, D, u, z):
        """``R(R(y + R(D u)) · silu(z))`` (each part when given)."""
        if D is not None:
            y = self.R(y + self.R(D * u))
        if z is not None:
            y = self.R(y * self.silu(z))
        return y

    def recurrence(self, a, drive, s):
        """All states of ``s_t = R(R(a_t s_{t-1}) + drive_t)`` (time on axis 0)."""
        states = []
        for t in range(np.shape(drive)[0]):
            s = self.R(self.R(a[t] * s) + drive[t])
            states.append(s)
        return np.stack(states)


EXACT = Arithmetic()


def per_channel(X, d, complex_A):
    """B or C as ``(L, b, d, n)``, channel ``i`` holding its group's copy (fixed: ``(1, 1, d, n)``)."""
    V = time_first_bc(X, complex_A)                                # (L, b, g, n) or (1, 1, d, n)
    return V if np.ndim(X) == 2 else np.repeat(V, d // np.shape(V)[2], axis=2)


def selective_scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False, *, arith=EXACT):
    """:func:`ssmref.selective.selective_scan` as a loop over ``t`` (same shapes and results)."""
    R = arith.R
    b, d, L = np.shape(u)
    complex_A = onp.iscomplexobj(getval(A))
    dt = arith.step(delta, None if delta_bias is None else delta_bias[:, None], delta_softplus)
    tf = lambda v: np.transpose(v, (2, 0, 1))                      # noqa: E731  (L, b, d)
    dt, ut = tf(dt), tf(u)
    a = R(np.exp(R(dt[..., None] * A)))                           # (L, b, d, n)
    drive = R(R(dt * ut)[..., None] * per_channel(B, d, complex_A))
    zero = onp.zeros((b, d, np.shape(A)[1]), dtype=onp.result_type(getval(a), getval(drive)))
    X = arith.recurrence(a, drive, zero)                          # (L, b, d, n)
    y = R(np.sum(per_channel(C, d, complex_A) * X, axis=-1))      # (L, b, d)
    if complex_A:
        y = 2.0 * np.real(y)                                      # exact
    y = arith.gate(y, D, ut, None if z is None else tf(z))
    out = np.transpose(y, (1, 2, 0))                              # (b, d, L)
    return (out, X[-1]) if return_last_state else out


def state_update_step(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *,
                      arith=EXACT):
    """One step of :func:`ssmref.selective.selective_state_update` in head form,
    ``(out (b, h, d), new_state (b, h, d, n))``: ``state (b, h, d, n)``, ``x, dt, z (b, h, d)``,
    ``A (h, d, n)``, ``B, C (b, g, n)``, ``D, dt_bias (h, d)``."""
    R = arith.R
    h, g = np.shape(state)[1], np.shape(B)[1]
    delta = arith.step(dt, dt_bias, dt_softplus)                  # (b, h, d)
    Bh, Ch = (np.repeat(X, h // g, axis=1)[:, :, None, :] for X in (B, C))   # (b, h, 1, n)
    a = R(np.exp(R(delta[..., None] * A)))                        # (b, h, d, n)
    new = R(R(a * state) + R(R(delta * x)[..., None] * Bh))
    y = R(np.sum(new * Ch, axis=-1))                              # (b, h, d)
    if onp.iscomplexobj(getval(y)):
        y = 2.0 * np.real(y)                                      # exact
    return arith.gate(y, D, x, z), new


def ssd_loop(x, dt, A, B, C, chunk_size=None, D=None, z=None, dt_bias=None, initial_states=None,
             seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
             *, arith=EXACT):
    """:func:`ssmref.selective.ssd` as a loop over ``t`` (``chunk_size`` is ignored).

    ``seq_idx``: the state restarts from zero at ``t`` when ``seq_idx[t] != seq_idx[t-1]``, with
    ``seq_idx[-1] = 0`` (``initial_states`` belongs to sequence 0)."""
    R = arith.R
    b, L, h, p = np.shape(x)
    g, n = np.shape(B)[2:]
    dt = arith.step(dt, dt_bias, dt_softplus, dt_limit)           # (b, L, h)
    dt, Xt = np.transpose(dt, (1, 0, 2)), np.transpose(x, (1, 0, 2, 3))   # (L, b, h), (L, b, h, p)
    a = R(np.exp(R(dt * A)))                                      # (L, b, h)
    if seq_idx is not None:                                       # the state restarts at a change
        prev = onp.concatenate([onp.zeros_like(seq_idx[:, :1]), seq_idx[:, :-1]], axis=1)
        a = a * (seq_idx == prev).T[:, :, None].astype(arith.work)   # exact: a 0/1 factor
    Bh, Ch = (np.repeat(np.transpose(V, (1, 0, 2, 3)), h // g, axis=2)   # (L, b, h, n)
              for V in (B, C))
    drive = R(R(dt[..., None] * Xt)[..., None] * Bh[:, :, :, None, :])   # (L, b, h, p, n)
    s0 = onp.zeros((b, h, p, n), dtype=arith.work) if initial_states is None else initial_states
    S = arith.recurrence(a[..., None, None], drive, s0)           # (L, b, h, p, n)
    y = R(np.sum(S * Ch[:, :, :, None, :], axis=-1))              # (L, b, h, p)
    D = None if D is None else (D[:, None] if np.ndim(D) == 1 else D)
    y = arith.gate(y, D, Xt, None if z is None else np.transpose(z, (1, 0, 2, 3)))
    out = np.transpose(y, (1, 0, 2, 3))                           # (b, L, h, p)
    return (out, S[-1]) if return_final_states else out
