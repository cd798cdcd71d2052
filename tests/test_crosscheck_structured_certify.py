"""The structured kinds against independent 40-digit recomputations: measured normwise errors
under 1e-14 where that is reachable, and never above the stated first-order bounds."""

import numpy as onp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

mpmath = pytest.importorskip("mpmath")

from ssmref.crosscheck import highprec as H                               # noqa: E402
from ssmref.crosscheck.families.structured_bounds import (  # noqa: E402
    diag_kernel_error_bound, diag_scan_error_bound, dplr_kernel_error_bound)
from ssmref.crosscheck.families.structured_certify import (  # noqa: E402
    certify, mp_diag_kernel, reference)
from ssmref.ssm import ssm_kernel                                         # noqa: E402
from ssmref.structured import diag_kernel, diag_to_dense, init_diag, init_dplr  # noqa: E402


def test_highprec_conversions_are_exact_and_ref_error_measures_what_it_should():
    x = onp.array([0.1, -1e-300, 3.0, onp.pi])
    assert onp.array_equal(H.to_float(H.to_mp(x)), x)                      # binary64 -> mp -> binary64
    z = x + 1j * x[::-1]
    assert onp.array_equal(H.to_float(H.to_mp(z)), z)
    with mpmath.workdps(40):
        assert H.to_mp(0.1) == mpmath.mpf(0.1) != mpmath.mpf("0.1")            # exact, not decimal
    ref = H.to_mp(onp.array([3.0, 4.0]))
    assert H.ref_error(onp.array([3.0, 4.0]), ref) == 0.0
    d = (4.0 + 5e-10) - 4.0                                                  # exact (Sterbenz)
    assert abs(H.ref_error(onp.array([3.0, 4.0 + d]), ref) - d / 5) < 1e-25       # ||(0, d)|| / ||(3, 4)||
    assert H.ref_error(onp.array([1e-3, 0.0]), H.to_mp(onp.zeros(2))) == 1e-3      # zero reference: absolute
    with pytest.raises(ValueError, match="shape"):
        H.ref_error(onp.zeros(3), ref)
    with pytest.raises(ValueError, match="real or complex array"):
        H.to_mp(onp.array(["a"]))
    with pytest.raises(ValueError, match="kind must be one of"):
        certify("dense_kernel", {}, 3)


def legs(n, dt, **kw):
    return init_diag(n, 1, 1, rng=1, init="legs", dt_min=dt, dt_max=dt, **kw)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("dt", [1e-6, 1e-3, 1e-1])
def test_diag_discretization_is_correctly_rounded_to_a_few_ulps(method, dt):
    prm = init_diag(6, 2, 1, rng=2, init="random", dt_min=dt, dt_max=10 * dt, dt_per_state=True)
    prm["Lambda"][0] = 0.0                                                  # the ΔΛ = 0 branch
    err = certify("diag_discretize", prm, method)
    assert err["Lambda_bar"] < 5e-16 and err["B_bar"] < 5e-16, err


@pytest.mark.parametrize("dt", [1e-3, 1e-2, 1e-1])
def test_zoh_kernel_is_accurate_at_every_lag(dt):
    """exp(kΔΛ) with the exponent formed error-free: ~ε at lag 999 as at lag 0."""
    prm = legs(8, dt)
    L = 1000
    K = diag_kernel(prm, L, method="zoh", output="2re")
    ref = mp_diag_kernel(prm, L, method="zoh", output="2re")
    assert H.ref_error(K, ref) < 1e-15
    scale = onp.abs(2 * prm["C"][0] * prm["B"][:, 0]) * onp.abs(onp.exp(dt * prm["Lambda"]))   # lag-1 moduli
    for k in (1, 100, 999):
        decay = onp.exp(k * dt * prm["Lambda"].real)
        err = abs(K[k, 0, 0] - float(ref[k, 0, 0]))
        assert err < 4e-16 * onp.sum(scale * decay) * 8, k                 # no growth with the lag


def test_kernel_from_lambda_and_dt_beats_the_dense_power_and_the_plain_exponent():
    """The claim of docs/structured.md at lag 1000: dense Ā^k and exp(k·fl(ΔΛ)) lose k·ε, we do not."""
    prm = legs(8, 0.01)
    L = 1001
    ref = H.to_float(mp_diag_kernel(prm, L, method="zoh", output="2re"))[:, 0, 0]
    ours = diag_kernel(prm, L, method="zoh", output="2re")[:, 0, 0]
    dense = ssm_kernel(diag_to_dense(prm, method="zoh", output="2re"), L)[:, 0, 0]
    lam, dt = prm["Lambda"], prm["dt"]
    bbar = prm["B"][:, 0] * (onp.exp(dt * lam) - 1) / lam
    plain = 2 * onp.real(onp.exp(onp.arange(L)[:, None] * (dt * lam)) @ (prm["C"][0] * bbar))
    err = {k: onp.linalg.norm(v - ref) / onp.linalg.norm(ref) for k, v in
           (("ours", ours), ("dense", dense), ("plain", plain))}
    assert err["ours"] < 1e-15 and err["dense"] > 10 * err["ours"] and err["plain"] > 3 * err["ours"], err


