"""Policy-gradient surrogates: advantage normalisation, REINFORCE, and DiCE with its baselines.

Over the valid steps of a batch (:mod:`ssmref.metarl.rl.batch`), ``n = sum(mask)``::

    normalize(A)   = (A - mean) / (std + 1e-8)          population std (rllab center_advantages)
    L_REINFORCE    = - sum mask * log pi(a|s) * stop_gradient(A) / n                 (a loss)
    L_DiCE         = (1/N) sum_n sum_t box(c_nt) gamma^t r_nt,  c_nt = sum_{t'<=t} log pi_nt'
    box(x)         = exp(x - stop_gradient(x))                             (an objective)

*Signs.*  :func:`reinforce_surrogate` is a *loss* (to minimise, rllab/maml_rl's ``surr_obj``);
:func:`dice_surrogate` is an *objective* (to maximise, the DiCE paper's ``L_box``).  *Discounting.*
DiCE discounts from the start of the episode (``gamma^t r_t``), as the DiCE paper does, so its
gradient carries an extra ``gamma^t`` relative to rllab's REINFORCE (see :func:`dice_surrogate`).

Each public function checks its arguments and calls its unchecked twin ``name_core``, which the
trainers call directly on their own data.  ``log_probs`` (and, where it makes sense, the other
float inputs) may be autograd boxes, at any derivative order; no array is mutated.
"""

import autograd.numpy as np
import numpy as onp

from ssmref.metarl.rl.batch import (check_discount, check_like_mask, check_mask,
                                    check_valid_steps, masked)
from ssmref.params import stop_gradient

BASELINE_TERMS = ("foerster", "mao")


def dice_magic_box(x):
    """The DiCE operator: ``box(x) = exp(x - stop_gradient(x))``, elementwise.

    ``box(x)`` evaluates to exactly 1.0, and ``d box(x) / dx = box(x) * d x / dx``, so that to every
    order ``d^n box(f(theta)) / d theta^n`` is what differentiating ``exp(f)`` would give, divided
    by ``exp(f)``; in particular ``d/dx box(x) = box(x) = 1`` and ``d^2/dx^2 box(x) = 1``.

    Reference: Foerster et al. 2018, "DiCE: The Infinitely Differentiable Monte Carlo Estimator",
    ICML, Eq. (3) (the "MagicBox" operator).
    """
    return np.exp(x - stop_gradient(x))


# n = sum(mask),  mean = sum(mask A) / n,  std = sqrt(sum(mask (A - mean)^2) / n)
def normalize_advantages_core(adv, m, eps=1e-8):
    n = float(onp.sum(m))
    a = masked(adv, m)
    mean = np.sum(a) / n
    std = np.sqrt(np.sum(m * (a - mean) ** 2) / n)
    return masked((a - mean) / (std + eps), m)


def normalize_advantages(adv, mask, eps=1e-8):
    """``(A - mean) / (std + eps)`` over the valid steps of the whole batch; 0.0 at masked steps.

        n = sum(mask),  mean = sum(mask * A) / n,  std = sqrt(sum(mask * (A - mean)^2) / n)

    ``std`` is the *population* std (ddof = 0, numpy's ``std`` default) and ``eps`` is added to the
    std, not the variance, exactly as rllab ``center_advantages`` / maml_rl ``process_samples``.
    Meant for data: ``sqrt`` has an infinite derivative at zero variance, so do not differentiate
    through it where all advantages may be equal.

    Shapes: ``adv``, ``mask`` (N, T) -> (N, T).  Reference: ``rllab/algos/util.py``
    ``center_advantages``; ``rllab/sampler/base.py`` (``adv_std = np.std(raw_adv) + 1e-8``).
    """
    m = check_mask(mask)
    check_like_mask("adv", adv, m)
    check_valid_steps(m, "normalize_advantages")
    return normalize_advantages_core(adv, m, eps)


# L = - sum_{n,t} mask_nt log pi_nt stop_gradient(A_nt) / sum_{n,t} mask_nt
def reinforce_surrogate_core(log_probs, advantages, m):
    n = float(onp.sum(m))
    adv = stop_gradient(masked(advantages, m))
    return -np.sum(masked(log_probs, m) * adv) / n


