"""High-precision recomputation: the tools that certify a float64 result by its measured error.

A reference must be at least as accurate as what it judges, so its own error is measured: each
kind of ssmref output is recomputed from the SAME float64 inputs (converted exactly: every binary64
number is a rational) in 40-digit arithmetic by an independent algorithm, and the float64 result
is scored by its normwise relative error

    ref_error(x̂, x) = ||x̂ − x||_F / ||x||_F          (computed in high precision)

where ``x`` is the 40-digit result (its own error, ~1e-38, is far below float64's 1.1e-16).

``mpmath`` is an optional test dependency (the ``test`` extra): it is imported inside the functions,
never when ``ssmref`` is imported.  Arrays of mpmath numbers are NumPy object arrays, so ``+``,
``*``, ``onp.dot`` and ``onp.einsum``-free loops work on them elementwise; every function that
computes in high precision runs under ``mpmath.workdps(DPS)``.

The kit's certification is built on these helpers: every family's 40-digit references
(:mod:`ssmref.crosscheck.families`, the ``*_ref`` modules and :mod:`.structured_certify`) and the
``ref_error`` of ``python -m ssmref vectors --certify``.
"""

import functools

import numpy as onp

DPS = 40


def mpmath():
    """The ``mpmath`` module (``ImportError`` naming the optional dependency if it is missing)."""
    try:
        import mpmath as mp
    except ImportError as e:                                    # pragma: no cover - env dependent
        raise ImportError("ssmref's high-precision references need mpmath (pip install mpmath, "
                          "or the package's test extra)") from e
    return mp


def high_precision(fn):
    """Decorator: run ``fn`` under ``mpmath.workdps(DPS)``."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with mpmath().workdps(DPS):
            return fn(*args, **kwargs)
    return wrapped


def to_mp(x):
    """An exact object-array copy of a float or complex array (or scalar) as mpf / mpc."""
    mp = mpmath()
    a = onp.asarray(x)
    if a.dtype.kind == "c":
        conv = onp.frompyfunc(lambda z: mp.mpc(z.real, z.imag), 1, 1)
    elif a.dtype.kind in "iuf":
        conv = onp.frompyfunc(lambda v: mp.mpf(float(v)), 1, 1)
    else:
        raise ValueError(f"to_mp needs a real or complex array, got dtype {a.dtype}")
    out = conv(a)
    return onp.asarray(out, dtype=object) if a.ndim else out


def to_float(X, *, complex_=None):
    """Round an object array of mpmath numbers to float64 (or complex128 if any entry is complex
    or ``complex_=True``), correctly rounded per component."""
    X = onp.asarray(X, dtype=object)
    is_c = any(isinstance(v, mpmath().mpc) for v in X.flat) if complex_ is None else complex_
    if is_c:
        return onp.vectorize(lambda v: complex(v), otypes=[complex])(X) if X.size else onp.zeros(X.shape, complex)
    return onp.vectorize(lambda v: float(v), otypes=[float])(X) if X.size else onp.zeros(X.shape)


def elementwise(name):
    """The mpmath function ``name`` (e.g. ``"exp"``, ``"expm1"``) lifted to object arrays."""
    f = getattr(mpmath(), name)
    return lambda X: onp.asarray(onp.frompyfunc(f, 1, 1)(X), dtype=object)


def re(X):
    """Real parts of an object array (mpc -> mpf, mpf unchanged)."""
    mp = mpmath()
    return onp.asarray(onp.frompyfunc(lambda v: mp.re(v), 1, 1)(X), dtype=object)


def conj(X):
    """Complex conjugates of an object array."""
    mp = mpmath()
    return onp.asarray(onp.frompyfunc(lambda v: mp.conj(v), 1, 1)(X), dtype=object)


def eye(n):
    """The ``n x n`` identity as an object array of mpf."""
    mp = mpmath()
    out = onp.empty((n, n), dtype=object)
    for i in range(n):
        for j in range(n):
            out[i, j] = mp.mpf(1 if i == j else 0)
    return out


def solve(A, B):
    """``A^{-1} B`` for object arrays ``A (n, n)``, ``B (n, k)`` (LU with partial pivoting, mpmath)."""
    mp = mpmath()
    n, k = B.shape
    Am = mp.matrix(A.tolist())
    out = onp.empty((n, k), dtype=object)
    for j in range(k):
        x = mp.lu_solve(Am, mp.matrix(list(B[:, j])))
        for i in range(n):
            out[i, j] = x[i]
    return out


def matrix_power(A, k):
    """``A^k`` for an object array ``A (n, n)`` by repeated squaring."""
    out, base = eye(A.shape[0]), A
    while k:
        if k & 1:
            out = onp.dot(out, base)
        k >>= 1
        if k:
            base = onp.dot(base, base)
    return out


@high_precision
def ref_error(computed, reference):
    """``||computed − reference||_F / ||reference||_F``, computed in high precision, as a float.

    ``computed``: a float64/complex128 array; ``reference``: an object array of mpmath numbers (or a
    float array) of the same shape.  A zero reference gives the absolute error ``||computed||_F``.
    """
    mp = mpmath()
    c = to_mp(computed)
    r = onp.asarray(reference, dtype=object) if onp.asarray(reference).dtype == object else to_mp(reference)
    if c.shape != r.shape:
        raise ValueError(f"computed has shape {c.shape}, reference {r.shape}")
    num = mp.fsum(abs(a - b) ** 2 for a, b in zip(c.flat, r.flat))
    den = mp.fsum(abs(b) ** 2 for b in r.flat)
    return float(mp.sqrt(num / den)) if den != 0 else float(mp.sqrt(num))
