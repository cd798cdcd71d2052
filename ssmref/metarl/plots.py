"""The pictures of a training run, drawn from its directory: ``python -m ssmref plot RUN_DIR``.

``train`` draws them at its end (when matplotlib is installed; without it, one line says so and
nothing else changes) and ``plot`` redraws them from the files of a run:

======================  ==========================================================================
``learning_curve.png``  the mean return of the meta-batch before and after adaptation (sinusoid:
                        the query MSE) at every meta-iteration, from ``metrics.jsonl``, with a
                        moving average
``adaptation.png``      the return (MSE) after ``k`` inner steps, from ``evaluation.json`` and
                        ``evaluation_finn.json``: each protocol with its step sizes and episodes,
                        Finn et al.'s 40 goals and their reported row (navigation2d), the random
                        arm and the best arm (bandit); error bars ± 1 standard error over tasks
``trajectories.png``    navigation2d: paths of the policy to four of Finn et al.'s goals before
                        adaptation and after one, two and three inner steps of Finn et al.'s
                        protocol (``α``, then ``α/2``, 40 episodes a step; 5 episodes drawn per
                        goal)
``sinusoid_fit.png``    sinusoid: Finn et al.'s figure 2: the regressor before adaptation and
                        after 1 and 10 inner steps on ``K`` support points, against the true curve
======================  ==========================================================================

The trajectories and fits are recomputed from ``checkpoint.npz`` with fixed seeds (a few seconds),
so a redraw gives the same pictures.
"""

import sys
from pathlib import Path

import numpy as onp

from ssmref import maml
from ssmref.metarl.evaluation import EVAL_SEED, FINN_EPISODES, finn_goals
from ssmref.metarl.fewshot import mse_loss
from ssmref.metarl.maml_rl import tasks_trajectory_data
from ssmref.metarl.policy.tasks import tasks_rollout, tile_values
from ssmref.metarl.report import NO_MATPLOTLIB, plot_results, pyplot, save_figure
from ssmref.metarl.rundir import RunError, load_trainer, read_config, read_json, read_metrics
from ssmref.metarl.run_config import is_rl
from ssmref.metarl.runlock import run_lock
from ssmref.metarl.threads import blas_threads
from ssmref.nn import mlp_apply
from ssmref.params import stop_gradient

PICTURES = ("learning_curve.png", "adaptation.png", "trajectories.png", "sinusoid_fit.png")


