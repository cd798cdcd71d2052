"""Tests for ssmref.optim: Adam (torch semantics), SGD and global-norm clipping."""

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad
from autograd.test_util import check_grads
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmref.optim import adam, adam_init, adam_step, apply_updates, clip_by_global_norm, sgd
from ssmref.params import flatten_dict, global_norm, tree_copy, tree_map

HYPER = dict(lr=0.05, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1)


def make_tree(rng):
    """A nested tree with a matrix, a vector and a scalar leaf."""
    return {"head": {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(3)},
            "scale": onp.asarray(rng.standard_normal())}


def assert_trees_equal(a, b, rtol=0.0, atol=0.0):
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        onp.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=k)


# ---------------------------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------------------------

def reference_adam(params, grads_seq, lr, b1, b2, eps, weight_decay):
    """The torch.optim.Adam algorithm box, written out per leaf with a Python loop over steps."""
    flat_p = {k: onp.array(v, dtype=float) for k, v in flatten_dict(params).items()}
    m = {k: onp.zeros_like(v) for k, v in flat_p.items()}
    v = {k: onp.zeros_like(x) for k, x in flat_p.items()}
    for t, grads in enumerate(grads_seq, start=1):
        for k, g in flatten_dict(grads).items():
            g = g + weight_decay * flat_p[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g ** 2
            m_hat = m[k] / (1 - b1 ** t)
            v_hat = v[k] / (1 - b2 ** t)
            flat_p[k] = flat_p[k] - lr * m_hat / (onp.sqrt(v_hat) + eps)
    return flat_p, m, v


@pytest.mark.parametrize("hyper", [HYPER, dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8,
                                                 weight_decay=0.0)])
def test_adam_matches_hand_written_loop(hyper):
    rng = onp.random.default_rng(0)
    params = make_tree(rng)
    grads_seq = [make_tree(rng) for _ in range(7)]
    init, update = adam(**hyper)
    state, p = init(params), params
    for g in grads_seq:
        p, state = update(g, state, p)
    ref_p, ref_m, ref_v = reference_adam(params, grads_seq, **hyper)
    assert state["step"] == 7
    for k, x in flatten_dict(p).items():
        onp.testing.assert_allclose(x, ref_p[k], rtol=1e-13, atol=1e-15, err_msg=k)
        onp.testing.assert_allclose(flatten_dict(state["m"])[k], ref_m[k], rtol=1e-13)
        onp.testing.assert_allclose(flatten_dict(state["v"])[k], ref_v[k], rtol=1e-13)


@pytest.mark.parametrize("hyper", [HYPER, dict(lr=0.3, b1=0.0, b2=0.5, eps=0.0,
                                                 weight_decay=2.0), {}])
def test_adam_matches_torch(hyper):
    torch = pytest.importorskip("torch")
    rng = onp.random.default_rng(1)
    params = make_tree(rng)
    names = sorted(flatten_dict(params))
    tparams = [torch.tensor(flatten_dict(params)[k], dtype=torch.float64, requires_grad=True)
               for k in names]
    kw = dict(hyper)
    if "b1" in kw:
        kw["betas"] = (kw.pop("b1"), kw.pop("b2"))
    topt = torch.optim.Adam(tparams, **kw)
    init, update = adam(**hyper)
    state, p = init(params), params
    for _ in range(10):
        grads = make_tree(rng)
        p, state = update(grads, state, p)
        for tp, k in zip(tparams, names):
            tp.grad = torch.tensor(flatten_dict(grads)[k], dtype=torch.float64)
        topt.step()
    for tp, k in zip(tparams, names):
        onp.testing.assert_allclose(flatten_dict(p)[k], tp.detach().numpy(), rtol=1e-12,
                                    atol=1e-14, err_msg=k)
        tstate = topt.state[tp]
        onp.testing.assert_allclose(flatten_dict(state["m"])[k], tstate["exp_avg"].numpy(),
                                    rtol=1e-12, atol=1e-15)
        onp.testing.assert_allclose(flatten_dict(state["v"])[k], tstate["exp_avg_sq"].numpy(),
                                    rtol=1e-12, atol=1e-15)
        assert int(tstate["step"]) == state["step"]


def test_adam_update_is_params_plus_adam_step():
    rng = onp.random.default_rng(2)
    params, grads = make_tree(rng), make_tree(rng)
    init, update = adam(**HYPER)
    state = init(params)
    new_p, new_state = update(grads, state, params)
    delta, step_state = adam_step(grads, state, params, **HYPER)
    assert_trees_equal(new_p, apply_updates(params, delta))
    assert_trees_equal(new_state["m"], step_state["m"])
    assert new_state["step"] == step_state["step"] == 1


