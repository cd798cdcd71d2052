"""Exact, enumerated comparison of the policy-gradient estimators used inside MAML-RL.

The case is the one of ``docs/rl.md`` ("Estimator bias: REINFORCE surrogate vs DiCE"): two pulls
of a 3-armed bandit with a softmax policy over logits ``theta``, the second pull paying a bonus for
repeating the first arm (so ``r_1`` depends on ``a_0``).  All 9 episodes are enumerated with their
probabilities, so every expectation is exact and every claim is checked to rounding error:

- the expected gradients of REINFORCE, DiCE and LVC all equal ``grad J``;
- the expected DiCE Hessian equals ``hess J``; REINFORCE's misses exactly the score-score term
  ``S = E[sum_t gamma^t r_t grad c_t grad c_t^T]``; LVC's misses exactly its cross-step terms;
- one MAML step with the exact outer gradient: ``(I + alpha E[H_dice]) v`` is the exact
  meta-gradient of ``J(theta + alpha grad J(theta))``, REINFORCE's is off by ``alpha S v``;
- with finite inner batches (1 and 2 episodes), the exact meta-gradient of
  ``E_D[J(theta'_D)]`` is Finn et al.'s pathwise term plus the score term of the pre-update
  sampling, and "dice" (pathwise term only) approaches it as the batch grows.
"""

import itertools

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad, hessian, jacobian

from ssmref.metarl import rl

K, T, GAMMA = 3, 2, 0.9
ARM_REWARD, REPEAT_BONUS = onp.array([1.0, -0.5, 0.3]), 0.8
EPISODES = list(itertools.product(range(K), repeat=T))     # all 9 action sequences (a_0, a_1)
FULL = onp.ones((1, T))                                     # the mask of one complete episode
DISC = GAMMA ** onp.arange(T)                               # gamma^t
BASELINE = onp.array([[0.6, -0.2]])                          # any constant b_t (1, T)
THETA = onp.array([0.2, -0.4, 0.1])


def rewards_of(tau):                                        # (1, T)
    a0, a1 = tau
    return onp.array([[ARM_REWARD[a0], ARM_REWARD[a1] + REPEAT_BONUS * (a1 == a0)]])


def returns_of(tau):                                        # (1, T): R_t = sum_k gamma^(k-t) r_k
    return rl.discounted_returns(rewards_of(tau), FULL, GAMMA)


def log_probs(theta, tau):                                  # (1, T): log pi_theta(a_t)
    log_pi = theta - np.log(np.sum(np.exp(theta)))
    return log_pi[onp.array(tau)][None, :]


def prob(theta, tau):
    return np.exp(np.sum(log_probs(theta, tau)))


def J(theta):                                               # E[sum_t gamma^t r_t], exactly
    return sum(prob(theta, tau) * np.sum(DISC * rewards_of(tau)) for tau in EPISODES)


def expectation(f, theta):                                  # sum_tau p_theta(tau) f(tau)
    return sum(prob(theta, tau) * f(tau) for tau in EPISODES)


# Single-episode estimators, as objectives (to maximise) -------------------------------------

def reinforce(theta, tau):
    """``sum_t log pi_t sg(gamma^t R_t)``: rllab's loss (a mean over the T steps) times -T."""
    return -T * rl.reinforce_surrogate(log_probs(theta, tau), DISC * returns_of(tau), FULL)


def dice(theta, tau):
    return rl.dice_surrogate(log_probs(theta, tau), rewards_of(tau), FULL, GAMMA)


def dice_foerster(theta, tau):
    return rl.dice_surrogate(log_probs(theta, tau), rewards_of(tau), FULL, GAMMA,
                             baseline=BASELINE, baseline_term="foerster")


def dice_mao(theta, tau):
    return rl.dice_surrogate(log_probs(theta, tau), rewards_of(tau), FULL, GAMMA,
                             baseline=BASELINE, baseline_term="mao")


def lvc(theta, tau):
    """ProMP's LVC in this notation: ``sum_t box(log pi_t) gamma^t R_t`` (one step's ratio)."""
    return np.sum(rl.dice_magic_box(log_probs(theta, tau)) * DISC * returns_of(tau))


UNBIASED = {"dice": dice, "dice_foerster": dice_foerster, "dice_mao": dice_mao}
ALL = {"reinforce": reinforce, "lvc": lvc, **UNBIASED}


def expected_hessian(f, theta):
    return expectation(lambda tau: hessian(f)(theta, tau), theta)


def score_score(theta):
    """``S = E[sum_t gamma^t r_t grad c_t grad c_t^T]``, ``c_t = sum_{t' <= t} log pi_t'``."""
    def one(tau):
        dc = jacobian(lambda th: np.cumsum(log_probs(th, tau)[0]))(theta)     # (T, K)
        r = rewards_of(tau)[0]
        return sum(DISC[t] * r[t] * onp.outer(dc[t], dc[t]) for t in range(T))
    return expectation(one, theta)


