"""Selective SSMs in the kit: Mamba's scan, its decoding step (one, or several with a narrow state
cache), Mamba-2's SSD, and the gradients of the scan and of SSD (``ssmref.selective``).

    Δ_t = softplus(δ_t + δ_bias)                (SSD: then clamped to dt_limit)
    x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t    (exp for A, Euler for B; SSD: x_t B_tᵀ, A per head)
    y_t = Σ_n C_t x_t + D u_t,   out_t = y_t · silu(z_t)       (2·Re(Σ_n C_t x_t) for complex A)

    selective_decode: for each step, out_t from the NEW state as computed, THEN the state is
                      rounded to attrs.state_dtype (the serving engine's cache) and carried on.
    _vjp kinds: the gradients of  Σ gout·out + Σ Re(conj(g_state)·state)  w.r.t. every float
                input, in autograd's (JAX's) convention for complex ones: ∂L/∂Re − i ∂L/∂Im.

Effective length (the tolerance's ``g(L)``): a rounding error made at step ``s`` reaches step
``t`` multiplied by ``Π_{s<m<=t} |exp(Δ_m A)|``, so the errors of every step add up to

    M_t = Σ_{s<=t} Π_{s<m<=t} a_m,   i.e.   M_t = a_t M_{t-1} + 1,   a_t = exp(Δ_t Re A) · keep_t,

per batch row and channel (``keep_t = 0`` where ``seq_idx`` restarts the state), and
``L = min(T, max_{t, channel} M_t)``: the actual decay of the case.  For a constant decay ``ρ`` it
is ``(1 − ρ^T) / (1 − ρ)``, the dense SSM's ``min(T, 1 / (1 − ρ))``.  The bound from the largest
one-step decay, ``1 / (1 − max_t a_t)``, is ``T`` as soon as one step has ``Δ ≈ 0`` (a skipped
token, which selectivity produces on purpose); the decay over a window is the product of the
steps' decays, i.e. set by the mean of ``Δ`` over the window, which ``M_t`` follows exactly.

Baseline mode: :mod:`.selective_naive` (the plain recurrences in the target dtype, the reverse pass
rounded too, the state cache emulated).  Inputs: :mod:`.selective_inputs`.  The 40-digit
references that certify the expected outputs (``ref_error``): :mod:`.selective_ref`.
"""

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref.checks import check_flag, check_int
from ssmref.crosscheck.families import selective_naive, selective_ref
from ssmref.crosscheck.families.selective_inputs import (decode_inputs, scan_inputs, ssd_inputs,
                                                         state_update_inputs)
from ssmref.crosscheck.kinds import Case, Kind
from ssmref.crosscheck.precision import DTYPES, round_to_dtype
from ssmref.selective import args as selective_args
from ssmref.selective import selective_scan, selective_state_update, ssd
from ssmref.selective.functional import step_size

# ---------------------------------------------------------------------------------------------
# The references (float64, from ssmref.selective)
# ---------------------------------------------------------------------------------------------


def _scan(v, attrs):
    return selective_scan(v["u"], v["delta"], v["A"], v["B"], v["C"], v.get("D"), v.get("z"),
                          v.get("delta_bias"), attrs["delta_softplus"], True)


def _ssd(v, attrs):
    return ssd(v["x"], v["dt"], v["A"], v["B"], v["C"], attrs["chunk_size"], v.get("D"),
               v.get("z"), v.get("dt_bias"), v.get("initial_states"), v.get("seq_idx"),
               attrs["dt_softplus"], selective_naive.limit_of(attrs), True)


def _with_gradients(forward, names, cotangents):
    """``compute(x, attrs)``: the outputs of ``forward`` and the gradients of
    ``Σ Re(conj(g_k) · output_k)`` w.r.t. the inputs ``names`` present (autograd's convention)."""
    def compute(x, attrs):
        outs = forward(x, attrs)

        def total(p):
            got = forward({**x, **p}, attrs)
            return sum(np.sum(np.real(np.conj(x[g]) * got[k])) for k, g in cotangents.items())

        grads = autograd.grad(total)({k: x[k] for k in names if k in x})
        return dict(outs, **{"d" + k: v for k, v in grads.items()})
    return compute


def _compute_scan(x, attrs):
    out, last = _scan(x, attrs)
    return {"out": out, "last_state": last}


def _compute_ssd(x, attrs):
    out, final = _ssd(x, attrs)
    return {"out": out, "final_states": final}


def _compute_state_update(x, attrs):
    out, new = selective_state_update(x["state"], x["x"], x["dt"], x["A"], x["B"], x["C"],
                                      x.get("D"), x.get("z"), x.get("dt_bias"),
                                      attrs["dt_softplus"])
    return {"out": out, "new_state": new}


