"""Initial (or random test) parameters for the structured SSMs.

``init_diag``: ``Λ`` from S4D-Lin (``−1/2 + iπn``), S4D-LegS (the diagonal part of HiPPO-LegS) or
random (``Re Λ ~ −U(0.05, 1)``, ``Im Λ ~ N(0, 3²)``: generic stable test systems); complex
``B ~ CN(0, 1/m)``, ``C ~ CN(0, 1/n)`` (real and imaginary parts each of variance half of that),
``D ~ N(0, 1/m)``; the step log-uniform in ``[dt_min, dt_max]`` (S4D, S5), one scalar or one per
state.  ``init_dplr``: HiPPO-LegS in DPLR form (:func:`ssmref.structured.hippo.hippo_dplr`), the
HiPPO ``B̃`` mixed over ``m`` inputs as ``B̃ w^T`` (as ``ssmref.ssm.init_ssm(method="hippo")``).
"""

import numpy as onp

from ssmref.checks import check_choice, check_flag, check_int, check_scalar
from ssmref.rng import as_rng
from ssmref.structured.hippo import hippo_dplr, s4d_legs, s4d_lin

INITS = ("lin", "legs", "random")


def _cnormal(rng, shape, var):
    return onp.sqrt(var / 2.0) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def _steps(rng, shape, dt_min, dt_max):
    check_scalar("dt_min", dt_min, low=0.0, low_open=True)
    check_scalar("dt_max", dt_max, low=dt_min)
    return onp.exp(rng.uniform(onp.log(dt_min), onp.log(dt_max), shape))


def init_diag(n, m, p, *, rng=None, init="lin", dt_min=1e-3, dt_max=1e-1, dt_per_state=False):
    """``{"Lambda": (n,), "B": (n, m), "C": (p, n), "D": (p, m), "dt": () or (n,)}`` (complex diagonal)."""
    n, m, p = (check_int(k, v, minimum=1) for k, v in (("n", n), ("m", m), ("p", p)))
    check_choice("init", init, INITS)
    check_flag("dt_per_state", dt_per_state)
    rng = as_rng(rng)
    if init == "lin":
        lam = s4d_lin(n)
    elif init == "legs":
        lam = s4d_legs(n)[0]
    else:
        lam = -rng.uniform(0.05, 1.0, n) + 3j * rng.standard_normal(n)
    dt = _steps(rng, (n,) if dt_per_state else (), dt_min, dt_max)
    return {"Lambda": lam, "B": _cnormal(rng, (n, m), 1.0 / m), "C": _cnormal(rng, (p, n), 1.0 / n),
            "D": rng.standard_normal((p, m)) / onp.sqrt(m), "dt": dt}


def init_dplr(N, m, p, *, rng=None, dt=0.01):
    """``{"Lambda", "P", "Q", "B", "C", "D", "dt"}``: HiPPO-LegS DPLR (``Q = P``, rank 1), ``N`` states."""
    N, m, p = (check_int(k, v, minimum=1) for k, v in (("N", N), ("m", m), ("p", p)))
    check_scalar("dt", dt, low=0.0, low_open=True)
    rng = as_rng(rng)
    lam, P, B, _ = hippo_dplr(N)
    w = rng.standard_normal((1, m)) / onp.sqrt(m)
    return {"Lambda": lam, "P": P, "Q": P.copy(), "B": B @ w, "C": _cnormal(rng, (p, N), 1.0 / N),
            "D": rng.standard_normal((p, m)) / onp.sqrt(m), "dt": float(dt)}
