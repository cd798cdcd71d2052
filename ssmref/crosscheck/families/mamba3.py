"""Mamba-3 SISO in the kit (``ssmref.selective.mamba3_siso`` and ``mamba3_siso_step``).

    θ_t = (θ_{-1} + Σ_{m<=t} π tanh(Angles_m) DT_m) mod 2π,   q_t, k_t = R(θ_t)(Q_t + Q_bias), R(θ_t)(K_t + K_bias)
    S_t = e^{ADT_t} S_{t-1} + (1 − σ(Trap_t)) DT_t e^{ADT_t} v_{t-1} k_{t-1}ᵀ + σ(Trap_t) DT_t v_t k_tᵀ
    out_t = (S_t q_t + D v_t) · silu(Z_t)

Inputs carry mamba's names; the input states are ``Input_Angle_State``, ``Input_SSM_State``,
``Input_K_State``, ``Input_V_State`` and the outputs ``out``, ``angle_state``, ``ssm_state``,
``k_state``, ``v_state`` (the final states); ``cu_seqlens`` is an integer input.  The ``_vjp``
kind adds the gradients ``d<input>`` of ``Σ gout·out + Σ gangle·angle_state + Σ gssm·ssm_state +
Σ gk·k_state + Σ gv·v_state`` w.r.t. every float input.

Every input is a bfloat16 number that float16 also holds (the vectors are the same for every
``--dtype``), and every final angle lies at least :data:`ANGLE_MARGIN` from the wrap point
``0 ≡ 2π`` (the columns of ``Angles`` that end closer are redrawn): a port whose angle is off by
less than that cannot wrap to the other side.

Effective length: the state's errors decay like the selective SSMs' (``M_t = e^{ADT_t} M_{t-1}
+ 1``, per head), but the angle is a sum without decay: the rounding of every earlier step stays
in ``θ_t``.  With any ``Angles`` nonzero ``L`` is the longest sequence (segment), else
``max_t M_t``.

Baselines: :mod:`.mamba3_naive`; 40-digit references: :mod:`.mamba3_ref`.
"""

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref.checks import check_int
from ssmref.crosscheck.families import mamba3_naive, mamba3_ref
from ssmref.crosscheck.families.selective import memory
from ssmref.crosscheck.families.selective_inputs import exact_in_narrow_dtypes, log_uniform
from ssmref.crosscheck.kinds import Case, Kind
from ssmref.selective import mamba3_siso, mamba3_siso_step
from ssmref.selective.mamba3 import angle_increments, wrap_angle
from ssmref.selective.mamba3_args import mamba3_args, step_args

#: Distance (radians) kept between every final angle and the wrap point 0 ≡ 2π.
ANGLE_MARGIN = 0.05
ARGS = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")
STATES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
OUTPUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")
COTANGENTS = ("gout", "gangle", "gssm", "gk", "gv")
GRADS = ARGS + STATES


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def _segments(L, cu):
    return [(0, L)] if cu is None else list(zip(cu[:-1], cu[1:]))


def _final_angles(x, cu):
    """``θ`` after each sequence (float64): ``(N, h, r)``."""
    inc = angle_increments(x["Angles"], x["DT"])                             # (b, L, h, r)
    theta0 = x.get("Input_Angle_State")
    out = []
    for i, (lo, hi) in enumerate(_segments(inc.shape[1], cu)):
        rows = range(inc.shape[0]) if cu is None else [0]
        for bi in rows:
            k = bi if cu is None else i
            total = onp.sum(inc[bi, lo:hi], axis=0) + (0.0 if theta0 is None else theta0[k])
            out.append(wrap_angle(total))
    return onp.stack(out)


