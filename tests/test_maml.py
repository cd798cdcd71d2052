"""Tests for ssmref.maml: MAML / FOMAML / Meta-SGD meta-gradients.

Independent forms checked against each other:
* autograd meta-gradient vs central differences of ``meta_loss`` (params and Meta-SGD ``α``);
* autograd meta-gradient vs the explicit product ``(I − H_0 A) ⋯ (I − H_{K−1} A) ∇L_q(θ_K)``,
  built from explicit Hessian matrices (flat vectors) and, for one step, from Hessian-vector
  products on trees;
* first order vs the query gradient at the adapted parameters.

The model is a tiny tanh MLP regression with a nested parameter tree (including a 0-d leaf).
"""

import copy

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad, hessian
from autograd.test_util import check_grads
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmref.maml import adapt, meta_gradient, meta_loss, stop_gradient
from ssmref.params import global_norm, ravel, tree_allclose, tree_leaves, tree_map, tree_vdot

N_IN, N_HID = 2, 5


# ---------------------------------------------------------------------------------------------
# Problem: tanh MLP regression, float64, small
# ---------------------------------------------------------------------------------------------

def mlp(params, X):
    """``y = v · tanh(X W + b) + c``; ``X: (N, N_IN)`` -> ``(N,)``."""
    h = np.tanh(np.dot(X, params["hidden"]["W"]) + params["hidden"]["b"])   # (N, N_HID)
    return np.dot(h, params["out"]["v"]) + params["out"]["c"]                # (N,)


def mse(params, data):
    X, y = data
    return np.mean((mlp(params, X) - y) ** 2)


def init_params(rng):
    return {"hidden": {"W": rng.normal(size=(N_IN, N_HID)), "b": 0.5 * rng.normal(size=N_HID)},
            "out": {"v": rng.normal(size=N_HID), "c": onp.array(0.3 * rng.normal())}}


def make_task(rng, n=6):
    """A sinusoid-like regression task: support and query from the same random function."""
    amp, phase, freq = rng.uniform(0.5, 2.0), rng.uniform(0, onp.pi), rng.normal(size=N_IN)

    def draw():
        X = rng.uniform(-2, 2, size=(n, N_IN))
        return X, amp * onp.sin(X @ freq + phase)

    return draw(), draw()


def make_problem(rng, n_tasks=3):
    return init_params(rng), [make_task(rng) for _ in range(n_tasks)]


def meta_sgd_lr(rng, params):
    """Per-parameter positive ``α``, mixing full-shape, broadcast and scalar leaves."""
    return {"hidden": {"W": rng.uniform(0.05, 0.3, size=(1, N_HID)),       # broadcasts to (2, 5)
                       "b": rng.uniform(0.05, 0.3, size=N_HID)},
            "out": {"v": rng.uniform(0.05, 0.3, size=N_HID),
                    "c": onp.array(rng.uniform(0.05, 0.3))}}


def full_lr(inner_lr, params):
    """``α`` broadcast to every parameter's shape (the diagonal of ``A``)."""
    if isinstance(inner_lr, dict):
        return tree_map(lambda a, p: onp.broadcast_to(a, onp.shape(p)) * 1.0, inner_lr, params)
    return tree_map(lambda p: onp.full(onp.shape(p), float(inner_lr)), params)


def random_tree(rng, like):
    return tree_map(lambda p: rng.normal(size=onp.shape(p)), like)


def axpy(a, x, y):
    """``y + a x`` on trees."""
    return tree_map(lambda xi, yi: yi + a * xi, x, y)


def central_difference(f, x, d, eps=1e-5):
    """``(f(x + eps d) − f(x − eps d)) / (2 eps)``; ``x``, ``d`` trees or floats."""
    if isinstance(x, dict):
        return (f(axpy(eps, d, x)) - f(axpy(-eps, d, x))) / (2 * eps)
    return (f(x + eps * d) - f(x - eps * d)) / (2 * eps)


