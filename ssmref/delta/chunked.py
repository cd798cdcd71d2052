"""The delta rule by chunks: the WY / UT form, exact in float64, for any chunk size.

The sequence is cut into chunks of ``C`` steps (the last one padded with ``β = k = v = q = 0``
and ``g = 0``, which is the identity step).  Inside a chunk (positions ``i, m = 0..C-1``, chunk
start state ``H``), with the log gates ``g`` summed directly (no differences of running sums)::

    seg[i, m] = Σ_{m<l<=i} g_l          Γ_i = Σ_{l<=i} g_l          tail_m = Σ_{m<l<=C-1} g_l

(per key channel for KDA's gates, one number per head otherwise), the recurrence of
:mod:`ssmref.delta.recurrent` unrolls to ``S_i = e^{Γ_i} H + Σ_{m<=i} e^{seg[i, m]} k_m u_mᵀ``
with the pseudo-values ``u_m = β_m ⊙ (v_m − k_mᵀ P_m)``.  Writing them out gives the triangular
system of the WY / UT transform (per value column ``j`` when β has one per column)::

    1. A[i, m] = β_i Σ_d k_id k_md e^{seg[i, m, d]}   (m < i, else 0)
       U = (I + A)^{-1} (β ⊙ V)                W = (I + A)^{-1} diag(β) (K ⊙ e^{Γ})
    2. per chunk, in order:   u = U − W H                          the true pseudo-values
                              O = (Q ⊙ e^{Γ}) H + (QKᵀ ⊙ e^{seg})_{m<=i} u     outputs
                              H ← e^{Γ_{C-1}} ⊙ H + (K ⊙ e^{tail})ᵀ u         next chunk's state

``(I + A)^{-1}`` is applied by a solve of the unit lower-triangular system (never formed as a
product of ``C`` Householder-like factors); step 1 is batched over every chunk, step 2 is the
sequential pass over chunks (``T / C`` taped steps).  The result does not depend on ``C``.

Reference: Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence
Length" (NeurIPS 2024), Section 3 (the WY representation, the UT transform); Yang, Kautz &
Hatamizadeh, "Gated Delta Networks" (ICLR 2025), Section 3.3; fla's
``naive_chunk_gated_delta_rule`` and ``naive_chunk_kda``.
"""

import autograd.numpy as np
import numpy as onp


def _pad_time(x, pad):
    """``x (B, T, ...)`` with ``pad`` zero steps appended (explicit concatenate)."""
    if pad == 0:
        return x
    return np.concatenate([x, np.zeros((np.shape(x)[0], pad) + np.shape(x)[2:])], axis=1)


def _chunks(x, c, C):
    """``(B, c·C, HV, X)`` -> ``(B, HV, c, C, X)``."""
    B, _, HV, X = np.shape(x)
    return np.transpose(np.reshape(x, (B, c, C, HV, X)), (0, 3, 1, 2, 4))


def segsum(ell):
    """``seg[..., i, m] = Σ_{m<l<=i} ℓ_l`` (0 for ``m >= i``), summed directly:
    ``ell (..., C)`` -> ``(..., C, C)``."""
    C = np.shape(ell)[-1]
    below = onp.tril(onp.ones((C, C)), -1)                           # [l, m] = 1 where l > m
    return np.cumsum(ell[..., :, None] * below, axis=-2)            # [i, m] = Σ_{m<l<=i} ℓ_l


def _decayed_products(a, b, decay):
    """``Σ_d a_id b_md decay[d, i, m]``: ``a, b (..., C, K)``, ``decay (..., Kg, C, C)``."""
    if np.shape(decay)[-3] == 1:
        return np.matmul(a, np.swapaxes(b, -1, -2)) * decay[..., 0, :, :]
    return np.einsum("...id,...md,...dim->...im", a, b, decay)


def delta_chunked(q, k, v, g, beta, S, C):
    """``(o (B, T, HV, V), S_T (B, HV, K, V))`` of the delta rule by chunks of ``C`` steps
    (unchecked, differentiable); arguments in the core layout of
    :func:`ssmref.delta.recurrent.core_layout`, ``S`` the initial state."""
    B, T, HV, V = np.shape(v)
    if T == 0:
        return np.zeros((B, 0, HV, V)), S
    Vb = np.shape(beta)[-1]
    c = -(-T // C)
    q, k, v, g, beta = (_chunks(_pad_time(x, c * C - T), c, C) for x in (q, k, v, g, beta))
    #   q, k (B, HV, c, C, K),  v (B, HV, c, C, V),  g (B, HV, c, C, Kg),  beta (B, HV, c, C, Vb)
    ell = np.swapaxes(g, -1, -2)                                     # (B, HV, c, Kg, C)
    seg = segsum(ell)                                                # (B, HV, c, Kg, C, C)
    gamma = np.swapaxes(np.cumsum(ell, axis=-1), -1, -2)             # (B, HV, c, C, Kg): Γ_i
    tail = np.swapaxes(seg[..., C - 1, :], -1, -2)                   # (B, HV, c, C, Kg)
    decay = np.exp(seg) * onp.tril(onp.ones((C, C)))                 # e^{seg}, m <= i

    # 1. the UT transform of every chunk: U = (I + A)^{-1} (β ⊙ V), W = (I + A)^{-1} β (K e^Γ)
    KK = _decayed_products(k, k, decay) * onp.tril(onp.ones((C, C)), -1)   # (B, HV, c, C, C)
    betaT = np.swapaxes(beta, -1, -2)                                # (B, HV, c, Vb, C)
    IA = onp.eye(C) + betaT[..., :, None] * KK[:, :, :, None]        # (B, HV, c, Vb, C, C)
    ke = k * np.exp(gamma)                                           # (B, HV, c, C, K)
    W = np.linalg.solve(IA, betaT[..., None] * ke[:, :, :, None])    # (B, HV, c, Vb, C, K)
    if Vb == 1:
        U = np.linalg.solve(IA, (beta * v)[:, :, :, None])[:, :, :, 0]           # (B, HV, c, C, V)
    else:
        U = np.swapaxes(np.linalg.solve(IA, np.swapaxes(beta * v, -1, -2)[..., None])[..., 0],
                        -1, -2)                                      # (B, HV, c, C, V)
    QK = _decayed_products(q, k, decay)                              # (B, HV, c, C, C), m <= i

    # 2. the chunks in order: true pseudo-values, outputs, the state carried on
    outs = []
    for n in range(c):
        if Vb == 1:
            WH = np.matmul(W[:, :, n, 0], S)                         # (B, HV, C, V)
        else:
            WH = np.einsum("bhjik,bhkj->bhij", W[:, :, n], S)        # per value column j
        u = U[:, :, n] - WH                                          # (B, HV, C, V)
        outs.append(np.matmul(q[:, :, n] * np.exp(gamma[:, :, n]), S) + np.matmul(QK[:, :, n], u))
        S = (np.exp(gamma[:, :, n, C - 1])[..., None] * S
             + np.matmul(np.swapaxes(k[:, :, n] * np.exp(tail[:, :, n]), -1, -2), u))
    o = np.transpose(np.stack(outs, axis=2), (0, 2, 3, 1, 4))        # (B, c, C, HV, V)
    return np.reshape(o, (B, c * C, HV, V))[:, :T], S