def moving_average(values, window):
    """``(n,)``: the mean of the last ``window`` values at each index (fewer at the start)."""
    values = onp.asarray(values, dtype=float)
    c = onp.concatenate([[0.0], onp.cumsum(values)])
    idx = onp.arange(1, len(values) + 1)
    lo = onp.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_learning_curve(records, env, path, inner_lrs=None):
    """Before/after-adaptation values of every meta-iteration (``metrics.jsonl`` records);
    ``inner_lrs``: the step sizes of the run's adaptation rounds (RL), named in the legend."""
    plt = pyplot()
    it = [r["iteration"] for r in records]
    rl = "pre_return" in records[0]
    pre, post = ("pre_return", "post_return") if rl else ("pre_loss", "post_loss")
    window = max(1, len(records) // 25)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    after = "after adaptation"
    if inner_lrs:
        n = len(inner_lrs)
        after += f" ({n} step{'s' if n > 1 else ''}: α {', '.join(f'{a:g}' for a in inner_lrs)})"
    for key, color, what in ((pre, "C0", "before adaptation"), (post, "C1", after)):
        values = [r[key] for r in records]
        ax.plot(it, values, color=color, alpha=0.25, lw=0.8)
        ax.plot(it, moving_average(values, window), color=color, lw=2,
                label=f"{what} (moving average of {window})")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean return of the meta-batch" if rl else "query MSE of the meta-batch")
    if not rl:
        ax.set_yscale("log")
    ax.set_title(f"{env}: learning curve (faint: every meta-iteration; thick: moving average)",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def navigation_paths(trainer, goals, steps=2, episodes=FINN_EPISODES, shown=5, seed=3):
    """``paths[k]``: ``(len(goals), shown, T, 2)`` positions of the first ``shown`` of the
    ``episodes`` episodes per goal after ``k = 0..steps`` inner steps of Finn et al.'s protocol
    (``α``, then ``α/2``), every step on fresh episodes; and the step masks ``masks[k]``
    ``(len(goals), shown, T)``."""
    rng = onp.random.default_rng([EVAL_SEED, seed])
    M, c = len(goals), trainer.config
    paths, masks = [], []
    with blas_threads(trainer.blas_threads):
        theta = tile_values(trainer.params, M)
        for k in range(steps + 1):
            env = trainer.family.make_env(goals, episodes)
            traj = tasks_rollout(theta, trainer.spec, env, rng, M)
            obs = traj["obs"].reshape(M, episodes, *traj["obs"].shape[1:])
            mask = traj["mask"].reshape(M, episodes, -1)
            paths.append(obs[:, :shown])
            masks.append(mask[:, :shown])
            if k < steps:
                data = tasks_trajectory_data(traj, M, c.gamma, c.estimator)
                lr = c.inner_lr if k == 0 else c.inner_lr / 2
                theta = stop_gradient(maml.adapt(theta, trainer.summed_loss, data, inner_lr=lr,
                                                 steps=c.inner_steps))
    return paths, masks


def plot_trajectories(trainer, path, num_goals=4):
    """``trajectories.png``: :func:`navigation_paths` to ``num_goals`` of Finn et al.'s goals."""
    plt = pyplot()
    goals = finn_goals()[:num_goals]
    paths, masks = navigation_paths(trainer, goals, steps=3)
    fig, axes = plt.subplots(1, len(paths), figsize=(4 * len(paths), 4.6), sharex=True,
                             sharey=True)
    alpha = trainer.config.inner_lr
    titles = ["before adaptation", f"after 1 step (α {alpha:g})",
              f"after 2 steps (α {alpha:g}, then {alpha / 2:g})",
              f"after 3 steps (α {alpha:g}, then {alpha / 2:g} twice)"]
    for k, ax in enumerate(axes):
        for i, goal in enumerate(goals):
            color = f"C{i}"
            for e in range(paths[k].shape[1]):
                n = int(masks[k][i, e].sum())
                ax.plot(paths[k][i, e, :n, 0], paths[k][i, e, :n, 1], color=color, alpha=0.6,
                        lw=1)
            ax.plot(*goal["goal"], marker="*", ms=14, color=color, mec="black")
        ax.plot(0, 0, "ko", ms=5)
        ax.set_title(titles[k] if k < len(titles) else f"after {k} steps", fontsize=10)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    fig.suptitle(f"navigation2d, meta-iteration {trainer.iteration}: 5 episodes to each of "
                 f"{len(goals)} of Finn et al.'s goals (stars); start at the origin; each step "
                 f"adapts on {FINN_EPISODES} episodes", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path)


def plot_sinusoid_fit(trainer, path, num_tasks=2, steps=(1, 10)):
    """``sinusoid_fit.png``: Finn et al.'s figure 2 for ``num_tasks`` held-out sinusoids."""
    plt = pyplot()
    rng = onp.random.default_rng([EVAL_SEED, 7])
    family, c = trainer.family, trainer.config
    tasks = family.sample_tasks(num_tasks, rng)
    fig, axes = plt.subplots(1, num_tasks, figsize=(5.5 * num_tasks, 4))
    for ax, task in zip(onp.atleast_1d(axes), tasks):
        support = family.sample(task, c.k_shot, rng)
        x, y = family.grid(task)
        ax.plot(x, y, "k-", lw=2, label="ground truth")
        ax.plot(x, mlp_apply(trainer.params, x, activation="relu"), "--", color="C2",
                label="pre-update (meta-parameters)")
        for n, color in zip(steps, ("C1", "C0")):
            fast = maml.adapt(trainer.params, mse_loss, support, inner_lr=c.inner_lr, steps=n)
            ax.plot(x, mlp_apply(fast, x, activation="relu"), color=color,
                    label=f"{n} grad step{'s' if n > 1 else ''} (α {c.inner_lr:g})")
        ax.plot(*support, "^", color="purple", ms=8, label=f"{c.k_shot} points used for grad")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax.set_xlabel("x")
    fig.suptitle(f"sinusoid, meta-iteration {trainer.iteration}: {c.k_shot}-shot adaptation "
                 f"on held-out tasks (Finn et al. 2017, fig. 2)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def draw_run(run_dir, log=print):
    """Draw every picture the files of ``run_dir`` allow (module docstring); returns their
    paths, or ``None`` (after logging :data:`NO_MATPLOTLIB`) when matplotlib is missing."""
    if pyplot() is None:
        log(NO_MATPLOTLIB)
        return None
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    trainer = load_trainer(run_dir, config)
    written = []
    records = read_metrics(run_dir / "metrics.jsonl", trainer.iteration)
    if records:
        lrs = trainer.round_lrs() if hasattr(trainer, "round_lrs") else None
        written.append(plot_learning_curve(records, config["env"], run_dir / PICTURES[0], lrs))
    results = [read_json(run_dir / name, what="evaluation result")
               for name in ("evaluation.json", "evaluation_finn.json") if (run_dir / name).exists()]
    if results:
        written.append(plot_results(results, run_dir / PICTURES[1]))
    if config["env"] == "navigation2d":
        written.append(plot_trajectories(trainer, run_dir / PICTURES[2]))
    elif not is_rl(config["env"]):
        written.append(plot_sinusoid_fit(trainer, run_dir / PICTURES[3]))
    for path in written:
        log(f"wrote {path}")
    return written


def run_plot(args):
    """``python -m ssmref plot RUN_DIR``: exit 0, or 2 with one line (no matplotlib, no run,
    another process writing the run)."""
    try:
        if pyplot() is None:
            raise RunError(NO_MATPLOTLIB)
        if not Path(args.run_dir).is_dir():
            raise RunError(f"{args.run_dir} is not a directory")
        with run_lock(args.run_dir, "plot"):          # one writer at a time (runlock.py)
            draw_run(args.run_dir)
    except (RunError, ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


def add_plot_arguments(p):
    p.add_argument("run_dir", help="a directory written by `python -m ssmref train`")
