"""The data of one sampled batch and the MAML-RL losses on it (:mod:`ssmref.metarl.maml_rl`).

:func:`trajectory_data` turns a rollout into the data of the inner loss (discounted returns, the
rllab linear baseline fitted on the same batch, normalised advantages, or DiCE's baseline and
scale); :func:`surrogate_loss` is the loss of one policy on it, and the ``tasks_`` forms are the
same for ``M`` tasks stacked on a leading axis, as :class:`~ssmref.metarl.maml_rl.MetaMAML` uses
them.
"""

import numpy as onp

import autograd.numpy as np

from ssmref.metarl.policy.core import log_prob, policy_sequence_core
from ssmref.metarl.policy.tasks import split_tasks, tasks_distribution
from ssmref.metarl.rl.baseline import fit_linear_baseline_core, predict_linear_baseline_core
from ssmref.metarl.rl.batch import check_discount, check_like_mask, check_mask
from ssmref.metarl.rl.returns import discounted_returns_core
from ssmref.metarl.rl.surrogates import (dice_surrogate_core, normalize_advantages_core,
                                         reinforce_surrogate_core)

ESTIMATORS = ("reinforce", "dice")


# R = discounted returns,  b = linear baseline fitted on this batch,  A = normalize(R - b)
def trajectory_data_core(traj, gamma, estimator):
    m = traj["mask"]
    R = discounted_returns_core(traj["rewards"], m, gamma)                 # (N, T)
    coeffs = fit_linear_baseline_core(traj["obs"], R, m)
    b = predict_linear_baseline_core(coeffs, traj["obs"], m)               # (N, T)
    data = {"obs": traj["obs"], "actions": traj["actions"], "rewards": traj["rewards"],
            "mask": m, "estimator": estimator, "gamma": gamma}
    if estimator == "reinforce":
        data["adv"] = normalize_advantages_core(R - b, m)
        return data
    valid = m > 0
    std = float(onp.std((R - b)[valid])) if valid.any() else 1.0
    data["baseline"] = b
    data["scale"] = max(std, 1e-8) * valid.sum() / valid.shape[0]
    return data


def trajectory_data(traj, gamma, estimator="reinforce"):
    """The data of one batch for :func:`surrogate_loss`: obs, actions, rewards, mask, and

    * ``estimator="reinforce"``: ``adv = normalize(R - b)`` with ``R`` the discounted returns and
      ``b`` the linear feature baseline fitted on this batch (as rllab / maml_rl do);
    * ``estimator="dice"``: ``baseline = b`` and ``scale = std(R - b) * (valid steps / episodes)``,
      which puts the DiCE objective on the scale of the normalised REINFORCE loss.  Dividing the
      inner loss by a per-batch constant is a per-batch inner step size ``alpha / scale`` (as
      advantage normalisation is for REINFORCE); the unbiasedness of DiCE's Hessian
      (``docs/rl.md``) holds for a fixed scale, not for this data-dependent one.

    ``traj``: a rollout (:func:`ssmref.metarl.policy.policy_rollout`), its ``mask``, ``rewards``
    ``(N, T)`` and ``obs (N, T, obs_dim)`` checked here.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    gamma = check_discount("gamma", gamma)
    m = check_mask(traj["mask"])
    check_like_mask("rewards", traj["rewards"], m)
    check_like_mask("obs", traj["obs"], m, trailing=onp.shape(traj["obs"])[2:])
    return trajectory_data_core({**traj, "mask": m}, gamma, estimator)


def surrogate_loss(spec):
    """``loss_fn(params, data)``: the SSM policy's loss on one batch of :func:`trajectory_data`
    (the one-policy form; MetaMAML uses :func:`tasks_surrogate_loss`).

    ``"reinforce"`` data: ``-mean(log pi(a|o) * A)``
    (:func:`ssmref.metarl.rl.reinforce_surrogate`); ``"dice"`` data: ``-DiCE(log pi, r; b) / scale``
    (:func:`ssmref.metarl.rl.dice_surrogate` with the Mao et al. baseline term), whose Hessian is
    an unbiased estimate of the return's Hessian.  The data were checked by
    :func:`trajectory_data` and the parameters by the trainer; the loss itself checks nothing.
    """
    def loss_fn(params, data):
        out = policy_sequence_core(params, spec, data["obs"], data["actions"], data["rewards"], spec.mode)
        lp = log_prob(spec, out, data["actions"])
        if data.get("estimator", "reinforce") == "dice":
            objective = dice_surrogate_core(lp, data["rewards"], data["mask"], data["gamma"],
                                        baseline=data["baseline"], baseline_term="mao")
            return -objective / data["scale"]
        return reinforce_surrogate_core(lp, data["adv"], data["mask"])
    return loss_fn


# The data of M tasks stacked: (M * E, T, ...) rows -> (M, E, T, ...), one baseline per task
def tasks_trajectory_data(traj, num_tasks, gamma, estimator):
    """:func:`trajectory_data` of each task of a task-major rollout (``M * E`` rows), fitted per
    task and stacked on a leading task axis: ``obs (M, E, T, obs_dim)``, ``actions``, ``rewards``,
    ``mask (M, E, T)``, ``count (M,)`` (valid steps per task) and ``adv (M, E, T)`` (REINFORCE)
    or ``baseline`` and ``scale (M,)`` (DiCE).  Unchecked (the trainer's own rollouts)."""
    keys = ("obs", "actions", "rewards", "mask")
    by_task = {k: split_tasks(traj[k], num_tasks) for k in keys}
    per_task = [trajectory_data_core({k: by_task[k][i] for k in keys}, gamma, estimator)
                for i in range(num_tasks)]
    data = {k: onp.stack([d[k] for d in per_task]) for k in per_task[0]
            if k not in ("estimator", "gamma")}
    data.update(estimator=estimator, gamma=gamma, count=onp.sum(data["mask"], axis=(1, 2)))
    return data


def tasks_surrogate_loss(spec):
    """``loss_fn(Θ, data) -> (M,)``: task ``i``'s :func:`surrogate_loss` with parameters ``Θ[i]``
    on ``data`` of :func:`tasks_trajectory_data`, for the policy ``spec`` (either kind)."""
    def loss_fn(params, data):
        dist = tasks_distribution(params, spec, data["obs"], data["actions"], data["rewards"])
        lp = log_prob(spec, dist, data["actions"])                            # (M, E, T)
        m = data["mask"]
        if data["estimator"] == "dice":
            return np.stack([-dice_surrogate_core(lp[i], data["rewards"][i], m[i], data["gamma"],
                                                  baseline=data["baseline"][i],
                                                  baseline_term="mao") / data["scale"][i]
                             for i in range(np.shape(lp)[0])])
        return -np.sum(np.where(m > 0, lp, 0.0) * data["adv"], axis=(1, 2)) / data["count"]
    return loss_fn
