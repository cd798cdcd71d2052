"""Accuracy of the convolution and parallel-scan modes against the recurrence.

    python benchmarks/ssm_accuracy.py

n = 16, m = p = 2, one sequence, error = max |y_mode - y_scan| / max |y_scan|, for spectral
radii approaching and crossing 1 and growing lengths (the table in docs/ssm.md).
"""

import numpy as onp

from ssmref import ssm as S


def main():
    rng = onp.random.default_rng(0)
    print(f"{'rho':<7}{'T':>6}{'convolve':>12}{'parallel':>12}")
    for rho in (0.5, 0.9, 0.99, 0.999, 1.0, 1.001):
        for T in (64, 1024, 8192):
            params = S.init_ssm(2, 16, 2, rng=1, scale=rho)
            u = rng.standard_normal((T, 2))
            y, _ = S.ssm_scan(params, u)
            errs = [onp.max(onp.abs(f(params, u)[0] - y)) / onp.max(onp.abs(y))
                    for f in (S.ssm_convolve, S.ssm_parallel_scan)]
            print(f"{rho:<7}{T:>6}{errs[0]:>12.1e}{errs[1]:>12.1e}")


if __name__ == "__main__":
    main()
