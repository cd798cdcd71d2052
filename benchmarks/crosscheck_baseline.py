"""How accurate are correct SSM algorithms in reduced precision, relative to the naive step loop?
The measurements behind the cross-check kit's baseline rule (docs/crosscheck.md, "Baseline mode").

    python benchmarks/crosscheck_baseline.py [--dtype float32|float16|bfloat16] [--markdown]

For every ``ssm_scan`` case (and the VJP and kernel cases) of the vectors, written for the dtype:
the error ``max_i |x_i − y_i|`` of each algorithm run in that dtype (every operation rounded, as
``ssmref.crosscheck.naive_outputs`` does; float16 / bfloat16 products accumulate in float32),
divided by ``E_naive``, the naive step loop's.  Then each algorithm's ``err_over_tol`` in
baseline mode under the old rule (``k E_naive + atol s``) and the new one
(``k max(E_naive, E_log_depth) + atol s``), ``k = 4``.  Algorithms:

- ``log-depth``: the checker's second naive form (Blelloch's odd/even associative scan);
- ``hillis-steele``: the other associative scan (``log2 T`` rounds of ``s_t ← s_{t−d} ∘ s_t``);
- ``chunked``: chunks of ``sqrt(T)`` steps from a zero state, carries chunk to chunk with ``A^L``;
- ``fft``: the kernel ``C A^k B`` by doubling, an FFT convolution (scipy.fft in float32; float32
  only), plus the ``h0`` term;
- ``torch``: ``examples/torch_port.py`` (float32 only; chunked above T = 256);
- ``jax``: ``jax.lax.associative_scan`` of the affine maps (float32 only), and ``jax.grad`` of it
  for the VJP cases;
- ``old-state``: the wrong convention ``y_t = C h_{t−1} + D u_t`` (the step loop, rounded).
"""

import argparse
import importlib.util
import math
import os
import sys
import tempfile

import numpy as onp
import scipy.fft

from ssmref import crosscheck as X
from ssmref.crosscheck.precision import rounder, tolerance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cast(x, names, R, work):
    return [R(onp.asarray(x[k], dtype=work)) for k in names]


def _readout(H, C, D, u, R):
    return R(R(H @ C.T) + R(u @ D.T))


