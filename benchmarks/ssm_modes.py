"""Forward + gradient time of the three SSM modes against PyTorch and JAX peers, in one process.

    python benchmarks/ssm_modes.py [--lengths 1024 4096 16384] [--repeats 5] [--threads 1]
                                   [--budget 30] [--no-jax] [--no-torch]

Workload: batch 16, n = 32, m = p = 4, ``ρ(A) = 0.95``, float64, loss ``sum(y²)``, the
value and the gradient w.r.t. ``A, B, C, D`` (``y`` from the zero state, the output reads the new
state).  Implementations:

- ``ssmref scan`` / ``parallel`` / ``convolve``: ``autograd.value_and_grad`` of ``run_ssm``;
- ``torch step loop``: a Python loop of ``h = h Aᵀ + u_t Bᵀ``, ``y_t = h Cᵀ + u_t Dᵀ``, then
  ``backward()`` (eager, float64, CPU);
- ``torch FFT conv``: the kernel ``K_k = C A^k B`` by doubling, ``y = irfft(rfft(K) rfft(u)) + u Dᵀ``
  (ssmref's convolution algorithm), ``backward()``;
- ``jax lax.scan``: ``jax.jit(jax.value_and_grad(...))`` of a ``lax.scan`` over time;
- ``jax assoc. scan``: the same with ``jax.lax.associative_scan`` over the affine maps
  ``(A, B u_t)`` (the generic O(T n³) scan).

Every peer's value and gradient must agree with ``ssmref scan``'s to 1e-8 (normwise relative)
before its time counts; a peer that disagrees stops the script.  That first, untimed call is also
the warm-up (it includes JAX's compilation).  Then ``--repeats`` rounds run every implementation
once each (so that a change of load on a shared machine reaches all of them alike; in a new random
order each round, after a short pause, so that none always runs just after the same peer); the
median and the minimum are reported.  The goals are judged by the median over rounds of the
ratio of two implementations' times in the same round (paired, so the least sensitive to a load
that changes from round to round); the ratio of the minima is printed next to it.  An
implementation whose predicted time for all its runs at a length exceeds ``--budget`` seconds
(extrapolated linearly from the previous length) is skipped there (``—``).

Threads: ``--threads N`` (default 1) is given to every library: ``OPENBLAS_NUM_THREADS`` /
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` are set before NumPy loads, ``torch.set_num_threads(N)``,
and for N = 1 ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``.
"""

import argparse
import os
import statistics
import sys
import time

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _threads_argument(argv):
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# Thread counts are read when NumPy, torch and XLA load, so they are set before any import; and
# the ssmref timed is the one in this checkout (the parent of benchmarks/), not an installed copy.
if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for _name in BLAS_ENV:
        os.environ[_name] = _threads_argument(sys.argv[1:])
    if _threads_argument(sys.argv[1:]) == "1":
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1").strip()

import autograd  # noqa: E402
import autograd.numpy as np  # noqa: E402
import numpy as onp  # noqa: E402

from ssmref import ssm as S  # noqa: E402

BATCH, N, M, P, RHO = 16, 32, 4, 4, 0.95
PAUSE = 0.05        # seconds before each timed call (see main)
NAMES = ("A", "B", "C", "D")
SSMREF = ("ssmref scan", "ssmref parallel", "ssmref convolve")      # the order
TORCH = ("torch step loop", "torch FFT conv")
JAX = ("jax lax.scan", "jax assoc. scan")


def rel_diff(got, want):
    """Normwise relative difference of a ``(value, {name: grad})`` pair."""
    value, grads = got
    worst = abs(value - want[0]) / abs(want[0])
    for k in NAMES:
        g, w = onp.asarray(grads[k]), want[1][k]
        worst = max(worst, onp.max(onp.abs(g - w)) / onp.max(onp.abs(w)))
    return worst


# ---------------------------------------------------------------------------------------------
# The implementations: each returns run() -> (loss value, {name: gradient as NumPy})
# ---------------------------------------------------------------------------------------------

