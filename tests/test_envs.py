"""Tests for ssmref.metarl.envs: the rules of each environment, cross-checked against independent ports.

- Navigation2D against a scalar, line-by-line port of rllab's PointEnvRandGoal, normalize, rollout;
- the batched env against N single-row envs;
- Bandit against an independent Bernoulli simulation fed the same generator;
- LTISystemID against scipy.signal.dlsim (old-state convention, mapped) and the Markov sum.
"""

import math

import numpy as onp
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

from ssmref.metarl import envs
from ssmref.metarl.envs import (ENVS, Bandit, LTISystemID, Navigation2D, Sinusoid, VecBandit,
                                VecNavigation2D, lti_simulate, make, scale_action)
from ssmref.ssm import spectral_radius


# --------------------------------------------------------------------------------------------
# An independent port of the source: rllab PointEnvRandGoal behind normalize, and rllab.rollout
# --------------------------------------------------------------------------------------------

def rllab_point_rollout(goal, actions, max_path_length=100):
    """Scalar Python port of cbfinn/maml_rl: ``rollout(normalize(PointEnvRandGoal(goal)))``.

    ``actions[t]`` is the policy action at step t (open-loop replay). Returns the path's
    observations (before each step), rewards, and whether it ended by ``done``.
    """
    lb, ub = -0.1, 0.1
    state = (0.0, 0.0)
    observations, rewards, ended_by_done = [], [], False
    for t in range(max_path_length):
        # normalize.step: rescale and clip
        scaled = [min(max(lb + (a + 1.0) * 0.5 * (ub - lb), lb), ub) for a in actions[t]]
        observations.append(state)
        # PointEnvRandGoal.step
        state = (state[0] + scaled[0], state[1] + scaled[1])
        x, y = state[0] - goal[0], state[1] - goal[1]
        reward = -(x ** 2 + y ** 2) ** 0.5
        done = abs(x) < 0.01 and abs(y) < 0.01
        rewards.append(reward)
        # rollout: append, then stop at done
        if done:
            ended_by_done = True
            break
    return observations, rewards, ended_by_done


def closed_loop(env, gain, noise, rng):
    """Run a noisy proportional controller on a VecNavigation2D until every row has ended."""
    rng = onp.random.default_rng(rng)
    obs = env.reset()
    record = {"obs": [], "actions": [], "reward": [], "terminated": [], "truncated": [],
              "mask": []}
    while env.alive.any():
        actions = gain * (env.goals - obs) / 0.1 + noise * rng.standard_normal(obs.shape)
        record["obs"].append(obs)
        obs, reward, terminated, truncated, info = env.step(actions)
        record["actions"].append(actions)
        record["reward"].append(reward)
        record["terminated"].append(terminated)
        record["truncated"].append(truncated)
        record["mask"].append(info["mask"])
    return {k: onp.stack(v) for k, v in record.items()}      # each (T, N, ...)


# --------------------------------------------------------------------------------------------
# Navigation2D
# --------------------------------------------------------------------------------------------

def test_scale_action_is_rllab_normalize():
    a = onp.array([-7.0, -1.0, -0.3, 0.0, 0.3, 1.0, 5.0])
    expected = onp.array([-0.1, -0.1, -0.03, 0.0, 0.03, 0.1, 0.1])
    onp.testing.assert_allclose(scale_action(a), expected, rtol=0, atol=1e-16)
    onp.testing.assert_allclose(scale_action(a), onp.clip(0.1 * a, -0.1, 0.1), rtol=0, atol=1e-16)
    # bitwise rllab operation order
    for ai in a:
        assert scale_action(ai) == min(max(-0.1 + (ai + 1.0) * 0.5 * (0.1 - -0.1), -0.1), 0.1)


def test_navigation_reward_is_computed_after_the_move():
    env = VecNavigation2D([[0.3, -0.2]])
    obs = env.reset()
    onp.testing.assert_array_equal(obs, [[0.0, 0.0]])
    obs, reward, terminated, truncated, info = env.step([[1.0, 0.5]])
    onp.testing.assert_allclose(obs, [[0.1, 0.05]], rtol=0, atol=1e-16)
    onp.testing.assert_allclose(reward, [-math.hypot(0.1 - 0.3, 0.05 + 0.2)], rtol=1e-15)
    onp.testing.assert_allclose(info["distance"], -reward, rtol=0, atol=0)
    assert not terminated[0] and not truncated[0] and info["mask"][0] == 1.0 and info["t"] == 1


