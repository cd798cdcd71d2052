"""Tests for ssmref.nn: dense layers, MLPs, the softmax family and the policy distributions."""

import autograd.numpy as np
import numpy as onp
import pytest
import scipy.special
import scipy.stats
from autograd import grad
from autograd.test_util import check_grads
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ssmref import nn
from ssmref.params import tree_copy


# ---------------------------------------------------------------------------------------------
# Dense layers and MLPs
# ---------------------------------------------------------------------------------------------

def test_dense_init_shapes_and_distribution():
    p = nn.dense_init(400, 300, rng=0, scale=2.0)
    assert p["W"].shape == (300, 400) and p["b"].shape == (300,)
    assert p["W"].dtype == onp.float64 and not p["b"].any()
    # W_ij ~ N(0, scale^2 / in_dim): std 0.1, 120000 draws
    onp.testing.assert_allclose(p["W"].std(), 2.0 / 20.0, rtol=0.01)
    assert abs(p["W"].mean()) < 0.002
    # exactly the documented draw
    expected = 2.0 / onp.sqrt(400) * onp.random.default_rng(0).standard_normal((300, 400))
    onp.testing.assert_array_equal(p["W"], expected)


def test_dense_init_seeding():
    a, b = nn.dense_init(3, 2, rng=7), nn.dense_init(3, 2, rng=7)
    onp.testing.assert_array_equal(a["W"], b["W"])
    g = onp.random.default_rng(7)
    c, d = nn.dense_init(3, 2, rng=g), nn.dense_init(3, 2, rng=g)  # a Generator advances
    assert not onp.array_equal(c["W"], d["W"])


def test_dense_apply_batch_shapes(rng):
    p = nn.dense_init(3, 2, rng=rng)
    p["b"] = rng.standard_normal(2)
    for batch in [(), (5,), (4, 5)]:
        x = rng.standard_normal(batch + (3,))
        y = nn.dense_apply(p, x)
        assert y.shape == batch + (2,)
        onp.testing.assert_allclose(y, onp.einsum("oi,...i->...o", p["W"], x) + p["b"],
                                    rtol=1e-14)


def test_dense_apply_matches_torch_linear(rng):
    torch = pytest.importorskip("torch")
    p = {"W": rng.standard_normal((2, 3)), "b": rng.standard_normal(2)}
    x = rng.standard_normal((4, 3))
    y = torch.nn.functional.linear(torch.tensor(x), torch.tensor(p["W"]), torch.tensor(p["b"]))
    onp.testing.assert_allclose(nn.dense_apply(p, x), y.numpy(), rtol=1e-14)


def test_mlp_structure_and_composition(rng):
    p = nn.mlp_init([3, 5, 4, 2], rng=rng)
    assert sorted(p) == ["layer0", "layer1", "layer2"]
    assert [p[f"layer{i}"]["W"].shape for i in range(3)] == [(5, 3), (4, 5), (2, 4)]
    x = rng.standard_normal((6, 3))
    h = onp.tanh(x @ p["layer0"]["W"].T + p["layer0"]["b"])
    h = onp.tanh(h @ p["layer1"]["W"].T + p["layer1"]["b"])
    y = h @ p["layer2"]["W"].T + p["layer2"]["b"]
    onp.testing.assert_allclose(nn.mlp_apply(p, x), y, rtol=1e-14)
    onp.testing.assert_allclose(nn.mlp_apply(p, x, final_activation="tanh"), onp.tanh(y),
                                rtol=1e-14)
    relu_out = nn.mlp_apply(p, x, activation="relu", final_activation="relu")
    assert (relu_out >= 0).all()


def test_mlp_layers_run_in_numeric_order_not_sorted_order(rng):
    # "layer10" sorts before "layer2"; the forward must still run layer0, layer1, ..., layer11
    sizes = list(range(2, 15))  # 12 layers of different widths
    p = nn.mlp_init(sizes, rng=rng)
    y = nn.mlp_apply(p, rng.standard_normal((3, 2)), activation="identity")
    assert y.shape == (3, 14)


