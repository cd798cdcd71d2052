"""Mamba-3 SISO's definition, a plain loop over time with its arithmetic passed in
(an :class:`ssmref.selective.naive.Arithmetic`; ``R`` is applied to every operation's result)::

    θ_t  = wrap(R(θ_{t-1} + R(R(π R(tanh a_t)) DT_t))),  wrap(θ) = R(θ − R(2π floor(θ / 2π)))
    q_t  = R(θ_t)(R(Q_t + Q_bias)) with R after each product and sum (k_t alike)
    λ_t  = R(σ(Trap_t)),  α_t = R(e^{ADT_t}),  β_t = R(R(R(1 − λ_t) DT_t) α_t),  γ_t = R(λ_t DT_t)
    S_t  = R(R(R(α_t S_{t-1}) + R(R(β_t v_{t-1}) k_{t-1}ᵀ)) + R(R(γ_t v_t) k_tᵀ))
    y_t  = R(S_t q_t),    out_t = R(R(y_t + R(D v_t)) · silu(Z_t))

With ``EXACT`` (``R`` the identity) it is the float64 definition that :func:`ssmref.selective.mamba3_siso`
(chunked and recurrence) and :func:`ssmref.selective.mamba3_siso_step` are tested against; the
cross-check kit runs it with ``R`` rounding to a dtype as its naive baseline.  The angle is wrapped
every step, as mamba's step kernel does; packed sequences (``cu_seqlens``) one after the other.
Unchecked: inputs must already be valid.  Reference: Lahoti et al., "Mamba-3" (2026);
mamba_ssm's ``mamba3_siso_step``.
"""

import math

import autograd.numpy as np
import numpy as onp

from ssmref.selective.naive import EXACT

_STATES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
_OUTPUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")


def _rotate(R, x, cos, sin):
    """``R(θ) x`` on pairs ``(2i, 2i+1)``, rounded after each product and sum; ``cos, sin`` of
    length ``n/2`` (1 and 0 on the pairs that are not rotated)."""
    shape = np.shape(x)
    pairs = np.reshape(x, shape[:-1] + (shape[-1] // 2, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    r0 = R(R(x0 * cos) - R(x1 * sin))
    r1 = R(R(x0 * sin) + R(x1 * cos))
    return np.reshape(np.stack([r0, r1], axis=-1), shape)


def _sequences(ar, x, Q, K, V, ADT, DT, Trap, Angles, Z, st):
    """``(out (b, L, h, p), final states)`` of the loop over ``b`` sequences of equal length."""
    R = ar.R
    b, L, h, p = np.shape(V)
    n, r = np.shape(Q)[3], np.shape(Angles)[3]
    rep = h // np.shape(Q)[2]
    theta, S, kp, vp = st
    two_pi = ar.arr(onp.float64(2 * math.pi))
    pad = onp.ones((b, h, n // 2 - r), dtype=ar.work)
    outs = []
    for t in range(L):
        inc = R(R(math.pi * R(np.tanh(Angles[:, t]))) * DT[:, :, t, None])   # (b, h, r)
        theta = R(theta + inc)
        theta = R(theta - R(two_pi * np.floor(R(theta / two_pi))))
        cos = np.concatenate([R(np.cos(theta)), pad], axis=-1)
        sin = np.concatenate([R(np.sin(theta)), 0.0 * pad], axis=-1)
        q = _rotate(R, R(np.repeat(Q[:, t], rep, axis=1) + x["Q_bias"]), cos, sin)  # (b, h, n)
        k = _rotate(R, R(np.repeat(K[:, t], rep, axis=1) + x["K_bias"]), cos, sin)
        lam = _sigmoid(ar, Trap[:, :, t])
        alpha = R(np.exp(ADT[:, :, t]))
        beta = R(R(R(1.0 - lam) * DT[:, :, t]) * alpha)[..., None, None]
        gamma = R(lam * DT[:, :, t])[..., None, None]
        v = V[:, t]                                                           # (b, h, p)
        S = R(R(R(alpha[..., None, None] * S) + R(R(beta * vp[..., None]) * kp[..., None, :]))
              + R(R(gamma * v[..., None]) * k[..., None, :]))
        y = R(np.einsum("bhpn,bhn->bhp", S, q))
        D = x.get("D")
        outs.append(ar.gate(y, None if D is None else D[:, None], v, None if Z is None else Z[:, t]))
        kp, vp = k, v
    return np.stack(outs, axis=1), (theta, S, kp, vp)


def _sigmoid(ar, v):
    R = ar.R
    return R(1.0 / R(1.0 + R(np.exp(-v))))


def mamba3_loop(x, step=False, *, arith=EXACT):
    """``{output: array}`` of the loop: ``out``, ``angle_state``, ``ssm_state``, ``k_state``,
    ``v_state``; ``x`` holds mamba_ssm's arguments by name (``Q``, ..., ``Input_SSM_State``,
    ``cu_seqlens``), as :func:`ssmref.selective.mamba3_siso` takes them, or, with ``step``,
    as :func:`ssmref.selective.mamba3_siso_step` (no seqlen axis)."""
    ar = arith
    if step:
        seq = ("Q", "K", "V", "Angles", "Z")
        x = {k: (v[:, None] if k in seq else v[..., None] if k in ("ADT", "DT", "Trap") else v)
             for k, v in x.items()}
    Q, K, V = x["Q"], x["K"], x["V"]
    b, L, h, p = np.shape(V)
    n, r = np.shape(Q)[3], np.shape(x["Angles"])[3]
    zeros = tuple(onp.zeros(s, dtype=ar.work) for s in ((b, h, r), (b, h, p, n), (b, h, n), (b, h, p)))
    cu = x.get("cu_seqlens")
    if cu is None:
        st = tuple(x[k] for k in _STATES) if _STATES[0] in x else zeros
        out, final = _sequences(ar, x, Q, K, V, x["ADT"], x["DT"], x["Trap"], x["Angles"],
                                x.get("Z"), st)
    else:
        outs, finals = [], []
        for i in range(len(cu) - 1):
            lo, hi = int(cu[i]), int(cu[i + 1])
            st = (tuple(x[k][i:i + 1] for k in _STATES) if _STATES[0] in x
                  else tuple(z[:1] for z in zeros))
            if hi == lo:
                finals.append(st)
                continue
            s = lambda X: X[:, lo:hi]                         # noqa: E731
            o, f = _sequences(ar, x, s(Q), s(K), s(V), x["ADT"][..., lo:hi], x["DT"][..., lo:hi],
                              x["Trap"][..., lo:hi], s(x["Angles"]),
                              None if x.get("Z") is None else s(x["Z"]), st)
            outs.append(o)
            finals.append(f)
        out = np.concatenate(outs, axis=1)
        final = tuple(np.concatenate([f[j] for f in finals], axis=0) for j in range(4))
    if step:
        out = out[:, 0]
    return dict(zip(_OUTPUTS, (out,) + tuple(final)))
