"""The navigation action-scale experiment: the shift, the variants, and that each task starts
from the meta-parameters."""

import numpy as onp
import pytest

from ssmref import params as P
from ssmref.experiments import action_scale as S
from ssmref.metarl.envs import Navigation2D
from ssmref.metarl.policy import SSMMetaPolicy


def tiny_policy():
    return SSMMetaPolicy(2, 2, discrete=False, state_dim=3, ssm_output_dim=3, hidden_sizes=(8,),
                         rng=0)


def test_scaled_actions_multiplies_before_the_env_scaling():
    task = Navigation2D().sample_tasks(1, rng=0)
    plain, scaled = Navigation2D().make_env(task, 2), S.ScaledActions(Navigation2D().make_env(task, 2), -0.5)
    plain.reset(0), scaled.reset(0)
    a = onp.array([[0.4, -1.0], [2.0, 0.2]])
    want = plain.step(-0.5 * a)
    got = scaled.step(a)
    for w, g in zip(want[:3], got[:3]):
        assert onp.array_equal(w, g)
    assert scaled.horizon == 100 and scaled.action_dim == 2
    with pytest.raises(ValueError, match="scale"):
        S.ScaledActions(plain, float("nan"))


def test_variants_share_round_zero_and_none_never_updates():
    policy = tiny_policy()
    task = Navigation2D().sample_tasks(1, rng=1)[0]
    runs = {v: S.run_task(policy, task, 0.5, v, rounds=2, episodes=3, rng=7) for v in S.VARIANTS}
    assert runs["none"][0] == runs["maml"][0] == runs["adapter"][0]
    assert runs["maml"][1:] != runs["none"][1:] and runs["adapter"][1:] != runs["none"][1:]
    with pytest.raises(ValueError, match="variant"):
        S.run_task(policy, task, 1.0, "sgd")


def test_the_policy_is_not_modified_and_results_are_seeded():
    policy = tiny_policy()
    before = P.tree_copy(policy.params)
    a = S.run(policy, tasks=2, rounds=1, episodes=2, scales=(-1.0,), variants=("adapter",))
    b = S.run(policy, tasks=2, rounds=1, episodes=2, scales=(-1.0,), variants=("adapter",))
    assert P.tree_allclose(policy.params, before, rtol=0, atol=0)
    assert onp.array_equal(a[(-1.0, "adapter")], b[(-1.0, "adapter")])
    assert a[(-1.0, "adapter")].shape == (2, 2)
