"""Baseline mode for the structured kinds: the naive computation in the target dtype.

Every operation is rounded to the dtype by ``R`` (complex values part by part; float16 and
bfloat16 held in float32 / complex64), the way a straightforward port computes.  The diagonal
kinds' forward passes are the model's definition run with ``R``
(:mod:`ssmref.structured.diagonal_loop`: direct discretization with ``Λ̄`` rounded ONCE, the
recurrence one step at a time, the kernel with the running powers ``Λ̄^{k+1} = Λ̄ · Λ̄^k``, S4D per
channel, S5's two recurrences); their gradients are the reverse recurrences below::

    scan VJP    a_{T-1} = s Cᵀgy_{T-1} + conj(gx),  a_t = s Cᵀgy_t + Λ̄ ⊙ a_{t+1};  ∂Λ̄ = Σ a_t x_{t-1},
                ∂B̄ = Σ a_t u_tᵀ, ∂C = s Σ gy_t x_tᵀ, ∂D = Σ gy_t u_tᵀ, ∂u_t = Re(B̄ᵀa_t) + Dᵀgy_t,
                ∂h0 = Λ̄ a_0; then the chain rule through Λ̄(Λ, Δ), B̄ = b(Λ, Δ) B
    kernel VJP  ∂C, ∂B̄ as sums over lags, ∂Λ through Σ_k k Λ̄^k ∂(Λ̄^k)
    DPLR        dense A = diag(Λ) − P Q^*, LU solves with I − Δ/2 A; Ā^L by repeated squaring;
                the Cauchy/Woodbury form at ω_j = exp(−2πij/L) with 1 ∓ ω_j formed by
                subtraction; an inverse FFT in the dtype
"""

import numpy as onp

from ssmref.structured import diagonal_loop
from ssmref.structured.diagonal import output_scale


def _cw(work):
    return onp.complex64 if work == onp.float32 else onp.complex128


def _get(x, names, R, work):
    # the inputs in the working dtypes (complex ones in complex64 / complex128), rounded
    out = []
    for k in names:
        a = onp.asarray(x[k])
        out.append(R(a.astype(_cw(work) if a.dtype.kind == "c" else work)))
    return out


def _factors(Lam, dt, method, R):
    # Λ̄, b (B̄ = b ⊙ B) and the derivatives dΛ̄/dΛ, dΛ̄/dΔ, db/dΛ, db/dΔ, per state
    lam_bar, b = diagonal_loop.discrete_factors(Lam, dt, method, R)
    dt = dt * onp.ones(Lam.shape, dtype=dt.dtype)
    z = R(dt * Lam)
    if method == "zoh":
        db_dlam = onp.where(Lam == 0, R(dt * dt / 2),
                            R(R(R(z * lam_bar) - R(lam_bar - 1)) / R(Lam * Lam)))
        return lam_bar, b, R(dt * lam_bar), R(Lam * lam_bar), db_dlam, lam_bar
    q = R(1 - R(z / 2))
    q2 = R(q * q)
    return lam_bar, b, R(dt / q2), R(Lam / q2), R(R(dt * dt) / R(2 * q2)), R(1 / q2)


def _discretize(Lam, B, dt, method, R):
    f = _factors(Lam, dt, method, R)
    return f, R(f[1][:, None] * B)


def discretize(x, a, R, work):
    """``{"Lambda_bar", "B_bar"}`` in the dtype (the peers' formulas)."""
    Lam, B, dt = _get(x, ("Lambda", "B", "dt"), R, work)
    lam_bar, Bbar = diagonal_loop.discretize(Lam, B, dt, a["method"], R)
    return {"Lambda_bar": lam_bar, "B_bar": Bbar}


def scan(x, a, R, work):
    """``{"y", "x_last"}`` by the plain recurrence in the dtype."""
    Lam, B, C, D, dt, u, h0 = _get(x, ("Lambda", "B", "C", "D", "dt", "u", "h0"), R, work)
    y, x_last = diagonal_loop.scan_loop(Lam, B, C, D, dt, u, h0, method=a["method"],
                                        output=a["output"], rnd=R)
    return {"y": y, "x_last": x_last}


