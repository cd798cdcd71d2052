"""Discounted returns and generalised advantage estimation on a batch of padded episodes.

For each episode, over its valid steps (``mask = 1``; the layout is :mod:`ssmref.metarl.rl.batch`)::

    R_t     = sum_{k>=t} gamma^(k-t) r_k                          discounted reward-to-go
    delta_t = r_t + gamma V_{t+1} - V_t,   V = 0 after the last valid step
    A_t     = sum_{k>=0} (gamma lam)^k delta_{t+k}                GAE (Schulman et al. 2016)

*Path end.*  The value after the last valid step is 0, whether the episode terminated or was cut at
the horizon ``T`` (no bootstrapping), as rllab / cbfinn/maml_rl do (``np.append(path_baselines,
0)`` in ``rllab/sampler/base.py``); this is exact for the finite-horizon objective
``E[sum_{t<T} gamma^t r_t]`` that MAML-RL optimises.  *Discounting* restarts at each step
(``R_t`` above), as rllab does.

Each public function checks its arguments and calls its unchecked twin ``name_core``, which the
trainers call directly on their own rollouts.  No array is mutated, so everything is
differentiable with autograd w.r.t. the float inputs, at any order.
"""

import autograd.numpy as np
import numpy as onp

from ssmref.metarl.rl.batch import check_discount, check_like_mask, check_mask, masked


def _discount_matrix(T, discount):
    """``D[t, k] = discount^(k - t)`` for ``k >= t``, else 0: shape (T, T), upper triangular."""
    t = onp.arange(T)
    lag = t[None, :] - t[:, None]                               # (T, T): lag[t, k] = k - t
    return onp.where(lag >= 0, discount ** onp.maximum(lag, 0), 0.0)


# y = where(mask, x, 0) @ D^T,   D[t, k] = discount^(k - t)  (k >= t)
def discount_cumsum_core(x, m, discount):
    D = _discount_matrix(m.shape[1], discount)                  # (T, T)
    return np.dot(masked(x, m), D.T)                            # (N, T)


def discount_cumsum(x, mask, discount):
    """Masked discounted reverse cumulative sum along time: ``y_t = sum_{k>=t} discount^(k-t) x_k``.

    The sum runs over valid steps only (``mask_k = 1``) and ``y_t = 0`` at masked steps.  Computed
    as one product with the upper-triangular discount matrix ``D[t, k] = discount^(k - t)``:
    ``y = where(mask, x, 0) @ D^T``; no in-place update, so it is differentiable w.r.t. ``x``.
    ``0^0 = 1``, so ``discount = 0`` gives ``y = x`` on valid steps.

    Shapes: ``x``, ``mask`` (N, T) -> (N, T).  Reference: ``rllab.misc.special.discount_cumsum``
    (which uses ``scipy.signal.lfilter`` on one path).
    """
    m = check_mask(mask)
    check_like_mask("x", x, m)
    return discount_cumsum_core(x, m, check_discount("discount", discount))


# R_t = sum_{k>=t, k valid} gamma^(k-t) r_k
def discounted_returns_core(rewards, m, gamma):
    return discount_cumsum_core(rewards, m, gamma)


def discounted_returns(rewards, mask, gamma):
    """Discounted reward-to-go ``R_t = sum_{k>=t, k valid} gamma^(k-t) r_k``; 0 at masked steps.

    Shapes: ``rewards``, ``mask`` (N, T) -> (N, T).  ``gamma`` in [0, 1].
    Reference: rllab / cbfinn/maml_rl ``path["returns"] = discount_cumsum(rewards, discount)``
    (``rllab/sampler/base.py``).
    """
    m = check_mask(mask)
    check_like_mask("rewards", rewards, m)
    return discounted_returns_core(rewards, m, check_discount("gamma", gamma))


# delta_t = r_t + gamma V_{t+1} - V_t  (V = 0 after the path end)
# A_t = sum_{k>=0} (gamma lam)^k delta_{t+k}
def gae_core(rewards, values, m, gamma, lam):
    v = masked(values, m)                                       # (N, T), 0 after the path end
    v_next = np.concatenate([v[:, 1:], np.zeros((m.shape[0], 1))], axis=1)   # (N, T): V_{t+1}
    deltas = masked(rewards, m) + gamma * v_next - v            # (N, T)
    return discount_cumsum_core(deltas, m, gamma * lam)


def gae(rewards, values, mask, gamma, lam):
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16):

        delta_t = r_t + gamma * V_{t+1} - V_t,
        A_t     = sum_{k>=0} (gamma * lam)^k * delta_{t+k},

    summed over valid steps, with ``V = 0`` after the last valid step of each episode, whether it
    terminated or was cut at the horizon (rllab/maml_rl: ``np.append(path_baselines, 0)``).
    Identities: ``lam = 1`` gives ``A_t = R_t - V_t`` (so ``values = 0`` gives the discounted
    returns); ``lam = 0`` gives ``A_t = delta_t``.  ``A_t = 0`` at masked steps.

    Shapes: ``rewards``, ``values``, ``mask`` (N, T) -> (N, T).  ``gamma``, ``lam`` in [0, 1].
    Reference: Schulman, Moritz, Levine, Jordan, Abbeel, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", ICLR 2016; ``rllab/sampler/base.py`` ``process_samples``.
    """
    m = check_mask(mask)
    check_like_mask("rewards", rewards, m)
    check_like_mask("values", values, m)
    return gae_core(rewards, values, m, check_discount("gamma", gamma), check_discount("lam", lam))