def test_navigation_actions_are_clipped():
    env = VecNavigation2D([[0.3, 0.3]])
    env.reset()
    obs, *_ = env.step([[100.0, -100.0]])
    onp.testing.assert_array_equal(obs, [[0.1, -0.1]])


def test_navigation_done_threshold_is_strict_in_both_coordinates():
    goals = [[0.1 + 0.0099, 0.0], [0.1 + 0.0101, 0.0], [0.1, 0.0101], [0.1, -0.0099],
             [0.1 - 0.0099, 0.0099]]
    env = VecNavigation2D(goals)
    env.reset()
    _, reward, terminated, truncated, info = env.step(onp.tile([1.0, 0.0], (5, 1)))
    onp.testing.assert_array_equal(terminated, [True, False, False, True, True])
    onp.testing.assert_array_equal(truncated, False)
    onp.testing.assert_array_equal(info["mask"], 1.0)
    onp.testing.assert_array_equal(env.alive, [False, True, True, False, False])
    assert onp.all(reward < 0)                     # the done step is rewarded like any other


def test_navigation_rows_freeze_after_done():
    # row 0 reaches its goal on step 1; row 1 keeps moving
    env = VecNavigation2D([[0.105, 0.0], [0.45, 0.6]], horizon=10)
    env.reset()
    obs1, r1, term1, _, info1 = env.step([[1.0, 0.0], [1.0, 1.0]])
    assert term1[0] and not term1[1] and info1["mask"][0] == 1.0 and r1[0] < 0
    for t in range(2, 6):
        obs, r, term, trunc, info = env.step([[-1.0, 0.7], [1.0, 1.0]])
        onp.testing.assert_array_equal(obs[0], obs1[0])          # frozen observation
        assert r[0] == 0.0 and info["mask"][0] == 0.0 and term[0] and not trunc[0]
        assert r[1] < 0 and info["mask"][1] == 1.0 and not term[1]
        onp.testing.assert_allclose(obs[1], [0.1 * t, 0.1 * t], rtol=1e-14)


def test_navigation_horizon_truncation_and_reset():
    env = VecNavigation2D([[0.4, 0.4], [0.1, 0.0]], horizon=5)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step([[0.0, 0.0], [0.0, 0.0]])
    env.reset()
    truncs, terms = [], []
    for t in range(5):
        act = [[0.0, 0.0], [1.0, 0.0] if t == 2 else [0.0, 0.0]]   # row 1 reaches at step 3
        _, _, term, trunc, info = env.step(act)
        truncs.append(trunc)
        terms.append(term)
    onp.testing.assert_array_equal(onp.stack(truncs)[:, 0], [False] * 4 + [True])
    onp.testing.assert_array_equal(onp.stack(truncs)[:, 1], False)    # terminated, not truncated
    onp.testing.assert_array_equal(onp.stack(terms)[:, 1], [False] * 2 + [True] * 3)
    assert info["t"] == 5 and not env.alive.any()
    with pytest.raises(RuntimeError, match="horizon"):
        env.step([[0.0, 0.0], [0.0, 0.0]])
    obs = env.reset()
    onp.testing.assert_array_equal(obs, 0.0)
    assert env.alive.all() and env.t == 0


@given(seed=st.integers(0, 2**32 - 1), gain=st.floats(0.2, 1.0), noise=st.floats(0.0, 0.5),
       horizon=st.integers(1, 100))
def test_navigation_matches_rllab_rollout(seed, gain, noise, horizon):
    family = Navigation2D(horizon=horizon)
    env = family.make_env(family.sample_tasks(3, seed), episodes_per_task=2)
    rec = closed_loop(env, gain, noise, seed + 1)
    for r in range(env.num_envs):
        observations, rewards, ended_by_done = rllab_point_rollout(
            env.goals[r].tolist(), rec["actions"][:, r].tolist(), horizon)
        length = len(rewards)
        assert rec["mask"][:, r].sum() == length
        onp.testing.assert_array_equal(rec["mask"][:length, r], 1.0)
        onp.testing.assert_array_equal(rec["obs"][:length, r], observations)
        # rllab's ``** 0.5`` on scalars is C pow(); here it is sqrt on arrays: <= 1 ulp apart
        onp.testing.assert_allclose(rec["reward"][:length, r], rewards, rtol=1e-15, atol=0)
        onp.testing.assert_array_equal(rec["reward"][length:, r], 0.0)
        onp.testing.assert_allclose(rec["reward"][:, r].sum(), sum(rewards), rtol=1e-13)
        assert rec["terminated"][-1, r] == ended_by_done
        assert rec["truncated"][-1, r] == (not ended_by_done)