def assert_directional(f, g, x, d, rtol=1e-6):
    """The directional derivative ``<g, d>`` matches central differences of ``f`` at ``x``.

    Relative to ``‖g‖ ‖d‖`` (the Cauchy–Schwarz bound of ``<g, d>``), robust to cancellations.
    """
    if isinstance(x, dict):
        analytic, scale = tree_vdot(g, d), global_norm(g) * global_norm(d)
    else:
        analytic, scale = g * d, abs(g * d)
    numeric = central_difference(f, x, d)
    assert abs(numeric - analytic) <= rtol * scale, (numeric, analytic, scale)


def basis_directions(params):
    """One unit direction per leaf (its first entry), plus the last entry of the largest leaf."""
    vec, unravel = ravel(params)
    starts = onp.cumsum([0] + [onp.size(x) for x in tree_leaves(params)])[:-1]
    return [unravel(onp.eye(vec.size)[i]) for i in list(starts) + [vec.size - 1]]


def brute_force_adapt(params, support, alpha, steps):
    """The inner loop written out on plain arrays (no ssmref.maml): list ``[θ_0, …, θ_K]``."""
    thetas = [params]
    for _ in range(steps):
        g = grad(mse)(thetas[-1], support)
        thetas.append(tree_map(lambda p, gi, a: p - a * gi, thetas[-1], g, alpha))
    return thetas


# ---------------------------------------------------------------------------------------------
# Meta-gradient vs central differences
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("lr_kind", ["scalar", "meta_sgd"])
def test_meta_gradient_matches_central_differences(rng, steps, lr_kind):
    params, tasks = make_problem(rng)
    inner_lr = 0.2 if lr_kind == "scalar" else meta_sgd_lr(rng, params)
    value, g = meta_gradient(params, mse, tasks, inner_lr=inner_lr, steps=steps)

    def f(theta):
        return meta_loss(theta, mse, tasks, inner_lr=inner_lr, steps=steps)

    assert value == pytest.approx(f(params), rel=1e-14)
    directions = [random_tree(rng, params) for _ in range(3)] + basis_directions(params)
    for d in directions:
        assert_directional(f, g, params, d)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_meta_sgd_lr_gradient_matches_central_differences(rng, steps):
    params, tasks = make_problem(rng)
    alpha = meta_sgd_lr(rng, params)
    _, (g_theta, g_alpha) = meta_gradient(params, mse, tasks, inner_lr=alpha, steps=steps,
                                          wrt_inner_lr=True)
    # g_alpha has the shapes of alpha's leaves (broadcast axes summed), not the params' shapes
    for a, ga in zip(tree_leaves(alpha), tree_leaves(g_alpha)):
        assert onp.shape(ga) == onp.shape(a)
    _, g_only = meta_gradient(params, mse, tasks, inner_lr=alpha, steps=steps)
    assert all(onp.allclose(x, y, rtol=1e-13, atol=0)
               for x, y in zip(tree_leaves(g_theta), tree_leaves(g_only)))

    def f(a):
        return meta_loss(params, mse, tasks, inner_lr=a, steps=steps)

    for d in [random_tree(rng, alpha) for _ in range(3)] + basis_directions(alpha):
        assert_directional(f, g_alpha, alpha, d)


@pytest.mark.parametrize("steps", [1, 3])
def test_scalar_lr_gradient_matches_central_differences(rng, steps):
    params, tasks = make_problem(rng)
    _, (_, g_alpha) = meta_gradient(params, mse, tasks, inner_lr=0.15, steps=steps,
                                    wrt_inner_lr=True)
    assert onp.ndim(g_alpha) == 0
    assert_directional(lambda a: meta_loss(params, mse, tasks, inner_lr=a, steps=steps),
                       float(g_alpha), 0.15, 1.0)


def test_meta_loss_second_derivatives(rng):
    """meta_loss is differentiable twice more (third derivatives of the loss), by autograd."""
    params, tasks = make_problem(rng, n_tasks=1)
    check_grads(lambda th: meta_loss(th, mse, tasks, inner_lr=0.1, steps=1),
                modes=["rev"], order=2)(params)


# ---------------------------------------------------------------------------------------------
# Meta-gradient vs the explicit formula
# ---------------------------------------------------------------------------------------------

