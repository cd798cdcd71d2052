"""40-digit references of the Mamba-3 kinds: the certification hooks of :mod:`.mamba3`.

Each function recomputes a kind's expected outputs from the SAME float64 inputs (exact as rationals)
in 40-digit arithmetic (:mod:`ssmref.crosscheck.highprec`) by the step loop, one step after the
other (the float64 side: the angle as one cumulative sum, the state by SSD's chunks, autograd)::

    θ_t = wrap(θ_{t-1} + π tanh(a_t) DT_t)       (exact π; wrap(θ) = θ − 2π floor(θ / 2π))
    q_t = R(θ_t) qb_t,  qb_t = Q_t + Q_bias      (k_t alike)
    λ_t = 1 / (1 + e^{−Trap_t}),  α_t = e^{ADT_t},  β_t = (1 − λ_t) DT_t α_t,  γ_t = λ_t DT_t
    S_t = α_t S_{t-1} + β_t v_{t-1} k_{t-1}ᵀ + γ_t v_t k_tᵀ
    w_t = S_t q_t + D v_t,   out_t = w_t silu(Z_t)

The ``_vjp`` kind: the gradients of ``Σ gout·out + Σ gangle·θ_{L-1} + Σ gssm·S_{L-1} + Σ gk·k_{L-1}
+ Σ gv·v_{L-1}`` by the adjoint recurrence, written out (not autograd)::

    ∂w_t = gout_t silu(Z_t),   ∂Z_t = gout_t w_t σ(Z_t)(1 + Z_t(1 − σ(Z_t))),   ∂D = Σ ∂w_t · v_t
    Λ_{L-1} = gssm + ∂w_{L-1} q_{L-1}ᵀ,   Λ_t = ∂w_t q_tᵀ + α_{t+1} Λ_{t+1}
    ∂q_t = S_tᵀ ∂w_t,   ∂k_t = γ_t Λ_tᵀ v_t + β_{t+1} Λ_{t+1}ᵀ v_t (+ gk at L−1)
    ∂v_t = D ∂w_t + γ_t Λ_t k_t + β_{t+1} Λ_{t+1} k_t (+ gv at L−1)
    ∂α_t = ⟨Λ_t, S_{t-1}⟩,  ∂β_t = v_{t-1}ᵀ Λ_t k_{t-1},  ∂γ_t = v_tᵀ Λ_t k_t
    ∂ADT_t = α_t ∂α_t + β_t ∂β_t,   ∂Trap_t = λ_t (1 − λ_t) DT_t (∂γ_t − α_t ∂β_t)
    ∂DT_t = (1 − λ_t) α_t ∂β_t + λ_t ∂γ_t + Σ_i π tanh(a_{t,i}) ∂inc_{t,i}
    rotation of the pair (x0, x1) -> (y0, y1):  ∂x0 = c ∂y0 + s ∂y1,  ∂x1 = −s ∂y0 + c ∂y1,
                                                ∂θ += y0 ∂y1 − y1 ∂y0   (for q and k)
    ∂inc_t = gangle + Σ_{m>=t} (∂θ_m from the rotations),   ∂a_t = ∂inc_t π DT_t (1 − tanh² a_t)
    ∂Q_t, ∂K_t: summed over the heads of their group; ∂Q_bias, ∂K_bias: over batch and time
    ∂S_{-1} = α_0 Λ_0,  ∂k_{-1} = β_0 Λ_0ᵀ v_{-1},  ∂v_{-1} = β_0 Λ_0 k_{-1},  ∂θ_{-1} = ∂inc_0

(the wrap has derivative 1).  A segment of ``cu_seqlens`` without steps passes its input states
and their cotangents through.
"""

import numpy as onp

from ssmref.crosscheck import highprec

_STATES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
_OUTPUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")
_COT = ("gout", "gangle", "gssm", "gk", "gv")


def _map(name, X):
    return highprec.elementwise(name)(X)


def _zeros(shape):
    return onp.full(shape, highprec.mpmath().mpf(0), dtype=object)


def _seq_form(x, step):
    """The step form with a seqlen axis of 1 (and back, :func:`_step_form`)."""
    if not step:
        return x
    seq = ("Q", "K", "V", "Angles", "Z", "gout")
    return {k: (v[:, None] if k in seq else v[..., None] if k in ("ADT", "DT", "Trap") else v)
            for k, v in x.items()}


def _wrap(theta):
    mp = highprec.mpmath()
    two_pi = 2 * mp.pi
    return theta - two_pi * _map("floor", theta / two_pi)