def test_rllab_comparison_covers_both_endings():
    family = Navigation2D()
    env = family.make_env(family.sample_tasks(20, 0), episodes_per_task=1)
    rec = closed_loop(env, 0.5, 0.5, 1)
    ended = rec["terminated"][-1]
    assert ended.any() and not ended.all()           # some rows reach the goal, some time out


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_navigation_batch_equals_single_row_envs(seed, n):
    family = Navigation2D(horizon=30)
    tasks = family.sample_tasks(n, seed)
    batch = family.make_env(tasks)
    actions = 2.0 * onp.random.default_rng(seed).standard_normal((30, n, 2))
    batch.reset()
    out = [batch.step(actions[t]) for t in range(30)]
    for r in range(n):
        single = family.make_env([tasks[r]])
        single.reset()
        for t in range(30):
            got = single.step(actions[t, r:r + 1])
            for k in range(4):
                onp.testing.assert_array_equal(got[k], out[t][k][r:r + 1])
            onp.testing.assert_array_equal(got[4]["mask"], out[t][4]["mask"][r:r + 1])


def test_navigation_goal_distribution():
    goals = onp.stack([t["goal"] for t in Navigation2D().sample_tasks(4000, 0)])
    assert goals.shape == (4000, 2) and goals.dtype == onp.float64
    assert goals.min() >= -0.5 and goals.max() < 0.5
    assert goals.min() < -0.49 and goals.max() > 0.49
    onp.testing.assert_allclose(goals.mean(axis=0), 0.0, atol=0.02)
    onp.testing.assert_allclose(goals.var(axis=0), 1.0 / 12.0, rtol=0.05)
    # the draw is rllab's sample_goals: one uniform((n, 2)) call
    expected = onp.random.default_rng(0).uniform(-0.5, 0.5, size=(4000, 2))
    onp.testing.assert_array_equal(goals, expected)
    custom = onp.stack([t["goal"] for t in Navigation2D(goal_low=1.0, goal_high=2.0)
                        .sample_tasks(500, 1)])
    assert custom.min() >= 1.0 and custom.max() < 2.0


