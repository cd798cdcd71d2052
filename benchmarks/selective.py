"""Forward + gradient time of ssmref.selective against the same computation written naively in
PyTorch float64, as ratios in one process.

    PYTHONPATH=. python benchmarks/selective.py [--repeats 3] [--only scan|ssd] [--small]

Workloads: ``selective_scan`` with b=2, d=64, n=16, L=4096 (varying B, C; D, z,
delta_bias, softplus) and ``ssd`` with b=2, L=4096, h=8, p=32, n=64, g=1, chunk_size=64 (D, z,
dt_bias, softplus, initial_states).  Loss ``sum(W * out)``, gradient w.r.t. every float argument.
Peers (skipped without torch): a Python loop over time (both) and the chunked form (ssd), in torch
float64 with autograd's backward.  Each peer's loss and gradients are checked against ssmref's
(relative 1e-9) before its time counts.  Times are the best of ``--repeats``; the ratio is
"peer time / ssmref time" (above 1: ssmref is faster).  ``--small`` shrinks L to 256 (a smoke run).
Both sides get the same threads, 1 by default (``SSMREF_BENCH_THREADS=2`` for two): NumPy's BLAS
through ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (set before NumPy loads),
torch through ``torch.set_num_threads``.  On a shared 2-core machine multi-threaded BLAS and torch
spin-wait and their times scatter by 10x; one thread each is the stable, like-for-like setting.
"""

import os

THREADS = os.environ.get("SSMREF_BENCH_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, THREADS)

import argparse  # noqa: E402
import time  # noqa: E402

import autograd  # noqa: E402
import autograd.numpy as np  # noqa: E402
import numpy as onp  # noqa: E402

from ssmref.selective import selective_scan, ssd  # noqa: E402

SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
SSD_ARGS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def best_time(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def scan_case(L, rng):
    b, d, n = 2, 64, 16
    return dict(u=rng.standard_normal((b, d, L)), delta=0.5 * rng.standard_normal((b, d, L)) - 1.0,
                A=-rng.uniform(0.5, 4.0, (d, n)), B=rng.standard_normal((b, n, L)),
                C=rng.standard_normal((b, n, L)), D=rng.standard_normal(d), z=rng.standard_normal((b, d, L)),
                delta_bias=0.1 * rng.standard_normal(d)), rng.standard_normal((b, d, L))


def ssd_case(L, rng):
    b, h, p, n, g = 2, 8, 32, 64, 1
    return dict(x=rng.standard_normal((b, L, h, p)), dt=0.5 * rng.standard_normal((b, L, h)) - 2.0,
                A=-rng.uniform(1.0, 16.0, h), B=rng.standard_normal((b, L, g, n)) / 8,
                C=rng.standard_normal((b, L, g, n)) / 8, D=rng.standard_normal(h),
                z=rng.standard_normal((b, L, h, p)), dt_bias=0.1 * rng.standard_normal(h),
                initial_states=rng.standard_normal((b, h, p, n))), rng.standard_normal((b, L, h, p))


def ssmref_job(fun, kw, names, W, **extra):
    def loss(*vals):
        return np.sum(W * fun(**{**kw, **dict(zip(names, vals))}, **extra))
    grad = autograd.value_and_grad(loss, argnum=list(range(len(names))))
    return lambda: grad(*[kw[k] for k in names])


# ---------------------------------------------------------------------------------- torch peers

def torch_scan_loop(torch, F, u, delta, A, B, C, D, z, delta_bias):
    """mamba's selective_scan_ref, float64: a loop over time (varying B, C)."""
    dt = F.softplus(delta + delta_bias[:, None])                    # default threshold 20; inputs stay below
    dA = torch.exp(torch.einsum("bdl,dn->bdln", dt, A))
    dBu = torch.einsum("bdl,bnl,bdl->bdln", dt, B, u)
    x = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    # unbind, not dA[:, :, t]: each indexing's backward would write a zero tensor of the full size
    for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), C.unbind(2)):
        x = dA_t * x + dBu_t
        ys.append(torch.einsum("bdn,bn->bd", x, C_t))
    return (torch.stack(ys, dim=2) + u * D[:, None]) * F.silu(z)


def _ssd_dt(F, dt, dt_bias):
    return F.softplus(dt + dt_bias)                                 # (b, L, h); clamp (0, inf) is inert


def torch_ssd_loop(torch, F, x, dt, A, B, C, D, z, dt_bias, initial_states):
    """The SSD recurrence, float64: a loop over time (g = 1)."""
    dt = _ssd_dt(F, dt, dt_bias)
    s, ys = initial_states, []
    decay = torch.exp(dt * A)[..., None, None]                      # (b, L, h, 1, 1)
    drive = (dt[..., None] * x)[..., None] * B[:, :, :, None, :]   # (b, L, h, p, n)
    for a_t, b_t, C_t in zip(decay.unbind(1), drive.unbind(1), C[:, :, 0].unbind(1)):
        s = a_t * s + b_t
        ys.append(torch.einsum("bhpn,bn->bhp", s, C_t))
    return (torch.stack(ys, dim=1) + D[:, None] * x) * F.silu(z)


