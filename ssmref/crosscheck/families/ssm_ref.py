"""40-digit references of the dense SSM kinds: the certification hooks of :mod:`.ssm`.

Each function recomputes one kind's expected outputs from the SAME float64 inputs (exact as
rationals) in 40-digit arithmetic (:mod:`ssmref.crosscheck.highprec`, mpmath imported lazily) by the
plain algorithm, and returns ``{output name: object array of mpmath numbers}``; the registry scores
the float64 outputs against them with :func:`ssmref.crosscheck.highprec.ref_error`::

    ssm_scan       h_t = A h_{t-1} + B u_t,  y_t = C h_t + D u_t          (the recurrence)
    ssm_step       h_next = A h + B u,  y = C h_next + D u
    ssm_kernel     K[k] = C X_k,  X_0 = B,  X_{k+1} = A X_k                (running products)
    ssm_scan_vjp   λ_{T-1} = Cᵀgy_{T-1} + gh,  λ_t = Cᵀgy_t + Aᵀλ_{t+1}    (the reverse recurrence)
                   dA = Σ_t λ_t h_{t-1}ᵀ, dB = Σ_t λ_t u_tᵀ, dC = Σ_t gy_t h_tᵀ, dD = Σ_t gy_t u_tᵀ,
                   du_t = Bᵀλ_t + Dᵀgy_t, dh0 = Aᵀλ_0
    discretize     zoh: expm(dt [[A, B], [0, 0]]) = [[Ad, Bd], [0, I]] (mpmath's expm);
                   bilinear: (I − dt/2 A) [Ad, Bd] = [I + dt/2 A, dt B]   (LU in 40 digits)

The float64 side uses other algorithms where it has them (FFT convolution for the long VJPs,
scaling and squaring with Padé for ``expm``), so agreement is evidence, not an identity.
"""

import numpy as onp

from ssmref.crosscheck import highprec

PARAMS = ("A", "B", "C", "D")


def _mp(x, *names):
    return tuple(highprec.to_mp(onp.asarray(x[k], dtype=float)) for k in names)


def _states(A, B, u, h0):
    # H: (b, T, n) of h_t = A h_{t-1} + B u_t, from h0 (b, n); u (b, T, m); object arrays
    Bu = onp.einsum("btm,nm->btn", u, B)
    h, out = h0, onp.empty(Bu.shape, dtype=object)
    for t in range(Bu.shape[1]):
        h = onp.dot(h, A.T) + Bu[:, t]                       # (b, n)
        out[:, t] = h
    return out


@highprec.high_precision
def scan(x, attrs):
    """``{"y", "h_last"}`` of ``ssm_scan`` in 40 digits."""
    A, B, C, D, u, h0 = _mp(x, *PARAMS, "u", "h0")
    Hs = _states(A, B, u, h0)
    y = onp.einsum("btn,pn->btp", Hs, C) + onp.einsum("btm,pm->btp", u, D)
    return {"y": y, "h_last": Hs[:, -1]}


@highprec.high_precision
def step(x, attrs):
    """``{"h_next", "y"}`` of ``ssm_step`` in 40 digits."""
    A, B, C, D, h, u = _mp(x, *PARAMS, "h", "u")
    h_next = onp.dot(h, A.T) + onp.dot(u, B.T)
    return {"h_next": h_next, "y": onp.dot(h_next, C.T) + onp.dot(u, D.T)}


@highprec.high_precision
def kernel(x, attrs):
    """``{"K"}``, ``K[k] = C A^k B``, by running products in 40 digits."""
    A, B, C = _mp(x, "A", "B", "C")
    length = int(attrs["length"])
    K = onp.empty((length, C.shape[0], B.shape[1]), dtype=object)
    X = B
    for k in range(length):
        K[k] = onp.dot(C, X)
        X = onp.dot(A, X)
    return {"K": K}


@highprec.high_precision
def scan_vjp(x, attrs):
    """``{"y", "h_last", "dA", "dB", "dC", "dD", "du", "dh0"}`` in 40 digits (reverse recurrence)."""
    A, B, C, D, u, h0, gy, gh = _mp(x, *PARAMS, "u", "h0", "gy", "gh")
    Hs = _states(A, B, u, h0)                                # (b, T, n)
    y = onp.einsum("btn,pn->btp", Hs, C) + onp.einsum("btm,pm->btp", u, D)
    Cg = onp.einsum("btp,pn->btn", gy, C)                    # Cᵀ gy_t
    T = u.shape[1]
    lam = Cg[:, T - 1] + gh
    Lam = onp.empty(Hs.shape, dtype=object)
    Lam[:, T - 1] = lam
    for t in range(T - 2, -1, -1):
        lam = Cg[:, t] + onp.dot(lam, A)                     # λ_t = Cᵀgy_t + Aᵀλ_{t+1}
        Lam[:, t] = lam
    H_prev = onp.concatenate([h0[:, None], Hs[:, :-1]], axis=1)

    def outer(a, b):                                         # Σ_{b,t} a_bt b_btᵀ
        return onp.dot(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]))
    return {"y": y, "h_last": Hs[:, -1], "dA": outer(Lam, H_prev), "dB": outer(Lam, u),
            "dC": outer(gy, Hs), "dD": outer(gy, u),
            "du": onp.einsum("btn,nm->btm", Lam, B) + onp.einsum("btp,pm->btm", gy, D),
            "dh0": onp.dot(Lam[:, 0], A)}


@highprec.high_precision
def discretize(x, attrs):
    """``{"Ad", "Bd"}`` in 40 digits: mpmath's ``expm`` of the block matrix, or LU solves."""
    mp = highprec.mpmath()
    A, B = _mp(x, "A", "B")
    dt = highprec.to_mp(float(x["dt"]))
    n, m = B.shape
    if attrs["method"] == "zoh":
        block = onp.zeros((n + m, n + m), dtype=object) * mp.mpf(0)
        block[:n, :n], block[:n, n:] = dt * A, dt * B
        E = onp.array(mp.expm(mp.matrix(block.tolist())).tolist(), dtype=object)
        return {"Ad": E[:n, :n], "Bd": E[:n, n:]}
    eye = highprec.eye(n)
    left = eye - (dt / 2) * A
    return {"Ad": highprec.solve(left, eye + (dt / 2) * A), "Bd": highprec.solve(left, dt * B)}