def test_make_env_is_task_major():
    family = Navigation2D()
    tasks = family.sample_tasks(3, 5)
    env = family.make_env(tasks, episodes_per_task=4)
    assert env.num_envs == 12 and env.horizon == 100
    onp.testing.assert_array_equal(env.task_index, onp.repeat(onp.arange(3), 4))
    for r in range(12):
        onp.testing.assert_array_equal(env.goals[r], tasks[r // 4]["goal"])
    assert (env.obs_dim, env.action_dim, env.num_actions, env.discrete) == (2, 2, None, False)


def test_seeding_is_deterministic():
    fam = Navigation2D()
    a, b, c = fam.sample_tasks(5, 7), fam.sample_tasks(5, 7), fam.sample_tasks(5, 8)
    assert all(onp.array_equal(x["goal"], y["goal"]) for x, y in zip(a, b))
    assert not all(onp.array_equal(x["goal"], y["goal"]) for x, y in zip(a, c))
    gen = onp.random.default_rng(3)
    first, second = fam.sample_tasks(2, gen), fam.sample_tasks(2, gen)   # a Generator advances
    assert not onp.array_equal(first[0]["goal"], second[0]["goal"])


# --------------------------------------------------------------------------------------------
# Bandit
# --------------------------------------------------------------------------------------------

def test_bandit_reward_frequencies_converge_to_p():
    family = Bandit(num_arms=5, horizon=100)
    task = family.sample_tasks(1, 0)[0]
    env = family.make_env([task], episodes_per_task=5 * 200)
    env.reset(1)
    arms = onp.arange(env.num_envs) % 5                  # 200 rows per arm
    total = onp.zeros(env.num_envs)
    for _ in range(100):
        _, reward, _, _, info = env.step(arms)
        total += reward
        onp.testing.assert_array_equal(info["p_action"], task["p"][arms])
    freq = onp.array([total[arms == k].sum() / (200 * 100) for k in range(5)])
    # 20000 pulls per arm: standard error <= 0.0036
    onp.testing.assert_allclose(freq, task["p"], atol=0.015)


def test_bandit_matches_independent_simulation():
    family = Bandit(num_arms=10, horizon=20)
    tasks = family.sample_tasks(3, 2)
    env = family.make_env(tasks, episodes_per_task=2)
    probs = onp.repeat(onp.stack([t["p"] for t in tasks]), 2, axis=0)
    actions = onp.random.default_rng(4).integers(0, 10, size=(20, 6))
    obs = env.reset(9)
    onp.testing.assert_array_equal(obs, onp.ones((6, 1)))
    gen = onp.random.default_rng(9)
    for t in range(20):
        obs, reward, terminated, truncated, info = env.step(actions[t])
        u = gen.random(6)
        expected = onp.array([1.0 if u[i] < probs[i, actions[t, i]] else 0.0 for i in range(6)])
        onp.testing.assert_array_equal(reward, expected)
        onp.testing.assert_array_equal(obs, 1.0)
        onp.testing.assert_array_equal(info["mask"], 1.0)
        assert not terminated.any()
        assert truncated.all() == (t == 19) and truncated.any() == (t == 19)
    with pytest.raises(RuntimeError):
        env.step(actions[0])


def test_bandit_tasks_and_oracle():
    for k in (5, 10, 50):
        family = Bandit(num_arms=k, horizon=500)
        tasks = family.sample_tasks(400, k)
        probs = onp.stack([t["p"] for t in tasks])
        assert probs.shape == (400, k) and probs.min() >= 0.0 and probs.max() < 1.0
        onp.testing.assert_allclose(probs.mean(), 0.5, atol=0.02)
        onp.testing.assert_array_equal(family.oracle_return(tasks), 500 * probs.max(axis=1))
        env = family.make_env(tasks[:2], episodes_per_task=3)
        onp.testing.assert_array_equal(env.oracle_return(),
                                       onp.repeat(500 * probs[:2].max(axis=1), 3))
        assert (env.num_actions, env.action_dim, env.discrete, env.obs_dim) == (k, None, True, 1)
        assert family.num_actions == k


def test_bandit_same_seed_same_rewards():
    family = Bandit()
    env = family.make_env(family.sample_tasks(4, 0))
    runs = []
    for _ in range(2):
        env.reset(123)
        runs.append(onp.stack([env.step(onp.zeros(4, dtype=int))[1] for _ in range(50)]))
    onp.testing.assert_array_equal(runs[0], runs[1])


# --------------------------------------------------------------------------------------------
# Sinusoid
# --------------------------------------------------------------------------------------------

def test_sinusoid_task_ranges_and_draw_order():
    tasks = Sinusoid().sample_tasks(3000, 0)
    amp = onp.array([t["amplitude"] for t in tasks])
    phase = onp.array([t["phase"] for t in tasks])
    assert amp.min() >= 0.1 and amp.max() < 5.0 and amp.min() < 0.2 and amp.max() > 4.9
    assert phase.min() >= 0.0 and phase.max() < onp.pi
    gen = onp.random.default_rng(0)                     # cbfinn/maml: all amplitudes, then phases
    onp.testing.assert_array_equal(amp, gen.uniform(0.1, 5.0, 3000))
    onp.testing.assert_array_equal(phase, gen.uniform(0.0, onp.pi, 3000))


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 20))
def test_sinusoid_samples_follow_finn_convention(seed, k):
    family = Sinusoid()
    task = family.sample_tasks(1, seed)[0]
    x, y = family.sample(task, k, seed)
    assert x.shape == (k, 1) and y.shape == (k, 1) and x.dtype == onp.float64
    assert x.min() >= -5.0 and x.max() < 5.0
    expected = [[task["amplitude"] * math.sin(xi - task["phase"])] for xi in x[:, 0]]
    onp.testing.assert_allclose(y, expected, rtol=1e-15, atol=1e-15)
    assert onp.abs(y).max() <= task["amplitude"]


def test_sinusoid_phase_sign():
    # y = A sin(x - phase): with phase = pi/2 the curve is -A cos(x)
    x = onp.linspace(-5, 5, 11)[:, None]
    y = Sinusoid().target({"amplitude": 2.0, "phase": onp.pi / 2}, x)
    onp.testing.assert_allclose(y, -2.0 * onp.cos(x), atol=1e-15)


