"""Forward + gradient time of the three SSM modes, as ratios against the step loop.

    python benchmarks/ssm_modes.py [--lengths 64 512 4096] [--repeats 3]

Workload (issue 2): batch 16, n = 32, m = p = 4, loss = sum(y^2), gradient w.r.t. A, B, C, D.
Every mode runs in this one process; with PyTorch installed the same workload runs as a float64
CPU step loop in torch (autograd backward) as a peer.  Each number is the best of ``--repeats``
runs.  Ratios are "step-loop time / this mode's time" (higher is faster).
"""

import argparse
import time

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref import ssm as S


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def autograd_job(mode, params, u):
    loss = lambda p: np.sum(S.run_ssm(p, u, None, mode)[0] ** 2)   # noqa: E731
    return lambda: autograd.value_and_grad(loss)(params)


def torch_job(params, u):
    import torch
    torch.set_num_threads(2)
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    tu = torch.tensor(u, dtype=torch.float64)

    def run():
        for v in tp.values():
            v.grad = None
        h = torch.zeros(tu.shape[0], tp["A"].shape[0], dtype=torch.float64)
        ys = []
        for t in range(tu.shape[1]):
            h = h @ tp["A"].T + tu[:, t] @ tp["B"].T
            ys.append(h @ tp["C"].T + tu[:, t] @ tp["D"].T)
        loss = (torch.stack(ys, 1) ** 2).sum()
        loss.backward()
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 512, 4096])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    rng = onp.random.default_rng(0)
    params = S.init_ssm(4, 32, 4, rng=rng, scale=0.95)
    print(f"batch 16, n 32, m p 4, forward+gradient, best of {args.repeats}; "
          f"ratio = step-loop time / mode time" + ("" if have_torch else " (torch not installed)"))
    header = f"{'T':>6} {'mode':<22} {'seconds':>9} {'vs step loop':>13}"
    print(header)
    print("-" * len(header))
    for T in args.lengths:
        u = rng.standard_normal((16, T, 4))
        times = {f"ssmref {m}": best_time(autograd_job(m, params, u), args.repeats) for m in S.MODES}
        if have_torch:
            times["torch step loop"] = best_time(torch_job(params, u), args.repeats)
        ref = times["ssmref scan"]
        for name, t in times.items():
            print(f"{T:>6} {name:<22} {t:>9.4f} {ref / t:>12.1f}x")


if __name__ == "__main__":
    main()
