"""Ctrl-C during ``python -m ssmref train``: keep every finished meta-iteration, say how to go on.

A meta-iteration replaces the trainer's ``params`` and ``opt_state`` by new objects and counts
itself at its end (:meth:`ssmref.metarl.trainer.MetaTrainer.apply_meta_gradient`), and iteration
``i`` draws from ``default_rng([seed, i])``.  So the state at the start of an iteration is three
references, and a ``KeyboardInterrupt`` anywhere in the iteration (its step, its metrics line, its
checkpoint) is undone by putting them back: the checkpoint then written is the one the
uninterrupted run had after its last finished iteration, a metrics line of the unfinished one is
dropped on resume (:func:`ssmref.metarl.rundir.read_metrics`), and ``--resume`` continues bit for
bit.
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


class KeepFinishedIterations:
    """``with KeepFinishedIterations(trainer, run_dir, total, save) as guard:`` around the loop,
    ``guard.mark()`` at the start of each iteration.  On ``KeyboardInterrupt`` the trainer goes
    back to its state at the last mark, ``save(run_dir, trainer)`` writes its checkpoint and
    :class:`TrainingInterrupted` is raised instead."""

    def __init__(self, trainer, run_dir, total, save):
        self.trainer, self.run_dir, self.total, self.save = trainer, run_dir, total, save
        self.state = None

    def mark(self):
        """Remember the trainer's state (three references, nothing copied)."""
        t = self.trainer
        self.state = (t.params, t.opt_state, t.iteration)

    def __enter__(self):
        self.mark()
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None or not issubclass(kind, KeyboardInterrupt):
            return False
        t = self.trainer
        t.params, t.opt_state, t.iteration = self.state
        self.save(self.run_dir, t)
        raise TrainingInterrupted(self.run_dir, t.iteration, self.total) from None
