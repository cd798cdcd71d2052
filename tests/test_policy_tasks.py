"""The task-batched policies (one parameter copy per task) equal the one-policy forms; the
Gaussian MLP policy; the trainer's batched loss and inner steps equal the per-task ones; the
BLAS-thread limit of the hot loops."""

import json

import autograd.numpy as np
import numpy as onp
import pytest
from threadpoolctl import threadpool_info

from ssmref import maml
from ssmref import params as P
from ssmref.metarl import MetaMAML, MetaMAMLConfig, surrogate_loss, trajectory_data
from ssmref.metarl.envs import Navigation2D, make
from ssmref.metarl.maml_rl import tasks_surrogate_loss, tasks_trajectory_data
from ssmref.metarl.policy import log_prob, policy_init, policy_rollout, policy_sequence
from ssmref.metarl.policy.kinds import check_policy_params, param_shapes, spec_from_json
from ssmref.metarl.policy.mlp import MLPPolicySpec, mlp_policy_distribution, mlp_policy_init
from ssmref.metarl.policy.tasks import tasks_distribution, tasks_rollout, tile_values
from ssmref.metarl.threads import blas_threads

M, E, T = 3, 4, 7


def stacked(pairs):
    return P.tree_map(lambda *leaves: onp.stack(leaves), *[p for p, _ in pairs]), pairs[0][1]


@pytest.mark.parametrize("kw", [{"mode": "convolve"}, {"mode": "scan"}, {"mode": "parallel"},
                                {"use_prev_action_reward": True}])
def test_ssm_tasks_distribution_is_the_sequence_form_per_task(kw, rng):
    pairs = [policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2, hidden_sizes=(5,),
                         rng=i, init_log_std=0.1 * i, **kw) for i in range(M)]
    theta, spec = stacked(pairs)
    obs, act = rng.standard_normal((M, E, T, 2)), rng.standard_normal((M, E, T, 2))
    rew = rng.standard_normal((M, E, T))
    d = tasks_distribution(theta, spec, obs, act, rew)
    for i in range(M):
        one = policy_sequence(pairs[i][0], spec, obs[i], act[i], rew[i])
        assert onp.allclose(d["mean"][i], one["mean"], rtol=0, atol=1e-12)
        assert onp.array_equal(d["log_std"][i, 0, 0], one["log_std"])


def test_discrete_ssm_tasks_rollout_is_the_one_policy_rollout():
    family = make("bandit", num_arms=3, horizon=5)
    pairs = [policy_init(1, 3, discrete=True, state_dim=3, ssm_output_dim=2, hidden_sizes=(4,),
                         use_prev_action_reward=True, rng=i) for i in range(M)]
    theta, spec = stacked(pairs)
    tasks = family.sample_tasks(M, rng=0)
    batched = tasks_rollout(theta, spec, family.make_env(tasks, E), onp.random.default_rng(1), M)
    assert batched["actions"].shape == (M * E, 5) and batched["actions"].dtype.kind == "i"
    # the same episodes: task i's rows, recomputed by the one-policy sequence form
    for i in range(M):
        rows = slice(i * E, (i + 1) * E)
        out = policy_sequence(pairs[i][0], spec, batched["obs"][rows], batched["actions"][rows],
                              batched["rewards"][rows])
        lp = log_prob(spec, out, batched["actions"][rows])
        assert onp.allclose(lp, batched["log_probs"][rows], atol=1e-12)


def test_mlp_policy_spec_init_and_tasks_forms(rng):
    params, spec = mlp_policy_init(2, 2, hidden_sizes=(6, 5), init_std=0.5, rng=0)
    assert spec == MLPPolicySpec(2, 2, (6, 5), "relu") and spec.kind == "mlp"
    assert spec_from_json(spec.to_json()) == spec
    assert {k: v.shape for k, v in P.flatten_dict(params).items()} == param_shapes(spec)
    check_policy_params(params, spec)
    r = onp.sqrt(6.0 / (2 + 6))                                     # Xavier-uniform bound
    W = params["pi"]["layer0"]["W"]
    assert onp.all(onp.abs(W) <= r) and onp.abs(W).max() > r / 2
    assert not params["pi"]["layer0"]["b"].any()
    assert onp.allclose(params["log_std"], onp.log(0.5))
    with pytest.raises(ValueError, match="missing"):
        check_policy_params({"log_std": params["log_std"]}, spec)
    with pytest.raises(ValueError, match="format"):
        spec_from_json(json.dumps({"format": "nope"}))
    with pytest.raises(ValueError, match="discrete"):
        MetaMAML(make("bandit"), params, spec)
    pairs = [mlp_policy_init(2, 2, hidden_sizes=(6, 5), rng=i) for i in range(M)]
    theta, spec = stacked(pairs)
    obs = rng.standard_normal((M, E, T, 2))
    d = tasks_distribution(theta, spec, obs, None, None)
    for i in range(M):
        one = mlp_policy_distribution(pairs[i][0], spec, obs[i])
        assert onp.allclose(d["mean"][i], one["mean"], rtol=0, atol=1e-14)


