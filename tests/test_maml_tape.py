"""The shorter MAML tape: tracing per leaf (no DictBox), the fused inner step and the tiling
primitive give autograd's derivatives at every order, and fewer nodes."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from autograd.core import VJPNode
from autograd.test_util import check_grads
from autograd.tracer import toposort, trace

from ssmref import maml
from ssmref import params as P
from ssmref.nn import mlp_init


def batched_mse_loss(params, data):
    """``(N,)`` per-task MSE of an MLP (ReLU, linear output) whose leaves carry a task axis (the
    sinusoid benchmark's loss, written here so that this test does not depend on where it lives)."""
    x, y = data                                                     # (N, k, 1) each
    h, n = x, len(params)
    for i in range(n):
        layer = params[f"layer{i}"]
        h = np.matmul(h, np.swapaxes(layer["W"], 1, 2)) + layer["b"][:, None, :]
        h = np.maximum(h, 0.0) if i < n - 1 else h
    return np.mean((h - y) ** 2, axis=(1, 2))


def _loss(theta):
    """Uses every leaf but ``unused``, nonlinearly, and reads one leaf twice."""
    return (np.sum(np.tanh(theta["a"]["W"] @ theta["b"]) ** 2) + np.sum(theta["a"]["W"] ** 3)
            + theta["c"] * np.sum(theta["b"]))


def _tree(rng):
    return {"a": {"W": rng.standard_normal((3, 2))}, "b": rng.standard_normal(2), "c": 0.7,
            "unused": rng.standard_normal(4)}


def test_tree_vjp_equals_autograd_on_the_dict(rng):
    theta = _tree(rng)
    value, grads = maml.value_and_grad_tree(_loss, theta)
    want_value, want = autograd.value_and_grad(_loss)(theta)
    assert value == want_value
    for got, ref in zip(P.tree_leaves(grads), P.tree_leaves(want)):
        onp.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)
    assert onp.all(grads["unused"] == 0) and grads["unused"].shape == (4,)


def test_tree_vjp_is_differentiable_to_second_order(rng):
    """An enclosing grad through _tree_vjp's gradient (what MAML's second order does) equals the
    same through autograd.grad of the dict."""
    theta, v = _tree(rng), {"a": {"W": rng.standard_normal((3, 2))}, "b": rng.standard_normal(2)}

    def through(gradient):
        def f(W):
            g = gradient(dict(theta, a={"W": W}))
            return np.sum(g["a"]["W"] * v["a"]["W"]) + np.sum(g["b"] * v["b"]) + g["c"]
        return f
    ours = through(lambda t: maml.value_and_grad_tree(_loss, t)[1])
    ref = through(autograd.grad(_loss))
    W = theta["a"]["W"]
    onp.testing.assert_allclose(autograd.grad(ours)(W), autograd.grad(ref)(W), rtol=1e-14)
    check_grads(ours, modes=["rev"], order=2)(W)


def test_tree_vjp_of_a_constant(rng):
    theta = _tree(rng)
    value, grads = maml.value_and_grad_tree(lambda t: 3.0, theta)
    assert value == 3.0 and all(onp.all(g == 0) for g in P.tree_leaves(grads))


@pytest.mark.parametrize("alpha_shape", [(), (1, 2), (3, 2), (3, 1)])
def test_fused_sgd_step_derivatives(rng, alpha_shape):
    p, g = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    alpha = rng.standard_normal(alpha_shape)
    W = rng.standard_normal((3, 2))

    def f(p, g, alpha):
        return np.sum(W * np.sin(maml._sgd(p, g, alpha)))

    def ref(p, g, alpha):
        return np.sum(W * np.sin(p - alpha * g))
    for argnum in range(3):
        onp.testing.assert_allclose(autograd.grad(f, argnum)(p, g, alpha),
                                    autograd.grad(ref, argnum)(p, g, alpha), rtol=1e-15)
    check_grads(lambda p: f(p, g, alpha), modes=["rev"], order=2)(p)
    check_grads(lambda g: f(p, g, alpha), modes=["rev"], order=2)(g)
    check_grads(lambda alpha: f(p, g, alpha), modes=["rev"], order=2)(alpha)


def test_tile_params_derivatives(rng):
    theta = {"W": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}
    W = rng.standard_normal((4, 2, 3))

    def f(Wp):
        tiled = maml.tile_params(dict(theta, W=Wp), 4)
        return np.sum(np.cos(tiled["W"]) * W) + np.sum(tiled["b"] ** 2)
    tiled = maml.tile_params(theta, 4)
    assert tiled["W"].shape == (4, 2, 3) and onp.all(tiled["W"] == theta["W"])
    check_grads(f, modes=["rev"], order=2)(theta["W"])


def test_sinusoid_meta_gradient_tape_is_shorter_and_equal(rng):
    """The batched sinusoid meta-gradient: the same numbers as autograd.value_and_grad over the
    dict with the broadcast-sum tiling and the two-node step (the implementation before), to a
    few ulps, from a shorter outer tape."""
    params = mlp_init([1, 8, 8, 1], rng=rng)
    data = [(rng.standard_normal((5, 4, 1)), rng.standard_normal((5, 4, 1))) for _ in range(2)]

    def before(theta):                       # the pre-issue-13 form, written out
        tiled = P.tree_map(lambda p: p[None] + np.zeros((5,) + np.shape(p)), theta)
        g = autograd.grad(lambda t: np.sum(batched_mse_loss(t, data[0])))(tiled)
        fast = P.tree_map(lambda p, g: p - 0.01 * g, tiled, g)
        return np.mean(batched_mse_loss(fast, data[1]))
    F, g = maml.batched_meta_gradient(params, batched_mse_loss, *data, num_tasks=5, inner_lr=0.01)
    F_ref, g_ref = autograd.value_and_grad(before)(params)
    assert abs(F - F_ref) <= 1e-15 * abs(F_ref)
    for a, b in zip(P.tree_leaves(g), P.tree_leaves(g_ref)):
        assert onp.max(onp.abs(a - b)) <= 1e-14 * onp.max(onp.abs(b))

    def nodes(f):
        _, end = trace(VJPNode.new_root(), f, params)
        return len(list(toposort(end)))
    ours = nodes(lambda t: maml.batched_meta_loss_core(t, batched_mse_loss, *data, 5, 0.01, 1, False))
    assert ours <= nodes(before) - 30, (ours, nodes(before))          # 86 vs 125 when written
