"""Real dense systems equivalent to the complex structured ones (2x2 blocks).

A complex number ``a + ib`` acting by multiplication on ``(r, s) = (Re x, Im x)`` is the real
2x2 block ``[[a, -b], [b, a]]``.  The map ``M -> M_R`` (each entry replaced by its block, states
interleaved as ``(Re x_0, Im x_0, Re x_1, Im x_1, ...)``) respects sums, products, inverses and
the exponential, so a complex system

    x_t = A x_{t-1} + B u_t,     y_t = s · Re(C x_t) + D u_t         (u, y real)

is the real dense system with ``2n`` states

    A_R (2n, 2n),   B_R = rows (Re B_i, Im B_i) (2n, m),   C_R = s · columns (Re C_i, -Im C_i) (p, 2n),   D

(since ``Re(c x) = Re c · Re x − Im c · Im x``), which ``ssmref.ssm`` runs: ``ssm_scan``,
``ssm_kernel`` and ``discretize`` of the embedding equal the structured results.  The embedding of
a continuous-time system discretized by ``ssmref.ssm.discretize`` equals the embedding of the
complex discretization, because ``expm`` and the bilinear inverse commute with the embedding.
"""

import autograd.numpy as np

from ssmref.checks import check_choice, check_flag, check_shape, shape_of
from ssmref.structured import validate
from ssmref.structured.diagonal import discrete_system, output_scale
from ssmref.structured.dplr import dplr_discrete_system


def real_matrix(M):
    """``M_R (2r, 2c)``: each complex entry ``a + ib`` of ``M (r, c)`` as ``[[a, -b], [b, a]]``."""
    a, b = np.real(M), np.imag(M)
    top = np.stack([a, -b], axis=-1)                 # (r, c, 2): row Re of each block
    bottom = np.stack([b, a], axis=-1)               # (r, c, 2): row Im of each block
    blocks = np.stack([top, bottom], axis=1)         # (r, 2, c, 2)
    r, c = shape_of(M)
    return np.reshape(blocks, (2 * r, 2 * c))


def real_columns(B):
    """``B_R (2n, m)``: rows ``Re B_i, Im B_i`` interleaved (a complex column acting on real ``u``)."""
    n, m = shape_of(B)
    return np.reshape(np.stack([np.real(B), np.imag(B)], axis=1), (2 * n, m))   # (n, 2, m) -> (2n, m)


def real_rows(C, scale=1.0):
    """``C_R (p, 2n)``: columns ``s Re C_i, -s Im C_i`` interleaved, so ``C_R x_R = s Re(C x)``."""
    p, n = shape_of(C)
    return scale * np.reshape(np.stack([np.real(C), -np.imag(C)], axis=-1), (p, 2 * n))  # (p, n, 2)


def real_state(x):
    """Complex states ``(..., n)`` -> real ``(..., 2n)`` interleaved ``(Re x_0, Im x_0, ...)``."""
    return np.reshape(np.stack([np.real(x), np.imag(x)], axis=-1), shape_of(x)[:-1] + (-1,))


def complex_state(x):
    """Inverse of :func:`real_state`: ``(..., 2n)`` real -> ``(..., n)`` complex."""
    pairs = np.reshape(x, shape_of(x)[:-1] + (-1, 2))        # (..., n, 2)
    return pairs[..., 0] + 1j * pairs[..., 1]


def complex_to_real_system(A, B, C, D, *, scale=1.0):
    """The real dense dict ``{"A", "B", "C", "D"}`` (2n states) of a complex system.

    ``A``: ``(n,)`` (diagonal) or ``(n, n)`` complex, ``B (n, m)``, ``C (p, n)`` complex, ``D (p, m)``
    real; the output is ``scale · Re(C x) + D u``.  Works for continuous or discrete matrices.
    """
    if len(shape_of(A)) not in (1, 2) or len(shape_of(B)) != 2 or len(shape_of(C)) != 2:
        raise ValueError(f"A must have shape (n,) or (n, n), B (n, m) and C (p, n), got "
                         f"{shape_of(A)}, {shape_of(B)} and {shape_of(C)}")
    n, m, p = shape_of(A)[0], shape_of(B)[1], shape_of(C)[0]
    for name, x, shape in (("A", A, (n,) * len(shape_of(A))), ("B", B, (n, m)), ("C", C, (p, n)),
                           ("D", D, (p, m))):
        check_shape(name, x, shape)
    A = np.diag(A) if len(shape_of(A)) == 1 else A
    return {"A": real_matrix(A), "B": real_columns(B), "C": real_rows(C, scale), "D": D}


def diag_to_dense(params, *, method, output):
    """The real dense system (``ssmref.ssm`` params, 2n states) equivalent to a diagonal one.

    ``method="zoh"`` or ``"bilinear"``: the DISCRETE system, from :func:`diag_discretize`'s
    ``(Λ̄, B̄)``: ``A = blocks of Λ̄``, ``B = (Re B̄_i, Im B̄_i)`` rows, ``C = s (Re C_i, −Im C_i)``
    columns; ``ssm_scan``/``ssm_kernel`` on it equal :func:`diag_scan`/:func:`diag_kernel`.

    ``method=None``: the CONTINUOUS system in units of steps (``τ = t/Δ``), ``A = blocks of ΔΛ``,
    ``B = rows of diag(Δ) B``, so that ``ssmref.ssm.discretize(A, B, 1.0, method)`` is the discrete
    one above: this is how a per-state step acts (state ``i`` on its own clock); for a scalar ``Δ``
    it is ``discretize(blocks of Λ, rows of B, Δ)`` with ``A`` and ``B`` scaled by ``Δ``.
    """
    if method is not None:
        check_choice("method", method, validate.METHODS)
    check_choice("output", output, validate.OUTPUTS)
    (Lam, B, C, D, dt), _ = validate.diag_params(params)
    if method is None:
        return complex_to_real_system(dt * Lam, (dt * np.ones(shape_of(Lam)))[:, None] * B, C, D,
                                      scale=output_scale(output))
    validate.stability(Lam, dt, method, allow_unstable=True)
    lam_bar, Bbar = discrete_system(Lam, B, dt, method)
    return complex_to_real_system(lam_bar, Bbar, C, D, scale=output_scale(output))


def dplr_to_dense(params, *, discrete=True):
    """The real dense system (2N states) equivalent to a DPLR one (output ``Re(C x) + D u``).

    ``discrete=True``: from :func:`ssmref.structured.dplr.dplr_discretize`'s ``(Ā, B̄)``, so that
    ``ssm_scan`` / ``ssm_kernel`` on it equal ``dplr_scan`` / ``dplr_kernel``.  ``discrete=False``:
    the continuous ``A = diag(Λ) − P Q^*``, ``B``, to be discretized by
    ``ssmref.ssm.discretize(A, B, dt, "bilinear")`` (equal to the discrete one).
    """
    check_flag("discrete", discrete)
    Lam, P, Q, B, dt = validate.dplr_args(params)
    N = shape_of(Lam)[0]
    C = validate.output_matrix(params, "C", N)
    D = validate.feedthrough(params, shape_of(C)[0], shape_of(B)[1])
    if discrete:
        A, B = dplr_discrete_system(Lam, P, Q, B, dt)
    else:
        A = np.diag(Lam) - np.dot(P, np.conj(Q).T)
    return complex_to_real_system(A, B, C, D)
