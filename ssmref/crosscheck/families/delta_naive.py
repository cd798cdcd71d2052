"""Baseline mode for the delta rule kinds: the definition (:func:`ssmref.delta.recurrent.core_layout`,
:func:`~ssmref.delta.recurrent.delta_recurrence`, :func:`~ssmref.delta.recurrent.delta_step_core`)
in a target dtype, rounding after every operation (``R``: :func:`ssmref.crosscheck.precision.rounder`;
the reductions over ``K`` accumulate in the working precision, float32 for float16 / bfloat16,
then round once)::

    n(x)  = R(x / R(sqrt(R(Σ x²) + 1e-6)))          (when use_qk_l2norm_in_kernel)
    q̂     = R(scale · n(q))
    P_t   = R(R(e^{g_t}) S_{t-1})                    (the decay first)
    u_t   = R(β_t R(v_t − R(P_tᵀ k_t)))
    S_t   = R(P_t + R(k_t u_tᵀ)),     o_t = R(S_tᵀ q̂_t)

one packed sequence after the other (``cu_seqlens``).  Gradients (``delta_rule_vjp``): reverse
mode through the same loop, every rounding a primitive whose VJP rounds the cotangent.
"""

import autograd
import autograd.numpy as np
from autograd.tracer import getval

from ssmref.crosscheck.families.selective_naive import Arith
from ssmref.delta.recurrent import core_layout, delta_recurrence, delta_step_core

#: The float inputs of the sequence kinds that have gradients (``d<name>``).
GRADS = ("q", "k", "v", "g", "beta", "initial_state")


def _layout(ar, x, attrs, time=True):
    # the definition's core layout in the dtype: q̂, k̂ (…, HV, K), g (…, HV, Kg), beta (…, HV, Vb)
    return core_layout(x["q"], x["k"], x["v"], x.get("g"), x["beta"], attrs["scale"],
                       attrs["use_qk_l2norm_in_kernel"], rnd=ar.R, time=time)


def sequence(ar, x, attrs):
    """``(o (B, T, HV, V), final (N, HV, K, V))`` of the recurrence in ``ar``'s dtype."""
    q, k, v, g, beta = _layout(ar, x, attrs)
    B, T, HV, V = np.shape(v)
    K = np.shape(q)[-1]
    cu = x.get("cu_seqlens")
    segments = [(0, T)] if cu is None else list(zip(getval(cu)[:-1], getval(cu)[1:]))
    N = B if cu is None else len(segments)
    S0 = x.get("initial_state")
    S0 = np.zeros((N, HV, K, V), dtype=ar.work) if S0 is None else S0
    outs, finals = [], []
    for n, (a, b) in enumerate(segments):
        S = S0 if cu is None else S0[n:n + 1]
        if b > a:                                                 # the definition, rounded by R
            o, S = delta_recurrence(q[:, a:b], k[:, a:b], v[:, a:b], g[:, a:b], beta[:, a:b], S, ar.R)
            outs.append(o)
        finals.append(S)
    return np.concatenate(outs, axis=1), (finals[0] if cu is None else np.concatenate(finals, axis=0))


def naive_sequence(inputs, attrs, R, work):
    ar = Arith(R, work)
    o, final = sequence(ar, {k: ar.arr(v) for k, v in inputs.items()}, attrs)
    return {"o": o, "final_state": final}


def naive_sequence_vjp(inputs, attrs, R, work):
    ar = Arith(R, work)
    x = {k: ar.arr(v) for k, v in inputs.items()}
    kept = {}

    def total(p):
        o, final = sequence(ar, {**x, **p}, attrs)
        kept.update(o=getval(o), final_state=getval(final))
        return np.sum(x["do"] * o) + np.sum(x["dht"] * final)
    grads = autograd.grad(total)({k: x[k] for k in GRADS if k in x})
    return dict(kept, **{"d" + k: v for k, v in grads.items()})


def naive_step(inputs, attrs, R, work):
    ar = Arith(R, work)
    x = {k: ar.arr(v) for k, v in inputs.items()}
    q, k, v, g, beta = _layout(ar, x, attrs, time=False)
    o, new = delta_step_core(x["state"], q, k, v, g, beta, ar.R)
    return {"o": o, "new_state": new}
