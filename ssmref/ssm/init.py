"""Initial parameters of the linear SSM: random with a given spectral radius, or HiPPO-LegS.

HiPPO-LegS (Gu et al. 2020; the S4 initialisation)::

    A_ij = −sqrt(2i+1) sqrt(2j+1)  (i > j),    −(i + 1)  (i = j),    0  (i < j);      b_i = sqrt(2i+1)

``A`` is lower triangular with eigenvalues ``−1, ..., −n``, so ``e^{dt A}`` is stable.
"""

import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_choice, check_int, check_scalar
from ssmref.rng import as_rng
from ssmref.ssm.discretization import discretize


def hippo_legs(n):
    """The continuous-time HiPPO-LegS pair ``(A: (n, n), b: (n,))`` of the module docstring."""
    n = check_int("n", n, minimum=1)
    q = onp.sqrt(2.0 * onp.arange(n) + 1.0)
    A = -onp.tril(onp.outer(q, q), -1) - onp.diag(onp.arange(1.0, n + 1.0))
    return A, q.copy()


def init_ssm(input_dim, state_dim, output_dim, *, rng=None, scale=0.1, method="random", dt=0.1):
    """Parameters ``{"A": (n,n), "B": (n,m), "C": (p,n), "D": (p,m)}``.

    ``method="random"`` (default): ``A = scale * G / rho(G)`` with ``G`` standard normal, so the
    spectral radius of ``A`` is exactly ``scale`` (stable for ``scale < 1``); ``B, C, D`` have entries
    ``N(0, 1/fan_in)`` (``fan_in`` = m for B and D, n for C).

    ``method="hippo"``: HiPPO-LegS (:func:`hippo_legs`) discretized with zero-order hold at step
    ``dt``: ``(A, B) = discretize(A_c, B_c, dt)``, where ``B_c = b w^T`` mixes the ``m`` inputs with
    ``w ~ N(0, 1/m)``; the eigenvalues of ``A`` are ``exp(-k dt)``, ``k = 1..n``.  ``C`` and ``D`` as
    above; ``scale`` is unused.
    """
    m = check_int("input_dim", input_dim, minimum=1)
    n = check_int("state_dim", state_dim, minimum=1)
    p = check_int("output_dim", output_dim, minimum=1)
    check_choice("method", method, ("random", "hippo"))
    rng = as_rng(rng)
    if method == "random":
        scale = float(check_scalar("scale", scale, low=0.0))
        G = rng.standard_normal((n, n))
        A = G * (scale / onp.max(onp.abs(onp.linalg.eigvals(G))))
        B = rng.standard_normal((n, m)) / onp.sqrt(m)
    else:
        dt = float(check_scalar("dt", dt, low=0.0, low_open=True))
        Ac, b = hippo_legs(n)
        w = rng.standard_normal(m) / onp.sqrt(m)
        A, B = discretize(Ac, onp.outer(b, w), dt, method="zoh")
    C = rng.standard_normal((p, n)) / onp.sqrt(n)
    D = rng.standard_normal((p, m)) / onp.sqrt(m)
    return {"A": onp.asarray(A), "B": onp.asarray(B), "C": C, "D": D}


def spectral_radius(A):
    """``max |eig(A)|`` of a square matrix (a plain float; not differentiated)."""
    return float(onp.max(onp.abs(onp.linalg.eigvals(onp.asarray(getval(A))))))
