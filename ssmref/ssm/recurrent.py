"""The recurrent mode: the definition, one step at a time (output reads the NEW state)::

    h_t = A h_{t-1} + B u_t,        y_t = C h_t + D u_t,        h_{-1} = h0 (zeros by default)

Cost O(T n (n + m + p)), sequential depth T.

The state recurrence is :func:`ssmref.recurrence.dense_recurrence`, one autograd primitive whose
forward pass is a NumPy loop over time and whose VJP is the adjoint recurrence run backwards,
``λ_t = Aᵀ λ_{t+1} + Cᵀ ḡ_t`` (``ḡ = ∂L/∂y``, plus ``∂L/∂h_last`` at ``t = T-1``), computed by
the same primitive; the input and output maps ``B u_t``, ``C h_t + D u_t`` are one matrix product
each for the whole sequence.  So autograd records a handful of nodes per call, not a few per step,
and every derivative of every order is exact.
"""

import autograd.numpy as np

from ssmref.recurrence import dense_recurrence, matmul_last
from ssmref.ssm.dims import PARAM_NAMES, check_sequence_inputs, check_step_inputs


def ssm_step_core(params, h, u, rnd=None):
    """One step of the recurrence, unchecked: ``(y, h')`` for ``h: (..., n)``, ``u: (..., m)``.

    ``rnd`` is the arithmetic: applied to the result of every operation (``None``: exact, the
    float64 definition; the cross-check kit's naive baseline passes rounding to a dtype)."""
    R = (lambda v: v) if rnd is None else rnd
    h_next = R(R(np.dot(h, params["A"].T)) + R(np.dot(u, params["B"].T)))    # (..., n)
    y = R(R(np.dot(h_next, params["C"].T)) + R(np.dot(u, params["D"].T)))    # (..., p)
    return y, h_next


def ssm_loop(params, u, h0=None, rnd=None):
    """The recurrence over a sequence, unchecked and one step at a time: ``(y (..., T, p),
    H (..., T, n))`` for ``u: (..., T, m)``, ``h0: (..., n)`` (``None``: zeros)::

        b_t = R(B u_t) for all t,   h_t = R(R(A h_{t-1}) + b_t),   y_t = R(R(C h_t) + R(D u_t))

    ``rnd`` as in :func:`ssm_step_core`: exact (``None``) it is the definition that
    :func:`ssm_scan`, ``ssm_parallel_scan`` and ``ssm_convolve`` are tested against; rounding to
    a dtype it is the cross-check kit's naive baseline for sequences (the input and output maps
    are one product each for the whole sequence, as a port computes them)."""
    R = (lambda v: v) if rnd is None else rnd
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    Bu = R(u @ B.T)                                                   # (..., T, n)
    h = np.zeros(np.shape(u)[:-2] + np.shape(A)[:1]) if h0 is None else h0
    hs = []
    for t in range(np.shape(u)[-2]):
        h = R(R(h @ A.T) + Bu[..., t, :])                            # h_t = A h_{t-1} + B u_t
        hs.append(h)
    H = np.stack(hs, axis=-2)                                         # (..., T, n)
    return R(R(H @ C.T) + R(u @ D.T)), H                             # y_t = C h_t + D u_t


def ssm_step(params, h, u):
    """One step: ``h' = A h + B u``, ``y = C h' + D u``; returns ``(y, h')``.

    Shapes: ``h: (..., n)``, ``u: (..., m)`` with broadcastable leading dims; ``y: (..., p)``.
    """
    check_step_inputs(params, h, u)
    return ssm_step_core(params, h, u)


def states_and_outputs(params, u, h0, parallel):
    """Unchecked: ``(y, h_last)`` with the states by :func:`dense_recurrence` (``parallel`` picks
    the loop or the log-depth scan).  ``u: (..., T, m)``; ``h0: None | (n,) | (..., n)``."""
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    # rows, time first:  H_t = H_{t-1} Aᵀ + u_t Bᵀ,   y_t = H_t Cᵀ + u_t Dᵀ
    u_tf = np.moveaxis(u, -2, 0)                                      # (T, ..., m)
    H = dense_recurrence(A, matmul_last(u_tf, B.T), h0, parallel=parallel)   # (T, ..., n)
    y_tf = matmul_last(H, C.T) + matmul_last(u_tf, D.T)               # (T, ..., p)
    return np.moveaxis(y_tf, 0, -2), H[-1]                           # (..., T, p), (..., n)


def ssm_scan(params, u, h0=None):
    """The recurrence over a sequence: ``(y, h_last)``.

    ``u: (T, m)`` or ``(batch, T, m)``; ``h0: (n,)`` or ``(batch, n)``; ``y: (..., T, p)``;
    ``h_last: (..., n)`` is ``h_{T-1}``.
    """
    check_sequence_inputs(params, u, h0)
    return states_and_outputs(params, u, h0, parallel=False)
