"""Mamba-2's SSD layer (scalar-times-identity ``A`` per head), with the semantics of mamba_ssm's
``mamba_chunk_scan_combined``.

For each batch row and head ``i`` (state ``s_t: (p, n)``, ``s_{-1}`` = ``initial_states`` or 0)::

    Δ_t   = clip(softplus(dt_t + dt_bias), *dt_limit)     (bias, softplus if dt_softplus, clamp)
    s_t   = exp(Δ_t A_i) · keep_t · s_{t-1} + Δ_t x_t B_tᵀ
    y_t   = s_t C_t + D x_t                               (D: (h,) per head or (h, p))
    out_t = y_t · silu(z_t)                               when z is given

``B_t, C_t: (n,)`` of group ``i // (h/g)``.  ``keep_t = 0`` where ``seq_idx[t] != seq_idx[t-1]``
(with ``seq_idx[-1] = 0``: ``initial_states`` is the state of sequence 0, and a first sequence
with another id starts from zero), else 1; the final state is ``s_{L-1}``.

Three evaluations agree to rounding, selected by the keyword ``method``: ``"chunked"`` (default;
:func:`ssmref.selective.chunked.ssd_chunked`, whose result does not depend on ``chunk_size``),
``"recurrence"`` (the adjoint primitive over time, states of size ``L·b·h·p·n``) and
``"parallel"`` (the associative scan, same size).

Reference: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
Structured State Space Duality" (ICML 2024); mamba_ssm's ``mamba_chunk_scan_combined``,
``ssd_minimal_discrete`` and ``_chunk_cumsum_fwd`` (the order of dt's bias, softplus, clamp).
"""

import autograd.numpy as np
import numpy as onp

from ssmref.selective import args
from ssmref.selective.chunked import ssd_chunked
from ssmref.selective.functional import diagonal_scan, silu, step_size


def restart_counter(seq_idx):
    """``r_t`` = number of ``t' <= t`` with ``seq_idx[t'] != seq_idx[t'-1]`` (``seq_idx[-1] = 0``),
    ``(b, L)`` int: two steps are in the same segment iff their counters are equal."""
    prev = onp.concatenate([onp.zeros_like(seq_idx[:, :1]), seq_idx[:, :-1]], axis=1)
    return onp.cumsum(seq_idx != prev, axis=1)


def ssd_recurrence(x, dt, A, B, C, restarts=None, initial_states=None, method="recurrence"):
    """``(y, final_state)`` of the SSD recurrence over time (unchecked, differentiable), same
    arguments and results as :func:`ssmref.selective.chunked.ssd_chunked` (no chunk size)."""
    b, L, h, p = np.shape(x)
    g = np.shape(B)[2]
    Bh, Ch = (np.repeat(np.transpose(X, (1, 0, 2, 3)), h // g, axis=2) for X in (B, C))  # (L, b, h, n)
    dt = np.transpose(dt, (1, 0, 2))                               # (L, b, h)
    decay = np.exp(dt * A)                                         # (L, b, h)
    if restarts is not None:
        keep = onp.concatenate([restarts[:, :1] == 0, restarts[:, 1:] == restarts[:, :-1]], axis=1)
        decay = decay * keep.T[:, :, None]                         # (L, b, h)
    drive = (dt[..., None] * np.transpose(x, (1, 0, 2, 3)))[..., None] * Bh[:, :, :, None, :]
    s = diagonal_scan(decay[..., None, None], drive, initial_states, method)   # (L, b, h, p, n)
    y = np.einsum("lbhpn,lbhn->blhp", s, Ch)                       # (b, L, h, p)
    return y, s[-1]


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
        seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
        *, method="chunked"):
    """Mamba-2's SSD: ``out (b, L, h, p)``, or ``(out, final_states (b, h, p, n))``.

        Δ_t = clip(softplus(dt_t + dt_bias), *dt_limit),   s_t = exp(Δ_t A) s_{t-1} + Δ_t x_t B_tᵀ,
        y_t = s_t C_t + D x_t,   out = y · silu(z).

    Shapes (mamba_ssm's ``mamba_chunk_scan_combined``), all real: ``x, z (b, L, h, p)``,
    ``dt (b, L, h)``, ``A (h,)``, ``B, C (b, L, g, n)`` with ``h % g == 0``, ``D (h,)`` or
    ``(h, p)``, ``dt_bias (h,)``, ``initial_states (b, h, p, n)``, ``seq_idx (b, L)`` int >= 0 (the
    state restarts from zero where it changes; ``initial_states`` belongs to id 0).  The clamp to
    ``dt_limit`` is always applied, so with the default ``(0, inf)`` a negative ``Δ`` becomes 0,
    as in mamba's kernels.  ``chunk_size >= 1`` (any ``L``); the result does not depend on it,
    and a chunk size above ``L`` is taken as ``L`` (memory ``O(min(chunk_size, L)²)`` per head).
    ``method``: ``"chunked"`` (default), ``"recurrence"`` or ``"parallel"`` (see module docs).
    """
    a = args.ssd_args(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx,
                      dt_softplus, dt_limit, return_final_states, method)
    x, A, B, C, D = a.x, a.A, a.B, a.C, a.D
    dt = step_size(a.dt, a.dt_bias, dt_softplus, a.dt_limit)       # (b, L, h)
    restarts = None if a.seq_idx is None else restart_counter(a.seq_idx)
    if method == "chunked":
        y, final = ssd_chunked(x, dt, A, B, C, a.chunk_size, restarts, a.initial_states)
    else:
        y, final = ssd_recurrence(x, dt, A, B, C, restarts, a.initial_states, method)
    if D is not None:
        y = y + (D[:, None] if np.ndim(D) == 1 else D) * x        # (b, L, h, p)
    if a.z is not None:
        y = y * silu(a.z)
    return (y, final) if return_final_states else y