def chunked(x, R, work):
    A, B, C, D, u, h0 = _cast(x, ("A", "B", "C", "D", "u", "h0"), R, work)
    b, T, n = u.shape[0], u.shape[1], A.shape[0]
    L = math.isqrt(T - 1) + 1
    nc = -(-T // L)
    Bu = onp.concatenate([R(u @ B.T), onp.zeros((b, nc * L - T, n), work)], axis=1)
    V = Bu.reshape(b, nc, L, n)
    h, local = onp.zeros((b, nc, n), work), []
    for j in range(L):                                    # every chunk from a zero state
        h = R(R(h @ A.T) + V[:, :, j])
        local.append(h)
    local = onp.stack(local, axis=2)                      # (b, nc, L, n)
    P = [A]
    for _ in range(L - 1):
        P.append(R(A @ P[-1]))
    P = onp.stack(P)                                      # (L, n, n): A^{j+1}
    starts, c = [], h0
    for k in range(nc):                                   # carries, chunk to chunk
        starts.append(c)
        c = R(local[:, k, -1] + R(c @ P[-1].T))
    H = R(local + R(onp.einsum("bkm,jnm->bkjn", onp.stack(starts, axis=1), P)))
    H = H.reshape(b, nc * L, n)[:, :T]
    return {"y": _readout(H, C, D, u, R), "h_last": H[:, -1]}


def hillis_steele(x, R, work):
    A, B, C, D, u, h0 = _cast(x, ("A", "B", "C", "D", "u", "h0"), R, work)
    T, n = u.shape[1], A.shape[0]
    v = onp.moveaxis(R(u @ B.T), 1, 0).copy()
    v[0] = R(v[0] + R(h0 @ A.T))
    M, d = onp.broadcast_to(A, (T, n, n)).copy(), 1
    while d < T:                                          # s_t <- s_{t-d} . s_t for t >= d
        M2, v2 = M[d:], v[d:]
        newM = R(M2 @ M[:T - d])
        newv = R(R(v[:T - d] @ onp.swapaxes(M2, -1, -2)) + v2)
        M = onp.concatenate([M[:d], newM])
        v = onp.concatenate([v[:d], newv])
        d *= 2
    H = onp.moveaxis(v, 0, 1)
    return {"y": _readout(H, C, D, u, R), "h_last": H[:, -1]}


def _powers_times(A, X0, length, R):
    S, power = X0[None], A
    while S.shape[0] < length:
        S = onp.concatenate([S, R(onp.einsum("ij,ljk->lik", power, S))], axis=0)
        power = R(power @ power)
    return S[:length]


def fft(x, R, work):
    A, B, C, D, u, h0 = _cast(x, ("A", "B", "C", "D", "u", "h0"), R, work)
    T = u.shape[1]
    AkB = _powers_times(A, B, T, R)                                  # (T, n, m)
    K = R(onp.einsum("pn,lnm->lpm", C, AkB))
    N = 1 << (2 * T - 1).bit_length()
    zf = R(onp.einsum("fpm,bfm->bfp", R(scipy.fft.rfft(K, n=N, axis=0)),
                      R(scipy.fft.rfft(u, n=N, axis=1))))
    y = R(R(scipy.fft.irfft(zf, n=N, axis=1))[:, :T] + R(u @ D.T))
    CAt = onp.transpose(_powers_times(A.T, R(A.T @ C.T), T, R), (0, 2, 1))   # C A^{t+1}
    y = R(y + R(onp.einsum("tpn,bn->btp", CAt, h0)))
    AT = _powers_times(A, onp.eye(A.shape[0], dtype=work), T + 1, R)[T]
    h_last = R(R(onp.einsum("knm,bkm->bn", AkB, u[:, ::-1])) + R(h0 @ AT.T))
    return {"y": y, "h_last": h_last}


def old_state(x, R, work):
    A, B, C, D, u, h = _cast(x, ("A", "B", "C", "D", "u", "h0"), R, work)
    ys = []
    for t in range(u.shape[1]):
        ys.append(R(R(h @ C.T) + R(u[:, t] @ D.T)))      # reads h_{t-1}
        h = R(R(h @ A.T) + R(u[:, t] @ B.T))
    return {"y": onp.stack(ys, axis=1), "h_last": h}


def _torch_port():
    spec = importlib.util.spec_from_file_location("torch_port",
                                                  os.path.join(ROOT, "examples", "torch_port.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_algorithm(kind):
    try:
        port = _torch_port()
        import torch
    except ImportError:
        return None

    def run(x, R, work):
        t = port.to_torch(x, torch.float32, torch.device("cpu"))
        fn = port.case_ssm_scan if kind == "ssm_scan" else port.case_ssm_scan_vjp
        return {k: v.detach().numpy() for k, v in fn(t, {}, frozenset()).items()}
    return run


def jax_algorithm(kind):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def scan(A, B, C, D, u, h0):
        T, n = u.shape[1], A.shape[0]
        v = jnp.einsum("btm,nm->tbn", u, B)
        v = v.at[0].add(h0 @ A.T)

        def combine(a, b):
            (M1, v1), (M2, v2) = a, b
            return M2 @ M1, jnp.einsum("tbn,tmn->tbm", v1, M2) + v2
        _, H = jax.lax.associative_scan(combine, (jnp.broadcast_to(A, (T, n, n)), v))
        H = jnp.moveaxis(H, 0, 1)
        return H @ C.T + u @ D.T, H[:, -1]

    def run(x, R, work):
        names = ("A", "B", "C", "D", "u", "h0")
        args = [jnp.asarray(x[k], jnp.float32) for k in names]
        if kind == "ssm_scan":
            y, h = scan(*args)
            return {"y": onp.asarray(y), "h_last": onp.asarray(h)}
        gy, gh = jnp.asarray(x["gy"], jnp.float32), jnp.asarray(x["gh"], jnp.float32)

        def total(*a):
            y, h = scan(*a)
            return jnp.sum(gy * y) + jnp.sum(gh * h)
        (y, h), grads = scan(*args), jax.grad(total, argnums=tuple(range(6)))(*args)
        out = {"d" + k: onp.asarray(g) for k, g in zip(names, grads)}
        return dict(out, y=onp.asarray(y), h_last=onp.asarray(h))
    return run


def algorithms(kind, dtype):
    """``name -> f(inputs, R, work) -> outputs`` for the kind; float32-only ones in float32."""
    if kind == "ssm_kernel":
        return {"log-depth": lambda x, R, w: X.naive_outputs(kind, x, {"length": 1000}, dtype,
                                                                form="log_depth")}
    algs = {"log-depth": lambda x, R, w: X.naive_outputs(kind, x, {}, dtype, form="log_depth")}
    if kind == "ssm_scan":
        algs.update({"hillis-steele": hillis_steele, "chunked": chunked})
        if dtype == "float32":
            algs["fft"] = fft
    if dtype == "float32":
        for name, make in (("torch", torch_algorithm), ("jax", jax_algorithm)):
            f = make(kind)
            if f is not None:
                algs[name] = f
    if kind == "ssm_scan":
        algs["old-state"] = old_state
    return algs


def measure(dtype, out_dir, k=X.DEFAULT_K):
    """Rows ``(case, output, algorithm, err/E_naive, err/E_base, err_over_tol old, new)``."""
    names = [n for n, c in X.CASES.items() if c.kind in ("ssm_scan", "ssm_scan_vjp", "ssm_kernel")]
    X.write_vectors(out_dir, dtype=dtype, cases=names)
    work, R = rounder(dtype)
    rows = []
    for name, case in X.load_vectors(out_dir)["cases"].items():
        x, expected, attrs, kind = case["inputs"], case["outputs"], case["attrs"], case["kind"]
        seq = X.naive_outputs(kind, x, attrs, dtype)
        ld = X.naive_outputs(kind, x, attrs, dtype, form="log_depth")
        for alg, f in algorithms(kind, dtype).items():
            with onp.errstate(all="ignore"):
                out = f(x, R, work)
            for o, y in expected.items():
                s = float(onp.max(onp.abs(y)))
                E = float(onp.max(onp.abs(seq[o] - y)))
                E_base = max(E, float(onp.max(onp.abs(ld[o] - y))))
                err = float(onp.max(onp.abs(onp.asarray(out[o], onp.float64) - y)))
                _, a = tolerance(dtype, X.output_class(kind, o), 1)
                rows.append((name, o, alg, err / E, err / E_base, err / (k * E + a * s),
                             err / (k * E_base + a * s), err / s))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(a.dtype, tmp)
    print(f"{a.dtype}: err / E_naive, err / E_base, err_over_tol (old rule -> new rule), max_rel")
    for r in rows:
        print(f"{r[0]:20s} {r[1]:7s} {r[2]:14s} {r[3]:7.1f} {r[4]:6.2f}   {r[5]:7.3f} -> "
              f"{r[6]:7.3f}   {r[7]:.1e}")


if __name__ == "__main__":
    sys.exit(main())
