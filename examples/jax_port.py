"""An independent JAX port of the SSM kinds of the ssmref specification, checked with the kit.

S4, S4D and S5 live in JAX.  This client reimplements, in plain JAX and from the documents only
(docs/ssm.md, docs/structured.md, docs/crosscheck.md), every SSM kind of the cross-check vectors:
the dense scan, step, kernel, gradients and discretization, and the structured kinds (the complex
diagonal discretization, scan, kernel and their gradients, S4D's per-channel kernel, S5's
bidirectional layer, S4's DPLR discretization, truncated C̃ and Cauchy kernel).  It never imports
ssmref: it reads the vectors with numpy and json, computes in JAX and writes the results; the
cases of other kinds (policy, maml, adapter: ``examples/torch_port.py``) are skipped.

    python -m ssmref vectors /tmp/vec32 --dtype float32              # 1. reference vectors
    python examples/jax_port.py /tmp/vec32 /tmp/res32 --dtype float32  # 2. this port's results
    python -m ssmref check /tmp/vec32 /tmp/res32 --skip-missing      # 3. compare: exit 0 = agree

Conventions (docs/structured.md): outputs read the NEW state; ``output="2re"`` means
``y = 2·Re(C x)`` over conjugate-pair halves; ``dt`` is one step per state (per channel for S4D);
``Λ̄^k = exp(k ΔΛ)`` (zoh) or ``exp(k·2 atanh(ΔΛ/2))`` (bilinear) from the exponent, never powers
of a rounded ``Λ̄``: the complex scans run in chunks (as GPU kernels do) whose decays come from the
exponent; ``jax.grad`` of a real loss w.r.t. a complex ``z`` is ``∂L/∂Re z − i ∂L/∂Im z``, ssmref's
convention (PyTorch's ``.grad`` is its conjugate).  ``--broken VARIANT`` flips one convention
(:data:`BROKEN`); the check must then fail exactly the cases that convention touches.

Shapes in comments: b batch, T time, n state, m input, p output, L lags, c chunk, k chunk index.
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

DTYPES = {"float64": (jnp.float64, jnp.complex128), "float32": (jnp.float32, jnp.complex64)}
CHUNK = 64                                                     # steps per chunk of the complex scans
BROKEN = {
    "re-instead-of-2re": "y = Re(C x) where the vectors say 2·Re(C x) (conjugate-pair halves)",
    "bilinear-instead-of-zoh": "the bilinear map wherever the vectors say zoh",
    "conj-dropped-in-Ct": "annotated-s4's kernel_DPLR conjugates its C argument; C̃ passed as is",
    "old-state": "y_t reads the old state x_{t-1} (scans, steps and their gradients)",
    "kernel-lag-shift": "K[k] = C A^{k-1} B, K[0] = 0: the kernel in the old-state indexing",
    "torch-grad": "gradients w.r.t. complex parameters conjugated (PyTorch's .grad)",
    "expm1-dropped": "B̄ = (exp(ΔΛ) − 1)/Λ B (S4D's, S5's form): cancels for tiny ΔΛ, NaN at Λ = 0",
}


# ---------------------------------------------------------------------------------------------
# Reading vectors, writing results
# ---------------------------------------------------------------------------------------------

def load_case(vectors_dir, case):
    """The case's inputs as numpy arrays (its expected outputs are not read)."""
    with np.load(os.path.join(vectors_dir, case["file"]), allow_pickle=False) as z:
        return {k: z[k] for k in case["inputs"]}


def to_jax(arrays, dtype):
    """Real arrays -> the real dtype, complex arrays -> its complex counterpart."""
    real, cplx = DTYPES[dtype]
    return {k: jnp.asarray(a, dtype=cplx if a.dtype.kind == "c" else real)
            for k, a in arrays.items()}


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