def hvp(f, theta, u, data):
    """``∇²_θ f(θ, data) u`` as the gradient of ``<∇f, u>`` (trees)."""
    return grad(lambda t: tree_vdot(grad(f)(t, data), u))(theta)


@pytest.mark.parametrize("lr_kind", ["scalar", "meta_sgd"])
def test_one_step_equals_explicit_formula_with_hvps(rng, lr_kind):
    """One step: ``∇_θ F = mean_i (I − H_s(θ) A) ∇L_q(θ'_i)``, ``A = diag(α)`` on the right."""
    params, tasks = make_problem(rng)
    inner_lr = 0.25 if lr_kind == "scalar" else meta_sgd_lr(rng, params)
    alpha = full_lr(inner_lr, params)
    _, g = meta_gradient(params, mse, tasks, inner_lr=inner_lr, steps=1)

    expected, wrong_side = [], []
    for support, query in tasks:
        fast = brute_force_adapt(params, support, alpha, 1)[-1]
        v = grad(mse)(fast, query)
        alpha_v = tree_map(lambda a, x: a * x, alpha, v)
        expected.append(axpy(-1.0, hvp(mse, params, alpha_v, support), v))          # v − H (α⊙v)
        h_v = hvp(mse, params, v, support)
        wrong_side.append(tree_map(lambda x, a, hv: x - a * hv, v, alpha, h_v))   # v − α⊙(H v)
    expected = tree_map(lambda *xs: sum(xs) / len(xs), *expected)
    wrong_side = tree_map(lambda *xs: sum(xs) / len(xs), *wrong_side)

    err = global_norm(axpy(-1.0, expected, g))
    assert err <= 1e-12 * global_norm(expected)
    if lr_kind == "meta_sgd":
        # the side on which α multiplies matters, and the test can tell the two apart
        gap = global_norm(axpy(-1.0, wrong_side, expected))
        assert gap > 1e-3 * global_norm(expected)


def test_one_step_lr_gradient_equals_explicit_formula(rng):
    """One step, Meta-SGD: ``∂F/∂α = −mean_i ∇L_s(θ) ⊙ ∇L_q(θ'_i)`` (full-shape ``α``)."""
    params, tasks = make_problem(rng)
    alpha = full_lr(meta_sgd_lr(rng, params), params)
    _, (_, g_alpha) = meta_gradient(params, mse, tasks, inner_lr=alpha, steps=1,
                                    wrt_inner_lr=True)
    terms = []
    for support, query in tasks:
        g_s = grad(mse)(params, support)
        v = grad(mse)(brute_force_adapt(params, support, alpha, 1)[-1], query)
        terms.append(tree_map(lambda a, b: -a * b, g_s, v))
    expected = tree_map(lambda *xs: sum(xs) / len(xs), *terms)
    assert global_norm(axpy(-1.0, expected, g_alpha)) <= 1e-12 * global_norm(expected)


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("lr_kind", ["scalar", "meta_sgd"])
def test_multi_step_equals_hessian_product(rng, steps, lr_kind):
    """``∇_θ F = mean_i (I − H_0 A)(I − H_1 A) ⋯ (I − H_{K−1} A) ∇L_q(θ_K)``, explicit matrices."""
    params, tasks = make_problem(rng)
    inner_lr = 0.2 if lr_kind == "scalar" else meta_sgd_lr(rng, params)
    a_vec, _ = ravel(full_lr(inner_lr, params))                       # diagonal of A, (P,)
    x0, unravel = ravel(params)                                       # (P,)
    _, g = meta_gradient(params, mse, tasks, inner_lr=inner_lr, steps=steps)

    expected = onp.zeros_like(x0)
    for support, query in tasks:
        def loss_s(x):
            return mse(unravel(x), support)

        xs = [x0]
        for _ in range(steps):
            xs.append(xs[-1] - a_vec * grad(loss_s)(xs[-1]))
        v = grad(lambda x: mse(unravel(x), query))(xs[-1])             # (P,)
        for k in reversed(range(steps)):                               # rightmost factor first
            H = hessian(loss_s)(xs[k])                                 # (P, P)
            v = v - H @ (a_vec * v)
        expected += v / len(tasks)
    assert onp.allclose(ravel(g)[0], expected, rtol=1e-11, atol=1e-13 * onp.abs(expected).max())


