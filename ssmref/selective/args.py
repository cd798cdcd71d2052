"""Validation of the public arguments of :mod:`ssmref.selective`, once, at the boundary.

Every array is checked for its kind (numeric; never bool; real where the model is real), its shape
(named dims, e.g. ``(batch, dim, seqlen)``) and finiteness; plain arrays come back as float64 (or
complex128) NumPy arrays, autograd boxes unchanged.  Every failure is a ``ValueError`` that names the
argument, the expected and the received shape.  The shapes are mamba_ssm's (see docs/selective.md).
"""

import math
import numbers
from typing import NamedTuple, Optional

import numpy as onp
from autograd.tracer import getval, isbox

from ssmref.checks import check_array, check_choice, check_flag, check_int, shape_of, values


def _fmt(shape, names):
    return "(" + ", ".join(f"{nm}={s}" if s is not None else nm for s, nm in zip(shape, names)) + ")"


def array(name, x, shape, names, *, complex_ok=False, note=""):
    """``x`` as a finite float64 (complex128 if ``complex_ok`` and complex) array of ``shape``
    (``None`` = any size, but at least 1); ``names`` label the dims in the error message."""
    want = _fmt(shape, names)
    raw = check_array(name, x, complex_ok=complex_ok, note=note)
    got = shape_of(x)
    if len(got) != len(shape) or any((w is not None and w != g) or g < 1 for w, g in zip(shape, got)):
        raise ValueError(f"{name} must have shape {want}{note}, got {got}")
    if isbox(x):
        return x
    return onp.asarray(raw, dtype=onp.complex128 if raw.dtype.kind == "c" else onp.float64)


def optional(name, x, shape, names, **kw):
    return None if x is None else array(name, x, shape, names, **kw)


def is_complex(x):
    return onp.iscomplexobj(getval(x))


def ndim_of(name, x, allowed, layouts):
    if x is None:
        raise ValueError(f"{name} is required ({layouts})")
    nd = len(shape_of(x))
    if nd not in allowed:
        raise ValueError(f"{name} must be {layouts}, got shape {shape_of(x)}")
    return nd


# ---------------------------------------------------------------------------------------------
# selective_scan
# ---------------------------------------------------------------------------------------------

def scan_bc(name, X, b, d, n, L, complex_A):
    """``B`` or ``C`` of :func:`~ssmref.selective.selective_scan`: returns ``(X, layout, groups)``
    with layout ``"fixed"`` (d, n), ``"varying"`` (b, g, n, L) (a 3-d array gets g = 1) or
    ``"interleaved"`` (b, g, n, 2L) real, for complex ``A`` only."""
    layouts = ("(dim, dstate) fixed, (batch, dstate, seqlen) varying or "
               "(batch, ngroups, dstate, seqlen) grouped"
               + ("; varying and grouped complex, or real with seqlen 2L (re, im interleaved)"
                  if complex_A else ""))
    nd = ndim_of(name, X, (2, 3, 4), layouts)
    real_note = " for real A" if not complex_A else ""
    if nd == 2:
        return array(name, X, (d, n), ("dim", "dstate"), complex_ok=complex_A, note=real_note), "fixed", 1
    lead, lead_names = ((b,), ("batch",)) if nd == 3 else ((b, None), ("batch", "ngroups"))
    interleaved = complex_A and not is_complex(X)
    Lx, Lname = (2 * L, "2*seqlen (interleaved re, im)") if interleaved else (L, "seqlen")
    X = array(name, X, lead + (n, Lx), lead_names + ("dstate", Lname), complex_ok=complex_A,
              note=real_note)
    g = 1 if nd == 3 else shape_of(X)[1]
    if d % g:
        raise ValueError(f"{name} has ngroups={g}, which must divide dim={d} (shape {shape_of(X)})")
    if nd == 3:
        X = X[:, None]                                               # (b, 1, n, Lx)
    return X, ("interleaved" if interleaved else "varying"), g


class ScanArgs(NamedTuple):
    """Checked arguments of ``selective_scan``; ``B``, ``C`` with their layouts."""
    u: object                      # (b, d, L) real
    delta: object                  # (b, d, L) real
    A: object                      # (d, n) real or complex
    B: object                      # (d, n), (b, n, L) or (b, g, n, L); as ``layout_B`` says
    layout_B: str
    C: object
    layout_C: str
    D: Optional[object]            # (d,)
    z: Optional[object]            # (b, d, L)
    delta_bias: Optional[object]   # (d,)


