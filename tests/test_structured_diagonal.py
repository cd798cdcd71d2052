"""The complex diagonal SSM: discretization, the four modes and the dense real embedding agree;
gradients are exact to second order; bad arguments raise ValueError naming them."""

import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref.ssm import discretize, ssm_convolve, ssm_kernel, ssm_scan
from ssmref.structured import (diag_convolve, diag_discretize, diag_kernel, diag_parallel_scan,
                               diag_scan, diag_to_dense, init_diag)
from ssmref.structured.embed import complex_state, real_state

MODES = (diag_scan, diag_parallel_scan, diag_convolve)


def system(seed, n, m, p, *, per_state=False, init="random"):
    return init_diag(n, m, p, rng=seed, init=init, dt_min=0.02, dt_max=0.5, dt_per_state=per_state)


def rel(a, b):
    return onp.max(onp.abs(onp.asarray(a) - onp.asarray(b))) / max(onp.max(onp.abs(b)), 1e-300)


@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 5), m=st.integers(1, 3),
       method=st.sampled_from(["zoh", "bilinear"]), per_state=st.booleans())
def test_discretization_equals_dense_expm_and_bilinear(seed, n, m, method, per_state):
    """Λ̄, B̄ on the 2x2 embedding equal ssmref.ssm.discretize of the continuous embedding."""
    prm = system(seed, n, m, 2, per_state=per_state)
    cont = diag_to_dense(prm, method=None, output="re")
    Ad, Bd = discretize(cont["A"], cont["B"], 1.0, method)
    disc = diag_to_dense(prm, method=method, output="re")
    assert rel(disc["A"], Ad) < 1e-13 and rel(disc["B"], Bd) < 1e-13
    lam_bar, Bbar = diag_discretize(prm["Lambda"], prm["B"], prm["dt"], method)
    assert onp.allclose(real_state(Bbar.T).T, disc["B"], rtol=0, atol=0)


@pytest.mark.parametrize("z", [0.0, 1e-300, 1e-12, 3e-7, 9.9e-6, 1.01e-5, 1e-4])
def test_zoh_input_factor_is_accurate_for_tiny_steps(z):
    """B̄ = (e^{ΔΛ} − 1)/Λ B, to ε also where ΔΛ is tiny (the naive form loses all digits)."""
    dt = 1e-3
    lam = onp.array([z / dt * (0.6 + 0.8j), -z / dt])
    _, Bbar = diag_discretize(lam, onp.ones((2, 1)), dt, "zoh")
    zz = dt * lam
    series = dt * (1 + zz / 2 + zz ** 2 / 6 + zz ** 3 / 24 + zz ** 4 / 120)   # exact to < 1e-21 here
    assert onp.max(onp.abs(Bbar[:, 0] / series - 1)) < 4e-16
    if 0 < z < 1e-6:
        naive = (onp.exp(zz) - 1) / lam
        assert onp.max(onp.abs(naive / series - 1)) > 1e-11        # what the test would catch


@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 4), m=st.integers(1, 3), p=st.integers(1, 3),
       T=st.integers(1, 70), batch=st.sampled_from([None, 3]), h0=st.sampled_from(["none", "shared", "batch"]),
       method=st.sampled_from(["zoh", "bilinear"]), output=st.sampled_from(["re", "2re"]),
       per_state=st.booleans())
def test_modes_agree_with_each_other_and_the_dense_reference(seed, n, m, p, T, batch, h0, method,
                                                             output, per_state):
    prm = system(seed, n, m, p, per_state=per_state)
    rng = onp.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    u = rng.standard_normal(lead + (T, m))
    h = None
    if h0 == "shared" or (h0 == "batch" and batch is None):
        h = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    elif h0 == "batch":
        h = rng.standard_normal((batch, n)) + 1j * rng.standard_normal((batch, n))
    y, x = diag_scan(prm, u, h, method=method, output=output)
    assert y.shape == lead + (T, p) and y.dtype == onp.float64 and x.shape == lead + (n,)
    for f in (diag_parallel_scan, diag_convolve):
        y2, x2 = f(prm, u, h, method=method, output=output)
        assert rel(y2, y) < 1e-12 and rel(x2, x) < 1e-12, f.__name__
    dense = diag_to_dense(prm, method=method, output=output)
    hr = None if h is None else real_state(h)
    for f in (ssm_scan, ssm_convolve):
        y3, x3 = f(dense, u, hr)
        assert rel(y3, y) < 1e-12 and rel(complex_state(x3), x) < 1e-12, f.__name__


