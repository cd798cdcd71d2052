"""MAML for few-shot regression (Finn et al. 2017, sec. 5.1): the sinusoid benchmark.

The model is an MLP ``f_θ`` (:func:`ssmref.nn.mlp_apply`, ReLU, linear output) and the loss the
mean squared error ``L(θ; x, y) = mean((f_θ(x) − y)²)``.  One meta-iteration, for ``M`` tasks::

    (x_s, y_s), (x_q, y_q) ~ task i            K support and K query points (K-shot)
    θ_i' = θ − α ∇L(θ; x_s, y_s)               (ssmref.maml.adapt, ``inner_steps`` times)
    g    = ∇_θ (1/M) Σ_i L(θ_i'(θ); x_q, y_q)   (ssmref.maml.meta_gradient, second order)
    θ   ← Adam(θ, g)                           (ssmref.metarl.trainer)

Defaults are Finn et al.'s (``cbfinn/maml``, ``main.py`` for ``sinusoid``): ``[1, 40, 40, 1]``
ReLU, ``M = 25``, ``K = 10``, ``α = 0.01``, one inner step, Adam ``1e-3``.  Evaluation
(:meth:`MetaRegression.evaluate`) fine-tunes on ``K`` fresh support points of each held-out task
and reports the MSE on the fixed 100-point grid ``x = linspace(−5, 5, 100)`` after ``0..steps``
steps, as the paper's figure 2 does.
"""

from dataclasses import dataclass

import autograd.numpy as np
import numpy as onp

from ssmref import maml
from ssmref.checks import check_int, check_parameter_count, check_scalar
from ssmref.metarl.threads import blas_threads
from ssmref.metarl.trainer import MetaTrainer
from ssmref.nn import mlp_apply, mlp_init
from ssmref.params import flatten_dict, global_norm
from ssmref.rng import as_rng

__all__ = ["MetaRegressionConfig", "mse_loss", "batched_mlp_apply", "batched_mse_loss",
           "regression_init", "MetaRegression"]


@dataclass(frozen=True)
class MetaRegressionConfig:
    """Hyperparameters (defaults: Finn et al.'s sinusoid regression)."""
    hidden_sizes: tuple = (40, 40)   # MLP hidden layers (ReLU)
    meta_batch_size: int = 25        # tasks per meta-iteration
    k_shot: int = 10                 # support points per task (and query points)
    inner_lr: float = 0.01           # alpha
    inner_steps: int = 1             # inner gradient steps during meta-training
    outer_lr: float = 1e-3           # Adam learning rate for theta
    first_order: bool = False        # FOMAML instead of the second-order meta-gradient

    def __post_init__(self):
        sizes = tuple(self.hidden_sizes)                 # a list when read back from JSON
        if not sizes:
            raise ValueError(f"hidden_sizes must be positive ints, got {self.hidden_sizes!r}")
        object.__setattr__(self, "hidden_sizes", tuple(
            check_int(f"hidden_sizes[{i}]", h, minimum=1) for i, h in enumerate(sizes)))
        for name in ("meta_batch_size", "k_shot", "inner_steps"):
            check_int(name, getattr(self, name), minimum=1)
        sizes = [1, *self.hidden_sizes, 1]
        check_parameter_count("the regressor", {i: (a + 1, b) for i, (a, b) in
                                                enumerate(zip(sizes[:-1], sizes[1:]))})
        for name in ("inner_lr", "outer_lr"):
            check_scalar(name, getattr(self, name), low=0.0)


def mse_loss(params, data):
    """``mean((f_θ(x) − y)²)`` over the rows of ``data = (x (k, 1), y (k, 1))``."""
    x, y = data
    return np.mean((mlp_apply(params, x, activation="relu") - y) ** 2)


def batched_mlp_apply(params, x):
    """:func:`ssmref.nn.mlp_apply` (ReLU, linear output) with a leading task axis on everything:
    leaves ``W (N, out, in)``, ``b (N, out)``, ``x (N, k, in)`` -> ``(N, k, out)``."""
    n = len(params)
    tasks = np.shape(params["layer0"]["W"])[0]
    if np.ndim(x) != 3 or np.shape(x)[0] != tasks:
        raise ValueError(f"x must have shape ({tasks}, k, in) for parameters of {tasks} tasks, "
                         f"got {np.shape(x)}")
    h = x
    for i in range(n):
        layer = params[f"layer{i}"]
        h = np.matmul(h, np.swapaxes(layer["W"], 1, 2)) + layer["b"][:, None, :]  # (N, k, out)
        if i < n - 1:
            h = np.maximum(h, 0.0)
    return h


