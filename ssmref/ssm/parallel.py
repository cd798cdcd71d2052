"""The parallel mode: an associative (prefix) scan over the affine maps ``h -> A h + B u_t``.

Composing an earlier map ``(M1, v1)`` with a later one ``(M2, v2)``::

    x -> M2 (M1 x + v1) + v2 = (M2 M1) x + (M2 v1 + v2)

is associative, so all states ``h_t`` are prefixes of the composition, computed in O(log T)
vectorized rounds (:func:`ssmref.recurrence.associative_scan`).  The scan is the general one for a
time-varying ``A_t`` (as in S5 or Mamba); here ``A_t = A``.  Cost O(T n² (n + batch)) work.
"""

import autograd.numpy as np

from ssmref.recurrence import associative_scan
from ssmref.ssm.dims import PARAM_NAMES, check_sequence_inputs


def affine_combine(a, b):
    """Compose affine maps, earlier ``a = (M1, v1)`` then later ``b = (M2, v2)``:
    ``x -> M2 (M1 x + v1) + v2 = (M2 M1) x + (M2 v1 + v2)``.

    ``M: (T, n, n)``, ``v: (T, batch, n)``: both scanned along their first (time) axis.
    """
    M1, v1 = a
    M2, v2 = b
    M2_T = np.swapaxes(M2, -1, -2)
    return np.matmul(M2, M1), np.matmul(v1, M2_T) + v2       # (T, n, n), (T, batch, n)


def ssm_parallel_scan(params, u, h0=None):
    """Same values as :func:`ssm_scan`, by an associative scan over the affine maps
    ``h -> A h + B u_t`` (:func:`associative_scan` with :func:`affine_combine`).

    The state ``h0`` enters through the first element: ``v_0 = A h0 + B u_0``.
    """
    m, n, p, batch = check_sequence_inputs(params, u, h0)
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    T = np.shape(u)[-2]
    ut = np.reshape(np.moveaxis(u, -2, 0), (T, -1, m))          # (T, batch or 1, m)
    v = np.dot(ut, B.T)                                          # (T, batch or 1, n)
    if h0 is not None:
        first = v[:1] + np.reshape(np.dot(h0, A.T), (1, -1, n))
        v = np.concatenate([first, v[1:]], axis=0)
    M = np.broadcast_to(A[None], (T, n, n))                      # A_t = A for every t
    _, h = associative_scan(affine_combine, (M, v))             # (T, batch or 1, n)
    h = np.reshape(np.moveaxis(h, 0, -2), batch + (T, n))        # (..., T, n)
    y = np.dot(h, C.T) + np.dot(u, D.T)
    return y, h[..., -1, :]