def conventions(attrs, broken):
    """The conventions a case asks for, with the one ``broken`` flips."""
    method = attrs.get("method")
    if broken == "bilinear-instead-of-zoh" and method == "zoh":
        method = "bilinear"
    two = attrs.get("output") == "2re" and broken != "re-instead-of-2re"
    return {"method": method, "scale": 2.0 if two else 1.0, "old_state": broken == "old-state",
            "lag_shift": broken == "kernel-lag-shift", "conj_ct": broken != "conj-dropped-in-Ct",
            "grad_conj": broken == "torch-grad",
            "expm1": method != "zoh" or broken != "expm1-dropped"}      # zoh's B̄ only


def lag_shifted(K, axis, on):
    """``K[k] -> K[k-1]`` along ``axis`` with zeros at lag 0 (the broken indexing) if ``on``."""
    if not on:
        return K
    K = jnp.moveaxis(K, axis, 0)
    return jnp.moveaxis(jnp.concatenate([jnp.zeros_like(K[:1]), K[:-1]]), 0, axis)


# ---------------------------------------------------------------------------------------------
# The dense SSM:  h_t = A h_{t-1} + B u_t,  y_t = C h_t + D u_t  (the NEW state)
# ---------------------------------------------------------------------------------------------

def ssm_scan(A, B, C, D, u, h0, old_state=False):
    """``(y: (b, T, p), h_last: (b, n))`` by ``lax.scan`` over time."""
    def step(h, bu):
        h = h @ A.T + bu                                   # (b, n)
        return h, h
    _, H = lax.scan(step, h0, jnp.einsum("btm,nm->tbn", u, B))    # (T, b, n)
    H = jnp.moveaxis(H, 0, 1)                                       # (b, T, n)
    read = jnp.concatenate([h0[:, None], H[:, :-1]], axis=1) if old_state else H
    return read @ C.T + u @ D.T, H[:, -1]


def ssm_scan_vjp(args, gy, gh, old_state):
    def total(a):
        y, h_last = ssm_scan(*(a[k] for k in ("A", "B", "C", "D", "u", "h0")), old_state)
        return jnp.sum(gy * y) + jnp.sum(gh * h_last), (y, h_last)
    grads, (y, h_last) = jax.grad(total, has_aux=True)(args)
    return dict({"d" + k: g for k, g in grads.items()}, y=y, h_last=h_last)


def ssm_kernel(A, B, C, length, lag_shift):
    """``K: (L, p, m)``, ``K[k] = C A^k B`` by running products."""
    _, K = lax.scan(lambda X, _: (A @ X, C @ X), B, None, length=length)
    return lag_shifted(K, 0, lag_shift)


def discretize(A, B, dt, method):
    """``(Ad, Bd)``: ZOH by ``expm(dt [[A, B], [0, 0]])``, or bilinear (S4)."""
    n, m = B.shape
    if method == "zoh":
        M = jnp.zeros((n + m, n + m), A.dtype).at[:n, :n].set(A).at[:n, n:].set(B)
        E = jax.scipy.linalg.expm(dt * M)                           # [[Ad, Bd], [0, I]]
        return E[:n, :n], E[:n, n:]
    eye = jnp.eye(n, dtype=A.dtype)
    lhs = eye - dt / 2 * A
    return jnp.linalg.solve(lhs, eye + dt / 2 * A), jnp.linalg.solve(lhs, dt * B)


def case_ssm_scan(x, a, f):
    y, h_last = ssm_scan(x["A"], x["B"], x["C"], x["D"], x["u"], x["h0"], f["old_state"])
    return {"y": y, "h_last": h_last}


def case_ssm_step(x, a, f):
    h_next = x["h"] @ x["A"].T + x["u"] @ x["B"].T
    read = x["h"] if f["old_state"] else h_next
    return {"h_next": h_next, "y": read @ x["C"].T + x["u"] @ x["D"].T}


def case_ssm_kernel(x, a, f):
    return {"K": ssm_kernel(x["A"], x["B"], x["C"], int(a["length"]), f["lag_shift"])}


