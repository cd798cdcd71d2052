"""Shapes of the linear SSM, checked once at each public function's boundary.

    A: (n, n)    B: (n, m)    C: (p, n)    D: (p, m)    u: (T, m) | (batch, T, m)    h0: (n,) | (batch, n)

``m`` inputs, ``n`` states, ``p`` outputs.  Every check raises ``ValueError`` naming the argument
and its expected vs received shape; the math modules trust these checks and check nothing.
The dense SSM is real: complex parameters or inputs are refused (the complex diagonal SSMs of
S4D/S5 are :mod:`ssmref.structured`).
"""

import numpy as onp

from ssmref.checks import check_real_array, shape_of
from ssmref.params import is_node

PARAM_NAMES = ("A", "B", "C", "D")


def ssm_dims(params):
    """``(m, n, p)`` = (input, state, output) dims of ``params``, after checking every matrix."""
    if not is_node(params):
        raise ValueError(f"params must be a dict with keys {PARAM_NAMES}, got {type(params).__name__}")
    missing = [k for k in PARAM_NAMES if k not in params.keys()]
    if missing:
        raise ValueError(f"params is missing {missing}; expected keys {list(PARAM_NAMES)}")
    shapes = {k: shape_of(params[k]) for k in PARAM_NAMES}
    for k in PARAM_NAMES:
        if len(shapes[k]) != 2:
            raise ValueError(f"params[{k!r}] must be a matrix (2-d), got shape {shapes[k]}")
        check_real_array(f"params[{k!r}]", params[k])
    n, m, p = shapes["A"][0], shapes["B"][1], shapes["C"][0]
    if min(n, m, p) < 1:
        raise ValueError(f"params must have at least one state, input and output, got A "
                         f"{shapes['A']}, B {shapes['B']}, C {shapes['C']} (n={n}, m={m}, p={p})")
    for k, want in (("A", (n, n)), ("B", (n, m)), ("C", (p, n)), ("D", (p, m))):
        if shapes[k] != want:
            raise ValueError(f"params[{k!r}] has shape {shapes[k]}, expected {want} "
                             f"(A is (n, n), B (n, m), C (p, n), D (p, m); here n={n}, m={m}, p={p})")
    return m, n, p


def check_sequence_inputs(params, u, h0):
    """``(m, n, p, batch)`` after checking ``u: (T, m) | (batch, T, m)`` and ``h0: None | (n,) |
    (batch, n)`` against ``params``."""
    m, n, p = ssm_dims(params)
    u_shape = shape_of(u)
    if len(u_shape) not in (2, 3) or u_shape[-1] != m:
        raise ValueError(f"u must have shape (T, {m}) or (batch, T, {m}), got {u_shape}")
    if u_shape[-2] < 1:
        raise ValueError(f"u must have at least one time step, got shape {u_shape}")
    check_real_array("u", u)
    batch = u_shape[:-2]
    if h0 is None:
        return m, n, p, batch
    h0_shape = shape_of(h0)
    if h0_shape != (n,) and h0_shape != batch + (n,):
        want = f"({n},)" + (f" or {batch + (n,)}" if batch else "")
        raise ValueError(f"h0 must have shape {want} for u of shape {u_shape}, got {h0_shape}")
    check_real_array("h0", h0)
    return m, n, p, batch


def check_step_inputs(params, h, u):
    """``(m, n, p)`` after checking ``h: (..., n)`` and ``u: (..., m)`` (leading dims broadcast)."""
    m, n, p = ssm_dims(params)
    h_shape, u_shape = shape_of(h), shape_of(u)
    if len(h_shape) < 1 or h_shape[-1] != n:
        raise ValueError(f"h must have shape (..., {n}), got {h_shape}")
    if len(u_shape) < 1 or u_shape[-1] != m:
        raise ValueError(f"u must have shape (..., {m}), got {u_shape}")
    try:
        onp.broadcast_shapes(h_shape[:-1], u_shape[:-1])
    except ValueError:
        raise ValueError(f"the leading (batch) dims of h {h_shape} and u {u_shape} do not "
                         f"broadcast") from None
    check_real_array("h", h)
    check_real_array("u", u)
    return m, n, p

