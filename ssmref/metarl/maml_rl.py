"""MAML for reinforcement learning (Finn et al. 2017, sec. 5.3) with the SSM policy.

One meta-iteration, for ``M`` tasks ``i`` drawn from the task family::

    D_i  ~ pi_theta            E episodes of task i with the meta-parameters (pre-update)
    theta_i' = theta - alpha * grad L(theta; D_i)           (ssmref.maml.adapt)
    D_i' ~ pi_theta_i'         E fresh episodes with the adapted parameters (post-update)
    g = grad_theta (1/M) sum_i L(theta_i'(theta); D_i')    (ssmref.maml.meta_gradient, second order)
    theta <- Adam(theta, g)

``L`` is the REINFORCE surrogate ``-mean(log pi(a|o) * A)`` over valid steps, with advantages
``A`` = discounted return minus the rllab linear feature baseline fitted on the same batch,
normalised per batch (:func:`trajectory_data`); advantages are constants.

The estimator is Finn et al.'s: the meta-gradient differentiates through the inner update but
not through the dependence of the pre-update sampling distribution on ``theta`` (see
``docs/maml.md``).  The outer optimiser is Adam (Finn et al. used TRPO).
"""

import json
from dataclasses import asdict, dataclass

import numpy as onp

from ssmref import maml, optim
from ssmref.metarl.policy.core import _rollout, _sequence, check_env, log_prob
from ssmref.metarl.policy.spec import PolicySpec, check_params, policy_param_shapes
from ssmref.params import global_norm, load_checkpoint, save_checkpoint, tree_copy, tree_map
from ssmref.metarl.rl.baseline import _fit_linear_baseline, _predict_linear_baseline
from ssmref.metarl.rl.batch import check_discount, check_like_mask, check_mask
from ssmref.metarl.rl.returns import _discounted_returns
from ssmref.metarl.rl.surrogates import (_dice_surrogate, _normalize_advantages,
                                         _reinforce_surrogate)
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
    estimator: str = "reinforce"     # inner loss: "reinforce" (Finn et al.) or "dice" (Foerster et al.)
    max_grad_norm: float = 0.0       # clip the meta-gradient's global norm (0: no clipping)
    lr_decay_iterations: int = 0     # outer lr decays linearly to 0 at this iteration (0: constant)

    def __post_init__(self):
        for name in ("meta_batch_size", "episodes_per_task", "inner_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if isinstance(self.lr_decay_iterations, bool) or not isinstance(
                self.lr_decay_iterations, int) or self.lr_decay_iterations < 0:
            raise ValueError(f"lr_decay_iterations must be an int >= 0, got "
                             f"{self.lr_decay_iterations!r}")
        for name in ("inner_lr", "outer_lr", "max_grad_norm"):
            if not (onp.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")


def trajectory_data(traj, gamma, estimator="reinforce"):
    """The data of one batch for :func:`surrogate_loss`: obs, actions, rewards, mask, and

    * ``estimator="reinforce"``: ``adv = normalize(R - b)`` with ``R`` the discounted returns and
      ``b`` the linear feature baseline fitted on this batch (as rllab / maml_rl do);
    * ``estimator="dice"``: ``baseline = b`` and ``scale = std(R - b) * (valid steps / episodes)``,
      which puts the DiCE objective on the scale of the normalised REINFORCE loss.  Dividing the
      inner loss by a per-batch constant is a per-batch inner step size ``alpha / scale`` (as
      advantage normalisation is for REINFORCE); the unbiasedness of DiCE's Hessian
      (``docs/rl.md``) holds for a fixed scale, not for this data-dependent one.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    gamma = check_discount("gamma", gamma)
    m = check_mask(traj["mask"])
    check_like_mask("rewards", traj["rewards"], m)
    check_like_mask("obs", traj["obs"], m, trailing=onp.shape(traj["obs"])[2:])
    R = _discounted_returns(traj["rewards"], m, gamma)                 # (N, T)
    coeffs = _fit_linear_baseline(traj["obs"], R, m)
    b = _predict_linear_baseline(coeffs, traj["obs"], m)               # (N, T)
    data = {"obs": traj["obs"], "actions": traj["actions"], "rewards": traj["rewards"],
            "mask": m, "estimator": estimator, "gamma": gamma}
    if estimator == "reinforce":
        data["adv"] = _normalize_advantages(R - b, m)
        return data
    valid = m > 0
    std = float(onp.std((R - b)[valid])) if valid.any() else 1.0
    data["baseline"] = b
    data["scale"] = max(std, 1e-8) * valid.sum() / valid.shape[0]
    return data


def surrogate_loss(spec):
    """``loss_fn(params, data)``: the policy's loss on a batch of :func:`trajectory_data`.

    ``"reinforce"`` data: ``-mean(log pi(a|o) * A)``
    (:func:`ssmref.metarl.rl.reinforce_surrogate`); ``"dice"`` data: ``-DiCE(log pi, r; b) / scale``
    (:func:`ssmref.metarl.rl.dice_surrogate` with the Mao et al. baseline term), whose Hessian is
    an unbiased estimate of the return's Hessian.  The data were checked by
    :func:`trajectory_data`; the loss itself checks nothing.
    """
    def loss_fn(params, data):
        out = _sequence(params, spec, data["obs"], data["actions"], data["rewards"], spec.mode)
        lp = log_prob(spec, out, data["actions"])
        if data.get("estimator", "reinforce") == "dice":
            objective = _dice_surrogate(lp, data["rewards"], data["mask"], data["gamma"],
                                        baseline=data["baseline"], baseline_term="mao")
            return -objective / data["scale"]
        return _reinforce_surrogate(lp, data["adv"], data["mask"])
    return loss_fn


def _rows(traj, i, E):
    return {k: v[i * E:(i + 1) * E] for k, v in traj.items()}


class MetaMAML:
    """The meta-training loop: ``family`` (an RL task family of :mod:`ssmref.metarl.envs`), the
    policy ``(params, spec)`` (:func:`ssmref.metarl.policy.policy_init`) and a :class:`MetaMAMLConfig`."""

    def __init__(self, family, params, spec, config=None):
        self.family, self.spec = family, spec
        self.config = config or MetaMAMLConfig()
        check_params(params, spec)
        check_env(spec, family)
        self.params = tree_copy(params)
        self._init, self._update = optim.adam(lr=self.config.outer_lr)
        self.opt_state = self._init(self.params)
        self.iteration = 0
        self.loss_fn = surrogate_loss(spec)

    def _sample(self, params, tasks, rng):
        env = self.family.make_env(tasks, self.config.episodes_per_task)
        return _rollout(params, self.spec, env, rng)

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
            support = trajectory_data(_rows(pre, i, E), c.gamma, c.estimator)
            post = self._sample(self._adapt(self.params, support), [task], rng)
            post_returns.append(post["rewards"].sum(axis=1).mean())
            pairs.append((support, trajectory_data(post, c.gamma)))
        loss, grads = maml.meta_gradient(self.params, self.loss_fn, pairs, inner_lr=c.inner_lr,
                                         steps=c.inner_steps, first_order=c.first_order)
        grad_norm = global_norm(grads)
        if c.max_grad_norm > 0:
            grads, _ = optim.clip_by_global_norm(grads, c.max_grad_norm)
        new, self.opt_state = self._update(grads, self.opt_state, self.params)
        # A linear learning-rate schedule: the Adam step is linear in lr, so scaling the step by
        # lr_t / lr is Adam run with lr_t (the moment estimates do not depend on lr).
        f = self.lr_factor(self.iteration)
        self.params = new if f == 1.0 else tree_map(lambda p, q: p + f * (q - p), self.params, new)
        self.iteration += 1
        return {"iteration": self.iteration, "meta_loss": float(loss),
                "pre_return": float(pre["rewards"].sum(axis=1).mean()),
                "post_return": float(onp.mean(post_returns)),
                "grad_norm": float(grad_norm)}

    def lr_factor(self, iteration):
        """``lr_t / lr`` at 0-based ``iteration``: ``max(0, 1 - t / lr_decay_iterations)``, or 1."""
        n = self.config.lr_decay_iterations
        return 1.0 if n == 0 else max(0.0, 1.0 - iteration / n)

    def meta_train(self, iterations, rng=None, callback=None):
        """``iterations`` meta-steps; ``callback(metrics)`` after each; returns the metrics list."""
        rng = as_rng(rng)
        history = []
        for _ in range(iterations):
            history.append(self.meta_step(rng))
            if callback is not None:
                callback(history[-1])
        return history

    def adapt_to_new_task(self, task, rng=None, steps=1):
        """The *adapted* parameters for ``task``: ``steps`` rounds of sampling ``E`` episodes with
        the current parameters and one inner update on them."""
        rng = as_rng(rng)
        params = self.params
        for _ in range(steps):
            data = trajectory_data(self._sample(params, [task], rng), self.config.gamma,
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
        if later_inner_lr is not None and not (onp.isfinite(later_inner_lr) and later_inner_lr >= 0):
            raise ValueError(f"later_inner_lr must be finite and >= 0, got {later_inner_lr!r}")
        current = [self.params] * len(tasks)
        out = onp.zeros((steps + 1, len(tasks)))
        for k in range(steps + 1):
            nxt = []
            for j, (task, params) in enumerate(zip(tasks, current)):
                traj = self._sample(params, [task], rng)
                out[k, j] = traj["rewards"].sum(axis=1).mean()
                if k < steps:
                    data = trajectory_data(traj, self.config.gamma, self.config.estimator)
                    lr = self.config.inner_lr if k == 0 or later_inner_lr is None else later_inner_lr
                    nxt.append(maml.adapt(params, self.loss_fn, data, inner_lr=lr))
            current = nxt
        return out if per_task else [float(v) for v in out.mean(axis=1)]

    def save(self, path):
        """Parameters, Adam state, iteration, spec and config in one ``.npz`` (atomic, no pickle;
        :func:`ssmref.params.save_checkpoint`)."""
        meta = {"spec": json.loads(self.spec.to_json()), "config": asdict(self.config),
                "iteration": self.iteration, "adam_step": self.opt_state["step"]}
        save_checkpoint(path, {"params": self.params, "adam_m": self.opt_state["m"],
                                 "adam_v": self.opt_state["v"]}, meta)

    @classmethod
    def load(cls, path, family):
        """A :class:`MetaMAML` from :meth:`save`; ``ValueError`` on any malformed file."""
        def shapes(meta):
            return policy_param_shapes(PolicySpec.from_json(json.dumps(meta["spec"])))
        meta, trees = load_checkpoint(path, ("params", "adam_m", "adam_v"), shapes)
        try:
            spec = PolicySpec.from_json(json.dumps(meta["spec"]))
            config = MetaMAMLConfig(**meta["config"])
            iteration, adam_step = int(meta["iteration"]), int(meta["adam_step"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed metadata ({e})") from None
        self = cls(family, trees["params"], spec, config)
        self.opt_state = {"step": adam_step, "m": trees["adam_m"], "v": trees["adam_v"]}
        self.iteration = iteration
        return self