@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 4), L=st.integers(1, 40),
       method=st.sampled_from(["zoh", "bilinear"]), output=st.sampled_from(["re", "2re"]))
def test_kernel_equals_dense_kernel_and_reads_the_new_state(seed, n, L, method, output):
    prm = system(seed, n, 2, 3, per_state=bool(seed % 2))
    K = diag_kernel(prm, L, method=method, output=output)
    assert K.shape == (L, 3, 2)
    assert rel(K, ssm_kernel(diag_to_dense(prm, method=method, output=output), L)) < 1e-12
    _, Bbar = diag_discretize(prm["Lambda"], prm["B"], prm["dt"], method)
    s = 2.0 if output == "2re" else 1.0
    assert onp.allclose(K[0], s * onp.real(prm["C"] @ Bbar), rtol=1e-14, atol=1e-15)   # K[0] = s Re(C B̄)


def test_2re_of_a_half_equals_re_of_the_conjugate_closed_whole(rng):
    prm = system(7, 3, 2, 2)
    full = {"Lambda": onp.concatenate([prm["Lambda"], prm["Lambda"].conj()]),
            "B": onp.concatenate([prm["B"], prm["B"].conj()]),
            "C": onp.concatenate([prm["C"], prm["C"].conj()], axis=1), "D": prm["D"], "dt": prm["dt"]}
    u = rng.standard_normal((25, 2))
    for method in ("zoh", "bilinear"):
        for f in MODES:
            y_half, _ = f(prm, u, method=method, output="2re")
            y_full, _ = f(full, u, method=method, output="re")
            assert rel(y_half, y_full) < 1e-13
        y_re, _ = diag_scan(prm, u, method=method, output="re")
        assert rel(2 * (y_re - u @ prm["D"].T) + u @ prm["D"].T, y_half) < 1e-13


def test_real_lambda_is_cast_to_complex(rng):
    prm = system(3, 3, 1, 1)
    real = dict(prm, Lambda=prm["Lambda"].real, B=prm["B"].real)
    cplx = dict(prm, Lambda=prm["Lambda"].real + 0j, B=prm["B"].real + 0j)
    u = rng.standard_normal((9, 1))
    for f in MODES:
        assert onp.array_equal(f(real, u, method="zoh", output="re")[0], f(cplx, u, method="zoh", output="re")[0])