@pytest.mark.parametrize("estimator", ["reinforce", "dice"])
def test_tasks_loss_and_inner_steps_are_the_per_task_ones(estimator):
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                               hidden_sizes=(5,), rng=0)
    m = MetaMAML(Navigation2D(horizon=6), params, spec,
                 MetaMAMLConfig(meta_batch_size=M, episodes_per_task=E, estimator=estimator))
    rng = onp.random.default_rng(2)
    tasks = m.family.sample_tasks(M, rng)
    traj = m._sample(tile_values(params, M), tasks, rng)
    data = tasks_trajectory_data(traj, M, 0.99, estimator)
    per_task = [trajectory_data({k: v[i * E:(i + 1) * E] for k, v in traj.items()}, 0.99,
                                estimator) for i in range(M)]
    losses = tasks_surrogate_loss(spec)(maml.tile_params(params, M), data)
    one = surrogate_loss(spec)
    assert onp.allclose(losses, [one(params, d) for d in per_task], rtol=1e-12, atol=1e-15)
    fast = m._adapt(tile_values(params, M), data)
    for i in range(M):
        want = maml.adapt(params, one, per_task[i], inner_lr=m.config.inner_lr)
        assert P.tree_allclose(P.tree_map(lambda x: x[i], fast), want, rtol=1e-10, atol=1e-14)
    # the batched meta-gradient is the per-task one
    query = tasks_trajectory_data(m._sample(fast, tasks, rng), M, 0.99, "reinforce")
    pairs = [(per_task[i], {**{k: query[k][i] for k in ("obs", "actions", "rewards", "mask",
                                                        "adv")}, "estimator": "reinforce",
                            "gamma": 0.99}) for i in range(M)]
    a = maml.batched_meta_gradient(params, m.tasks_loss_fn, data, query, num_tasks=M,
                                   inner_lr=m.config.inner_lr)
    b = maml.meta_gradient(params, one, pairs, inner_lr=m.config.inner_lr)
    assert onp.isclose(a[0], b[0], rtol=1e-11) and P.tree_allclose(a[1], b[1], rtol=1e-9,
                                                                   atol=1e-13)


def test_one_policy_rollout_and_the_trainer_sample_agree():
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                               hidden_sizes=(5,), rng=0)
    family = Navigation2D(horizon=6)
    task = family.sample_tasks(1, rng=0)
    a = policy_rollout(params, spec, family.make_env(task, E), rng=5)
    b = tasks_rollout(tile_values(params, 1), spec, family.make_env(task, E),
                      onp.random.default_rng(5), 1)
    assert onp.allclose(a["actions"], b["actions"], atol=1e-12)
    assert onp.array_equal(a["mask"], b["mask"])


def blas_thread_counts():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_blas_threads_are_limited_inside_the_block_and_restored_after(monkeypatch):
    before = blas_thread_counts()
    assert before, "NumPy's BLAS should be visible to threadpoolctl"
    with blas_threads(1):
        assert set(blas_thread_counts()) == {1}
        with blas_threads(None):                   # None changes nothing
            assert set(blas_thread_counts()) == {1}
    assert blas_thread_counts() == before
    with pytest.raises(ValueError, match="blas threads"):
        blas_threads(0)
    # the trainer's meta-iteration runs inside the limit
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                               hidden_sizes=(5,), rng=0)
    m = MetaMAML(Navigation2D(horizon=4), params, spec,
                 MetaMAMLConfig(meta_batch_size=2, episodes_per_task=2))
    seen, inner = [], MetaMAML._meta_step

    def spy(self, rng):
        seen.append(blas_thread_counts())
        return inner(self, rng)
    monkeypatch.setattr(MetaMAML, "_meta_step", spy)
    m.meta_step(0)
    assert set(seen[0]) == {1} and blas_thread_counts() == before
    m.blas_threads = None
    m.meta_step(1)
    assert seen[1] == before
