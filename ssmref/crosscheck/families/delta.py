"""The delta rule family in the kit: DeltaNet, Gated DeltaNet and KDA (``ssmref.delta``), their
one-step decode and their gradients, with fla's names and layouts.

    q̂ = scale · n(q), k̂ = n(k)  (n = l2norm when attrs.use_qk_l2norm_in_kernel, else identity)
    S_t = diag(e^{g_t}) S_{t-1};   S_t = S_t + k̂_t (β_t ⊙ (v_t − S_tᵀ k̂_t))ᵀ;   o_t = S_tᵀ q̂_t

Kinds: ``delta_rule`` (inputs ``q, k (B, T, H, K)``, ``v (B, T, HV, V)``, ``beta (B, T, HV)`` or
``(B, T, HV, V)``, ``g`` absent (attrs.gate ``"none"``), ``(B, T, HV)`` (``"head"``) or
``(B, T, HV, K)`` (``"channel"``, KDA), optional ``initial_state (N, HV, K, V)`` and
``cu_seqlens (N+1,)`` int64; outputs ``o (B, T, HV, V)``, ``final_state (N, HV, K, V)``),
``delta_rule_vjp`` (plus the cotangents ``do``, ``dht``; outputs also ``d<input>``, the gradients
of ``Σ do·o + Σ dht·final_state``) and ``delta_rule_step`` (one token: ``q, k (B, H, K)``,
``v (B, HV, V)``, ``g``, ``beta``, ``state (B, HV, K, V)``; outputs ``o``, ``new_state``).

Effective length (the tolerance's ``g(L)``): a rounding error in the state at step ``s`` reaches
step ``t`` through ``M_t ⋯ M_{s+1}``, ``M_t = (I − β_t k̂_t k̂_tᵀ) diag(e^{g_t})`` (per value column
for a per-column β), whose 2-norm is at most ``a_t = max_d e^{g_t,d} · max(1, max_j |1 − β_tj
|k̂_t|²|)`` (the projection's eigenvalues are 1 and ``1 − β|k̂|²``).  With ``M_t = a_t M_{t-1} + 1``
(0 where ``cu_seqlens`` starts a sequence) ``L = min(T, max M_t)``, as for the selective kinds:
``T`` for DeltaNet (directions no key touches are never forgotten), the gates' memory otherwise.

Baseline mode: :mod:`.delta_naive`.  The 40-digit references (``ref_error``): :mod:`.delta_ref`.
"""

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref.checks import check_choice, check_flag, check_int, check_scalar
from ssmref.crosscheck.families import delta_naive, delta_ref
from ssmref.crosscheck.families.selective import memory
from ssmref.crosscheck.families.selective_inputs import inv_softplus, log_uniform
from ssmref.crosscheck.kinds import Case, Kind
from ssmref.delta import args as delta_args
from ssmref.delta import (delta_rule, delta_rule_step, gated_delta_rule, gated_delta_rule_step,
                          kda, kda_step)

GATES = ("none", "head", "channel")
GRADS = delta_naive.GRADS


# ---------------------------------------------------------------------------------------------
# The references (float64, from ssmref.delta)
# ---------------------------------------------------------------------------------------------

def _sequence(x, attrs, method="chunked"):
    kw = dict(scale=attrs["scale"], initial_state=x.get("initial_state"), output_final_state=True,
              cu_seqlens=x.get("cu_seqlens"), method=method, chunk_size=attrs["chunk_size"],
              use_qk_l2norm_in_kernel=attrs["use_qk_l2norm_in_kernel"])
    if attrs["gate"] == "none":
        return delta_rule(x["q"], x["k"], x["v"], x["beta"], **kw)
    fn = gated_delta_rule if attrs["gate"] == "head" else kda
    return fn(x["q"], x["k"], x["v"], x["g"], x["beta"], **kw)


