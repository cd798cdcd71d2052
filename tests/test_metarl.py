"""MetaMAML on a tiny navigation problem: the loop's pieces agree with ssmref.maml and persist.

MetaMAML runs the meta-batch task-batched; the replays below run it task by task with the
one-policy forms (``surrogate_loss``, ``maml.adapt``, ``maml.meta_gradient``) on the same draws.
"""

import numpy as onp
import pytest

from ssmref import maml
from ssmref import params as P
from ssmref.metarl.envs import Navigation2D
from ssmref.metarl import MetaMAML, MetaMAMLConfig, surrogate_loss, trajectory_data
from ssmref.metarl.policy import policy_init
from ssmref.metarl.policy.tasks import tile_values

CFG = MetaMAMLConfig(meta_batch_size=2, episodes_per_task=3, inner_lr=0.1, outer_lr=1e-2)


def tiny(seed=0):
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                                  hidden_sizes=(8,), rng=seed)
    return MetaMAML(Navigation2D(horizon=6), params, spec, CFG)


def rows(traj, i, E=3):
    return {k: v[E * i:E * (i + 1)] for k, v in traj.items()}


def replay(trainer, params, rng, M=2, E=3):
    """The (support, query) pairs of one meta-iteration, drawn as ``meta_step`` draws them,
    with every task adapted on its own by ``maml.adapt`` and the one-policy loss."""
    tasks = trainer.family.sample_tasks(M, rng)
    pre = trainer._sample(tile_values(params, M), tasks, rng)
    supports = [trajectory_data(rows(pre, i, E), 0.99) for i in range(M)]
    fast = [maml.adapt(params, trainer.loss_fn, s, inner_lr=0.1) for s in supports]
    stacked = P.tree_map(lambda *leaves: onp.stack(leaves), *fast)
    post = trainer._sample(stacked, tasks, rng)
    return pre, [(supports[i], trajectory_data(rows(post, i, E), 0.99)) for i in range(M)]


def test_meta_step_applies_the_maml_meta_gradient():
    a, b = tiny(), tiny()
    metrics = a.meta_step(rng=1)
    # replay the same draws task by task with the functional core
    pre, pairs = replay(b, b.params, onp.random.default_rng(1))
    loss, grads = maml.meta_gradient(b.params, surrogate_loss(b.spec), pairs, inner_lr=0.1)
    assert onp.isclose(metrics["meta_loss"], loss, rtol=1e-12)
    want, _ = b._update(grads, b.opt_state, b.params)
    assert P.tree_allclose(a.params, want, rtol=1e-12)
    assert onp.isclose(metrics["pre_return"], pre["rewards"].sum(axis=1).mean())
    assert metrics["iteration"] == 1 and onp.isfinite(metrics["grad_norm"])


def test_adapt_and_evaluate_shapes():
    m = tiny()
    task = m.family.sample_tasks(1, rng=3)[0]
    fast = m.adapt_to_new_task(task, rng=4)
    assert not P.tree_allclose(fast, m.params)
    returns = m.evaluate(m.family.sample_tasks(2, rng=5), rng=6, steps=2)
    assert len(returns) == 3 and all(r <= 0 for r in returns)


def test_save_load_round_trip(tmp_path):
    m = tiny()
    m.meta_train(2, rng=0)
    m.save(tmp_path / "ckpt.npz")
    back = MetaMAML.load(tmp_path / "ckpt.npz", m.family)
    assert back.iteration == 2 and back.config == m.config
    assert P.tree_allclose(back.params, m.params, rtol=0, atol=0)
    assert P.tree_allclose(back.opt_state["m"], m.opt_state["m"], rtol=0, atol=0)
    # training continues identically
    assert back.meta_step(rng=9) == m.meta_step(rng=9)
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ValueError):
        MetaMAML.load(tmp_path / "bad.npz", m.family)


def test_config_validation():
    with pytest.raises(ValueError, match="meta_batch_size"):
        MetaMAMLConfig(meta_batch_size=0)
    with pytest.raises(ValueError, match="gamma"):
        MetaMAMLConfig(gamma=1.5)


