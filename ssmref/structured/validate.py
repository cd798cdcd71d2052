"""Validation of the structured SSMs' public arguments, once, at the boundary.

Every function raises ``ValueError`` naming the argument with the expected and the received
shape or type.  Conventions enforced here (see ``docs/structured.md``):

- complex parameters (``Lambda``, ``B``, ``C``, ``P``, ``Q``, ``Ct``, ``h0``) accept real arrays,
  which are cast to complex (``x + 0j``; the gradient w.r.t. a real input is then real);
- real arguments (``D``, ``dt``, ``u``) refuse complex arrays;
- bool arrays are refused everywhere (``True`` is not a number), as are object/string arrays and
  non-finite entries;
- the step ``dt`` is positive: a scalar, or one value per state (``(n,)``); ``dt`` and the real and
  imaginary parts of ``Λ`` are at most :data:`MAX_MAGNITUDE` (``1e100``) in magnitude;
- ``Re Λ > 0`` (an unstable mode) is refused where it matters, the kernel and convolution paths,
  unless ``allow_unstable=True``; the bilinear map's pole ``ΔΛ = 2`` is refused always (for DPLR
  systems within :data:`WOODBURY_GAP`, the pole of the Woodbury form's diagonal part).
"""

import numpy as onp
from autograd.tracer import getval

from ssmref.params import is_node
from ssmref.checks import (check_array, check_choice, check_flag, check_int, check_shape, shape_of,
                           values)

METHODS = ("zoh", "bilinear")
OUTPUTS = ("re", "2re")
DIAG_KEYS = ("Lambda", "B", "C", "D", "dt")
DPLR_KEYS = ("Lambda", "P", "Q", "B", "dt")


def _kind(name, x):
    return check_array(name, x, complex_ok=True).dtype.kind


def complex_array(name, x, shape):
    """``x`` checked (numeric, finite, ``shape``) and cast to complex; returns the complex array."""
    check_shape(name, x, shape)
    kind = _kind(name, x)
    if kind != "c":
        return x + 0j if hasattr(x, "_value") else onp.asarray(x, dtype=complex)
    return x


def real_array(name, x, shape):
    """``x`` checked to be a real (not bool, not complex), finite array of ``shape``."""
    check_shape(name, x, shape)
    if _kind(name, x) == "c":
        raise ValueError(f"{name} must be real, got a complex array of shape {shape_of(x)}")
    return x if hasattr(x, "_value") else onp.asarray(x, dtype=float)


#: The largest magnitude of a step and of an eigenvalue's real or imaginary part.  Far beyond any
#: model (steps are ~1e-3..1e-1, |Λ| ~1e4), and small enough that the error-free products of
#: :mod:`ssmref.structured.accurate` (exact below ~1e300) never overflow: outside it a finite
#: input gave a NaN.
MAX_MAGNITUDE = 1e100


def bounded(name, x):
    """``ValueError`` unless every real and imaginary part of ``x`` is at most
    :data:`MAX_MAGNITUDE` in magnitude; returns ``x``."""
    raw = values(name, x)
    big = max(float(onp.max(onp.abs(raw.real), initial=0.0)),
              float(onp.max(onp.abs(raw.imag), initial=0.0)))
    if big > MAX_MAGNITUDE:
        parts = " (real and imaginary parts)" if raw.dtype.kind == "c" else ""
        raise ValueError(f"{name} must have entries of magnitude at most {MAX_MAGNITUDE:g}{parts}, "
                         f"got {big:.3g}")
    return x


def eigenvalues(name, Lam, shape):
    """``Λ`` checked (numeric, finite, ``shape``, bounded by :data:`MAX_MAGNITUDE`), as complex."""
    return bounded(name, complex_array(name, Lam, shape))