def _compute(x, attrs):
    o, final = _sequence(x, attrs)
    return {"o": o, "final_state": final}


def _compute_vjp(x, attrs):
    o, final = _sequence(x, attrs)

    def total(p):
        o_, S_ = _sequence({**x, **p}, attrs)
        return np.sum(x["do"] * o_) + np.sum(x["dht"] * S_)
    grads = autograd.grad(total)({k: x[k] for k in GRADS if k in x})
    return dict({"o": o, "final_state": final}, **{"d" + k: v for k, v in grads.items()})


def _compute_step(x, attrs):
    kw = dict(scale=attrs["scale"], use_qk_l2norm_in_kernel=attrs["use_qk_l2norm_in_kernel"])
    if attrs["gate"] == "none":
        o, new = delta_rule_step(x["q"], x["k"], x["v"], x["beta"], x["state"], **kw)
    else:
        fn = gated_delta_rule_step if attrs["gate"] == "head" else kda_step
        o, new = fn(x["q"], x["k"], x["v"], x["g"], x["beta"], x["state"], **kw)
    return {"o": o, "new_state": new}


# ---------------------------------------------------------------------------------------------
# The inputs: fla's shapes at a model's scales
# ---------------------------------------------------------------------------------------------

def _gates(rng, shape, decay):
    """Log gates: Gated DeltaNet's ``g = −A Δ`` (``A ~ U[1, 16]`` per head, ``Δ = softplus(0.5 N
    + softplus⁻¹(logU[1e-3, 0.1]))``), or ``log(1 − U[lo, hi])`` for ``decay = (lo, hi)``."""
    if decay is not None:
        return onp.log1p(-rng.uniform(decay[0], decay[1], shape))
    A = rng.uniform(1.0, 16.0, shape[2:3] + (1,) * (len(shape) - 3))
    bias = inv_softplus(log_uniform(rng, shape[2:], 1e-3, 1e-1))
    return -A * onp.logaddexp(0.0, 0.5 * rng.standard_normal(shape) + bias)


def sequence_inputs(*, B, T, H, K, V, HV=None, gate="head", beta_per_channel=False, l2norm=False,
                    init=True, cu_seqlens=None, decay=None, chunk=64, cotangents=False):
    """A builder of ``delta_rule`` (``cotangents``: ``_vjp``) inputs.  Keys are unit vectors
    unless the kernel normalises them (``l2norm``); ``β = σ(N)``; ``decay``: gates near 1."""
    HV = H if HV is None else HV

    def build(rng):
        k = rng.standard_normal((B, T, H, K))
        x = {"q": rng.standard_normal((B, T, H, K)),
             "k": k if l2norm else k / onp.linalg.norm(k, axis=-1, keepdims=True),
             "v": rng.standard_normal((B, T, HV, V)),
             "beta": 1 / (1 + onp.exp(-rng.standard_normal((B, T, HV) + ((V,) if beta_per_channel
                                                                           else ()))))}
        if gate != "none":
            x["g"] = _gates(rng, (B, T, HV) + ((K,) if gate == "channel" else ()), decay)
        N = B if cu_seqlens is None else len(cu_seqlens) - 1
        if init:
            x["initial_state"] = 0.5 * rng.standard_normal((N, HV, K, V))
        if cu_seqlens is not None:
            x["cu_seqlens"] = onp.array(cu_seqlens, dtype=onp.int64)
        if cotangents:
            x["do"] = rng.standard_normal((B, T, HV, V))
            x["dht"] = rng.standard_normal((N, HV, K, V))
        return x, {"gate": gate, "scale": K ** -0.5, "use_qk_l2norm_in_kernel": l2norm,
                   "chunk_size": chunk}
    return build


