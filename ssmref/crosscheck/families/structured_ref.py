"""40-digit references of the structured kinds: the certification hooks of :mod:`.structured`.

Each function recomputes a case's expected outputs from the same float64 inputs in 40-digit
arithmetic (:mod:`ssmref.crosscheck.highprec`; mpmath imported lazily), by an algorithm independent
of the float64 one, and returns ``{output name: object array of mpmath numbers}``; the forward
passes are :mod:`.structured_certify`'s recomputations of the model functions:

    diag_discretize  exp, expm1 and quotients
    diag_scan        the plain recurrence                      (the expected values: FFT convolution)
    diag_kernel      running products Λ̄^{k+1} = Λ̄ Λ̄^k         (expected: exp(kΔΛ) compensated)
    s4d_kernel       the same, channel by channel
    bidirectional    two recurrences, the second on the reversed input
    dplr_discretize  dense LU solves with I − Δ/2 A            (expected: Woodbury)
    dplr_truncate    C − C Ā^L, Ā^L by repeated squaring of the 40-digit Ā
    dplr_kernel      C = C̃ (I − Ā^L)^{-1}, K[k] = Re(C Ā^k B̄)    (expected: Cauchy kernel + ifft)

The VJPs are the adjoint equations in 40 digits (the expected values come from autograd)::

    a_{T-1} = s Cᵀgy_{T-1} + conj(gx),   a_t = s Cᵀgy_t + Λ̄ ⊙ a_{t+1}
    ∂Λ̄ = Σ_t a_t ⊙ x_{t-1},  ∂B̄ = Σ_t a_t u_tᵀ,  ∂C = s Σ_t gy_t x_tᵀ,  ∂D = Σ_t gy_t u_tᵀ,
    ∂u_t = Re(B̄ᵀ a_t) + Dᵀ gy_t,  ∂h0 = Λ̄ ⊙ a_0
    kernel: ∂C = s Σ_k gK_k (Λ̄^k ⊙ B̄)ᵀ,  ∂B̄ = s Σ_k (Cᵀ gK_k) ⊙ Λ̄^k,  ∂(Λ̄^k) = s Σ_pm gK C ⊙ B̄

then the chain rule through ``Λ̄(Λ, Δ)`` and ``B̄ = b(Λ, Δ) ⊙ B``.  For ``L = Re f(z)`` with ``f``
holomorphic, ``∂L/∂Re z − i ∂L/∂Im z = f'(z)``: gradients of complex inputs multiply by the
derivatives, never by their conjugates (``conj(gx)`` appears because ``Re(conj(gx) x)`` is the
pairing); the real ``Δ`` gets ``Re`` of the same products.
"""

import numpy as onp

from ssmref.crosscheck import highprec
from ssmref.crosscheck.families import structured_certify
from ssmref.structured.diagonal import output_scale


def _diag(x):
    prm = {k: x[k] for k in ("Lambda", "B", "C", "D", "dt") if k in x}
    prm.setdefault("C", onp.zeros((1, x["Lambda"].shape[0])))
    prm.setdefault("D", onp.zeros((prm["C"].shape[0], x["B"].shape[1])))
    return prm


def discretize(x, a):
    """``{"Lambda_bar", "B_bar"}``."""
    lam_bar, B_bar = structured_certify.mp_diag_discretize(_diag(x), a["method"])
    return {"Lambda_bar": lam_bar, "B_bar": B_bar}


def scan(x, a):
    """``{"y", "x_last"}`` by the recurrence."""
    y, x_last = structured_certify.mp_diag_scan(_diag(x), x["u"], x["h0"], method=a["method"],
                                                output=a["output"])
    return {"y": y, "x_last": x_last}


def kernel(x, a):
    """``{"K"}`` by running products."""
    return {"K": structured_certify.mp_diag_kernel(_diag(x), int(a["length"]), method=a["method"],
                                                   output=a["output"])}