def step(name, dt, n):
    """``dt``: a positive finite scalar or ``(n,)`` vector (one step per state), at most
    :data:`MAX_MAGNITUDE`."""
    if shape_of(dt) not in ((), (n,)):
        raise ValueError(f"{name} must be a scalar or have shape ({n},) (one step per state), "
                         f"got shape {shape_of(dt)}")
    dt = real_array(name, dt, shape_of(dt))
    if not onp.all(onp.asarray(getval(dt)) > 0):
        raise ValueError(f"{name} must be > 0, got min {onp.min(getval(dt))}")
    return bounded(name, dt)


def options(method, output):
    """``method`` in ("zoh", "bilinear"), ``output`` in ("re", "2re")."""
    check_choice("method", method, METHODS)
    check_choice("output", output, OUTPUTS)


def stability(Lambda, dt, method, allow_unstable, *, where="Lambda"):
    """Refuse ``Re Λ > 0`` unless ``allow_unstable``; refuse the bilinear pole ``ΔΛ = 2`` always."""
    check_flag("allow_unstable", allow_unstable)
    lam = onp.asarray(getval(Lambda))
    if not allow_unstable and onp.any(lam.real > 0):
        raise ValueError(f"{where} has entries with positive real part (unstable modes; max Re = "
                         f"{lam.real.max():.3g}); pass allow_unstable=True to compute them anyway")
    if method == "bilinear":
        if onp.any(1.0 - onp.asarray(getval(dt)) * lam / 2.0 == 0):
            raise ValueError(f"dt * {where} hits the bilinear pole 2 (1 - dt*Lambda/2 = 0)")


def params_dict(params, keys, kind):
    if not is_node(params):
        raise ValueError(f"params must be a dict with keys {list(keys)} ({kind}), got {type(params).__name__}")
    missing = [k for k in keys if k not in params.keys()]
    if missing:
        raise ValueError(f"params is missing {missing}; expected keys {list(keys)} ({kind})")


def diag_params(params):
    """Validated complex diagonal parameters ``(Lambda, B, C, D, dt)`` and dims ``(m, n, p)``.

    ``Lambda (n,)``, ``B (n, m)``, ``C (p, n)`` complex (real accepted, cast); ``D (p, m)`` real;
    ``dt`` scalar or ``(n,)``.
    """
    params_dict(params, DIAG_KEYS, "complex diagonal SSM")
    Lam = params["Lambda"]
    if len(shape_of(Lam)) != 1:
        raise ValueError(f"params['Lambda'] must have shape (n,), got {shape_of(Lam)}")
    n = shape_of(Lam)[0]
    B, C, D = params["B"], params["C"], params["D"]
    if len(shape_of(B)) != 2 or len(shape_of(C)) != 2:
        raise ValueError(f"params['B'] must be (n, m) and params['C'] (p, n), got {shape_of(B)} "
                         f"and {shape_of(C)}")
    m, p = shape_of(B)[1], shape_of(C)[0]
    Lam = eigenvalues("params['Lambda']", Lam, (n,))
    B = complex_array("params['B']", B, (n, m))
    C = complex_array("params['C']", C, (p, n))
    D = real_array("params['D']", D, (p, m))
    dt = step("params['dt']", params["dt"], n)
    return (Lam, B, C, D, dt), (m, n, p)


def sequence(u, h0, m, n):
    """``u: (T, m) | (batch, T, m)`` real; ``h0: None | (n,) | (batch, n)`` (complex accepted)."""
    if len(shape_of(u)) not in (2, 3) or shape_of(u)[-1] != m or shape_of(u)[-2] < 1:
        raise ValueError(f"u must have shape (T, {m}) or (batch, T, {m}) with T >= 1, got {shape_of(u)}")
    u = real_array("u", u, shape_of(u))
    batch = shape_of(u)[:-2]
    if h0 is None:
        return u, None, batch
    if shape_of(h0) not in ((n,), batch + (n,)):
        want = f"({n},)" + (f" or {batch + (n,)}" if batch else "")
        raise ValueError(f"h0 must have shape {want} for u of shape {shape_of(u)}, got {shape_of(h0)}")
    return u, complex_array("h0", h0, shape_of(h0)), batch


