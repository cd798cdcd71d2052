"""Validation of the public arguments of :mod:`ssmref.delta`, once, at the boundary.

Every array is checked for its kind (real numeric, never bool), its shape (fla's named dims,
``(B, T, H, K)``) and finiteness; plain arrays come back as float64, autograd boxes unchanged.
Every failure is a one-line ``ValueError`` naming the argument with the expected and received
shape.  The results are NamedTuples (:class:`SequenceArgs`, :class:`StepArgs`).
"""

from typing import NamedTuple, Optional

import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_choice, check_flag, check_int, check_scalar, shape_of
from ssmref.selective.args import array, ndim_of

METHODS = ("chunked", "recurrence")


class SequenceArgs(NamedTuple):
    """Checked arguments of ``delta_rule`` / ``gated_delta_rule`` / ``kda``."""
    q: object                      # (B, T, H, K)
    k: object                      # (B, T, H, K)
    v: object                      # (B, T, HV, V)
    g: object                      # None, (B, T, HV) or (B, T, HV, K)
    beta: object                   # (B, T, HV) or (B, T, HV, V)
    scale: object                  # a real scalar (K^-1/2 by default)
    initial_state: object          # None or (N, HV, K, V)
    segments: Optional[list]       # [(start, end), ...] from cu_seqlens, or None
    output_final_state: bool
    l2norm_qk: bool
    method: str
    chunk_size: int


class StepArgs(NamedTuple):
    """Checked arguments of the one-step decode forms."""
    q: object                      # (B, H, K)
    k: object                      # (B, H, K)
    v: object                      # (B, HV, V)
    g: object                      # None, (B, HV) or (B, HV, K)
    beta: object                   # (B, HV) or (B, HV, V)
    state: object                  # (B, HV, K, V)
    scale: object
    l2norm_qk: bool


def _heads(q, k, v, lead, lead_names):
    """``q, k (*lead, H, K)``, ``v (*lead, HV, V)`` with ``HV % H == 0``."""
    nd = len(lead) + 2
    want = "(" + ", ".join(lead_names + ("H", "K")) + ")"
    ndim_of("q", q, (nd,), want)
    q = array("q", q, lead + (None, None), lead_names + ("H", "K"))
    H, K = shape_of(q)[-2:]
    full = tuple(shape_of(q)[:-2])
    k = array("k", k, full + (H, K), lead_names + ("H", "K"))
    ndim_of("v", v, (nd,), "(" + ", ".join(lead_names + ("HV", "V")) + ")")
    v = array("v", v, full + (None, None), lead_names + ("HV", "V"))
    HV = shape_of(v)[-2]
    if HV % H:
        raise ValueError(f"v has HV={HV} value heads, which must be a multiple of the H={H} "
                         f"heads of q and k (GVA), got v {shape_of(v)} and q {shape_of(q)}")
    return q, k, v, full, H, K, HV, shape_of(v)[-1]


def _gate(g, gate, full, names, HV, K):
    if gate == "none":
        return None
    if gate == "head":
        return array("g", g, full + (HV,), names + ("HV",), note=" (a log gate per value head)")
    return array("g", g, full + (HV, K), names + ("HV", "K"), note=" (KDA: a log gate per key channel)")


def _beta(beta, full, names, HV, V):
    ndim_of("beta", beta, (len(full) + 1, len(full) + 2),
            "(" + ", ".join(names + ("HV",)) + ") or (" + ", ".join(names + ("HV", "V")) + ")")
    if len(shape_of(beta)) == len(full) + 1:
        return array("beta", beta, full + (HV,), names + ("HV",))
    return array("beta", beta, full + (HV, V), names + ("HV", "V"))


def _scale(scale, K):
    return K ** -0.5 if scale is None else check_scalar("scale", scale)


def cu_seqlens_arg(cu_seqlens, B, T):
    """``[(start, end), ...]`` from ``cu_seqlens``: integers, ``(N+1,)``, ``N >= 1``, starting
    at 0, non-decreasing (empty segments allowed), ending at ``T``; the batch must be 1."""
    raw = onp.asarray(getval(cu_seqlens))
    if raw.dtype.kind not in "iu":
        raise ValueError(f"cu_seqlens must be an integer array (N+1,), got dtype {raw.dtype}")
    if raw.ndim != 1 or raw.shape[0] < 2:
        raise ValueError(f"cu_seqlens must have shape (N+1,) with N >= 1, got {raw.shape}")
    if B != 1:
        raise ValueError(f"cu_seqlens needs batch size 1 (sequences packed along T), got B={B}")
    if raw[0] != 0 or raw[-1] != T:
        raise ValueError(f"cu_seqlens must start at 0 and end at T={T}, got "
                         f"{raw[0]} ... {raw[-1]}")
    if onp.any(onp.diff(raw) < 0):
        bad = int(onp.argmax(onp.diff(raw) < 0))
        raise ValueError(f"cu_seqlens must be non-decreasing, got {raw[bad]} then {raw[bad + 1]} "
                         f"at index {bad}")
    return [(int(a), int(b)) for a, b in zip(raw[:-1], raw[1:])]


def sequence_args(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
                  use_qk_l2norm_in_kernel, method, chunk_size, gate):
    """Checked arguments; ``gate`` is ``"none"`` (DeltaNet), ``"head"`` (Gated DeltaNet) or
    ``"channel"`` (KDA)."""
    names = ("B", "T")
    q, k, v, full, H, K, HV, V = _heads(q, k, v, (None, None), names)
    B, T = full
    g = _gate(g, gate, full, names, HV, K)
    beta = _beta(beta, full, names, HV, V)
    segments = None if cu_seqlens is None else cu_seqlens_arg(cu_seqlens, B, T)
    N = B if segments is None else len(segments)
    initial_state = None if initial_state is None else array(
        "initial_state", initial_state, (N, HV, K, V),
        ("N" if segments is not None else "B", "HV", "K", "V"))
    return SequenceArgs(q, k, v, g, beta, _scale(scale, K), initial_state, segments,
                        check_flag("output_final_state", output_final_state),
                        check_flag("use_qk_l2norm_in_kernel", use_qk_l2norm_in_kernel),
                        check_choice("method", method, METHODS),
                        check_int("chunk_size", chunk_size, minimum=1))


def step_args(q, k, v, g, beta, state, scale, use_qk_l2norm_in_kernel, gate):
    """Checked arguments of a one-step decode (shapes without the time axis)."""
    q, k, v, full, H, K, HV, V = _heads(q, k, v, (None,), ("B",))
    g = _gate(g, gate, full, ("B",), HV, K)
    beta = _beta(beta, full, ("B",), HV, V)
    state = array("state", state, full + (HV, K, V), ("B", "HV", "K", "V"))
    return StepArgs(q, k, v, g, beta, state, _scale(scale, K),
                    check_flag("use_qk_l2norm_in_kernel", use_qk_l2norm_in_kernel))
