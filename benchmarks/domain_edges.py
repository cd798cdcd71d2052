"""The numbers behind the domains of docs/trust.md ("Finite inputs in the documented domain").

    python benchmarks/domain_edges.py          # a few seconds

Prints three tables:

1. zero-order hold (``ssmref.ssm.discretize``) of a stable ``A`` (``-I + 0.1``, 3 states) for
   growing ``dt``: the worst relative error of ``B̄`` over five ``B`` against its limit
   ``-A^{-1} B`` (``Ā`` is 0 to working precision from ``dt ‖[A B]‖₁ = 1e4``), and whether the results
   are finite; beyond the refusal bound ``dt ‖[A B]‖₁ = 1e8`` the values come from
   ``scipy.linalg.expm`` directly (the error depends on ``B``: some stay exact);
2. S4's DPLR kernel (``dplr_kernel``, N = 4, L = 8) with one eigenvalue moved towards the Cauchy
   pole ``Λ = 0``: the relative error against the dense kernel of the same system, for distances
   down to the refusal bound ``1e-8``;
3. SSD with ``chunk_size`` 32768 on 5 steps: the peak memory traced by ``tracemalloc``, and the
   ``chunk_size²`` matrix that a chunk longer than the sequence would need.
"""

import tracemalloc
import warnings

import numpy as onp
import scipy.linalg

from ssmref.ssm import discretize, init_ssm, ssm_kernel
from ssmref.ssm.discretization import MAX_ZOH_SCALE
from ssmref.selective import ssd
from ssmref.structured import dplr_kernel, dplr_to_dense, dplr_truncate, init_dplr


def zoh_table():
    A = -onp.eye(3) + 0.1 * onp.ones((3, 3))
    Bs = [init_ssm(2, 3, 1, rng=seed)["B"] for seed in range(4)]
    Bs.append(onp.random.default_rng(0).normal(size=(3, 2)))
    print(f"zero-order hold of -I + 0.1 (3 states), worst of {len(Bs)} B: dt*||[A B]||_1, "
          f"relative error of Bd, all finite")
    for e in (4, 6, 8, 10, 12, 14, 16, 18, 20, 30, 100):
        errs, finite = [], True
        for B in Bs:
            limit = -onp.linalg.solve(A, B)              # Bd for dt -> inf (Ad -> 0)
            dt = 10.0 ** e / max(onp.abs(A).sum(axis=0).max(), onp.abs(B).sum(axis=0).max())
            if 10.0 ** e <= MAX_ZOH_SCALE:
                Bd = discretize(A, B, dt)[1]
            else:                                        # refused by ssmref: scipy directly
                block = onp.block([[A, B], [onp.zeros((2, 5))]])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    Bd = scipy.linalg.expm(dt * block)[:3, 3:]
            finite = finite and bool(onp.all(onp.isfinite(Bd)))
            errs.append(onp.abs(Bd - limit).max() / onp.abs(limit).max())
        print(f"  1e{e:<4d} {max(errs) if finite else float('nan'):10.2e}   {finite}"
              f"{'   (refused by ssmref)' if 10.0 ** e > MAX_ZOH_SCALE else ''}")


def dplr_table():
    p = init_dplr(4, 1, 1, rng=0)
    print("DPLR kernel next to the Cauchy pole Lambda = 0 (refused below 1e-8): distance "
          "dt*|Lambda_0|, relative error against the dense kernel")
    for distance in (1e-1, 1e-2, 1e-4, 1e-6, 1.01e-8):
        q = {**p, "Lambda": onp.concatenate([[-distance / p["dt"]], p["Lambda"][1:]])}
        q["Ct"] = dplr_truncate(q, 8)
        dense = ssm_kernel(dplr_to_dense(q), 8)
        err = onp.abs(dplr_kernel(q, 8) - dense).max() / onp.abs(dense).max()
        print(f"  {distance:9.2e} {err:10.2e}")


def ssd_table():
    rng = onp.random.default_rng(0)
    args = (rng.normal(size=(1, 5, 2, 2)), rng.uniform(0.1, 1, (1, 5, 2)), -onp.ones(2),
            rng.normal(size=(1, 5, 1, 3)), rng.normal(size=(1, 5, 1, 3)))
    tracemalloc.start()
    ssd(*args, 32768)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"SSD, chunk_size 32768 on 5 steps: peak {peak / 2 ** 10:.0f} KiB traced; one "
          f"32768 x 32768 float64 matrix would be {32768 ** 2 * 8 / 2 ** 30:.0f} GiB")


if __name__ == "__main__":
    zoh_table()
    dplr_table()
    ssd_table()
