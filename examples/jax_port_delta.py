"""An independent JAX port of the kit's delta rule kinds (DeltaNet, Gated DeltaNet, KDA).

Written from the documents only (docs/delta.md, docs/crosscheck.md): the ``delta_rule``,
``delta_rule_step`` and ``delta_rule_vjp`` cases of the cross-check vectors.  It never imports
ssmref: it reads the vectors with numpy and json, computes in JAX (float64 or float32) and writes
the results; the cases of other kinds are skipped (check with ``--skip-missing``).

    python -m ssmref vectors /tmp/vec --dtype float32 --cases kda gated_delta_rule_vjp
    python examples/jax_port_delta.py /tmp/vec /tmp/res --dtype float32       # add --chunked
    python -m ssmref check /tmp/vec /tmp/res --skip-missing                   # exit 0 = agree

The recurrence (docs/delta.md), per sequence and value head, state ``S: (K, V)`` (keys are rows):

    q̂_t = scale · n(q_t),  k̂_t = n(k_t),  n(x) = x / sqrt(Σ x² + 1e-6) with the l2norm, else x
    P_t = diag(exp(g_t)) S_{t-1}                    (the decay first; g per head or per key channel)
    u_t = β_t ⊙ (v_t − P_tᵀ k̂_t)                    (β scales the whole delta; per head or column)
    S_t = P_t + k̂_t u_tᵀ,   o_t = S_tᵀ q̂_t          (the output reads the new state)

GVA: value head ``i`` reads query/key head ``i // (HV/H)``.  The default evaluation is
``lax.scan`` over time; ``--chunked`` evaluates the WY/UT form by chunks of the case's
``chunk_size`` (a unit lower-triangular solve per chunk, then ``lax.scan`` over chunks).
Gradients come from ``jax.vjp``.  ``--broken VARIANT`` flips one convention (:data:`BROKEN`); the
check must then fail exactly the cases that convention touches.

Shapes in comments: B batch, T time, H query/key heads, h value heads (HV), K key dim, V value
dim, G gate channels (1 or K), W β columns (1 or V), c chunk, k chunk index.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

jax.config.update("jax_enable_x64", True)                      # float64 exists; dtypes explicit
jax.config.update("jax_default_matmul_precision", "highest")   # no TF32 / bf16 passes on GPUs

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
KINDS = ("delta_rule", "delta_rule_step", "delta_rule_vjp")
FLOATS = ("q", "k", "v", "g", "beta", "initial_state")         # the differentiated inputs
BROKEN = {
    "beta-on-value": "u = β v − Pᵀk: β scales the value only, not the whole delta",
    "gate-after": "the decay applied after the update: S_t = e^g (S_{t-1} + k uᵀ), u against S_{t-1}",
    "tile-heads": "GVA: value head i reads query/key head i % H (jnp.tile) instead of i // (HV/H)",
    "varlen-carry": "the state carried across cu_seqlens boundaries instead of each initial state",
}


# ---------------------------------------------------------------------------------------------
# Reading vectors, writing results
# ---------------------------------------------------------------------------------------------

def load_case(vectors_dir, case):
    """The case's inputs as numpy arrays (its expected outputs are not read)."""
    with np.load(os.path.join(vectors_dir, case["file"]), allow_pickle=False) as z:
        return {k: z[k] for k in case["inputs"]}


def save_npz_atomic(path, arrays):
    """``np.savez`` into a temporary file in the same folder, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Layout: every gate as (B, T, h, G), every β as (B, T, h, W), queries and keys per value head
# ---------------------------------------------------------------------------------------------

def l2norm(x):
    """fla's ``l2norm_fwd``: the epsilon inside the square root."""
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-6)


