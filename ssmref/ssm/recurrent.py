"""The recurrent mode: the definition, one step at a time (output reads the NEW state)::

    h_t = A h_{t-1} + B u_t,        y_t = C h_t + D u_t,        h_{-1} = h0 (zeros by default)

Cost O(T n (n + m + p)), sequential depth T.
"""

import autograd.numpy as np

from ssmref.ssm.dims import check_sequence_inputs, check_step_inputs


def step(params, h, u):
    """One step of the recurrence, unchecked: ``(y, h')`` for ``h: (..., n)``, ``u: (..., m)``."""
    h_next = np.dot(h, params["A"].T) + np.dot(u, params["B"].T)      # (..., n)
    y = np.dot(h_next, params["C"].T) + np.dot(u, params["D"].T)       # (..., p)
    return y, h_next


def ssm_step(params, h, u):
    """One step: ``h' = A h + B u``, ``y = C h' + D u``; returns ``(y, h')``.

    Shapes: ``h: (..., n)``, ``u: (..., m)`` with broadcastable leading dims; ``y: (..., p)``.
    """
    check_step_inputs(params, h, u)
    return step(params, h, u)


def ssm_scan(params, u, h0=None):
    """The recurrence over a sequence: ``(y, h_last)``.

    ``u: (T, m)`` or ``(batch, T, m)``; ``h0: (n,)`` or ``(batch, n)``; ``y: (..., T, p)``;
    ``h_last: (..., n)`` is ``h_{T-1}``.
    """
    m, n, p, batch = check_sequence_inputs(params, u, h0)
    h = np.zeros(batch + (n,)) if h0 is None else h0                   # (..., n)
    ys = []
    for t in range(np.shape(u)[-2]):
        y, h = step(params, h, u[..., t, :])
        ys.append(y)
    return np.stack(ys, axis=-2), h