def case_ssm_scan_vjp(x, a, f):
    args = {k: x[k] for k in ("A", "B", "C", "D", "u", "h0")}
    return ssm_scan_vjp(args, x["gy"], x["gh"], f["old_state"])


def case_discretize(x, a, f):
    Ad, Bd = discretize(x["A"], x["B"], x["dt"], f["method"])
    return {"Ad": Ad, "Bd": Bd}


# ---------------------------------------------------------------------------------------------
# The complex diagonal SSM (S4D, S5):  x_t = Λ̄ ⊙ x_{t-1} + B̄ u_t,  y_t = s Re(C x_t) + D u_t
# ---------------------------------------------------------------------------------------------

def diag_discretize(Lam, B, dt, method, expm1=True):
    """``(Λ̄, w, B̄)`` per state, with ``Λ̄^k = exp(k w)``:

        zoh:       w = ΔΛ,              Λ̄ = exp(w),                B̄ = expm1(ΔΛ)/Λ ⊙ B  (Δ B at Λ = 0)
        bilinear:  w = 2 atanh(ΔΛ/2),   Λ̄ = (1 + ΔΛ/2)/(1 − ΔΛ/2),  B̄ = Δ/(1 − ΔΛ/2) ⊙ B
    """
    z = dt * Lam                                                    # (n,): dt scalar or per state
    if method == "zoh":
        if expm1:
            zero = Lam == 0
            b = jnp.where(zero, dt, jnp.expm1(z) / jnp.where(zero, 1.0, Lam))
        else:
            b = (jnp.exp(z) - 1) / Lam                              # the broken form
        return jnp.exp(z), z, b[:, None] * B
    q = 1 - z / 2
    return (1 + z / 2) / q, 2 * jnp.arctanh(z / 2), (dt / q)[:, None] * B