def test_adam_init_state():
    params = make_tree(onp.random.default_rng(3))
    state = adam_init(params)
    assert state["step"] == 0
    for tree in (state["m"], state["v"]):
        for k, x in flatten_dict(tree).items():
            assert x.shape == onp.shape(flatten_dict(params)[k]) and x.dtype == onp.float64
            assert not x.any()
    assert state["m"]["head"]["W"] is not state["v"]["head"]["W"]


@settings(max_examples=30, deadline=None)
@given(st.floats(1e-4, 10.0), st.integers(0, 2 ** 31 - 1))
def test_adam_first_step_is_lr_times_sign(lr, seed):
    # With eps = 0 and no weight decay, step 1 gives m_hat = g, v_hat = g^2: delta = -lr sign(g).
    rng = onp.random.default_rng(seed)
    params, grads = make_tree(rng), make_tree(rng)
    delta, _ = adam_step(grads, adam_init(params), params, lr=lr, eps=0.0)
    assert_trees_equal(delta, tree_map(lambda g: -lr * onp.sign(g), grads), rtol=1e-12)


def test_adam_is_pure_and_replayable():
    rng = onp.random.default_rng(4)
    params, grads = make_tree(rng), make_tree(rng)
    init, update = adam(**HYPER)
    _, state = update(make_tree(rng), init(params), params)  # a state with nonzero moments
    before = (tree_copy(params), tree_copy(grads), tree_copy(state["m"]), tree_copy(state["v"]))
    p1, s1 = update(grads, state, params)
    p2, s2 = update(grads, state, params)  # same inputs, same outputs: nothing was mutated
    assert_trees_equal(p1, p2)
    assert_trees_equal(s1["m"], s2["m"])
    assert state["step"] == 1 and s1["step"] == 2
    for old, now in zip(before, (params, grads, state["m"], state["v"])):
        assert_trees_equal(old, now)
    assert p1["head"]["W"] is not params["head"]["W"]


def test_adam_step_differentiable_twice():
    rng = onp.random.default_rng(5)
    params = make_tree(rng)
    state = adam_step(make_tree(rng), adam_init(params), params, **HYPER)[1]  # v > 0

    def delta_dot(grads, params):
        delta, _ = adam_step(grads, state, params, **HYPER)
        return sum(np.sum(np.sin(d)) for d in flatten_dict(delta).values())

    check_grads(delta_dot, modes=["rev"], order=2)(make_tree(rng), params)