def _chain(f, g_lam_bar, g_Bbar, B, dt_shape, R):
    # dΛ, dB, dΔ from the gradients w.r.t. Λ̄ and B̄ (holomorphic chain rule; Δ real)
    lam_bar, b, dl_dlam, dl_ddt, db_dlam, db_ddt = f
    gbB = R(onp.sum(R(g_Bbar * B), axis=1))                   # Σ_m ∂B̄_nm B_nm
    dLam = R(R(g_lam_bar * dl_dlam) + R(gbB * db_dlam))
    ddt = R(onp.real(R(g_lam_bar * dl_ddt) + R(gbB * db_ddt)))
    return dLam, R(g_Bbar * b[:, None]), (R(onp.sum(ddt)) if dt_shape == () else ddt)


def scan_vjp(x, a, R, work):
    """The scan's outputs and gradients by the forward and reverse recurrences in the dtype."""
    Lam, B, C, D, dt, u, h0, gy, gx = _get(
        x, ("Lambda", "B", "C", "D", "dt", "u", "h0", "gy", "gx"), R, work)
    s = output_scale(a["output"])
    f, Bbar = _discretize(Lam, B, dt, a["method"], R)
    lam_bar = f[0]
    X = diagonal_loop.states(lam_bar, Bbar, u, h0, R)        # (b, T, n)
    Cg = R(s * R(gy @ C))                                     # (b, T, n): s Cᵀ gy_t
    T = u.shape[1]
    adj = R(Cg[:, T - 1] + onp.conj(gx))
    adjs = [adj]
    for t in range(T - 2, -1, -1):
        adj = R(Cg[:, t] + R(lam_bar * adj))
        adjs.append(adj)
    Adj = onp.stack(adjs[::-1], axis=1)                       # (b, T, n)
    X_prev = onp.concatenate([h0[:, None], X[:, :-1]], axis=1)
    g_lam_bar = R(onp.einsum("btn,btn->n", Adj, X_prev))
    g_Bbar = R(onp.einsum("btn,btm->nm", Adj, u))
    dLam, dB, ddt = _chain(f, g_lam_bar, g_Bbar, B, x["dt"].shape, R)
    return {"y": R(diagonal_loop.readout(X, C, s, R) + R(u @ D.T)), "x_last": X[:, -1],
            "dLambda": dLam, "dB": dB, "dC": R(s * R(onp.einsum("btp,btn->pn", gy, X))),
            "dD": R(onp.einsum("btp,btm->pm", gy, u)), "ddt": ddt,
            "du": R(R(onp.real(R(Adj @ Bbar))) + R(gy @ D)), "dh0": R(lam_bar * Adj[:, 0])}


def kernel(x, a, R, work):
    """``{"K"}`` with the naive powers of the rounded ``Λ̄``."""
    Lam, B, C, dt = _get(x, ("Lambda", "B", "C", "dt"), R, work)
    return {"K": diagonal_loop.kernel_loop(Lam, B, C, dt, int(a["length"]), method=a["method"],
                                           output=a["output"], rnd=R)}


def kernel_vjp(x, a, R, work):
    """The kernel and its gradients, sums over lags in the dtype."""
    Lam, B, C, dt, gK = _get(x, ("Lambda", "B", "C", "dt", "gK"), R, work)
    s = output_scale(a["output"])
    f, Bbar = _discretize(Lam, B, dt, a["method"], R)
    L = int(a["length"])
    W = diagonal_loop.powers(f[0], L, R)                      # (L, n)
    CB = R(C[:, :, None] * Bbar[None])                        # (p, n, m)
    K = R(s * onp.real(R(onp.einsum("ln,pnm->lpm", W, CB))))
    gW = R(s * R(onp.einsum("lpm,pnm->ln", gK, CB)))          # ∂K-sum / ∂(Λ̄^k)
    S = R(onp.einsum("l,ln->n", onp.arange(L, dtype=work), R(W * gW)))   # Σ_k k Λ̄^k ∂(Λ̄^k)
    g_Bbar = R(s * R(onp.einsum("lpm,pn,ln->nm", gK, C, W)))
    if a["method"] == "zoh":                                  # d(Λ̄^k)/dΛ = kΔ Λ̄^k, d/dΔ = kΛ Λ̄^k
        dt_n = dt * onp.ones(Lam.shape, dtype=dt.dtype)
        pow_lam, pow_dt = R(dt_n * S), R(Lam * S)
    else:                                                     # k Λ̄^{k-1} dΛ̄/dΛ, dΛ̄/dΔ
        S1 = R(S / f[0])
        pow_lam, pow_dt = R(S1 * f[2]), R(S1 * f[3])
    gbB = R(onp.sum(R(g_Bbar * B), axis=1))
    ddt = R(onp.real(R(pow_dt + R(gbB * f[5]))))
    return {"K": K, "dLambda": R(pow_lam + R(gbB * f[4])), "dB": R(g_Bbar * f[1][:, None]),
            "dC": R(s * R(onp.einsum("lpm,ln,nm->pn", gK, W, Bbar))),
            "ddt": R(onp.sum(ddt)) if x["dt"].shape == () else ddt}


