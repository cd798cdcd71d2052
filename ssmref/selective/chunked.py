"""SSD's chunked algorithm (Mamba-2, "state space duality"), exact in float64.

The sequence is cut into chunks of ``Q`` steps (the last one padded with ``Δ = 0``, which is the
identity step).  With the per-step log decay ``ℓ_t = Δ_t A_h`` and, inside a chunk,

    seg[i, j] = Σ_{m=j+1}^{i} ℓ_m   (j <= i),        M[i, j] = exp(seg[i, j]) · same(i, j),

the decay mask (Dao & Gu's ``L``; here ``L`` is the sequence length), where ``same(i, j)`` is 1
when no sequence restart (``seq_idx`` change) lies in ``(j, i]``, the recurrence
``s_t = e^{ℓ_t} s_{t-1} + Δ_t x_t B_tᵀ``, ``y_t = s_t C_t`` splits into

    1. intra-chunk (quadratic, "attention" form):  y_i  = Σ_{j<=i} (C_i·B_j) M[i, j] Δ_j x_j
    2. chunk states:                               S_c  = Σ_j M[Q-1, j] Δ_j x_j B_jᵀ
    3. inter-chunk recurrence over chunks:         H_c  = e^{Σ_chunk ℓ} same_c · H_{c-1} + S_c,
                                                   H_{-1} = initial_states
    4. state -> output:                            y_i += e^{Σ_{m<=i} ℓ_m} same(i, -1) · H_{c-1} C_i

and the final state is ``H`` after the last chunk.  ``seg`` is summed directly (a masked cumulative
sum), not as a difference of running sums, so no cancellation grows with the chunk position.
Step 3 is one call of the adjoint primitive ``ssmref.recurrence.linear_recurrence``; steps 1, 2, 4
are batched matrix products.  Heads are laid out as ``(g, k)``: head ``i = group * k + r`` reads
``B, C`` of group ``i // k``, ``k = h / g``.

Reference: Dao & Gu, "Transformers are SSMs" (ICML 2024), Section 6 and Listing 1; mamba_ssm's
``ssd_minimal_discrete`` and the kernels of ``mamba_chunk_scan_combined``.
"""

import autograd.numpy as np
import numpy as onp

from ssmref.recurrence import linear_recurrence
from ssmref.selective.functional import contiguous, matmul


def _pad_time(v, pad, axis=1):
    """``v`` with ``pad`` zeros appended on ``axis`` (explicit concatenate, differentiable)."""
    if pad == 0:
        return v
    shape = list(np.shape(v))
    shape[axis] = pad
    return np.concatenate([v, np.zeros(shape)], axis=axis)


def segsum(ell):
    """``seg[..., i, j] = Σ_{m=j+1}^{i} ℓ_m`` for ``j <= i`` (0 on and above the diagonal is
    irrelevant: those entries are masked by the caller); ``ell: (..., Q)`` -> ``(..., Q, Q)``."""
    Q = np.shape(ell)[-1]
    below = onp.tril(onp.ones((Q, Q)), -1)                          # [m, j] = 1 where m > j
    return contiguous(np.cumsum(ell[..., :, None] * below, axis=-2))   # [i, j] = Σ_{j<m<=i} ℓ_m


def _reverse_tail_sum(ell):
    """``Σ_{m=j+1}^{Q-1} ℓ_m`` for every ``j`` (0 at ``j = Q-1``), summed directly, ``(..., Q)``."""
    tail = np.cumsum(ell[..., :0:-1], axis=-1)[..., ::-1]          # Σ_{m>=j+1} for j < Q-1
    return np.concatenate([tail, np.zeros(np.shape(ell)[:-1] + (1,))], axis=-1)


def ssd_chunked(x, dt, A, B, C, Q, restarts=None, initial_states=None):
    """``(y, final_state)`` of the SSD recurrence by chunks (unchecked, differentiable).

    ``x: (b, L, h, p)``, ``dt: (b, L, h)`` processed (bias, softplus, clamp), ``A: (h,)``,
    ``B, C: (b, L, g, n)``, ``Q`` the chunk size; ``restarts: (b, L)`` int segment counter
    (``r_t`` = number of restarts at or before ``t``, ``r_{-1} = 0``) or ``None``;
    ``initial_states: (b, h, p, n)`` or ``None``.  Returns ``y: (b, L, h, p)`` without the ``D``
    term and gate, and ``final_state: (b, h, p, n)``.
    """
    return chunked_scan(x * dt[..., None], dt * A, B, C, Q, restarts, initial_states)


