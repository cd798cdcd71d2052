"""The complex diagonal SSM's definition (S4D, S5), plain loops with their arithmetic passed in.

``R = rnd`` is applied to the result of every operation (``None``: the identity, exact
float64/complex128)::

    discretize  z = R(ΔΛ);  zoh:      Λ̄ = R(e^z),  b = R(R(Λ̄ − 1)/Λ)   (b = Δ where Λ = 0)
                            bilinear: q = R(1 − R(z/2)),  Λ̄ = R(R(1 + R(z/2))/q),  b = R(Δ/q)
                B̄ = R(b ⊙ B)
    scan        x_t = R(R(Λ̄ ⊙ x_{t-1}) + R(B̄ u_t)),   y_t = R(R(s Re R(C x_t)) + R(D u_t))
    kernel      K[k] = R(s Re R(Σ_n Λ̄^k_n R(C_pn B̄_nm))),   Λ̄^{k+1} = R(Λ̄^k Λ̄) from Λ̄^0 = 1
    S4D         the kernel per channel h, ``(c, H, L)``;  S5: y = R(R(y_f + y_b) + R(D u)), the
                backward recurrence on the time-reversed input with ``C_b``, no ``D``

``s = 2`` for ``output="2re"`` (:func:`ssmref.structured.diagonal.output_scale`).  With ``R`` the
identity these are the float64 definitions that every fast form (:func:`diag_scan`,
:func:`diag_parallel_scan`, :func:`diag_kernel`, :func:`diag_convolve`, :func:`s4d_kernel`,
:func:`bidirectional`) is tested against, values and gradients (``autograd``); the cross-check kit
runs them with ``R`` rounding to a dtype as its naive baseline
(:mod:`ssmref.crosscheck.families.structured_naive`).  The discretization is the direct formula
(``(Λ̄ − 1)/Λ``, which loses digits as ``ΔΛ → 0``) and the kernel takes the running powers of
``Λ̄``: the naive forms, where the fast forms compute ``Λ̄``, ``b`` and ``Λ̄^k`` from ``(Λ, Δ)``
(:mod:`ssmref.structured.accurate`).  Unchecked: inputs must already be valid; ``Λ = 0`` has no
gradient here (the branch not taken divides by zero).

Shapes: ``Λ (n,)``, ``B (n, m)``, ``C (p, n)`` complex; ``D (p, m)`` real; ``Δ`` scalar or
``(n,)``; ``u (..., T, m)`` real; ``h0 (..., n)`` complex.  References: Gu et al. (S4D, 2022);
Smith et al. (S5, 2023).
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.structured.diagonal import output_scale


def _exact(v):
    return v


def discrete_factors(Lam, dt, method, rnd=None):
    """``(Λ̄, b)`` per state (``B̄ = b ⊙ B``) by the direct formulas above; ``Δ`` scalar or ``(n,)``."""
    R = _exact if rnd is None else rnd
    dt = dt * onp.ones(np.shape(Lam), dtype=onp.asarray(getval(dt)).dtype)   # a step per state
    z = R(dt * Lam)
    if method == "zoh":
        lam_bar = R(np.exp(z))
        return lam_bar, R(np.where(Lam == 0, dt, R(R(lam_bar - 1) / Lam)))
    q = R(1 - R(z / 2))
    return R(R(1 + R(z / 2)) / q), R(dt / q)


def discretize(Lam, B, dt, method, rnd=None):
    """``(Λ̄ (n,), B̄ (n, m))`` by the direct formulas above."""
    R = _exact if rnd is None else rnd
    lam_bar, b = discrete_factors(Lam, dt, method, rnd)
    return lam_bar, R(b[:, None] * B)


def states(lam_bar, Bbar, u, h0, rnd=None):
    """``X (..., T, n)``: ``x_t = R(R(Λ̄ ⊙ x_{t-1}) + R(B̄ u_t))`` one step at a time, from
    ``x_{-1} = h0``."""
    R = _exact if rnd is None else rnd
    Bu = R(u @ Bbar.T)                                        # (..., T, n)
    x, xs = h0, []
    for t in range(np.shape(u)[-2]):
        x = R(R(lam_bar * x) + Bu[..., t, :])
        xs.append(x)
    return np.stack(xs, axis=-2)


def readout(X, C, s, rnd=None):
    """``R(s Re R(C x_t))`` for every state in ``X (..., T, n)``: ``(..., T, p)``."""
    R = _exact if rnd is None else rnd
    return R(s * np.real(R(X @ C.T)))


def _zero_state(u, Lam):
    return np.zeros(np.shape(u)[:-2] + (np.shape(Lam)[0],), dtype=Lam.dtype)


def scan_loop(Lam, B, C, D, dt, u, h0=None, *, method, output, rnd=None):
    """``(y (..., T, p), x_last (..., n))`` of the recurrence, one step at a time (``h0`` ``None``:
    zeros); the definition of :func:`ssmref.structured.diag_scan`."""
    R = _exact if rnd is None else rnd
    lam_bar, Bbar = discretize(Lam, B, dt, method, rnd)
    X = states(lam_bar, Bbar, u, _zero_state(u, lam_bar) if h0 is None else h0, rnd)
    y = R(readout(X, C, output_scale(output), rnd) + R(u @ D.T))
    return y, X[..., -1, :]


def powers(lam_bar, L, rnd=None):
    """``(Λ̄^0, ..., Λ̄^{L-1})`` as ``(L, ...)`` by running products ``Λ̄^{k+1} = R(Λ̄^k Λ̄)``."""
    R = _exact if rnd is None else rnd
    W, Ws = np.ones_like(lam_bar), []
    for _ in range(L):
        Ws.append(W)
        W = R(W * lam_bar)
    return np.stack(Ws)


def kernel_loop(Lam, B, C, dt, L, *, method, output, rnd=None):
    """``K (L, p, m)``, ``K[k] = s Re(C diag(Λ̄^k) B̄)`` with the running powers of ``Λ̄``; the
    definition of :func:`ssmref.structured.diag_kernel`."""
    R = _exact if rnd is None else rnd
    lam_bar, Bbar = discretize(Lam, B, dt, method, rnd)
    W = powers(lam_bar, L, rnd)                               # (L, n)
    CB = R(C[:, :, None] * Bbar[None])                        # (p, n, m)
    return R(output_scale(output) * np.real(R(np.einsum("ln,pnm->lpm", W, CB))))


def s4d_kernel_loop(Lam, B, C, dt, L, *, method, output, rnd=None):
    """S4D's kernel ``(c, H, L)``: channel ``h`` is the system ``(Λ_h, B_h, C_{:,h})`` with step
    ``Δ_h``; ``Λ, B, Δ: (H, N)``, ``C: (c, H, N)``.  The definition of
    :func:`ssmref.structured.s4d_kernel`."""
    R = _exact if rnd is None else rnd
    H, N = np.shape(Lam)
    lam_bar, Bbar = discretize(np.reshape(Lam, (-1,)), np.reshape(B, (-1, 1)), np.reshape(dt, (-1,)),
                               method, rnd)
    W = powers(np.reshape(lam_bar, (H, N)), L, rnd)          # (L, H, N)
    CB = R(C * np.reshape(Bbar, (H, N))[None])               # (c, H, N)
    return R(output_scale(output) * np.real(R(np.einsum("chi,lhi->chl", CB, W))))


def bidirectional_loop(Lam, B, C, Cb, D, dt, u, *, method, output, rnd=None):
    """S5's layer ``y (..., T, p)``: the forward recurrence read by ``C``, the backward one (on the
    time-reversed input, from zero, read by ``C_b``), ``D u`` once.  The definition of
    :func:`ssmref.structured.bidirectional` with a shared ``Λ, B, Δ``."""
    R = _exact if rnd is None else rnd
    s = output_scale(output)
    lam_bar, Bbar = discretize(Lam, B, dt, method, rnd)
    h0 = _zero_state(u, Lam)
    y_f = readout(states(lam_bar, Bbar, u, h0, rnd), C, s, rnd)
    y_b = readout(states(lam_bar, Bbar, u[..., ::-1, :], h0, rnd), Cb, s, rnd)[..., ::-1, :]
    return R(R(y_f + y_b) + R(u @ D.T))