@highprec.high_precision
def s4d_kernel(x, a):
    """``{"K": (c, H, L)}``, one single-input diagonal kernel per channel."""
    c, Hn, N = x["C"].shape
    L = int(a["length"])
    K = onp.empty((c, Hn, L), dtype=object)
    for h in range(Hn):
        prm = {"Lambda": x["Lambda"][h], "B": x["B"][h][:, None], "C": x["C"][:, h],
               "D": onp.zeros((c, 1)), "dt": x["dt"][h]}
        K[:, h] = structured_certify.mp_diag_kernel(prm, L, method=a["method"], output=a["output"])[:, :, 0].T
    return {"K": K}


@highprec.high_precision
def bidirectional(x, a):
    """``{"y"}``: the forward recurrence plus the backward one on the reversed input."""
    prm = _diag(x)
    back = dict(prm, C=x["Cb"], D=onp.zeros_like(x["D"]))
    y_f, _ = structured_certify.mp_diag_scan(prm, x["u"], None, method=a["method"], output=a["output"])
    y_b, _ = structured_certify.mp_diag_scan(back, x["u"][:, ::-1], None, method=a["method"],
                                             output=a["output"])
    return {"y": y_f + y_b[:, ::-1]}


def dplr_discretize(x, a):
    """``{"A_bar", "B_bar"}`` by dense LU."""
    A_bar, B_bar = structured_certify.mp_dplr_discretize(x)
    return {"A_bar": A_bar, "B_bar": B_bar}


@highprec.high_precision
def dplr_truncate(x, a):
    """``{"Ct"}``: ``C − C Ā^L``."""
    A_bar, _ = structured_certify.mp_dplr_discretize(x)
    C = highprec.to_mp(x["C"])
    return {"Ct": C - onp.dot(C, highprec.matrix_power(A_bar, int(a["length"])))}


def dplr_kernel(x, a):
    """``{"K"}`` from ``C = C̃ (I − Ā^L)^{-1}`` and the dense powers."""
    return {"K": structured_certify.mp_dplr_kernel(x, int(a["length"]))}


# --- gradients ------------------------------------------------------------------------------

def _factors(Lam, dt, method):
    # per state: Λ̄, b, dΛ̄/dΛ, dΛ̄/dΔ, db/dΛ, db/dΔ (object arrays)
    mp = highprec.mpmath()
    rows = []
    for lam, d in zip(Lam, dt):
        z = lam * d
        if method == "zoh":
            e = mp.exp(z)
            if lam == 0:
                b, b_lam = d, d * d / 2
            else:
                b, b_lam = mp.expm1(z) / lam, (z * e - mp.expm1(z)) / lam ** 2
            rows.append((e, b, d * e, lam * e, b_lam, e))
        else:
            q = 1 - z / 2
            rows.append(((1 + z / 2) / q, d / q, d / q ** 2, lam / q ** 2, d * d / (2 * q ** 2),
                         1 / q ** 2))
    return [onp.array(col, dtype=object) for col in zip(*rows)]


def _inputs(x, names):
    out = [highprec.to_mp(x[k]) for k in names]
    n = x["Lambda"].shape[0]
    return out, highprec.to_mp(onp.broadcast_to(onp.asarray(x["dt"], dtype=float), (n,)))


def _chain(f, g_lam_bar, g_Bbar, B, dt_shape):
    lam_bar, b, dl_dlam, dl_ddt, db_dlam, db_ddt = f
    gbB = onp.sum(g_Bbar * B, axis=1)
    ddt = highprec.re(g_lam_bar * dl_ddt + gbB * db_ddt)
    return (g_lam_bar * dl_dlam + gbB * db_dlam, g_Bbar * b[:, None],
            onp.array(onp.sum(ddt), dtype=object) if dt_shape == () else ddt)


