"""MAML for reinforcement learning (Finn et al. 2017, sec. 5.3) with the SSM policy.

One meta-iteration, for ``M`` tasks ``i`` drawn from the task family::

    D_i  ~ pi_theta            E episodes of task i with the meta-parameters (pre-update)
    theta_i' = theta - alpha * grad L(theta; D_i)           (ssmref.maml.adapt)
    D_i' ~ pi_theta_i'         E fresh episodes with the adapted parameters (post-update)
    g = grad_theta (1/M) sum_i L(theta_i'(theta); D_i')    (ssmref.maml.meta_gradient, second order)
    theta <- Adam(theta, clip(g))                           (ssmref.metarl.trainer)

``L`` is the REINFORCE surrogate ``-mean(log pi(a|o) * A)`` over valid steps, with advantages
``A`` = discounted return minus the rllab linear feature baseline fitted on the same batch,
normalised per batch (:func:`trajectory_data`); advantages are constants.

The estimator is Finn et al.'s: the meta-gradient differentiates through the inner update but
not through the dependence of the pre-update sampling distribution on ``theta`` (see
``docs/maml.md``).  The outer optimiser is Adam (Finn et al. used TRPO).
"""

import json
from dataclasses import dataclass

import numpy as onp

from ssmref import maml
from ssmref.checks import check_choice, check_int, check_scalar
from ssmref.metarl.policy.core import check_env, log_prob, policy_rollout_core, policy_sequence_core
from ssmref.metarl.policy.spec import PolicySpec, check_params, policy_param_shapes
from ssmref.metarl.rl.baseline import fit_linear_baseline_core, predict_linear_baseline_core
from ssmref.metarl.rl.batch import check_discount, check_like_mask, check_mask
from ssmref.metarl.rl.returns import discounted_returns_core
from ssmref.metarl.rl.surrogates import (dice_surrogate_core, normalize_advantages_core,
                                         reinforce_surrogate_core)
from ssmref.metarl.trainer import MetaTrainer
from ssmref.optim import clip_by_global_norm
from ssmref.params import global_norm
from ssmref.rng import as_rng

ESTIMATORS = ("reinforce", "dice")


