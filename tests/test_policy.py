"""The SSM policy: step form = sequence form (every mode, with resets), conventions, gradients to
second order, the stateful shell (params read at call time, copies, persistence), bad input."""

import os
import zipfile

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref import nn
from ssmref import params as P
from ssmref.metarl.envs import Bandit, Navigation2D
from ssmref.metarl.policy import (FORMAT, PolicySpec, SSMMetaPolicy, check_params, entropy,
                                  log_prob, policy_init, policy_inputs, policy_param_shapes,
                                  policy_rollout, policy_sequence, policy_step, sample)
from ssmref.ssm import MODES

MODE_NAMES = sorted(MODES)
KINDS = [(True, False), (True, True), (False, False), (False, True)]      # (discrete, prev a/r)
KIND_IDS = ["discrete", "discrete-prev", "continuous", "continuous-prev"]


def tiny(discrete, prev, rng, mode="scan", obs_dim=3, action_dim=None, **kw):
    action_dim = action_dim or (4 if discrete else 2)
    kw = {"state_dim": 5, "ssm_output_dim": 3, "hidden_sizes": (6,), "init_log_std": -0.3, **kw}
    return policy_init(obs_dim, action_dim, discrete=discrete, use_prev_action_reward=prev,
                       mode=mode, rng=rng, **kw)


def episodes(spec, rng, N, T):
    """Random ``obs (N, T, o)``, actions ``(N, T)`` ints or ``(N, T, d)``, rewards ``(N, T)``."""
    obs = rng.standard_normal((N, T, spec.obs_dim))
    if spec.discrete:
        actions = rng.integers(0, spec.action_dim, size=(N, T))
    else:
        actions = rng.standard_normal((N, T, spec.action_dim))
    return obs, actions, rng.standard_normal((N, T))


def head_key(spec):
    return "logits" if spec.discrete else "mean"


def step_through(params, spec, obs, actions, rewards, resets=None, garbage_first=False):
    """Run :func:`policy_step` over ``T`` steps, feeding back ``actions[:, t-1]``; stack outputs."""
    N, T = obs.shape[:2]
    h = None
    if garbage_first:                       # a stale state and stale inputs that reset must erase
        h = onp.full((N, spec.state_dim), 7.0)
    outs = []
    for t in range(T):
        if t == 0:
            if garbage_first:
                pa = (onp.full((N,), -1) if spec.discrete
                      else onp.full((N, spec.action_dim), onp.nan))
                pr = onp.full((N,), onp.nan)
            else:
                pa = pr = None
        else:
            pa, pr = actions[:, t - 1], rewards[:, t - 1]
        r = None if resets is None else resets[:, t]
        out, h = policy_step(params, spec, h, obs[:, t], pa, pr, reset=r)
        outs.append(out)
    keys = [k for k in outs[0] if k != "log_std"]
    return {k: onp.stack([o[k] for o in outs], axis=1) for k in keys}, h


def max_err(a, b):
    return float(onp.max(onp.abs(onp.asarray(a) - onp.asarray(b))))


# ----------------------------------------------------------------------------- initialisation

@pytest.mark.parametrize("discrete,prev", KINDS, ids=KIND_IDS)
def test_init_tree_layout_and_shapes(discrete, prev, rng):
    params, spec = tiny(discrete, prev, rng)
    flat = P.flatten_dict(params)
    assert {k: v.shape for k, v in flat.items()} == policy_param_shapes(spec)
    assert set(params) == {"ssm", "pi", "v"} | (set() if discrete else {"log_std"})
    assert all(v.dtype == onp.float64 for v in flat.values())
    assert spec.input_dim == 3 + (spec.action_dim + 1 if prev else 0)
    assert params["ssm"]["B"].shape == (5, spec.input_dim)
    assert params["pi"]["layer0"]["W"].shape == (6, 3 + 3)                 # z = [y, o]
    if not discrete:
        assert onp.array_equal(params["log_std"], onp.full(2, -0.3))


def test_init_is_deterministic_and_ssm_options_apply():
    a, _ = policy_init(2, 3, discrete=True, rng=5, state_dim=4, ssm_scale=0.5)
    b, _ = policy_init(2, 3, discrete=True, rng=5, state_dim=4, ssm_scale=0.5)
    assert P.tree_allclose(a, b, rtol=0)
    assert abs(max(abs(onp.linalg.eigvals(a["ssm"]["A"]))) - 0.5) < 1e-12
    h, _ = policy_init(2, 3, discrete=True, rng=5, state_dim=4, ssm_method="hippo", dt=0.2)
    eigs = sorted(onp.linalg.eigvals(h["ssm"]["A"]).real)
    assert onp.allclose(eigs, onp.exp(-0.2 * onp.arange(4, 0, -1)))
    c, _ = policy_init(2, 2, discrete=False, init_log_std=[0.0, onp.log(0.5)], rng=0)
    assert onp.allclose(c["log_std"], [0.0, onp.log(0.5)])


