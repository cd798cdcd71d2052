"""MAML for reinforcement learning (Finn et al. 2017, sec. 5.3) with the SSM or the MLP policy.

One meta-iteration, for ``M`` tasks ``i`` drawn from the task family::

    D_i  ~ pi_theta            E episodes of task i with the meta-parameters (pre-update)
    theta_i' = theta - alpha * grad L(theta; D_i)           (ssmref.maml.adapt)
    D_i' ~ pi_theta_i'         E fresh episodes with the adapted parameters (post-update)
    outer="adam":  g = grad_theta (1/M) sum_i L(theta_i'(theta); D_i')   (second order)
                   theta <- Adam(theta, clip(g))                         (ssmref.metarl.trainer)
    outer="trpo":  theta <- the TRPO step on D_i' through theta_i'(theta)  (ssmref.metarl.trpo)

With ``adapt_rounds = R > 1`` the adapt-and-sample round repeats ``R`` times (round ``r`` steps
with ``alpha`` for ``r = 1``, ``alpha * later_lr_scale`` after), the meta-gradient flowing through
every round, and the objective is the mean of the post-update losses of the last ``loss_rounds``
rounds (TRPO: of their surrogates and of their KLs).  With Adam the iteration after the
pre-update rollout is one function of ``theta`` traced once (``maml.value_and_grad_tree``): each
inner step is taken on the traced parameters and the next episodes are sampled with its values.

``L`` is the REINFORCE surrogate ``-mean(log pi(a|o) * A)`` over valid steps, with advantages
``A`` = discounted return minus the rllab linear feature baseline fitted on the same batch,
normalised per batch (:func:`ssmref.metarl.maml_losses.trajectory_data`); advantages are
constants.

All ``M`` tasks run at once: the policy is task-batched (:mod:`ssmref.metarl.policy.tasks`: one
parameter copy per task on a leading axis), so sampling, the inner steps and the meta-gradient
(the computation of :func:`ssmref.maml.batched_meta_gradient`) are each one computation over the
meta-batch, not ``M``; the tests check them against the per-task forms.  The hot loops run with
at most ``blas_threads`` BLAS threads (1: the products are small, :mod:`ssmref.metarl.threads`).

The estimator is Finn et al.'s: the meta-gradient differentiates through the inner update but
not through the dependence of the pre-update sampling distribution on ``theta`` (see
``docs/maml.md``).  Finn et al.'s outer optimiser is TRPO (``outer="trpo"``); Adam is the default.
"""

import json
from dataclasses import dataclass

import numpy as onp

import autograd.numpy as np

from ssmref import maml
from ssmref.checks import check_choice, check_int, check_scalar
from ssmref.metarl.maml_losses import (ESTIMATORS, surrogate_loss, tasks_surrogate_loss,
                                       tasks_trajectory_data)
from ssmref.metarl.policy.args import check_env
from ssmref.metarl.policy.kinds import check_policy_params, param_shapes, spec_from_json
from ssmref.metarl.policy.tasks import split_tasks, tasks_rollout, tile_values
from ssmref.metarl.threads import blas_threads
from ssmref.metarl.trainer import MetaTrainer
from ssmref.metarl.trpo import maml_trpo_objective, maml_trpo_step, trpo_step
from ssmref.optim import clip_by_global_norm
from ssmref.params import global_norm, stop_gradient, tree_leaves, tree_map
from ssmref.rng import as_rng

OUTERS = ("adam", "trpo")


