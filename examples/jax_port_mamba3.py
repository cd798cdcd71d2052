"""An independent JAX port of the kit's Mamba-3 SISO kinds, checked with the kit.

Written from the documents only (docs/mamba3.md, docs/crosscheck.md): the ``mamba3_siso``,
``mamba3_siso_step`` and ``mamba3_siso_vjp`` cases of the cross-check vectors.  It never imports
ssmref: it reads the vectors with numpy and json, computes in JAX (float64 or float32) and writes
the results; the cases of other kinds are skipped (check with ``--skip-missing``).

    python -m ssmref vectors /tmp/vec --dtype float32 --cases mamba3_siso mamba3_siso_vjp
    python examples/jax_port_mamba3.py /tmp/vec /tmp/res --dtype float32      # add --chunked
    python -m ssmref check /tmp/vec /tmp/res --skip-missing                   # exit 0 = agree

The equations (docs/mamba3.md), per sequence and head, ``S_t: (p, n)``:

    θ_t = (θ_{t-1} + π tanh(Angles_t) DT_t) mod 2π        q_t = R(θ_t)(Q_t + Q_bias), k_t likewise
    λ_t = σ(Trap_t), α_t = exp(ADT_t), β_t = (1 − λ_t) DT_t α_t, γ_t = λ_t DT_t
    S_t = α_t S_{t-1} + β_t v_{t-1} k_{t-1}ᵀ + γ_t v_t k_tᵀ,   out_t = (S_t q_t + D v_t) · silu(Z_t)

``R(θ)`` rotates the interleaved pair ``(x_{2i}, x_{2i+1})`` by ``θ_i`` for ``i < r``.  The default
evaluation is ``lax.scan`` over time (the angle wrapped every step, as the step kernel does);
``--chunked`` evaluates the documented chunked form (one cumulative sum of the angle, then SSD's
chunked scan with input weight ``c_t = γ_t + (1 − λ_{t+1}) DT_{t+1}`` minus the excess on the
diagonal).  Gradients come from ``jax.vjp``.  ``--broken VARIANT`` flips one convention
(:data:`BROKEN`); the check must then fail exactly the cases that convention touches.

Shapes in comments: b batch, L time, h heads, g Q/K heads, n headdim_qk, p headdim, r angles,
c chunk, k chunk index.
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

jax.config.update("jax_enable_x64", True)                      # float64 exists; dtypes explicit
jax.config.update("jax_default_matmul_precision", "highest")   # no TF32 / bf16 passes on GPUs

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
KINDS = ("mamba3_siso", "mamba3_siso_step", "mamba3_siso_vjp")
STATES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
OUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")
COTANGENTS = ("gout", "gangle", "gssm", "gk", "gv")            # in the order of OUTS
BROKEN = {
    "no-sigmoid": "λ = Trap: the raw trapezoid input used as the factor, without σ",
    "no-wrap": "θ never reduced mod 2π (the rotations are the same, the angle state is not)",
    "tile-heads": "GQA: head i reads Q/K head i % g (jnp.tile) instead of i // (h/g)",
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
# The pieces: wrap, rotate, the per-step factors
# ---------------------------------------------------------------------------------------------

def wrap(theta, on=True):
    """``x mod 2π = x − 2π floor(x / 2π)`` (its derivative is 1)."""
    two_pi = 2 * jnp.pi
    return theta - two_pi * lax.stop_gradient(jnp.floor(theta / two_pi)) if on else theta


def rotate(x, theta):
    """``R(θ) x``: pair ``(x_{2i}, x_{2i+1})`` rotated by ``θ_i`` for ``i < r``; ``x: (..., n)``,
    ``θ: (..., r)``.  The pairs ``i >= r`` get angle 0 (cos 1, sin 0: unchanged exactly)."""
    n, r = x.shape[-1], theta.shape[-1]
    theta = jnp.concatenate([theta, jnp.zeros(theta.shape[:-1] + (n // 2 - r,), theta.dtype)], -1)
    x = x.reshape(x.shape[:-1] + (n // 2, 2))
    c, s = jnp.cos(theta), jnp.sin(theta)
    x0, x1 = x[..., 0], x[..., 1]
    return jnp.stack([c * x0 - s * x1, s * x0 + c * x1], -1).reshape(x.shape[:-2] + (n,))


def heads(X, h, tile):
    """``(b, L, g, n) -> (b, L, h, n)``: head ``i`` reads ``i // (h/g)`` (or ``i % g`` if tile)."""
    g = X.shape[2]
    return jnp.tile(X, (1, 1, h // g, 1)) if tile else jnp.repeat(X, h // g, axis=2)


def factors(x, f):
    """Time-major per-step inputs of one sequence: ``q, k`` biased, not rotated ``(L, b, h, n)``,
    ``v (L, b, h, p)``, the angle increments ``(L, b, h, r)`` and ``λ, ADT, DT (L, b, h)``."""
    h = x["V"].shape[2]
    q = heads(x["Q"], h, f["tile"]) + x["Q_bias"]
    k = heads(x["K"], h, f["tile"]) + x["K_bias"]
    dt = jnp.moveaxis(x["DT"], 2, 1)                                    # (b, L, h)
    lam = jnp.moveaxis(x["Trap"], 2, 1)
    lam = lam if f["no_sigmoid"] else jax.nn.sigmoid(lam)
    inc = jnp.pi * jnp.tanh(x["Angles"]) * dt[..., None]                # (b, L, h, r)
    tm = lambda a: jnp.moveaxis(a, 1, 0)                                # noqa: E731
    return {"q": tm(q), "k": tm(k), "v": tm(x["V"]), "inc": tm(inc), "lam": tm(lam),
            "adt": tm(jnp.moveaxis(x["ADT"], 2, 1)), "dt": tm(dt)}


# ---------------------------------------------------------------------------------------------
# The recurrence: lax.scan over time
# ---------------------------------------------------------------------------------------------

def recurrence(s, states, f):
    """``Y (L, b, h, p)`` (``S_t q_t``) and the final states from ``states = (θ, S, k, v)``."""
    def step(carry, t):
        theta, S, k_prev, v_prev = carry
        theta = wrap(theta + t["inc"], f["wrap"])                       # (b, h, r)
        q, k = rotate(t["q"], theta), rotate(t["k"], theta)             # (b, h, n)
        alpha = jnp.exp(t["adt"])                                       # (b, h)
        beta = (1 - t["lam"]) * t["dt"] * alpha
        gamma = t["lam"] * t["dt"]
        S = (alpha[..., None, None] * S
             + beta[..., None, None] * v_prev[..., :, None] * k_prev[..., None, :]
             + gamma[..., None, None] * t["v"][..., :, None] * k[..., None, :])   # (b, h, p, n)
        return (theta, S, k, t["v"]), jnp.einsum("bhpn,bhn->bhp", S, q)
    final, Y = lax.scan(step, states, s)
    return Y, final


# ---------------------------------------------------------------------------------------------
# The chunked form: SSD's chunked scan with input weight c_t, minus the excess on the diagonal
# ---------------------------------------------------------------------------------------------

def segsum(a):
    """``seg[..., i, m] = Σ_{m<l<=i} a_l`` summed directly (not as differences of running sums);
    ``-inf`` above the diagonal.  ``a: (..., c)``."""
    c = a.shape[-1]
    strict = jnp.tril(jnp.ones((c, c), bool), -1)                       # l > m
    terms = jnp.where(strict, a[..., :, None], 0)                       # [..., l, m] = a_l, l > m
    seg = jnp.cumsum(terms, axis=-2)                                    # [..., i, m]
    return jnp.where(jnp.tril(jnp.ones((c, c), bool)), seg, -jnp.inf)


def chunked(s, states, chunk, f):
    """The same outputs as :func:`recurrence`, by chunks of ``chunk`` steps (docs/mamba3.md)."""
    theta0, S0, k0, v0 = states
    L = s["q"].shape[0]
    theta = theta0 + jnp.cumsum(s["inc"], axis=0)                       # one cumulative sum
    theta = wrap(theta, f["wrap"])                                      # (L, b, h, r)
    q, k = rotate(s["q"], theta), rotate(s["k"], theta)                 # (L, b, h, n)
    lam, dt, v = s["lam"], s["dt"], s["v"]
    excess = jnp.concatenate([((1 - lam) * dt)[1:], jnp.zeros_like(dt[:1])])   # (1 − λ_{t+1}) DT_{t+1}
    cw = lam * dt + excess                                              # c_t, c_{L-1} = γ_{L-1}
    H = S0 + ((1 - lam[0]) * dt[0])[..., None, None] * v0[..., :, None] * k0[..., None, :]
    a = s["adt"]                                                        # the log decay, (L, b, h)
    c = min(chunk, L)
    nc = -(-L // c)
    pad = lambda z: jnp.pad(z, [(0, nc * c - L)] + [(0, 0)] * (z.ndim - 1))  # noqa: E731
    # (L, b, h, ...) -> (b, h, k, c, ...): padded steps are the identity (a = 0, c_t = 0)
    ch = lambda z: jnp.moveaxis(pad(z).reshape((nc, c) + z.shape[1:]), (0, 1), (2, 3))  # noqa: E731
    qc, kc, vc, wc, ac = ch(q), ch(k), ch(v), ch(cw), ch(a)
    seg = segsum(ac)                                                    # (b, h, k, c, c)
    # 1. inside each chunk: Σ_{m<=i} e^{seg[i, m]} c_m (q_i·k_m) v_m
    Y = jnp.einsum("bhkin,bhkmn,bhkim,bhkm,bhkmp->bhkip", qc, kc, jnp.exp(seg), wc, vc)
    # 2. each chunk's end state from zero: Σ_m e^{tail_m} c_m v_m k_mᵀ, tail_m = seg[c-1, m]
    ends = jnp.einsum("bhkm,bhkm,bhkmp,bhkmn->bhkpn", jnp.exp(seg[..., -1, :]), wc, vc, kc)
    # 3. the recurrence over chunks: the state before each chunk
    decay = jnp.exp(jnp.sum(ac, axis=-1))                               # (b, h, k)

    def carry(Hk, z):
        dk, ek = z
        return dk[..., None, None] * Hk + ek, Hk
    H_last, starts = lax.scan(carry, H, (jnp.moveaxis(decay, 2, 0), jnp.moveaxis(ends, 2, 0)))
    # 4. state to output: e^{Γ_i} H q_i, Γ_i = Σ_{l<=i} a_l
    gam = jnp.exp(jnp.cumsum(ac, axis=-1))                              # (b, h, k, c)
    Y = Y + jnp.einsum("kbhpn,bhkin,bhki->bhkip", starts, qc, gam)
    Y = jnp.moveaxis(Y.reshape(Y.shape[:2] + (nc * c,) + Y.shape[-1:]), 2, 0)[:L]   # (L, b, h, p)
    Y = Y - (excess * jnp.sum(q * k, axis=-1))[..., None] * v           # the excess on the diagonal
    return Y, (theta[-1], H_last, k[-1], v[-1])


# ---------------------------------------------------------------------------------------------
# A case: sequences (cu_seqlens), D, Z, the step kind and the gradients
# ---------------------------------------------------------------------------------------------

def sequence(x, states, f):
    """One batch of whole sequences: ``out (b, L, h, p)`` and the final states."""
    s = factors(x, f)
    if s["q"].shape[0] == 0:                                            # an empty segment
        return jnp.zeros(x["V"].shape, x["V"].dtype), states
    Y, final = (chunked(s, states, f["chunk"], f) if f["chunked"] else recurrence(s, states, f))
    Y = jnp.moveaxis(Y, 0, 1)                                           # (b, L, h, p)
    if "D" in x:
        Y = Y + x["D"][:, None] * x["V"]
    if "Z" in x:
        Y = Y * jax.nn.silu(x["Z"])
    return Y, final


def initial_states(x, N):
    """``(θ, S, k, v)`` from the inputs, zeros where absent (``N`` sequences)."""
    h, p, n, r = x["V"].shape[2], x["V"].shape[3], x["Q"].shape[3], x["Angles"].shape[3]
    shapes = ((N, h, r), (N, h, p, n), (N, h, n), (N, h, p))
    return tuple(x[k] if k in x else jnp.zeros(sh, x["V"].dtype) for k, sh in zip(STATES, shapes))


def mamba3(x, cu, f):
    """``(out, angle_state, ssm_state, k_state, v_state)``; ``cu``: static ``cu_seqlens`` or
    None.  Each segment runs alone from its input states; an empty one returns them."""
    if cu is None:
        y, final = sequence(x, initial_states(x, x["V"].shape[0]), f)
        return (y, *final)
    states = initial_states(x, len(cu) - 1)
    outs, finals = [], []
    for i, (lo, hi) in enumerate(zip(cu[:-1], cu[1:])):
        xi = {k: (v[:, lo:hi] if k in ("Q", "K", "V", "Z", "Angles") else
                  v[..., lo:hi] if k in ("ADT", "DT", "Trap") else v) for k, v in x.items()}
        y, fin = sequence(xi, tuple(s[i:i + 1] for s in states), f)
        outs.append(y)
        finals.append(fin)
    return (jnp.concatenate(outs, axis=1),
            *(jnp.concatenate([fin[j] for fin in finals]) for j in range(4)))


def case_outputs(x, kind, cu, f):
    """The case's outputs by name."""
    if kind == "mamba3_siso_step":                                      # add the seqlen axis
        x = {k: (v[:, None] if k in ("Q", "K", "V", "Z", "Angles") else
                 v[..., None] if k in ("ADT", "DT", "Trap") else v) for k, v in x.items()}
        res = mamba3(x, None, f)
        return dict(zip(OUTS, (res[0][:, 0],) + res[1:]))
    if kind == "mamba3_siso":
        return dict(zip(OUTS, mamba3(x, cu, f)))
    primals = {k: v for k, v in x.items() if k not in COTANGENTS}     # every float input
    res, pullback = jax.vjp(lambda p: mamba3(p, cu, f), primals)
    grads = pullback(tuple(x[g] for g in COTANGENTS))[0]
    return dict(zip(OUTS, res), **{"d" + k: v for k, v in grads.items()})


@partial(jax.jit, static_argnames=("kind", "cu", "flags"))
def compute(x, kind, cu, flags):
    """One case's outputs, compiled as one XLA computation (``cu``, ``flags``: static)."""
    return case_outputs(x, kind, cu, dict(flags))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def run(vectors_dir, results_dir, dtype="float64", broken=None, cases=None, quiet=False,
        chunked=False):
    """Compute every Mamba-3 case of the vectors; returns ``{name: seconds}``."""
    if broken is not None and broken not in BROKEN:
        raise ValueError(f"unknown broken variant {broken!r}; known: {sorted(BROKEN)}")
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
        flags = (("chunk", int(attrs.get("chunk_size", 16))), ("chunked", chunked),
                 ("no_sigmoid", broken == "no-sigmoid"), ("tile", broken == "tile-heads"),
                 ("wrap", broken != "no-wrap"))
        t0 = time.perf_counter()
        out = compute(x, kind, None if cu is None else tuple(int(c) for c in cu), flags)
        arrays = {k: np.asarray(out[k]) for k in case["outputs"]}     # waits for the device
        times[case["name"]] = time.perf_counter() - t0
        if "set_id" in manifest:       # the vectors these results were computed from
            arrays["_set_id"] = np.array(manifest["set_id"])
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"), arrays)
        quiet or print(f"{case['name']:26s} {times[case['name']]:8.3f} s")
    print(f"{len(times)} cases in {sum(times.values()):.2f} s ({dtype}, "
          f"{'chunked' if chunked else 'recurrence'}, {jax.default_backend()}"
          f"{', broken: ' + broken if broken else ''})")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors_dir")
    ap.add_argument("results_dir")
    ap.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    ap.add_argument("--chunked", action="store_true", help="the chunked form (docs/mamba3.md)")
    ap.add_argument("--broken", choices=sorted(BROKEN), default=None,
                    help="flip one convention: " + "; ".join(f"{k}: {v}" for k, v in
                                                            BROKEN.items()))
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    a = ap.parse_args(argv)
    try:
        run(a.vectors_dir, a.results_dir, a.dtype, a.broken, a.cases, chunked=a.chunked)
    except (ValueError, OSError) as e:                              # unusable vectors: one line
        print(f"jax_port_mamba3: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