def chunked_scan(xdt, ell, B, C, Q, restarts=None, initial_states=None):
    """The four steps above for ``s_t = e^{ℓ_t} s_{t-1} + xdt_t B_tᵀ``, ``y_t = s_t C_t``, with the
    input weight already in ``xdt: (b, L, h, p)`` and the log decay ``ell: (b, L, h)`` given
    (SSD: ``Δ_t x_t`` and ``Δ_t A``; Mamba-3 weighs and decays differently).  Same ``B, C, Q,
    restarts, initial_states`` and results as :func:`ssd_chunked`."""
    b, L, h, p = np.shape(xdt)
    g, n = np.shape(B)[2:]
    k = h // g
    c = -(-L // Q)
    pad = c * Q - L
    xdt, ell, B, C = (_pad_time(v, pad) for v in (xdt, ell, B, C))         # padding: ℓ = 0, no input
    r = onp.zeros((b, L), dtype=onp.int64) if restarts is None else restarts
    r = onp.concatenate([r, onp.repeat(r[:, -1:], pad, axis=1)], axis=1).reshape(b, c, Q)
    r_prev = onp.concatenate([onp.zeros((b, 1), onp.int64), r[:, :-1, -1]], axis=1)     # (b, c)

    xdt = np.reshape(xdt, (b, c, Q, g, k, p))
    x_kQ = np.transpose(xdt, (0, 1, 3, 4, 2, 5))                             # (b, c, g, k, Q, p)
    x_Qk = np.reshape(np.transpose(xdt, (0, 1, 3, 2, 4, 5)), (b, c, g, Q, k * p))   # (b, c, g, Q, kp)
    B = np.transpose(np.reshape(B, (b, c, Q, g, n)), (0, 1, 3, 2, 4))       # (b, c, g, Q, n)
    C = np.transpose(np.reshape(C, (b, c, Q, g, n)), (0, 1, 3, 2, 4))       # (b, c, g, Q, n)
    ell = np.transpose(np.reshape(ell, (b, c, Q, g, k)), (0, 1, 3, 4, 2))
    #                                                                          ell: (b, c, g, k, Q)

    # 1. intra-chunk: y_i = Σ_{j<=i, same segment} (C_i·B_j) exp(seg[i, j]) Δ_j x_j
    same = (r[:, :, :, None] == r[:, :, None, :]) & onp.tril(onp.ones((Q, Q), bool))  # (b, c, Q, Q)
    CB = matmul(C, np.swapaxes(B, -1, -2)) * same[:, :, None]            # (b, c, g, Q, Q), masked
    seg = segsum(ell)                                                        # (b, c, g, k, Q, Q)
    if restarts is not None and not same.all():
        seg = np.where(same[:, :, None, None], seg, 0.0)     # masked entries: no overflow for A > 0
    y = matmul(CB[:, :, :, None] * np.exp(seg), x_kQ)                    # (b, c, g, k, Q, p)
    y = np.reshape(np.transpose(y, (0, 1, 2, 4, 3, 5)), (b, c, g, Q, k * p))  # (b, c, g, Q, kp)

    # 2. chunk states: S_c = Σ_j exp(Σ_{m>j} ℓ_m) [r_j = r_last] Δ_j x_j B_jᵀ, as (k·p, n)
    tail = _reverse_tail_sum(ell)                                            # (b, c, g, k, Q)
    last = (r == r[:, :, -1:])[:, :, None, :, None]                         # (b, c, 1, Q, 1)
    w = np.where(last, np.exp(np.where(last, np.transpose(tail, (0, 1, 2, 4, 3)), 0.0)), 0.0)
    # (positive axes: autograd 1.9's np.repeat gradient is wrong for a negative axis)
    w = np.reshape(np.repeat(w, p, axis=4), (b, c, g, Q, k * p))          # (b, c, g, Q, kp)
    S = matmul(np.swapaxes(w * x_Qk, -1, -2), B)                          # (b, c, g, kp, n)

    # 3. inter-chunk: H_c = e^{Σ ℓ} [no restart in chunk c] H_{c-1} + S_c  (chunks first)
    carry = (r[:, :, -1] == r_prev)[:, :, None, None]                       # (b, c, 1, 1)
    a = np.where(carry, np.exp(np.where(carry, np.sum(ell, axis=-1), 0.0)), 0.0)   # (b, c, g, k)
    a = np.repeat(np.transpose(a, (1, 0, 2, 3)), p, axis=3)[..., None]      # (c, b, g, kp, 1)
    h0 = (np.zeros((b, g, k * p, n)) if initial_states is None
          else np.reshape(initial_states, (b, g, k * p, n)))                 # (b, g, kp, n)
    H = linear_recurrence(a, np.transpose(S, (1, 0, 2, 3, 4)), h0)          # (c, b, g, kp, n)
    H_prev = np.transpose(np.concatenate([h0[None], H[:-1]], axis=0), (1, 0, 2, 3, 4))  # (b, c, g, kp, n)

    # 4. state -> output: y_i += exp(Σ_{m<=i} ℓ_m) [r_i = r_prev] C_i H_{c-1}
    enter = (r == r_prev[:, :, None])[:, :, None, :, None]                  # (b, c, 1, Q, 1)
    into = np.transpose(np.cumsum(ell, axis=-1), (0, 1, 2, 4, 3))           # (b, c, g, Q, k)
    into = np.where(enter, np.exp(np.where(enter, into, 0.0)), 0.0)
    into = np.reshape(np.repeat(into, p, axis=4), (b, c, g, Q, k * p))     # (b, c, g, Q, kp)
    y = y + into * matmul(C, np.swapaxes(H_prev, -1, -2))                 # (b, c, g, Q, kp)

    y = np.reshape(np.transpose(np.reshape(y, (b, c, g, Q, k, p)), (0, 1, 3, 2, 4, 5)),
                   (b, c * Q, h, p))                                         # (b, cQ, h, p)
    return (y[:, :L] if pad else y), np.reshape(H[-1], (b, h, p, n))
