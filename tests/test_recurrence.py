"""The diagonal linear recurrence primitive: equal to the plain loop, gradients exact to order 2."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads

from ssmref.recurrence import linear_recurrence


def loop(a, b, h0):
    """The definition, as a taped Python loop."""
    h, out = h0 + 0 * b[0], []
    for t in range(np.shape(b)[0]):
        h = (a[0] if np.shape(a)[0] == 1 else a[t]) * h + b[t]
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("a_shape", [(7, 3, 4), (1, 3, 4), (7, 1, 4), (1, 1, 4)])
def test_matches_loop_and_gradients(rng, complex_, a_shape):
    def draw(shape):
        return rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_ else 0)
    a, b, h0, W = 0.9 * draw(a_shape), draw((7, 3, 4)), draw((3, 4)), draw((7, 3, 4))
    onp.testing.assert_allclose(linear_recurrence(a, b, h0), loop(a, b, h0), rtol=1e-13, atol=1e-13)

    def loss(run):
        return lambda a, b, h0: (np.real(np.sum(W * run(a, b, h0)))
                                 + np.sum(np.abs(run(a, b, h0)) ** 2))
    for argnum in range(3):
        got = autograd.grad(loss(linear_recurrence), argnum)(a, b, h0)
        want = autograd.grad(loss(loop), argnum)(a, b, h0)
        onp.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    f = loss(linear_recurrence)
    check_grads(lambda a: f(a, b, h0), modes=["rev"], order=2)(a)
    check_grads(lambda b: f(a, b, h0), modes=["rev"], order=2)(b)
    check_grads(lambda h0: f(a, b, h0), modes=["rev"], order=2)(h0)


def test_real_decay_complex_input_gives_real_gradient(rng):
    a = 0.9 * rng.standard_normal((7, 3, 1))
    b = rng.standard_normal((7, 3, 4)) + 1j * rng.standard_normal((7, 3, 4))

    def f(a):
        return np.sum(np.abs(linear_recurrence(a, b)) ** 2)
    g = autograd.grad(f)(a)
    assert g.dtype == onp.float64 and g.shape == a.shape
    check_grads(f, modes=["rev"], order=2)(a)


def test_time_axis_mismatch_is_refused(rng):
    with pytest.raises(ValueError, match="time steps"):
        linear_recurrence(rng.standard_normal((3, 2)), rng.standard_normal((5, 2)))
