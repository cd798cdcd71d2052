"""Baseline mode for the selective kinds: the plain recurrences carried out in a target dtype,
rounding after every operation (``R``: :func:`ssmref.crosscheck.precision.rounder`).

    Δ_t   = R(max(v, 0) + R(log1p(R(e^{−|v|})))),  v = R(δ_t + δ_bias)    (finite in any dtype)
    x_t   = R(R(e^{R(Δ_t A)}) x_{t-1}) + R(R(Δ_t u_t) B_t))                 R after each op
    y_t   = R(Σ_n C_t x_t)              products and sum in the working precision (float32 for
                                        float16 / bfloat16, as GPUs accumulate); 2·Re for complex A
    out_t = R(R(y_t + R(D u_t)) · R(silu(z_t))),   silu(z) = R(z · R(1 / R(1 + R(e^{−z}))))

SSD is the same recurrence on ``(p, n)`` states per head (``Δ`` also clamped to ``dt_limit``, the
state zeroed where ``seq_idx`` changes).  Gradients (the ``_vjp`` kinds): reverse mode through the
same loop, in which every rounding is a primitive whose VJP rounds the cotangent: the adjoint
recurrence in the dtype, rounded after every operation too (reductions over batch and time
accumulate in the working precision).

Decoding with a state cache (kind ``selective_decode``, attr ``state_dtype``): the step is
computed in the target dtype, ``out`` is read from the new state *before* the cache rounds it,
then the state is rounded to ``state_dtype`` (double rounding when the arithmetic is wider, as a
float32 kernel writing a bfloat16 cache does), and the next step starts from the rounded state.
"""

import autograd
import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp, primitive
from autograd.tracer import getval

from ssmref.crosscheck.precision import rounder


class Arith:
    """Arithmetic in a target dtype: ``R`` rounds (a primitive whose VJP rounds the cotangent),
    ``work`` is the NumPy dtype values are held in."""

    def __init__(self, R, work):
        @primitive
        def rnd(v):
            return R(v)
        defvjp(rnd, lambda ans, v: lambda g: rnd(g))
        self.R, self.work = rnd, work

    def arr(self, v):
        """An input (float64 or complex128, already rounded by the vectors) in the working
        precision, rounded to the target dtype; integer arrays unchanged."""
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


def limit_of(attrs):
    """``attrs["dt_limit"]`` as a pair (the default ``(0, inf)`` when absent)."""
    lo, hi = attrs.get("dt_limit", (0.0, None))
    return float(lo), (float("inf") if hi is None else float(hi))


# ---------------------------------------------------------------------------------------------
# selective_scan
# ---------------------------------------------------------------------------------------------

