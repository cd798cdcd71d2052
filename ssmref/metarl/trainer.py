"""What every meta-trainer shares: its state, the training loop and the checkpoint.

A trainer holds the meta-parameters ``theta``, the Adam state of the outer loop and the number of
meta-iterations done.  Its subclass says what one meta-iteration is (:class:`ssmref.metarl.MetaMAML`
for RL, :class:`ssmref.metarl.MetaRegression` for few-shot regression); each ends with::

    g     = grad_theta (1/M) sum_i L(adapt(theta; support_i); query_i)     (ssmref.maml)
    theta <- theta + f_t * Adam_step(g)           (ssmref.optim.adam, lr = outer_lr; f_t = 1 unless
                                                   the trainer decays the learning rate)

The checkpoint is one ``.npz`` (:func:`ssmref.storage.save_checkpoint`: atomic, no pickle) with
the trees ``params``, ``adam_m``, ``adam_v`` and the JSON header
``{**trainer header, "config": asdict(config), "iteration": t, "adam_step": k}``.
"""

from dataclasses import asdict

from ssmref.checks import check_int
from ssmref.metarl.threads import DEFAULT_BLAS_THREADS
from ssmref.optim import adam
from ssmref.params import tree_copy, tree_map
from ssmref.rng import as_rng
from ssmref.storage import load_checkpoint, save_checkpoint

STATE_TREES = ("params", "adam_m", "adam_v")


class MetaTrainer:
    """The state, loop and persistence of a meta-trainer over ``family`` with ``config`` (a
    dataclass with at least ``outer_lr``).  Subclasses implement :meth:`meta_step` and say what
    their checkpoint header holds (:meth:`checkpoint_header`, :meth:`checkpoint_shapes`,
    :meth:`restore_arguments`).  ``blas_threads``: the BLAS threads of the hot loops
    (:func:`ssmref.metarl.threads.blas_threads`; ``None`` leaves the BLAS settings alone); an
    attribute, not part of the config, since it changes nothing beyond rounding."""

    blas_threads = DEFAULT_BLAS_THREADS

    def __init__(self, family, params, config):
        self.family, self.config = family, config
        self.params = tree_copy(params)
        self._init, self._update = adam(lr=config.outer_lr)
        self.opt_state = self._init(self.params)
        self.iteration = 0

    def meta_step(self, rng=None):
        """One meta-iteration; returns its metrics (a dict with ``"iteration"``)."""
        raise NotImplementedError

    def apply_meta_gradient(self, grads, lr_factor=1.0):
        """``theta <- theta + lr_factor * Adam_step(grads)``; counts the meta-iteration.

        A linear learning-rate schedule: the Adam step is linear in lr, so scaling the step by
        ``lr_t / lr`` is Adam run with ``lr_t`` (the moment estimates do not depend on lr).
        """
        new, self.opt_state = self._update(grads, self.opt_state, self.params)
        f = lr_factor
        self.params = new if f == 1.0 else tree_map(lambda p, q: p + f * (q - p), self.params, new)
        self.iteration += 1

    def meta_train(self, iterations, rng=None, callback=None):
        """``iterations`` meta-steps; ``callback(metrics)`` after each; returns the metrics list."""
        rng = as_rng(rng)
        history = []
        for _ in range(iterations):
            history.append(self.meta_step(rng))
            if callback is not None:
                callback(history[-1])
        return history

    # ----------------------------------------------------------------------------- checkpoint
    def checkpoint_header(self):
        """What the checkpoint stores besides config, iteration and Adam step (JSON)."""
        return {}

    @classmethod
    def checkpoint_shapes(cls, meta):
        """``{dotted name: shape}`` of the parameters, from a checkpoint header."""
        raise NotImplementedError

    @classmethod
    def restore_arguments(cls, meta):
        """The constructor's keyword arguments besides ``family`` and ``params``, from a header."""
        raise NotImplementedError

    def save(self, path):
        """Parameters, Adam state, iteration, config (and the subclass's header) in one ``.npz``
        (atomic, no pickle; :func:`ssmref.storage.save_checkpoint`)."""
        meta = {**self.checkpoint_header(), "config": asdict(self.config),
                "iteration": self.iteration, "adam_step": self.opt_state["step"]}
        save_checkpoint(path, {"params": self.params, "adam_m": self.opt_state["m"],
                               "adam_v": self.opt_state["v"]}, meta)

    @classmethod
    def load(cls, path, family):
        """A trainer from :meth:`save`, continuing where it stopped; ``ValueError`` on any
        malformed file."""
        meta, trees = load_checkpoint(path, STATE_TREES, cls.checkpoint_shapes)
        try:
            arguments = cls.restore_arguments(meta)
            iteration = check_int("iteration", meta["iteration"], minimum=0)
            adam_step = check_int("adam_step", meta["adam_step"], minimum=0)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed metadata ({e})") from None
        trainer = cls(family, trees["params"], **arguments)
        trainer.opt_state = {"step": adam_step, "m": trees["adam_m"], "v": trees["adam_v"]}
        trainer.iteration = iteration
        return trainer
