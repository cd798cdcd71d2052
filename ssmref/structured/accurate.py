"""Accurate elementwise maps from ``(Λ, Δ)`` to the discrete diagonal quantities.

For a complex eigenvalue ``λ`` and a real step ``Δ > 0`` (``z = Δλ``), the diagonal SSM needs

    ZOH:       λ̄ = exp(z),                 b(λ) = (λ̄ − 1)/λ = expm1(z)/λ,     λ̄^k = exp(k z)
    bilinear:  λ̄ = (1 + z/2)/(1 − z/2),    b(λ) = Δ/(1 − z/2),             λ̄^k = exp(k w),  w = 2 atanh(z/2)

Rounding analysis (ε = 2^-53).  The product ``z = Δλ`` rounds with relative error ε, and so does
``k·z``; the exponential of a number known to absolute error ``δ`` has relative error ``δ``.  So the
plain form ``exp(k·fl(Δλ))`` (the one S4D and annotated-s4 use) has relative error ≈ ``2ε|kz|``:
it grows with the lag ``k``.  Here the exponent ``kΔλ`` is formed as an unevaluated sum
``hi + lo`` with error-free products (Dekker's ``TwoProduct`` with Veltkamp splitting, exact in
binary64 without FMA), so ``|hi + lo − kΔλ| ≤ 2ε²|kΔλ|``, and

    exp(kΔλ) = exp(hi) · exp(lo)        (|lo| ≤ ε|hi|; exp of a tiny number is 1 + lo)

has relative error ≤ (a few) ε for every ``k`` (the libm ``exp``, ``cos``, ``sin`` reduce their
arguments exactly).  The same sum gives ``expm1(z) = expm1(hi) + exp(hi)·expm1(lo)`` (an identity).

For the bilinear map ``λ̄^k = exp(k w)``, ``w = 2 atanh(z/2)`` (NumPy's complex ``arctanh`` has
relative error ~ε; NumPy's complex ``log1p`` is NOT accurate near 0 and is avoided).  An absolute
error ``δ`` in ``w`` costs ``kδ`` in ``λ̄^k``, so :func:`bilinear_power` splits ``w``: for
``|z| ≤ 1/2`` as ``z`` (whose ``kz`` is formed error-free, as for ZOH) plus ``w − z = z³/12 + ...``
(summed as a series, so only ``ε|w − z|`` grows with ``k``); for ``|z| > 2`` through the reflection
``λ̄(z) = −λ̄(4/z)``, which replaces ``|w|`` (up to π) by ``|w(4/z)| ≈ 4/|z|``.  Between, the error
``≈ kε|w|`` is within a small factor of the conditioning ``k|z w'(z)|`` of ``λ̄^k``; forming ``λ̄``
first and then ``λ̄^k`` (by powers or ``exp(k log λ̄)``) costs ≈ ``kε`` everywhere.

Everything here is written with ``autograd.numpy`` and is differentiable to any order: the
low-order parts of the error-free products have zero derivative, so the derivative of
``hi + lo`` is the derivative of ``kΔλ`` (``d(a_hi) = da``, ``d(a_lo) = 0`` in the splitting).

Reference: T. J. Dekker, "A floating-point technique for extending the available precision",
Numer. Math. 18 (1971); Ogita, Rump, Oishi, "Accurate sum and dot product", SIAM J. Sci. Comput.
26 (2005) (``TwoProduct``).
"""

import autograd.numpy as np

_SPLITTER = 134217729.0          # 2^27 + 1: Veltkamp's constant for binary64
_SMALL_Z = 1e-5                  # below this |Δλ| the ZOH input map uses its Taylor series


def split(a):
    """``(a_hi, a_lo)`` with ``a_hi + a_lo = a`` exactly and 26-bit ``a_hi`` (Veltkamp)."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_product(a, b):
    """``(p, e)`` with ``p = fl(a b)`` and ``p + e = a b`` exactly (real arrays, |ab| < 1e300)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def scaled_exponent(k, dt, lam):
    """``(hi, lo)``, complex, with ``hi + lo = k · dt · lam`` to relative error 2ε² (``Re lo``
    clipped to ``[-1, 1]``, which changes nothing while ``|k dt lam| < 1e15``).

    ``k``: real integer-valued array (lags), ``dt``: real, ``lam``: complex; broadcast together.
    ``hi = fl(k fl(dt lam))``; ``lo`` collects both rounding errors.
    """
    parts = []
    for x in (np.real(lam), np.imag(lam)):
        p, e = two_product(dt * np.ones_like(x), x)          # dt x = p + e
        q, f = two_product(k * np.ones_like(p), p)           # k p = q + f
        parts.append((q, f + k * e))
    (qr, lr), (qi, li) = parts
    # |lo| <= 2ε|hi|, so exp(lo) is finite while |hi| < 1e18; beyond, exp(Re hi) is 0 or overflows
    # anyway, and Re lo is clipped so that exp(hi) exp(lo) is never 0 · inf (NaN)
    return qr + 1j * qi, np.clip(lr, -1.0, 1.0) + 1j * li