@pytest.mark.parametrize("kwargs,match", [
    ({"discrete": True, "action_dim": 1}, "action_dim"),
    ({"discrete": "yes"}, "discrete"),
    ({"mode": "fft"}, "mode"),
    ({"hidden_sizes": (4, 0)}, r"hidden_sizes\[1\]"),
    ({"hidden_sizes": 4}, "hidden_sizes"),
    ({"state_dim": 0}, "state_dim"),
    ({"discrete": False, "init_log_std": [0.0, 0.0, 0.0]}, "init_log_std"),
    ({"ssm_method": "legs"}, "method"),
])
def test_init_rejects_bad_configuration(kwargs, match):
    kw = {"obs_dim": 2, "action_dim": 2, "discrete": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        policy_init(kw.pop("obs_dim"), kw.pop("action_dim"), **kw)


# ----------------------------------------------------------------------------- inputs and heads

def test_policy_inputs_shift_one_hot_and_zeros_at_start(rng):
    _, spec = tiny(True, True, rng)
    obs = rng.standard_normal((2, 3, 3))
    actions = onp.array([[2, 0, 1], [3, 3, 0]])
    rewards = onp.array([[0.5, -1.0, 2.0], [1.0, 2.0, 3.0]])
    x = policy_inputs(spec, obs, actions, rewards)                        # (2, 3, 3 + 4 + 1)
    assert x.shape == (2, 3, 8)
    assert onp.array_equal(x[..., :3], obs)
    assert onp.array_equal(x[:, 0, 3:], onp.zeros((2, 5)))             # a_{-1} = 0, not one_hot(0)
    assert onp.array_equal(x[0, 1, 3:], [0, 0, 1, 0, 0.5])                 # one_hot(a_0 = 2), r_0
    assert onp.array_equal(x[1, 2, 3:], [0, 0, 0, 1, 2.0])                 # one_hot(a_1 = 3), r_1
    _, cspec = tiny(False, True, rng)
    ca = rng.standard_normal((2, 3, 2))
    cx = policy_inputs(cspec, obs, ca, rewards)
    assert onp.array_equal(cx[:, 1:, 3:5], ca[:, :-1])
    assert onp.array_equal(cx[:, 1:, 5], rewards[:, :-1])
    _, plain = tiny(True, False, rng)
    assert policy_inputs(plain, obs, actions, rewards) is not None
    assert onp.array_equal(policy_inputs(plain, obs), obs)


@pytest.mark.parametrize("discrete,prev", KINDS, ids=KIND_IDS)
def test_sequence_matches_explicit_equations(discrete, prev, rng):
    params, spec = tiny(discrete, prev, rng)
    obs, actions, rewards = episodes(spec, rng, 2, 5)
    out = policy_sequence(params, spec, obs, actions, rewards)
    A, B, C, D = (params["ssm"][k] for k in "ABCD")
    x = policy_inputs(spec, obs, actions, rewards)
    for i in range(2):
        h = onp.zeros(spec.state_dim)
        for t in range(5):
            h = A @ h + B @ x[i, t]
            y = C @ h + D @ x[i, t]                                        # reads the new state
            z = onp.concatenate([y, obs[i, t]])
            pi = onp.tanh(z @ params["pi"]["layer0"]["W"].T + params["pi"]["layer0"]["b"])
            pi = pi @ params["pi"]["layer1"]["W"].T + params["pi"]["layer1"]["b"]
            v = onp.tanh(z @ params["v"]["layer0"]["W"].T + params["v"]["layer0"]["b"])
            v = v @ params["v"]["layer1"]["W"].T + params["v"]["layer1"]["b"]
            assert max_err(out["features"][i, t], y) < 1e-13
            assert max_err(out[head_key(spec)][i, t], pi) < 1e-13
            assert abs(out["values"][i, t] - v[0]) < 1e-13


@pytest.mark.parametrize("discrete,prev", KINDS, ids=KIND_IDS)
def test_output_shapes(discrete, prev, rng):
    params, spec = tiny(discrete, prev, rng)
    obs, actions, rewards = episodes(spec, rng, 3, 4)
    out = policy_sequence(params, spec, obs, actions, rewards, return_states=True)
    k = spec.action_dim
    assert out[head_key(spec)].shape == (3, 4, k)
    assert out["values"].shape == (3, 4) and out["features"].shape == (3, 4, 3)
    assert out["states"].shape == (3, 4, 5)
    dist_keys = {"logits"} if discrete else {"mean", "log_std"}
    assert set(out) == dist_keys | {"values", "features", "states"}
    one = policy_sequence(params, spec, obs[1], actions[1], rewards[1])    # unbatched (T, obs_dim)
    assert one["values"].shape == (4,)
    assert max_err(one["values"], out["values"][1]) < 1e-13
    step, h = policy_step(params, spec, None, obs[:, 0], None, None)
    assert step[head_key(spec)].shape == (3, k) and step["values"].shape == (3,)
    assert h.shape == (3, 5)
    assert log_prob(spec, out, actions).shape == (3, 4) and entropy(spec, out).shape == (3, 4)


# ----------------------------------------------------------------------------- step = sequence

@pytest.mark.parametrize("mode", MODE_NAMES)
@pytest.mark.parametrize("discrete,prev", KINDS, ids=KIND_IDS)
def test_step_form_equals_sequence_form(discrete, prev, mode, rng):
    params, spec = tiny(discrete, prev, rng, mode=mode)
    obs, actions, rewards = episodes(spec, rng, 3, 9)
    seq = policy_sequence(params, spec, obs, actions, rewards, return_states=True)
    stepped, h_last = step_through(params, spec, obs, actions, rewards)
    for k in (head_key(spec), "values", "features"):
        assert max_err(stepped[k], seq[k]) < 1e-12, k
    assert max_err(h_last, seq["states"][:, -1]) < 1e-12
    assert onp.array_equal(log_prob(spec, seq, actions).shape, (3, 9))


@pytest.mark.parametrize("mode", MODE_NAMES)
@pytest.mark.parametrize("discrete,prev", KINDS, ids=KIND_IDS)
def test_consecutive_episodes_with_reset_equal_separate_sequences(discrete, prev, mode, rng):
    """Several episodes stream through one state per row; ``reset`` at every boundary must make
    each episode's outputs those of the sequence form run on that episode alone."""
    params, spec = tiny(discrete, prev, rng, mode=mode)
    N, T = 3, 14
    obs, actions, rewards = episodes(spec, rng, N, T)
    resets = rng.random((N, T)) < 0.25
    resets[:, 0] = True
    resets[1, 1] = True                                  # a one-step episode
    stepped, _ = step_through(params, spec, obs, actions, rewards, resets, garbage_first=True)
    n_episodes = 0
    for i in range(N):
        starts = list(onp.flatnonzero(resets[i])) + [T]
        for s, e in zip(starts[:-1], starts[1:]):
            seq = policy_sequence(params, spec, obs[i, s:e], actions[i, s:e], rewards[i, s:e])
            for k in (head_key(spec), "values", "features"):
                assert max_err(stepped[k][i, s:e], seq[k]) < 1e-12, (i, s, e, k)
            n_episodes += 1
    assert n_episodes > N


@given(seed=st.integers(0, 2 ** 32 - 1), T=st.integers(1, 12), kind=st.sampled_from(KINDS),
       mode=st.sampled_from(MODE_NAMES))
def test_step_equals_sequence_random_configurations(seed, T, kind, mode):
    rng = onp.random.default_rng(seed)
    discrete, prev = kind
    params, spec = policy_init(
        int(rng.integers(1, 4)), int(rng.integers(2, 4)), discrete=discrete,
        state_dim=int(rng.integers(1, 5)), ssm_output_dim=int(rng.integers(1, 4)),
        hidden_sizes=tuple(int(h) for h in rng.integers(1, 5, size=rng.integers(0, 3))),
        use_prev_action_reward=prev, ssm_scale=float(rng.uniform(0, 0.99)), mode=mode, rng=rng)
    obs, actions, rewards = episodes(spec, rng, int(rng.integers(1, 3)), T)
    seq = policy_sequence(params, spec, obs, actions, rewards)
    stepped, _ = step_through(params, spec, obs, actions, rewards)
    for k in (head_key(spec), "values", "features"):
        assert max_err(stepped[k], seq[k]) < 1e-12, k


# ----------------------------------------------------------------------------- distributions

@pytest.mark.parametrize("discrete", [True, False])
def test_log_prob_and_entropy_are_the_nn_functions(discrete, rng):
    params, spec = tiny(discrete, True, rng)
    obs, actions, rewards = episodes(spec, rng, 2, 4)
    out = policy_sequence(params, spec, obs, actions, rewards)
    if discrete:
        want = nn.categorical_log_prob(out["logits"], actions)
        assert onp.array_equal(entropy(spec, out), nn.categorical_entropy(out["logits"]))
    else:
        want = nn.gaussian_log_prob(out["mean"], out["log_std"], actions)
        sigma = onp.exp(out["log_std"])                                   # summed over action dims
        per_dim = (-0.5 * ((actions - out["mean"]) / sigma) ** 2
                   - onp.log(sigma * onp.sqrt(2 * onp.pi)))
        assert max_err(want, per_dim.sum(-1)) < 1e-12
        assert onp.array_equal(entropy(spec, out), nn.gaussian_entropy(out["log_std"], out["mean"]))
        assert entropy(spec, out).shape == (2, 4)
    assert onp.array_equal(log_prob(spec, out, actions), want)


@pytest.mark.parametrize("discrete", [True, False])
def test_sampling_is_deterministic_given_the_generator(discrete, rng):
    params, spec = tiny(discrete, False, rng)
    obs, _, _ = episodes(spec, rng, 3, 5)
    out = policy_sequence(params, spec, obs)
    a1 = sample(spec, out, onp.random.default_rng(11))
    a2 = sample(spec, out, onp.random.default_rng(11))
    assert onp.array_equal(a1, a2)
    assert a1.shape == ((3, 5) if discrete else (3, 5, 2))
    best = sample(spec, out, deterministic=True)
    want = onp.argmax(out["logits"], -1) if discrete else out["mean"]
    assert onp.array_equal(best, want)


# ----------------------------------------------------------------------------- gradients

def rl_loss(spec, obs, actions, rewards, weights, returns, mode):
    """``sum(log pi(a) w) + 0.5 sum((V - R)^2) - 0.1 sum(H)``, a function of the params."""
    def loss(params):
        out = policy_sequence(params, spec, obs, actions, rewards, mode=mode)
        return (np.sum(log_prob(spec, out, actions) * weights)
                + 0.5 * np.sum((out["values"] - returns) ** 2)
                - 0.1 * np.sum(entropy(spec, out)))
    return loss


@pytest.mark.parametrize("mode", MODE_NAMES)
@pytest.mark.parametrize("discrete,prev", KINDS, ids=KIND_IDS)
def test_second_order_gradients_match_central_differences(discrete, prev, mode, rng):
    params, spec = tiny(discrete, prev, rng, obs_dim=2, action_dim=2 if not discrete else 3,
                        state_dim=2, ssm_output_dim=2, hidden_sizes=(3,))
    obs, actions, rewards = episodes(spec, rng, 2, 3)
    weights, returns = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    loss = rl_loss(spec, obs, actions, rewards, weights, returns, mode)
    check_grads(loss, modes=["rev"], order=2)(params)


@pytest.mark.parametrize("discrete", [True, False])
def test_gradients_agree_across_modes(discrete, rng):
    params, spec = tiny(discrete, True, rng)
    obs, actions, rewards = episodes(spec, rng, 2, 6)
    weights, returns = rng.standard_normal((2, 6)), rng.standard_normal((2, 6))
    grads = {m: autograd.grad(rl_loss(spec, obs, actions, rewards, weights, returns, m))(params)
             for m in MODE_NAMES}
    for m in MODE_NAMES:
        assert P.tree_allclose(grads[m], grads["scan"], rtol=1e-10, atol=1e-12), m


def test_gradient_through_step_form_equals_sequence_form(rng):
    params, spec = tiny(False, True, rng)
    obs, actions, rewards = episodes(spec, rng, 2, 5)

    def seq_loss(p):
        return np.sum(log_prob(spec, policy_sequence(p, spec, obs, actions, rewards), actions))

    def step_loss(p):
        h, total = None, 0.0
        for t in range(5):
            pa, pr = (None, None) if t == 0 else (actions[:, t - 1], rewards[:, t - 1])
            out, h = policy_step(p, spec, h, obs[:, t], pa, pr)
            total = total + np.sum(log_prob(spec, out, actions[:, t]))
        return total

    assert P.tree_allclose(autograd.grad(step_loss)(params), autograd.grad(seq_loss)(params),
                           rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- the class

def small_model(discrete=True, prev=True, rng=0, **kw):
    return SSMMetaPolicy(2, 3 if discrete else 2, discrete=discrete, state_dim=4, ssm_output_dim=3,
                         hidden_sizes=(5,), use_prev_action_reward=prev, rng=rng, **kw)


@pytest.mark.parametrize("discrete", [True, False])
def test_forward_is_the_sequence_form_and_accepts_batches(discrete, rng):
    model = small_model(discrete)
    obs, actions, rewards = episodes(model.spec, rng, 2, 5)
    out = model(obs, actions, rewards)
    want = policy_sequence(model.params, model.spec, obs, actions, rewards)
    assert set(out) == set(want)
    for k in want:
        assert onp.array_equal(out[k], want[k])
    batch = {"obs": obs, "actions": actions, "rewards": rewards, "mask": onp.ones((2, 5)),
             "advantages": onp.zeros((2, 5))}
    assert onp.array_equal(model(**batch)["values"], want["values"])
    assert onp.array_equal(model(obs=obs, prev_actions=actions, prev_rewards=rewards)["values"],
                           want["values"])
    assert onp.array_equal(model.extract_features(**batch), want["features"])
    states = model.extract_features(**batch, kind="state")
    assert states.shape == (2, 5, 4)
    full = policy_sequence(model.params, model.spec, obs, actions, rewards, return_states=True)
    assert max_err(states, full["states"]) < 1e-13
    with pytest.raises(ValueError, match="not both"):
        model(obs, actions, rewards, actions=actions)


def test_params_are_read_at_call_time(rng):
    model = small_model(discrete=True)
    obs, actions, rewards = episodes(model.spec, rng, 2, 4)
    before = model(obs, actions, rewards)["logits"]
    other = policy_init(2, 3, discrete=True, state_dim=4, ssm_output_dim=3, hidden_sizes=(5,),
                        use_prev_action_reward=True, rng=99)[0]
    model.params = other
    after = model(obs, actions, rewards)["logits"]
    assert not onp.allclose(before, after)
    want = policy_sequence(other, model.spec, obs, actions, rewards)["logits"]
    assert onp.array_equal(after, want)


@pytest.mark.parametrize("discrete", [True, False])
def test_differentiate_through_forward_by_swapping_params(discrete, rng):
    model = small_model(discrete)
    obs, actions, rewards = episodes(model.spec, rng, 2, 4)
    original = model.params

    def via_model(p):
        saved = model.params
        model.params = p
        try:
            out = model(obs=obs, actions=actions, rewards=rewards)
            return np.sum(model.log_prob(out, actions)) + np.sum(out["values"] ** 2)
        finally:
            model.params = saved

    def direct(p):
        out = policy_sequence(p, model.spec, obs, actions, rewards)
        return np.sum(log_prob(model.spec, out, actions)) + np.sum(out["values"] ** 2)

    g = autograd.grad(via_model)(model.params)
    assert model.params is original
    assert P.tree_allclose(g, autograd.grad(direct)(model.params), rtol=0)
    assert P.global_norm(g) > 0


def test_get_and_set_parameters_are_copies(rng):
    model = small_model()
    got = model.get_parameters()
    got["ssm"]["A"][0, 0] += 1.0
    assert model.params["ssm"]["A"][0, 0] != got["ssm"]["A"][0, 0]
    new = policy_init(2, 3, discrete=True, state_dim=4, ssm_output_dim=3, hidden_sizes=(5,),
                      use_prev_action_reward=True, rng=7)[0]
    model.set_parameters(new)
    assert P.tree_allclose(model.params, new, rtol=0)
    new["pi"]["layer0"]["b"][0] = 123.0
    assert model.params["pi"]["layer0"]["b"][0] != 123.0
    bad = P.tree_copy(new)
    bad["v"]["layer0"]["W"] = onp.zeros((5, 4))
    with pytest.raises(ValueError, match=r"v\.layer0\.W.*\(5, 4\).*\(5, 5\)"):
        model.set_parameters(bad)
    bad = P.tree_copy(new)
    bad["ssm"]["A"][0, 0] = onp.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.set_parameters(bad)
    bad = P.tree_copy(new)
    del bad["v"]
    with pytest.raises(ValueError, match="missing"):
        model.set_parameters(bad)


@pytest.mark.parametrize("discrete", [True, False])
def test_act_follows_the_sequence_form_across_resets(discrete, rng):
    model = small_model(discrete)
    N, T = 3, 8
    obs = rng.standard_normal((N, T, 2))
    resets = onp.zeros((N, T), dtype=bool)
    resets[0, 3] = resets[2, 5] = True
    gen = onp.random.default_rng(3)
    model.reset(N)
    acts, rews, logps, vals = [], [], [], []
    pa = pr = None
    for t in range(T):
        a, info = model.act(obs[:, t], pa, pr, gen, reset=resets[:, t])
        r = rng.standard_normal(N)
        acts.append(a), rews.append(r), logps.append(info["log_prob"]), vals.append(info["value"])
        pa, pr = a, r
    actions, rewards = onp.stack(acts, 1), onp.stack(rews, 1)
    logps, vals = onp.stack(logps, 1), onp.stack(vals, 1)
    for i in range(N):
        starts = [0] + list(onp.flatnonzero(resets[i])) + [T]
        for s, e in zip(starts[:-1], starts[1:]):
            out = model(obs[i, s:e], actions[i, s:e], rewards[i, s:e])
            assert max_err(log_prob(model.spec, out, actions[i, s:e]), logps[i, s:e]) < 1e-12
            assert max_err(out["values"], vals[i, s:e]) < 1e-12
    # the same generator state gives the same actions
    model.reset(N)
    a1, _ = model.act(obs[:, 0], rng=onp.random.default_rng(5))
    model.reset(N)
    a2, _ = model.act(obs[:, 0], rng=onp.random.default_rng(5))
    assert onp.array_equal(a1, a2)
    with pytest.raises(ValueError, match=r"reset\(2\)"):
        model.act(obs[:2, 1], a1[:2], onp.zeros(2), gen)
    with pytest.raises(ValueError, match="prev_action"):
        model.act(obs[:, 1], None, None, gen)          # mid-episode, the previous step is required


@pytest.mark.parametrize("family,discrete", [(Bandit(num_arms=3, horizon=7), True),
                                             (Navigation2D(horizon=6), False)])
def test_rollout_records_what_the_sequence_form_computes(family, discrete):
    spec_kw = dict(obs_dim=family.obs_dim, discrete=discrete, state_dim=4, ssm_output_dim=3,
                   hidden_sizes=(5,), use_prev_action_reward=True, rng=1)
    model = SSMMetaPolicy(action_dim=3 if discrete else 2, **spec_kw)
    env = family.make_env(family.sample_tasks(2, rng=0), episodes_per_task=2)
    batch = model.rollout(env, rng=4)
    env2 = family.make_env(family.sample_tasks(2, rng=0), 2)
    again = policy_rollout(model.params, model.spec, env2, rng=4)
    for k in batch:
        assert onp.array_equal(batch[k], again[k]), k
    assert batch["obs"].shape == (4, family.horizon, family.obs_dim)
    for k in ("log_probs", "values", "mask", "rewards"):
        assert batch[k].shape == (4, family.horizon), k
    out = model(**batch)                               # actions / rewards fed back, shifted
    assert max_err(model.log_prob(out, batch["actions"]), batch["log_probs"]) < 1e-12
    assert max_err(out["values"], batch["values"]) < 1e-12


def test_rollout_rejects_a_mismatched_env():
    model = small_model(discrete=True)
    with pytest.raises(ValueError, match="discrete"):
        model.rollout(Navigation2D(horizon=3).make_env([{"goal": onp.zeros(2)}]))
    with pytest.raises(ValueError, match="obs_dim"):
        model.rollout(Bandit(num_arms=3, horizon=3).make_env([{"p": onp.ones(3) / 2}]))


# ----------------------------------------------------------------------------- persistence

@pytest.mark.parametrize("discrete", [True, False])
def test_save_load_round_trip_is_bit_exact(discrete, tmp_path, rng):
    model = small_model(discrete, mode="parallel", init_log_std=onp.log(0.5))
    path = tmp_path / "policy.npz"
    model.save(path)
    loaded = SSMMetaPolicy.load(path)
    assert loaded.spec == model.spec
    a, b = P.flatten_dict(model.params), P.flatten_dict(loaded.params)
    assert list(a) == list(b)
    assert all(onp.array_equal(a[k], b[k]) and b[k].dtype == onp.float64 for k in a)
    obs, actions, rewards = episodes(model.spec, rng, 2, 3)
    assert onp.array_equal(model(obs, actions, rewards)["values"],
                           loaded(obs, actions, rewards)["values"])
    assert not any(p.startswith(".tmp-") for p in os.listdir(tmp_path))


def write_npz(path, arrays):
    onp.savez(path, **arrays)
    return path


def spec_bytes(text):
    return onp.frombuffer(text.encode("utf-8"), dtype=onp.uint8)


def test_load_rejects_malformed_files(tmp_path):
    model = small_model(discrete=False)
    good = dict(P.flatten_dict(model.params), spec_json=spec_bytes(model.spec.to_json()))
    cases = {}
    cases["missing spec"] = {k: v for k, v in good.items() if k != "spec_json"}
    cases["spec not json"] = dict(good, spec_json=spec_bytes("{obs_dim: 2"))
    cases["spec float"] = dict(good, spec_json=onp.zeros(3))
    cases["spec not utf8"] = dict(good, spec_json=onp.array([0xff, 0xfe], dtype=onp.uint8))
    bad_field = model.spec.to_json().replace('"state_dim": 4', '"state_dim": -4')
    cases["bad field"] = dict(good, spec_json=spec_bytes(bad_field))
    bad_format = model.spec.to_json().replace(FORMAT, "other/9")
    cases["bad format"] = dict(good, spec_json=spec_bytes(bad_format))
    cases["spec list"] = dict(good, spec_json=spec_bytes("[1, 2]"))
    cases["wrong shape"] = dict(good, **{"ssm.A": onp.zeros((3, 3))})
    cases["float32"] = dict(good, **{"log_std": onp.zeros(2, dtype=onp.float32)})
    cases["nan"] = dict(good, **{"log_std": onp.array([0.0, onp.nan])})
    cases["extra"] = dict(good, extra=onp.zeros(1))
    cases["missing param"] = {k: v for k, v in good.items() if k != "pi.layer1.b"}
    assert SSMMetaPolicy.load(write_npz(tmp_path / "ok.npz", good)).spec == model.spec
    for name, arrays in cases.items():
        with pytest.raises(ValueError):
            SSMMetaPolicy.load(write_npz(tmp_path / f"{name}.npz", arrays))
    with pytest.raises(ValueError, match="no such file"):
        SSMMetaPolicy.load(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError):
        SSMMetaPolicy.load(tmp_path / "junk.npz")
    obj = tmp_path / "pickled.npz"
    onp.savez(obj, spec_json=onp.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        SSMMetaPolicy.load(obj)
    trunc = tmp_path / "trunc.npz"
    model.save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:200])
    with pytest.raises(ValueError):
        SSMMetaPolicy.load(trunc)
    assert zipfile.is_zipfile(tmp_path / "ok.npz")


def test_spec_json_round_trip():
    spec = PolicySpec(3, 2, False, 4, 5, [7, 8], True, "scan")
    assert spec.hidden_sizes == (7, 8)
    assert PolicySpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="keys"):
        PolicySpec.from_json('{"obs_dim": 3}')


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("discrete", [True, False])
def test_bad_shapes_raise_value_errors_naming_the_argument(discrete, rng):
    params, spec = tiny(discrete, True, rng)
    obs, actions, rewards = episodes(spec, rng, 2, 4)
    want = r"obs must have shape \(T, 3\) or \(N, T, 3\) with T >= 1, got \(2, 4, 2\)"
    with pytest.raises(ValueError, match=want):
        policy_sequence(params, spec, obs[..., :2], actions, rewards)
    with pytest.raises(ValueError, match=r"prev_actions must have shape"):
        policy_sequence(params, spec, obs, actions[:, :3], rewards)
    with pytest.raises(ValueError, match=r"prev_rewards must have shape \(2, 4\), got \(2, 4, 1\)"):
        policy_sequence(params, spec, obs, actions, rewards[..., None])
    with pytest.raises(ValueError, match="pass prev_actions and prev_rewards"):
        policy_sequence(params, spec, obs)
    with pytest.raises(ValueError, match="mode"):
        policy_sequence(params, spec, obs, actions, rewards, mode="fft")
    with pytest.raises(ValueError, match=r"obs must have shape \(N, 3\)"):
        policy_step(params, spec, None, obs[:, 0, :2])
    with pytest.raises(ValueError, match=r"h must have shape \(2, 5\), got \(2, 4\)"):
        policy_step(params, spec, onp.zeros((2, 4)), obs[:, 0], actions[:, 0], rewards[:, 0])
    with pytest.raises(ValueError, match=r"reset must be a bool array of shape \(2,\)"):
        policy_step(params, spec, onp.zeros((2, 5)), obs[:, 0], actions[:, 0], rewards[:, 0],
                    reset=onp.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="prev_action and prev_reward"):
        policy_step(params, spec, onp.zeros((2, 5)), obs[:, 0])
    with pytest.raises(ValueError, match=r"params\['ssm.B'\] has shape"):
        bad = P.tree_copy(params)
        bad["ssm"]["B"] = onp.zeros((5, 3))
        policy_sequence(bad, spec, obs, actions, rewards)
    model = SSMMetaPolicy.from_params(params, spec)
    with pytest.raises(ValueError, match="obs must have shape"):
        model(obs[0, 0])
    with pytest.raises(ValueError, match="obs must have shape"):
        model.act(obs[:, 0, :2])
    if discrete:
        with pytest.raises(ValueError, match="integer"):
            policy_sequence(params, spec, obs, actions.astype(float), rewards)
        with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
            policy_sequence(params, spec, obs, actions + 4, rewards)
        with pytest.raises(ValueError, match="log_prob|actions"):
            log_prob(spec, policy_sequence(params, spec, obs, actions, rewards), actions[:, :2])
    else:
        with pytest.raises(ValueError, match=r"prev_action must have shape \(2, 2\)"):
            policy_step(params, spec, onp.zeros((2, 5)), obs[:, 0], actions[:, 0, :1],
                        rewards[:, 0])