@highprec.high_precision
def scan_vjp(x, a):
    """The scan's outputs and gradients by the adjoint recurrence in 40 digits."""
    (Lam, B, C, D, u, h0, gy, gx), dt = _inputs(x, ("Lambda", "B", "C", "D", "u", "h0", "gy", "gx"))
    s = output_scale(a["output"])
    f = _factors(Lam, dt, a["method"])
    lam_bar, Bbar = f[0], f[1][:, None] * B
    batch, T = u.shape[:2]
    n = Lam.shape[0]
    zero = highprec.to_mp(0.0)
    g_lam, g_Bbar = onp.full(n, zero), onp.full(B.shape, zero)
    dC, dD = onp.full(C.shape, zero), onp.full(D.shape, zero)
    Y, X_last = onp.empty(gy.shape, dtype=object), onp.empty((batch, n), dtype=object)
    du, dh0 = onp.empty(u.shape, dtype=object), onp.empty((batch, n), dtype=object)
    for i in range(batch):
        Bu, xt, X = onp.dot(u[i], Bbar.T), h0[i], onp.empty((T, n), dtype=object)
        for t in range(T):
            xt = lam_bar * xt + Bu[t]
            X[t] = xt
        Y[i] = s * highprec.re(onp.dot(X, C.T)) + onp.dot(u[i], D.T)
        Cg = s * onp.dot(gy[i], C)                            # (T, n)
        adj, A = Cg[T - 1] + highprec.conj(gx[i]), onp.empty((T, n), dtype=object)
        A[T - 1] = adj
        for t in range(T - 2, -1, -1):
            adj = Cg[t] + lam_bar * adj
            A[t] = adj
        X_prev = onp.concatenate([h0[i][None], X[:-1]], axis=0)
        g_lam = g_lam + onp.sum(A * X_prev, axis=0)
        g_Bbar = g_Bbar + onp.dot(A.T, u[i])
        dC, dD = dC + s * onp.dot(gy[i].T, X), dD + onp.dot(gy[i].T, u[i])
        du[i] = highprec.re(onp.dot(A, Bbar)) + onp.dot(gy[i], D)
        dh0[i], X_last[i] = lam_bar * A[0], X[-1]
    dLam, dB, ddt = _chain(f, g_lam, g_Bbar, B, onp.shape(x["dt"]))
    return {"y": Y, "x_last": X_last, "dLambda": dLam, "dB": dB, "dC": dC, "dD": dD, "ddt": ddt,
            "du": du, "dh0": dh0}


@highprec.high_precision
def kernel_vjp(x, a):
    """The kernel and its gradients, sums over lags in 40 digits."""
    (Lam, B, C, gK), dt = _inputs(x, ("Lambda", "B", "C", "gK"))
    s, L = output_scale(a["output"]), int(a["length"])
    f = _factors(Lam, dt, a["method"])
    lam_bar, Bbar = f[0], f[1][:, None] * B
    zero = highprec.to_mp(0.0)
    W = onp.full(Lam.shape, highprec.to_mp(1.0))                     # Λ̄^k
    K = onp.empty(gK.shape, dtype=object)
    dC, g_Bbar, S = onp.full(C.shape, zero), onp.full(B.shape, zero), onp.full(Lam.shape, zero)
    for k in range(L):
        WB = W[:, None] * Bbar                                # (n, m)
        K[k] = s * highprec.re(onp.dot(C, WB))
        CG = onp.dot(C.T, gK[k])                              # (n, m): Σ_p C_pn gK_pm
        dC = dC + s * onp.dot(gK[k], WB.T)
        g_Bbar = g_Bbar + s * CG * W[:, None]
        S = S + k * W * (s * onp.sum(CG * Bbar, axis=1))     # Σ_k k Λ̄^k ∂(Λ̄^k)
        W = W * lam_bar
    if a["method"] == "zoh":                                  # ∂(Λ̄^k)/∂Λ = kΔΛ̄^k, /∂Δ = kΛΛ̄^k
        pow_lam, pow_dt = dt * S, Lam * S
    else:                                                     # k Λ̄^{k-1} dΛ̄/dΛ, dΛ̄/dΔ
        pow_lam, pow_dt = S / lam_bar * f[2], S / lam_bar * f[3]
    gbB = onp.sum(g_Bbar * B, axis=1)
    ddt = highprec.re(pow_dt + gbB * f[5])
    return {"K": K, "dLambda": pow_lam + gbB * f[4], "dB": g_Bbar * f[1][:, None], "dC": dC,
            "ddt": onp.array(onp.sum(ddt), dtype=object) if onp.shape(x["dt"]) == () else ddt}