@dataclass(frozen=True)
class MetaMAMLConfig:
    """Hyperparameters (defaults: Finn et al.'s 2-D navigation, Adam outer loop).  Fields added
    later have defaults, so configs stored before them still load."""
    meta_batch_size: int = 20        # tasks per meta-iteration
    episodes_per_task: int = 20      # episodes per task, pre- and post-update
    inner_lr: float = 0.1            # alpha
    inner_steps: int = 1             # inner gradient steps on the pre-update batch
    outer_lr: float = 3e-3           # Adam learning rate for theta (outer="adam")
    gamma: float = 0.99              # discount
    first_order: bool = False        # FOMAML instead of the second-order meta-gradient
    estimator: str = "reinforce"     # inner loss: "reinforce" (Finn et al.) or "dice" (Foerster)
    max_grad_norm: float = 0.0       # clip the meta-gradient's global norm (0: no clipping; Adam)
    lr_decay_iterations: int = 0     # outer lr decays linearly to 0 at this iteration (0: constant)
    outer: str = "adam"              # outer optimiser: "adam" or "trpo" (Finn et al.)
    max_kl: float = 0.01             # TRPO: the trust region delta (maml_rl meta_step_size)
    cg_iters: int = 10               # TRPO: conjugate-gradient iterations
    cg_damping: float = 1e-5         # TRPO: F + damping * I (maml_rl reg_coeff)
    ls_backtrack_ratio: float = 0.8  # TRPO: line-search step ratio
    ls_max_steps: int = 15           # TRPO: line-search steps before the step is rejected
    adapt_rounds: int = 1            # sampled inner steps in meta-training: round r samples E
                                     # episodes with the r-times adapted policy and adapts on them
    later_lr_scale: float = 1.0      # rounds 2, 3, ... step with alpha * later_lr_scale
    loss_rounds: int = 1             # the meta-objective averages the post-update losses (TRPO:
                                     # surrogates and KLs) of the last loss_rounds rounds (1: the
                                     # last round's only)

    def __post_init__(self):
        for name in ("meta_batch_size", "episodes_per_task", "inner_steps", "cg_iters",
                     "ls_max_steps", "adapt_rounds"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("lr_decay_iterations", self.lr_decay_iterations, minimum=0)
        for name in ("inner_lr", "outer_lr", "max_grad_norm", "cg_damping", "later_lr_scale"):
            check_scalar(name, getattr(self, name), low=0.0)
        check_scalar("max_kl", self.max_kl, low=0.0, low_open=True)
        check_scalar("ls_backtrack_ratio", self.ls_backtrack_ratio, low=0.0, high=1.0,
                     low_open=True, high_open=True)
        check_scalar("gamma", self.gamma, low=0.0, high=1.0)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("outer", self.outer, OUTERS)
        check_int("loss_rounds", self.loss_rounds, minimum=1)
        if self.loss_rounds > self.adapt_rounds:
            raise ValueError(f"loss_rounds must be at most adapt_rounds ({self.adapt_rounds}), "
                             f"got {self.loss_rounds}")


def _returns(traj, num_tasks):
    """``(M,)``: each task's mean return over its episodes."""
    return onp.asarray(split_tasks(traj["rewards"].sum(axis=1), num_tasks)).mean(axis=1)


class MetaMAML(MetaTrainer):
    """The MAML-RL trainer: ``family`` (an RL task family of :mod:`ssmref.metarl.envs`), the
    policy ``(params, spec)`` (:func:`ssmref.metarl.policy.policy_init` or
    :func:`ssmref.metarl.policy.mlp.mlp_policy_init`) and a :class:`MetaMAMLConfig`.  The loop,
    the Adam step and the checkpoint are :class:`ssmref.metarl.trainer.MetaTrainer`'s; the
    checkpoint also holds the spec.  The hot loops run inside
    ``blas_threads(self.blas_threads)`` (:class:`~ssmref.metarl.trainer.MetaTrainer`)."""

    def __init__(self, family, params, spec, config=None):
        check_policy_params(params, spec)
        check_env(spec, family)
        super().__init__(family, params, config or MetaMAMLConfig())
        self.spec = spec
        self.loss_fn = surrogate_loss(spec) if spec.kind == "ssm" else None   # one-policy form
        self.tasks_loss_fn = tasks_surrogate_loss(spec)

    def summed_loss(self, params, data):
        """``Σ_i L_i(Θ_i)``: the inner loss of all tasks at once (its gradient w.r.t. ``Θ`` is
        every task's own gradient, on its own slice)."""
        return np.sum(self.tasks_loss_fn(params, data))

    def _sample(self, params, tasks, rng, episodes=None):
        """Task ``i``'s ``episodes`` (default ``E``) episodes with ``params[i]`` (task-batched
        parameters), all tasks at once."""
        env = self.family.make_env(tasks, episodes or self.config.episodes_per_task)
        return tasks_rollout(params, self.spec, env, rng, len(tasks))

    def _adapt(self, params, data, inner_lr=None):
        """Every task's inner steps at once: ``Θ' = Θ − α ∇_Θ Σ_i L_i(Θ_i)`` (values)."""
        c = self.config
        return stop_gradient(maml.adapt(params, self.summed_loss, data,
                                        inner_lr=c.inner_lr if inner_lr is None else inner_lr,
                                        steps=c.inner_steps))

    def meta_step(self, rng=None):
        """One meta-iteration (module docstring); returns its metrics."""
        with blas_threads(self.blas_threads):
            return self._meta_step(as_rng(rng))

    def round_lrs(self):
        """The inner step size of each adaptation round: ``α``, then ``α · later_lr_scale``."""
        c = self.config
        return [c.inner_lr * (1.0 if r == 0 else c.later_lr_scale) for r in range(c.adapt_rounds)]

    def _meta_step(self, rng):
        c, M = self.config, self.config.meta_batch_size
        tasks = self.family.sample_tasks(M, rng)
        pre = self._sample(tile_values(self.params, M), tasks, rng)
        if c.outer == "trpo":
            return self._trpo_iteration(tasks, pre, rng)
        rounds = {}
        loss, grads = maml.value_and_grad_tree(
            lambda theta: self._sampled_objective(theta, tasks, pre, rng, rounds), self.params)
        metrics = {"pre_return": float(_returns(pre, M).mean()),
                   "post_return": float(_returns(rounds["post"], M).mean())}
        grad_norm = global_norm(grads)
        if c.max_grad_norm > 0:
            grads, _ = clip_by_global_norm(grads, c.max_grad_norm)
        self.apply_meta_gradient(grads, self.lr_factor(self.iteration))
        metrics.update(meta_loss=float(loss), grad_norm=float(grad_norm))
        return {"iteration": self.iteration, **metrics}

    # Θ_0 = tile(θ);  round r: D_r ~ π(Θ_r) (values),  Θ_{r+1} = adapt(Θ_r; D_r, α_r);
    # D_R ~ π(Θ_R);  the loss rounds: the last loss_rounds of r = 1..R
    def _rounds(self, theta, tasks, pre, rng):
        """The adaptation rounds of one iteration from the pre-update episodes ``pre``, sampling
        each round's episodes with the values of the adapted parameters; differentiable in
        ``theta`` when it is traced (each inner step is then computed once, for sampling and for
        the meta-gradient alike).  Returns ``(supports, losses, post)``: the data each round
        adapts on, ``(r, Θ_r, query)`` for every loss round ``r`` (``query``: the REINFORCE data
        of the episodes of ``Θ_r``), and the last round's trajectories."""
        c, M = self.config, self.config.meta_batch_size
        fast, traj, supports, losses = maml.tile_params(theta, M), pre, [], []
        first_loss = c.adapt_rounds - c.loss_rounds + 1
        for r, lr in enumerate(self.round_lrs()):
            supports.append(tasks_trajectory_data(traj, M, c.gamma, c.estimator))
            if r >= first_loss:                        # an earlier round's post-update loss
                losses.append((r, fast, supports[-1] if c.estimator == "reinforce" else
                               tasks_trajectory_data(traj, M, c.gamma, "reinforce")))
            fast = maml.adapt(fast, self.summed_loss, supports[-1], inner_lr=lr,
                              steps=c.inner_steps, first_order=c.first_order)
            traj = self._sample(stop_gradient(fast), tasks, rng)
        losses.append((c.adapt_rounds, fast, tasks_trajectory_data(traj, M, c.gamma, "reinforce")))
        return supports, losses, traj

    def _sampled_objective(self, theta, tasks, pre, rng, record):
        """The meta-objective of one iteration as a differentiable function of ``theta``: the mean
        over the loss rounds of ``mean_i L_i(Θ_r; D_r)`` (:meth:`_rounds`).  ``record`` receives
        the last round's trajectories (``"post"``)."""
        _, losses, record["post"] = self._rounds(theta, tasks, pre, rng)
        values = [np.mean(self.tasks_loss_fn(fast, query)) for _, fast, query in losses]
        return values[0] if len(values) == 1 else sum(values) / len(values)

    def _trpo_iteration(self, tasks, pre, rng):
        """One meta-iteration with the TRPO outer step: the rounds by values (:meth:`_rounds`),
        then :meth:`_trpo_step` on the post-update episodes of the loss rounds."""
        M = self.config.meta_batch_size
        supports, losses, post = self._rounds(stop_gradient(self.params), tasks, pre, rng)
        metrics = {"pre_return": float(_returns(pre, M).mean()),
                   "post_return": float(_returns(post, M).mean())}
        self.params, info = self._trpo_step(supports, [(r, query) for r, _, query in losses])
        self.iteration += 1
        metrics.update(meta_loss=info["loss_before"], grad_norm=info["grad_norm"],
                       kl=info["kl_after"], backtracks=info["backtracks"],
                       accepted=info["accepted"], step_norm=info["step_norm"])
        return {"iteration": self.iteration, **metrics}

    # Θ_0 = tile(θ),  Θ_{r+1} = adapt(Θ_r; D_r, α_r)   (differentiable: second order)
    def adapted(self, theta, supports):
        """Every task's parameters after the adaptation rounds on ``supports`` (one
        task-batched data dict per round), as a differentiable function of ``theta``."""
        c = self.config
        fast = maml.tile_params(theta, c.meta_batch_size)
        for lr, data in zip(self.round_lrs(), supports):
            fast = maml.adapt(fast, self.summed_loss, data, inner_lr=lr, steps=c.inner_steps,
                              first_order=c.first_order)
        return fast

    def _trpo_step(self, supports, queries):
        """The TRPO outer step (:mod:`ssmref.metarl.trpo`) on ``queries``, ``(r, data)`` pairs:
        the post-update episodes after ``r`` rounds.  From second-order pieces for one round of
        one inner step, by the direct Hessian-vector products of the KL otherwise; with several
        pairs the surrogate and the KL are the means of theirs."""
        c, M = self.config, self.config.meta_batch_size
        settings = dict(max_kl=c.max_kl, cg_iters=c.cg_iters, cg_damping=c.cg_damping,
                        backtrack_ratio=c.ls_backtrack_ratio, max_backtracks=c.ls_max_steps)
        if c.inner_steps == 1 and len(supports) == 1:
            return maml_trpo_step(self.params, self.spec, self.tasks_loss_fn, supports[0],
                                  queries[-1][1], M, inner_lr=c.inner_lr,
                                  first_order=c.first_order, **settings)
        parts = [maml_trpo_objective(self.params, self.spec, query,
                                     lambda theta, r=r: self.adapted(theta, supports[:r]))
                 for r, query in queries]
        if len(parts) == 1:
            return trpo_step(self.params, parts[0], **settings)

        def objective(theta):
            values = [part(theta) for part in parts]
            return (sum(v[0] for v in values) / len(values),
                    sum(v[1] for v in values) / len(values))
        return trpo_step(self.params, objective, **settings)

    def lr_factor(self, iteration):
        """``lr_t / lr`` at 0-based ``iteration``: ``max(0, 1 - t / lr_decay_iterations)``, or 1."""
        n = self.config.lr_decay_iterations
        return 1.0 if n == 0 else max(0.0, 1.0 - iteration / n)

    def adapt_to_new_task(self, task, rng=None, steps=1):
        """The *adapted* parameters for ``task``: ``steps`` rounds of sampling ``E`` episodes with
        the current parameters and one inner update on them."""
        rng = as_rng(rng)
        with blas_threads(self.blas_threads):
            theta = tile_values(self.params, 1)
            for _ in range(steps):
                data = tasks_trajectory_data(self._sample(theta, [task], rng), 1,
                                             self.config.gamma, self.config.estimator)
                theta = self._adapt(theta, data)
        return tree_map(lambda p: p[0], theta)

    def evaluate(self, tasks, rng=None, steps=3, per_task=False, later_inner_lr=None,
                 episodes=None, diagnostics=False, callback=None):
        """``returns_by_step[k]``: mean return over ``tasks`` (and their episodes) after ``k``
        inner steps, each step on fresh episodes of the previous parameters, ``k = 0..steps``;
        all tasks at once.  ``per_task=True`` returns the ``(steps + 1, len(tasks))`` array of
        per-task means instead.  Every step uses the config's ``inner_lr``, or, from the second
        step on, ``later_inner_lr`` when it is given; ``episodes`` per step (default the config's
        ``episodes_per_task``).  ``diagnostics=True`` also returns a dict of per-task arrays:
        ``step_norm (steps, M)`` (``|θ_{k+1} − θ_k|``), ``std (steps + 1, M)`` (the policy's
        mean standard deviation, Gaussian policies) and ``returns (steps + 1, M)``.
        ``callback(k)`` (optional) is called once the returns after ``k`` steps are measured."""
        rng = as_rng(rng)
        if later_inner_lr is not None:
            check_scalar("later_inner_lr", later_inner_lr, low=0.0)
        M, c = len(tasks), self.config
        out, norms, stds = onp.zeros((steps + 1, M)), onp.zeros((steps, M)), []
        with blas_threads(self.blas_threads):
            theta = tile_values(self.params, M)
            for k in range(steps + 1):
                traj = self._sample(theta, tasks, rng, episodes)
                out[k] = _returns(traj, M)
                if callback is not None:
                    callback(k)
                if not self.spec.discrete:
                    stds.append(onp.exp(theta["log_std"]).mean(axis=1))
                if k < steps:
                    data = tasks_trajectory_data(traj, M, c.gamma, c.estimator)
                    lr = c.inner_lr if k == 0 or later_inner_lr is None else later_inner_lr
                    new = self._adapt(theta, data, inner_lr=lr)
                    norms[k] = onp.sqrt(sum(onp.sum(onp.reshape(a - b, (M, -1)) ** 2, axis=1)
                                            for a, b in zip(tree_leaves(new), tree_leaves(theta))))
                    theta = new
        result = out if per_task else [float(v) for v in out.mean(axis=1)]
        if not diagnostics:
            return result
        return result, {"returns": out, "step_norm": norms,
                        "std": onp.array(stds) if stds else None}

    # ----------------------------------------------------------------------------- checkpoint
    def checkpoint_header(self):
        return {"spec": json.loads(self.spec.to_json())}

    @classmethod
    def checkpoint_shapes(cls, meta):
        return param_shapes(spec_from_json(json.dumps(meta["spec"])))

    @classmethod
    def restore_arguments(cls, meta):
        return {"spec": spec_from_json(json.dumps(meta["spec"])),
                "config": MetaMAMLConfig(**meta["config"])}
