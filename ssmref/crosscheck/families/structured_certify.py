"""40-digit recomputations of the structured model functions, and the measured error of their
float64 results.

Each ``mp_*`` function recomputes one function's output from the same float64 arguments in 40-digit
arithmetic (:mod:`ssmref.crosscheck.highprec`), by an algorithm independent of the float64 one
(:mod:`.structured_ref` builds the structured cases' references on them):

==================  ===========================================  =======================================
kind                float64 (ssmref.structured)                  40-digit reference (here)
==================  ===========================================  =======================================
diag_discretize     compensated ``expm1``/``exp``, ``atanh``     ``exp``, ``expm1``, division
diag_kernel         ``exp(kΔΛ)`` compensated / ``exp(k w)``      running products ``Λ̄^k = Λ̄ Λ̄^{k-1}``
diag_scan           ``linear_recurrence``                        the recurrence
dplr_discretize     Woodbury ``A_1 A_0``                         dense LU solve ``(I − Δ/2 A)^{-1}(I + Δ/2 A)``
dplr_kernel         Cauchy/Woodbury at roots of unity, ``ifft``  ``C = C̃ (I − Ā^L)^{-1}``, ``Re(C Ā^k B̄)``
dplr_scan           O(N r) Woodbury steps                        dense ``Ā``, ``B̄`` recurrence
==================  ===========================================  =======================================

:func:`certify` returns ``{output name: normwise relative error}`` of the float64 function against
its reference; :func:`reference` returns the reference rounded to float64 (golden values).

A-priori bounds where 1e-14 is not reachable are in :mod:`.structured_bounds`:
``diag_scan_error_bound`` (running error analysis of the recurrence; it grows like
``ε/(1 − |Λ̄|)`` for slowly decaying modes, which no float64 recurrence avoids because ``Λ̄``
itself is rounded), ``diag_kernel_error_bound`` (``ε (c + n)`` per unit of ``Σ_n |C B̄ Λ̄^k|`` for
ZOH; plus ``k|w|ε`` for bilinear).
"""

import numpy as onp

from ssmref.crosscheck import highprec
from ssmref.checks import check_choice
from ssmref.structured import diagonal
from ssmref.structured import dplr
from ssmref.structured import validate
from ssmref.structured.diagonal import output_scale

EPS = onp.finfo(float).eps / 2          # unit roundoff 2^-53


def _diag_inputs(params):
    (Lam, B, C, D, dt), dims = validate.diag_params(params)
    n = dims[1]
    dt = onp.broadcast_to(onp.asarray(dt, dtype=float), (n,))
    return tuple(highprec.to_mp(x) for x in (Lam, B, C, D, dt)), dims


def _mp_discretize(Lam, B, dt, method):
    mp = highprec.mpmath()
    z = Lam * dt
    if method == "zoh":
        lam_bar = highprec.elementwise("exp")(z)
        b = onp.array([mp.expm1(zi) / li if li != 0 else di for zi, li, di in zip(z, Lam, dt)], dtype=object)
    else:
        lam_bar = (1 + z / 2) / (1 - z / 2)
        b = dt / (1 - z / 2)
    return lam_bar, b[:, None] * B


@highprec.high_precision
def mp_diag_discretize(params, method):
    """``(Λ̄, B̄)`` in 40 digits: ``exp(ΔΛ)``, ``expm1(ΔΛ)/Λ B`` (ZOH) or the bilinear quotients."""
    check_choice("method", method, validate.METHODS)
    (Lam, B, C, D, dt), _ = _diag_inputs(params)
    return _mp_discretize(Lam, B, dt, method)


@highprec.high_precision
def mp_diag_kernel(params, length, *, method, output):
    """``K[k] = s Re(C diag(Λ̄^k) B̄)`` (length, p, m) in 40 digits, ``Λ̄^k`` by running products."""
    validate.options(method, output)
    (Lam, B, C, D, dt), (m, n, p) = _diag_inputs(params)
    lam_bar, Bbar = _mp_discretize(Lam, B, dt, method)
    W = Bbar.copy()                                          # Λ̄^k B̄, (n, m)
    K = onp.empty((length, p, m), dtype=object)
    for k in range(length):
        K[k] = output_scale(output) * highprec.re(onp.dot(C, W))
        W = lam_bar[:, None] * W
    return K


def _as_batch(u, h0, n):
    # (batch, T, m) and (batch, n) views (batch = 1 for unbatched input)
    u = onp.asarray(u, dtype=float)
    ub = u.reshape((-1,) + u.shape[-2:])
    h = onp.zeros((ub.shape[0], n), complex) if h0 is None else onp.broadcast_to(h0, (ub.shape[0], n))
    return ub, h


@highprec.high_precision
def mp_diag_scan(params, u, h0=None, *, method, output):
    """``(y, x_last)`` of the diagonal recurrence in 40 digits (same shapes as :func:`diag_scan`)."""
    validate.options(method, output)
    (Lam, B, C, D, dt), (m, n, p) = _diag_inputs(params)
    u, h0, batch = validate.sequence(u, h0, m, n)
    lam_bar, Bbar = _mp_discretize(Lam, B, dt, method)
    ub, hb = _as_batch(u, h0, n)
    Y = onp.empty(ub.shape[:2] + (p,), dtype=object)
    X = onp.empty((ub.shape[0], n), dtype=object)
    for i in range(ub.shape[0]):
        x, ui = highprec.to_mp(hb[i]), highprec.to_mp(ub[i])
        for t in range(ub.shape[1]):
            x = lam_bar * x + onp.dot(Bbar, ui[t])
            Y[i, t] = output_scale(output) * highprec.re(onp.dot(C, x)) + onp.dot(D, ui[t])
        X[i] = x
    return Y.reshape(batch + Y.shape[1:]), X.reshape(batch + (n,))


