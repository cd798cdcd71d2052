"""The adjoint primitives: the dense recurrence (loop and log-depth scan) and the FFT convolution
equal their definitions, record one autograd node per call, and their derivatives of first,
second (and, for the primitives, third) order match central differences and the taped loops."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from autograd.core import VJPNode
from autograd.test_util import check_grads
from autograd.tracer import toposort, trace

from ssmref import ssm as S
from ssmref.recurrence import dense_recurrence
from ssmref.ssm.convolution import fft_conv


def taped_loop(A, V, h0, reverse=False):
    """The definition as a Python loop of autograd operations (one taped step per time step)."""
    h = 0.0 * V[0] if h0 is None else h0 + 0.0 * V[0]
    out = []
    for t in (range(np.shape(V)[0])[::-1] if reverse else range(np.shape(V)[0])):
        h = np.dot(h, A.T) + V[t]
        out.append(h)
    return np.stack(out[::-1] if reverse else out)


def taped_ssm(params, u, h0=None):
    """The SSM as the pre-primitive definition: the unchecked step, looped and taped."""
    n = np.shape(params["A"])[0]
    h = np.zeros(np.shape(u)[:-2] + (n,)) if h0 is None else h0
    ys = []
    for t in range(np.shape(u)[-2]):
        h = np.dot(h, params["A"].T) + np.dot(u[..., t, :], params["B"].T)
        ys.append(np.dot(h, params["C"].T) + np.dot(u[..., t, :], params["D"].T))
    return np.stack(ys, axis=-2), h


def direct_conv(K, u):
    T = np.shape(u)[-2]
    return onp.stack([sum(u[..., t - k, :] @ K[k].T for k in range(t + 1)) for t in range(T)], -2)


def tape_size(f, x):
    """Number of nodes autograd records for ``f(x)``."""
    _, end = trace(VJPNode.new_root(), f, x)
    return len(list(toposort(end)))


FORMS = [dict(parallel=p, reverse=r) for p in (False, True) for r in (False, True)]
FORM_IDS = [f"parallel={f['parallel']},reverse={f['reverse']}" for f in FORMS]


# ----------------------------------------------------------------------------- dense recurrence

@pytest.mark.parametrize("form", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("T", [1, 2, 5, 8, 13])
def test_dense_recurrence_equals_loop(rng, form, T):
    A = 0.6 * rng.standard_normal((3, 3))
    V = rng.standard_normal((T, 2, 3))
    for h0 in (None, rng.standard_normal(3), rng.standard_normal((2, 3))):
        want = taped_loop(A, V, h0, form["reverse"])
        onp.testing.assert_allclose(dense_recurrence(A, V, h0, **form), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("form", FORMS, ids=FORM_IDS)
def test_dense_recurrence_gradients(rng, form):
    A, V, W = 0.6 * rng.standard_normal((3, 3)), rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 3))
    h0 = rng.standard_normal(3)

    def loss(run):
        return lambda A, V, h0: np.sum(W * run(A, V, h0)) + np.sum(np.sin(run(A, V, h0)) ** 2)
    ours = loss(lambda A, V, h0: dense_recurrence(A, V, h0, **form))
    ref = loss(lambda A, V, h0: taped_loop(A, V, h0, form["reverse"]))
    for argnum in range(3):
        onp.testing.assert_allclose(autograd.grad(ours, argnum)(A, V, h0),
                                    autograd.grad(ref, argnum)(A, V, h0), rtol=1e-11, atol=1e-12)
    check_grads(lambda A: ours(A, V, h0), modes=["rev"], order=3)(A)
    check_grads(lambda V: ours(A, V, h0), modes=["rev"], order=2)(V)
    check_grads(lambda h0: ours(A, V, h0), modes=["rev"], order=2)(h0)


@pytest.mark.parametrize("parallel", [False, True])
def test_dense_recurrence_complex_and_batch_dims(rng, parallel):
    A = 0.5 * (rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)))
    V = rng.standard_normal((5, 2, 2, 3)) + 1j * rng.standard_normal((5, 2, 2, 3))
    h0 = rng.standard_normal((2, 1, 3))
    onp.testing.assert_allclose(dense_recurrence(A, V, h0, parallel=parallel),
                                taped_loop(A, V, h0), rtol=1e-12, atol=1e-13)

    def f(A, h0):
        return np.sum(np.abs(dense_recurrence(A, V, h0, parallel=parallel)) ** 2)
    g = autograd.grad(f, 1)(A, h0)
    assert g.dtype == onp.float64 and g.shape == h0.shape           # real h0: a real gradient
    check_grads(lambda A: f(A, h0), modes=["rev"], order=2)(A)
    check_grads(lambda h0: f(A, h0), modes=["rev"], order=2)(h0)


def test_dense_recurrence_bad_shapes(rng):
    with pytest.raises(ValueError, match="A must be"):
        dense_recurrence(rng.standard_normal((3, 2)), rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match="A must be"):
        dense_recurrence(rng.standard_normal((3, 3)), rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match="h0 must"):
        dense_recurrence(rng.standard_normal((3, 3)), rng.standard_normal((4, 2, 3)),
                         rng.standard_normal((3, 3)))


# ----------------------------------------------------------------------------- FFT convolution

@pytest.mark.parametrize("u_shape", [(7, 3), (2, 7, 3), (2, 1, 7, 3)])
def test_fft_conv_equals_sum_and_gradients(rng, u_shape):
    K, u = rng.standard_normal((7, 2, 3)), rng.standard_normal(u_shape)
    onp.testing.assert_allclose(fft_conv(K, u), direct_conv(K, u), rtol=1e-12, atol=1e-13)
    W = rng.standard_normal(u_shape[:-1] + (2,))

    def f(K, u):
        z = fft_conv(K, u)
        return np.sum(W * z) + np.sum(z ** 2) * np.sum(K ** 2)
    check_grads(lambda K: f(K, u), modes=["rev"], order=3)(K)
    check_grads(lambda u: f(K, u), modes=["rev"], order=2)(u)


# ----------------------------------------------------------------------------- the SSM modes

def test_tapes_do_not_grow_with_length(rng):
    """One node per primitive call: the tapes of the scan and the parallel scan have the same size
    for any T, the convolution's grows by a constant per doubling of T (the powers of A), while
    the taped step loop records a few nodes per step."""
    params = S.init_ssm(2, 3, 2, rng=rng, scale=0.9)
    runs = dict(S.MODES, taped=taped_ssm)
    sizes = {name: [tape_size(lambda p: np.sum(run(p, rng.standard_normal((2, T, 2)),
                                                   onp.ones(3))[0] ** 2), params)
                    for T in (8, 64, 512)] for name, run in runs.items()}
    assert sizes["scan"][0] == sizes["scan"][2] < 30, sizes
    assert sizes["parallel"][0] == sizes["parallel"][2] < 30, sizes
    c = sizes["convolve"]
    assert c[2] - c[1] == c[1] - c[0] and c[2] < 100, sizes          # O(log T)
    assert sizes["taped"][2] > 512 * 4, sizes


@pytest.mark.parametrize("mode", S.MODES)
def test_modes_match_taped_definition_to_second_order(rng, mode):
    """The gradient and a Hessian-vector product (what MAML's second order needs) of every mode
    equal those of the taped step loop (the pre-primitive definition), w.r.t. all six arguments."""
    params = S.init_ssm(2, 4, 3, rng=rng, scale=0.95)
    u, h0 = rng.standard_normal((2, 21, 2)), rng.standard_normal((2, 4))
    W = rng.standard_normal((2, 21, 3))
    theta = dict(params, u=u, h0=h0)
    v = {k: rng.standard_normal(onp.shape(x)) for k, x in theta.items()}

    def loss(run):
        def f(th):
            y, h = run({k: th[k] for k in "ABCD"}, th["u"], th["h0"])
            return np.sum(W * np.tanh(y)) + np.sum(h ** 2)
        return f

    def gradient(run):
        return autograd.grad(loss(run))

    def hvp(run):                # ∇ <∇f(θ), v> = H v
        return autograd.grad(lambda th: sum(np.sum(g * v[k]) for k, g in gradient(run)(th).items()))
    for derivative in (gradient, hvp):
        want, got = derivative(taped_ssm)(theta), derivative(S.MODES[mode])(theta)
        for k in theta:
            scale = onp.max(onp.abs(want[k]))
            assert onp.max(onp.abs(got[k] - want[k])) <= 1e-11 * scale, (derivative.__name__, k)


def test_ssm_modes_benchmark_runs(capsys):
    """benchmarks/ssm_modes.py (its table) runs: the three modes, checked against each other."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "ssm_modes.py"
    spec = importlib.util.spec_from_file_location("ssm_modes_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--lengths", "8", "16", "--repeats", "1", "--no-torch", "--no-jax"])
    out = capsys.readouterr().out
    assert "| 16 |" in out and "ssmref convolve" in out