def _time_first_bc(X, L, d, complex_A):
    """B or C as ``(L, b, d, n)`` (varying, grouped, interleaved) or ``(1, 1, d, n)`` (fixed)."""
    if np.ndim(X) == 2:
        return X[None, None]
    if np.ndim(X) == 3:
        X = X[:, None]                                             # (b, 1, n, Lx)
    if complex_A and not onp.iscomplexobj(getval(X)):
        X = X[..., 0::2] + 1j * X[..., 1::2]                       # (b, g, n, L) from (re, im)
    X = np.transpose(X, (3, 0, 1, 2))                              # (L, b, g, n)
    return np.repeat(X, d // np.shape(X)[2], axis=2)               # (L, b, d, n): exact copies


def scan(ar, x, attrs):
    """``(out (b, d, L), last_state (b, d, n))`` of the selective scan in ``ar``'s dtype."""
    R = ar.R
    u, A = x["u"], x["A"]
    b, d, L = np.shape(u)
    complex_A = onp.iscomplexobj(getval(A))
    bias = x.get("delta_bias")
    dt = ar.step(x["delta"], None if bias is None else bias[:, None], attrs["delta_softplus"])
    tf = lambda v: np.transpose(v, (2, 0, 1))                      # noqa: E731  (L, b, d)
    dt, ut = tf(dt), tf(u)
    a = R(np.exp(R(dt[..., None] * A)))                           # (L, b, d, n)
    drive = R(R(dt * ut)[..., None] * _time_first_bc(x["B"], L, d, complex_A))
    zero = onp.zeros((b, d, np.shape(A)[1]), dtype=onp.result_type(getval(a), getval(drive)))
    X = ar.recurrence(a, drive, zero)                             # (L, b, d, n)
    y = R(np.sum(_time_first_bc(x["C"], L, d, complex_A) * X, axis=-1))   # (L, b, d)
    if complex_A:
        y = 2.0 * np.real(y)                                      # exact
    z = x.get("z")
    y = ar.gate(y, x.get("D"), ut, None if z is None else tf(z))
    return np.transpose(y, (1, 2, 0)), X[-1]


SCAN_GRADS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def naive_scan(inputs, attrs, R, work):
    ar = Arith(R, work)
    out, last = scan(ar, {k: ar.arr(v) for k, v in inputs.items()}, attrs)
    return {"out": out, "last_state": last}


def _vjp(ar, forward, x, names, g_outputs):
    """Forward outputs and the gradients of ``Σ Re(conj(g_k) · output_k)`` w.r.t. ``names``
    (autograd's convention for complex inputs), through ``forward`` in ``ar``'s dtype."""
    kept = {}

    def total(params):
        outs = forward(ar, {**x, **params})
        kept.update({k: getval(v) for k, v in outs.items()})
        return sum(np.sum(np.real(np.conj(g) * outs[k])) for k, g in g_outputs.items())

    grads = autograd.grad(total)({k: x[k] for k in names if k in x})
    return dict(kept, **{"d" + k: v for k, v in grads.items()})


def naive_scan_vjp(inputs, attrs, R, work):
    ar = Arith(R, work)
    x = {k: ar.arr(v) for k, v in inputs.items()}

    def forward(ar_, v):
        out, last = scan(ar_, v, attrs)
        return {"out": out, "last_state": last}
    return _vjp(ar, forward, x, SCAN_GRADS, {"out": x["gout"], "last_state": x["glast"]})


# ---------------------------------------------------------------------------------------------
# selective_state_update and the multi-step decode
# ---------------------------------------------------------------------------------------------

def _heads(x):
    """A single step's arrays in head form (mamba's rule: one head when ``state`` is 3-d):
    ``state (b, h, d, n)``, ``x, dt, z (b, h, d)``, ``A (h, d, n)``, ``B, C (b, g, n)``,
    ``D, dt_bias (h, d)``; and whether ``state`` came with heads."""
    if np.ndim(x["state"]) == 4:
        return dict(x), True
    axis = {"A": 0, "D": 0, "dt_bias": 0}                          # the others gain axis 1

    def lift(k, v):
        if k in ("B", "C") and np.ndim(v) == 3:                    # already (b, 1, n)
            return v
        return np.expand_dims(v, axis.get(k, 1))
    return {k: lift(k, v) for k, v in x.items()}, False


def decode_step(ar, s, x, dt, A, B, C, D, z, dt_bias, softplus):
    """``(out, new_state)`` of one step on head-form arrays, in ``ar``'s dtype (not rounded to
    a state dtype)."""
    R = ar.R
    h, g = np.shape(s)[1], np.shape(B)[1]
    delta = ar.step(dt, dt_bias, softplus)                        # (b, h, d)
    Bh, Ch = (np.repeat(X, h // g, axis=1)[:, :, None, :] for X in (B, C))   # (b, h, 1, n)
    a = R(np.exp(R(delta[..., None] * A)))                        # (b, h, d, n)
    new = R(R(a * s) + R(R(delta * x)[..., None] * Bh))
    return ar.gate(R(np.sum(new * Ch, axis=-1)), D, x, z), new


def naive_state_update(inputs, attrs, R, work):
    ar = Arith(R, work)
    x, has_heads = _heads({k: ar.arr(v) for k, v in inputs.items()})
    out, new = decode_step(ar, x["state"], x["x"], x["dt"], x["A"], x["B"], x["C"], x.get("D"),
                           x.get("z"), x.get("dt_bias"), attrs["dt_softplus"])
    if not has_heads:
        out, new = out[:, 0], new[:, 0]
    return {"out": out, "new_state": new}


def state_rounder(state_dtype, work):
    """Rounding to the cache's ``state_dtype``, returned in the working dtype ``work``."""
    s_work, S = rounder(state_dtype)
    return lambda v: onp.asarray(S(onp.asarray(v, dtype=s_work)), dtype=work)


def decode(ar, x, attrs, round_state):
    """``(out (S, b, h, d), states (S, b, h, d, n))`` of ``S`` decode steps; ``round_state``
    rounds the state to the cache's dtype after ``out`` has been read from it."""
    s, outs, states = x["state"], [], []
    for t in range(np.shape(x["x"])[0]):
        z = x["z"][t] if "z" in x else None
        out, new = decode_step(ar, s, x["x"][t], x["dt"][t], x["A"], x["B"][t], x["C"][t],
                               x.get("D"), z, x.get("dt_bias"), attrs["dt_softplus"])
        s = round_state(new)                            # the cache, after out was read
        outs.append(out)
        states.append(s)
    return np.stack(outs), np.stack(states)


def naive_decode(inputs, attrs, R, work):
    ar = Arith(R, work)
    out, states = decode(ar, {k: ar.arr(v) for k, v in inputs.items()}, attrs,
                         state_rounder(attrs["state_dtype"], work))
    return {"out": out, "states": states}


# ---------------------------------------------------------------------------------------------
# ssd
# ---------------------------------------------------------------------------------------------

def ssd(ar, x, attrs):
    """``(out (b, L, h, p), final_states (b, h, p, n))`` of SSD's recurrence in ``ar``'s dtype."""
    R = ar.R
    X, A, B, C = x["x"], x["A"], x["B"], x["C"]
    b, L, h, p = np.shape(X)
    g, n = np.shape(B)[2:]
    dt = ar.step(x["dt"], x.get("dt_bias"), attrs["dt_softplus"], limit_of(attrs))   # (b, L, h)
    dt, Xt = np.transpose(dt, (1, 0, 2)), np.transpose(X, (1, 0, 2, 3))   # (L, b, h), (L, b, h, p)
    a = R(np.exp(R(dt * A)))                                      # (L, b, h)
    if "seq_idx" in x:                                            # the state restarts at a change
        idx = x["seq_idx"]
        prev = onp.concatenate([onp.zeros_like(idx[:, :1]), idx[:, :-1]], axis=1)
        a = a * (idx == prev).T[:, :, None].astype(ar.work)       # exact: a 0/1 factor
    Bh, Ch = (np.repeat(np.transpose(V, (1, 0, 2, 3)), h // g, axis=2)   # (L, b, h, n)
              for V in (B, C))
    drive = R(R(dt[..., None] * Xt)[..., None] * Bh[:, :, :, None, :])   # (L, b, h, p, n)
    s0 = x.get("initial_states")
    s0 = onp.zeros((b, h, p, n), dtype=ar.work) if s0 is None else s0
    S = ar.recurrence(a[..., None, None], drive, s0)              # (L, b, h, p, n)
    y = R(np.sum(S * Ch[:, :, :, None, :], axis=-1))              # (L, b, h, p)
    D, z = x.get("D"), x.get("z")
    D = None if D is None else (D[:, None] if np.ndim(D) == 1 else D)
    y = ar.gate(y, D, Xt, None if z is None else np.transpose(z, (1, 0, 2, 3)))
    return np.transpose(y, (1, 0, 2, 3)), S[-1]


SSD_GRADS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def naive_ssd(inputs, attrs, R, work):
    ar = Arith(R, work)
    out, final = ssd(ar, {k: ar.arr(v) for k, v in inputs.items()}, attrs)
    return {"out": out, "final_states": final}


def naive_ssd_vjp(inputs, attrs, R, work):
    ar = Arith(R, work)
    x = {k: ar.arr(v) for k, v in inputs.items()}

    def forward(ar_, v):
        out, final = ssd(ar_, v, attrs)
        return {"out": out, "final_states": final}
    return _vjp(ar, forward, x, SSD_GRADS, {"out": x["gout"], "final_states": x["gfinal"]})