def test_check_params_names_the_leaf(rng):
    params, spec = tiny(True, False, rng)
    check_params(params, spec)
    bad = P.tree_copy(params)
    bad["pi"]["layer1"]["W"] = onp.zeros((3, 6))
    with pytest.raises(ValueError, match=r"'pi.layer1.W'\] has shape \(3, 6\), expected \(4, 6\)"):
        check_params(bad, spec)
    with pytest.raises(ValueError, match="unexpected"):
        check_params(dict(params, log_std=onp.zeros(4)), spec)
    with pytest.raises(ValueError, match="PolicySpec"):
        check_params(params, {"obs_dim": 3})


# ----------------------------------------------------------------------------- cross-check

@pytest.mark.parametrize("discrete", [True, False])
def test_matches_an_independent_torch_implementation(discrete, rng):
    """The same weights in torch, written from the equations in docs/policy.md: the log-probs,
    values and the gradient of a policy-gradient loss agree."""
    torch = pytest.importorskip("torch")
    params, spec = tiny(discrete, True, rng)
    obs, actions, rewards = episodes(spec, rng, 2, 6)
    w = rng.standard_normal((2, 6))

    def ours(p):
        out = policy_sequence(p, spec, obs, actions, rewards)
        lp = log_prob(spec, out, actions)
        return np.sum(lp * w) + np.sum(out["values"] ** 2), lp, out["values"]

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in P.flatten_dict(params).items()}
    o, r = torch.tensor(obs), torch.tensor(rewards)
    if discrete:
        e = torch.nn.functional.one_hot(torch.tensor(actions), spec.action_dim).double()
    else:
        e = torch.tensor(actions)
    prev = torch.cat([e, r[..., None]], -1)                              # (N, T, K+1)
    prev = torch.cat([torch.zeros_like(prev[:, :1]), prev[:, :-1]], 1)   # shifted, zeros at t=0
    x = torch.cat([o, prev], -1)
    h, ys = torch.zeros(2, spec.state_dim, dtype=torch.float64), []
    for t in range(6):
        h = h @ tp["ssm.A"].T + x[:, t] @ tp["ssm.B"].T
        ys.append(h @ tp["ssm.C"].T + x[:, t] @ tp["ssm.D"].T)
    z = torch.cat([torch.stack(ys, 1), o], -1)

    def mlp(head, u):
        linear = torch.nn.functional.linear
        u = torch.tanh(linear(u, tp[f"{head}.layer0.W"], tp[f"{head}.layer0.b"]))
        return linear(u, tp[f"{head}.layer1.W"], tp[f"{head}.layer1.b"])

    values = mlp("v", z)[..., 0]
    if discrete:
        dist = torch.distributions.Categorical(logits=mlp("pi", z))
        lp = dist.log_prob(torch.tensor(actions))
    else:
        normal = torch.distributions.Normal(mlp("pi", z), tp["log_std"].exp())
        lp = torch.distributions.Independent(normal, 1).log_prob(torch.tensor(actions))
    loss = (lp * torch.tensor(w)).sum() + (values ** 2).sum()
    loss.backward()

    _, our_lp, our_v = ours(params)
    assert max_err(our_lp, lp.detach().numpy()) < 1e-12
    assert max_err(our_v, values.detach().numpy()) < 1e-12
    g = P.flatten_dict(autograd.grad(lambda p: ours(p)[0])(params))
    for k, t in tp.items():
        assert onp.allclose(g[k], t.grad.numpy(), rtol=1e-10, atol=1e-12), k