def test_mlp_differentiable_twice(rng):
    p = nn.mlp_init([3, 4, 2], rng=rng)
    x = rng.standard_normal((5, 3))
    check_grads(lambda p, x: np.sum(np.sin(nn.mlp_apply(p, x))), modes=["rev"], order=2)(p, x)


def test_relu_derivative_at_zero_is_zero_like_torch():
    torch = pytest.importorskip("torch")
    points = [-2.0, -1e-300, 0.0, -0.0, 1e-300, 2.0]
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    torch.relu(x).sum().backward()
    ours = [grad(lambda v: nn.relu(v))(p) for p in points]
    assert ours == x.grad.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_dense_and_mlp_bad_input(rng):
    p = nn.dense_init(3, 2, rng=rng)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got \(4, 2\)"):
        nn.dense_apply(p, onp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"params\['b'\] must have shape \(2,\)"):
        nn.dense_apply({"W": p["W"], "b": onp.ones(3)}, onp.ones(3))
    with pytest.raises(ValueError, match=r"params\['W'\] must be \(out, in\)"):
        nn.dense_apply({"W": onp.ones(3), "b": onp.ones(3)}, onp.ones(3))
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        nn.dense_apply(p, 1.0)
    for bad in [0, -1, 2.0, True]:
        with pytest.raises(ValueError, match="in_dim must be an int >= 1"):
            nn.dense_init(bad, 2, rng=0)
    with pytest.raises(ValueError, match="scale must be finite"):
        nn.dense_init(2, 2, rng=0, scale=-1.0)
    with pytest.raises(ValueError, match="at least 2 widths"):
        nn.mlp_init([3], rng=0)
    mlp = nn.mlp_init([3, 2], rng=0)
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; known: \['identity', "
                                         r"'relu', 'tanh'\]"):
        nn.mlp_apply(mlp, onp.ones(3), activation="gelu")
    with pytest.raises(ValueError, match=r"params must have keys \['layer0', 'layer1'\]"):
        nn.mlp_apply({"layer0": mlp["layer0"], "layer2": mlp["layer0"]}, onp.ones(3))


# ---------------------------------------------------------------------------------------------
# Softmax family
# ---------------------------------------------------------------------------------------------

def test_softmax_family_matches_scipy(rng):
    x = rng.standard_normal((3, 4, 5))
    for axis in [-1, 0, 1]:
        onp.testing.assert_allclose(nn.logsumexp(x, axis=axis),
                                    scipy.special.logsumexp(x, axis=axis), rtol=1e-14)
        onp.testing.assert_allclose(nn.log_softmax(x, axis=axis),
                                    scipy.special.log_softmax(x, axis=axis), rtol=1e-13)
        onp.testing.assert_allclose(nn.softmax(x, axis=axis),
                                    scipy.special.softmax(x, axis=axis), rtol=1e-13)
    assert nn.logsumexp(x, keepdims=True).shape == (3, 4, 1)


def test_log_softmax_stable_for_huge_logits():
    x = onp.array([1e300, 0.0, -1e300])
    out = nn.log_softmax(x)
    assert onp.isfinite(out).all()
    onp.testing.assert_array_equal(out, [0.0, -1e300, -2e300])
    onp.testing.assert_array_equal(nn.softmax(x), [1.0, 0.0, 0.0])
    y = onp.array([1000.0, 1001.0, 999.0])  # naive exp overflows
    onp.testing.assert_allclose(nn.log_softmax(y), nn.log_softmax(y - 1000.0), rtol=1e-15)
    onp.testing.assert_allclose(nn.logsumexp(y), 1000.0 + scipy.special.logsumexp(y - 1000.0),
                                rtol=1e-15)
    g = grad(lambda x: nn.logsumexp(x))(onp.array([1e4, 1e4]))  # gradient = softmax
    onp.testing.assert_allclose(g, [0.5, 0.5])


def test_log_softmax_with_masked_logits():
    x = onp.array([0.0, -onp.inf, 0.0])
    onp.testing.assert_allclose(nn.log_softmax(x), [onp.log(0.5), -onp.inf, onp.log(0.5)])
    onp.testing.assert_allclose(grad(lambda x: nn.logsumexp(x))(x), [0.5, 0.0, 0.5])