def reinforce_surrogate(log_probs, advantages, mask):
    """REINFORCE surrogate *loss* (to minimise), the mean over valid steps:

        L = - sum_{n,t} mask_nt * log pi(a_nt | s_nt) * stop_gradient(A_nt) / sum_{n,t} mask_nt

    so ``grad L = - mean over valid steps of grad log pi * A``.  The advantages are wrapped in
    :func:`stop_gradient` (treated as constants even if they depend on the parameters).
    Normalised by the number of valid steps, as rllab/maml_rl ``VPG`` (``- mean(logli * adv)`` over
    the concatenated valid steps; ``sum(... * valid) / sum(valid)`` for recurrent policies).

    Shapes: ``log_probs`` (may be autograd boxes), ``advantages``, ``mask`` (N, T) -> scalar.
    Reference: Williams 1992; ``sandbox/rocky/tf/algos/vpg.py`` in cbfinn/maml_rl.
    """
    m = check_mask(mask)
    check_like_mask("log_probs", log_probs, m)
    check_like_mask("advantages", advantages, m)
    check_valid_steps(m, "reinforce_surrogate")
    return reinforce_surrogate_core(log_probs, advantages, m)


# L = (1/N) sum_n sum_t box(c_nt) gamma^t r_nt  [+ baseline term, which evaluates to 0]
def dice_surrogate_core(log_probs, rewards, m, gamma, baseline=None, baseline_term="foerster"):
    N, T = m.shape
    disc = gamma ** onp.arange(T, dtype=onp.float64)           # (T,): gamma^t, 0^0 = 1
    lp = masked(log_probs, m)                                   # (N, T), 0 after the path end
    cum = np.cumsum(lp, axis=1)                                 # (N, T): c_t = sum_{t'<=t} lp_t'
    objective = np.sum(dice_magic_box(cum) * disc * masked(rewards, m))
    if baseline is not None:
        b = stop_gradient(masked(baseline, m))                  # (N, T)
        weight = 1.0 - dice_magic_box(lp)                       # (N, T), evaluates to 0
        if baseline_term == "mao":
            cum_prev = np.concatenate([np.zeros((N, 1)), cum[:, :-1]], axis=1)   # (N, T): c_{t-1}
            weight = weight * dice_magic_box(cum_prev)
        objective = objective + np.sum(weight * disc * b)
    return objective / N


def dice_surrogate(log_probs, rewards, mask, gamma, baseline=None, baseline_term="foerster"):
    """DiCE *objective* (to maximise), summed over time and averaged over episodes:

        L = (1/N) sum_n sum_t box(c_nt) * gamma^t * r_nt,     c_nt = sum_{t'<=t} log pi_nt'

    over valid steps (``box`` = :func:`dice_magic_box`; discount from the episode's first step).
    ``L`` evaluates to the mean discounted return, and its gradient is, exactly,

        grad L = (1/N) sum_n sum_t grad log pi_nt * gamma^t * R_nt,
        R_nt   = sum_{k>=t} gamma^(k-t) r_nk

    (REINFORCE with causality; note the ``gamma^t`` that rllab's surrogate omits).  Repeated
    differentiation gives unbiased estimators of every higher derivative of ``E[sum gamma^t r_t]``.

    With ``baseline`` ``b`` (N, T) (e.g. value estimates; wrapped in :func:`stop_gradient`), a term
    that evaluates to 0 and has zero expectation at every order is added:

    - ``baseline_term="foerster"`` (DiCE paper, Sec. 4 "variance reduction"):
      ``(1/N) sum_n sum_t (1 - box(log pi_nt)) * gamma^t * b_nt``;
    - ``baseline_term="mao"`` (Mao et al. 2019, the any-order baseline):
      ``(1/N) sum_n sum_t (1 - box(log pi_nt)) * box(c_n,t-1) * gamma^t * b_nt``, ``c_n,-1 = 0``.

    Both give the first-order gradient ``(1/N) sum grad log pi_t * gamma^t * (R_t - b_t)``; they
    differ from second order on, where only "mao" also reduces the variance.  ``rewards`` are not
    wrapped in ``stop_gradient`` (if they depend on the parameters, DiCE adds the pathwise term).

    Shapes: ``log_probs`` (may be autograd boxes), ``rewards``, ``mask``, ``baseline`` (N, T) ->
    scalar.  References: Foerster et al. 2018, ICML, Eqs. (3)-(4) and Sec. 4; Mao, Foerster,
    Rocktaeschel, Al-Shedivat, Farquhar, Whiteson, "A Baseline for Any Order Gradient Estimation in
    Stochastic Computation Graphs", ICML 2019.
    """
    m = check_mask(mask)
    check_like_mask("log_probs", log_probs, m)
    check_like_mask("rewards", rewards, m)
    gamma = check_discount("gamma", gamma)
    if baseline is not None:
        if baseline_term not in BASELINE_TERMS:
            raise ValueError(f"baseline_term must be one of {BASELINE_TERMS}, "
                             f"got {baseline_term!r}")
        check_like_mask("baseline", baseline, m)
    return dice_surrogate_core(log_probs, rewards, m, gamma, baseline, baseline_term)