class StepArgs(NamedTuple):
    """Checked arguments of ``selective_state_update``, in head form (see :func:`step_args`)."""
    state: object                  # (b, h, d, n)
    x: object                      # (b, h, d)
    dt: object                     # (b, h, d)
    A: object                      # (h, d, n)
    B: object                      # (b, g, n)
    C: object                      # (b, g, n)
    D: Optional[object]            # (h, d)
    z: Optional[object]            # (b, h, d)
    dt_bias: Optional[object]      # (h, d)
    has_heads: bool                # whether ``state`` came with heads


def scan_args(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, method):
    """Checked arguments of ``selective_scan`` as :class:`ScanArgs`."""
    ndim_of("u", u, (3,), "(batch, dim, seqlen)")
    u = array("u", u, (None, None, None), ("batch", "dim", "seqlen"))
    b, d, L = shape_of(u)
    bdl = ((b, d, L), ("batch", "dim", "seqlen"))
    delta = array("delta", delta, *bdl)
    ndim_of("A", A, (2,), "(dim, dstate)")
    A = array("A", A, (d, None), ("dim", "dstate"), complex_ok=True)
    n = shape_of(A)[1]
    cA = is_complex(A)
    B, layout_B, _ = scan_bc("B", B, b, d, n, L, cA)
    C, layout_C, _ = scan_bc("C", C, b, d, n, L, cA)
    D = optional("D", D, (d,), ("dim",))
    z = optional("z", z, *bdl)
    delta_bias = optional("delta_bias", delta_bias, (d,), ("dim",))
    check_flag("delta_softplus", delta_softplus)
    check_flag("return_last_state", return_last_state)
    check_choice("method", method, ("recurrence", "parallel"))
    return ScanArgs(u, delta, A, B, layout_B, C, layout_C, D, z, delta_bias)


# ---------------------------------------------------------------------------------------------
# selective_state_update
# ---------------------------------------------------------------------------------------------

def _lift(x, heads_ndim, axis):
    """mamba's rule: an argument one dim short of its head form gains a size-1 head axis."""
    if x is not None and len(shape_of(x)) == heads_ndim - 1:
        return x[(slice(None),) * axis + (None,)]
    return x


def step_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    """Checked arguments of ``selective_state_update``, all in head form:
    ``state (b, h, d, n)``, ``x, dt, z (b, h, d)``, ``A (h, d, n)``, ``B, C (b, g, n)``,
    ``D, dt_bias (h, d)``; plus ``has_heads`` (whether ``state`` came with heads); a
    :class:`StepArgs`."""
    nd = ndim_of("state", state, (3, 4), "(batch, dim, dstate) or (batch, nheads, dim, dstate)")
    has_heads = nd == 4
    ndim_of("A", A, (2, 3), "(dim, dstate) or (nheads, dim, dstate)")
    cA = is_complex(A)
    state = array("state", state, (None,) * nd, ("batch", "nheads", "dim", "dstate")[4 - nd:],
                  complex_ok=cA, note=" for real A")
    state = _lift(state, 4, 1)
    b, h, d, n = shape_of(state)
    hd = (h, d) if has_heads else (d,)
    hd_names = ("nheads", "dim") if has_heads else ("dim",)
    A = array("A", A, hd + (n,), hd_names + ("dstate",), complex_ok=True)
    x = array("x", x, (b,) + hd, ("batch",) + hd_names)
    dt = array("dt", dt, (b,) + hd, ("batch",) + hd_names)
    z = optional("z", z, (b,) + hd, ("batch",) + hd_names)
    D = optional("D", D, hd, hd_names)
    dt_bias = optional("dt_bias", dt_bias, hd, hd_names)
    groups = {}
    for name, X in (("B", B), ("C", C)):
        ndim_of(name, X, (2, 3), "(batch, dstate) or (batch, ngroups, dstate)")
        lead, lead_names = ((b,), ("batch",)) if len(shape_of(X)) == 2 else ((b, None), ("batch", "ngroups"))
        X = _lift(array(name, X, lead + (n,), lead_names + ("dstate",), complex_ok=cA,
                        note=" for real A"), 3, 1)                    # (b, g, n)
        g = shape_of(X)[1]
        if h % g:
            raise ValueError(f"{name} has ngroups={g}, which must divide nheads={h} "
                             f"(shape {shape_of(X)}; without heads nheads is 1)")
        groups[name] = X
    if shape_of(groups["C"]) != shape_of(groups["B"]):
        raise ValueError(f"C must have the shape of B, {shape_of(groups['B'])}, got {shape_of(groups['C'])}")
    check_flag("dt_softplus", dt_softplus)
    lift3 = lambda v: _lift(v, 3, 1)                            # noqa: E731  (b, d) -> (b, 1, d)
    lift2 = lambda v: _lift(v, 2, 0)                            # noqa: E731  (d,) -> (1, d)
    return StepArgs(state, lift3(x), lift3(dt), _lift(A, 3, 0), groups["B"], groups["C"],
                    lift2(D), lift3(z), lift2(dt_bias), has_heads)