def _rotate(x, c, s):
    """``R(θ) x`` on pairs; ``c, s`` of length ``n/2``."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = onp.empty(x.shape, dtype=object)
    out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
    return out


def _run(x, sl, st, cot=None):
    """Outputs (and with ``cot`` the gradients) of ``b`` sequences ``x[..., sl]`` of equal length
    from the input states ``st``; everything is an object array of mpmath numbers."""
    mp = highprec.mpmath()
    sq = lambda X: X[:, sl]                                         # noqa: E731 (b, L, ...)
    tl = lambda X: X[:, :, sl]                                      # noqa: E731 (b, h, L)
    Q, K, V, A = sq(x["Q"]), sq(x["K"]), sq(x["V"]), sq(x["Angles"])
    ADT, DT, Trap = tl(x["ADT"]), tl(x["DT"]), tl(x["Trap"])
    Z = sq(x["Z"]) if "Z" in x else None
    D = x.get("D")
    b, L, h, p = V.shape
    hqk, n, r = Q.shape[2], Q.shape[3], A.shape[3]
    rep = h // hqk
    one = mp.mpf(1)
    theta, S, kp, vp = st
    tanh = _map("tanh", A)                                          # (b, L, h, r)
    lam = 1 / (1 + _map("exp", -Trap))                              # (b, h, L)
    alpha = _map("exp", ADT)
    beta, gamma = (one - lam) * DT * alpha, lam * DT
    sig = None if Z is None else 1 / (1 + _map("exp", -Z))
    keep = []                                                       # per step: what the reverse needs
    outs = []
    for t in range(L):
        theta = _wrap(theta + mp.pi * tanh[:, t] * DT[:, :, t, None])
        c = onp.concatenate([_map("cos", theta), onp.full((b, h, n // 2 - r), one, dtype=object)], -1)
        s = onp.concatenate([_map("sin", theta), _zeros((b, h, n // 2 - r))], -1)
        qb = onp.repeat(Q[:, t], rep, axis=1) + x["Q_bias"]
        kb = onp.repeat(K[:, t], rep, axis=1) + x["K_bias"]
        q, k, v = _rotate(qb, c, s), _rotate(kb, c, s), V[:, t]
        S_prev = S
        S = (alpha[:, :, t, None, None] * S + beta[:, :, t, None, None] * vp[..., :, None] * kp[..., None, :]
             + gamma[:, :, t, None, None] * v[..., :, None] * k[..., None, :])
        w = (S * q[..., None, :]).sum(axis=-1)                      # (b, h, p)
        if D is not None:
            w = w + D[:, None] * v
        outs.append(w if Z is None else w * Z[:, t] * sig[:, t])
        keep.append((c, s, q, k, S_prev, S, w, vp, kp))
        kp, vp = k, v
    out = onp.stack(outs, axis=1)
    final = (theta, S, kp, vp)
    if cot is None:
        return out, final, None
    g = {}
    gout = cot["gout"][:, sl]
    dth, Lam, dk_next, dv_next = cot["gangle"], cot["gssm"], cot["gk"], cot["gv"]
    dQ, dK, dV, dA = (onp.empty(X.shape, dtype=object) for X in (Q, K, V, A))
    dADT, dDT, dTrap = (_zeros(X.shape) for X in (ADT, DT, Trap))
    dZ = None if Z is None else onp.empty(Z.shape, dtype=object)
    dD = None if D is None else _zeros(D.shape)
    dQb, dKb = _zeros(x["Q_bias"].shape), _zeros(x["K_bias"].shape)
    for t in reversed(range(L)):
        c, s, q, k, S_prev, S, w, vp_t, kp_t = keep[t]
        v = V[:, t]
        dw = gout[:, t]
        if Z is not None:
            z, sg = Z[:, t], sig[:, t]
            dZ[:, t] = dw * w * sg * (1 + z * (1 - sg))
            dw = dw * z * sg
        dv = dv_next
        if D is not None:
            dD = dD + (dw * v).sum(axis=(0, 2))
            dv = dv + D[:, None] * dw
        Lam = Lam + dw[..., :, None] * q[..., None, :]               # Λ_t  (b, h, p, n)
        dq = (S * dw[..., :, None]).sum(axis=-2)                     # (b, h, n)
        dgamma = (Lam * v[..., :, None] * k[..., None, :]).sum(axis=(-2, -1))
        dbeta = (Lam * vp_t[..., :, None] * kp_t[..., None, :]).sum(axis=(-2, -1))
        dalpha = (Lam * S_prev).sum(axis=(-2, -1))
        dk = dk_next + gamma[:, :, t, None] * (Lam * v[..., :, None]).sum(axis=-2)
        dv = dv + gamma[:, :, t, None] * (Lam * k[..., None, :]).sum(axis=-1)
        dk_next = beta[:, :, t, None] * (Lam * vp_t[..., :, None]).sum(axis=-2)   # ∂k_{t-1}
        dv_next = beta[:, :, t, None] * (Lam * kp_t[..., None, :]).sum(axis=-1)   # ∂v_{t-1}
        dADT[:, :, t] = alpha[:, :, t] * dalpha + beta[:, :, t] * dbeta
        dTrap[:, :, t] = (lam[:, :, t] * (1 - lam[:, :, t]) * DT[:, :, t]
                          * (dgamma - alpha[:, :, t] * dbeta))
        ddt = (1 - lam[:, :, t]) * alpha[:, :, t] * dbeta + lam[:, :, t] * dgamma
        dqb, dth_q = _rotate_vjp(q, dq, c, s)
        dkb, dth_k = _rotate_vjp(k, dk, c, s)
        dth = dth + (dth_q + dth_k)[..., :r]                          # ∂inc_t: all later θ
        dA[:, t] = dth * mp.pi * DT[:, :, t, None] * (1 - tanh[:, t] ** 2)
        dDT[:, :, t] = ddt + (dth * mp.pi * tanh[:, t]).sum(axis=-1)
        dQ[:, t] = dqb.reshape(b, hqk, rep, n).sum(axis=2)
        dK[:, t] = dkb.reshape(b, hqk, rep, n).sum(axis=2)
        dQb, dKb = dQb + dqb.sum(axis=0), dKb + dkb.sum(axis=0)
        dV[:, t] = dv
        Lam = alpha[:, :, t, None, None] * Lam                        # carried to t − 1
    g.update(dQ=dQ, dK=dK, dV=dV, dADT=dADT, dDT=dDT, dTrap=dTrap, dQ_bias=dQb, dK_bias=dKb,
             dAngles=dA, dD=dD, dZ=dZ)
    g["states"] = (dth, Lam, dk_next, dv_next)
    return out, final, g


def _rotate_vjp(y, dy, c, s):
    """``(∂x, ∂θ per pair)`` of ``y = R(θ) x`` given the rotated ``y``."""
    dy0, dy1 = dy[..., 0::2], dy[..., 1::2]
    dx = onp.empty(dy.shape, dtype=object)
    dx[..., 0::2], dx[..., 1::2] = c * dy0 + s * dy1, c * dy1 - s * dy0
    return dx, y[..., 0::2] * dy1 - y[..., 1::2] * dy0


def _all(x, attrs, with_grads):
    """``{output [and gradient]: object array}`` over every sequence (rows or segments)."""
    step = bool(attrs.get("step"))
    x = _seq_form({k: (v if k == "cu_seqlens" else highprec.to_mp(v)) for k, v in x.items()}, step)
    b, L, h, p = x["V"].shape
    n, r = x["Q"].shape[3], x["Angles"].shape[3]
    cu = x.get("cu_seqlens")
    segs = [(None, slice(0, L))] if cu is None else [
        (i, slice(int(cu[i]), int(cu[i + 1]))) for i in range(len(cu) - 1)]
    zero = (_zeros((b, h, r)), _zeros((b, h, p, n)), _zeros((b, h, n)), _zeros((b, h, p)))
    outs, finals, grads = [], [], []
    for i, sl in segs:
        pick = (lambda X: X) if i is None else (lambda X, i=i: X[i:i + 1])
        st = tuple(pick(x[k]) for k in _STATES) if _STATES[0] in x else tuple(pick(z) for z in zero)
        cot = None
        if with_grads:
            cot = {"gout": x["gout"], **{k: pick(x[k]) for k in _COT[1:]}}
        if sl.stop == sl.start:
            finals.append(st)
            grads.append({"states": tuple(cot[k] for k in _COT[1:])} if with_grads else None)
            continue
        o, f, g = _run(x, sl, st, cot)
        outs.append(o)
        finals.append(f)
        grads.append(g)
    res = {"out": onp.concatenate(outs, axis=1)}
    res.update({nm: onp.concatenate([f[j] for f in finals], axis=0)
                for j, nm in enumerate(_OUTPUTS[1:])})
    if with_grads:
        res.update(_gather(x, grads, cu))
    if step:
        res = {k: (v[:, 0] if k in ("out", "dQ", "dK", "dV", "dAngles", "dZ") else
                   v[..., 0] if k in ("dADT", "dDT", "dTrap") else v) for k, v in res.items()}
    return res


def _gather(x, grads, cu):
    """The gradients of all sequences in the inputs' layouts."""
    out = {}
    full = [g for g in grads if "dQ" in g]
    for k, ax in (("dQ", 1), ("dK", 1), ("dV", 1), ("dAngles", 1), ("dZ", 1), ("dADT", 2),
                  ("dDT", 2), ("dTrap", 2)):
        if full[0][k] is not None:
            out[k] = full[0][k] if cu is None else onp.concatenate([g[k] for g in full], axis=ax)
    for k in ("dQ_bias", "dK_bias", "dD"):
        if full[0][k] is not None:
            out[k] = sum(g[k] for g in full)
    if _STATES[0] in x:
        for j, k in enumerate(_STATES):
            out["d" + k] = onp.concatenate([g["states"][j] for g in grads], axis=0)
    return out


@highprec.high_precision
def forward(x, attrs):
    return _all(x, attrs, False)


@highprec.high_precision
def vjp(x, attrs):
    return _all(x, attrs, True)
