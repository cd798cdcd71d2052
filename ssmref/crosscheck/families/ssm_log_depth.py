"""Baseline mode's second naive computation for the SSM kinds: the log-depth forms, every
operation rounded by ``R`` (products accumulate in the working dtype ``work``).

    states     the associative scan of the affine maps h -> A h + v_t,
               (M2, v2) ∘ (M1, v1) = (M2 M1, M2 v1 + v2),  v_0 = A h0 + B u_0,  v_t = B u_t
               (Blelloch's odd/even recursion, as jax.lax.associative_scan and ssmref.ssm's
               parallel mode)
    adjoint    the same scan backwards in time with Aᵀ:  λ_t = Cᵀ gy_t + Aᵀ λ_{t+1}
    kernel     the powers A^k B by doubling: the next L terms are A^L (A^k B), k < L

Why a second baseline: a log-depth algorithm reuses each rounded product (``A²``, ``A⁴``, ...) in
many outputs, so its rounding errors add up coherently, about ``u·L`` for an effective length
``L``, while the step loop's independent per-step errors add like a random walk, ``u·sqrt(L)``.
Both are correct; measured on the vectors in float32 at ``ρ(A) = 0.999`` (``L = 1000``), the
log-depth scan is up to 24 times less accurate than the step loop (``docs/crosscheck.md``).
Baseline mode allows ``k`` times the larger of the two errors.
"""

import numpy as onp

from ssmref.ssm import PARAM_NAMES


def odd_even_scan(combine, elems):
    """Inclusive prefix scan along axis 0 by Blelloch's odd/even recursion (as
    :func:`ssmref.recurrence.associative_scan`, in plain NumPy)."""
    T = elems[0].shape[0]
    if T < 2:
        return elems
    reduced = combine(tuple(e[0:T - 1:2] for e in elems), tuple(e[1::2] for e in elems))
    odd = odd_even_scan(combine, reduced)                  # prefixes ending at t = 1, 3, ...
    n_even = (T + 1) // 2 - 1
    rest = combine(tuple(o[:n_even] for o in odd), tuple(e[2::2] for e in elems))
    out = []
    for e, r, o in zip(elems, rest, odd):
        full = onp.empty_like(e)
        full[0], full[2::2], full[1::2] = e[0], r, o     # prefixes ending at t = 0, 2, 4, ...
        out.append(full)
    return tuple(out)


def affine_states(A, v, R):
    """The states ``h_t = A h_{t-1} + v_t`` (``h_{-1} = 0``) by :func:`odd_even_scan` of the maps
    ``(A, v_t)``; ``v: (T, b, n)`` -> ``(T, b, n)``."""
    T, n = v.shape[0], A.shape[0]

    def combine(earlier, later):
        (M1, v1), (M2, v2) = earlier, later
        return R(M2 @ M1), R(R(v1 @ onp.swapaxes(M2, -1, -2)) + v2)   # (M2 M1, M2 v1 + v2)

    M = onp.broadcast_to(A, (T, n, n))
    return odd_even_scan(combine, (M, v))[1]


def _cast(x, names, R, work):
    return [R(onp.asarray(x[k], dtype=work)) for k in names]


def _states(A, B, u, h0, R):
    """``H: (b, T, n)`` by the scan; ``v_0 = A h0 + B u_0``."""
    v = onp.moveaxis(R(u @ B.T), 1, 0).copy()             # (T, b, n)
    v[0] = R(v[0] + R(h0 @ A.T))
    return onp.moveaxis(affine_states(A, v, R), 0, 1)     # (b, T, n)


def log_depth_scan(x, attrs, R, work):
    A, B, C, D, u, h0 = _cast(x, (*PARAM_NAMES, "u", "h0"), R, work)
    H = _states(A, B, u, h0, R)
    return {"y": R(R(H @ C.T) + R(u @ D.T)), "h_last": H[:, -1]}


def vjp_outputs(A, B, C, D, u, h0, gy, H, L, R):
    """The outputs of ``ssm_scan_vjp`` from the states ``H`` and adjoints ``L`` (both
    ``(b, T, n)``): ``y``, ``h_last`` and the gradients as matrix products."""
    H_prev = onp.concatenate([h0[:, None], H[:, :-1]], axis=1)   # h_{t-1}

    def flat(a):
        return a.reshape(-1, a.shape[-1])                 # (b*T, .)
    return {"y": R(R(H @ C.T) + R(u @ D.T)), "h_last": H[:, -1],
            "dA": R(flat(L).T @ flat(H_prev)), "dB": R(flat(L).T @ flat(u)),
            "dC": R(flat(gy).T @ flat(H)), "dD": R(flat(gy).T @ flat(u)),
            "du": R(R(L @ B) + R(gy @ D)), "dh0": R(L[:, 0] @ A)}


def log_depth_vjp(x, attrs, R, work):
    A, B, C, D, u, h0, gy, gh = _cast(x, (*PARAM_NAMES, "u", "h0", "gy", "gh"), R, work)
    H = _states(A, B, u, h0, R)
    w = onp.moveaxis(R(gy @ C), 1, 0)[::-1].copy()         # (T, b, n): Cᵀ gy_t, latest first
    w[0] = R(w[0] + gh)                                   # λ_{T-1} = Cᵀ gy_{T-1} + gh
    L = onp.moveaxis(affine_states(A.T, w, R)[::-1], 0, 1)   # (b, T, n): λ_t
    return vjp_outputs(A, B, C, D, u, h0, gy, H, L, R)


def log_depth_kernel(x, attrs, R, work):
    A, B, C = _cast(x, ("A", "B", "C"), R, work)
    length = int(attrs["length"])
    S, power = B[None], A                                 # S: (L, n, m), A^k B for k < L
    while S.shape[0] < length:
        S = onp.concatenate([S, R(onp.einsum("ij,ljk->lik", power, S))], axis=0)
        power = R(power @ power)
    return {"K": R(onp.einsum("pn,lnm->lpm", C, S[:length]))}
