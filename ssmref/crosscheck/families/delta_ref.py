"""40-digit references of the delta rule kinds: the certification hooks of :mod:`.delta`.

Each function recomputes a kind's expected outputs from the SAME float64 inputs (exact as rationals)
in 40-digit arithmetic (:mod:`ssmref.crosscheck.highprec`, mpmath imported lazily) by the plain
recurrence, one step after the other (the float64 side: the WY/UT chunked form and autograd)::

    q̂ = scale · n(q),  k̂ = n(k),  n(x) = x / sqrt(Σ x² + 1e-6) (when l2norm, else x)
    a_t = e^{g_t},  P_t = a_t ⊙ S_{t-1},  e_t = v_t − P_tᵀ k̂_t,  u_t = β_t ⊙ e_t
    S_t = P_t + k̂_t u_tᵀ,  o_t = S_tᵀ q̂_t

The ``delta_rule_vjp`` kind's gradients of ``L = Σ do·o + Σ dht·final`` come from the adjoint
(reverse) recurrence written out, ``λ = ∂L/∂S_t`` from ``λ = dht`` at each sequence's end::

    λ += q̂_t do_tᵀ;   ∂q̂_t = S_t do_t;   ∂u = λᵀ k̂_t;   ∂k̂_t = λ u_t
    ∂β_t = ∂u ⊙ e_t (Σ_V for one β per head);   ∂e = ∂u ⊙ β_t;   ∂v_t = ∂e
    ∂P = λ − k̂_t ∂eᵀ;   ∂k̂_t −= P_t ∂e;   ∂g_t = a_t ⊙ Σ_V (∂P ⊙ S_{t-1}) (Σ_K for one g per head)
    λ ← a_t ⊙ ∂P          (after a sequence's first step: ∂initial_state)

then ``∂n(q) = scale ∂q̂`` and through the l2norm ``∂x = (∂y − y (y·∂y)) / sqrt(Σ x² + 1e-6)``,
and the value heads' ``∂q̂, ∂k̂`` summed over each group (GVA).
"""

import numpy as onp

from ssmref.crosscheck import highprec


def _mp(v):
    return highprec.to_mp(onp.asarray(v))


def _zeros(shape):
    return onp.full(shape, highprec.mpmath().mpf(0), dtype=object)


def _norm_factor(x):
    """``r = 1 / sqrt(Σ x² + 1e-6)`` (keepdims) of an object array."""
    mp = highprec.mpmath()
    eps = mp.mpf(1e-6)                                                  # the float64 literal, exactly
    s = onp.sum(x * x, axis=-1, keepdims=True)
    return onp.asarray(onp.frompyfunc(lambda v: 1 / mp.sqrt(v + eps), 1, 1)(s), dtype=object)


def _setup(x, attrs, time=True):
    """The inputs as object arrays in the recurrence's layout (value heads expanded)."""
    mp = highprec.mpmath()
    axis = 2 if time else 1
    q, k, v = _mp(x["q"]), _mp(x["k"]), _mp(x["v"])
    m = {"q_raw": q, "k_raw": k, "scale": mp.mpf(attrs["scale"]), "l2": attrs["use_qk_l2norm_in_kernel"]}
    if m["l2"]:
        m["rq"], m["rk"] = _norm_factor(q), _norm_factor(k)
        q, k = q * m["rq"], k * m["rk"]
    m["nq"], m["nk"] = q, k
    rep = v.shape[axis] // q.shape[axis]
    m["rep"] = rep
    m["q"], m["k"] = onp.repeat(q * m["scale"], rep, axis=axis), onp.repeat(k, rep, axis=axis)
    m["v"] = v
    g = x.get("g")
    m["g_ndim"] = None if g is None else onp.ndim(g)
    g = _zeros(v.shape[:axis + 1] + (1,)) if g is None else _mp(g if onp.ndim(g) > axis + 1
                                                                 else onp.asarray(g)[..., None])
    m["a"] = highprec.elementwise("exp")(g)
    beta = _mp(x["beta"])
    m["beta_headwise"] = beta.ndim == axis + 1
    m["beta"] = beta[..., None] if m["beta_headwise"] else beta
    return m


def _step(S, q, k, v, a, beta):
    P = a[..., None] * S
    e = v - onp.sum(P * k[..., None], axis=-2)
    u = beta * e
    S_new = P + k[..., None] * u[..., None, :]
    return onp.sum(S_new * q[..., None], axis=-2), S_new, P, e, u


def _segments(x, B, T):
    cu = x.get("cu_seqlens")
    if cu is None:
        return [(slice(None), 0, T)]
    return [(slice(n, n + 1), int(a), int(b)) for n, (a, b) in enumerate(zip(cu[:-1], cu[1:]))]