def batched_mse_loss(params, data):
    """``(N,)``: :func:`mse_loss` of every task, parameters and data stacked on axis 0."""
    x, y = data
    return np.mean((batched_mlp_apply(params, x) - y) ** 2, axis=(1, 2))


def regression_init(config, rng=None):
    """MLP parameters ``[1, *hidden_sizes, 1]`` (:func:`ssmref.nn.mlp_init`)."""
    return mlp_init([1, *config.hidden_sizes, 1], rng=as_rng(rng))


class MetaRegression(MetaTrainer):
    """The MAML trainer for a regression task family (:class:`ssmref.metarl.envs.Sinusoid`).
    The loop, the Adam step and the checkpoint are
    :class:`ssmref.metarl.trainer.MetaTrainer`'s."""

    def __init__(self, family, params, config=None):
        super().__init__(family, params, config or MetaRegressionConfig())

    def _pairs(self, tasks, rng):
        k = self.config.k_shot
        pairs = []
        for task in tasks:
            d = self.family.support_query(task, k, k, rng)
            pairs.append(((d["x_support"], d["y_support"]), (d["x_query"], d["y_query"])))
        return pairs

    def meta_step(self, rng=None):
        """One meta-iteration (module docstring); returns its metrics.

        The meta-gradient is :func:`ssmref.maml.batched_meta_gradient` with the tasks stacked on
        a leading axis: the same value as :func:`ssmref.maml.meta_gradient` over the list of
        tasks (tested), computed as one traced computation instead of ``M``."""
        with blas_threads(self.blas_threads):
            return self._meta_step(as_rng(rng))

    def _meta_step(self, rng):
        c = self.config
        pairs = self._pairs(self.family.sample_tasks(c.meta_batch_size, rng), rng)
        stack = lambda j: tuple(onp.stack([p[j][i] for p in pairs]) for i in (0, 1))  # noqa: E731
        support, query = stack(0), stack(1)                                # (M, K, 1) each
        pre = float(onp.mean([mse_loss(self.params, q) for _, q in pairs]))
        loss, grads = maml.batched_meta_gradient(
            self.params, batched_mse_loss, support, query, num_tasks=c.meta_batch_size,
            inner_lr=c.inner_lr, steps=c.inner_steps, first_order=c.first_order)
        self.apply_meta_gradient(grads)
        return {"iteration": self.iteration, "meta_loss": float(loss), "pre_loss": pre,
                "post_loss": float(loss), "grad_norm": float(global_norm(grads))}

    def evaluate(self, tasks, rng=None, steps=3, per_task=False, callback=None):
        """``mse_by_step[k]``: mean over ``tasks`` of the grid MSE after ``k`` inner steps on
        ``k_shot`` support points drawn per task, ``k = 0..steps``.  ``per_task=True`` returns the
        ``(steps + 1, len(tasks))`` array of per-task values instead.  ``callback(j)`` (optional)
        is called once task ``j`` is done."""
        rng = as_rng(rng)
        out = onp.zeros((steps + 1, len(tasks)))
        with blas_threads(self.blas_threads):
            for j, task in enumerate(tasks):
                support = self.family.sample(task, self.config.k_shot, rng)
                grid = self.family.grid(task)
                params = self.params
                for k in range(steps + 1):
                    out[k, j] = mse_loss(params, grid)
                    if k < steps:
                        params = maml.adapt(params, mse_loss, support,
                                            inner_lr=self.config.inner_lr)
                if callback is not None:
                    callback(j)
        return out if per_task else [float(v) for v in out.mean(axis=1)]

    # ----------------------------------------------------------------------------- checkpoint
    @classmethod
    def checkpoint_shapes(cls, meta):
        template = regression_init(MetaRegressionConfig(**meta["config"]), rng=0)
        return {k: v.shape for k, v in flatten_dict(template).items()}

    @classmethod
    def restore_arguments(cls, meta):
        return {"config": MetaRegressionConfig(**meta["config"])}