def test_adam_learning_rate_can_be_traced():
    # delta is linear in lr, so d delta / d lr = delta / lr
    rng = onp.random.default_rng(6)
    params, grads = make_tree(rng), make_tree(rng)
    state = adam_init(params)
    hyper = {k: v for k, v in HYPER.items() if k != "lr"}
    f = lambda lr: adam_step(grads, state, params, lr=lr, **hyper)[0]["head"]["W"][0, 0]  # noqa
    onp.testing.assert_allclose(grad(f)(0.05), f(0.05) / 0.05, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------------------------

def test_sgd_step():
    rng = onp.random.default_rng(7)
    params, grads = make_tree(rng), make_tree(rng)
    init, update = sgd(0.1)
    new_p, state = update(grads, init(params), params)
    assert state == {"step": 1}
    assert_trees_equal(new_p, tree_map(lambda p, g: p - 0.1 * g, params, grads), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# Clipping
# ---------------------------------------------------------------------------------------------

def test_clip_coefficient_with_the_1e6():
    grads = {"a": onp.array([3.0, 0.0]), "b": {"c": onp.array([[4.0]])}}  # global norm 5
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == 5.0
    coef = 1.0 / (5.0 + 1e-6)
    assert_trees_equal(clipped, tree_map(lambda g: coef * g, grads), rtol=1e-15)
    # at total_norm == max_norm the 1e-6 still shrinks the gradient a little
    at_limit, _ = clip_by_global_norm(grads, 5.0)
    onp.testing.assert_allclose(global_norm(at_limit), 5.0 * 5.0 / (5.0 + 1e-6), rtol=1e-15)
    assert global_norm(at_limit) < 5.0


@pytest.mark.parametrize("max_norm", [5.0 + 1e-6, 6.0, 1e6])
def test_clip_below_max_norm_leaves_grads_unchanged(max_norm):
    grads = {"a": onp.array([3.0, 0.0]), "b": {"c": onp.array([[4.0]])}}
    clipped, norm = clip_by_global_norm(grads, max_norm)
    assert norm == 5.0
    assert_trees_equal(clipped, grads)  # exactly: the coefficient is clamped to 1


def test_clip_zero_and_empty():
    clipped, norm = clip_by_global_norm({"a": onp.zeros(3)}, 1.0)
    assert norm == 0.0 and not clipped["a"].any()
    clipped, norm = clip_by_global_norm({}, 1.0)
    assert clipped == {} and norm == 0.0


@settings(max_examples=50, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3), st.integers(0, 2 ** 31 - 1))
def test_clip_bounds_norm_and_keeps_direction(max_norm, grad_scale, seed):
    grads = tree_map(lambda g: grad_scale * g, make_tree(onp.random.default_rng(seed)))
    clipped, norm = clip_by_global_norm(grads, max_norm)
    onp.testing.assert_allclose(norm, global_norm(grads), rtol=1e-15)
    assert global_norm(clipped) <= max_norm * (1 + 1e-12) or onp.isclose(
        global_norm(clipped), norm, rtol=1e-15)
    coef = min(1.0, max_norm / (norm + 1e-6))
    assert_trees_equal(clipped, tree_map(lambda g: coef * g, grads), rtol=1e-14)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_matches_torch(max_norm):
    torch = pytest.importorskip("torch")
    grads = make_tree(onp.random.default_rng(8))
    names = sorted(flatten_dict(grads))
    tparams = []
    for k in names:
        tp = torch.zeros(onp.shape(flatten_dict(grads)[k]), dtype=torch.float64,
                         requires_grad=True)
        tp.grad = torch.tensor(flatten_dict(grads)[k], dtype=torch.float64)
        tparams.append(tp)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
    clipped, norm = clip_by_global_norm(grads, max_norm)
    onp.testing.assert_allclose(norm, tnorm.item(), rtol=1e-14)
    for tp, k in zip(tparams, names):
        onp.testing.assert_allclose(flatten_dict(clipped)[k], tp.grad.numpy(), rtol=1e-14,
                                    err_msg=k)


def test_clip_is_pure():
    grads = make_tree(onp.random.default_rng(9))
    before = tree_copy(grads)
    clipped, _ = clip_by_global_norm(grads, 1e9)  # coefficient 1: still a new tree
    clipped["head"]["W"][0, 0] = 123.0
    assert_trees_equal(grads, before)


def test_clip_differentiable_twice():
    grads = make_tree(onp.random.default_rng(10))  # global norm about 4: clipping active at 1
    f = lambda g: sum(np.sum(np.cos(x)) for x in flatten_dict(clip_by_global_norm(g, 1.0)[0])
                      .values())  # noqa: E731
    check_grads(f, modes=["rev"], order=2)(grads)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1e-3), "lr must be >= 0"),
    (dict(lr=float("nan")), "lr must be finite"),
    (dict(lr=True), "lr must be a real scalar"),
    (dict(lr=onp.ones(2)), "lr must be a real scalar"),
    (dict(lr="0.1"), "lr must be a real scalar"),
    (dict(b1=1.0), "b1 must be < 1"),
    (dict(b2=-0.1), "b2 must be >= 0"),
    (dict(eps=-1e-8), "eps must be >= 0"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
])
def test_adam_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adam(**kwargs)
    with pytest.raises(ValueError, match=match):
        params = {"a": onp.ones(2)}
        adam_step(params, adam_init(params), params, **kwargs)


def test_adam_bad_trees():
    params = {"a": onp.ones(2), "b": onp.ones((2, 3))}
    init, update = adam()
    state = init(params)
    with pytest.raises(ValueError, match=r"grads does not match params: missing \['b'\]"):
        update({"a": onp.ones(2)}, state, params)
    with pytest.raises(ValueError, match=r"grads\['b'\] has shape \(3, 2\), expected \(2, 3\)"):
        update({"a": onp.ones(2), "b": onp.ones((3, 2))}, state, params)
    with pytest.raises(ValueError, match="grads must be a dict"):
        update(onp.ones(2), state, params)
    with pytest.raises(ValueError, match="state must be an Adam state"):
        update(params, {"step": 0}, params)
    with pytest.raises(ValueError, match=r"state\['m'\] does not match params"):
        update(params, init({"a": onp.ones(2)}), params)
    with pytest.raises(ValueError, match=r"state\['step'\] must be an int"):
        update(params, dict(state, step=-1), params)


def test_sgd_and_clip_bad_input():
    with pytest.raises(ValueError, match="lr must be >= 0"):
        sgd(-0.1)
    init, update = sgd(0.1)
    with pytest.raises(ValueError, match="grads does not match params"):
        update({"x": onp.ones(1)}, init({"a": onp.ones(1)}), {"a": onp.ones(1)})
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        clip_by_global_norm({"a": onp.ones(1)}, -1.0)
    with pytest.raises(ValueError, match="max_norm must be finite"):
        clip_by_global_norm({"a": onp.ones(1)}, float("inf"))
    with pytest.raises(ValueError, match="expected a dict"):
        clip_by_global_norm(onp.ones(3), 1.0)
