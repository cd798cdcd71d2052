"""Self-test cases of the structured SSMs (``python -m ssmref selftest``), without pytest.

Each case checks one invariant the specification states: the modes agree, and each structured
form equals the dense real SSM of :mod:`ssmref.ssm` on its real embedding.
"""

import numpy as onp

from ssmref.ssm import ssm_kernel, ssm_scan
from ssmref.structured import (diag_convolve, diag_kernel, diag_parallel_scan, diag_scan,
                               diag_to_dense, dplr_kernel, dplr_to_dense, dplr_truncate, init_diag,
                               init_dplr)


def _check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def _rel(a, b):
    return float(onp.max(onp.abs(a - b)) / max(onp.max(onp.abs(b)), 1e-300))


def case_diagonal_modes_and_embedding():
    params = init_diag(8, 2, 3, rng=0, init="legs", dt_min=0.01, dt_max=0.1)
    u = onp.random.default_rng(1).standard_normal((2, 64, 2))                      # (batch, T, m)
    for method in ("zoh", "bilinear"):
        y, _ = diag_scan(params, u, method=method, output="2re")
        for mode in (diag_parallel_scan, diag_convolve):
            _check(_rel(mode(params, u, method=method, output="2re")[0], y) < 1e-12,
                   f"{method}: {mode.__name__} differs from the scan")
        dense_y, _ = ssm_scan(diag_to_dense(params, method=method, output="2re"), u)
        _check(_rel(dense_y, y) < 1e-12, f"{method}: the scan differs from the dense embedding")


def case_vandermonde_kernel_equals_dense_kernel():
    params = init_diag(8, 2, 3, rng=2, init="lin", dt_min=0.01, dt_max=0.1)
    K = diag_kernel(params, 100, method="zoh", output="2re")
    dense = dict(diag_to_dense(params, method="zoh", output="2re"))
    _check(_rel(K, ssm_kernel(dense, 100)) < 1e-12, "K[k] = 2 Re(C Λ̄^k B̄) != dense C A^k B")


def case_dplr_cauchy_kernel_equals_dense_kernel():
    params = init_dplr(8, 1, 1, rng=3, dt=0.1)
    for L in (33, 64):                         # odd and even lengths: z = -1 among the roots
        K = dplr_kernel(dict(params, Ct=dplr_truncate(params, L)), L)
        _check(_rel(K, ssm_kernel(dplr_to_dense(params), L)) < 1e-10,
               f"L={L}: the Cauchy kernel differs from the dense kernel")


CASES = [
    ("S4D/S5: scan = parallel = convolution = dense embedding", case_diagonal_modes_and_embedding),
    ("S4D: Vandermonde kernel = dense kernel", case_vandermonde_kernel_equals_dense_kernel),
    ("S4: DPLR Cauchy kernel = dense kernel", case_dplr_cauchy_kernel_equals_dense_kernel),
]
