"""Tests for ssmref.metarl.rl: returns, GAE, rllab's linear baseline, normalisation, REINFORCE and DiCE.

Independent forms are compared: the discount-matrix returns against naive double loops, the baseline
against an independent per-path transcription of rllab's ``_features`` and against the normal
equations, and DiCE's derivatives against analytic ones and against the exact Hessian of an
enumerated toy MDP.
"""

import itertools

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import elementwise_grad, grad, hessian, jacobian, make_jvp
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref.metarl import rl
from ssmref.metarl.rl import baseline

# ---------------------------------------------------------------------------------------------
# Helpers: random batches with early-ending episodes
# ---------------------------------------------------------------------------------------------

def random_batch(rng, N, T, obs_dim=2, pad=onp.nan, full_rows=0):
    """rewards, values, obs, mask with random episode lengths in [0, T]; padding is ``pad``.

    The first ``full_rows`` episodes run the whole horizon.
    """
    lengths = rng.integers(0, T + 1, size=N)
    lengths[:full_rows] = T
    mask = (onp.arange(T)[None, :] < lengths[:, None]).astype(float)        # (N, T)
    rewards = onp.where(mask > 0, rng.normal(size=(N, T)), pad)
    values = onp.where(mask > 0, rng.normal(size=(N, T)), pad)
    obs = onp.where(mask[:, :, None] > 0, 5.0 * rng.normal(size=(N, T, obs_dim)), pad)
    return rewards, values, obs, mask


def naive_returns(rewards, mask, gamma):
    N, T = mask.shape
    out = onp.zeros((N, T))
    for n in range(N):
        for t in range(T):
            if mask[n, t]:
                out[n, t] = sum(gamma ** (k - t) * rewards[n, k] for k in range(t, T) if mask[n, k])
    return out


def naive_gae(rewards, values, mask, gamma, lam):
    N, T = mask.shape
    out = onp.zeros((N, T))
    for n in range(N):
        L = int(mask[n].sum())
        v = list(values[n, :L]) + [0.0]                        # V = 0 after the path end
        deltas = [rewards[n, t] + gamma * v[t + 1] - v[t] for t in range(L)]
        for t in range(L):
            out[n, t] = sum((gamma * lam) ** k * deltas[t + k] for k in range(L - t))
    return out