def layout(x, a, f):
    """``q̂, k̂ (B, T, h, K)``, ``v (B, T, h, V)``, ``g (B, T, h, G)``, ``β (B, T, h, W)``."""
    q, k, v = x["q"], x["k"], x["v"]
    if a["use_qk_l2norm_in_kernel"]:
        q, k = l2norm(q), l2norm(k)
    q = q * a["scale"]                                                  # after the l2norm
    r = v.shape[2] // q.shape[2]
    expand = ((lambda z: jnp.tile(z, (1, 1, r, 1))) if f["tile"] else
              (lambda z: jnp.repeat(z, r, axis=2)))
    g = x["g"] if "g" in x else jnp.zeros(v.shape[:3], v.dtype)
    g = g if g.ndim == 4 else g[..., None]                              # (B, T, h, G)
    beta = x["beta"] if x["beta"].ndim == 4 else x["beta"][..., None]   # (B, T, h, W)
    return expand(q), expand(k), v, g, beta


# ---------------------------------------------------------------------------------------------
# The recurrence: lax.scan over time
# ---------------------------------------------------------------------------------------------

def recurrence(q, k, v, g, beta, S, f):
    """``o (B, T, h, V)`` and the final state ``(B, h, K, V)`` from ``S``."""
    def step(S, t):
        qt, kt, vt, gt, bt = t                                          # (B, h, ·)
        decay = jnp.exp(gt)[..., :, None]                               # (B, h, G, 1): rows of S
        P = S if f["gate_after"] else decay * S                         # (B, h, K, V)
        pred = jnp.einsum("bhkv,bhk->bhv", P, kt)                       # Pᵀ k̂
        u = bt * vt - pred if f["beta_on_value"] else bt * (vt - pred)  # (B, h, V)
        S = P + kt[..., :, None] * u[..., None, :]
        S = decay * S if f["gate_after"] else S
        return S, jnp.einsum("bhkv,bhk->bhv", S, qt)
    tm = lambda z: jnp.moveaxis(z, 1, 0)                                # noqa: E731
    S, o = lax.scan(step, S, tuple(tm(z) for z in (q, k, v, g, beta)))
    return tm(o), S


# ---------------------------------------------------------------------------------------------
# The chunked WY/UT form (docs/delta.md)
# ---------------------------------------------------------------------------------------------

def segsum(a):
    """``seg[..., i, m, :] = Σ_{m<l<=i} a_l`` summed directly (not as differences of running sums),
    0 where ``m >= i``; ``a: (..., c, G)``."""
    c = a.shape[-2]
    strict = jnp.tril(jnp.ones((c, c), bool), -1)[..., None]            # l > m
    return jnp.cumsum(jnp.where(strict, a[..., :, None, :], 0), axis=-3)   # [..., i, m, G]


def per_column(X):
    """``(..., W, c, V) -> (..., c, V)``: value column ``j`` from system ``j`` (``W = V``, β per
    column) or from the one system (``W = 1``)."""
    return X[..., 0, :, :] if X.shape[-3] == 1 else jnp.einsum("...jij->...ij", X)