@settings(max_examples=50, deadline=None)
@given(arrays(onp.float64, st.integers(1, 6), elements=st.floats(-1e3, 1e3)),
       st.floats(-1e3, 1e3))
def test_softmax_invariants(x, shift):
    onp.testing.assert_allclose(nn.softmax(x).sum(), 1.0, rtol=1e-12)
    assert nn.logsumexp(x) >= x.max()
    assert nn.logsumexp(x) <= x.max() + onp.log(x.size) + 1e-12
    onp.testing.assert_allclose(nn.log_softmax(x + shift), nn.log_softmax(x), atol=1e-9)


def test_softmax_family_differentiable_twice(rng):
    x = rng.standard_normal((3, 4))
    check_grads(lambda x: nn.logsumexp(x, axis=0), modes=["rev"], order=2)(x)
    check_grads(lambda x: nn.log_softmax(x), modes=["rev"], order=2)(x)
    check_grads(lambda x: nn.softmax(x, axis=0), modes=["rev"], order=2)(x)


def test_softmax_bad_axis():
    with pytest.raises(ValueError, match=r"axis 2 is out of range for x of shape \(3, 4\)"):
        nn.logsumexp(onp.ones((3, 4)), axis=2)
    with pytest.raises(ValueError, match="out of range"):
        nn.log_softmax(onp.float64(1.0))


# ---------------------------------------------------------------------------------------------
# Categorical
# ---------------------------------------------------------------------------------------------

def test_categorical_log_prob_and_entropy_match_scipy(rng):
    logits = rng.standard_normal((4, 3, 5))
    actions = rng.integers(0, 5, size=(4, 3))
    p = scipy.special.softmax(logits, axis=-1)
    expected = onp.log(onp.take_along_axis(p, actions[..., None], axis=-1))[..., 0]
    onp.testing.assert_allclose(nn.categorical_log_prob(logits, actions), expected, rtol=1e-13)
    onp.testing.assert_allclose(nn.categorical_entropy(logits),
                                scipy.stats.entropy(p, axis=-1), rtol=1e-13)


def test_categorical_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 4))
    actions = rng.integers(0, 4, size=6)
    dist = torch.distributions.Categorical(logits=torch.tensor(logits))
    onp.testing.assert_allclose(nn.categorical_log_prob(logits, actions),
                                dist.log_prob(torch.tensor(actions)).numpy(), rtol=1e-13)
    onp.testing.assert_allclose(nn.categorical_entropy(logits), dist.entropy().numpy(),
                                rtol=1e-13)


def test_categorical_masked_logits():
    logits = onp.array([[0.0, -onp.inf, 0.0], [1.0, 2.0, -onp.inf]])
    onp.testing.assert_allclose(nn.categorical_entropy(logits)[0], onp.log(2.0), rtol=1e-15)
    onp.testing.assert_allclose(nn.categorical_log_prob(logits, onp.array([0, 1])),
                                [onp.log(0.5), 2.0 - onp.logaddexp(1.0, 2.0)], rtol=1e-15)
    g = grad(lambda l: np.sum(nn.categorical_entropy(l)))(logits)
    assert onp.isfinite(g).all() and g[0, 1] == 0.0 and g[1, 2] == 0.0
    g = grad(lambda l: np.sum(nn.categorical_log_prob(l, onp.array([2, 0]))))(logits)
    assert onp.isfinite(g).all()
    samples = nn.categorical_sample(onp.broadcast_to(logits, (1000, 2, 3)), 0)
    assert (samples[:, 0] != 1).all() and (samples[:, 1] != 2).all()


def test_categorical_entropy_monte_carlo(rng):
    logits = onp.array([0.3, -1.0, 2.0, 0.0])
    a = nn.categorical_sample(onp.broadcast_to(logits, (200_000, 4)), rng)
    mc = -nn.categorical_log_prob(onp.broadcast_to(logits, (200_000, 4)), a).mean()
    onp.testing.assert_allclose(mc, nn.categorical_entropy(logits), rtol=0.01)


