"""Continuous-time ``(A, B)`` to discrete-time ``(Ad, Bd)`` for a step ``dt``, and back.

Zero-order hold (the input is constant over each step)::

    Ad = e^{dt A},    Bd = (∫_0^dt e^{sA} ds) B   (= A^{-1} (Ad − I) B when A is invertible)

Bilinear (Tustin, the trapezoid rule; S4's convention)::

    Ad = (I − dt/2 A)^{-1} (I + dt/2 A),    Bd = (I − dt/2 A)^{-1} dt B

``C`` and ``D`` are unchanged by both.  Differentiable to any order, also w.r.t. ``dt``: the
matrix exponential is an autograd primitive whose VJP is again a matrix exponential.
"""

import autograd.numpy as np
import numpy as onp
import scipy.linalg
from autograd.extend import defvjp, primitive
from autograd.tracer import getval

from ssmref.checks import check_choice, check_real_array, check_scalar, shape_of

METHODS = ("zoh", "bilinear")


# The Fréchet derivative of expm by the block identity (Najfeld & Havel 1995; Higham 2008):
#     expm([[X, E], [0, X]]) = [[e^X, L(X, E)], [0, e^X]],    <G, L(X, E)> = <L(Xᵀ, G), E>,
# so the VJP of G is the upper-right block of expm([[Xᵀ, G], [0, Xᵀ]]), itself this primitive.
@primitive
def expm(X):
    """Matrix exponential (``scipy.linalg.expm``), differentiable to any order (see above)."""
    return scipy.linalg.expm(X)


def _expm_vjp(ans, X):
    n = np.shape(X)[0]

    def vjp(G):
        top = np.concatenate([X.T, G], axis=1)
        bottom = np.concatenate([np.zeros((n, n)), X.T], axis=1)
        return expm(np.concatenate([top, bottom], axis=0))[:n, n:]

    return vjp


defvjp(expm, _expm_vjp)


def _check_system(A, B, dt, method):
    A_shape, B_shape = shape_of(A), shape_of(B)
    if len(A_shape) != 2 or A_shape[0] != A_shape[1]:
        raise ValueError(f"A must be square (n, n), got shape {A_shape}")
    n = A_shape[0]
    if len(B_shape) != 2 or B_shape[0] != n:
        raise ValueError(f"B must have shape ({n}, m) for A of shape {A_shape}, got {B_shape}")
    check_real_array("A", A)
    check_real_array("B", B)
    check_scalar("dt", dt, low=0.0, low_open=True)
    check_choice("method", method, METHODS)
    return n, B_shape[1]


#: The largest ``dt · ‖[A B]‖₁`` zero-order hold accepts: for some ``B`` the relative error of
#: ``expm``'s scaling and squaring grows like ε · dt‖[A B]‖ (benchmarks/domain_edges.py, worst of
#: five: 3e-9 at 1e8, 2e-7 at 1e10, 0.2% at 1e14, NaN at 1e100), so beyond this the result is
#: no longer the exponential to the digits a reference owes.
MAX_ZOH_SCALE = 1e8


def _check_zoh_scale(A, B, dt):
    a, b = onp.asarray(getval(A), dtype=float), onp.asarray(getval(B), dtype=float)
    scale = float(getval(dt)) * max(onp.abs(a).sum(axis=0).max(initial=0.0),
                                    onp.abs(b).sum(axis=0).max(initial=0.0))
    if scale > MAX_ZOH_SCALE:
        raise ValueError(f"dt * ||[A B]||_1 = {scale:.3g} is more than {MAX_ZOH_SCALE:g}, where "
                         f"zero-order hold's matrix exponential loses its digits (a smaller dt, or "
                         f"method='bilinear')")


def discretize(A, B, dt, method="zoh"):
    """Continuous ``(A, B)`` -> discrete ``(Ad, Bd)`` for step ``dt`` (the module's equations).

    ``zoh`` is computed exactly, also for singular ``A``, as blocks of one exponential,
    ``expm(dt [[A, B], [0, 0]]) = [[Ad, Bd], [0, I]]``, for ``dt ‖[A B]‖₁ ≤ 1e8``
    (:data:`MAX_ZOH_SCALE`; ``ValueError`` beyond).  ``scipy.signal.cont2discrete(...,
    "bilinear")`` gives the same ``Ad, Bd`` but also transforms ``C, D``; see ``docs/ssm.md``.
    """
    n, m = _check_system(A, B, dt, method)
    if method == "zoh":
        _check_zoh_scale(A, B, dt)
        top = np.concatenate([A, B], axis=1)                         # (n, n+m)
        block = np.concatenate([top, np.zeros((m, n + m))], axis=0)   # (n+m, n+m)
        E = expm(dt * block)
        return E[:n, :n], E[:n, n:]
    I = np.eye(n)
    left = I - (dt / 2.0) * A
    return np.linalg.solve(left, I + (dt / 2.0) * A), np.linalg.solve(left, dt * B)


def undiscretize(Ad, Bd, dt, method="zoh"):
    """Inverse of :func:`discretize`, for round-trip checks (plain NumPy/SciPy, not differentiated).

    ``zoh``: ``A = logm(Ad) / dt`` (principal logarithm; valid when ``dt * eig(A)`` has imaginary
    parts in ``(-pi, pi)``), ``B = (∫_0^dt e^{sA} ds)^{-1} Bd``.
    ``bilinear``: ``A = (2/dt) (Ad + I)^{-1} (Ad - I)``, ``B = (I - dt/2 A) Bd / dt``.
    """
    n, _ = _check_system(Ad, Bd, dt, method)
    Ad, Bd, dt = onp.asarray(Ad, dtype=float), onp.asarray(Bd, dtype=float), float(dt)
    I = onp.eye(n)
    if method == "zoh":
        A = onp.real(scipy.linalg.logm(Ad)) / dt
        E = scipy.linalg.expm(dt * onp.block([[A, I], [onp.zeros((n, 2 * n))]]))
        return A, onp.linalg.solve(E[:n, n:], Bd)
    A = (2.0 / dt) * onp.linalg.solve(Ad + I, Ad - I)
    return A, (I - (dt / 2.0) * A) @ Bd / dt