def ssmref_job(mode, params, u):
    loss = lambda p: np.sum(S.run_ssm(p, u, None, mode)[0] ** 2)   # noqa: E731
    return lambda: autograd.value_and_grad(loss)(params)


def torch_jobs(params, u):
    import torch
    tp = {k: torch.tensor(params[k], requires_grad=True) for k in NAMES}
    tu = torch.tensor(u)                                          # (batch, T, m)

    def grads(loss):
        for v in tp.values():
            v.grad = None
        loss.backward()
        return float(loss.detach()), {k: tp[k].grad.numpy().copy() for k in NAMES}

    def step_loop():
        A, B, C, D = (tp[k] for k in NAMES)
        h = torch.zeros(tu.shape[0], A.shape[0], dtype=torch.float64)
        ys = []
        for t in range(tu.shape[1]):
            h = h @ A.T + tu[:, t] @ B.T
            ys.append(h @ C.T + tu[:, t] @ D.T)
        return grads((torch.stack(ys, 1) ** 2).sum())

    def fft_conv():
        A, B, C, D = (tp[k] for k in NAMES)
        T = tu.shape[1]
        S_, power = B[None], A                                    # A^k B for k < T, by doubling
        while S_.shape[0] < T:
            S_ = torch.cat([S_, power @ S_], 0)
            power = power @ power
        K = torch.einsum("pn,lnm->lpm", C, S_[:T])                # (T, p, m)
        N_fft = 1 << (2 * T - 1).bit_length()
        Kf = torch.fft.rfft(K, n=N_fft, dim=0)                    # (N/2+1, p, m)
        uf = torch.fft.rfft(tu, n=N_fft, dim=1)                   # (batch, N/2+1, m)
        y = torch.fft.irfft(torch.einsum("fpm,bfm->bfp", Kf, uf), n=N_fft, dim=1)[:, :T]
        return grads(((y + tu @ D.T) ** 2).sum())

    return {"torch step loop": step_loop, "torch FFT conv": fft_conv}


def jax_jobs(params, u):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    ju = jnp.asarray(onp.moveaxis(u, 1, 0))                       # (T, batch, m), time-major
    jp = {k: jnp.asarray(params[k]) for k in NAMES}

    def scan_loss(p):
        def body(h, u_t):
            h = h @ p["A"].T + u_t @ p["B"].T
            return h, h @ p["C"].T + u_t @ p["D"].T
        _, y = jax.lax.scan(body, jnp.zeros((ju.shape[1], N)), ju)
        return jnp.sum(y ** 2)

    def assoc_loss(p):
        def combine(a, b):                                        # earlier a, later b
            return b[0] @ a[0], a[1] @ jnp.swapaxes(b[0], -1, -2) + b[1]
        M_ = jnp.broadcast_to(p["A"], (ju.shape[0], N, N))
        _, h = jax.lax.associative_scan(combine, (M_, ju @ p["B"].T))
        return jnp.sum((h @ p["C"].T + ju @ p["D"].T) ** 2)

    def job(loss):
        f = jax.jit(jax.value_and_grad(loss))

        def run():
            value, g = f(jp)
            return float(value), {k: onp.asarray(g[k]) for k in NAMES}
        return run

    return {"jax lax.scan": job(scan_loss), "jax assoc. scan": job(assoc_loss)}


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for NumPy's BLAS, torch and XLA (default 1; see the docstring)")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="skip an implementation at a length when its predicted time for all "
                         "runs exceeds this many seconds (default 30)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-jax", action="store_true")
    args = ap.parse_args(argv)
    have = {"torch": not args.no_torch, "jax": not args.no_jax}
    for lib in ("torch", "jax"):
        if have[lib]:
            try:
                __import__(lib)
            except ImportError:
                have[lib] = False
    if have["torch"]:
        import torch
        torch.set_num_threads(args.threads)
    names = SSMREF + (TORCH if have["torch"] else ()) + (JAX if have["jax"] else ())
    print(f"batch {BATCH}, n {N}, m = p = {M}, rho(A) {RHO}, float64, value and gradient of "
          f"sum(y^2) w.r.t. A, B, C, D; {args.threads} thread(s); median / min of "
          f"{args.repeats} runs, ms" + ("" if have["torch"] else "; torch not installed")
          + ("" if have["jax"] else "; jax not installed"))
    rng = onp.random.default_rng(0)
    params = S.init_ssm(M, N, P, rng=rng, scale=RHO)
    results, last = {}, {}
    for T in args.lengths:
        u = rng.standard_normal((BATCH, T, M))
        jobs = {name: ssmref_job(name.split()[1], params, u) for name in SSMREF}
        if have["torch"]:
            jobs.update(torch_jobs(params, u))
        if have["jax"]:
            jobs.update(jax_jobs(params, u))
        reference, timed = None, {}
        for name in names:
            if name in last and last[name][1] * T / last[name][0] * (args.repeats + 1) > args.budget:
                continue                                      # predicted over budget: skipped
            result = jobs[name]()                             # the check (and JAX's compile)
            if reference is None:
                reference = result                            # ssmref scan, or the first one run
            diff = rel_diff(result, reference)
            if diff > 1e-8:
                raise SystemExit(f"{name} at T={T}: differs from {names[0]} by {diff:.1e}")
            timed[name] = (diff, [])
        # Rounds: every implementation runs once per round, so a change of load on a shared
        # machine reaches all of them alike; in a new random order each round, after a pause,
        # so that none always follows the same one (a library's worker threads may still be
        # spinning, and its memory still warm, just after its own run).
        order = onp.random.default_rng(T)
        for _ in range(args.repeats):
            for name in order.permutation(list(timed)):
                time.sleep(PAUSE)
                t0 = time.perf_counter()
                jobs[name]()
                timed[name][1].append(time.perf_counter() - t0)
        for name, (diff, times) in timed.items():
            results[T, name] = (statistics.median(times), min(times), diff, times)
            last[name] = (T, min(times))
        _print_length(T, names, results)
    _print_summary(args.lengths, names, results)