def test_categorical_sample_statistics():
    logits = onp.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    n = 100_000
    a = nn.categorical_sample(onp.broadcast_to(logits, (n, 2, 3)), 42)
    assert a.shape == (n, 2) and a.dtype == onp.int64
    freq = onp.stack([onp.bincount(a[:, i], minlength=3) / n for i in range(2)])
    p = scipy.special.softmax(logits, axis=-1)
    assert (abs(freq - p) < 5 * onp.sqrt(p * (1 - p) / n)).all()  # within 5 standard errors
    onp.testing.assert_array_equal(a, nn.categorical_sample(onp.broadcast_to(logits, (n, 2, 3)),
                                                            42))


def test_categorical_differentiable_twice(rng):
    logits = rng.standard_normal((4, 3))
    actions = onp.array([0, 2, 1, 1])
    check_grads(lambda l: nn.categorical_log_prob(l, actions), modes=["rev"], order=2)(logits)
    check_grads(nn.categorical_entropy, modes=["rev"], order=2)(logits)


def test_categorical_bad_input():
    logits = onp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"actions must have shape \(4,\).*got \(3,\)"):
        nn.categorical_log_prob(logits, onp.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="actions must be an integer array"):
        nn.categorical_log_prob(logits, onp.zeros(4))
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 3\)"):
        nn.categorical_log_prob(logits, onp.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 3\)"):
        nn.categorical_log_prob(logits, onp.array([0, -1, 2, 0]))
    with pytest.raises(ValueError, match="logits must not contain nan or \\+inf"):
        nn.categorical_sample(onp.array([0.0, onp.nan]), 0)
    # the math does not refuse values: nan in, nan out (the adapter's guard relies on it)
    with onp.errstate(invalid="ignore"):
        assert onp.isnan(nn.categorical_entropy(onp.array([0.0, onp.nan])))
        assert onp.isnan(nn.categorical_log_prob(onp.array([[0.0, onp.inf]]), onp.array([1])))
    with pytest.raises(ValueError, match="every class in some row is -inf"):
        nn.categorical_sample(onp.array([[0.0, 1.0], [-onp.inf, -onp.inf]]), 0)
    with pytest.raises(ValueError, match="logits must have at least 1 dimension"):
        nn.categorical_entropy(onp.float64(0.0))


# ---------------------------------------------------------------------------------------------
# Diagonal Gaussian
# ---------------------------------------------------------------------------------------------

def test_gaussian_log_prob_matches_scipy(rng):
    mean = rng.standard_normal((5, 3))
    log_std = 0.3 * rng.standard_normal(3)  # shared across the batch
    actions = rng.standard_normal((5, 3))
    expected = scipy.stats.norm.logpdf(actions, mean, onp.exp(log_std)).sum(axis=-1)
    lp = nn.gaussian_log_prob(mean, log_std, actions)
    assert lp.shape == (5,)
    onp.testing.assert_allclose(lp, expected, rtol=1e-13)
    mvn = scipy.stats.multivariate_normal(mean[0], onp.diag(onp.exp(2 * log_std)))
    onp.testing.assert_allclose(lp[0], mvn.logpdf(actions[0]), rtol=1e-12)


def test_gaussian_matches_torch(rng):
    torch = pytest.importorskip("torch")
    mean, log_std, actions = (rng.standard_normal((4, 2)) for _ in range(3))
    dist = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor(mean), torch.tensor(log_std).exp()), 1)
    onp.testing.assert_allclose(nn.gaussian_log_prob(mean, log_std, actions),
                                dist.log_prob(torch.tensor(actions)).numpy(), rtol=1e-13)
    onp.testing.assert_allclose(nn.gaussian_entropy(log_std), dist.entropy().numpy(),
                                rtol=1e-13)