def length(L):
    """A kernel length: an int >= 1."""
    return check_int("length", L, minimum=1)


def dplr_args(params):
    """Validated ``(Lambda (N,), P (N, r), Q (N, r), B (N, m), dt ())`` of a DPLR system (complex
    arrays cast; ``dt`` a positive scalar: S4 has one step per channel, see ``layouts``)."""
    params_dict(params, DPLR_KEYS, "DPLR SSM")
    Lam = params["Lambda"]
    if len(shape_of(Lam)) != 1:
        raise ValueError(f"params['Lambda'] must have shape (N,), got {shape_of(Lam)}")
    N = shape_of(Lam)[0]
    Lam = eigenvalues("params['Lambda']", Lam, (N,))
    P = complex_array("params['P']", params["P"], (N, None))
    r = shape_of(P)[1]
    if r < 1:
        raise ValueError(f"params['P'] must have shape ({N}, r) with rank r >= 1, got {shape_of(P)}")
    Q = complex_array("params['Q']", params["Q"], (N, r))
    B = complex_array("params['B']", params["B"], (N, None))
    if shape_of(params["dt"]) != ():
        raise ValueError(f"params['dt'] must be a scalar for a DPLR system, got shape {shape_of(params['dt'])}")
    dt = step("params['dt']", params["dt"], N)
    woodbury_pole(Lam, dt)
    return Lam, P, Q, B, dt


#: How close ``ΔΛ_n / 2`` may come to 1 in a DPLR system (relative): nearer, the diagonal part
#: ``(2/Δ − Λ)^{-1}`` of the Woodbury form is infinite, or so large that the form cancels its
#: digits.
WOODBURY_GAP = 1e-8


def woodbury_pole(Lam, dt):
    """Refuse ``|1 − ΔΛ_n/2| < WOODBURY_GAP``: ``Λ_n = 2/Δ`` is the pole of the Woodbury form's
    diagonal part, although ``2/Δ·I − A`` itself may be well conditioned."""
    lam, d = onp.asarray(getval(Lam)), float(getval(dt))
    gap = onp.abs(1.0 - d * lam / 2.0)
    if onp.any(gap < WOODBURY_GAP):
        n = int(onp.argmin(gap))
        raise ValueError(f"params['Lambda'][{n}] = {lam[n]:.6g} is within {WOODBURY_GAP:g} "
                         f"(relative) of 2/dt = {2.0 / d:.6g}, the pole of the DPLR form's "
                         f"diagonal part (2/dt - Lambda)^-1; the dense form (dplr_to_dense(params, "
                         f"discrete=False) with ssmref.ssm.discretize) has no such pole")


def output_matrix(params, key, N):
    """``params[key]``: a complex ``(p, N)`` output matrix (``"C"`` or the truncated ``"Ct"``)."""
    if key not in params.keys():
        what = "the truncated C~ = C (I - Abar^L)" if key == "Ct" else "the output matrix"
        raise ValueError(f"params is missing {key!r} ({what})")
    return complex_array(f"params[{key!r}]", params[key], (None, N))


def feedthrough(params, p, m):
    """``params["D"]``: real ``(p, m)``."""
    if "D" not in params.keys():
        raise ValueError("params is missing 'D' (the real (p, m) feedthrough)")
    return real_array("params['D']", params["D"], (p, m))


def stable(Lambda, allow_unstable):
    """Refuse ``Re Λ > 0`` unless ``allow_unstable``."""
    check_flag("allow_unstable", allow_unstable)
    lam = onp.asarray(getval(Lambda))
    if not allow_unstable and onp.any(lam.real > 0):
        raise ValueError(f"params['Lambda'] has entries with positive real part (unstable; max Re = "
                         f"{lam.real.max():.3g}); pass allow_unstable=True to compute them anyway")


def invertible(name, M):
    """``ValueError`` if the square matrix ``M`` is singular to working precision."""
    if onp.linalg.cond(onp.asarray(getval(M))) > 1e15:
        raise ValueError(f"{name} is singular to working precision (cond > 1e15)")