def zoh_power(k, dt, lam):
    """``exp(k Δ λ)``: λ̄^k for zero-order hold, relative error a few ε for every lag ``k``."""
    hi, lo = scaled_exponent(k, dt, lam)
    return np.exp(hi) * np.exp(lo)


def zoh_input_factor(dt, lam):
    """``(exp(Δλ) − 1)/λ`` (= ``Δ`` at ``λ = 0``), the per-state factor of ZOH's ``B̄ = b(λ) B``.

    ``expm1`` of the compensated ``Δλ`` divided by the exact ``λ``; for ``|Δλ| < 1e-5`` the series
    ``Δ (1 + z/2 + z²/6 + z³/24)`` (truncation < 1e-21 relative).  Both branches are finite, so
    gradients through ``np.where`` are too.
    """
    z = dt * lam
    small = np.abs(z) < _SMALL_Z
    lam_safe = np.where(small, 1.0, lam)
    hi, lo = scaled_exponent(1.0, dt, np.where(small, 0.0, lam))
    big = (np.expm1(hi) + np.exp(hi) * np.expm1(lo)) / lam_safe
    zs = np.where(small, z, 0.0)                  # the series only where it is used (no overflow)
    series = dt * (1.0 + zs / 2.0 * (1.0 + zs / 3.0 * (1.0 + zs / 4.0)))
    return np.where(small, series, big)


def _atanh_excess(x):
    # atanh(x) − x = x Σ_{j≥1} x^{2j}/(2j+1), for |x| ≤ 1/4 (14 terms: truncation < 1e-18 relative)
    x2 = x * x
    acc = 1.0 / 29.0
    for j in range(13, 0, -1):
        acc = 1.0 / (2 * j + 1) + x2 * acc
    return x * x2 * acc


def _bilinear_branches(dt, lam):
    # |z| ≤ 1/2: series; 1/2 < |z| ≤ 2: atanh; |z| > 2: reflection λ̄(z) = −λ̄(4/z)
    z = dt * lam
    small, big = np.abs(z) <= 0.5, np.abs(z) > 2.0
    mid = ~(small | big)
    s = 2.0 * _atanh_excess(np.where(small, z, 0.0) / 2.0)                   # w − z on the small branch
    w_mid = 2.0 * np.arctanh(np.where(mid, z, 0.0) / 2.0)
    w_big = 2.0 * np.arctanh(2.0 / np.where(big, z, 1e10))                   # w(4/z); 1e10: harmless filler
    return small, mid, big, s, w_mid, w_big


def bilinear_power(k, dt, lam):
    """``λ̄^k`` for the bilinear map, from ``(λ, Δ)``; with ``z = Δλ``, ``w = 2 atanh(z/2)``:

        |z| ≤ 1/2:       exp(k z) · exp(k (w − z)),  k z error-free, w − z = z³/12 + ... by its series
        1/2 < |z| ≤ 2:   exp(k w)
        |z| > 2:         (−1)^k exp(k w(4/z))        (λ̄(z) = −λ̄(4/z))

    Relative error ≲ ε (c + k e(z)) with ``e = |w − z|``, ``|w|``, ``|w(4/z)|`` on the three branches
    (:func:`bilinear_error_scale`): at most ≈ ``ε k |z w'(z)|``, the conditioning of ``λ̄^k`` in ``z``.
    """
    small, mid, big, s, w_mid, w_big = _bilinear_branches(dt, lam)
    hi, lo = scaled_exponent(k, dt, np.where(small, lam, 0.0))                # k z = hi + lo
    p_small = np.exp(hi) * np.exp(lo + k * s)
    p_mid = np.exp(k * w_mid)
    p_big = (1.0 - 2.0 * np.mod(k, 2.0)) * np.exp(k * w_big)
    return np.where(small, p_small, np.where(mid, p_mid, p_big))


def bilinear_error_scale(dt, lam):
    """``e(z)``: the part of the bilinear exponent whose rounding grows with the lag (see above)."""
    small, mid, big, s, w_mid, w_big = _bilinear_branches(dt, lam)
    return np.abs(np.where(small, s, np.where(mid, w_mid, w_big)))


def discrete_eigenvalue(dt, lam, method):
    """``λ̄``: ``exp(Δλ)`` (ZOH, compensated) or ``(1 + Δλ/2)/(1 − Δλ/2)`` (bilinear)."""
    if method == "zoh":
        return zoh_power(1.0, dt, lam)
    z = dt * lam
    return (1.0 + z / 2.0) / (1.0 - z / 2.0)


def input_factor(dt, lam, method):
    """``b(λ)`` with ``B̄ = diag(b) B``: ``(λ̄ − 1)/λ`` (ZOH) or ``Δ/(1 − Δλ/2)`` (bilinear)."""
    if method == "zoh":
        return zoh_input_factor(dt, lam)
    return dt / (1.0 - dt * lam / 2.0)


def power(k, dt, lam, method):
    """``λ̄^k`` computed directly from ``(λ, Δ)``: :func:`zoh_power` or :func:`bilinear_power`."""
    if method == "zoh":
        return zoh_power(k, dt, lam)
    return bilinear_power(k, dt, lam)
