"""Every mode of the dense SSM equals its plain sequence definition
(:func:`ssmref.ssm.recurrent.ssm_loop` with exact arithmetic), values and gradients; with a
rounding arithmetic the same loop is the kit's naive baseline for the sequence kinds."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssmref import ssm as S
from ssmref.ssm.recurrent import ssm_loop, ssm_step_core

MODES = list(S.MODES.items())


def rel(a, b):
    return onp.max(onp.abs(onp.asarray(a) - onp.asarray(b))) / max(onp.max(onp.abs(b)), 1e-300)


def system(rng, m, n, p):
    return S.init_ssm(m, n, p, rng=rng, scale=float(rng.uniform(0.0, 0.95)))


@given(seed=st.integers(0, 2 ** 32 - 1), T=st.integers(1, 80), batch=st.sampled_from([None, 2]),
       with_h0=st.booleans(), m=st.integers(1, 3), n=st.integers(1, 6), p=st.integers(1, 3))
def test_every_mode_equals_the_loop(seed, T, batch, with_h0, m, n, p):
    rng = onp.random.default_rng(seed)
    params = system(rng, m, n, p)
    lead = () if batch is None else (batch,)
    u = rng.standard_normal(lead + (T, m))
    h0 = rng.standard_normal(lead + (n,)) if with_h0 else None
    y0, H = ssm_loop(params, u, h0)
    assert y0.shape == lead + (T, p) and H.shape == lead + (T, n)
    for name, f in MODES:
        y, h_last = f(params, u, h0)
        assert rel(y, y0) < 1e-10 and rel(h_last, H[..., -1, :]) < 1e-10, name


def test_the_loop_is_the_step_repeated():
    rng = onp.random.default_rng(3)
    params = system(rng, 2, 4, 3)
    u, h = rng.standard_normal((2, 9, 2)), rng.standard_normal((2, 4))
    y0, H = ssm_loop(params, u, h)
    for t in range(9):
        y, h = ssm_step_core(params, h, u[:, t])
        assert rel(y, y0[:, t]) < 1e-14 and rel(h, H[:, t]) < 1e-14


@pytest.mark.parametrize("name,f", MODES, ids=[n for n, _ in MODES])
def test_gradients_of_every_mode_equal_the_loops(name, f):
    rng = onp.random.default_rng(11)
    params = system(rng, 2, 3, 2)
    u, h0 = rng.standard_normal((2, 15, 2)), rng.standard_normal((2, 3))
    W, V = rng.standard_normal((2, 15, 2)), rng.standard_normal((2, 3))

    def loss(run, prm, x, h):
        y, h_last = run(prm, x, h)
        return np.sum(W * y) + np.sum(V * h_last)

    def loop_run(prm, x, h):
        y, H = ssm_loop(prm, x, h)
        return y, H[..., -1, :]

    grad = autograd.grad(loss, argnum=(1, 2, 3))
    want, got = grad(loop_run, params, u, h0), grad(f, params, u, h0)
    for k in S.PARAM_NAMES:
        assert rel(got[0][k], want[0][k]) < 1e-10, k
    assert rel(got[1], want[1]) < 1e-10 and rel(got[2], want[2]) < 1e-10


def test_the_arithmetic_passed_in_is_the_arithmetic_used():
    rng = onp.random.default_rng(5)
    params = system(rng, 2, 5, 2)
    u = rng.standard_normal((40, 2))
    y0, _ = ssm_loop(params, u)
    low = {k: v.astype(onp.float32) for k, v in params.items()}
    y, H = ssm_loop(low, u.astype(onp.float32), onp.zeros(5, dtype=onp.float32),
                    lambda v: onp.asarray(v, dtype=onp.float32))
    assert y.dtype == onp.float32 and H.dtype == onp.float32
    assert 1e-10 < rel(y, y0) < 1e-4