# ---------------------------------------------------------------------------------------------
# First order
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("lr_kind", ["scalar", "meta_sgd"])
def test_first_order_is_query_gradient_at_adapted_params(rng, steps, lr_kind):
    params, tasks = make_problem(rng)
    inner_lr = 0.2 if lr_kind == "scalar" else meta_sgd_lr(rng, params)
    alpha = full_lr(inner_lr, params)
    value, (g, g_alpha) = meta_gradient(params, mse, tasks, inner_lr=inner_lr, steps=steps,
                                        first_order=True, wrt_inner_lr=True)
    assert value == pytest.approx(meta_loss(params, mse, tasks, inner_lr=inner_lr, steps=steps),
                                  rel=1e-14)
    g_expected, ga_expected = [], []
    for support, query in tasks:
        thetas = brute_force_adapt(params, support, alpha, steps)
        v = grad(mse)(thetas[-1], query)
        g_expected.append(v)
        g_sum = tree_map(lambda *xs: sum(xs), *[grad(mse)(t, support) for t in thetas[:-1]])
        ga_expected.append(tree_map(lambda a, b: -a * b, g_sum, v))   # −Σ_k g_k ⊙ v
    g_expected = tree_map(lambda *xs: sum(xs) / len(xs), *g_expected)
    ga_full = tree_map(lambda *xs: sum(xs) / len(xs), *ga_expected)
    assert global_norm(axpy(-1.0, g_expected, g)) <= 1e-12 * global_norm(g_expected)
    # ∂F/∂α: the full-shape gradient summed over the axes α was broadcast along
    if lr_kind == "scalar":
        ga_reduced = sum(onp.sum(x) for x in tree_leaves(ga_full))
    else:
        ga_reduced = tree_map(lambda gf, a: onp.sum(gf, axis=tuple(
            i for i, (n, m) in enumerate(zip(onp.shape(gf), onp.shape(a))) if n != m),
            keepdims=True).reshape(onp.shape(a)), ga_full, inner_lr)
    assert onp.allclose(ravel(ga_reduced)[0] if isinstance(ga_reduced, dict) else ga_reduced,
                        ravel(g_alpha)[0] if isinstance(g_alpha, dict) else g_alpha,
                        rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_differs_from_first_order(rng, steps):
    params, tasks = make_problem(rng)
    _, g2 = meta_gradient(params, mse, tasks, inner_lr=0.3, steps=steps)
    _, g1 = meta_gradient(params, mse, tasks, inner_lr=0.3, steps=steps, first_order=True)
    assert global_norm(axpy(-1.0, g1, g2)) > 0.05 * global_norm(g2)


def test_stop_gradient_blocks_all_orders():
    f = lambda x: x ** 2 + stop_gradient(x) ** 3                       # noqa: E731
    assert grad(f)(2.0) == pytest.approx(4.0)
    assert grad(grad(f))(2.0) == pytest.approx(2.0)
    t = {"a": onp.ones(2)}
    assert grad(lambda p: np.sum(stop_gradient(p)["a"]) + np.sum(p["a"]))(t)["a"].tolist() == [1, 1]


# ---------------------------------------------------------------------------------------------
# Edge cases, invariants, purity
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("first_order", [False, True])
def test_zero_steps_is_query_loss_at_theta(rng, first_order):
    params, tasks = make_problem(rng)
    value, g = meta_gradient(params, mse, tasks, inner_lr=0.3, steps=0, first_order=first_order)
    assert value == pytest.approx(sum(mse(params, q) for _, q in tasks) / len(tasks), rel=1e-14)
    expected = tree_map(lambda *xs: sum(xs) / len(xs), *[grad(mse)(params, q) for _, q in tasks])
    assert global_norm(axpy(-1.0, expected, g)) <= 1e-14 * global_norm(expected)
    fast = adapt(params, mse, tasks[0][0], inner_lr=0.3, steps=0)
    assert fast is not params and ravel(fast)[0].tolist() == ravel(params)[0].tolist()


def test_zero_lr_is_query_loss_at_theta(rng):
    params, tasks = make_problem(rng)
    value, g = meta_gradient(params, mse, tasks, inner_lr=0.0, steps=2)
    _, g0 = meta_gradient(params, mse, tasks, inner_lr=0.0, steps=0)
    assert onp.allclose(ravel(g)[0], ravel(g0)[0], rtol=1e-14, atol=0)


def test_adapt_matches_brute_force(rng):
    params, tasks = make_problem(rng)
    alpha = meta_sgd_lr(rng, params)
    fast = adapt(params, mse, tasks[0][0], inner_lr=alpha, steps=3)
    ref = brute_force_adapt(params, tasks[0][0], full_lr(alpha, params), 3)[-1]
    assert onp.allclose(ravel(fast)[0], ravel(ref)[0], rtol=1e-14, atol=0)
    assert mse(fast, tasks[0][0]) < mse(params, tasks[0][0])          # adaptation helps


def test_inputs_not_mutated(rng):
    params, tasks = make_problem(rng)
    alpha = meta_sgd_lr(rng, params)
    saved = copy.deepcopy((params, tasks, alpha))
    adapt(params, mse, tasks[0][0], inner_lr=alpha, steps=2)
    meta_loss(params, mse, tasks, inner_lr=alpha, steps=2)
    for fo in (False, True):
        meta_gradient(params, mse, tasks, inner_lr=alpha, steps=2, first_order=fo,
                      wrt_inner_lr=True)
    for before, after in ((saved[0], params), (saved[2], alpha)):
        assert ravel(before)[0].tolist() == ravel(after)[0].tolist()
    for (s0, q0), (s1, q1) in zip(saved[1], tasks):
        for x0, x1 in zip(s0 + q0, s1 + q1):
            assert onp.array_equal(x0, x1)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lr=st.floats(0.01, 0.4), steps=st.integers(0, 3))
