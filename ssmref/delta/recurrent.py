"""The delta rule as a plain recurrence: one step, and the loop over time.

For each batch row and value head, with the state ``S: (K, V)`` (fla's layout: keys are rows)::

    P_t = diag(exp(g_t)) S_{t-1}                   decay first (g in log space; a scalar per
                                                   head for Gated DeltaNet, one per key channel
                                                   for KDA, 0 for DeltaNet)
    u_t = β_t ⊙ (v_t − P_tᵀ k_t)                   the delta: what the memory gets wrong about v_t
    S_t = P_t + k_t u_tᵀ                           = (I − β_t k_t k_tᵀ) P_t + β_t k_t v_tᵀ
    o_t = S_tᵀ q_t                                 the output reads the NEW state

``q`` here is already scaled (and L2-normalised when asked); ``β_t`` is a scalar per head or one
per value channel (fla's ``beta`` of shape ``(B, T, HV, V)``: then the bracket is per column).

Everything here is unchecked math over arrays already in the core layout (value heads expanded,
see :func:`core_layout`): ``q, k (B, T, HV, K)``, ``v (B, T, HV, V)``, ``g (B, T, HV, Kg)`` with
``Kg`` 1 or ``K``, ``beta (B, T, HV, Vb)`` with ``Vb`` 1 or ``V``, ``S (B, HV, K, V)``.  The loop
is taped by autograd (``T`` nodes), so it is differentiable to any order; it is the definition
the chunked form (:mod:`ssmref.delta.chunked`) and the one-step decode are tested against.

Reference: Schlag, Irie & Schmidhuber, "Linear Transformers Are Secretly Fast Weight Programmers"
(ICML 2021); Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence
Length" (NeurIPS 2024); Yang, Kautz & Hatamizadeh, "Gated Delta Networks" (ICLR 2025); Kimi Team,
"Kimi Linear" (2025, KDA); fla's ``naive_recurrent_gated_delta_rule`` and ``naive_recurrent_kda``.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

#: fla's ``l2norm`` epsilon (``fla.modules.l2norm``): ``x / sqrt(Σ x² + eps)``.
L2NORM_EPS = 1e-6


def _exact(x):
    return x


def l2norm(x, eps=L2NORM_EPS, rnd=None):
    """``x / sqrt(Σ_last x² + eps)`` along the last axis (fla's ``l2norm_fwd``; smooth in ``x``).
    ``rnd``: the arithmetic, applied to the result of every operation (``None``: exact)."""
    R = _exact if rnd is None else rnd
    return R(x / R(np.sqrt(R(np.sum(x * x, axis=-1, keepdims=True)) + eps)))


def core_layout(q, k, v, g, beta, scale, l2norm_qk, *, rnd=None, time=True):
    """The public arrays in the core layout: ``q, k`` normalised (if ``l2norm_qk``), ``q`` times
    ``scale``, both repeated to the ``HV`` value heads (value head ``i`` reads query/key head
    ``i // (HV/H)``: fla's GVA); ``g`` as ``(B, T, HV, Kg)`` (zeros ``Kg = 1`` when ``None``),
    ``beta`` as ``(B, T, HV, Vb)``.  ``time=False``: one step, no time axis (``(B, HV, ·)``).
    ``rnd``: the arithmetic, applied to the result of every operation (``None``: exact, ``scale``
    as given; else ``scale`` is taken in ``v``'s dtype, as the zero ``g`` always is)."""
    R = _exact if rnd is None else rnd
    work = onp.asarray(getval(v)).dtype
    if l2norm_qk:
        q, k = l2norm(q, rnd=rnd), l2norm(k, rnd=rnd)
    q = R(q * (scale if rnd is None else R(onp.asarray(scale, dtype=work))))   # scale: differentiable
    axis = 2 if time else 1                                                    # the head axis
    H, HV = np.shape(q)[axis], np.shape(v)[axis]
    if HV != H:
        q, k = np.repeat(q, HV // H, axis=axis), np.repeat(k, HV // H, axis=axis)   # (…, HV, K)
    if g is None:
        g = np.zeros(np.shape(v)[:axis + 1] + (1,), dtype=work)
    elif np.ndim(g) == axis + 1:
        g = g[..., None]                                                       # (…, HV, 1)
    if np.ndim(beta) == axis + 1:
        beta = beta[..., None]                                                 # (…, HV, 1)
    return q, k, v, g, beta


def delta_step_core(S, q, k, v, g, beta, rnd=None):
    """One step: ``(o (B, HV, V), S_new (B, HV, K, V))`` from ``S (B, HV, K, V)``,
    ``q, k (B, HV, K)``, ``v (B, HV, V)``, ``g (B, HV, Kg)``, ``beta (B, HV, Vb)``.
    ``rnd``: the arithmetic, applied to the result of every operation (``None``: exact, the
    float64 definition; the cross-check kit's naive baseline rounds to a dtype); the sums over
    ``K`` run in the arrays' precision and are rounded once."""
    R = _exact if rnd is None else rnd
    P = R(R(np.exp(g))[..., None] * S)                            # (B, HV, K, V): decay first
    Pk = R(np.sum(P * k[..., None], axis=-2))                     # (B, HV, V): Pᵀk
    u = R(beta * R(v - Pk))                                       # (B, HV, V): β ⊙ (v − Pᵀk)
    S_new = R(P + R(k[..., None] * u[..., None, :]))              # (B, HV, K, V): P + k uᵀ
    return R(np.sum(S_new * q[..., None], axis=-2)), S_new        # o = S_newᵀ q


def delta_recurrence(q, k, v, g, beta, S, rnd=None):
    """``(o (B, T, HV, V), S_T (B, HV, K, V))``: :func:`delta_step_core` for ``t = 0..T-1``."""
    outs = []
    for t in range(np.shape(v)[1]):
        o, S = delta_step_core(S, q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], rnd)
        outs.append(o)
    if not outs:
        return np.zeros(np.shape(v)), S
    return np.stack(outs, axis=1), S