def _forward(m, x, keep=False):
    B, T, HV, V = m["v"].shape
    K = m["q"].shape[-1]
    S0 = _mp(x["initial_state"]) if "initial_state" in x else None
    N = B if "cu_seqlens" not in x else len(x["cu_seqlens"]) - 1
    S0 = _zeros((N, HV, K, V)) if S0 is None else S0
    o = onp.empty((B, T, HV, V), dtype=object)
    finals, tape = [], []
    for rows, a, b in _segments(x, B, T):
        S, steps = S0[rows], []
        for t in range(a, b):
            o[:, t], S_new, P, e, u = _step(S, m["q"][:, t], m["k"][:, t], m["v"][:, t],
                                            m["a"][:, t], m["beta"][:, t])
            if keep:
                steps.append((t, S, S_new, P, e, u))
            S = S_new
        finals.append(S)
        tape.append((rows, steps))
    return o, onp.concatenate(finals, axis=0), tape


@highprec.high_precision
def sequence(x, attrs):
    """``{"o", "final_state"}`` of ``delta_rule`` in 40 digits."""
    m = _setup(x, attrs)
    o, final, _ = _forward(m, x)
    return {"o": o, "final_state": final}


def _through_norm(dy, y, r):
    """``∂x`` of ``y = x r``, ``r = 1/sqrt(Σx² + eps)``: ``r (∂y − y (y·∂y))``."""
    return r * (dy - y * onp.sum(y * dy, axis=-1, keepdims=True))


def _ungroup(G, rep):
    """``(B, T, HV, K)`` -> ``(B, T, H, K)``: summed over the value heads of each group."""
    B, T, HV, K = G.shape
    return onp.sum(G.reshape(B, T, HV // rep, rep, K), axis=3)


@highprec.high_precision
def sequence_vjp(x, attrs):
    """``delta_rule``'s outputs and gradients by the adjoint recurrence in 40 digits."""
    m = _setup(x, attrs)
    o, final, tape = _forward(m, x, keep=True)
    do, dht = _mp(x["do"]), _mp(x["dht"])
    dq, dk = _zeros(m["q"].shape), _zeros(m["k"].shape)
    dv, dbeta, dg = _zeros(m["v"].shape), _zeros(m["beta"].shape), _zeros(m["a"].shape)
    dS0 = _zeros(dht.shape)
    for rows, steps in tape:
        lam = dht[rows]
        for t, S_prev, S, P, e, u in reversed(steps):
            q, k, a, beta = m["q"][:, t], m["k"][:, t], m["a"][:, t], m["beta"][:, t]
            lam = lam + q[..., None] * do[:, t][..., None, :]
            dq[:, t] = onp.sum(S * do[:, t][..., None, :], axis=-1)
            du = onp.sum(lam * k[..., None], axis=-2)
            dk_t = onp.sum(lam * u[..., None, :], axis=-1)
            db = du * e
            dbeta[:, t] = onp.sum(db, axis=-1, keepdims=True) if m["beta_headwise"] else db
            de = du * beta
            dv[:, t] = de
            dP = lam - k[..., None] * de[..., None, :]
            dk[:, t] = dk_t - onp.sum(P * de[..., None, :], axis=-1)
            da = onp.sum(dP * S_prev, axis=-1)                          # (B, HV, K)
            if a.shape[-1] == 1:
                da = onp.sum(da, axis=-1, keepdims=True)
            dg[:, t] = da * a
            lam = a[..., None] * dP
        dS0[rows] = lam
    dnq = _ungroup(dq, m["rep"]) * m["scale"]
    dnk = _ungroup(dk, m["rep"])
    if m["l2"]:
        dnq, dnk = _through_norm(dnq, m["nq"], m["rq"]), _through_norm(dnk, m["nk"], m["rk"])
    grads = {"q": dnq, "k": dnk, "v": dv,
             "beta": dbeta[..., 0] if m["beta_headwise"] else dbeta,
             "initial_state": dS0}
    if m["g_ndim"] is not None:
        grads["g"] = dg[..., 0] if m["g_ndim"] == 3 else dg
    return dict({"o": o, "final_state": final},
                **{"d" + k: v for k, v in grads.items() if k in x})


@highprec.high_precision
def step(x, attrs):
    """``{"o", "new_state"}`` of one decoding step in 40 digits."""
    m = _setup(x, attrs, time=False)
    o, new, _, _, _ = _step(_mp(x["state"]), m["q"], m["k"], m["v"], m["a"], m["beta"])
    return {"o": o, "new_state": new}