def s4d_kernel(x, a, R, work):
    """S4D's ``(c, H, L)`` kernel with the naive powers, per channel."""
    Lam, B, C, dt = _get(x, ("Lambda", "B", "C", "dt"), R, work)
    dt = onp.repeat(dt, Lam.shape[1]).reshape(Lam.shape)     # (H, N): the channel's step
    return {"K": diagonal_loop.s4d_kernel_loop(Lam, B, C, dt, int(a["length"]), method=a["method"],
                                               output=a["output"], rnd=R)}


def bidirectional(x, a, R, work):
    """S5's layer: a forward and a backward recurrence in the dtype."""
    Lam, B, C, Cb, D, dt, u = _get(x, ("Lambda", "B", "C", "Cb", "D", "dt", "u"), R, work)
    return {"y": diagonal_loop.bidirectional_loop(Lam, B, C, Cb, D, dt, u, method=a["method"],
                                                  output=a["output"], rnd=R)}


def _dplr_dense(x, R, work):
    Lam, P, Q, B, dt = _get(x, ("Lambda", "P", "Q", "B", "dt"), R, work)
    A = R(onp.diag(Lam) - R(P @ Q.conj().T))
    eye = onp.eye(Lam.shape[0], dtype=Lam.dtype)
    half = R(R(dt / 2) * A)
    left = R(eye - half)
    return R(onp.linalg.solve(left, R(eye + half))), R(onp.linalg.solve(left, R(dt * B)))


def dplr_discretize(x, a, R, work):
    """``{"A_bar", "B_bar"}`` by dense LU solves in the dtype."""
    A_bar, B_bar = _dplr_dense(x, R, work)
    return {"A_bar": A_bar, "B_bar": B_bar}


def dplr_truncate(x, a, R, work):
    """``{"Ct"}``: ``C − C Ā^L``, ``Ā^L`` by repeated squaring in the dtype."""
    A_bar, _ = _dplr_dense(x, R, work)
    (C,) = _get(x, ("C",), R, work)
    k, out, base = int(a["length"]), onp.eye(A_bar.shape[0], dtype=A_bar.dtype), A_bar
    while k:
        if k & 1:
            out = R(out @ base)
        k >>= 1
        if k:
            base = R(base @ base)
    return {"Ct": R(C - R(C @ out))}


def dplr_kernel(x, a, R, work):
    """``{"K"}`` by S4's generating function at the roots of unity, in the dtype."""
    Lam, P, Q, B, Ct, dt = _get(x, ("Lambda", "P", "Q", "B", "Ct", "dt"), R, work)
    L, cw = int(a["length"]), _cw(work)
    angle = R((-2 * onp.pi * onp.arange(L) / L).astype(work))
    omega = R(onp.exp(1j * angle).astype(cw))
    om, op = R(1 - omega), R(1 + omega)
    den = R(R(2 * om[:, None]) - R(R(dt * Lam)[None, :] * op[:, None]))
    Rz = R(R(2 * dt) / den)                                   # (L, N) Cauchy factors
    Qc = onp.conj(Q)
    k00 = R(onp.einsum("pn,ln,nm->lpm", Ct, Rz, B))
    k01 = R(onp.einsum("pn,ln,nr->lpr", Ct, Rz, P))
    k10 = R(onp.einsum("nr,ln,nm->lrm", Qc, Rz, B))
    k11 = R(onp.einsum("nr,ln,ns->lrs", Qc, Rz, P))
    M = R(2 * onp.eye(P.shape[1], dtype=cw) + R(op[:, None, None] * k11))
    corr = R(onp.einsum("lpr,lrm->lpm", k01, R(onp.linalg.solve(M, k10))))
    K_hat = R(k00 - R(op[:, None, None] * corr))
    return {"K": R(onp.real(R(onp.fft.ifft(K_hat, axis=0))))}