def test_clipping_and_the_linear_lr_schedule_are_adam_with_clipped_grads_and_lr_t():
    from ssmref import optim
    cfg = MetaMAMLConfig(meta_batch_size=2, episodes_per_task=3, outer_lr=1e-2,
                         max_grad_norm=0.05, lr_decay_iterations=4)
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                                  hidden_sizes=(8,), rng=0)
    m = MetaMAML(Navigation2D(horizon=6), params, spec, cfg)
    m.meta_step(rng=0)                                  # iteration 0: lr factor 1
    before, state = P.tree_copy(m.params), {**m.opt_state}
    # replay iteration 1 (factor 3/4) by hand
    ref = MetaMAML(Navigation2D(horizon=6), before, spec, cfg)
    ref.opt_state, ref.iteration = state, 1
    _, pairs = replay(ref, before, onp.random.default_rng(1))
    _, grads = maml.meta_gradient(before, ref.loss_fn, pairs, inner_lr=0.1)
    clipped, norm = optim.clip_by_global_norm(grads, 0.05)
    assert norm > 0.05                                  # the clipping is engaged
    _, update = optim.adam(lr=1e-2 * 0.75)
    want, _ = update(clipped, state, before)
    metrics = m.meta_step(rng=1)
    assert onp.isclose(metrics["grad_norm"], norm, rtol=1e-12)   # reported before clipping
    assert P.tree_allclose(m.params, want, rtol=1e-10, atol=1e-15)
    assert [m.lr_factor(t) for t in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    with pytest.raises(ValueError, match="lr_decay_iterations"):
        MetaMAMLConfig(lr_decay_iterations=-1)
    with pytest.raises(ValueError, match="max_grad_norm"):
        MetaMAMLConfig(max_grad_norm=float("inf"))


def replay_rounds(trainer, params, rng, lrs, M=2, E=3):
    """The data of one multi-round meta-iteration, drawn as ``meta_step`` draws them, with every
    task adapted on its own: ``data[r][i]``, task ``i``'s episodes after ``r`` rounds."""
    tasks = trainer.family.sample_tasks(M, rng)
    traj, fast, data = trainer._sample(tile_values(params, M), tasks, rng), [params] * M, []
    for lr in lrs:
        data.append([trajectory_data(rows(traj, i, E), 0.99) for i in range(M)])
        fast = [maml.adapt(fast[i], trainer.loss_fn, data[-1][i], inner_lr=lr) for i in range(M)]
        traj = trainer._sample(P.tree_map(lambda *leaves: onp.stack(leaves), *fast), tasks, rng)
    data.append([trajectory_data(rows(traj, i, E), 0.99) for i in range(M)])
    return data


@pytest.mark.parametrize("loss_rounds", [1, 2, 3])
def test_multi_round_meta_step_is_the_mean_of_the_last_rounds_losses(loss_rounds):
    # Three rounds (alpha, alpha/2, alpha/2); the objective averages the post-update losses of the
    # last loss_rounds rounds, each task adapted on its own, differentiated by autograd.grad.
    from autograd import value_and_grad
    cfg = MetaMAMLConfig(meta_batch_size=2, episodes_per_task=3, inner_lr=0.1, outer_lr=1e-2,
                         adapt_rounds=3, later_lr_scale=0.5, loss_rounds=loss_rounds)
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                               hidden_sizes=(8,), rng=0)
    a = MetaMAML(Navigation2D(horizon=6), params, spec, cfg)
    b = MetaMAML(Navigation2D(horizon=6), P.tree_copy(params), spec, cfg)
    metrics = a.meta_step(rng=1)
    lrs = [0.1, 0.05, 0.05]
    data = replay_rounds(b, b.params, onp.random.default_rng(1), lrs)

    def objective(theta):
        total = 0.0
        for i in range(2):
            fast = theta
            for r, lr in enumerate(lrs):
                fast = maml.adapt(fast, b.loss_fn, data[r][i], inner_lr=lr)
                if r + 1 > 3 - loss_rounds:
                    total = total + b.loss_fn(fast, data[r + 1][i])
        return total / (2 * loss_rounds)

    loss, grads = value_and_grad(objective)(b.params)
    assert onp.isclose(metrics["meta_loss"], loss, rtol=1e-12)
    want, _ = b._update(grads, b.opt_state, b.params)
    assert P.tree_allclose(a.params, want, rtol=1e-10, atol=1e-15)
    post = sum(data[3][i]["rewards"].sum(axis=1).mean() for i in range(2)) / 2
    assert onp.isclose(metrics["post_return"], post, rtol=1e-12)


def test_loss_rounds_validation():
    with pytest.raises(ValueError, match="loss_rounds"):
        MetaMAMLConfig(loss_rounds=0)
    with pytest.raises(ValueError, match=r"loss_rounds must be at most adapt_rounds \(2\), got 3"):
        MetaMAMLConfig(adapt_rounds=2, loss_rounds=3)


@pytest.mark.parametrize("loss_rounds", [1, 2])
def test_trpo_objective_of_several_rounds_has_the_adam_objectives_gradient(monkeypatch,
                                                                           loss_rounds):
    # At the sampling parameters every importance ratio is 1, so the gradient of TRPO's surrogate
    # (the mean over the loss rounds) is the REINFORCE meta-gradient of the Adam path on the same
    # draws, and the mean KL is 0.
    from autograd import grad
    from ssmref.metarl import maml_rl
    kw = dict(meta_batch_size=2, episodes_per_task=3, inner_lr=0.1, adapt_rounds=2,
              later_lr_scale=0.5, loss_rounds=loss_rounds)
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                               hidden_sizes=(8,), rng=0)
    t = MetaMAML(Navigation2D(horizon=6), params, spec, MetaMAMLConfig(outer="trpo", **kw))
    seen = {}

    def capture(theta, objective, **settings):
        seen["objective"] = objective
        return theta, {"loss_before": 0.0, "grad_norm": 0.0, "kl_after": 0.0, "backtracks": 0,
                       "accepted": True, "step_norm": 0.0}
    monkeypatch.setattr(maml_rl, "trpo_step", capture)
    t.meta_step(rng=1)
    a = MetaMAML(Navigation2D(horizon=6), params, spec, MetaMAMLConfig(**kw))
    rng = onp.random.default_rng(1)
    tasks = a.family.sample_tasks(2, rng)
    pre = a._sample(tile_values(params, 2), tasks, rng)
    _, want = maml.value_and_grad_tree(
        lambda th: a._sampled_objective(th, tasks, pre, rng, {}), params)
    _, kl = seen["objective"](params)
    assert abs(kl) < 1e-15
    got = grad(lambda th: seen["objective"](th)[0])(params)
    assert P.tree_allclose(got, want, rtol=1e-9, atol=1e-14)