def chunked(q, k, v, g, beta, S, chunk):
    """The same outputs as :func:`recurrence`, by chunks of ``chunk`` steps (the WY/UT form)."""
    B, T, h, Kd = k.shape
    c = min(chunk, T)
    nc = -(-T // c)
    # (B, T, h, ·) -> (B, h, k, c, ·); the padding is the identity step (β = k = v = q = 0, g = 0)
    ch = lambda z: jnp.moveaxis(                                        # noqa: E731
        jnp.pad(z, ((0, 0), (0, nc * c - T), (0, 0), (0, 0))).reshape(B, nc, c, h, -1), 3, 1)
    qc, kc, vc, gc, bc = ch(q), ch(k), ch(v), ch(g), ch(beta)
    seg = segsum(gc)                                                    # (B, h, k, c, c, G)
    eseg = jnp.exp(seg) * jnp.ones((Kd,), k.dtype)                      # per key channel d
    gam = jnp.cumsum(gc, axis=-2)                                       # Γ_i: (B, h, k, c, G)
    low = jnp.tril(jnp.ones((c, c), bool))                              # m <= i
    # 1. A[i, m] = β_i Σ_d k_id k_md e^{seg[i, m, d]} (m < i), one system per β column w
    kk = jnp.where(jnp.tril(low, -1), jnp.einsum("...id,...md,...imd->...im", kc, kc, eseg), 0)
    bw = jnp.moveaxis(bc, -1, -2)                                       # (B, h, k, W, c)
    IA = jnp.eye(c, dtype=k.dtype) + bw[..., :, None] * kk[..., None, :, :]   # I + A
    solve = partial(solve_triangular, lower=True, unit_diagonal=True)
    U = per_column(solve(IA, bw[..., None] * vc[..., None, :, :]))     # (I+A)^{-1}(β ⊙ V)
    Wy = solve(IA, bw[..., None] * (kc * jnp.exp(gam))[..., None, :, :])   # (B, h, k, W, c, K)
    qk = jnp.where(low, jnp.einsum("...id,...md,...imd->...im", qc, kc, eseg), 0)
    qg = qc * jnp.exp(gam)                                              # Q ⊙ e^Γ
    kt = kc * jnp.exp(seg[..., -1, :, :])                               # K ⊙ e^tail, tail = seg[c-1]
    last = jnp.exp(gam[..., -1, :])                                     # e^{Γ_{c-1}}: (B, h, k, G)

    # 2. per chunk, in order: the true pseudo-values, the outputs, the next chunk's state
    def step(H, z):
        Uk, Wk, qkk, qgk, ktk, lk = z                                   # one chunk: (B, h, ·)
        u = Uk - per_column(jnp.einsum("bhwid,bhdv->bhwiv", Wk, H))     # u = U − W H: (B, h, c, V)
        O = jnp.einsum("bhid,bhdv->bhiv", qgk, H) + jnp.einsum("bhim,bhmv->bhiv", qkk, u)
        H = lk[..., :, None] * H + jnp.einsum("bhmd,bhmv->bhdv", ktk, u)
        return H, O
    zs = (U, Wy, qk, qg, kt, last)
    S, O = lax.scan(step, S, tuple(jnp.moveaxis(z, 2, 0) for z in zs))  # O: (k, B, h, c, V)
    O = jnp.moveaxis(O, 0, 2).reshape(B, h, nc * c, -1)[:, :, :T]
    return jnp.moveaxis(O, 1, 2), S


# ---------------------------------------------------------------------------------------------
# A case: sequences (cu_seqlens), the step kind and the gradients
# ---------------------------------------------------------------------------------------------

def delta(x, a, cu, f):
    """``(o, final_state)``; ``cu``: static ``cu_seqlens`` or None.  Each sequence runs alone from
    its initial state (with ``varlen-carry``, from the previous sequence's final state)."""
    q, k, v, g, beta = layout(x, a, f)
    B, T, h, Kd = k.shape
    run = ((lambda *z: chunked(*z, int(a["chunk_size"]))) if f["chunked"] else
           (lambda *z: recurrence(*z, f)))
    N = B if cu is None else len(cu) - 1
    S0 = x.get("initial_state", jnp.zeros((N, h, Kd, v.shape[-1]), v.dtype))
    if cu is None:
        return run(q, k, v, g, beta, S0)
    outs, finals, carried = [], [], S0[:1]
    for i, (lo, hi) in enumerate(zip(cu[:-1], cu[1:])):
        S = carried if f["varlen_carry"] else S0[i:i + 1]
        if hi > lo:
            o, S = run(*(z[:, lo:hi] for z in (q, k, v, g, beta)), S)
            outs.append(o)
        finals.append(S)
        carried = S
    return jnp.concatenate(outs, axis=1), jnp.concatenate(finals)


def case_outputs(x, a, kind, cu, f):
    """The case's outputs by name."""
    if kind == "delta_rule_step":                                       # one step: T = 1
        y = {k: v[:, None] for k, v in x.items() if k != "state"}
        o, S = delta(dict(y, initial_state=x["state"]), a, None, f)
        return {"o": o[:, 0], "new_state": S}
    if kind == "delta_rule":
        o, S = delta(x, a, cu, f)
        return {"o": o, "final_state": S}
    primals = {k: x[k] for k in FLOATS if k in x}
    (o, S), pullback = jax.vjp(lambda p: delta(dict(x, **p), a, cu, f), primals)
    grads = pullback((x["do"], x["dht"]))[0]
    return dict({"d" + k: v for k, v in grads.items()}, o=o, final_state=S)


@partial(jax.jit, static_argnames=("kind", "attrs", "cu", "flags"))
def compute(x, kind, attrs, cu, flags):
    """One case's outputs, compiled as one XLA computation (``attrs``: JSON text; ``cu``,
    ``flags``: tuples; all static)."""
    return case_outputs(x, json.loads(attrs), kind, cu, dict(flags))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def run(vectors_dir, results_dir, dtype="float64", broken=None, cases=None, quiet=False,
        chunked=False):
    """Compute every delta rule case of the vectors; returns ``{name: seconds}``."""
    if broken is not None and broken not in BROKEN:
        raise ValueError(f"unknown broken variant {broken!r}; known: {sorted(BROKEN)}")
    if broken in ("beta-on-value", "gate-after") and chunked:
        raise ValueError(f"--broken {broken} changes the recurrence: not with --chunked")
    with open(os.path.join(vectors_dir, "manifest.json")) as fh:
        manifest = json.load(fh)
    known = [c["name"] for c in manifest["cases"]]
    unknown = sorted(set(cases or []) - set(known))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; the vectors have {known}")
    os.makedirs(results_dir, exist_ok=True)
    times = {}
    for case in manifest["cases"]:
        if cases and case["name"] not in cases:
            continue
        kind, attrs = case.get("kind"), case.get("attrs", {})
        if kind not in KINDS:
            quiet or print(f"skip {case['name']}: kind {kind!r} not ported")
            continue
        raw = load_case(vectors_dir, case)
        cu = raw.pop("cu_seqlens", None)
        x = {k: jnp.asarray(v, DTYPES[dtype]) for k, v in raw.items()}
        flags = (("beta_on_value", broken == "beta-on-value"), ("chunked", chunked),
                 ("gate_after", broken == "gate-after"), ("tile", broken == "tile-heads"),
                 ("varlen_carry", broken == "varlen-carry"))
        t0 = time.perf_counter()
        out = compute(x, kind, json.dumps(attrs, sort_keys=True),
                      None if cu is None else tuple(int(c) for c in cu), flags)
        arrays = {k: np.asarray(out[k]) for k in case["outputs"]}     # waits for the device
        times[case["name"]] = time.perf_counter() - t0
        if "set_id" in manifest:       # the vectors these results were computed from
            arrays["_set_id"] = np.array(manifest["set_id"])
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"), arrays)
        quiet or print(f"{case['name']:34s} {times[case['name']]:8.3f} s")
    print(f"{len(times)} cases in {sum(times.values()):.2f} s ({dtype}, "
          f"{'chunked' if chunked else 'recurrence'}, {jax.default_backend()}"
          f"{', broken: ' + broken if broken else ''})")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors_dir")
    ap.add_argument("results_dir")
    ap.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    ap.add_argument("--chunked", action="store_true", help="the WY/UT form (docs/delta.md)")
    ap.add_argument("--broken", choices=sorted(BROKEN), default=None,
                    help="flip one convention: " + "; ".join(f"{k}: {v}" for k, v in
                                                            BROKEN.items()))
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    a = ap.parse_args(argv)
    try:
        run(a.vectors_dir, a.results_dir, a.dtype, a.broken, a.cases, chunked=a.chunked)
    except (ValueError, OSError) as e:                              # unusable vectors: one line
        print(f"jax_port_delta: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