def test_scalar_lr_equals_uniform_meta_sgd(seed, lr, steps):
    """A float ``α`` and a Meta-SGD tree filled with that float give the same ∇_θ F, and the
    float's gradient is the sum of the tree's gradients (chain rule through ``α_i = α``)."""
    r = onp.random.default_rng(seed)
    params, tasks = make_problem(r, n_tasks=2)
    v1, (g1, ga1) = meta_gradient(params, mse, tasks, inner_lr=lr, steps=steps, wrt_inner_lr=True)
    v2, (g2, ga2) = meta_gradient(params, mse, tasks, inner_lr=full_lr(lr, params), steps=steps,
                                  wrt_inner_lr=True)
    assert v1 == pytest.approx(v2, rel=1e-13)
    assert onp.allclose(ravel(g1)[0], ravel(g2)[0], rtol=1e-11, atol=1e-13)
    assert float(ga1) == pytest.approx(float(onp.sum(ravel(ga2)[0])), rel=1e-10, abs=1e-13)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), repeat=st.integers(1, 3))
def test_meta_loss_is_a_mean_over_tasks(seed, repeat):
    r = onp.random.default_rng(seed)
    params, tasks = make_problem(r, n_tasks=2)
    base = meta_loss(params, mse, tasks, inner_lr=0.1, steps=1)
    repeated = meta_loss(params, mse, list(reversed(tasks)) * repeat, inner_lr=0.1, steps=1)
    assert repeated == pytest.approx(base, rel=1e-13)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def _bad_cases(params, tasks):
    """``name -> (overrides of the good arguments, regex the ValueError message must match)``."""
    W_only = {"hidden": {"W": onp.full((N_IN, N_HID), 0.1)}, "out": {"v": 0.1, "c": 0.1}}
    good_lr = tree_map(lambda p: 0.1, params)
    nan_lr = copy.deepcopy(good_lr)
    nan_lr["out"]["v"] = onp.full(N_HID, onp.nan)
    bad_shape = copy.deepcopy(good_lr)
    bad_shape["hidden"]["W"] = onp.full((N_HID, N_IN), 0.1)
    int_params = copy.deepcopy(params)
    int_params["out"]["c"] = onp.array(1)
    return {
        "tasks_empty": (dict(tasks=[]), "tasks"),
        "tasks_not_pair": (dict(tasks=[tasks[0][0][0]]), r"tasks\[0\]"),
        "tasks_short": (dict(tasks=[(tasks[0][0],)]), r"tasks\[0\]"),
        "steps_negative": (dict(steps=-1), "steps"),
        "steps_float": (dict(steps=1.5), "steps"),
        "steps_bool": (dict(steps=True), "steps"),
        "lr_negative": (dict(inner_lr=-0.1), "inner_lr"),
        "lr_nan": (dict(inner_lr=float("nan")), "inner_lr"),
        "lr_vector": (dict(inner_lr=onp.array([0.1, 0.2])), "inner_lr"),
        "lr_tree_structure": (dict(inner_lr=W_only), "inner_lr"),
        "lr_tree_nan": (dict(inner_lr=nan_lr), r"inner_lr\['out.v'\]"),
        "lr_tree_shape": (dict(inner_lr=bad_shape), r"inner_lr\['hidden.W'\]"),
        "params_list": (dict(params=[1.0, 2.0]), "params"),
        "params_int": (dict(params=int_params), r"params\['out.c'\]"),
        "loss_fn_str": (dict(loss_fn="mse"), "loss_fn"),
        "loss_fn_vector": (dict(loss_fn=lambda p, d: mlp(p, d[0]) - d[1]), "loss_fn"),
        "first_order_str": (dict(first_order="yes"), "first_order"),
    }


