"""Policy-gradient math on batches of trajectories, independent of any policy.

Data layout.  A batch holds ``N`` episodes padded to ``T`` steps:

- ``rewards``, ``values``, ``log_probs``, ``advantages``: shape ``(N, T)``;
- ``obs``: shape ``(N, T, obs_dim)``;
- ``mask``: shape ``(N, T)``, 1.0 where the step happened and 0.0 after the episode ended.  Each row
  is ones then zeros (a prefix of valid steps, possibly empty, possibly the whole row); anything
  else is a ``ValueError``.  ``mask`` is data: it is never differentiated.

Entries of any input at masked steps are *ignored*, even when they are NaN or infinite: every
function selects with ``where(mask, x, 0)`` before doing arithmetic, and returns 0.0 at masked
steps.

Conventions (each one is a place where frameworks differ; ``docs/rl.md`` gives the sources):

- *Path end.*  The value after the last valid step is 0, whether the episode terminated or was
  cut at the horizon ``T`` (no bootstrapping).  This is what rllab / cbfinn/maml_rl do
  (``np.append(path_baselines, 0)`` in ``rllab/sampler/base.py``), and it is exact for the
  finite-horizon objective ``E[sum_{t<T} gamma^t r_t]`` that MAML-RL optimises.
- *Discounting.*  ``discounted_returns`` and ``gae`` restart the discount at each step
  (``R_t = sum_{k>=t} gamma^(k-t) r_k``), as rllab does; ``dice_surrogate`` discounts from the start
  of the episode (``gamma^t r_t``), as the DiCE paper does.  Hence the DiCE gradient carries an
  extra ``gamma^t`` factor relative to rllab's REINFORCE (see :func:`dice_surrogate`).
- *Signs.*  :func:`reinforce_surrogate` is a *loss* (to minimise, rllab/maml_rl's ``surr_obj``);
  :func:`dice_surrogate` is an *objective* (to maximise, the DiCE paper's ``L_box``).
- *Normalisation.*  Population standard deviation, ``eps`` added to the std:
  ``(A - mean) / (std + 1e-8)`` (rllab ``center_advantages``).
- *Baseline.*  rllab's ``LinearFeatureBaseline``: features of the *clipped* observation, ridge
  regression by ``lstsq`` on the normal equations, ``reg_coeff`` times 10 on failure, 5 attempts.

Every function is written with ``autograd.numpy`` and never mutates an array, so ``log_probs`` (and,
where it makes sense, the other float inputs) may be autograd boxes, at any derivative order.
"""

import autograd.numpy as np
import numpy as onp

from .params import stop_gradient

__all__ = [
    "stop_gradient", "dice_magic_box",
    "discount_cumsum", "discounted_returns", "gae",
    "baseline_features", "fit_linear_baseline", "predict_linear_baseline", "LinearFeatureBaseline",
    "normalize_advantages", "reinforce_surrogate", "dice_surrogate", "rollout",
]


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _value(x):
    """The plain ndarray under ``x`` (``x`` may be an autograd box): for validation only."""
    while hasattr(x, "_value"):
        x = x._value
    return onp.asarray(x)