def mamba3_inputs(*, b, L, h, hqk, n, p, r, dt=(1e-3, 1e-1), D=True, Z=True, states=True,
                  cu=None, step=False, cotangents=False, inside=False):
    """A builder of mamba's test distribution (``create_mamba3_siso_inputs``): ``Q, K`` RMS-
    normalised normals, ``ADT = −U[1, 16] DT``, ``DT ~ logU[dt]``, ``Trap ~ N(0, 1)`` (raw),
    biases, ``V``, ``Z`` and states ``N(0, 1)``, ``Angles ~ N(0, 1)``, ``D = 1 + 0.1 N``.
    ``step``: one step, no seqlen axis; ``inside``: angle states in ``[1, 5]`` and ``DT <= 0.1``,
    so no angle wraps."""
    def build(rng):
        N = b if cu is None else len(cu) - 1
        rms = lambda X: X / onp.sqrt(onp.mean(X ** 2, axis=-1, keepdims=True))   # noqa: E731
        DT = log_uniform(rng, (b, h, L), *dt)
        x = {"Q": rms(rng.standard_normal((b, L, hqk, n))), "K": rms(rng.standard_normal((b, L, hqk, n))),
             "V": rng.standard_normal((b, L, h, p)), "ADT": -rng.uniform(1.0, 16.0, (b, h, L)) * DT,
             "DT": DT, "Trap": rng.standard_normal((b, h, L)), "Q_bias": rng.standard_normal((h, n)),
             "K_bias": rng.standard_normal((h, n)), "Angles": rng.standard_normal((b, L, h, r))}
        if D:
            x["D"] = 1.0 + 0.1 * rng.standard_normal(h)
        if Z:
            x["Z"] = rng.standard_normal((b, L, h, p))
        if states:
            x["Input_Angle_State"] = (rng.uniform(1.0, 5.0, (N, h, r)) if inside
                                      else 2 * onp.pi * rng.random((N, h, r)))
            for k, shape in zip(STATES[1:], ((N, h, p, n), (N, h, n), (N, h, p))):
                x[k] = rng.standard_normal(shape)
        x = {k: exact_in_narrow_dtypes(v) for k, v in x.items()}
        _keep_off_the_wrap(rng, x, cu)
        if cotangents:
            shapes = {"gout": (b, L, h, p), "gangle": (N, h, r), "gssm": (N, h, p, n),
                      "gk": (N, h, n), "gv": (N, h, p)}
            x.update({k: exact_in_narrow_dtypes(rng.standard_normal(s)) for k, s in shapes.items()})
        if cu is not None:
            x["cu_seqlens"] = onp.asarray(cu, dtype=onp.int64)
        if step:
            x = _one_step(x)
        return x, {"chunk_size": 16, "step": step}
    return build


def _keep_off_the_wrap(rng, x, cu, tries=200):
    """Redraw the ``Angles`` column of every sequence, head and angle whose final ``θ`` lies
    within :data:`ANGLE_MARGIN` of 0 ≡ 2π."""
    b, L, h, r = x["Angles"].shape
    segs = _segments(L, cu)
    for _ in range(tries):
        theta = _final_angles(x, cu)                                          # (N, h, r)
        bad = onp.argwhere(onp.minimum(theta, 2 * onp.pi - theta) < ANGLE_MARGIN)
        if bad.size == 0:
            return
        A = x["Angles"].copy()
        for k, hi_, ri in bad:
            bi, (lo, hi) = (k, segs[0]) if cu is None else (0, segs[k])
            if hi == lo:                                                      # no step: the state
                x["Input_Angle_State"] = x["Input_Angle_State"].copy()
                x["Input_Angle_State"][k, hi_, ri] = exact_in_narrow_dtypes(rng.uniform(1.0, 5.0))
            A[bi, lo:hi, hi_, ri] = exact_in_narrow_dtypes(rng.standard_normal(hi - lo))
        x["Angles"] = A
    raise RuntimeError("could not keep the final angles off the wrap point")


def _one_step(x):
    """The step form: the seqlen axis (of length 1) removed."""
    seq = ("Q", "K", "V", "Angles", "Z", "gout")
    bhl = ("ADT", "DT", "Trap")
    return {k: v[:, 0] if k in seq else v[..., 0] if k in bhl else v for k, v in x.items()}


# ---------------------------------------------------------------------------------------------
# The references (float64, ssmref.selective)
# ---------------------------------------------------------------------------------------------

def _states(v):
    return tuple(v[k] for k in STATES) if STATES[0] in v else None


def forward(v, attrs):
    """``{output: array}`` of ``mamba3_siso`` (or ``mamba3_siso_step`` with ``attrs.step``)."""
    args = [v.get(k) for k in ARGS]
    if attrs.get("step"):
        out, final = mamba3_siso_step(*args, _states(v))
        return dict(zip(OUTPUTS, (out,) + tuple(final)))
    return dict(zip(OUTPUTS, mamba3_siso(*args, _states(v), attrs["chunk_size"], True,
                                         v.get("cu_seqlens"))))


def _compute_vjp(x, attrs):
    outs = forward(x, attrs)

    def total(p):
        got = forward({**x, **p}, attrs)
        return sum(np.sum(x[g] * got[k]) for k, g in zip(OUTPUTS, COTANGENTS))

    grads = autograd.grad(total)({k: x[k] for k in GRADS if k in x})
    return dict(outs, **{"d" + k: g for k, g in grads.items()})


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