@pytest.mark.parametrize("f", MODES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_gradients_second_order(rng, f, method):
    prm = system(11, 3, 2, 2, per_state=(method == "zoh"))
    prm["Lambda"] = onp.concatenate([prm["Lambda"][:2], [0.0 + 0j]])       # Λ = 0: the series branch
    u = rng.standard_normal((7, 2))
    h0 = rng.standard_normal(3) + 1j * rng.standard_normal(3)
    W = rng.standard_normal((7, 2))
    # central differences step Re Λ = 0 to ±1e-6: the convolution must accept that
    kw = dict(method=method, **({"allow_unstable": True} if f is diag_convolve else {}))

    def loss(key):
        def f_key(x):
            y, h = f(dict(prm, **{key: x}), u, h0, output="2re", **kw)
            return np.sum(W * y) + np.sum(np.abs(h) ** 2)
        return f_key
    for key in ("Lambda", "B", "C", "D", "dt"):
        check_grads(loss(key), modes=["rev"], order=2)(prm[key])
    check_grads(lambda v: np.sum(W * f(prm, v, h0, output="re", **kw)[0]), modes=["rev"], order=2)(u)
    check_grads(lambda h: np.sum(np.abs(f(prm, u, h, output="re", **kw)[1]) ** 2), modes=["rev"],
                order=2)(h0)


def test_kernel_gradients_second_order(rng):
    prm = system(12, 3, 2, 2, per_state=True)
    W = rng.standard_normal((9, 2, 2))
    for method in ("zoh", "bilinear"):
        for key in ("Lambda", "B", "C", "dt"):
            check_grads(lambda x: np.sum(W * diag_kernel(dict(prm, **{key: x}), 9, method=method, output="re")),
                        modes=["rev"], order=2)(prm[key])


def test_unstable_modes_are_refused_where_it_matters(rng):
    prm = system(5, 2, 1, 1)
    prm["Lambda"] = onp.array([0.3 + 1j, -0.2])
    u = rng.standard_normal((12, 1))
    y, _ = diag_scan(prm, u, method="zoh", output="re")                    # the recurrence is defined
    assert rel(diag_parallel_scan(prm, u, method="zoh", output="re")[0], y) < 1e-12
    with pytest.raises(ValueError, match="Lambda has entries with positive real part"):
        diag_kernel(prm, 5, method="zoh", output="re")
    with pytest.raises(ValueError, match="allow_unstable=True"):
        diag_convolve(prm, u, method="zoh", output="re")
    y2, _ = diag_convolve(prm, u, method="zoh", output="re", allow_unstable=True)
    assert rel(y2, y) < 1e-12
    pole = dict(prm, Lambda=onp.array([8.0, -1.0]) + 0j, dt=0.25)
    with pytest.raises(ValueError, match="bilinear pole"):
        diag_scan(pole, u, method="bilinear", output="re")


def _bad(key, value):
    return lambda prm: dict(prm, **{key: value})


HOSTILE = [
    (_bad("Lambda", onp.ones((3, 1)) + 0j), "Lambda'\\] must have shape \\(n,\\)"),
    (_bad("Lambda", onp.array([True, False, True])), "Lambda'\\] must be numeric, got a bool"),
    (_bad("Lambda", onp.array([1j, onp.nan, 0])), "Lambda'\\] has non-finite"),
    (_bad("Lambda", onp.array(["a", "b", "c"])), "Lambda'\\] must be a numeric array"),
    (_bad("B", onp.ones((2, 2)) + 0j), "B'\\] must have shape \\(3, 2\\), got \\(2, 2\\)"),
    (_bad("B", onp.ones(3) + 0j), "B'\\] must be \\(n, m\\)"),
    (_bad("C", onp.ones((2, 4)) + 0j), "C'\\] must have shape \\(2, 3\\), got \\(2, 4\\)"),
    (_bad("D", onp.ones((2, 2)) + 1j), "D'\\] must be real, got a complex"),
    (_bad("D", onp.ones((2, 3))), "D'\\] must have shape \\(2, 2\\), got \\(2, 3\\)"),
    (_bad("D", onp.ones((2, 2), dtype=bool)), "D'\\] must be numeric, got a bool"),
    (_bad("dt", 0.0), "dt'\\] must be > 0"),
    (_bad("dt", -onp.ones(3)), "dt'\\] must be > 0"),
    (_bad("dt", onp.inf), "dt'\\] has non-finite"),
    (_bad("dt", True), "dt'\\] must be numeric, got a bool"),
    (_bad("dt", 0.1 + 0j), "dt'\\] must be real"),
    (_bad("dt", onp.ones(2)), "dt'\\] must be a scalar or have shape \\(3,\\)"),
    (lambda prm: {k: v for k, v in prm.items() if k != "dt"}, "missing \\['dt'\\]"),
    (lambda prm: [prm], "params must be a dict"),
]


@pytest.mark.parametrize("mutate,match", HOSTILE)
@pytest.mark.parametrize("f", MODES + (diag_kernel,), ids=lambda f: f.__name__)
def test_hostile_parameters(rng, f, mutate, match):
    prm = mutate(system(1, 3, 2, 2))
    arg = 4 if f is diag_kernel else rng.standard_normal((4, 2))
    with pytest.raises(ValueError, match=match):
        f(prm, arg, method="zoh", output="re")


@pytest.mark.parametrize("f", MODES, ids=lambda f: f.__name__)
def test_hostile_sequences_and_options(rng, f):
    prm = system(1, 3, 2, 2)
    u = rng.standard_normal((4, 2))
    cases = [
        (dict(u=rng.standard_normal((4, 3))), "u must have shape \\(T, 2\\) or \\(batch, T, 2\\)"),
        (dict(u=rng.standard_normal((0, 2))), "with T >= 1"),
        (dict(u=rng.standard_normal(4)), "u must have shape"),
        (dict(u=u + 1j), "u must be real"),
        (dict(u=u > 0), "u must be numeric, got a bool"),
        (dict(h0=onp.ones(4)), "h0 must have shape \\(3,\\)"),
        (dict(u=rng.standard_normal((2, 4, 2)), h0=onp.ones((3, 3))), "h0 must have shape \\(3,\\) or \\(2, 3\\)"),
        (dict(h0=onp.array([1.0, onp.nan, 0.0])), "h0 has non-finite"),
        (dict(method="euler"), "method must be one of"),
        (dict(output="real"), "output must be one of"),
        (dict(output=2), "output must be one of"),
    ]
    for change, match in cases:
        kw = dict(u=u, h0=None, method="zoh", output="re") | change
        with pytest.raises(ValueError, match=match):
            f(prm, kw.pop("u"), kw.pop("h0"), **kw)
    with pytest.raises(TypeError):
        f(prm, u, method="zoh")                                  # output has no default: explicit


def test_hostile_kernel_length_and_flags():
    prm = system(1, 3, 2, 2)
    for bad in (0, -3, 2.0, True, None):
        with pytest.raises(ValueError, match="length must be an int"):
            diag_kernel(prm, bad, method="zoh", output="re")
    with pytest.raises(ValueError, match="allow_unstable must be True or False"):
        diag_kernel(prm, 3, method="zoh", output="re", allow_unstable=1)
    with pytest.raises(ValueError, match="dt must be a scalar or have shape \\(3,\\)"):
        diag_discretize(prm["Lambda"], prm["B"], onp.ones(4), "zoh")
    with pytest.raises(ValueError, match="B must have shape \\(3, \\*\\)"):
        diag_discretize(prm["Lambda"], prm["B"][:2], 0.1, "zoh")


def test_bilinear_power_branches_are_continuous_and_differentiable():
    """λ̄^k from (Λ, Δ) by a series (|ΔΛ| ≤ 1/2), atanh, or the reflection λ̄(z) = −λ̄(4/z) (|ΔΛ| > 2)."""
    from ssmref.structured.accurate import bilinear_power
    dt = 0.1
    z = onp.array([0.1j - 0.01, 0.5j, 0.5000001j, -0.3 + 1.0j, 2.0j, 2.0000001j, -1 + 5j, 50j - 0.2, 4000.0j])
    lam = z / dt
    k = onp.arange(21.0)[:, None]
    direct = ((1 + z / 2) / (1 - z / 2)) ** k                        # k ≤ 20: error ≲ 20ε
    assert onp.allclose(bilinear_power(k, dt, lam), direct, rtol=1e-14, atol=0)
    prm = {"Lambda": lam, "B": onp.ones((9, 1)) + 0j, "C": onp.ones((1, 9)) + 1j, "D": onp.zeros((1, 1)), "dt": dt}
    W = onp.random.default_rng(0).standard_normal((21, 1, 1))
    check_grads(lambda x: np.sum(W * diag_kernel(dict(prm, Lambda=x), 21, method="bilinear", output="re",
                                                 allow_unstable=True)), modes=["rev"], order=2)(lam)