batch_args = st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(0, 2 ** 31 - 1))
unit = st.floats(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Returns and GAE
# ---------------------------------------------------------------------------------------------

@given(batch_args, unit)
def test_discounted_returns_match_naive_loop(args, gamma):
    N, T, seed = args
    rewards, _, _, mask = random_batch(onp.random.default_rng(seed), N, T)
    got = rl.discounted_returns(rewards, mask, gamma)
    onp.testing.assert_allclose(got, naive_returns(rewards, mask, gamma), rtol=1e-12, atol=1e-12)
    assert onp.all(got[mask == 0] == 0.0)                        # NaN padding is ignored


@given(batch_args, unit, unit)
def test_gae_matches_naive_loop(args, gamma, lam):
    N, T, seed = args
    rewards, values, _, mask = random_batch(onp.random.default_rng(seed), N, T)
    got = rl.gae(rewards, values, mask, gamma, lam)
    onp.testing.assert_allclose(got, naive_gae(rewards, values, mask, gamma, lam),
                                rtol=1e-12, atol=1e-12)


@given(batch_args, unit)
def test_gae_identities(args, gamma):
    N, T, seed = args
    rewards, values, _, mask = random_batch(onp.random.default_rng(seed), N, T, pad=0.0)
    R = rl.discounted_returns(rewards, mask, gamma)
    # lam = 1, V = 0: the discounted returns
    onp.testing.assert_allclose(rl.gae(rewards, onp.zeros_like(rewards), mask, gamma, 1.0), R,
                                rtol=1e-12, atol=1e-12)
    # lam = 1: telescoping, A_t = R_t - V_t
    onp.testing.assert_allclose(rl.gae(rewards, values, mask, gamma, 1.0), (R - values) * mask,
                                rtol=1e-10, atol=1e-10)
    # lam = 0: the one-step TD error, with V = 0 after the path end
    v_next = onp.concatenate([values[:, 1:] * mask[:, 1:], onp.zeros((N, 1))], axis=1)
    onp.testing.assert_allclose(rl.gae(rewards, values, mask, gamma, 0.0),
                                (rewards + gamma * v_next - values) * mask, rtol=1e-12, atol=1e-12)


def test_returns_hand_example():
    mask = onp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards = onp.array([[1.0, 2.0, 4.0], [3.0, 100.0, 100.0]])
    onp.testing.assert_allclose(rl.discounted_returns(rewards, mask, 0.5),
                                [[1.0 + 1.0 + 1.0, 2.0 + 2.0, 4.0], [3.0, 0.0, 0.0]])
    # gamma = 0: the rewards themselves (0^0 = 1)
    onp.testing.assert_allclose(rl.discounted_returns(rewards, mask, 0.0), rewards * mask)


def test_returns_and_gae_are_differentiable(rng):
    rewards, values, _, mask = random_batch(rng, 3, 5, pad=0.0)
    w = rng.normal(size=(3, 5))
    check_grads(lambda r: np.sum(w * rl.discounted_returns(r, mask, 0.9)), modes=["rev"],
                order=2)(rewards)
    check_grads(lambda v: np.sum(w * rl.gae(rewards, v, mask, 0.9, 0.95)), modes=["rev"],
                order=2)(values)


# ---------------------------------------------------------------------------------------------
# rllab linear feature baseline
# ---------------------------------------------------------------------------------------------

def rllab_features(path_obs):
    """An independent transcription of rllab ``LinearFeatureBaseline._features`` for one path."""
    o = onp.clip(path_obs, -10, 10)
    l = len(path_obs)
    al = onp.arange(l).reshape(-1, 1) / 100.0
    return onp.concatenate([o, o ** 2, al, al ** 2, al ** 3, onp.ones((l, 1))], axis=1)


def test_features_hand_example():
    obs = onp.array([[[-12.0, 0.5], [3.0, 11.0], [onp.nan, onp.nan]]])     # (1, 3, 2)
    mask = onp.array([[1.0, 1.0, 0.0]])
    expected = onp.array([[
        [-10.0, 0.5, 100.0, 0.25, 0.0, 0.0, 0.0, 1.0],      # the square is of the clipped obs
        [3.0, 10.0, 9.0, 100.0, 0.01, 0.0001, 0.000001, 1.0],
        [0.0] * 8,                                          # masked step
    ]])
    onp.testing.assert_allclose(rl.baseline_features(obs, mask), expected, rtol=1e-15, atol=0)


@given(batch_args)
def test_features_match_rllab_per_path(args):
    N, T, seed = args
    _, _, obs, mask = random_batch(onp.random.default_rng(seed), N, T, obs_dim=3)
    obs = obs * 3.0                                             # many entries beyond +-10
    feats = rl.baseline_features(obs, mask)
    assert feats.shape == (N, T, 2 * 3 + 4)
    for n in range(N):
        L = int(mask[n].sum())
        onp.testing.assert_array_equal(feats[n, :L], rllab_features(obs[n, :L]))
        assert onp.all(feats[n, L:] == 0.0)


def test_baseline_fit_matches_normal_equations_and_lstsq(rng):
    rewards, _, obs, mask = random_batch(rng, 8, 12, obs_dim=2, full_rows=1)
    returns = rl.discounted_returns(rewards, mask, 0.99)
    coeffs = rl.fit_linear_baseline(obs, returns, mask)
    # independent: rllab's per-path features, concatenated over the valid steps only
    paths = [(obs[n, :int(mask[n].sum())], returns[n, :int(mask[n].sum())]) for n in range(8)]
    F = onp.concatenate([rllab_features(o) for o, _ in paths])
    y = onp.concatenate([r for _, r in paths])
    normal = onp.linalg.solve(F.T @ F + 1e-5 * onp.eye(F.shape[1]), F.T @ y)
    onp.testing.assert_allclose(coeffs, normal, rtol=1e-8, atol=1e-10)
    # independent: ridge as least squares on the augmented system [F; sqrt(reg) I] c = [y; 0]
    k = F.shape[1]
    aug = onp.linalg.lstsq(onp.vstack([F, onp.sqrt(1e-5) * onp.eye(k)]),
                           onp.concatenate([y, onp.zeros(k)]), rcond=None)[0]
    onp.testing.assert_allclose(coeffs, aug, rtol=1e-6, atol=1e-8)
    # predict: features . coeffs at valid steps, 0 elsewhere; padding with NaN changes nothing
    pred = rl.predict_linear_baseline(coeffs, onp.where(mask[:, :, None] > 0, obs, onp.nan), mask)
    for n, (o, _) in enumerate(paths):
        onp.testing.assert_allclose(pred[n, :len(o)], rllab_features(o) @ coeffs, rtol=1e-12)
        assert onp.all(pred[n, len(o):] == 0.0)
    # the object wrapper: zeros before fit (as rllab), the same coefficients after
    base = rl.LinearFeatureBaseline()
    assert onp.all(base.predict(obs, mask) == 0.0)
    onp.testing.assert_array_equal(base.fit(obs, returns, mask).coeffs, coeffs)


def test_baseline_retries_with_larger_regularisation(monkeypatch, rng):
    rewards, _, obs, mask = random_batch(rng, 4, 6, pad=0.0, full_rows=1)
    returns = rl.discounted_returns(rewards, mask, 0.9)
    real, seen = baseline._ridge_solve, []

    def failing_twice(gram, rhs, reg):
        seen.append(reg)
        out = real(gram, rhs, reg)
        return out * onp.nan if len(seen) <= 2 else out

    monkeypatch.setattr(baseline, "_ridge_solve", failing_twice)
    coeffs = rl.fit_linear_baseline(obs, returns, mask, reg_coeff=1e-5)
    onp.testing.assert_allclose(seen, [1e-5, 1e-4, 1e-3], rtol=1e-12)
    onp.testing.assert_allclose(coeffs, real(*_gram(obs, returns, mask), 1e-3), rtol=1e-12)

    seen.clear()
    monkeypatch.setattr(baseline, "_ridge_solve", lambda g, r, reg: seen.append(reg) or r * onp.inf)
    with pytest.raises(onp.linalg.LinAlgError, match="5 attempts"):
        rl.fit_linear_baseline(obs, returns, mask)
    onp.testing.assert_allclose(seen, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-12)


def _gram(obs, returns, mask):
    valid = mask.reshape(-1) > 0
    F = rl.baseline_features(obs, mask).reshape(-1, 2 * obs.shape[2] + 4)[valid]
    return F.T @ F, F.T @ returns.reshape(-1)[valid]


def test_baseline_refuses_non_finite_valid_data():
    obs, mask = onp.zeros((1, 2, 1)), onp.ones((1, 2))
    with pytest.raises(ValueError, match="returns has non-finite entries where it is read"):
        rl.fit_linear_baseline(obs, onp.array([[1.0, onp.nan]]), mask)
    with pytest.raises(ValueError, match="obs has non-finite entries where it is read"):
        rl.fit_linear_baseline(onp.full((1, 2, 1), onp.inf), onp.ones((1, 2)), mask)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

@given(batch_args)
def test_normalize_advantages_stats(args):
    N, T, seed = args
    adv, _, _, mask = random_batch(onp.random.default_rng(seed), N, T)
    if mask.sum() == 0:
        with pytest.raises(ValueError, match="no valid step"):
            rl.normalize_advantages(adv, mask)
        return
    out = rl.normalize_advantages(adv, mask)
    raw = adv[mask > 0]                                         # rllab: concatenated valid steps
    onp.testing.assert_allclose(out[mask > 0], (raw - raw.mean()) / (raw.std() + 1e-8),
                                rtol=1e-12, atol=1e-12)
    assert onp.all(out[mask == 0] == 0.0)
    if raw.size > 1 and raw.std() > 1e-3:
        assert abs(out[mask > 0].mean()) < 1e-12
        # population std of the result is std / (std + eps), i.e. 1 up to eps
        onp.testing.assert_allclose(out[mask > 0].std(ddof=0), raw.std() / (raw.std() + 1e-8),
                                    rtol=1e-12)


def test_normalize_constant_advantages_gives_zeros():
    out = rl.normalize_advantages(onp.full((2, 3), 7.0), onp.ones((2, 3)))
    assert onp.all(out == 0.0)


# ---------------------------------------------------------------------------------------------
# REINFORCE surrogate
# ---------------------------------------------------------------------------------------------

def log_softmax_policy(theta, feats, actions):
    """``log pi(a | s)``, linear-softmax: theta (F, A), feats (N, T, F), actions (N, T)."""
    logits = np.einsum("ntf,fa->nta", feats, theta)             # (N, T, A)
    logp = logits - np.log(np.sum(np.exp(logits), axis=2, keepdims=True))
    onehot = onp.eye(theta.shape[1])[actions]                   # (N, T, A)
    return np.sum(logp * onehot, axis=2)                        # (N, T)


@pytest.fixture
def policy_batch(rng):
    N, T, F, A = 4, 6, 3, 2
    rewards, values, _, mask = random_batch(rng, N, T, full_rows=1)
    feats = rng.normal(size=(N, T, F))
    actions = rng.integers(0, A, size=(N, T))
    theta = 0.5 * rng.normal(size=(F, A))
    return dict(rewards=rewards, values=values, mask=mask, feats=feats, actions=actions,
                theta=theta)


def test_reinforce_surrogate_gradient(policy_batch):
    b = policy_batch
    mask = b["mask"]
    adv = rl.gae(b["rewards"], b["values"], mask, 0.99, 0.97)
    logp = lambda th: log_softmax_policy(th, b["feats"], b["actions"])

    def loss(th):
        return rl.reinforce_surrogate(logp(th), adv, mask)

    # grad L = - sum_valid grad log pi * A / n_valid
    J = jacobian(logp)(b["theta"])                              # (N, T, F, A)
    expected = -onp.einsum("ntfa,nt->fa", J, adv * mask) / mask.sum()
    onp.testing.assert_allclose(grad(loss)(b["theta"]), expected, rtol=1e-10, atol=1e-12)
    check_grads(loss, modes=["rev"], order=2)(b["theta"])
    onp.testing.assert_allclose(loss(b["theta"]),
                                -onp.sum(logp(b["theta"]) * adv * mask) / mask.sum())

    # advantages that depend on theta are still treated as constants
    def loss_dependent(th):
        return rl.reinforce_surrogate(logp(th), adv * (1.0 + np.sum(th ** 2)), mask)

    scale = 1.0 + onp.sum(b["theta"] ** 2)
    onp.testing.assert_allclose(grad(loss_dependent)(b["theta"]), scale * expected, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# stop_gradient and the magic box
# ---------------------------------------------------------------------------------------------

def test_stop_gradient_is_identity_with_zero_derivative():
    x = onp.array([0.3, -1.2, 2.0])
    onp.testing.assert_array_equal(rl.stop_gradient(x), x)
    onp.testing.assert_array_equal(elementwise_grad(lambda z: z * rl.stop_gradient(z))(x), x)
    onp.testing.assert_array_equal(make_jvp(lambda z: z + rl.stop_gradient(z))(x)(onp.ones(3))[1], 1.0)
    # at second order: d^2/dz^2 [z^2 * sg(z)] = 2 sg(z)
    d2 = elementwise_grad(elementwise_grad(lambda z: z ** 2 * rl.stop_gradient(z)))(x)
    onp.testing.assert_allclose(d2, 2.0 * x, rtol=1e-14)


def test_magic_box_derivatives_all_orders():
    x = onp.array([-3.0, 0.0, 0.7, 5.0])
    box = rl.dice_magic_box
    onp.testing.assert_array_equal(box(x), 1.0)
    d = box
    for _ in range(4):                                          # d^k/dx^k box(x) = box(x) = 1
        d = elementwise_grad(d)
        onp.testing.assert_allclose(d(x), 1.0, rtol=1e-14)
    # through a function: box(f) has d/dth = f', d2/dth2 = f'' + f'^2 (derivatives of exp(f)/exp(f))
    f = lambda th: np.sin(3.0 * th) + th ** 2
    f1 = lambda th: 3.0 * np.cos(3.0 * th) + 2.0 * th
    f2 = lambda th: -9.0 * np.sin(3.0 * th) + 2.0
    g = lambda th: box(f(th))
    onp.testing.assert_allclose(elementwise_grad(g)(x), f1(x), rtol=1e-12)
    onp.testing.assert_allclose(elementwise_grad(elementwise_grad(g))(x), f2(x) + f1(x) ** 2,
                                rtol=1e-12, atol=1e-12)
    # forward mode agrees
    onp.testing.assert_allclose(make_jvp(g)(x)(onp.ones(4))[1], f1(x), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# DiCE surrogate
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("term", ["foerster", "mao"])
def test_dice_value_and_gradient_equal_reinforce_with_causality(policy_batch, term):
    b = policy_batch
    mask, gamma = b["mask"], 0.9
    N, T = mask.shape
    rewards = onp.nan_to_num(b["rewards"])
    logp = lambda th: log_softmax_policy(th, b["feats"], b["actions"])
    disc = gamma ** onp.arange(T)
    R = rl.discounted_returns(rewards, mask, gamma)
    J = jacobian(logp)(b["theta"])                              # (N, T, F, A)

    obj = lambda th: rl.dice_surrogate(logp(th), rewards, mask, gamma)
    onp.testing.assert_allclose(obj(b["theta"]), onp.sum(disc * rewards * mask) / N, rtol=1e-12)
    expected = onp.einsum("ntfa,nt->fa", J, disc * R) / N      # sum_t grad log pi_t gamma^t R_t
    onp.testing.assert_allclose(grad(obj)(b["theta"]), expected, rtol=1e-10, atol=1e-12)

    # with a baseline: same value, gradient sum_t grad log pi_t gamma^t (R_t - b_t)
    base = b["values"]                                          # NaN-padded: must be ignored
    obj_b = lambda th: rl.dice_surrogate(logp(th), rewards, mask, gamma, baseline=base,
                                         baseline_term=term)
    onp.testing.assert_allclose(obj_b(b["theta"]), obj(b["theta"]), rtol=1e-12)
    expected_b = onp.einsum("ntfa,nt->fa", J, disc * (R - onp.nan_to_num(base)) * mask) / N
    onp.testing.assert_allclose(grad(obj_b)(b["theta"]), expected_b, rtol=1e-10, atol=1e-12)

    # DiCE's derivatives are *not* derivatives of its value, so finite differences (check_grads)
    # cannot verify it: the value does not change when theta moves (every box is 1).
    step = 1e-3 * onp.ones_like(b["theta"])
    assert obj_b(b["theta"] + step) == pytest.approx(obj_b(b["theta"]), rel=1e-14)


def _toy_mdp():
    """A 3-step MDP with binary actions, enumerated exactly.

    Policy: P(a_t = 1) = sigmoid(theta . phi(t, a_{t-1})).  If a_0 = 1 the episode ends after step 0
    (so masks vary).  Rewards depend on the action history; the baseline on the state only.
    """
    T, gamma = 3, 0.8
    phi = lambda t, prev: onp.array([1.0, t / 2.0, prev, t * prev / 2.0])
    reward = lambda t, hist: [0.3, -1.0, 2.0][t] + 1.5 * hist[-1] - 0.7 * hist[0] * t
    baseline = lambda t, prev: 0.4 - 0.3 * t + 0.8 * prev
    rows = []
    for actions in itertools.product([0, 1], repeat=T):
        L = 1 if actions[0] == 1 else T
        prev = [0] + list(actions[:-1])
        rows.append(dict(
            actions=onp.array(actions),
            phis=onp.array([phi(t, prev[t]) for t in range(T)]),           # (T, 4)
            mask=(onp.arange(T) < L).astype(float),
            rewards=onp.array([reward(t, actions[:t + 1]) for t in range(T)]),
            baseline=onp.array([baseline(t, prev[t]) for t in range(T)]),
        ))
    return rows, gamma


def _log_probs(theta, row):
    logits = np.dot(row["phis"], theta)                         # (T,)
    a = row["actions"]
    return a * logits - np.log1p(np.exp(logits))                # log sigmoid(+-logits)


def test_dice_hessian_is_unbiased_on_enumerated_mdp():
    rows, gamma = _toy_mdp()
    theta = onp.array([0.2, -0.5, 0.3, 0.1])
    disc = gamma ** onp.arange(3)

    def expected_return(th):
        # every full action sequence; steps after the end are dummies whose probabilities sum to 1
        total = 0.0
        for row in rows:
            prob = np.exp(np.sum(_log_probs(th, row)))
            total = total + prob * np.sum(disc * row["rewards"] * row["mask"])
        return total

    def expected_hessian(surrogate):
        total = onp.zeros((4, 4))
        for row in rows:
            prob = onp.exp(onp.sum(_log_probs(theta, row)))     # sampling weight: a constant
            f = lambda th: surrogate(_log_probs(th, row)[None, :], row)
            total = total + prob * hessian(f)(theta)
        return total

    true_h = hessian(expected_return)(theta)
    true_g = grad(expected_return)(theta)
    for term in [None, "foerster", "mao"]:
        def surrogate(lp, row, term=term):
            b = None if term is None else row["baseline"][None, :]
            return rl.dice_surrogate(lp, row["rewards"][None, :], row["mask"][None, :], gamma,
                                     baseline=b, baseline_term=term or "foerster")
        onp.testing.assert_allclose(expected_hessian(surrogate), true_h, rtol=1e-10, atol=1e-12)
        g = sum(onp.exp(onp.sum(_log_probs(theta, row)))
                * grad(lambda th: surrogate(_log_probs(th, row)[None, :], row))(theta)
                for row in rows)
        onp.testing.assert_allclose(g, true_g, rtol=1e-10, atol=1e-12)

    # the test has power: the first-order surrogate sum_t log pi_t gamma^t R_t has the right
    # gradient but a biased Hessian (the DiCE paper's point)
    def naive(lp, row):
        R = rl.discounted_returns(row["rewards"][None, :], row["mask"][None, :], gamma)
        return np.sum(lp * row["mask"] * disc * R)
    assert not onp.allclose(expected_hessian(naive), true_h, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def test_shape_errors_name_argument_and_both_shapes():
    mask = onp.ones((2, 3))
    with pytest.raises(ValueError, match=r"rewards has shape \(2, 4\) but mask has shape \(2, 3\)"):
        rl.discounted_returns(onp.zeros((2, 4)), mask, 0.9)
    with pytest.raises(ValueError, match=r"values has shape \(3, 2\) but mask has shape \(2, 3\)"):
        rl.gae(onp.zeros((2, 3)), onp.zeros((3, 2)), mask, 0.9, 0.9)
    with pytest.raises(ValueError, match=r"obs has shape \(2, 3\) but mask has shape \(2, 3\)"):
        rl.baseline_features(onp.zeros((2, 3)), mask)
    with pytest.raises(ValueError, match=r"obs has shape \(2, 2, 1\) but mask"):
        rl.baseline_features(onp.zeros((2, 2, 1)), mask)
    with pytest.raises(ValueError, match=r"log_probs has shape \(2,\) but mask"):
        rl.reinforce_surrogate(onp.zeros(2), onp.zeros((2, 3)), mask)
    with pytest.raises(ValueError, match=r"advantages has shape \(2, 3, 1\) but mask"):
        rl.reinforce_surrogate(onp.zeros((2, 3)), onp.zeros((2, 3, 1)), mask)
    with pytest.raises(ValueError, match=r"baseline has shape \(1, 3\) but mask"):
        rl.dice_surrogate(onp.zeros((2, 3)), onp.zeros((2, 3)), mask, 0.9,
                          baseline=onp.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"coeffs has shape \(3,\)"):
        rl.predict_linear_baseline(onp.zeros(3), onp.zeros((2, 3, 1)), mask)
    with pytest.raises(ValueError, match=r"adv has shape"):
        rl.normalize_advantages(onp.zeros((3,)), mask)


def test_bad_masks_and_scalars():
    r = onp.zeros((1, 3))
    with pytest.raises(ValueError, match=r"mask must have shape \(N, T\)"):
        rl.discounted_returns(r, onp.ones(3), 0.9)
    with pytest.raises(ValueError, match="0.0 or 1.0"):
        rl.discounted_returns(r, onp.array([[1.0, 0.5, 0.0]]), 0.9)
    with pytest.raises(ValueError, match="ones then zeros"):
        rl.discounted_returns(r, onp.array([[1.0, 0.0, 1.0]]), 0.9)
    with pytest.raises(ValueError, match="gamma must be a number in"):
        rl.discounted_returns(r, onp.ones((1, 3)), 1.5)
    with pytest.raises(ValueError, match="lam must be a number in"):
        rl.gae(r, r, onp.ones((1, 3)), 0.9, float("nan"))
    with pytest.raises(ValueError, match="baseline_term must be one of"):
        rl.dice_surrogate(r, r, onp.ones((1, 3)), 0.9, baseline=r, baseline_term="loaded")
    with pytest.raises(ValueError, match="no valid step"):
        rl.reinforce_surrogate(r, r, onp.zeros((1, 3)))
    # boolean masks are accepted
    bool_mask = onp.array([[True, True, False]])
    onp.testing.assert_array_equal(rl.discounted_returns(r + 1, bool_mask, 1), [[2.0, 1.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# rollout
# ---------------------------------------------------------------------------------------------

def test_rollout_records_what_the_env_returns():
    from ssmref.metarl.envs import Navigation2D
    family = Navigation2D(horizon=12)
    tasks = family.sample_tasks(3, rng=0)
    # a fixed policy that moves straight to the goal at full speed: some rows finish early
    goals = onp.repeat(onp.stack([t["goal"] for t in tasks]), 2, axis=0) * onp.array([[1.0, 1.0]])
    seen = []

    def act(obs, t, prev_action, prev_reward):
        seen.append((t, obs.copy(), prev_action, prev_reward))
        a = onp.clip((goals - obs) / 0.1, -1.0, 1.0)
        return a, {"speed": onp.abs(a).sum(axis=1)}
    traj = rl.rollout(family.make_env(tasks, episodes_per_task=2), act, rng=1)
    assert seen[0][2] is None and seen[0][3] is None          # nothing before the first step
    for t in range(1, 12):                                    # then the previous step's a and r
        onp.testing.assert_array_equal(seen[t][2], traj["actions"][:, t - 1])
        onp.testing.assert_array_equal(seen[t][3], traj["rewards"][:, t - 1])
    onp.testing.assert_array_equal(traj["speed"], onp.abs(traj["actions"]).sum(axis=2))
    assert traj["obs"].shape == (6, 12, 2) and traj["actions"].shape == (6, 12, 2)
    assert traj["rewards"].shape == traj["mask"].shape == (6, 12)
    assert [s[0] for s in seen] == list(range(12))
    onp.testing.assert_array_equal(traj["task_index"], [0, 0, 1, 1, 2, 2])
    # replay with a fresh env: same observations, rewards, masks
    env = family.make_env(tasks, episodes_per_task=2)
    obs = env.reset()
    for t in range(12):
        onp.testing.assert_array_equal(traj["obs"][:, t], obs)
        obs, r, _, _, info = env.step(traj["actions"][:, t])
        onp.testing.assert_array_equal(traj["rewards"][:, t], r)
        onp.testing.assert_array_equal(traj["mask"][:, t], info["mask"])
    assert (traj["mask"] == 0).any()                      # some episodes reached their goal
    assert onp.all(traj["rewards"][traj["mask"] == 0] == 0.0)