def cross_steps(theta):
    """The part of ``S`` with ``t != t'``: ``E[gamma r_1 (s_0 s_1^T + s_1 s_0^T)]`` for T = 2."""
    def one(tau):
        s = jacobian(lambda th: log_probs(th, tau)[0])(theta)                  # (T, K)
        return DISC[1] * rewards_of(tau)[0, 1] * (onp.outer(s[0], s[1]) + onp.outer(s[1], s[0]))
    return expectation(one, theta)


def relative(a, b):
    return float(onp.linalg.norm(a - b) / onp.linalg.norm(b))


def random_thetas(rng, n=3):
    return [rng.normal(scale=1.5, size=K) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Values and gradients
# ---------------------------------------------------------------------------------------------

def test_enumeration_is_a_distribution():
    assert sum(prob(THETA, tau) for tau in EPISODES) == pytest.approx(1.0, abs=1e-15)


def test_dice_value_is_the_mean_discounted_return():
    # all 9 episodes as one batch (N = 9): DiCE evaluates to the mean of sum_t gamma^t r_t
    lp = onp.concatenate([log_probs(THETA, tau) for tau in EPISODES])          # (9, T)
    r = onp.concatenate([rewards_of(tau) for tau in EPISODES])                  # (9, T)
    mask = onp.ones_like(r)
    mean_return = onp.mean(onp.sum(DISC * r, axis=1))
    for kw in [{}, {"baseline": onp.tile(BASELINE, (9, 1)), "baseline_term": "foerster"},
               {"baseline": onp.tile(BASELINE, (9, 1)), "baseline_term": "mao"}]:
        assert rl.dice_surrogate(lp, r, mask, GAMMA, **kw) == pytest.approx(mean_return,
                                                                           rel=1e-14)


def test_expected_gradients_are_the_true_gradient(rng):
    for theta in [THETA] + random_thetas(rng):
        g_true = grad(J)(theta)
        for name, f in ALL.items():
            g_hat = expectation(lambda tau: grad(f)(theta, tau), theta)
            onp.testing.assert_allclose(g_hat, g_true, rtol=0, atol=1e-13, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Hessians
# ---------------------------------------------------------------------------------------------

def test_expected_dice_hessian_is_the_true_hessian(rng):
    for theta in [THETA] + random_thetas(rng):
        H_true = hessian(J)(theta)
        for name, f in UNBIASED.items():
            onp.testing.assert_allclose(expected_hessian(f, theta), H_true, rtol=0, atol=1e-12,
                                        err_msg=name)


def test_expected_dice_hessian_from_one_batch():
    # the same expectation through dice_surrogate's batch path: fold p(tau) into the rewards
    # (constants), N = 9 rows, times N for the mean over episodes
    p = onp.array([prob(THETA, tau) for tau in EPISODES])                       # (9,)
    r = onp.concatenate([rewards_of(tau) for tau in EPISODES])                  # (9, T)
    lp = lambda th: np.concatenate([log_probs(th, tau) for tau in EPISODES])   # noqa: E731
    obj = lambda th: len(EPISODES) * rl.dice_surrogate(lp(th), p[:, None] * r,   # noqa: E731
                                                       onp.ones_like(r), GAMMA)
    onp.testing.assert_allclose(hessian(obj)(THETA), hessian(J)(THETA), rtol=0, atol=1e-12)


def test_reinforce_hessian_misses_exactly_the_score_score_term(rng):
    for theta in [THETA] + random_thetas(rng):
        H_true, S = hessian(J)(theta), score_score(theta)
        H_pg = expected_hessian(reinforce, theta)
        onp.testing.assert_allclose(H_pg + S, H_true, rtol=0, atol=1e-12)
        assert relative(H_pg, H_true) > 0.1
    assert relative(expected_hessian(reinforce, THETA), hessian(J)(THETA)) > 2.0


def test_reinforce_hessian_of_a_softmax_is_a_multiple_of_the_fisher_matrix():
    # grad^2 log softmax(theta)[a] = -(diag pi - pi pi^T) for every a: the rewards only scale it
    pi = onp.exp(THETA) / onp.sum(onp.exp(THETA))
    fisher = onp.diag(pi) - onp.outer(pi, pi)
    weight = expectation(lambda tau: onp.sum(DISC * returns_of(tau)), THETA)
    onp.testing.assert_allclose(expected_hessian(reinforce, THETA), -weight * fisher,
                                rtol=0, atol=1e-14)
    assert onp.linalg.eigvalsh(hessian(J)(THETA))[-1] > 0.4           # the true one is indefinite
    assert onp.linalg.eigvalsh(expected_hessian(reinforce, THETA))[-1] < 1e-12


def test_lvc_hessian_misses_exactly_the_cross_step_terms():
    H_true = hessian(J)(THETA)
    H_lvc = expected_hessian(lvc, THETA)
    onp.testing.assert_allclose(H_lvc + cross_steps(THETA), H_true, rtol=0, atol=1e-12)
    assert relative(H_lvc, H_true) > 0.4


def test_the_cumulative_log_prob_matters():
    # box(log pi_t) on r_t alone (no sum over earlier steps) is biased, because r_1 depends on a_0
    def per_step(theta, tau):
        return np.sum(rl.dice_magic_box(log_probs(theta, tau)) * DISC * rewards_of(tau))
    assert relative(expected_hessian(per_step, THETA), hessian(J)(THETA)) > 0.1


# ---------------------------------------------------------------------------------------------
# One MAML step
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_meta_gradient_with_exact_outer_gradient(alpha):
    """Formulation II: ``grad_theta J(theta + alpha grad J(theta)) = (I + alpha hess J) v``."""
    v = grad(J)(THETA + alpha * grad(J)(THETA))
    exact = grad(lambda th: J(th + alpha * grad(J)(th)))(THETA)
    meta = {name: v + alpha * expected_hessian(f, THETA) @ v for name, f in ALL.items()}
    for name in UNBIASED:
        assert relative(meta[name], exact) < 1e-12, name
    S = score_score(THETA)
    onp.testing.assert_allclose(meta["reinforce"], exact - alpha * S @ v, rtol=0, atol=1e-12)
    # Finn et al.'s estimate is worse here than dropping the Hessian altogether (first order)
    assert relative(meta["reinforce"], exact) > relative(v, exact) > 0.1
    print(f"alpha {alpha}: relative error reinforce {relative(meta['reinforce'], exact):.3f}, "
          f"lvc {relative(meta['lvc'], exact):.3f}, first order {relative(v, exact):.3f}")


def finite_batch_terms(alpha, E):
    """Formulation I with inner batches of ``E`` episodes, every batch enumerated.

    Returns ``grad F_I`` (autograd through the enumeration) and the expectations of the pathwise
    term with REINFORCE's and DiCE's Hessians and of the score term.
    """
    batches = list(itertools.product(EPISODES, repeat=E))

    def log_p(th, D):
        return sum(np.sum(log_probs(th, tau)) for tau in D)

    def adapted(th, D):                     # theta + alpha * mean REINFORCE gradient over D
        return th + alpha * sum(grad(reinforce)(th, tau) for tau in D) / E

    exact = grad(lambda th: sum(np.exp(log_p(th, D)) * J(adapted(th, D)) for D in batches))(THETA)
    H = {name: {tau: hessian(f)(THETA, tau) for tau in EPISODES}
         for name, f in [("reinforce", reinforce), ("dice", dice)]}
    pathwise = {"reinforce": 0.0, "dice": 0.0}
    score = 0.0
    for D in batches:
        p, theta_D = onp.exp(log_p(THETA, D)), adapted(THETA, D)
        v_D = grad(J)(theta_D)
        for name in pathwise:
            H_D = sum(H[name][tau] for tau in D) / E
            pathwise[name] = pathwise[name] + p * (v_D + alpha * H_D @ v_D)
        score = score + p * grad(log_p)(THETA, D) * J(theta_D)
    return exact, pathwise, score


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_finite_batch_meta_gradient(alpha):
    errors = {}
    for E in (1, 2):
        exact, pathwise, score = finite_batch_terms(alpha, E)
        # the exact gradient is Finn et al.'s pathwise term plus the score term, nothing else
        onp.testing.assert_allclose(pathwise["reinforce"] + score, exact, rtol=0, atol=1e-12)
        errors[E] = {"reinforce": relative(pathwise["reinforce"], exact),
                     "dice": relative(pathwise["dice"], exact),
                     "dice + score": relative(pathwise["dice"] + score, exact)}
    print(f"alpha {alpha}:", errors)
    # Finn et al.'s bias does not shrink with the batch; "dice" approaches the exact gradient
    assert errors[2]["reinforce"] >= errors[1]["reinforce"] > 0.35
    assert errors[2]["dice"] < 0.5 * errors[1]["dice"]
    # with two episodes, DiCE's Hessian stands in for the score term, and adding it double counts
    assert errors[2]["dice"] < 0.3 * min(errors[2]["reinforce"], errors[2]["dice + score"])
    if alpha == 0.5:
        assert errors[1]["dice"] < 0.3 * min(errors[1]["reinforce"], errors[1]["dice + score"])
    else:
        # one episode and a large step: the small-step argument fails, the order flips
        assert errors[1]["dice + score"] < errors[1]["dice"] < errors[1]["reinforce"]
