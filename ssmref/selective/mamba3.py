"""Mamba-3 SISO: the exponential-trapezoidal SSM with data-dependent rotary angles, with the
semantics of mamba_ssm's ``mamba3_siso_combined`` (sequence) and ``mamba3_siso_step`` (one step).

For each sequence and head (``q, k: (n,)``, ``v: (p,)``, state ``S_t: (p, n)``)::

    θ_t = (θ_{-1} + Σ_{m<=t} π tanh(Angles_m) DT_m) mod 2π              (headdim_angles = r)
    q_t = R(θ_t)(Q_t + Q_bias),   k_t = R(θ_t)(K_t + K_bias)            (pairs (2i, 2i+1), i < r)
    λ_t = σ(Trap_t),   α_t = exp(ADT_t),   β_t = (1 − λ_t) DT_t α_t,   γ_t = λ_t DT_t
    S_t = α_t S_{t-1} + β_t v_{t-1} k_{t-1}ᵀ + γ_t v_t k_tᵀ
    y_t = S_t q_t + D v_t,   out_t = y_t · silu(Z_t)

``R(θ)`` rotates the pair ``(x_{2i}, x_{2i+1})`` by ``θ_i`` (pairs ``i >= r`` are not rotated);
``(θ_{-1}, S_{-1}, k_{-1}, v_{-1})`` are the input states (zeros without them) and the final
states are ``(θ_{L-1}, S_{L-1}, k_{L-1}, v_{L-1})``: ``k`` rotated and biased, ``v`` as given.
``Q, K`` have ``nheads_qk`` heads: head ``i`` reads ``i // (nheads / nheads_qk)`` (GQA).

Two evaluations agree to rounding (keyword ``method``).  ``"recurrence"``: the recurrence above,
one adjoint primitive over time.  ``"chunked"`` (default): ``k_s v_sᵀ`` reaches ``S_t`` (``t > s``)
with weight ``exp(Σ_{s<m<=t} ADT_m) c_s``, ``c_s = γ_s + (1 − λ_{s+1}) DT_{s+1}`` (the second
term is the next step's ``β`` without its ``α``; 0 after the last step), and ``S_s`` itself with
``γ_s``; so ``y`` is SSD's chunked scan (:func:`ssmref.selective.chunked.chunked_scan`) with
``x = v``, ``B = k``, ``C = q``, input weight ``c``, log decay ``ADT``, minus the diagonal excess
``(1 − λ_{t+1}) DT_{t+1} (q_t·k_t) v_t``, from the initial state ``S_{-1} + (1 − λ_0) DT_0 v_{-1}
k_{-1}ᵀ``.  Its result does not depend on ``chunk_size``.  With ``cu_seqlens`` (batch 1) each
segment ``[cu[i], cu[i+1])`` is a sequence of its own, with input states ``i``; a segment of
length 0 returns its input states.

Reference: Lahoti et al., "Mamba-3: Improved Sequence Modeling using State Space Principles"
(2026); mamba_ssm's ``mamba3_siso_combined``, ``mamba3_siso_step`` and their test references
``mamba3_siso_fwd_ref`` / ``mamba3_siso_step_ref``.
"""

import autograd.numpy as np
import numpy as onp

from ssmref.selective import mamba3_args
from ssmref.selective.chunked import chunked_scan
from ssmref.selective.functional import diagonal_scan, sigmoid, silu

TWO_PI = 2.0 * onp.pi


def wrap_angle(theta):
    """``θ mod 2π`` in ``[0, 2π)`` as ``θ − 2π floor(θ / 2π)`` (mamba's; derivative 1)."""
    return theta - TWO_PI * np.floor(theta / TWO_PI)


def angle_increments(Angles, DT):
    """``π tanh(Angles_t) DT_t``: ``Angles (b, L, h, r)``, ``DT (b, h, L)`` -> ``(b, L, h, r)``."""
    return np.pi * np.tanh(Angles) * np.transpose(DT, (0, 2, 1))[..., None]


def rotate(x, theta):
    """``R(θ) x``: the pair ``(x_{2i}, x_{2i+1})`` rotated by ``θ_i`` for ``i < r``, the other
    pairs unchanged; ``x: (..., n)``, ``θ: (..., r)`` with ``r <= n / 2``."""
    shape = np.shape(x)
    half, r = shape[-1] // 2, np.shape(theta)[-1]
    pairs = np.reshape(x, shape[:-1] + (half, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]                                  # (..., n/2)
    pad = [np.ones(np.shape(theta)[:-1] + (half - r,))] if half > r else []
    cos = np.concatenate([np.cos(theta)] + pad, axis=-1)
    sin = np.concatenate([np.sin(theta)] + [0.0 * p for p in pad], axis=-1)
    return np.reshape(np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1), shape)