@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 4), L=st.integers(1, 60),
       method=st.sampled_from(["zoh", "bilinear"]), output=st.sampled_from(["re", "2re"]),
       log_dt=st.floats(-7, 0))
@settings(max_examples=15)
def test_diag_kernel_error_never_exceeds_its_bound(seed, n, L, method, output, log_dt):
    prm = init_diag(n, 2, 2, rng=seed, init="random", dt_min=onp.exp(log_dt), dt_max=onp.exp(log_dt),
                    dt_per_state=bool(seed % 2))
    err = certify("diag_kernel", prm, L, method=method, output=output)["K"]
    assert err <= diag_kernel_error_bound(prm, L, method=method, output=output)
    if method == "zoh":
        assert err < 1e-14


@pytest.mark.parametrize("dt", [1e-3, 1e-2, 1e-1, 1.0])
def test_bilinear_kernel_certified_on_every_branch(dt):
    """|ΔΛ| spans the series, atanh and reflected branches: within 1e-14 at 1000 lags, and the bound."""
    prm = legs(8, dt)
    err = certify("diag_kernel", prm, 1000, method="bilinear", output="2re")["K"]
    assert err < 1e-14 and err <= diag_kernel_error_bound(prm, 1000, method="bilinear", output="2re")


@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 4), T=st.integers(1, 60), batch=st.booleans(),
       method=st.sampled_from(["zoh", "bilinear"]), log_dt=st.floats(-7, 0))
@settings(max_examples=15)
def test_diag_scan_error_never_exceeds_its_bound(seed, n, T, batch, method, log_dt):
    prm = init_diag(n, 2, 2, rng=seed, init="random", dt_min=onp.exp(log_dt), dt_max=onp.exp(log_dt))
    rng = onp.random.default_rng(seed)
    u = rng.standard_normal((2, T, 2) if batch else (T, 2))
    h0 = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    err = certify("diag_scan", prm, u, h0, method=method, output="2re")
    bound = diag_scan_error_bound(prm, u, h0, method=method, output="2re")
    assert err["y"] <= bound["y"] and err["x_last"] <= bound["x_last"], (err, bound)


def test_diag_scan_certified_below_1e14_for_fast_modes_and_within_bound_for_slow(rng):
    u = rng.standard_normal((300, 1))
    fast = legs(8, 0.1)
    err = certify("diag_scan", fast, u, method="zoh", output="2re")
    assert max(err.values()) < 1e-14
    slow = legs(8, 1e-3)                                   # 1/(1 − |λ̄|) = 2000 steps of memory
    err = certify("diag_scan", slow, u, method="zoh", output="2re")
    bound = diag_scan_error_bound(slow, u, method="zoh", output="2re")
    assert err["x_last"] <= bound["x_last"] and bound["x_last"] > 1e-14


@pytest.mark.parametrize("dt", [1e-3, 1e-2, 1e-1])
def test_dplr_discretization_and_kernel_certified(dt):
    prm = init_dplr(8, 1, 1, rng=3, dt=dt)
    err = certify("dplr_discretize", prm)
    assert err["A_bar"] < 1e-15 and err["B_bar"] < 1e-15
    with_ct = dict(prm, Ct=prm["C"])                        # C̃ as the input, as S4 trains it
    err = certify("dplr_kernel", with_ct, 128)["K"]
    assert err < 1e-14 and err <= dplr_kernel_error_bound(with_ct, 128)


@given(seed=st.integers(0, 2 ** 31), N=st.integers(1, 5), L=st.integers(1, 40), log_dt=st.floats(-6, 0))
@settings(max_examples=10)
def test_dplr_kernel_error_never_exceeds_its_bound(seed, N, L, log_dt):
    prm = init_dplr(N, 2, 1, rng=seed, dt=float(onp.exp(log_dt)))
    with_ct = dict(prm, Ct=prm["C"])
    assert certify("dplr_kernel", with_ct, L)["K"] <= dplr_kernel_error_bound(with_ct, L)


def test_dplr_scan_certified(rng):
    prm = init_dplr(4, 2, 2, rng=4, dt=0.1)
    u = rng.standard_normal((2, 40, 2))
    err = certify("dplr_scan", prm, u)
    assert max(err.values()) < 1e-14


def test_reference_rounds_the_40_digit_values():
    prm = legs(3, 0.1)
    ref = reference("diag_kernel", prm, 5, method="zoh", output="re")["K"]
    assert ref.dtype == onp.float64 and ref.shape == (5, 1, 1)
    assert onp.allclose(ref, diag_kernel(prm, 5, method="zoh", output="re"), rtol=1e-15, atol=0)
    lam_bar = reference("diag_discretize", prm, "bilinear")["Lambda_bar"]
    assert lam_bar.dtype == onp.complex128