def diag_states(w, Bu, h0, chunk=CHUNK):
    """States ``X: (b, T, n)`` of ``x_t = exp(w) ⊙ x_{t-1} + Bu_t`` from ``h0: (b, n)``.

    In chunks of ``c`` steps, as GPU kernels do (Mamba-2's SSD): within a chunk the decays
    ``Λ̄^{j-i} = exp((j − i) w)`` come from the exponent, for all chunks at once; the chunks' end
    states are then carried by ``exp(c w)``.  A rounded ``Λ̄`` is never raised to a power.
    """
    b, T, n = Bu.shape
    c = min(chunk, T)
    nc = -(-T // c)                                                 # number of chunks
    V = jnp.pad(Bu, ((0, 0), (0, nc * c - T), (0, 0))).reshape(b, nc, c, n)
    j = jnp.arange(c)
    lag = j[:, None] - j[None, :]                                   # (c, c): j − i
    decay = jnp.where((lag >= 0)[..., None],
                      jnp.exp(jnp.maximum(lag, 0)[..., None].astype(w.real.dtype) * w), 0)
    local = jnp.einsum("jin,bkin->bkjn", decay, V)                  # (b, nc, c, n) from zero
    into = jnp.exp((j + 1)[:, None].astype(w.real.dtype) * w)       # (c, n): Λ̄^{j+1}
    step = jnp.exp(c * w)                                           # Λ̄^c
    _, starts = lax.scan(lambda s, last: (step * s + last, s), h0,
                         jnp.moveaxis(local[:, :, -1], 1, 0))       # (nc, b, n): x before chunk
    X = local + jnp.moveaxis(starts, 0, 1)[:, :, None, :] * into
    return X.reshape(b, nc * c, n)[:, :T]


def diag_scan(p, u, h0, f):
    """``(y: (b, T, p), x_last: (b, n))``; ``p``: ``Lambda, B, C, D, dt``."""
    _, w, Bbar = diag_discretize(p["Lambda"], p["B"], p["dt"], f["method"], f["expm1"])
    X = diag_states(w, jnp.einsum("btm,nm->btn", u.astype(Bbar.dtype), Bbar), h0)
    read = jnp.concatenate([h0[:, None], X[:, :-1]], axis=1) if f["old_state"] else X
    return f["scale"] * jnp.real(read @ p["C"].T) + u @ p["D"].T, X[:, -1]


def diag_scan_vjp(p, u, h0, gy, gx, f):
    """The scan's outputs and the gradients of ``Σ gy·y + Re Σ conj(gx)·x_last``."""
    def total(args):
        y, x_last = diag_scan(args["p"], args["u"], args["h0"], f)
        return jnp.sum(gy * y) + jnp.sum(jnp.real(jnp.conj(gx) * x_last)), (y, x_last)
    g, (y, x_last) = jax.grad(total, has_aux=True)({"p": p, "u": u, "h0": h0})
    out = dict({"d" + k: v for k, v in g["p"].items()}, du=g["u"], dh0=g["h0"], y=y,
               x_last=x_last)
    if f["grad_conj"]:                                              # PyTorch's .grad
        out = {k: (jnp.conj(v) if k.startswith("d") else v) for k, v in out.items()}
    return out


def diag_kernel(p, length, f):
    """``K: (L, p, m)``, ``K[k] = s Re(C diag(exp(k w)) B̄)``."""
    _, w, Bbar = diag_discretize(p["Lambda"], p["B"], p["dt"], f["method"], f["expm1"])
    W = jnp.exp(jnp.arange(length, dtype=w.real.dtype)[:, None] * w)   # (L, n): Λ̄^k
    K = f["scale"] * jnp.real(jnp.einsum("pn,ln,nm->lpm", p["C"], W, Bbar))
    return lag_shifted(K, 0, f["lag_shift"])


def diag_kernel_vjp(p, gK, length, f):
    """The kernel and the gradients of ``Σ gK·K``."""
    def total(q):
        K = diag_kernel(q, length, f)
        return jnp.sum(gK * K), K
    g, K = jax.grad(total, has_aux=True)(p)
    conj = jnp.conj if f["grad_conj"] else (lambda v: v)
    return dict({"d" + k: conj(v) for k, v in g.items()}, K=K)


def params_of(x, *names):
    return {k: x[k] for k in names}


def case_diag_discretize(x, a, f):
    lam_bar, _, B_bar = diag_discretize(x["Lambda"], x["B"], x["dt"], f["method"], f["expm1"])
    return {"Lambda_bar": lam_bar, "B_bar": B_bar}


def case_diag_scan(x, a, f):
    y, x_last = diag_scan(params_of(x, "Lambda", "B", "C", "D", "dt"), x["u"], x["h0"], f)
    return {"y": y, "x_last": x_last}


def case_diag_scan_vjp(x, a, f):
    return diag_scan_vjp(params_of(x, "Lambda", "B", "C", "D", "dt"), x["u"], x["h0"], x["gy"],
                         x["gx"], f)


def case_diag_kernel(x, a, f):
    return {"K": diag_kernel(params_of(x, "Lambda", "B", "C", "dt"), int(a["length"]), f)}


def case_diag_kernel_vjp(x, a, f):
    return diag_kernel_vjp(params_of(x, "Lambda", "B", "C", "dt"), x["gK"], int(a["length"]), f)


def case_s4d_kernel(x, a, f):
    """S4D: ``K[c, h, k] = s Re(Σ_i C[c,h,i] B̄[h,i] Λ̄[h,i]^k)``, one step ``Δ_h`` per channel."""
    H, N = x["Lambda"].shape
    dt = jnp.repeat(x["dt"], N)                                     # (HN,): channel h's step
    _, w, Bbar = diag_discretize(x["Lambda"].reshape(-1), x["B"].reshape(-1, 1), dt,
                                 f["method"], f["expm1"])
    k = jnp.arange(int(a["length"]), dtype=w.real.dtype)
    W = jnp.exp(k[:, None] * w).reshape(-1, H, N)                   # (L, H, N)
    K = f["scale"] * jnp.real(jnp.einsum("chi,hi,lhi->chl", x["C"], Bbar.reshape(H, N), W))
    return {"K": lag_shifted(K, 2, f["lag_shift"])}


def case_bidirectional(x, a, f):
    """S5's bidirectional layer: shared Λ̄, B̄; ``C`` forward, ``Cb`` backward; ``D u`` once."""
    _, w, Bbar = diag_discretize(x["Lambda"], x["B"], x["dt"], f["method"], f["expm1"])
    Bu = jnp.einsum("btm,nm->btn", x["u"].astype(Bbar.dtype), Bbar)
    h0 = jnp.zeros((Bu.shape[0], Bu.shape[2]), Bu.dtype)            # (b, n): no initial state
    X_f = diag_states(w, Bu, h0)
    X_b = diag_states(w, Bu[:, ::-1], h0)[:, ::-1]                  # x^b_t from t = T-1 down
    if f["old_state"]:                                              # x^f_{t-1} and x^b_{t+1}
        X_f = jnp.concatenate([h0[:, None], X_f[:, :-1]], axis=1)
        X_b = jnp.concatenate([X_b[:, 1:], h0[:, None]], axis=1)
    y = f["scale"] * (jnp.real(X_f @ x["C"].T) + jnp.real(X_b @ x["Cb"].T))
    return {"y": y + x["u"] @ x["D"].T}


# ---------------------------------------------------------------------------------------------
# S4's DPLR form:  A = diag(Λ) − P Q^*,  bilinear,  C̃ = C (I − Ā^L),  the Cauchy kernel
# ---------------------------------------------------------------------------------------------

def dplr_discretize(x):
    """``(Ā, B̄)`` by dense solves with ``I − Δ/2 A``."""
    A = jnp.diag(x["Lambda"]) - x["P"] @ jnp.conj(x["Q"]).T
    eye = jnp.eye(A.shape[0], dtype=A.dtype)
    lhs = eye - x["dt"] / 2 * A
    return jnp.linalg.solve(lhs, eye + x["dt"] / 2 * A), jnp.linalg.solve(lhs, x["dt"] * x["B"])


def kernel_dplr(Lam, P, Q, B, C, step, L):
    """annotated-s4's ``kernel_DPLR`` (multi-input, multi-output), whose ``C`` argument is the
    conjugate of S4's ``C̃``: ``K̂(ω) = c(ω)[k00 − k01 (1 + k11)^{-1} k10]`` with Cauchy sums over
    ``C.conj()``, ``Q.conj()``, multiplied through by ``(1 + ω)/2`` (finite at ``ω = −1``), and
    ``K = Re(ifft(K̂))``.  ``1 ∓ ω_j`` from sines and cosines, without cancellation."""
    half = jnp.pi * jnp.arange(L, dtype=step.dtype) / L
    s, c, s2 = jnp.sin(half), jnp.cos(half), jnp.sin(2 * half)
    om, op = 2 * s * s + 1j * s2, 2 * c * c - 1j * s2                 # 1 − ω_j, 1 + ω_j
    r = 2 * step / (2 * om[:, None] - step * Lam[None, :] * op[:, None])    # (L, N)
    Cc, Qc = jnp.conj(C), jnp.conj(Q)
    k00 = jnp.einsum("pn,ln,nm->lpm", Cc, r, B)
    k01 = jnp.einsum("pn,ln,nr->lpr", Cc, r, P)
    k10 = jnp.einsum("nr,ln,nm->lrm", Qc, r, B)
    k11 = jnp.einsum("nr,ln,ns->lrs", Qc, r, P)
    M = 2 * jnp.eye(P.shape[1], dtype=k11.dtype) + op[:, None, None] * k11
    corr = jnp.einsum("lpr,lrm->lpm", k01, jnp.linalg.solve(M, k10))
    return jnp.real(jnp.fft.ifft(k00 - op[:, None, None] * corr, axis=0))   # (L, p, m)


def case_dplr_discretize(x, a, f):
    A_bar, B_bar = dplr_discretize(x)
    return {"A_bar": A_bar, "B_bar": B_bar}


def case_dplr_truncate(x, a, f):
    A_bar, _ = dplr_discretize(x)
    return {"Ct": x["C"] - x["C"] @ jnp.linalg.matrix_power(A_bar, int(a["length"]))}


def case_dplr_kernel(x, a, f):
    C_arg = jnp.conj(x["Ct"]) if f["conj_ct"] else x["Ct"]          # annotated-s4's C = conj(C̃)
    K = kernel_dplr(x["Lambda"], x["P"], x["Q"], x["B"], C_arg, x["dt"], int(a["length"]))
    return {"K": lag_shifted(K, 0, f["lag_shift"])}


_DIAG = ("method", "scale", "expm1")
#: kind -> (its function, the conventions it involves: a broken variant touches exactly the kinds
#: that list the convention it flips, and the cases whose attrs ask for it)
KINDS = {"ssm_scan": (case_ssm_scan, ("old_state",)),
         "ssm_step": (case_ssm_step, ("old_state",)),
         "ssm_kernel": (case_ssm_kernel, ("lag_shift",)),
         "ssm_scan_vjp": (case_ssm_scan_vjp, ("old_state",)),
         "discretize": (case_discretize, ("method",)),
         "diag_discretize": (case_diag_discretize, ("method", "expm1")),
         "diag_scan": (case_diag_scan, _DIAG + ("old_state",)),
         "diag_scan_vjp": (case_diag_scan_vjp, _DIAG + ("old_state", "grad_conj")),
         "diag_kernel": (case_diag_kernel, _DIAG + ("lag_shift",)),
         "diag_kernel_vjp": (case_diag_kernel_vjp, _DIAG + ("lag_shift", "grad_conj")),
         "s4d_kernel": (case_s4d_kernel, _DIAG + ("lag_shift",)),
         "bidirectional": (case_bidirectional, _DIAG + ("old_state",)),
         "dplr_discretize": (case_dplr_discretize, ()),
         "dplr_truncate": (case_dplr_truncate, ()),
         "dplr_kernel": (case_dplr_kernel, ("conj_ct", "lag_shift"))}


@partial(jax.jit, static_argnames=("kind", "attrs", "flags"))
def compute(x, kind, attrs, flags):
    """One case's outputs, compiled as one XLA computation (``attrs``: JSON text, ``flags``:
    the kind's conventions as sorted pairs; both static)."""
    return KINDS[kind][0](x, json.loads(attrs), dict(flags))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def run(vectors_dir, results_dir, dtype="float64", broken=None, cases=None, quiet=False):
    """Compute every ported case; returns ``{name: seconds}``."""
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
        x = to_jax(load_case(vectors_dir, case), dtype)
        f = conventions(attrs, broken)
        t0 = time.perf_counter()
        out = compute(x, kind, json.dumps(attrs, sort_keys=True),
                      tuple((k, f[k]) for k in KINDS[kind][1]))
        arrays = {k: np.asarray(out[k]) for k in case["outputs"]}     # waits for the device
        times[case["name"]] = time.perf_counter() - t0
        if "set_id" in manifest:       # the vectors these results were computed from
            arrays["_set_id"] = np.array(manifest["set_id"])
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"), arrays)
        quiet or print(f"{case['name']:26s} {times[case['name']]:8.3f} s")
    print(f"{len(times)} cases in {sum(times.values()):.2f} s ({dtype}, "
          f"{jax.default_backend()}{', broken: ' + broken if broken else ''})")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors_dir")
    ap.add_argument("results_dir")
    ap.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    ap.add_argument("--broken", choices=sorted(BROKEN), default=None,
                    help="flip one convention: " + "; ".join(f"{k}: {v}" for k, v in
                                                            BROKEN.items()))
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    a = ap.parse_args(argv)
    try:
        run(a.vectors_dir, a.results_dir, a.dtype, a.broken, a.cases)
    except (ValueError, OSError) as e:                              # unusable vectors: one line
        print(f"jax_port: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