def torch_ssd_chunked(torch, F, x, dt, A, B, C, D, z, dt_bias, initial_states, Q=64):
    """SSD by chunks (Dao & Gu, Listing 1), float64, g = 1, L a multiple of Q."""
    b, L, h, p = x.shape
    c = L // Q
    dt = _ssd_dt(F, dt, dt_bias)
    ell = (dt * A).reshape(b, c, Q, h).permute(0, 3, 1, 2)          # (b, h, c, Q)
    xs = (x * dt[..., None]).reshape(b, c, Q, h, p)
    Bc, Cc = B[:, :, 0].reshape(b, c, Q, -1), C[:, :, 0].reshape(b, c, Q, -1)
    mask = torch.tril(torch.ones(Q, Q, dtype=torch.bool))
    below = torch.tril(torch.ones(Q, Q, dtype=torch.bool), -1)     # [m, j]: m > j
    seg = torch.cumsum(ell[..., :, None].expand(*ell.shape, Q).masked_fill(~below, 0), dim=-2)
    Lmat = torch.exp(seg.masked_fill(~mask, -torch.inf))            # (b, h, c, Q, Q)
    y = torch.einsum("bcln,bcsn,bhcls,bcshp->bclhp", Cc, Bc, Lmat, xs)
    cum = torch.cumsum(ell, dim=-1)
    states = torch.einsum("bcsn,bhcs,bcshp->bchpn", Bc, torch.exp(cum[..., -1:] - cum), xs)
    H, prev = initial_states, []
    for k in range(c):
        prev.append(H)
        H = torch.exp(cum[:, :, k, -1])[..., None, None] * H + states[:, k]
    prev = torch.stack(prev, dim=1)                                 # (b, c, h, p, n)
    y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", Cc, prev, torch.exp(cum))
    return (y.reshape(b, L, h, p) + D[:, None] * x) * F.silu(z)


def torch_job(fun, kw, names, W):
    import torch
    import torch.nn.functional as F
    t = {k: torch.tensor(v, requires_grad=True) for k, v in kw.items()}
    tW = torch.tensor(W)

    def run():
        for v in t.values():
            v.grad = None
        loss = (tW * fun(torch, F, **t)).sum()
        loss.backward()
        return float(loss.detach()), [t[k].grad.numpy() for k in names]
    return run


def check_peer(name, peer, ours):
    (loss_p, grads_p), (loss_o, grads_o) = peer, ours
    errs = [abs(loss_p - loss_o) / max(abs(loss_o), 1e-300)]
    errs += [onp.max(onp.abs(gp - go)) / max(onp.max(onp.abs(go)), 1e-300) for gp, go in zip(grads_p, grads_o)]
    if max(errs) > 1e-9:
        raise SystemExit(f"{name}: result differs from ssmref's (max relative error {max(errs):.2e})")
    return max(errs)


def run_workload(title, ours, peers, repeats):
    print(f"\n{title}")
    times, ref = {}, None
    for label, job in ours:
        times[label], result = best_time(job, repeats)
        print(f"  ssmref {label:24s} {times[label]:8.3f} s")
        if ref is None:
            ref = result                                            # the first (default) form
        else:
            check_peer(label, (result[0], list(result[1])), (ref[0], list(ref[1])))
    base = times[ours[0][0]]
    for label, job in peers:
        first = job()
        err = check_peer(label, first, (ref[0], list(ref[1])))
        t, _ = best_time(job, repeats)
        print(f"  torch  {label:24s} {t:8.3f} s   ratio {t / base:6.2f}   (max rel. diff {err:.1e})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["scan", "ssd"])
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args(argv)
    L = 256 if args.small else 4096
    try:
        import torch
        torch.set_num_threads(int(THREADS))
    except ImportError:
        torch = None
        print("torch is not installed: the torch columns are skipped")
    rng = onp.random.default_rng(0)
    if args.only in (None, "scan"):
        kw, W = scan_case(L, rng)
        opts = dict(delta_softplus=True)
        ours = [("recurrence", ssmref_job(selective_scan, kw, SCAN_ARGS, W, **opts)),
                ("parallel", ssmref_job(selective_scan, kw, SCAN_ARGS, W, **opts, method="parallel"))]
        peers = [] if torch is None else [("loop", torch_job(torch_scan_loop, kw, SCAN_ARGS, W))]
        run_workload(f"selective_scan b=2 d=64 n=16 L={L}: forward + gradient", ours, peers, args.repeats)
    if args.only in (None, "ssd"):
        kw, W = ssd_case(L, rng)
        opts = dict(chunk_size=64, dt_softplus=True)
        ours = [("chunked (chunk_size 64)", ssmref_job(ssd, kw, SSD_ARGS, W, **opts)),
                ("chunked (chunk_size 256)", ssmref_job(ssd, kw, SSD_ARGS, W, **{**opts, "chunk_size": 256}))]
        peers = [] if torch is None else [("loop", torch_job(torch_ssd_loop, kw, SSD_ARGS, W)),
                                          ("chunked (chunk_size 64)", torch_job(torch_ssd_chunked, kw, SSD_ARGS, W))]
        run_workload(f"ssd b=2 L={L} h=8 p=32 n=64: forward + gradient", ours, peers, args.repeats)


if __name__ == "__main__":
    main()