def _print_length(T, names, results):
    width = max(len(n) for n in names)
    print(f"\nT = {T}")
    print(f"  {'implementation':<{width}} {'median':>10} {'min':>10} {'rel. diff':>10}")
    for name in names:
        if (T, name) in results:
            med, low, diff, _ = results[T, name]
            print(f"  {name:<{width}} {1e3 * med:>10.1f} {1e3 * low:>10.1f} {diff:>10.1e}")
        else:
            print(f"  {name:<{width}} {'—':>10} {'—':>10}")
    sys.stdout.flush()


def paired_ratio(results, T, mine, peer):
    """The median over rounds of ``mine's time / peer's time`` in the same round: both ran within
    a second or so of each other, so this ratio is the least sensitive to a changing load."""
    return statistics.median(a / b for a, b in zip(results[T, mine][3], results[T, peer][3]))


def _print_summary(lengths, names, results):
    """The issue's table (minima, ms) and its goals as ratios."""
    print("\nminima, ms (markdown)")
    print("| T | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for T in lengths:
        cells = [f"{1e3 * results[T, n][1]:.1f}" if (T, n) in results else "—" for n in names]
        print(f"| {T} | " + " | ".join(cells) + " |")
    print("\ngoals: ssmref time / peer time, the median of the per-round ratios (the verdict) and "
          "the ratio of minima; <= goal is met")
    for T in lengths:
        ours = {n: results[T, n][1] for n in SSMREF if (T, n) in results}
        if not ours:
            continue
        best = min(ours, key=ours.get)                        # the best mode, by minima
        checks = [("ssmref scan", "torch step loop", 1.0)]
        if T >= 4096:                                         # the lengths for these two
            checks += [(best, "jax lax.scan", 1.0), (best, "torch FFT conv", 3.0)]
        for mine, peer, goal in checks:
            if mine in ours and (T, peer) in results:
                r = paired_ratio(results, T, mine, peer)
                r_min = ours[mine] / results[T, peer][1]
                print(f"  T = {T:>6}: {mine:<16} / {peer:<16} {r:6.2f} (minima {r_min:5.2f})  "
                      f"goal <= {goal:.0f}: {'met' if r <= goal else 'missed'}")

if __name__ == "__main__":
    main()