def _compute_decode(x, attrs):
    """``S`` calls of ``selective_state_update``; after each, the state is rounded to
    ``state_dtype`` (out was read from the unrounded one) and carried to the next step."""
    s, outs, states = x["state"], [], []
    for t in range(x["x"].shape[0]):
        out, new = selective_state_update(s, x["x"][t], x["dt"][t], x["A"], x["B"][t], x["C"][t],
                                          x.get("D"), x["z"][t] if "z" in x else None,
                                          x.get("dt_bias"), attrs["dt_softplus"])
        s = round_to_dtype(new, attrs["state_dtype"])
        outs.append(out)
        states.append(s)
    return {"out": onp.stack(outs), "states": onp.stack(states)}


_compute_scan_vjp = _with_gradients(_compute_scan, selective_naive.SCAN_GRADS,
                                    {"out": "gout", "last_state": "glast"})
_compute_ssd_vjp = _with_gradients(_compute_ssd, selective_naive.SSD_GRADS,
                                   {"out": "gout", "final_states": "gfinal"})


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

_S = "Δ = softplus(δ + δ_bias), x_t = exp(Δ A) x_{t-1} + Δ B u, out = (C·x + D u) silu(z)"

CASES = [
    Case("selective_scan", kind="selective_scan", build=scan_inputs(b=2, d=8, n=8, L=64),
         compute=_compute_scan,
         doc=f"{_S}; b 2, d 8, n 8, L 64, varying B and C, Δ ~ logU[1e-3, 0.1] (Mamba's dt_init)"),
    Case("selective_scan_L1", kind="selective_scan",
         build=scan_inputs(b=2, d=8, n=8, L=1, B="grouped", C="grouped", g=2),
         compute=_compute_scan,
         doc="one step (L 1), grouped B and C (2 groups)"),
    Case("selective_scan_L2049", kind="selective_scan",
         build=scan_inputs(b=2, d=8, n=8, L=2049, B="grouped", C="varying", g=4),
         compute=_compute_scan,
         doc="L 2049: crosses the CUDA kernel's 2048-step chunks; B in 4 groups"),
    Case("selective_scan_long_memory", kind="selective_scan",
         build=scan_inputs(b=1, d=4, n=8, L=6000, dt=(1e-4, 1e-3), D=False), compute=_compute_scan,
         doc="small Δ ~ logU[1e-4, 1e-3]: a memory of thousands of steps; L 6000, no D"),
    Case("selective_scan_complex", kind="selective_scan",
         build=scan_inputs(b=2, d=8, n=8, L=100, C="grouped", g=2, complex_A=True),
         compute=_compute_scan,
         doc="complex A (S4D-Lin), complex varying B and grouped C; y = 2 Re(C x) + D u"),
    Case("selective_scan_complex_interleaved", kind="selective_scan",
         build=scan_inputs(b=2, d=8, n=8, L=77, C="grouped", g=2, complex_A=True,
                           interleave=("B", "C")), compute=_compute_scan,
         doc="complex A, B and C real with (re, im) interleaved on the last axis (b, [g,] n, 2L)"),
    Case("selective_scan_softplus_threshold", kind="selective_scan",
         build=scan_inputs(b=2, d=8, n=4, L=64, center=20.0, noise=1.5), compute=_compute_scan,
         doc="δ + δ_bias around 20, both sides of F.softplus' threshold (exact softplus here)"),
    Case("selective_scan_fixed_BC", kind="selective_scan",
         build=scan_inputs(b=2, d=8, n=8, L=300, B="fixed", C="fixed", softplus=False, dt=(1e-2,
                           1e-1),
                           D=False, z=False), compute=_compute_scan,
         doc="fixed B, C (d, n); Δ = delta given directly (no bias, no softplus), no D, no z"),
    Case("selective_scan_vjp", kind="selective_scan_vjp",
         build=scan_inputs(b=2, d=8, n=8, L=128, B="grouped", g=2, cotangents=True),
         compute=_compute_scan_vjp,
         doc="gradients of Σ gout·out + Σ glast·last_state; L 128, grouped B"),
    Case("selective_scan_vjp_complex", kind="selective_scan_vjp",
         build=scan_inputs(b=2, d=8, n=8, L=64, complex_A=True, interleave=("C",), cotangents=True),
         compute=_compute_scan_vjp,
         doc="complex A and B (dA, dB complex: ∂/∂Re − i ∂/∂Im), C interleaved"),
    Case("selective_scan_vjp_long", kind="selective_scan_vjp",
         build=scan_inputs(b=1, d=4, n=8, L=2049, dt=(1e-4, 1e-3), D=False, cotangents=True),
         compute=_compute_scan_vjp, doc="gradients with a memory of thousands of steps, L 2049"),
    Case("selective_state_update", kind="selective_state_update",
         build=state_update_inputs(b=4, d=16, n=8),
         compute=_compute_state_update,
         doc="one decoding step without heads: state (b 4, d 16, n 8)"),
    Case("selective_state_update_heads", kind="selective_state_update",
         build=state_update_inputs(b=2, n=16, h=8, p=16, g=2), compute=_compute_state_update,
         doc="one decoding step with heads: state (b 2, h 8, d 16, n 16), 2 groups, Mamba-2 "
             "values"),
    Case("selective_decode_bf16_state", kind="selective_decode",
         build=decode_inputs(b=2, h=4, p=4, n=8, g=2, steps=8, state_dtype="bfloat16"),
         compute=_compute_decode,
         doc="8 decoding steps, the state carried in bfloat16: out from the state before rounding"),
    Case("ssd", kind="ssd", build=ssd_inputs(b=2, L=200, h=4, p=8, g=2, n=16, chunk=64),
         compute=_compute_ssd,
         doc="Mamba-2: b 2, L 200 (not a multiple of the chunk 64), h 4, p 8, 2 groups, n 16, "
             "initial states"),
    Case("ssd_seq_idx", kind="ssd",
         build=ssd_inputs(b=2, L=150, h=4, p=4, g=1, n=8, chunk=32, D="hp", dt_limit=(1e-3, 5e-2),
                          seq_idx=[[(0, 37), (1, 1), (2, 70), (3, 42)], [(1, 64), (2, 86)]]),
         compute=_compute_ssd,
         doc="packed sequences: seq_idx changes inside chunks of 32 (and a length-1 "
             "sequence; row 2 starts with id 1, so it does not read its initial state); dt_limit"),
    Case("ssd_long", kind="ssd",
         build=ssd_inputs(b=1, L=4100, h=2, p=4, g=1, n=16, chunk=256, dt=(5e-5, 5e-4), D=None,
                          init=False),
         compute=_compute_ssd, doc="L 4100, chunk 256, small Δ: a memory of thousands of steps"),
    Case("ssd_L1", kind="ssd", build=ssd_inputs(b=2, L=1, h=4, p=4, g=2, n=8, chunk=64),
         compute=_compute_ssd,
         doc="one step (L 1) from initial states"),
    Case("ssd_vjp", kind="ssd_vjp",
         build=ssd_inputs(b=2, L=100, h=4, p=4, g=2, n=8, chunk=32, D="hp", cotangents=True,
                          seq_idx=[[(0, 45), (1, 55)], [(0, 20), (1, 10), (2, 70)]]),
         compute=_compute_ssd_vjp,
         doc="gradients of Σ gout·out + Σ gfinal·final_states; seq_idx inside "
             "chunks, initial states, D (h, p)"),
]