def _check_mask(mask):
    """``mask`` as a float64 ndarray of shape (N, T): entries 0/1, each row ones then zeros."""
    m = _value(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (N, T), got shape {m.shape}")
    if m.dtype == bool:
        m = m.astype(onp.float64)
    if not onp.all((m == 0.0) | (m == 1.0)):
        raise ValueError("mask entries must be 0.0 or 1.0")
    if m.shape[1] > 1 and onp.any(m[:, 1:] > m[:, :-1]):
        raise ValueError("mask rows must be ones then zeros (an episode cannot restart)")
    return m.astype(onp.float64)


def _check_like_mask(name, x, m, trailing=()):
    """``x`` must have shape ``mask.shape + trailing``; the error names both shapes."""
    want = m.shape + tuple(trailing)
    got = tuple(np.shape(x))
    if len(got) != len(want) or got[:2] != want[:2] or (trailing and got[2:] != want[2:]):
        raise ValueError(f"{name} has shape {got} but mask has shape {m.shape}; "
                         f"{name} must have shape {'(N, T)' if not trailing else '(N, T, ...)'} "
                         f"matching mask")


def _check_discount(name, x):
    if isinstance(x, bool) or not onp.isscalar(x) or not onp.isfinite(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {x!r}")
    return float(x)


def _masked(x, m):
    """``x`` where the step is valid, 0.0 elsewhere (also replaces NaN/inf padding)."""
    if np.ndim(x) == 3:
        return np.where(m[:, :, None] > 0, x, 0.0)
    return np.where(m > 0, x, 0.0)


def _n_valid(m, where):
    n = float(onp.sum(m))
    if n == 0.0:
        raise ValueError(f"{where}: mask has no valid step")
    return n


# ---------------------------------------------------------------------------------------------
# stop_gradient and the DiCE magic box
# ---------------------------------------------------------------------------------------------

def dice_magic_box(x):
    """The DiCE operator: ``box(x) = exp(x - stop_gradient(x))``, elementwise.

    ``box(x)`` evaluates to exactly 1.0, and ``d box(x) / dx = box(x) * d x / dx``, so that to every
    order ``d^n box(f(theta)) / d theta^n`` is what differentiating ``exp(f)`` would give, divided
    by ``exp(f)``; in particular ``d/dx box(x) = box(x) = 1`` and ``d^2/dx^2 box(x) = 1``.

    Reference: Foerster et al. 2018, "DiCE: The Infinitely Differentiable Monte Carlo Estimator",
    ICML, Eq. (3) (the "MagicBox" operator).
    """
    return np.exp(x - stop_gradient(x))


# ---------------------------------------------------------------------------------------------
# Returns and generalised advantage estimation
# ---------------------------------------------------------------------------------------------

def _discount_matrix(T, discount):
    """``D[t, k] = discount^(k - t)`` for ``k >= t``, else 0: shape (T, T), upper triangular."""
    t = onp.arange(T)
    lag = t[None, :] - t[:, None]                               # (T, T): lag[t, k] = k - t
    return onp.where(lag >= 0, discount ** onp.maximum(lag, 0), 0.0)


def discount_cumsum(x, mask, discount):
    """Masked discounted reverse cumulative sum along time: ``y_t = sum_{k>=t} discount^(k-t) x_k``.

    The sum runs over valid steps only (``mask_k = 1``) and ``y_t = 0`` at masked steps.  Computed
    as one product with the upper-triangular discount matrix ``D[t, k] = discount^(k - t)``:
    ``y = where(mask, x, 0) @ D^T``; no in-place update, so it is differentiable w.r.t. ``x``.
    ``0^0 = 1``, so ``discount = 0`` gives ``y = x`` on valid steps.

    Shapes: ``x``, ``mask`` (N, T) -> (N, T).  Reference: ``rllab.misc.special.discount_cumsum``
    (which uses ``scipy.signal.lfilter`` on one path).
    """
    m = _check_mask(mask)
    _check_like_mask("x", x, m)
    discount = _check_discount("discount", discount)
    D = _discount_matrix(m.shape[1], discount)                  # (T, T)
    return np.dot(_masked(x, m), D.T)                           # (N, T)


def discounted_returns(rewards, mask, gamma):
    """Discounted reward-to-go ``R_t = sum_{k>=t, k valid} gamma^(k-t) r_k``; 0 at masked steps.

    Shapes: ``rewards``, ``mask`` (N, T) -> (N, T).  ``gamma`` in [0, 1].
    Reference: rllab / cbfinn/maml_rl ``path["returns"] = discount_cumsum(rewards, discount)``
    (``rllab/sampler/base.py``).
    """
    m = _check_mask(mask)
    _check_like_mask("rewards", rewards, m)
    return discount_cumsum(rewards, m, _check_discount("gamma", gamma))


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
    m = _check_mask(mask)
    _check_like_mask("rewards", rewards, m)
    _check_like_mask("values", values, m)
    gamma = _check_discount("gamma", gamma)
    lam = _check_discount("lam", lam)
    v = _masked(values, m)                                      # (N, T), 0 after the path end
    v_next = np.concatenate([v[:, 1:], np.zeros((m.shape[0], 1))], axis=1)   # (N, T): V_{t+1}
    deltas = _masked(rewards, m) + gamma * v_next - v           # (N, T)
    return discount_cumsum(deltas, m, gamma * lam)


# ---------------------------------------------------------------------------------------------
# rllab's linear feature baseline
# ---------------------------------------------------------------------------------------------

BASELINE_MAX_ATTEMPTS = 5   # cbfinn/maml_rl: ``for _ in range(5)``


def baseline_features(obs, mask):
    """rllab ``LinearFeatureBaseline._features``, per step ``t`` of a path:

        o_t  = clip(obs_t, -10, 10)
        phi_t = [o_t, o_t**2, t/100, (t/100)**2, (t/100)**3, 1]      (2*obs_dim + 4 entries)

    The square is of the *clipped* observation (rllab: ``o = np.clip(...); ... o ** 2``); ``t`` is
    the step index within the path, starting at 0 (``np.arange(l) / 100.0``).  Rows at masked steps
    are 0.0.  Shapes: ``obs`` (N, T, obs_dim), ``mask`` (N, T) -> (N, T, 2*obs_dim + 4).
    Reference: ``rllab/baselines/linear_feature_baseline.py`` (rll/rllab, cbfinn/maml_rl).
    """
    m = _check_mask(mask)
    if np.ndim(obs) != 3:
        raise ValueError(f"obs has shape {tuple(np.shape(obs))} but mask has shape {m.shape}; "
                         f"obs must have shape (N, T, obs_dim)")
    _check_like_mask("obs", obs, m, trailing=tuple(np.shape(obs))[2:])
    N, T = m.shape
    o = np.clip(_masked(obs, m), -10.0, 10.0)                   # (N, T, d)
    al = onp.broadcast_to((onp.arange(T) / 100.0)[None, :, None], (N, T, 1))   # (N, T, 1)
    ones = onp.ones((N, T, 1))
    feats = np.concatenate([o, o ** 2, al, al ** 2, al ** 3, ones], axis=2)   # (N, T, 2d + 4)
    return _masked(feats, m)


def _ridge_solve(gram, rhs, reg_coeff):
    """rllab's solve: ``lstsq(F^T F + reg_coeff * I, F^T y)`` with ``rcond=-1`` (numpy < 2.0)."""
    k = gram.shape[0]
    return onp.linalg.lstsq(gram + reg_coeff * onp.identity(k), rhs, rcond=-1)[0]


def fit_linear_baseline(obs, returns, mask, reg_coeff=1e-5):
    """Ridge-regression coefficients ``c`` of the returns on :func:`baseline_features`.

        F = features of the valid steps (masked steps excluded),  y = their returns
        c = lstsq(F^T F + reg * I, F^T y),   reg = reg_coeff * 10^j,  j = 0, 1, ..., 4

    The first attempt whose ``c`` is finite is returned (cbfinn/maml_rl retries on NaN; here on
    NaN or inf).  If all 5 attempts fail, ``numpy.linalg.LinAlgError`` (a ``ValueError``) is raised
    instead of rllab's silent NaN coefficients.  Non-finite ``obs`` or ``returns`` at valid steps
    are refused with ``ValueError``.  Not differentiated (plain NumPy); the returns are usually
    :func:`discounted_returns`, fitted on the same batch before predicting, as maml_rl does.

    Shapes: ``obs`` (N, T, obs_dim), ``returns``, ``mask`` (N, T) -> ``c`` (2*obs_dim + 4,).
    Reference: ``rllab/baselines/linear_feature_baseline.py`` ``fit`` (cbfinn/maml_rl version).
    """
    m = _check_mask(mask)
    _check_like_mask("returns", returns, m)
    obs_v, ret_v = _value(obs).astype(onp.float64), _value(returns).astype(onp.float64)
    valid = m.reshape(-1) > 0                                   # (N*T,)
    if not onp.all(onp.isfinite(ret_v.reshape(-1)[valid])):
        raise ValueError("returns must be finite at valid steps")
    feats = onp.asarray(baseline_features(obs_v, m))            # (N, T, k)
    k = feats.shape[2]
    if not onp.all(onp.isfinite(obs_v.reshape(-1, obs_v.shape[2])[valid])):
        raise ValueError("obs must be finite at valid steps")
    F = feats.reshape(-1, k)[valid]                             # (n_valid, k)
    y = ret_v.reshape(-1)[valid]                                # (n_valid,)
    gram, rhs = F.T @ F, F.T @ y                                # (k, k), (k,)
    reg = float(reg_coeff)
    for _ in range(BASELINE_MAX_ATTEMPTS):
        coeffs = _ridge_solve(gram, rhs, reg)
        if onp.all(onp.isfinite(coeffs)):
            return coeffs
        reg *= 10.0
    raise onp.linalg.LinAlgError(
        f"fit_linear_baseline: no finite solution after {BASELINE_MAX_ATTEMPTS} attempts "
        f"(reg_coeff {reg_coeff} up to {reg / 10.0})")


def predict_linear_baseline(coeffs, obs, mask):
    """``b_t = phi_t . c`` at valid steps, 0.0 at masked steps.

    Shapes: ``coeffs`` (2*obs_dim + 4,), ``obs`` (N, T, obs_dim), ``mask`` (N, T) -> (N, T).
    Reference: ``rllab/baselines/linear_feature_baseline.py`` ``predict``.
    """
    m = _check_mask(mask)
    feats = baseline_features(obs, m)                           # (N, T, k)
    k = feats.shape[2]
    if tuple(np.shape(coeffs)) != (k,):
        raise ValueError(f"coeffs has shape {tuple(np.shape(coeffs))} but obs has shape "
                         f"{tuple(np.shape(obs))}; coeffs must have shape "
                         f"(2*obs_dim + 4,) = ({k},)")
    return _masked(np.dot(feats, coeffs), m)                    # (N, T)


class LinearFeatureBaseline:
    """Thin stateful wrapper of :func:`fit_linear_baseline` / :func:`predict_linear_baseline`.

    As in rllab, :meth:`predict` before any :meth:`fit` returns zeros (``coeffs is None``).
    """

    def __init__(self, reg_coeff=1e-5):
        self.reg_coeff = float(reg_coeff)
        self.coeffs = None

    def fit(self, obs, returns, mask):
        self.coeffs = fit_linear_baseline(obs, returns, mask, self.reg_coeff)
        return self

    def predict(self, obs, mask):
        m = _check_mask(mask)
        if self.coeffs is None:
            return onp.zeros(m.shape)
        return predict_linear_baseline(self.coeffs, obs, m)


# ---------------------------------------------------------------------------------------------
# Advantage normalisation and surrogates
# ---------------------------------------------------------------------------------------------

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
    m = _check_mask(mask)
    _check_like_mask("adv", adv, m)
    n = _n_valid(m, "normalize_advantages")
    a = _masked(adv, m)
    mean = np.sum(a) / n
    std = np.sqrt(np.sum(m * (a - mean) ** 2) / n)
    return _masked((a - mean) / (std + eps), m)


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
    m = _check_mask(mask)
    _check_like_mask("log_probs", log_probs, m)
    _check_like_mask("advantages", advantages, m)
    n = _n_valid(m, "reinforce_surrogate")
    adv = stop_gradient(_masked(advantages, m))
    return -np.sum(_masked(log_probs, m) * adv) / n


BASELINE_TERMS = ("foerster", "mao")


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
    m = _check_mask(mask)
    _check_like_mask("log_probs", log_probs, m)
    _check_like_mask("rewards", rewards, m)
    gamma = _check_discount("gamma", gamma)
    N, T = m.shape
    disc = gamma ** onp.arange(T, dtype=onp.float64)           # (T,): gamma^t, 0^0 = 1
    lp = _masked(log_probs, m)                                  # (N, T), 0 after the path end
    cum = np.cumsum(lp, axis=1)                                 # (N, T): c_t = sum_{t'<=t} lp_t'
    objective = np.sum(dice_magic_box(cum) * disc * _masked(rewards, m))
    if baseline is not None:
        if baseline_term not in BASELINE_TERMS:
            raise ValueError(f"baseline_term must be one of {BASELINE_TERMS}, "
                             f"got {baseline_term!r}")
        _check_like_mask("baseline", baseline, m)
        b = stop_gradient(_masked(baseline, m))                 # (N, T)
        weight = 1.0 - dice_magic_box(lp)                       # (N, T), evaluates to 0
        if baseline_term == "mao":
            cum_prev = np.concatenate([np.zeros((N, 1)), cum[:, :-1]], axis=1)   # (N, T): c_{t-1}
            weight = weight * dice_magic_box(cum_prev)
        objective = objective + np.sum(weight * disc * b)
    return objective / N


# ---------------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------------

def rollout(env, act, rng=None):
    """Run every row of a vectorized environment for ``env.horizon`` steps.

    ``act(obs, t, prev_action, prev_reward)`` is the policy for all ``N`` rows at step ``t``: it
    receives ``obs (N, obs_dim)`` and the previous step's actions and rewards (``None`` at
    ``t = 0``; a recurrent policy keeps its own state and resets it at ``t = 0``) and returns the
    actions, ``(N, action_dim)`` float or ``(N,)`` int, or ``(actions, extras)`` with ``extras`` a
    dict of per-step arrays with leading dim ``N`` (e.g. log-probabilities) to record as well.
    ``rng`` is passed to ``env.reset`` (the same generator may then draw the actions).

    Returns a dict of arrays with leading dims ``(N, T)``, ``T = env.horizon``:
    ``obs (N, T, obs_dim)`` (the observation the action was chosen from), ``actions (N, T, ...)``,
    ``rewards (N, T)``, ``mask (N, T)`` (``info["mask"]``: 1.0 where the step belongs to the episode;
    finished rows are frozen by the environment and contribute reward 0 there), every extra
    ``(N, T, ...)``, and ``task_index (N,)``.  The rllab return of row ``r`` is
    ``rewards[r].sum()``.
    """
    obs = env.reset(rng)
    prev_action = prev_reward = None
    rec = {"obs": [], "actions": [], "rewards": [], "mask": []}
    for t in range(env.horizon):
        out = act(obs, t, prev_action, prev_reward)
        a, extras = out if isinstance(out, tuple) else (out, {})
        a = onp.asarray(a)
        next_obs, reward, _, _, info = env.step(a)
        for k, v in (("obs", obs), ("actions", a), ("rewards", reward), ("mask", info["mask"]),
                     *extras.items()):
            rec.setdefault(k, []).append(onp.asarray(v))
        obs, prev_action, prev_reward = next_obs, a, reward
    traj = {k: onp.stack(v, axis=1) for k, v in rec.items()}
    traj["task_index"] = onp.asarray(env.task_index).copy()
    return traj