def expand_heads(X, h):
    """GQA: ``(b, L, h_qk, n) -> (b, L, h, n)``, head ``i`` reading ``i // (h / h_qk)``."""
    return np.repeat(X, h // np.shape(X)[2], axis=2)


def _recurrence(q, k, v, alpha, beta, gamma, states):
    """``(y, S_{L-1})`` of the recurrence itself; ``q, k: (b, L, h, n)``, ``v: (b, L, h, p)``,
    ``alpha, beta, gamma: (b, h, L)``."""
    b, L, h, n = np.shape(k)
    p = np.shape(v)[3]
    k0, v0 = (np.zeros((b, h, n)), np.zeros((b, h, p))) if states is None else states[2:]
    k_prev = np.concatenate([k0[:, None], k[:, :-1]], axis=1)             # (b, L, h, n)
    v_prev = np.concatenate([v0[:, None], v[:, :-1]], axis=1)             # (b, L, h, p)
    t_first = lambda w: np.transpose(w, (2, 0, 1))[..., None, None]       # noqa: E731 (L, b, h, 1, 1)
    outer = lambda a, c: np.transpose(a[..., :, None] * c[..., None, :], (1, 0, 2, 3, 4))  # noqa: E731
    drive = t_first(beta) * outer(v_prev, k_prev) + t_first(gamma) * outer(v, k)   # (L, b, h, p, n)
    S = diagonal_scan(t_first(alpha), drive, None if states is None else states[1])
    return np.einsum("lbhpn,blhn->blhp", S, q), S[-1]


def _chunked(q, k, v, ADT, DT, lam, gamma, states, chunk_size):
    """``(y, S_{L-1})`` by SSD's chunked scan (see the module docs); shapes as :func:`_recurrence`."""
    after = np.concatenate([(1.0 - lam[..., 1:]) * DT[..., 1:], np.zeros(np.shape(DT)[:2] + (1,))],
                           axis=-1)                                        # (b, h, L): c_t − γ_t
    weight = np.transpose(gamma + after, (0, 2, 1))                        # (b, L, h)
    S0 = None
    if states is not None:
        first = (1.0 - lam[..., 0]) * DT[..., 0]                           # (b, h)
        S0 = states[1] + first[..., None, None] * states[3][..., :, None] * states[2][..., None, :]
    y, S = chunked_scan(v * weight[..., None], np.transpose(ADT, (0, 2, 1)), k, q, chunk_size,
                        None, S0)
    excess = np.transpose(after, (0, 2, 1)) * np.sum(q * k, axis=-1)       # (b, L, h)
    return y - excess[..., None] * v, S


def mamba3_core(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None, states=None,
                chunk_size=64, method="chunked"):
    """``(out, (θ, S, k, v) final)`` for a batch of sequences (unchecked, differentiable).

    Shapes as :func:`mamba3_siso` without ``cu_seqlens`` (``L >= 1``); ``states`` is
    ``(angle (b, h, r), ssm (b, h, p, n), k (b, h, n), v (b, h, p))`` or ``None``."""
    h = np.shape(V)[2]
    theta = np.cumsum(angle_increments(Angles, DT), axis=1)                # (b, L, h, r)
    if states is not None:
        theta = theta + states[0][:, None]
    theta = wrap_angle(theta)
    q = rotate(expand_heads(Q, h) + Q_bias, theta)                         # (b, L, h, n)
    k = rotate(expand_heads(K, h) + K_bias, theta)                         # (b, L, h, n)
    lam = sigmoid(Trap)                                                    # (b, h, L)
    alpha = np.exp(ADT)
    gamma = lam * DT
    if method == "recurrence":
        y, S = _recurrence(q, k, V, alpha, (1.0 - lam) * DT * alpha, gamma, states)
    else:
        y, S = _chunked(q, k, V, ADT, DT, lam, gamma, states, chunk_size)
    if D is not None:
        y = y + D[:, None] * V                                             # (b, L, h, p)
    if Z is not None:
        y = y * silu(Z)
    return y, (theta[:, -1], S, k[:, -1], V[:, -1])


def _segments(a, cu):
    """``mamba3_core`` per segment of ``cu_seqlens``: outputs concatenated, final states stacked."""
    outs, finals = [], []
    for i in range(len(cu) - 1):
        lo, hi = int(cu[i]), int(cu[i + 1])
        st = None if a.states is None else tuple(s[i:i + 1] for s in a.states)
        if hi == lo:                                         # no step: the input states
            finals.append(_zero_states(a, st))
            continue
        seq = lambda X: X[:, lo:hi]                          # noqa: E731 (1, L_i, ...)
        bhl = lambda X: X[:, :, lo:hi]                       # noqa: E731 (1, h, L_i)
        out, fin = mamba3_core(seq(a.Q), seq(a.K), seq(a.V), bhl(a.ADT), bhl(a.DT), bhl(a.Trap),
                               a.Q_bias, a.K_bias, seq(a.Angles), a.D,
                               None if a.Z is None else seq(a.Z), st, a.chunk_size, a.method)
        outs.append(out)
        finals.append(fin)
    out = np.concatenate(outs, axis=1)                      # cu ends at L >= 1: one segment is not empty
    return out, tuple(np.concatenate([f[j] for f in finals], axis=0) for j in range(4))


def _zero_states(a, st):
    if st is not None:
        return st
    h, p = np.shape(a.V)[2:]
    n, r = np.shape(a.Q)[3], np.shape(a.Angles)[3]
    return np.zeros((1, h, r)), np.zeros((1, h, p, n)), np.zeros((1, h, n)), np.zeros((1, h, p))


def mamba3_siso(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None,
                Input_States=None, chunk_size=64, return_final_states=False, cu_seqlens=None, *,
                method="chunked"):
    """Mamba-3 SISO over sequences: ``out (b, L, h, p)``, or ``(out, angle_state, ssm_state,
    k_state, v_state)`` with ``return_final_states``.

        θ_t = (θ_{-1} + Σ π tanh(Angles) DT) mod 2π,   q, k = R(θ_t)(Q + Q_bias), R(θ_t)(K + K_bias)
        S_t = e^{ADT_t} S_{t-1} + (1 − σ(Trap_t)) DT_t e^{ADT_t} v_{t-1} k_{t-1}ᵀ + σ(Trap_t) DT_t v_t k_tᵀ
        out_t = (S_t q_t + D v_t) · silu(Z_t)

    Shapes (mamba_ssm's ``mamba3_siso_combined``): ``Q, K (b, L, h_qk, n)`` with ``n`` even and
    ``h % h_qk == 0``, ``V, Z (b, L, h, p)``, ``ADT, DT, Trap (b, h, L)``, ``Q_bias, K_bias
    (h, n)``, ``Angles (b, L, h, r)`` with ``r <= n / 2``, ``D (h,)``; ``Input_States`` =
    ``(angle (N, h, r), ssm (N, h, p, n), k (N, h, n), v (N, h, p))`` with ``N = b``, or the
    number of segments with ``cu_seqlens (N + 1,)`` int (batch 1; segments may be empty).
    ``ADT`` is the log decay ``A·dt`` and ``DT`` the step, both as given (no softplus here);
    ``Trap`` and ``Angles`` are raw (``σ`` and ``π tanh`` inside).  ``chunk_size >= 1``; the
    result does not depend on it.  ``method``: ``"chunked"`` (default) or ``"recurrence"``.
    """
    a = mamba3_args.mamba3_args(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z,
                                Input_States, chunk_size, return_final_states, cu_seqlens, method)
    if a.cu_seqlens is None:
        out, final = mamba3_core(a.Q, a.K, a.V, a.ADT, a.DT, a.Trap, a.Q_bias, a.K_bias,
                                 a.Angles, a.D, a.Z, a.states, a.chunk_size, a.method)
    else:
        out, final = _segments(a, a.cu_seqlens)
    return (out,) + tuple(final) if a.return_final_states else out


def mamba3_siso_step(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None,
                     Input_States=None):
    """One decoding step: ``(out (b, h, p), (angle_state, ssm_state, k_state, v_state))``.

    mamba_ssm's ``mamba3_siso_step`` arguments without the seqlen axis: ``Q, K (b, h_qk, n)``,
    ``V, Z (b, h, p)``, ``ADT, DT, Trap (b, h)``, ``Angles (b, h, r)``, ``Input_States`` =
    ``(angle (b, h, r), ssm (b, h, p, n), k (b, h, n), v (b, h, p))`` (zeros if ``None``).  The
    same recurrence for one step; the input states are not modified (mamba writes new ones).
    """
    a = mamba3_args.step_args(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z, Input_States)
    seq = lambda X: None if X is None else X[:, None]       # noqa: E731 (b, 1, ...)
    bhl = lambda X: X[..., None]                            # noqa: E731 (b, h, 1)
    out, final = mamba3_core(seq(a.Q), seq(a.K), seq(a.V), bhl(a.ADT), bhl(a.DT), bhl(a.Trap),
                             a.Q_bias, a.K_bias, seq(a.Angles), a.D, seq(a.Z), a.states, 1,
                             "recurrence")
    return out[:, 0], final