CASES = [
    Case("mamba3_siso", kind="mamba3_siso",
         build=mamba3_inputs(b=2, L=100, h=4, hqk=2, n=16, p=4, r=4),
         compute=forward,
         doc="b 2, L 100, h 4 on 2 Q/K heads (GQA), n 16 with 4 of 8 pairs rotated, p 4, D, "
             "Z, input states, chunk 16; mamba's test distribution"),
    Case("mamba3_siso_no_states", kind="mamba3_siso",
         build=mamba3_inputs(b=2, L=64, h=2, hqk=2, n=8, p=4, r=4, D=False, Z=False, states=False),
         compute=forward, doc="no D, Z or input states (zeros); every pair rotated"),
    Case("mamba3_siso_long_memory", kind="mamba3_siso",
         build=mamba3_inputs(b=1, L=2000, h=1, hqk=1, n=8, p=4, r=2, dt=(1e-4, 1e-3)),
         compute=forward,
         doc="DT ~ logU[1e-4, 1e-3]: a memory of hundreds of steps, L 2000 (125 chunks)"),
    Case("mamba3_siso_varlen", kind="mamba3_siso",
         build=mamba3_inputs(b=1, L=100, h=4, hqk=1, n=8, p=4, r=2, cu=[0, 37, 37, 38, 100]),
         compute=forward,
         doc="cu_seqlens [0, 37, 37, 38, 100]: segments of 37, 0 (returns its input states), 1, 62 "
             "steps, each with its input states"),
    Case("mamba3_siso_step", kind="mamba3_siso_step",
         build=mamba3_inputs(b=3, L=1, h=4, hqk=1, n=16, p=8, r=8, step=True, inside=True),
         compute=forward,
         doc="one decoding step (mamba3_siso_step): b 3, h 4 on 1 Q/K head, n 16 all rotated, p 8; "
             "the angles stay inside (0, 2π)"),
    Case("mamba3_siso_vjp", kind="mamba3_siso_vjp",
         build=mamba3_inputs(b=2, L=40, h=2, hqk=1, n=8, p=4, r=2, cotangents=True),
         compute=_compute_vjp,
         doc="gradients of Σ g·(out and the four final states) w.r.t. every float input; b 2, L "
             "40, h 2 on 1 Q/K head"),
]


# ---------------------------------------------------------------------------------------------
# The checker's rules
# ---------------------------------------------------------------------------------------------

def _validate(x, attrs, cotangents=False):
    args = [x.get(k) for k in ARGS]
    if attrs.get("step"):
        a = step_args(*args, _states(x))
    else:
        chunk = check_int("attrs.chunk_size", attrs.get("chunk_size"), minimum=1)
        a = mamba3_args(*args, _states(x), chunk, True, x.get("cu_seqlens"), "chunked")
    if cotangents:
        for k, out in zip(COTANGENTS, forward(x, attrs).values()):
            if x[k].shape != out.shape:
                raise ValueError(f"{k} has shape {x[k].shape}, expected {out.shape}")
    return a


def _length(x, attrs):
    if attrs.get("step"):
        return 1.0
    cu = x.get("cu_seqlens")
    L = x["V"].shape[1]
    longest = max(hi - lo for lo, hi in _segments(L, cu))
    if onp.any(x["Angles"] != 0):
        return float(max(longest, 1))
    keep = onp.ones((L, 1, 1))
    if cu is not None:
        keep[onp.asarray(cu[:-1])[onp.asarray(cu[:-1]) < L]] = 0.0         # restarts
    return min(float(longest), memory(onp.transpose(x["ADT"], (2, 0, 1)), keep))


def _grads(name):
    return "grad" if name.startswith("d") else "value"


def _axis(name):
    if name in ("out", "dQ", "dK", "dV", "dZ", "dAngles"):
        return 1, "t"
    if name in ("dADT", "dDT", "dTrap"):
        return 2, "t"
    return None


def _no_axis(name):
    return None


_REQUIRED = ("Q", "V", "ADT", "DT", "Angles")

KINDS = [
    Kind("mamba3_siso", required_inputs=_REQUIRED, validate=_validate,
         effective_length=_length, sequence_axis=_axis,
         naive=mamba3_naive.naive_forward, reference=mamba3_ref.forward),
    Kind("mamba3_siso_step", required_inputs=_REQUIRED, validate=_validate,
         effective_length=_length, sequence_axis=_no_axis,
         naive=mamba3_naive.naive_forward, reference=mamba3_ref.forward),
    Kind("mamba3_siso_vjp", required_inputs=_REQUIRED + COTANGENTS,
         validate=lambda x, a: _validate(x, a, True), effective_length=_length,
         output_class=_grads, sequence_axis=_axis,
         naive=mamba3_naive.naive_vjp, reference=mamba3_ref.vjp),
]