def test_gaussian_entropy(rng):
    log_std = 0.5 * rng.standard_normal((2, 3))
    expected = scipy.stats.norm(0.0, onp.exp(log_std)).entropy().sum(axis=-1)
    onp.testing.assert_allclose(nn.gaussian_entropy(log_std), expected, rtol=1e-14)
    shared = log_std[0]  # (d,), broadcast to the batch shape of the means
    h = nn.gaussian_entropy(shared, mean=onp.zeros((7, 3)))
    assert h.shape == (7,)
    onp.testing.assert_allclose(h, expected[0], rtol=1e-14)
    # Monte Carlo: H = -E[log p(a)]
    mean = onp.array([1.0, -2.0, 0.5])
    a = nn.gaussian_sample(onp.broadcast_to(mean, (200_000, 3)), shared, rng)
    mc = -nn.gaussian_log_prob(onp.broadcast_to(mean, (200_000, 3)), shared, a).mean()
    onp.testing.assert_allclose(mc, expected[0], rtol=0.01)


def test_gaussian_sample_statistics():
    mean, log_std = onp.array([1.0, -3.0]), onp.array([0.0, onp.log(0.1)])
    n = 100_000
    a = nn.gaussian_sample(onp.broadcast_to(mean, (n, 2)), log_std, 3)
    assert a.shape == (n, 2)
    se = onp.exp(log_std) / onp.sqrt(n)
    assert (abs(a.mean(axis=0) - mean) < 5 * se).all()
    onp.testing.assert_allclose(a.std(axis=0), onp.exp(log_std), rtol=0.02)
    # the documented draw: mean + exp(log_std) * rng.standard_normal(shape)
    xi = onp.random.default_rng(3).standard_normal((n, 2))
    onp.testing.assert_allclose(a, mean + onp.exp(log_std) * xi, rtol=1e-15)


def test_gaussian_differentiable_twice(rng):
    mean, actions = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    log_std = 0.3 * rng.standard_normal(2)
    check_grads(nn.gaussian_log_prob, modes=["rev"], order=2)(mean, log_std, actions)
    check_grads(lambda s: nn.gaussian_entropy(s, mean=mean), modes=["rev"], order=2)(log_std)
    check_grads(lambda m, s: nn.gaussian_sample(m, s, 0), modes=["rev"], order=2)(mean, log_std)


def test_gaussian_bad_input():
    with pytest.raises(ValueError, match=r"log_std of shape \(3,\) must broadcast to mean's "
                                         r"shape \(4, 2\)"):
        nn.gaussian_log_prob(onp.zeros((4, 2)), onp.zeros(3), onp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"log_std of shape \(5, 2\) must broadcast"):
        nn.gaussian_sample(onp.zeros(2), onp.zeros((5, 2)), 0)
    with pytest.raises(ValueError, match=r"actions must have mean's shape \(4, 2\), got \(4,\)"):
        nn.gaussian_log_prob(onp.zeros((4, 2)), onp.zeros(2), onp.zeros(4))
    with pytest.raises(ValueError, match="mean must have at least 1 dimension"):
        nn.gaussian_log_prob(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="log_std must have at least 1 dimension"):
        nn.gaussian_entropy(0.0)


# ---------------------------------------------------------------------------------------------
# Purity
# ---------------------------------------------------------------------------------------------

def test_functions_do_not_mutate_inputs(rng):
    p = nn.mlp_init([3, 4, 2], rng=rng)
    x, logits = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    mean, log_std = rng.standard_normal((5, 2)), rng.standard_normal(2)
    actions = rng.integers(0, 4, size=5)
    before = tree_copy({"p": p, "x": x, "logits": logits, "mean": mean, "log_std": log_std})
    nn.mlp_apply(p, x)
    nn.log_softmax(logits)
    nn.categorical_log_prob(logits, actions)
    nn.categorical_entropy(logits)
    nn.categorical_sample(logits, 0)
    nn.gaussian_log_prob(mean, log_std, mean)
    nn.gaussian_sample(mean, log_std, 0)
    after = {"p": p, "x": x, "logits": logits, "mean": mean, "log_std": log_std}
    for k in ["x", "logits", "mean", "log_std"]:
        onp.testing.assert_array_equal(before[k], after[k])
    for layer in p:
        onp.testing.assert_array_equal(before["p"][layer]["W"], p[layer]["W"])
