"""MAML on few-shot sinusoid regression: the loop is ssmref.maml's meta-gradient and it learns."""

import numpy as onp
import pytest

from ssmref import maml
from ssmref import params as P
from ssmref.envs import Sinusoid
from ssmref.fewshot import MetaRegression, MetaRegressionConfig, mse_loss, regression_init
from ssmref.nn import mlp_apply

SMALL = MetaRegressionConfig(hidden_sizes=(8,), meta_batch_size=3, k_shot=4, outer_lr=1e-2)


def test_mse_loss_is_the_mean_squared_error(rng):
    params = regression_init(SMALL, rng)
    x, y = rng.normal(size=(5, 1)), rng.normal(size=(5, 1))
    want = onp.mean((mlp_apply(params, x, activation="relu") - y) ** 2)
    assert onp.isclose(mse_loss(params, (x, y)), want, rtol=1e-14)


def test_meta_step_applies_the_second_order_meta_gradient():
    a = MetaRegression(Sinusoid(), regression_init(SMALL, 0), SMALL)
    b = MetaRegression(Sinusoid(), regression_init(SMALL, 0), SMALL)
    metrics = a.meta_step(rng=5)
    rng = onp.random.default_rng(5)
    tasks = b.family.sample_tasks(3, rng)
    pairs = []
    for task in tasks:
        d = b.family.support_query(task, 4, 4, rng)
        pairs.append(((d["x_support"], d["y_support"]), (d["x_query"], d["y_query"])))
    loss, grads = maml.meta_gradient(b.params, mse_loss, pairs, inner_lr=0.01)
    _, fo = maml.meta_gradient(b.params, mse_loss, pairs, inner_lr=0.01, first_order=True)
    assert not P.tree_allclose(grads, fo, rtol=1e-6)           # second order is not FOMAML
    want, _ = b._update(grads, b.opt_state, b.params)
    assert P.tree_allclose(a.params, want, rtol=1e-12)
    assert onp.isclose(metrics["meta_loss"], loss, rtol=1e-12)
    assert onp.isclose(metrics["pre_loss"], onp.mean([mse_loss(b.params, q) for _, q in pairs]))


def test_save_load_round_trip(tmp_path):
    m = MetaRegression(Sinusoid(), regression_init(SMALL, 1), SMALL)
    m.meta_train(2, rng=0)
    m.save(tmp_path / "m.npz")
    back = MetaRegression.load(tmp_path / "m.npz", Sinusoid())
    assert back.iteration == 2 and back.config == SMALL
    assert back.meta_step(rng=3) == m.meta_step(rng=3)
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ValueError):
        MetaRegression.load(tmp_path / "bad.npz", Sinusoid())


def test_config_validation():
    with pytest.raises(ValueError, match="k_shot"):
        MetaRegressionConfig(k_shot=0)
    with pytest.raises(ValueError, match="hidden_sizes"):
        MetaRegressionConfig(hidden_sizes=(0,))
    with pytest.raises(ValueError, match="inner_lr"):
        MetaRegressionConfig(inner_lr=float("nan"))


def test_meta_training_makes_one_step_adaptation_work():
    """A short second-order MAML run: after it, one inner step on K = 10 points removes a large part
    of the held-out grid error, while it makes the initial parameters worse."""
    config = MetaRegressionConfig(hidden_sizes=(40, 40), meta_batch_size=5, outer_lr=1e-2)
    m = MetaRegression(Sinusoid(), regression_init(config, 0), config)
    tasks = Sinusoid().sample_tasks(20, rng=1)
    before = m.evaluate(tasks, rng=2, steps=1)
    m.meta_train(400, rng=0)
    after = m.evaluate(tasks, rng=2, steps=1)
    # measured (seed 0): before [4.64, 6.65] (a step hurts the untrained model), after [2.92, 1.50]
    assert after[1] < 0.6 * after[0]                # one step removes 40 % of the error ...
    assert after[1] < 0.4 * min(before)             # ... and ends far below the untrained model
