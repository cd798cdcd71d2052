"""The definitions, written as plain loops over time: the baseline the fast forms are tested against.

    selective scan:  x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t,   y_t = Σ_n C_t x_t (+ D u_t)
    SSD:             s_t = exp(Δ_t A_h) s_{t-1} + Δ_t x_t B_tᵀ,  y_t = s_t C_t (+ D x_t)

Same arguments and results as :func:`ssmref.selective.selective_scan` and
:func:`ssmref.selective.ssd`, but no validation, no layout tricks (groups expanded per channel,
one step per Python iteration, a segment restart as a 0/1 factor on the state) and autograd taping every
step: slow (T tape nodes), meant for small tests and as the "naive" peer of golden vectors.
Inputs must already be valid (call the public functions first for that).
"""

import autograd.numpy as np

from ssmref.selective.functional import silu, softplus


def _per_channel(X, t, d, is_complex):
    """B or C at time ``t`` as ``(b, d, n)`` (or ``(d, n)`` when fixed)."""
    if np.ndim(X) == 2:
        return X
    if np.ndim(X) == 3:
        X = X[:, None]                                             # (b, 1, n, Lx)
    if is_complex and not np.iscomplexobj(X):
        Xt = X[..., 2 * t] + 1j * X[..., 2 * t + 1]                # (b, g, n) from (re, im) pairs
    else:
        Xt = X[..., t]                                             # (b, g, n)
    g = np.shape(Xt)[1]
    return np.stack([Xt[:, i // (d // g)] for i in range(d)], axis=1)    # (b, d, n)


def selective_scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):
    """:func:`ssmref.selective.selective_scan` as a loop over ``t`` (same shapes and results)."""
    b, d, L = np.shape(u)
    is_complex = np.iscomplexobj(A)
    x = np.zeros((b, d, np.shape(A)[1]), dtype=complex if is_complex else float)
    ys = []
    for t in range(L):
        dt = delta[:, :, t] if delta_bias is None else delta[:, :, t] + delta_bias
        if delta_softplus:
            dt = softplus(dt)
        Bt, Ct = _per_channel(B, t, d, is_complex), _per_channel(C, t, d, is_complex)
        x = np.exp(dt[..., None] * A) * x + (dt * u[:, :, t])[..., None] * Bt
        y = np.sum(Ct * x, axis=-1)
        y = 2.0 * np.real(y) if is_complex else y
        if D is not None:
            y = y + D * u[:, :, t]
        if z is not None:
            y = y * silu(z[:, :, t])
        ys.append(y)
    out = np.stack(ys, axis=-1)
    return (out, x) if return_last_state else out


def ssd_loop(x, dt, A, B, C, chunk_size=None, D=None, z=None, dt_bias=None, initial_states=None,
             seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
    """:func:`ssmref.selective.ssd` as a loop over ``t`` (``chunk_size`` is ignored).

    ``seq_idx``: the state restarts from zero at ``t`` when ``seq_idx[t] != seq_idx[t-1]``, with
    ``seq_idx[-1] = 0`` (``initial_states`` belongs to sequence 0)."""
    b, L, h, p = np.shape(x)
    g, n = np.shape(B)[2:]
    s = np.zeros((b, h, p, n)) if initial_states is None else initial_states
    heads = [i // (h // g) for i in range(h)]
    ys = []
    for t in range(L):
        dt_t = dt[:, t] if dt_bias is None else dt[:, t] + dt_bias          # (b, h)
        if dt_softplus:
            dt_t = softplus(dt_t)
        dt_t = np.clip(dt_t, dt_limit[0], dt_limit[1])
        if seq_idx is not None:
            prev = seq_idx[:, t - 1] if t > 0 else 0 * seq_idx[:, 0]
            keep = (seq_idx[:, t] == prev).astype(float)                    # (b,)
            s = s * keep[:, None, None, None]
        Bt = np.stack([B[:, t, k] for k in heads], axis=1)                 # (b, h, n)
        Ct = np.stack([C[:, t, k] for k in heads], axis=1)                 # (b, h, n)
        s = (np.exp(dt_t * A)[..., None, None] * s
             + (dt_t[..., None] * x[:, t])[..., None] * Bt[:, :, None, :])
        y = np.sum(s * Ct[:, :, None, :], axis=-1)                          # (b, h, p)
        if D is not None:
            y = y + (D[:, None] if np.ndim(D) == 1 else D) * x[:, t]
        if z is not None:
            y = y * silu(z[:, t])
        ys.append(y)
    out = np.stack(ys, axis=1)
    return (out, s) if return_final_states else out
