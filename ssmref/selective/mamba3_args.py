"""Validation of the public arguments of :func:`ssmref.selective.mamba3_siso` and
:func:`ssmref.selective.mamba3_siso_step`, once, at the boundary.

The shapes are mamba_ssm's (``mamba3_siso_combined`` and ``mamba3_siso_step``; see docs/mamba3.md).
Every array is checked for its kind (real, numeric, never bool), its shape (named dims) and
finiteness; plain arrays come back as float64, autograd boxes unchanged.  Every failure is one
``ValueError`` line naming the argument, the expected and the received shape.
"""

from typing import NamedTuple, Optional

import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_choice, check_flag, check_int, shape_of
from ssmref.selective.args import array, ndim_of, optional

METHODS = ("chunked", "recurrence")


class Mamba3Args(NamedTuple):
    """Checked arguments; ``states`` is ``(angle, ssm, k, v)`` or ``None``; ``cu_seqlens`` an
    int64 array or ``None``; without a seqlen axis for the step form."""
    Q: object
    K: object
    V: object
    ADT: object
    DT: object
    Trap: object
    Q_bias: object
    K_bias: object
    Angles: object
    D: Optional[object]
    Z: Optional[object]
    states: Optional[tuple]
    chunk_size: int = 64
    return_final_states: bool = False
    cu_seqlens: Optional[onp.ndarray] = None
    method: str = "chunked"


def _dims(step, *names):
    """Shape names with the ``seqlen`` axis removed for the step form."""
    return tuple(nm for nm in names if not (step and nm == "seqlen"))


def _checked(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z, step):
    """Shared checks of the sequence form (``step=False``) and of the one-step form."""
    qk_names = _dims(step, "batch", "seqlen", "nheads_qk", "headdim_qk")
    ndim_of("Q", Q, (len(qk_names),), "(" + ", ".join(qk_names) + ")")
    Q = array("Q", Q, (None,) * len(qk_names), qk_names)
    sizes = dict(zip(qk_names, shape_of(Q)))
    b, hqk, n = sizes["batch"], sizes["nheads_qk"], sizes["headdim_qk"]
    L = None if step else sizes["seqlen"]
    K = array("K", K, shape_of(Q), qk_names, note=" (the shape of Q)")
    v_names = _dims(step, "batch", "seqlen", "nheads", "headdim_v")
    ndim_of("V", V, (len(v_names),), "(" + ", ".join(v_names) + ")")
    V = array("V", V, ((b,) if step else (b, L)) + (None, None), v_names)
    h, p = shape_of(V)[-2:]
    if h % hqk:
        raise ValueError(f"V has nheads={h}, which must be a multiple of nheads_qk={hqk} of Q "
                         f"(shapes {shape_of(V)} and {shape_of(Q)})")
    if n % 2:
        raise ValueError(f"Q has headdim_qk={n}, which must be even for the rotary pairs "
                         f"(shape {shape_of(Q)})")
    bhl = ((b, h) if step else (b, h, L)), _dims(step, "batch", "nheads", "seqlen")
    ADT, DT, Trap = (array(nm, x, *bhl) for nm, x in (("ADT", ADT), ("DT", DT), ("Trap", Trap)))
    Q_bias = array("Q_bias", Q_bias, (h, n), ("nheads", "headdim_qk"))
    K_bias = array("K_bias", K_bias, (h, n), ("nheads", "headdim_qk"))
    a_names = _dims(step, "batch", "seqlen", "nheads", "headdim_angles")
    ndim_of("Angles", Angles, (len(a_names),), "(" + ", ".join(a_names) + ")")
    Angles = array("Angles", Angles, shape_of(V)[:-1] + (None,), a_names)
    r = shape_of(Angles)[-1]
    if r > n // 2:
        raise ValueError(f"Angles has headdim_angles={r}, which must be <= headdim_qk // 2 = "
                         f"{n // 2} (shape {shape_of(Angles)})")
    D = optional("D", D, (h,), ("nheads",))
    Z = optional("Z", Z, shape_of(V), v_names)
    return Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z, (b, h, p, n, r)


def states_arg(Input_States, N, h, p, n, r, lead="num_sequences"):
    """``(angle (N, h, r), ssm (N, h, p, n), k (N, h, n), v (N, h, p))`` or ``None``."""
    if Input_States is None:
        return None
    if not isinstance(Input_States, (tuple, list)) or len(Input_States) != 4:
        raise ValueError("Input_States must be a tuple (Angle_State, SSM_State, K_State, V_State) "
                         f"of 4 arrays, got {type(Input_States).__name__}"
                         + (f" of length {len(Input_States)}"
                            if isinstance(Input_States, (tuple, list)) else ""))
    specs = (("Input_States[0] (angle state)", (N, h, r), (lead, "nheads", "headdim_angles")),
             ("Input_States[1] (SSM state)", (N, h, p, n), (lead, "nheads", "headdim_v", "headdim_qk")),
             ("Input_States[2] (K state)", (N, h, n), (lead, "nheads", "headdim_qk")),
             ("Input_States[3] (V state)", (N, h, p), (lead, "nheads", "headdim_v")))
    return tuple(array(nm, x, shape, names) for (nm, shape, names), x in zip(specs, Input_States))


def cu_seqlens_arg(cu_seqlens, batch, L):
    """``(N + 1,)`` int64: 0 first, the total seqlen last, non-decreasing; batch must be 1."""
    if cu_seqlens is None:
        return None
    raw = onp.asarray(getval(cu_seqlens))
    if raw.dtype.kind not in "iu":
        raise ValueError(f"cu_seqlens must be an integer array (num_sequences + 1,), got dtype {raw.dtype}")
    if raw.ndim != 1 or raw.shape[0] < 2:
        raise ValueError(f"cu_seqlens must have shape (num_sequences + 1,) with num_sequences >= 1, "
                         f"got {raw.shape}")
    if batch != 1:
        raise ValueError(f"with cu_seqlens, Q must have batch=1 (sequences packed along seqlen), "
                         f"got batch={batch}")
    if raw[0] != 0 or raw[-1] != L or onp.any(onp.diff(raw) < 0):
        raise ValueError(f"cu_seqlens must start at 0, be non-decreasing and end at seqlen={L}, "
                         f"got {raw.tolist()}")
    return raw.astype(onp.int64)


def mamba3_args(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z, Input_States, chunk_size,
                return_final_states, cu_seqlens, method):
    """Checked arguments of ``mamba3_siso`` as :class:`Mamba3Args`."""
    *arrays, (b, h, p, n, r) = _checked(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z,
                                        step=False)
    L = shape_of(arrays[0])[1]
    cu = cu_seqlens_arg(cu_seqlens, b, L)
    N = b if cu is None else len(cu) - 1
    states = states_arg(Input_States, N, h, p, n, r)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    return_final_states = check_flag("return_final_states", return_final_states)
    check_choice("method", method, METHODS)
    return Mamba3Args(*arrays, states, chunk_size, return_final_states, cu, method)


def step_args(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z, Input_States):
    """Checked arguments of ``mamba3_siso_step`` (no seqlen axis) as :class:`Mamba3Args`."""
    *arrays, (b, h, p, n, r) = _checked(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z,
                                        step=True)
    states = states_arg(Input_States, b, h, p, n, r, lead="batch")
    return Mamba3Args(*arrays, states)
