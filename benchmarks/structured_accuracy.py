"""Accuracy of the structured kernels and scans against 40-digit recomputations (needs mpmath).

    python benchmarks/structured_accuracy.py          # about a minute on 2 cores

Prints the tables of docs/structured.md ("Accuracy"): for S4D-LegS / S4D-Lin eigenvalues
(N = 64, one member of each conjugate pair, ``output="2re"``) the normwise relative error of the
kernel ``K[0..1000]`` computed

- by ssmref (``diag_kernel``: ``exp(kΔΛ)`` with the exponent formed error-free),
- in the form S4D / annotated-s4 use (``exp(k·fl(ΔΛ))`` and ``B̄ = (exp(ΔΛ) − 1)/Λ``),
- through the dense discretized real system (``ssm_kernel`` of ``diag_to_dense``: ``Ā`` rounded
  once, then its powers by doubling),

and the error at lag 1000 alone relative to ``Σ_n |C_n B̄_n λ̄_n^1000|`` (its natural scale); then
bilinear kernels, the recurrence (with its bound) and S4's DPLR kernel (with its bound).
"""

import sys

import numpy as onp

from ssmref.crosscheck import highprec as H
from ssmref.crosscheck.families.structured_bounds import (diag_kernel_error_bound, diag_scan_error_bound,
                                                          dplr_kernel_error_bound)
from ssmref.crosscheck.families.structured_certify import certify, mp_diag_kernel, mp_dplr_kernel
from ssmref.ssm import ssm_kernel
from ssmref.structured import diag_kernel, diag_scan, diag_to_dense, dplr_kernel, init_diag, init_dplr

L = 1001


def peer_form(prm, length):
    """S4D's kernel formula in plain float64: 2 Re(Σ C (e^{ΔΛ} − 1)/Λ B e^{k·fl(ΔΛ)})."""
    lam, dt = prm["Lambda"], prm["dt"]
    dtA = dt * lam
    w = prm["C"][0] * (onp.exp(dtA) - 1.0) / lam * prm["B"][:, 0]
    return 2 * onp.real(onp.exp(onp.arange(length)[:, None] * dtA) @ w)


def zoh_table():
    print("ZOH kernel, N = 64 (32 conjugate pairs), lags 0..1000: normwise | at lag 1000")
    cols = f"{'ssmref':>9} {'peer form':>9} {'dense Ā^k':>9}"
    print(f"{'init':5} {'dt':>6} | {cols} | {cols}")
    for init in ("legs", "lin"):
        for dt in (1e-3, 1e-2, 1e-1):
            prm = init_diag(32, 1, 1, rng=0, init=init, dt_min=dt, dt_max=dt)
            ref_mp = mp_diag_kernel(prm, L, method="zoh", output="2re")
            ref = H.to_float(ref_mp)[:, 0, 0]
            ours = diag_kernel(prm, L, method="zoh", output="2re")[:, 0, 0]
            dense = ssm_kernel(diag_to_dense(prm, method="zoh", output="2re"), L)[:, 0, 0]
            peer = peer_form(prm, L)
            lam_bar = onp.exp(dt * prm["Lambda"])
            terms = prm["C"][0] * (lam_bar - 1) / prm["Lambda"] * prm["B"][:, 0]       # C B̄ per state
            scale = 2 * onp.sum(onp.abs(terms) * onp.abs(lam_bar) ** (L - 1))
            norm = [H.ref_error(x[:, None, None], ref_mp) for x in (ours, peer, dense)]
            last = [abs(x[-1] - ref[-1]) / scale for x in (ours, peer, dense)]
            row = " ".join(f"{e:9.1e}" for e in norm) + " | " + " ".join(f"{e:9.1e}" for e in last)
            print(f"{init:5} {dt:6.0e} | {row}")


def bilinear_table():
    print("\nbilinear kernel, N = 64, lags 0..1000: measured | bound")
    for init in ("legs", "lin"):
        for dt in (1e-3, 1e-2, 1e-1):
            prm = init_diag(32, 1, 1, rng=0, init=init, dt_min=dt, dt_max=dt)
            err = certify("diag_kernel", prm, L, method="bilinear", output="2re")["K"]
            bound = diag_kernel_error_bound(prm, L, method="bilinear", output="2re")
            print(f"{init:5} {dt:6.0e} | {err:9.1e} | {bound:9.1e}")


def scan_table():
    print("\nrecurrence (diag_scan, ZOH), 16 conjugate pairs, T = 1000, u ~ N(0, 1): y, x_last measured | bound")
    u = onp.random.default_rng(1).standard_normal((1000, 1))
    for dt in (1e-3, 1e-2, 1e-1):
        prm = init_diag(16, 1, 1, rng=0, init="legs", dt_min=dt, dt_max=dt)
        err = certify("diag_scan", prm, u, method="zoh", output="2re")
        bound = diag_scan_error_bound(prm, u, method="zoh", output="2re")
        print(f"legs  {dt:6.0e} | {err['y']:9.1e} {err['x_last']:9.1e} | {bound['y']:9.1e} {bound['x_last']:9.1e}")


def dplr_table():
    print("\nDPLR kernel (HiPPO-LegS, full N states, C~ random), L = 256: measured | bound")
    for N in (8, 16, 32):
        for dt in (1e-3, 1e-2, 1e-1):
            prm = init_dplr(N, 1, 1, rng=2, dt=dt)
            with_ct = dict(prm, Ct=prm["C"])
            err = H.ref_error(dplr_kernel(with_ct, 256), mp_dplr_kernel(with_ct, 256))
            print(f"N={N:<3} {dt:6.0e} | {err:9.1e} | {dplr_kernel_error_bound(with_ct, 256):9.1e}")


def main():
    zoh_table()
    bilinear_table()
    scan_table()
    dplr_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