BAD_CASES = ["tasks_empty", "tasks_not_pair", "tasks_short", "steps_negative", "steps_float",
             "steps_bool", "lr_negative", "lr_nan", "lr_vector", "lr_tree_structure",
             "lr_tree_nan", "lr_tree_shape", "params_list", "params_int", "loss_fn_str",
             "loss_fn_vector", "first_order_str"]


def _good_kwargs(rng, case):
    params, tasks = make_problem(rng, n_tasks=1)
    overrides, match = _bad_cases(params, tasks)[case]
    kw = dict(params=params, loss_fn=mse, tasks=tasks, inner_lr=0.1, steps=1, first_order=False)
    kw.update(overrides)
    return kw, match


def test_bad_case_list_is_complete(rng):
    params, tasks = make_problem(rng, n_tasks=1)
    assert sorted(BAD_CASES) == sorted(_bad_cases(params, tasks))


@pytest.mark.parametrize("case", BAD_CASES)
@pytest.mark.parametrize("fn", [meta_loss, meta_gradient], ids=["meta_loss", "meta_gradient"])
def test_bad_input_raises_value_error(rng, case, fn):
    kw, match = _good_kwargs(rng, case)
    with pytest.raises(ValueError, match=match):
        fn(kw.pop("params"), kw.pop("loss_fn"), kw.pop("tasks"), **kw)


@pytest.mark.parametrize("case", [c for c in BAD_CASES if not c.startswith("tasks")])
def test_adapt_bad_input_raises_value_error(rng, case):
    kw, match = _good_kwargs(rng, case)
    support = kw.pop("tasks")[0][0]
    with pytest.raises(ValueError, match=match):
        adapt(kw.pop("params"), kw.pop("loss_fn"), support, **kw)


def test_bad_wrt_inner_lr(rng):
    params, tasks = make_problem(rng, n_tasks=1)
    with pytest.raises(ValueError, match="wrt_inner_lr"):
        meta_gradient(params, mse, tasks, inner_lr=0.1, wrt_inner_lr="both")


def test_meta_sgd_rates_may_be_negative(rng):
    """Li et al. 2017 learn alpha freely; a negative entry is valid and acts as ascent there."""
    params, tasks = make_problem(rng, n_tasks=1)
    lr = tree_map(lambda p: onp.full(onp.shape(p), -0.05), params)
    fast = adapt(params, mse, tasks[0][0], inner_lr=lr)
    g = grad(mse)(params, tasks[0][0])
    want = tree_map(lambda p, gi: p + 0.05 * gi, params, g)
    assert tree_allclose(fast, want, rtol=1e-13)
