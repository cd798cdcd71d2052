"""A navigation meta-iteration on a shared machine: the default environment against one BLAS thread.

    python benchmarks/blas_load.py [--rounds 7] [--iterations 3] [--busy 1] [--no-limit]

NumPy's OpenBLAS starts one thread per core, and on the policy's small products the threads spin
waiting for each other when another process holds a core.  The trainers limit the BLAS threads of
their hot loops at run time (``ssmref.metarl.threads``, ``MetaTrainer.blas_threads = 1``), so the
default environment should run as fast as one started with ``OPENBLAS_NUM_THREADS=1``.  This
script checks that: it keeps ``--busy`` cores busy with spinning processes, then runs, in
``--rounds`` interleaved rounds, a fresh Python process per setting that times ``--iterations``
default ``MetaMAML.meta_step`` calls (navigation2d, 20 tasks x 20 episodes x 100 steps, second
order) after one warm-up call:

- ``default``: the environment as it is (BLAS variables removed);
- ``one BLAS thread``: ``OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = 1``;
- with ``--no-limit`` also ``default, no run-time limit``: the default environment with the
  trainer's limit switched off (``blas_threads = None``): NumPy's own threading.

The BLAS thread count is read when NumPy is imported, so the settings need separate processes;
interleaving the rounds gives every setting the same share of a load that changes.  The verdict
is the median over rounds of the ratio default / one thread within the round (the goal:
at most 1.25).  Nothing here asserts a time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_RATIO = 1.25


def child(iterations, no_limit):
    """Time ``iterations`` default navigation meta-iterations after one warm-up; print JSON."""
    sys.path.insert(0, ROOT)
    import numpy as onp

    from ssmref import metarl
    from ssmref.metarl.envs import Navigation2D
    from ssmref.metarl.policy import policy_init

    params, spec = policy_init(2, 2, discrete=False, state_dim=8, ssm_output_dim=8,
                               hidden_sizes=(64, 64), rng=0)
    meta = metarl.MetaMAML(Navigation2D(), params, spec, metarl.MetaMAMLConfig(max_grad_norm=1.0))
    if no_limit:
        meta.blas_threads = None
    rng = onp.random.default_rng(0)
    meta.meta_step(rng)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        meta.meta_step(rng)
        times.append(time.perf_counter() - t0)
    print(json.dumps(times))


def run_setting(name, iterations):
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    args = [sys.executable, os.path.abspath(__file__), "--child", str(iterations)]
    if name == "one BLAS thread":
        env.update({k: "1" for k in BLAS_ENV})
    elif name == "default, no run-time limit":
        args.append("--no-limit")
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    return statistics.median(json.loads(out.strip().splitlines()[-1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--busy", type=int, default=1, help="cores kept busy (default 1)")
    ap.add_argument("--no-limit", action="store_true",
                    help="also time the default environment without the run-time limit")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.no_limit)
    settings = ["default", "one BLAS thread"]
    if args.no_limit:
        settings.append("default, no run-time limit")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
    try:
        rows = {name: [] for name in settings}
        for r in range(args.rounds):
            for name in settings:
                rows[name].append(run_setting(name, args.iterations))
            print(f"round {r + 1}: " + ", ".join(f"{n} {rows[n][-1]:.2f} s" for n in settings),
                  flush=True)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    print(f"\nnavigation meta-iteration, {args.busy} core(s) kept busy, median of "
          f"{args.iterations} iterations per process, {args.rounds} interleaved rounds")
    for name in settings:
        print(f"  {name:28s} {statistics.median(rows[name]):6.2f} s   (rounds: "
              + " ".join(f"{t:.2f}" for t in rows[name]) + ")")
    ratios = [d / o for d, o in zip(rows["default"], rows["one BLAS thread"])]
    verdict = "meets" if statistics.median(ratios) <= TARGET_RATIO else "misses"
    print(f"  default / one BLAS thread: {statistics.median(ratios):.2f}x (median of the rounds' "
          f"ratios; goal <= {TARGET_RATIO}x: {verdict})")
    if args.no_limit:
        ratios = [d / o for d, o in zip(rows["default, no run-time limit"],
                                        rows["one BLAS thread"])]
        print(f"  without the run-time limit / one BLAS thread: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