# ---------------------------------------------------------------------------------------------
# The checker's rules: validation, effective length, output classes, sequence axes
# ---------------------------------------------------------------------------------------------

def _shape(x, name, want):
    if x[name].shape != want:
        raise ValueError(f"{name} has shape {x[name].shape}, expected {want}")


def _validate_scan(x, attrs, cotangents=False):
    softplus = check_flag("attrs.delta_softplus", attrs.get("delta_softplus"))
    selective_args.scan_args(x["u"], x["delta"], x["A"], x["B"], x["C"], x.get("D"), x.get("z"),
                x.get("delta_bias"), softplus, True, "recurrence")
    if cotangents:
        b, d, L = x["u"].shape
        _shape(x, "gout", (b, d, L))
        _shape(x, "glast", (b, d, x["A"].shape[1]))


def _validate_step(x, attrs):
    softplus = check_flag("attrs.dt_softplus", attrs.get("dt_softplus"))
    selective_args.step_args(x["state"], x["x"], x["dt"], x["A"], x["B"], x["C"], x.get("D"), x.get("z"),
                x.get("dt_bias"), softplus)


def _validate_decode(x, attrs):
    if attrs.get("state_dtype") not in DTYPES:
        raise ValueError(f"attrs.state_dtype must be one of {list(DTYPES)}, got "
                         f"{attrs.get('state_dtype')!r}")
    steps = x["x"].shape[0] if x["x"].ndim >= 1 else 0
    for k in ("x", "dt", "B", "C", "z"):
        if k in x and (x[k].ndim < 1 or x[k].shape[0] != steps or steps < 1):
            raise ValueError(f"{k} has shape {x[k].shape}; every per-step input needs the same "
                             f"leading steps axis as x {x['x'].shape}")
    _validate_step({k: (v[0] if k in ("x", "dt", "B", "C", "z") else v) for k, v in x.items()},
                   attrs)


