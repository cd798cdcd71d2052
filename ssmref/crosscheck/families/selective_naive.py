"""Baseline mode for the selective kinds: the plain recurrences carried out in a target dtype,
rounding after every operation (``R``: :func:`ssmref.crosscheck.precision.rounder`).  The loops
are the definitions of :mod:`ssmref.selective.naive`, run in :class:`Arith` (their float64 form,
``R`` the identity, is what the fast forms are tested against)::

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
from ssmref.selective.naive import Arithmetic, selective_scan_loop, ssd_loop, state_update_step


class Arith(Arithmetic):
    """:class:`ssmref.selective.naive.Arithmetic` in a target dtype: ``R`` rounds (a primitive
    whose VJP rounds the cotangent), ``work`` is the NumPy dtype values are held in."""

    def __init__(self, R, work):
        @primitive
        def rnd(v):
            return R(v)
        defvjp(rnd, lambda ans, v: lambda g: rnd(g))
        super().__init__(rnd, work)


def limit_of(attrs):
    """``attrs["dt_limit"]`` as a pair (the default ``(0, inf)`` when absent)."""
    lo, hi = attrs.get("dt_limit", (0.0, None))
    return float(lo), (float("inf") if hi is None else float(hi))


# ---------------------------------------------------------------------------------------------
# selective_scan
# ---------------------------------------------------------------------------------------------

SCAN_GRADS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan(ar, x, attrs):
    """``(out (b, d, L), last_state (b, d, n))`` of the selective scan in ``ar``'s dtype."""
    return selective_scan_loop(x["u"], x["delta"], x["A"], x["B"], x["C"], x.get("D"), x.get("z"),
                               x.get("delta_bias"), attrs["delta_softplus"], True, arith=ar)


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


def naive_state_update(inputs, attrs, R, work):
    ar = Arith(R, work)
    x, has_heads = _heads({k: ar.arr(v) for k, v in inputs.items()})
    out, new = state_update_step(x["state"], x["x"], x["dt"], x["A"], x["B"], x["C"], x.get("D"),
                                 x.get("z"), x.get("dt_bias"), attrs["dt_softplus"], arith=ar)
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
        out, new = state_update_step(s, x["x"][t], x["dt"][t], x["A"], x["B"][t], x["C"][t],
                                     x.get("D"), z, x.get("dt_bias"), attrs["dt_softplus"], arith=ar)
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

SSD_GRADS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def ssd(ar, x, attrs):
    """``(out (b, L, h, p), final_states (b, h, p, n))`` of SSD's recurrence in ``ar``'s dtype."""
    return ssd_loop(x["x"], x["dt"], x["A"], x["B"], x["C"], None, x.get("D"), x.get("z"),
                    x.get("dt_bias"), x.get("initial_states"), x.get("seq_idx"), attrs["dt_softplus"],
                    limit_of(attrs), True, arith=ar)


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
