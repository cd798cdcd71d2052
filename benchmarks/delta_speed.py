"""Forward and forward + gradient time of ssmref.delta's two evaluations (the WY/UT chunked form
and the taped recurrence) on one Gated DeltaNet layer's shapes.

    PYTHONPATH=. python benchmarks/delta_speed.py [--T 2048] [--H 4] [--K 64] [--V 64]

``gated_delta_rule`` with B 1, l2norm in kernel, chunk 64; the gradient is of ``Σ W·o`` w.r.t.
``q, k, v, g, beta``.  One BLAS thread (set before NumPy loads), as the other benchmarks.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import autograd  # noqa: E402
import autograd.numpy as np  # noqa: E402
import numpy as onp  # noqa: E402

from ssmref.delta import gated_delta_rule  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("--T", 2048), ("--H", 4), ("--K", 64), ("--V", 64)):
        p.add_argument(name, type=int, default=default)
    a = p.parse_args(argv)
    r = onp.random.default_rng(0)
    q, k = r.standard_normal((2, 1, a.T, a.H, a.K))
    v, W = r.standard_normal((2, 1, a.T, a.H, a.V))
    g, beta = onp.log(r.uniform(0.9, 1.0, (1, a.T, a.H))), r.uniform(0.0, 1.0, (1, a.T, a.H))
    for method in ("chunked", "recurrence"):
        def run(args):
            return gated_delta_rule(*args, use_qk_l2norm_in_kernel=True, method=method)[0]
        t0 = time.perf_counter()
        run((q, k, v, g, beta))
        t1 = time.perf_counter()
        autograd.grad(lambda args: np.sum(W * run(args)))((q, k, v, g, beta))
        t2 = time.perf_counter()
        print(f"{method:10s} forward {t1 - t0:6.2f} s   forward + gradient {t2 - t1:6.2f} s")


if __name__ == "__main__":
    main()