def _validate_ssd(x, attrs, cotangents=False):
    chunk = check_int("attrs.chunk_size", attrs.get("chunk_size"), minimum=1)
    softplus = check_flag("attrs.dt_softplus", attrs.get("dt_softplus"))
    limit = attrs.get("dt_limit", (0.0, None))
    if not isinstance(limit, (list, tuple)) or len(limit) != 2:
        raise ValueError(f"attrs.dt_limit must be [lo, hi], got {limit!r}")
    selective_args.ssd_args(x["x"], x["dt"], x["A"], x["B"], x["C"], chunk, x.get("D"), x.get("z"),
               x.get("dt_bias"), x.get("initial_states"), x.get("seq_idx"), softplus,
               selective_naive.limit_of(attrs), True, "chunked")
    if cotangents:
        b, L, h, p = x["x"].shape
        _shape(x, "gout", (b, L, h, p))
        _shape(x, "gfinal", (b, h, p, x["B"].shape[3]))


def memory(log_decay, keep=None):
    """``min(T, max_{t, channel} M_t)`` with ``M_t = a_t M_{t-1} + 1``, ``M_{-1} = 0``,
    ``a_t = exp(log_decay_t)`` (times ``keep_t``); time on axis 0."""
    T = log_decay.shape[0]
    with onp.errstate(over="ignore"):
        a = onp.exp(log_decay)
    if keep is not None:
        a = a * keep
    M = worst = onp.zeros(a.shape[1:])
    for t in range(T):
        M = onp.minimum(a[t] * M + 1.0, T)                 # capped: growth beyond T is T
        worst = onp.maximum(worst, M)
    return float(onp.max(worst))


def _scan_length(x, attrs):
    bias = x.get("delta_bias")
    dt = step_size(x["delta"], None if bias is None else bias[:, None], attrs["delta_softplus"])
    log_a = onp.moveaxis(dt, 2, 0)[..., None] * onp.real(x["A"])           # (L, b, d, n)
    return memory(log_a)


def _ssd_length(x, attrs):
    dt = step_size(x["dt"], x.get("dt_bias"), attrs["dt_softplus"], selective_naive.limit_of(attrs))
    keep = None
    if "seq_idx" in x:
        idx = x["seq_idx"]
        prev = onp.concatenate([onp.zeros_like(idx[:, :1]), idx[:, :-1]], axis=1)
        keep = (idx == prev).T[:, :, None]                                # (L, b, 1)
    return memory(onp.moveaxis(dt, 1, 0) * x["A"], keep)                   # (L, b, h)


def _decode_length(x, attrs):
    dt = step_size(x["dt"], x.get("dt_bias"), attrs["dt_softplus"])      # (S, b, [h,] d)
    return memory(dt[..., None] * onp.real(x["A"]))                       # (S, b, [h,] d, n)


def _grads(name):
    return "grad" if name.startswith("d") else "value"


def _axis(axis, label, *names):
    return lambda name: (axis, label) if name in names else None


KINDS = [
    Kind("selective_scan", required_inputs=("u", "delta"), validate=_validate_scan,
         effective_length=_scan_length,
         sequence_axis=_axis(2, "t", "out"), naive=selective_naive.naive_scan,
         reference=selective_ref.scan),
    Kind("selective_scan_vjp", required_inputs=("u", "delta", "gout"),
         validate=lambda x, a: _validate_scan(x, a, True),
         effective_length=_scan_length, output_class=_grads,
         sequence_axis=_axis(2, "t", "out", "du", "ddelta", "dz"),
         naive=selective_naive.naive_scan_vjp,
         reference=selective_ref.scan_vjp),
    Kind("selective_state_update", required_inputs=("x", "dt"),
         validate=_validate_step, naive=selective_naive.naive_state_update,
         reference=selective_ref.state_update),
    Kind("selective_decode", required_inputs=("x", "dt"), validate=_validate_decode,
         effective_length=_decode_length,
         sequence_axis=_axis(0, "step", "out", "states"), naive=selective_naive.naive_decode,
         reference=selective_ref.decode),
    Kind("ssd", required_inputs=("x", "dt", "A"), validate=_validate_ssd,
         effective_length=_ssd_length,
         sequence_axis=_axis(1, "t", "out"), naive=selective_naive.naive_ssd,
         reference=selective_ref.ssd),
    Kind("ssd_vjp", required_inputs=("x", "dt", "A", "gout", "gfinal"),
         validate=lambda x, a: _validate_ssd(x, a, True),
         effective_length=_ssd_length, output_class=_grads,
         sequence_axis=_axis(1, "t", "out", "dx", "ddt", "dz", "dB", "dC"),
         naive=selective_naive.naive_ssd_vjp, reference=selective_ref.ssd_vjp),
]