# ---------------------------------------------------------------------------------------------
# ssd
# ---------------------------------------------------------------------------------------------

def dt_limit_arg(dt_limit):
    """``(lo, hi)``: two real numbers, not NaN, ``lo <= hi`` (``hi`` may be ``inf``)."""
    ok = isinstance(dt_limit, (tuple, list)) and len(dt_limit) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, onp.bool_)) and not math.isnan(v)
        for v in dt_limit)
    if not ok or not dt_limit[0] <= dt_limit[1] or dt_limit[0] == math.inf or dt_limit[1] == -math.inf:
        raise ValueError(f"dt_limit must be a pair (lo, hi) of real numbers with lo <= hi "
                         f"(hi may be inf), got {dt_limit!r}")
    return float(dt_limit[0]), float(dt_limit[1])


def seq_idx_arg(seq_idx, b, L):
    if seq_idx is None:
        return None
    raw = values("seq_idx", seq_idx)
    if raw.dtype.kind not in "iu":
        raise ValueError(f"seq_idx must be an integer array (batch={b}, seqlen={L}), got dtype {raw.dtype}")
    if raw.shape != (b, L):
        raise ValueError(f"seq_idx must have shape (batch={b}, seqlen={L}), got {raw.shape}")
    if raw.size and raw.min() < 0:
        raise ValueError("seq_idx must be >= 0 (mamba's kernels treat negative ids as padding "
                         f"with chunk-dependent results), got min {raw.min()}")
    return raw.astype(onp.int64)


class SSDArgs(NamedTuple):
    """Checked arguments of ``ssd`` (all real; plain arrays as float64, boxes unchanged)."""
    x: object                      # (b, L, h, p)
    dt: object                     # (b, L, h), before bias, softplus and clamp
    A: object                      # (h,)
    B: object                      # (b, L, g, n)
    C: object                      # (b, L, g, n)
    chunk_size: int                # 1 <= chunk_size <= L
    D: Optional[object]            # (h,) or (h, p)
    z: Optional[object]            # (b, L, h, p)
    dt_bias: Optional[object]      # (h,)
    initial_states: Optional[object]  # (b, h, p, n)
    seq_idx: Optional[onp.ndarray]  # (b, L) int64
    dt_limit: tuple                # (lo, hi) floats


def ssd_args(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus,
             dt_limit, return_final_states, method):
    """Checked arguments of ``ssd`` as :class:`SSDArgs`."""
    ndim_of("x", x, (4,), "(batch, seqlen, nheads, headdim)")
    x = array("x", x, (None,) * 4, ("batch", "seqlen", "nheads", "headdim"))
    b, L, h, p = shape_of(x)
    dt = array("dt", dt, (b, L, h), ("batch", "seqlen", "nheads"))
    A = array("A", A, (h,), ("nheads",), note=" (Mamba-2's A is one real scalar per head)")
    ndim_of("B", B, (4,), "(batch, seqlen, ngroups, dstate)")
    B = array("B", B, (b, L, None, None), ("batch", "seqlen", "ngroups", "dstate"))
    g, n = shape_of(B)[2:]
    if h % g:
        raise ValueError(f"B has ngroups={g}, which must divide nheads={h} (shape {shape_of(B)})")
    C = array("C", C, (b, L, g, n), ("batch", "seqlen", "ngroups", "dstate"))
    # a chunk longer than the sequence is the whole sequence: the same result, and memory bounded
    # by L² instead of chunk_size² (a chunk of 32768 on 5 steps would allocate 1 GiB)
    chunk_size = min(check_int("chunk_size", chunk_size, minimum=1), L)
    if D is not None:
        ndim_of("D", D, (1, 2), "(nheads,) or (nheads, headdim)")
        D = array("D", D, (h,) if len(shape_of(D)) == 1 else (h, p), ("nheads", "headdim"))
    z = optional("z", z, (b, L, h, p), ("batch", "seqlen", "nheads", "headdim"))
    dt_bias = optional("dt_bias", dt_bias, (h,), ("nheads",))
    initial_states = optional("initial_states", initial_states, (b, h, p, n),
                              ("batch", "nheads", "headdim", "dstate"))
    seq_idx = seq_idx_arg(seq_idx, b, L)
    check_flag("dt_softplus", dt_softplus)
    dt_limit = dt_limit_arg(dt_limit)
    check_flag("return_final_states", return_final_states)
    check_choice("method", method, ("chunked", "recurrence", "parallel"))
    return SSDArgs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_limit)
