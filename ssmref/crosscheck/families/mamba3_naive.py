"""Baseline mode for the Mamba-3 kinds: the definition's step loop
(:func:`ssmref.selective.mamba3_loop.mamba3_loop`) carried out in a target dtype, rounding after
every operation (``R``; :class:`ssmref.crosscheck.families.selective_naive.Arith`).

    θ_t  = wrap(R(θ_{t-1} + R(R(π R(tanh a_t)) DT_t))),  wrap(θ) = R(θ − R(2π floor(θ / 2π)))
    q_t  = R(θ_t)(R(Q_t + Q_bias)) with R after each product and sum (k_t alike)
    λ_t  = R(σ(Trap_t)),  α_t = R(e^{ADT_t}),  β_t = R(R(R(1 − λ_t) DT_t) α_t),  γ_t = R(λ_t DT_t)
    S_t  = R(R(R(α_t S_{t-1}) + R(R(β_t v_{t-1}) k_{t-1}ᵀ)) + R(R(γ_t v_t) k_tᵀ))
    y_t  = R(S_t q_t)      (the sum in the working precision: float32 for float16 / bfloat16)
    out_t = R(R(y_t + R(D v_t)) · silu(Z_t))

The angle is wrapped every step, as mamba's step kernel does.  Gradients (``_vjp``): reverse mode
through the same loop, every rounding a primitive whose VJP rounds the cotangent.
"""

import autograd
import autograd.numpy as np
from autograd.tracer import getval

from ssmref.crosscheck.families.selective_naive import Arith
from ssmref.selective.mamba3_loop import mamba3_loop

_ARGS = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")
_STATES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
_OUTPUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")


def forward(ar, x, attrs):
    """``{output: array}`` of the loop in ``ar``'s dtype (``attrs.step``: the step form)."""
    return mamba3_loop(x, bool(attrs.get("step")), arith=ar)


def naive_forward(inputs, attrs, R, work):
    ar = Arith(R, work)
    return forward(ar, {k: ar.arr(v) for k, v in inputs.items()}, attrs)


def naive_vjp(inputs, attrs, R, work):
    """The outputs and the gradients of ``Σ g·output`` w.r.t. every float input, in the dtype."""
    ar = Arith(R, work)
    x = {k: ar.arr(v) for k, v in inputs.items()}
    kept = {}

    def total(params):
        outs = forward(ar, {**x, **params}, attrs)
        kept.update({k: getval(v) for k, v in outs.items()})
        return sum(np.sum(x[g] * outs[k]) for k, g in
                   zip(_OUTPUTS, ("gout", "gangle", "gssm", "gk", "gv")))

    grads = autograd.grad(total)({k: x[k] for k in _ARGS + _STATES if k in x})
    return dict(kept, **{"d" + k: v for k, v in grads.items()})
