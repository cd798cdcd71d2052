"""Ctrl-C during ``python -m ssmref train``: keep every finished meta-iteration, say how to go on.

A meta-iteration replaces the trainer's ``params`` and ``opt_state`` by new objects and counts
itself at its end (:meth:`ssmref.metarl.trainer.MetaTrainer.apply_meta_gradient`), and iteration
``i`` draws from ``default_rng([seed, i])``.  So the state before a step is three references, and
a ``KeyboardInterrupt`` anywhere inside the step is undone by putting them back: the checkpoint
then written is the one the uninterrupted run had after its last finished iteration, and
``--resume`` continues bit for bit.
"""

import shlex


class TrainingInterrupted(Exception):
    """Ctrl-C stopped a run; ``iteration`` (of ``total``) is in its checkpoint."""

    def __init__(self, run_dir, iteration, total):
        super().__init__(f"interrupted at iteration {iteration}/{total}")
        self.run_dir, self.iteration, self.total = run_dir, iteration, total


def resume_command(run_dir):
    """The command that continues the run in ``run_dir``."""
    return f"python -m ssmref train --resume --out {shlex.quote(str(run_dir))}"


def interruptible_step(trainer, rng, run_dir, total, save):
    """``trainer.meta_step(rng)``; on ``KeyboardInterrupt`` the trainer is put back to its state
    before the step, ``save(run_dir, trainer)`` writes its checkpoint and
    :class:`TrainingInterrupted` is raised."""
    before = (trainer.params, trainer.opt_state, trainer.iteration)
    try:
        return trainer.meta_step(rng)
    except KeyboardInterrupt:
        trainer.params, trainer.opt_state, trainer.iteration = before
        save(run_dir, trainer)
        raise TrainingInterrupted(run_dir, trainer.iteration, total) from None