def _dplr_inputs(params):
    Lam, P, Q, B, dt = validate.dplr_args(params)
    return tuple(highprec.to_mp(x) for x in (Lam, P, Q, B, dt))


def _mp_dplr_dense(Lam, P, Q, B, dt):
    N = Lam.shape[0]
    A = highprec.eye(N) * 0
    for i in range(N):
        A[i, i] = Lam[i]
    A = A - onp.dot(P, highprec.conj(Q).T)
    left = highprec.eye(N) - (dt / 2) * A
    return highprec.solve(left, highprec.eye(N) + (dt / 2) * A), highprec.solve(left, dt * B)


@highprec.high_precision
def mp_dplr_discretize(params):
    """Dense ``(Ā, B̄)`` of the DPLR system in 40 digits by LU solves with ``I − Δ/2 A``."""
    return _mp_dplr_dense(*_dplr_inputs(params))


@highprec.high_precision
def mp_dplr_kernel(params, length):
    """``K[k] = Re(C Ā^k B̄)`` with ``C = C̃ (I − Ā^L)^{-1}``, in 40 digits (dense, no generating function)."""
    Lam, P, Q, B, dt = _dplr_inputs(params)
    Ct = highprec.to_mp(validate.output_matrix(params, "Ct", Lam.shape[0]))
    Abar, Bbar = _mp_dplr_dense(Lam, P, Q, B, dt)
    M = highprec.eye(Lam.shape[0]) - highprec.matrix_power(Abar, length)
    C = highprec.solve(M.T, Ct.T).T                                  # C M = C̃
    K = onp.empty((length,) + (C.shape[0], B.shape[1]), dtype=object)
    W = Bbar
    for k in range(length):
        K[k] = highprec.re(onp.dot(C, W))
        W = onp.dot(Abar, W)
    return K


@highprec.high_precision
def mp_dplr_scan(params, u, h0=None):
    """``(y, x_last)`` of the DPLR recurrence in 40 digits with the dense ``Ā``, ``B̄``."""
    Lam, P, Q, B, dt = _dplr_inputs(params)
    N, m = B.shape
    C = highprec.to_mp(validate.output_matrix(params, "C", N))
    D = highprec.to_mp(validate.feedthrough(params, C.shape[0], m))
    u, h0, batch = validate.sequence(u, h0, m, N)
    Abar, Bbar = _mp_dplr_dense(Lam, P, Q, B, dt)
    ub, hb = _as_batch(u, h0, N)
    Y = onp.empty(ub.shape[:2] + (C.shape[0],), dtype=object)
    X = onp.empty((ub.shape[0], N), dtype=object)
    for i in range(ub.shape[0]):
        x, ui = highprec.to_mp(hb[i]), highprec.to_mp(ub[i])
        for t in range(ub.shape[1]):
            x = onp.dot(Abar, x) + onp.dot(Bbar, ui[t])
            Y[i, t] = highprec.re(onp.dot(C, x)) + onp.dot(D, ui[t])
        X[i] = x
    return Y.reshape(batch + Y.shape[1:]), X.reshape(batch + (N,))


KINDS = {
    "diag_discretize": (lambda prm, method: diagonal.diag_discretize(prm["Lambda"], prm["B"], prm["dt"], method),
                        mp_diag_discretize, ("Lambda_bar", "B_bar")),
    "diag_kernel": (diagonal.diag_kernel, mp_diag_kernel, ("K",)),
    "diag_scan": (diagonal.diag_scan, mp_diag_scan, ("y", "x_last")),
    "dplr_discretize": (dplr.dplr_discretize, mp_dplr_discretize, ("A_bar", "B_bar")),
    "dplr_kernel": (dplr.dplr_kernel, mp_dplr_kernel, ("K",)),
    "dplr_scan": (dplr.dplr_scan, mp_dplr_scan, ("y", "x_last")),
}


def _outputs(value, names):
    return dict(zip(names, value if isinstance(value, tuple) else (value,)))


def certify(kind, *args, **kwargs):
    """``{output: ref_error}``: the float64 ssmref function of ``kind`` scored against its 40-digit
    reference on the same arguments, e.g. ``certify("diag_kernel", params, 1000, method="zoh",
    output="2re") -> {"K": 2.1e-16}``.  ``kind`` is one of :data:`KINDS`."""
    check_choice("kind", kind, tuple(KINDS))
    fn, mp_fn, names = KINDS[kind]
    got = _outputs(fn(*args, **kwargs), names)
    want = _outputs(mp_fn(*args, **{k: v for k, v in kwargs.items() if k != "allow_unstable"}), names)
    return {k: highprec.ref_error(got[k], want[k]) for k in names}


def reference(kind, *args, **kwargs):
    """The 40-digit reference of ``kind`` rounded to float64 / complex128: ``{output: array}``."""
    check_choice("kind", kind, tuple(KINDS))
    _, mp_fn, names = KINDS[kind]
    return {k: highprec.to_float(v) for k, v in _outputs(mp_fn(*args, **kwargs), names).items()}