def test_sinusoid_support_query_and_grid():
    family = Sinusoid()
    task = family.sample_tasks(1, 3)[0]
    sq = family.support_query(task, 5, rng=4)
    assert {k: v.shape for k, v in sq.items()} == {"x_support": (5, 1), "y_support": (5, 1),
                                                   "x_query": (5, 1), "y_query": (5, 1)}
    x, y = family.sample(task, 10, 4)                 # one draw of k_support + k_query, split
    onp.testing.assert_array_equal(onp.vstack([sq["x_support"], sq["x_query"]]), x)
    onp.testing.assert_array_equal(onp.vstack([sq["y_support"], sq["y_query"]]), y)
    sq = family.support_query(task, 5, 7, rng=4)
    assert sq["x_query"].shape == (7, 1)
    xg, yg = family.grid(task, 50)
    onp.testing.assert_array_equal(xg[:, 0], onp.linspace(-5, 5, 50))
    onp.testing.assert_allclose(yg, task["amplitude"] * onp.sin(xg - task["phase"]), rtol=0)


# --------------------------------------------------------------------------------------------
# LTISystemID
# --------------------------------------------------------------------------------------------

@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), lo=st.floats(0.0, 0.9),
       width=st.floats(0.0, 0.09))
def test_lti_spectral_radius_in_range(seed, n, lo, width):
    family = LTISystemID(state_dim=n, rho_range=(lo, lo + width))
    for task in family.sample_tasks(3, seed):
        assert lo <= task["rho"] <= lo + width
        onp.testing.assert_allclose(spectral_radius(task["A"]), task["rho"], rtol=1e-9,
                                    atol=1e-12)
        assert spectral_radius(task["A"]) < 1.0


@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 3), n=st.integers(1, 5),
       p=st.integers(1, 3), T=st.integers(1, 30))
def test_lti_matches_scipy_dlsim(seed, m, n, p, T):
    family = LTISystemID(input_dim=m, state_dim=n, output_dim=p, seq_len=T)
    task = family.sample_tasks(1, seed)[0]
    u, y = family.sample(task, 2, seed + 1)
    assert u.shape == (2, T, m) and y.shape == (2, T, p)
    A, B, C, D = task["A"], task["B"], task["C"], task["D"]
    assert B.shape == (n, m) and C.shape == (p, n) and D.shape == (p, m)
    for i in range(2):
        # dlsim reads the OLD state: y_t = C' x_t + D' u_t with C' = C A, D' = C B + D
        _, y_dlsim, _ = scipy.signal.dlsim((A, B, C @ A, C @ B + D, 1.0), u[i])
        onp.testing.assert_allclose(y[i], y_dlsim.reshape(T, p), rtol=1e-10, atol=1e-12)
        # and the Markov-parameter sum y_t = D u_t + sum_k C A^k B u_{t-k}
        markov = [C @ onp.linalg.matrix_power(A, k) @ B for k in range(T)]
        y_conv = onp.stack([D @ u[i, t] + sum(markov[k] @ u[i, t - k] for k in range(t + 1))
                            for t in range(T)])
        onp.testing.assert_allclose(y[i], y_conv, rtol=1e-10, atol=1e-12)
        # batched == unbatched (up to BLAS summation order)
        onp.testing.assert_allclose(family.target(task, u[i]), y[i], rtol=1e-12, atol=1e-12)


def test_lti_initial_state_and_feedthrough():
    family = LTISystemID(input_dim=2, state_dim=3, output_dim=2, seq_len=8, feedthrough=False)
    task = family.sample_tasks(1, 0)[0]
    onp.testing.assert_array_equal(task["D"], 0.0)
    # same stream as with feedthrough: only D differs
    other = LTISystemID(input_dim=2, state_dim=3, output_dim=2, seq_len=8).sample_tasks(1, 0)[0]
    for key in ("A", "B", "C"):
        onp.testing.assert_array_equal(task[key], other[key])
    u = onp.random.default_rng(1).standard_normal((8, 2))
    h0 = onp.array([1.0, -2.0, 0.5])
    y = lti_simulate(task["A"], task["B"], task["C"], task["D"], u, h0)
    _, y_dlsim, _ = scipy.signal.dlsim((task["A"], task["B"], task["C"] @ task["A"],
                                        task["C"] @ task["B"] + task["D"], 1.0), u, x0=h0)
    onp.testing.assert_allclose(y, y_dlsim, rtol=1e-10, atol=1e-12)
    # zero input: free response y_t = C A^{t+1} h0
    y0 = lti_simulate(task["A"], task["B"], task["C"], task["D"], onp.zeros((8, 2)), h0)
    free = onp.stack([task["C"] @ onp.linalg.matrix_power(task["A"], t + 1) @ h0
                      for t in range(8)])
    onp.testing.assert_allclose(y0, free, rtol=1e-12, atol=1e-14)