def step_inputs(*, B, H, K, V, HV=None, gate="head", l2norm=True):
    """A builder of ``delta_rule_step`` inputs: one decoding step from a state."""
    def build(rng):
        x, attrs = sequence_inputs(B=B, T=1, H=H, K=K, V=V, HV=HV, gate=gate, l2norm=l2norm,
                                   init=False)(rng)
        x = {k: v[:, 0] for k, v in x.items()}
        x["state"] = 0.5 * rng.standard_normal((B, HV or H, K, V))
        return x, attrs
    return build


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

_D = "S_t = e^g S_{t-1}, S_t += k (β (v − S_tᵀ k))ᵀ, o = S_tᵀ (scale q)"

CASES = [
    Case("delta_rule", kind="delta_rule",
         build=sequence_inputs(B=2, T=64, H=2, K=16, V=16, gate="none", l2norm=True),
         compute=_compute,
         doc=f"DeltaNet ({_D}, g = 0): B 2, T 64, H 2, K = V = 16, l2norm in kernel, "
                       "initial states"),
    Case("gated_delta_rule", kind="delta_rule",
         build=sequence_inputs(B=2, T=100, H=2, HV=4, K=16, V=16), compute=_compute,
         doc="Gated DeltaNet: T 100 (not a multiple of the chunk 64), GVA (H 2, HV 4), unit keys"),
    Case("gated_delta_rule_long_memory", kind="delta_rule",
         build=sequence_inputs(B=1, T=768, H=1, K=16, V=16, decay=(1e-4, 1e-3), init=False),
         compute=_compute,
         doc="gates e^g ∈ [0.999, 0.9999]: a memory of the whole sequence, T 768"),
    Case("gated_delta_rule_varlen", kind="delta_rule",
         build=sequence_inputs(B=1, T=64, H=2, K=16, V=16, chunk=16,
                               cu_seqlens=[0, 17, 17, 18, 45, 64]), compute=_compute,
         doc="cu_seqlens with an empty and a length-1 sequence, boundaries inside chunks of 16, "
             "one initial state per sequence"),
    Case("gated_delta_rule_beta_per_channel", kind="delta_rule",
         build=sequence_inputs(B=1, T=48, H=2, K=16, V=16, beta_per_channel=True, l2norm=True),
         compute=_compute,
         doc="β (B, T, HV, V): one per value channel, as fla's fused recurrent kernels take"),
    Case("kda", kind="delta_rule",
         build=sequence_inputs(B=1, T=64, H=2, HV=4, K=16, V=16, gate="channel"), compute=_compute,
         doc="KDA: a log gate per key channel g (B, T, HV, K), GVA"),
    Case("gated_delta_rule_step", kind="delta_rule_step",
         build=step_inputs(B=4, H=2, HV=4, K=16, V=16),
         compute=_compute_step, doc="one decoding step from a state, GVA, l2norm in kernel"),
    Case("delta_rule_vjp", kind="delta_rule_vjp",
         build=sequence_inputs(B=2, T=32, H=1, K=16, V=16, gate="none", l2norm=True,
                               cotangents=True),
         compute=_compute_vjp,
         doc="DeltaNet's gradients of Σ do·o + Σ dht·final_state (q, k through l2norm)"),
    Case("gated_delta_rule_vjp", kind="delta_rule_vjp",
         build=sequence_inputs(B=1, T=64, H=1, HV=2, K=16, V=16, l2norm=True, chunk=16,
                               cu_seqlens=[0, 20, 20, 21, 64], cotangents=True),
                               compute=_compute_vjp,
         doc="Gated DeltaNet's gradients: GVA, cu_seqlens with an empty and a length-1 sequence"),
    Case("kda_vjp", kind="delta_rule_vjp",
         build=sequence_inputs(B=1, T=32, H=1, K=16, V=16, gate="channel", chunk=16,
                               cotangents=True),
         compute=_compute_vjp, doc="KDA's gradients (dg per key channel)"),
]


# ---------------------------------------------------------------------------------------------
# The checker's rules
# ---------------------------------------------------------------------------------------------

