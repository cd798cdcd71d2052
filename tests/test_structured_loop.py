"""Every fast form of the complex diagonal SSM equals its plain definition
(:mod:`ssmref.structured.diagonal_loop` with exact arithmetic), values and gradients; the same
loops with a rounding arithmetic are the kit's naive baselines."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmref.structured import (bidirectional, diag_convolve, diag_discretize, diag_kernel,
                               diag_parallel_scan, diag_scan, init_diag, s4d_kernel, s4d_lin)
from ssmref.structured import diagonal_loop as loop
from ssmref.structured.diagonal import output_scale

SCANS = (diag_scan, diag_parallel_scan, diag_convolve)
KEYS = ("Lambda", "B", "C", "D", "dt")


def system(seed, n, m, p, per_state):
    return init_diag(n, m, p, rng=seed, init="random", dt_min=0.02, dt_max=0.5, dt_per_state=per_state)


def rel(a, b):
    return onp.max(onp.abs(onp.asarray(a) - onp.asarray(b))) / max(onp.max(onp.abs(b)), 1e-300)


def args(prm):
    return [prm[k] for k in KEYS]


@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 4), m=st.integers(1, 3), p=st.integers(1, 3),
       T=st.integers(1, 40), batch=st.sampled_from([None, 2]), with_h0=st.booleans(),
       method=st.sampled_from(["zoh", "bilinear"]), output=st.sampled_from(["re", "2re"]),
       per_state=st.booleans())
def test_scans_and_convolution_equal_the_loop(seed, n, m, p, T, batch, with_h0, method, output,
                                              per_state):
    prm = system(seed, n, m, p, per_state)
    rng = onp.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    u = rng.standard_normal(lead + (T, m))
    h0 = rng.standard_normal(lead + (n,)) + 1j * rng.standard_normal(lead + (n,)) if with_h0 else None
    y0, x0 = loop.scan_loop(*args(prm), u, h0, method=method, output=output)
    assert y0.shape == lead + (T, p) and x0.shape == lead + (n,)
    for f in SCANS:
        y, x = f(prm, u, h0, method=method, output=output)
        assert rel(y, y0) < 1e-11 and rel(x, x0) < 1e-11, f.__name__


@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 4), m=st.integers(1, 3), L=st.integers(1, 60),
       method=st.sampled_from(["zoh", "bilinear"]), output=st.sampled_from(["re", "2re"]),
       per_state=st.booleans())
def test_discretization_and_kernel_equal_the_loop(seed, n, m, L, method, output, per_state):
    prm = system(seed, n, m, 2, per_state)
    Lam, B, C, D, dt = args(prm)
    lam_bar, Bbar = diag_discretize(Lam, B, dt, method)
    lam0, Bbar0 = loop.discretize(Lam, B, dt, method)
    assert rel(lam_bar, lam0) < 1e-13 and rel(Bbar, Bbar0) < 1e-11
    K0 = loop.kernel_loop(Lam, B, C, dt, L, method=method, output=output)
    assert K0.shape == (L, 2, m)
    assert rel(diag_kernel(prm, L, method=method, output=output), K0) < 1e-11


def s4d_system(seed, H, N, c):
    rng = onp.random.default_rng(seed)
    return {"Lambda": onp.tile(s4d_lin(N), (H, 1)),
            "B": rng.standard_normal((H, N)) + 1j * rng.standard_normal((H, N)),
            "C": rng.standard_normal((c, H, N)) + 1j * rng.standard_normal((c, H, N)),
            "D": rng.standard_normal((c, H)), "dt": onp.exp(rng.uniform(-5, -1, H))}


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_kernel_equals_the_loop_per_channel(method):
    prm = s4d_system(3, 3, 8, 2)
    dt = onp.repeat(prm["dt"], 8).reshape(3, 8)
    K0 = loop.s4d_kernel_loop(prm["Lambda"], prm["B"], prm["C"], dt, 50, method=method, output="2re")
    assert K0.shape == (2, 3, 50)
    assert rel(s4d_kernel(prm, 50, method=method, output="2re"), K0) < 1e-11


@pytest.mark.parametrize("mode", ["scan", "parallel", "convolve"])
def test_s5_layer_equals_the_loop(mode):
    prm = system(4, 6, 3, 3, True)
    rng = onp.random.default_rng(4)
    Cb = rng.standard_normal((3, 6)) + 1j * rng.standard_normal((3, 6))
    u = rng.standard_normal((2, 30, 3))
    y0 = loop.bidirectional_loop(*args(prm)[:3], Cb, prm["D"], prm["dt"], u, method="zoh", output="2re")
    y = bidirectional(prm, {"C": Cb}, u, method="zoh", output="2re", mode=mode)
    assert y.shape == (2, 30, 3) and rel(y, y0) < 1e-11


def _loss(f, prm, u, h0, W, method, output):
    y, x = f(prm, u, h0, method=method, output=output)
    return np.sum(W * y) + np.sum(np.abs(x) ** 2)


def _loop_scan(prm, u, h0, *, method, output):
    return loop.scan_loop(*args(prm), u, h0, method=method, output=output)


@pytest.mark.parametrize("per_state", [False, True])
@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("output", ["re", "2re"])
def test_gradients_of_every_form_equal_the_loops(method, output, per_state):
    prm = system(7, 3, 2, 2, per_state)
    rng = onp.random.default_rng(7)
    u = rng.standard_normal((2, 12, 2))
    h0 = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    W = rng.standard_normal((2, 12, 2))
    grad = autograd.grad(_loss, argnum=(1, 2, 3))
    want = grad(_loop_scan, prm, u, h0, W, method, output)
    for f in SCANS:
        got = grad(f, prm, u, h0, W, method, output)
        for k in KEYS:
            assert rel(got[0][k], want[0][k]) < 1e-10, (f.__name__, k)
        assert rel(got[1], want[1]) < 1e-10 and rel(got[2], want[2]) < 1e-10, f.__name__

    Wk = rng.standard_normal((15, 2, 2))
    kgrad = autograd.grad(lambda q, f: np.sum(Wk * f(q)))
    want_k = kgrad(prm, lambda q: loop.kernel_loop(q["Lambda"], q["B"], q["C"], q["dt"], 15,
                                                   method=method, output=output))
    got_k = kgrad(prm, lambda q: diag_kernel(q, 15, method=method, output=output))
    for k in ("Lambda", "B", "C", "dt"):
        assert rel(got_k[k], want_k[k]) < 1e-10, k


def test_s4d_and_s5_gradients_equal_the_loops():
    prm = s4d_system(5, 2, 4, 2)
    W = onp.random.default_rng(5).standard_normal((2, 2, 20))
    want = autograd.grad(lambda q: np.sum(W * loop.s4d_kernel_loop(
        q["Lambda"], q["B"], q["C"], np.repeat(q["dt"], 4).reshape(2, 4), 20, method="zoh",
        output="2re")))(prm)
    got = autograd.grad(lambda q: np.sum(W * s4d_kernel(q, 20, method="zoh", output="2re")))(prm)
    for k in ("Lambda", "B", "C", "dt"):
        assert rel(got[k], want[k]) < 1e-10, k

    s5 = system(6, 4, 2, 2, True)
    rng = onp.random.default_rng(6)
    Cb = rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4))
    u, Wy = rng.standard_normal((10, 2)), rng.standard_normal((10, 2))
    want = autograd.grad(lambda q: np.sum(Wy * loop.bidirectional_loop(
        *args(q)[:3], q["Cb"], q["D"], q["dt"], u, method="bilinear", output="re")))(dict(s5, Cb=Cb))
    got = autograd.grad(lambda q: np.sum(Wy * bidirectional(
        {k: q[k] for k in KEYS}, {"C": q["Cb"]}, u, method="bilinear", output="re")))(dict(s5, Cb=Cb))
    for k in KEYS + ("Cb",):
        assert rel(got[k], want[k]) < 1e-10, k


def _to_float32(v):
    v = onp.asarray(v)
    if onp.iscomplexobj(v):
        return v.astype(onp.complex64)
    return v.astype(onp.float32)


@settings(max_examples=20)
@given(seed=st.integers(0, 2 ** 31), method=st.sampled_from(["zoh", "bilinear"]))
def test_the_arithmetic_passed_in_is_the_arithmetic_used(seed, method):
    """With ``rnd`` rounding to float32 every value is a float32 and the result is the exact one to
    float32 accuracy, not to float64's."""
    prm = system(seed, 3, 2, 2, False)
    u = onp.random.default_rng(seed).standard_normal((40, 2))
    y0, _ = loop.scan_loop(*args(prm), u, method=method, output="2re")
    low = [_to_float32(v) for v in args(prm)]
    y, x = loop.scan_loop(*low, _to_float32(u), method=method, output="2re", rnd=_to_float32)
    assert y.dtype == onp.float32 and x.dtype == onp.complex64
    assert 1e-9 < rel(y, y0) < 1e-4
    K = loop.kernel_loop(*low[:3], low[4], 30, method=method, output="re", rnd=_to_float32)
    assert K.dtype == onp.float32
    assert rel(K, loop.kernel_loop(*args(prm)[:3], prm["dt"], 30, method=method, output="re")) < 1e-4
    assert output_scale("2re") == 2.0