def test_lti_support_query_are_different_sequences_of_one_system():
    family = LTISystemID(seq_len=10)
    task = family.sample_tasks(1, 0)[0]
    sq = family.support_query(task, 3, 4, rng=1)
    assert sq["x_support"].shape == (3, 10, 1) and sq["y_query"].shape == (4, 10, 1)
    assert not onp.allclose(sq["x_support"][0], sq["x_query"][0])
    onp.testing.assert_array_equal(family.target(task, sq["x_query"]), sq["y_query"])


# --------------------------------------------------------------------------------------------
# Registry and validation
# --------------------------------------------------------------------------------------------

def test_registry():
    assert set(ENVS) == {"navigation2d", "bandit", "sinusoid", "lti_system_id"}
    assert isinstance(make("bandit", num_arms=10), Bandit)
    assert make("navigation2d").horizon == 100
    assert isinstance(make("lti_system_id", state_dim=2), LTISystemID)
    with pytest.raises(ValueError, match="known: bandit, lti_system_id, navigation2d, sinusoid"):
        make("cheetah")


def test_action_validation_names_argument_and_shapes():
    env = Navigation2D().make_env(Navigation2D().sample_tasks(2, 0), episodes_per_task=2)
    env.reset()
    with pytest.raises(ValueError, match=r"actions: expected shape \(4, 2\), got \(4,\)"):
        env.step(onp.zeros(4))
    with pytest.raises(ValueError, match=r"actions: expected shape \(4, 2\), got \(2, 2\)"):
        env.step(onp.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        env.step(onp.full((4, 2), onp.nan))
    bandit = Bandit().make_env(Bandit().sample_tasks(3, 0))
    bandit.reset(0)
    with pytest.raises(ValueError, match=r"actions: expected shape \(3,\), got \(3, 1\)"):
        bandit.step(onp.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        bandit.step(onp.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        bandit.step(onp.array([0, 5, 1]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        bandit.step(onp.array([0, -1, 1]))


def test_constructor_and_task_validation():
    with pytest.raises(ValueError, match="horizon"):
        Navigation2D(horizon=0)
    with pytest.raises(ValueError, match="num_arms"):
        Bandit(num_arms=1)
    with pytest.raises(ValueError, match="rho_range"):
        LTISystemID(rho_range=(0.5, 1.0))
    with pytest.raises(ValueError, match="amplitude_range"):
        Sinusoid(amplitude_range=(5.0, 0.1))
    with pytest.raises(ValueError, match="n must be an int"):
        Sinusoid().sample_tasks(0, 0)
    with pytest.raises(ValueError, match="episodes_per_task"):
        Navigation2D().make_env(Navigation2D().sample_tasks(1, 0), episodes_per_task=0)
    with pytest.raises(ValueError, match=r"tasks\[0\]\['p'\]: expected shape \(5,\), got \(10,\)"):
        Bandit(num_arms=5).make_env(Bandit(num_arms=10).sample_tasks(1, 0))
    with pytest.raises(ValueError, match="list of task dicts"):
        Navigation2D().make_env({"goal": onp.zeros(2)})
    with pytest.raises(ValueError, match="goals: expected shape"):
        VecNavigation2D(onp.zeros(2))
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        VecBandit([[0.5, 1.5]])
    with pytest.raises(ValueError, match="rng must be"):
        VecNavigation2D([[0.0, 0.0]]).reset("seed")
    with pytest.raises(ValueError, match=r"u: expected shape \(T, 1\)"):
        LTISystemID().target(LTISystemID().sample_tasks(1, 0)[0], onp.zeros((5, 2)))


def test_module_docstrings():
    public = [envs.scale_action, envs.navigation_transition, envs.bandit_reward, envs.sinusoid,
              spectral_radius, envs.lti_simulate, envs.make, VecNavigation2D, VecBandit,
              Navigation2D, Bandit, Sinusoid, LTISystemID]
    for obj in public:
        assert obj.__doc__ and len(obj.__doc__) > 40, obj