@dataclass(frozen=True)
class MetaMAMLConfig:
    """Hyperparameters (defaults: Finn et al.'s 2-D navigation, Adam outer loop)."""
    meta_batch_size: int = 20        # tasks per meta-iteration
    episodes_per_task: int = 20      # episodes per task, pre- and post-update
    inner_lr: float = 0.1            # alpha
    inner_steps: int = 1             # inner gradient steps on the pre-update batch
    outer_lr: float = 3e-3           # Adam learning rate for theta
    gamma: float = 0.99              # discount
    first_order: bool = False        # FOMAML instead of the second-order meta-gradient
    estimator: str = "reinforce"     # inner loss: "reinforce" (Finn et al.) or "dice" (Foerster)
    max_grad_norm: float = 0.0       # clip the meta-gradient's global norm (0: no clipping)
    lr_decay_iterations: int = 0     # outer lr decays linearly to 0 at this iteration (0: constant)

    def __post_init__(self):
        for name in ("meta_batch_size", "episodes_per_task", "inner_steps"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("lr_decay_iterations", self.lr_decay_iterations, minimum=0)
        for name in ("inner_lr", "outer_lr", "max_grad_norm"):
            check_scalar(name, getattr(self, name), low=0.0)
        check_scalar("gamma", self.gamma, low=0.0, high=1.0)
        check_choice("estimator", self.estimator, ESTIMATORS)


# R = discounted returns,  b = linear baseline fitted on this batch,  A = normalize(R - b)
def _trajectory_data(traj, gamma, estimator):
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
    return _trajectory_data({**traj, "mask": m}, gamma, estimator)


def surrogate_loss(spec):
    """``loss_fn(params, data)``: the policy's loss on a batch of :func:`trajectory_data`.

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


def _rows(traj, i, E):
    return {k: v[i * E:(i + 1) * E] for k, v in traj.items()}


class MetaMAML(MetaTrainer):
    """The MAML-RL trainer: ``family`` (an RL task family of :mod:`ssmref.metarl.envs`), the
    policy ``(params, spec)`` (:func:`ssmref.metarl.policy.policy_init`) and a
    :class:`MetaMAMLConfig`.  The loop, the Adam step and the checkpoint are
    :class:`ssmref.metarl.trainer.MetaTrainer`'s; the checkpoint also holds the spec."""

    def __init__(self, family, params, spec, config=None):
        check_params(params, spec)
        check_env(spec, family)
        super().__init__(family, params, config or MetaMAMLConfig())
        self.spec = spec
        self.loss_fn = surrogate_loss(spec)

    def _sample(self, params, tasks, rng):
        env = self.family.make_env(tasks, self.config.episodes_per_task)
        return policy_rollout_core(params, self.spec, env, rng)

    def _adapt(self, params, data):
        c = self.config
        return maml.adapt(params, self.loss_fn, data, inner_lr=c.inner_lr, steps=c.inner_steps)

    def meta_step(self, rng=None):
        """One meta-iteration (module docstring); returns its metrics."""
        rng, c = as_rng(rng), self.config
        E = c.episodes_per_task
        tasks = self.family.sample_tasks(c.meta_batch_size, rng)
        pre = self._sample(self.params, tasks, rng)
        pairs, post_returns = [], []
        for i, task in enumerate(tasks):
            support = _trajectory_data(_rows(pre, i, E), c.gamma, c.estimator)
            post = self._sample(self._adapt(self.params, support), [task], rng)
            post_returns.append(post["rewards"].sum(axis=1).mean())
            pairs.append((support, _trajectory_data(post, c.gamma, "reinforce")))
        loss, grads = maml.meta_gradient(self.params, self.loss_fn, pairs, inner_lr=c.inner_lr,
                                         steps=c.inner_steps, first_order=c.first_order)
        grad_norm = global_norm(grads)
        if c.max_grad_norm > 0:
            grads, _ = clip_by_global_norm(grads, c.max_grad_norm)
        self.apply_meta_gradient(grads, self.lr_factor(self.iteration))
        return {"iteration": self.iteration, "meta_loss": float(loss),
                "pre_return": float(pre["rewards"].sum(axis=1).mean()),
                "post_return": float(onp.mean(post_returns)),
                "grad_norm": float(grad_norm)}

    def lr_factor(self, iteration):
        """``lr_t / lr`` at 0-based ``iteration``: ``max(0, 1 - t / lr_decay_iterations)``, or 1."""
        n = self.config.lr_decay_iterations
        return 1.0 if n == 0 else max(0.0, 1.0 - iteration / n)

    def adapt_to_new_task(self, task, rng=None, steps=1):
        """The *adapted* parameters for ``task``: ``steps`` rounds of sampling ``E`` episodes with
        the current parameters and one inner update on them."""
        rng = as_rng(rng)
        params = self.params
        for _ in range(steps):
            data = _trajectory_data(self._sample(params, [task], rng), self.config.gamma,
                                    self.config.estimator)
            params = maml.adapt(params, self.loss_fn, data, inner_lr=self.config.inner_lr)
        return params

    def evaluate(self, tasks, rng=None, steps=3, per_task=False, later_inner_lr=None):
        """``returns_by_step[k]``: mean return over ``tasks`` (and their episodes) after ``k``
        inner steps, each step on fresh episodes of the previous parameters, ``k = 0..steps``.
        ``per_task=True`` returns the ``(steps + 1, len(tasks))`` array of per-task means instead.
        Every step uses the config's ``inner_lr``, or, from the second step on, ``later_inner_lr``
        when it is given."""
        rng = as_rng(rng)
        if later_inner_lr is not None:
            check_scalar("later_inner_lr", later_inner_lr, low=0.0)
        current = [self.params] * len(tasks)
        out = onp.zeros((steps + 1, len(tasks)))
        for k in range(steps + 1):
            nxt = []
            for j, (task, params) in enumerate(zip(tasks, current)):
                traj = self._sample(params, [task], rng)
                out[k, j] = traj["rewards"].sum(axis=1).mean()
                if k < steps:
                    data = _trajectory_data(traj, self.config.gamma, self.config.estimator)
                    lr = self.config.inner_lr if k == 0 or later_inner_lr is None else later_inner_lr
                    nxt.append(maml.adapt(params, self.loss_fn, data, inner_lr=lr))
            current = nxt
        return out if per_task else [float(v) for v in out.mean(axis=1)]

    # ----------------------------------------------------------------------------- checkpoint
    def checkpoint_header(self):
        return {"spec": json.loads(self.spec.to_json())}

    @classmethod
    def checkpoint_shapes(cls, meta):
        return policy_param_shapes(PolicySpec.from_json(json.dumps(meta["spec"])))

    @classmethod
    def restore_arguments(cls, meta):
        return {"spec": PolicySpec.from_json(json.dumps(meta["spec"])),
                "config": MetaMAMLConfig(**meta["config"])}