def _attrs(attrs):
    return (check_choice("attrs.gate", attrs.get("gate"), GATES),
            check_scalar("attrs.scale", attrs.get("scale")),
            check_flag("attrs.use_qk_l2norm_in_kernel", attrs.get("use_qk_l2norm_in_kernel")))


def _validate(x, attrs, cotangents=False):
    gate, scale, l2 = _attrs(attrs)
    chunk = check_int("attrs.chunk_size", attrs.get("chunk_size"), minimum=1)
    a = delta_args.sequence_args(x["q"], x["k"], x["v"], x.get("g"), x["beta"], scale,
                                 x.get("initial_state"), True, x.get("cu_seqlens"), l2, "chunked",
                                 chunk, gate)
    if cotangents:
        N = x["q"].shape[0] if a.segments is None else len(a.segments)
        for name, want in (("do", x["v"].shape), ("dht", (N,) + x["v"].shape[2:3]
                                                  + x["k"].shape[3:] + x["v"].shape[3:])):
            if x[name].shape != tuple(want):
                raise ValueError(f"{name} has shape {x[name].shape}, expected {tuple(want)}")


def _validate_step(x, attrs):
    gate, scale, l2 = _attrs(attrs)
    delta_args.step_args(x["q"], x["k"], x["v"], x.get("g"), x["beta"], x["state"], scale, l2, gate)


def step_norm_bound(x, attrs):
    """``log a_t`` of the module docs, ``(T, B, HV)``: the log of a bound on each step's
    2-norm."""
    k = x["k"]
    if attrs["use_qk_l2norm_in_kernel"]:
        k = k / onp.sqrt(onp.sum(k * k, axis=-1, keepdims=True) + 1e-6)
    kk = onp.sum(k * k, axis=-1)                                     # (B, T, H)
    HV = x["v"].shape[2]
    kk = onp.repeat(kk, HV // kk.shape[2], axis=2)                  # (B, T, HV)
    beta = x["beta"]                                                 # (B, T, HV[, V])
    proj = onp.abs(1.0 - beta * (kk if beta.ndim == 3 else kk[..., None]))
    proj = onp.maximum(1.0, proj if proj.ndim == 3 else onp.max(proj, axis=-1))
    g = x.get("g")
    g = onp.zeros(kk.shape) if g is None else (g if g.ndim == 3 else onp.max(g, axis=-1))
    return onp.moveaxis(g + onp.log(proj), 1, 0)


def _length(x, attrs):
    log_a = step_norm_bound(x, attrs)                                # (T, B, HV)
    keep = None
    if "cu_seqlens" in x:
        starts = onp.zeros(log_a.shape[0], dtype=bool)
        starts[x["cu_seqlens"][:-1][x["cu_seqlens"][:-1] < log_a.shape[0]]] = True
        keep = (~starts)[:, None, None]
    return memory(log_a, keep)


def _grads(name):
    return "grad" if name.startswith("d") and name not in ("do", "dht") else "value"


def _time_axis(*names):
    return lambda name: (1, "t") if name in names else None


KINDS = [
    Kind("delta_rule", required_inputs=("q", "k", "v", "beta"), validate=_validate,
         effective_length=_length,
         sequence_axis=_time_axis("o"), naive=delta_naive.naive_sequence,
         reference=delta_ref.sequence),
    Kind("delta_rule_vjp", required_inputs=("q", "k", "v", "beta", "do", "dht"),
         validate=lambda x, a: _validate(x, a, True), effective_length=_length, output_class=_grads,
         sequence_axis=_time_axis("o", "dq", "dk", "dv", "dg", "dbeta"),
         naive=delta_naive.naive_sequence_vjp,
         reference=delta_ref.sequence_vjp),
    Kind("delta_rule_step", required_inputs=("q", "k", "v", "beta", "state"),
         validate=_validate_step,
         naive=delta_naive.naive_step, reference=delta_ref.step),
]
