"""``python -m ssmref evaluate RUN_DIR``: the returns (or MSE) after 0..steps inner steps.

Two protocols (RL envs; ``sinusoid`` has one, Finn et al.'s grid MSE):

==============  ========================================  ======================================
protocol        ``ssmref`` (default)                      ``finn`` (Finn et al. 2017)
==============  ========================================  ======================================
episodes/step   the run's ``episodes_per_task`` (20)      40 (``batch_size=4000``, "2x" the
                                                          training batch, horizon 100)
step sizes      the run's own: ``α``, then ``s·α``        ``α``, then ``α/2`` for every later step
                (``s``: its ``later_lr_scale``, 1
                unless meta-trained with
                ``--later-lr-scale``); or ``α₁ =
                --later-inner-lr`` after the first
goals           40 held-out goals from ``EVAL_SEED``      the same 40, and (navigation2d) Finn's
                                                          40: ``np.random.seed(1);
                                                          np.random.uniform(-0.5, 0.5, (40, 2))``
==============  ========================================  ======================================

Finn's protocol is ``maml_examples/test_maml_point.py`` in cbfinn/maml_rl: ``VPG`` with
``init_learning_rate = α`` for the first step and a ``GradientDescentOptimizer`` of
``learning_rate = 0.5 α`` after it, 4000 steps per update; the paper's appendix: "halving the
learning rate after the first gradient step produced superior performance".  (The committed
script then keeps only ``goals[6]``, a debugging leftover; its 40 goals are the ones above.)

Each step is one inner update on fresh episodes of the current (adapted) parameters; the value
after ``k`` steps is the mean return of the episodes sampled with the ``k``-times adapted
parameters, averaged over episodes, then goals; standard errors are over goals.  Every goal set
draws its episodes from its own fixed seed, so a result does not depend on the other goal set.
"""

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as onp

from ssmref import __version__
from ssmref.checks import check_choice, check_flag, check_int
from ssmref.metarl.report import format_table, plot_results
from ssmref.metarl.rundir import (RUN_FILES, RunError, load_trainer, one_line, read_config,
                                  read_json)
from ssmref.metarl.run_config import (MAX_BATCH_STEPS, MAX_COUNT, build_family, is_rl,
                                      maml_config)
from ssmref.metarl.runlock import RunLocked, run_lock
from ssmref.metarl.threads import DEFAULT_BLAS_THREADS
from ssmref.progress import Progress
from ssmref.storage import write_json

EVAL_SEED = 20170309        # held-out tasks and their episodes (independent of --seed)
PROTOCOLS = ("ssmref", "finn")
TRAIN_RESULTS = ("evaluation.json", "evaluation_finn.json")     # train's, per protocol
FINN_EPISODES = 40          # test_maml_point.py: batch_size=4000 steps of horizon 100
MAX_EVAL_STEPS = 100        # inner steps an evaluation may take (Finn et al.: 3)

# Finn et al. 2017 (fig. 4 / table in sec. 5.3): 2-D navigation, MAML, mean return after 0/1/2 steps.
FINN_NAVIGATION = {0: -40.4, 1: -11.7, 2: -3.3}


def finn_goals(num_goals=40):
    """``test_maml_point.py``'s goals: ``np.random.seed(1)`` then ``np.random.uniform(-0.5, 0.5,
    size=(num_goals, 2))``, reproduced with a local ``RandomState(1)`` (no global seeding)."""
    goals = onp.random.RandomState(1).uniform(-0.5, 0.5, size=(num_goals, 2))
    return [{"goal": g.copy()} for g in goals]


def _summary(values, key):
    """``{key: means over tasks, key_stderr: standard errors}`` of ``values (steps + 1, tasks)``."""
    n = values.shape[1]
    err = values.std(axis=1, ddof=1) / onp.sqrt(n) if n > 1 else onp.zeros(values.shape[0])
    return {key: [float(v) for v in values.mean(axis=1)],
            key.replace("_by_step", "_stderr_by_step"): [float(v) for v in err]}


def _rl_goal_set(trainer, tasks, seed, steps, later_inner_lr, episodes, callback=None):
    """Returns, per-task returns and the adaptation diagnostics on one goal set."""
    values, diag = trainer.evaluate(tasks, onp.random.default_rng([EVAL_SEED, seed]), steps=steps,
                                    per_task=True, later_inner_lr=later_inner_lr,
                                    episodes=episodes, diagnostics=True, callback=callback)
    out = _summary(values, "returns_by_step")
    out["returns_per_task"] = values.round(6).tolist()                      # (steps + 1, tasks)
    out["step_norm_by_step"] = [float(v) for v in diag["step_norm"].mean(axis=1)]
    if diag["std"] is not None:
        out["policy_std_by_step"] = [float(v) for v in diag["std"].mean(axis=1)]
    return out


def check_eval_batch(config, tasks, protocol):
    """``ValueError`` if evaluating ``tasks`` tasks of the run ``config`` with ``protocol`` would
    sample more than ``MAX_BATCH_STEPS`` steps per inner step (tasks x episodes x horizon)."""
    if not is_rl(config["env"]):
        return
    episodes = FINN_EPISODES if protocol == "finn" else maml_config(config).episodes_per_task
    batch = tasks * episodes * build_family(config).horizon
    if batch > MAX_BATCH_STEPS:
        raise ValueError(f"{tasks} evaluation tasks would sample {batch:,} steps per inner step "
                         f"(tasks x episodes x horizon), more than {MAX_BATCH_STEPS:,}")


def evaluate(run_dir, *, tasks=40, steps=3, later_inner_lr=None, protocol="ssmref", name=None,
             log=print, plot=True, blas_threads_limit=DEFAULT_BLAS_THREADS, write=True,
             name_asked=None):
    """Evaluate the checkpoint of ``run_dir`` on ``tasks`` held-out tasks after ``0..steps``
    inner steps with ``protocol`` (module docstring); writes and returns the result
    (``evaluation.json``, or ``evaluation_finn.json`` for ``protocol="finn"``, unless ``name``
    says otherwise).  RL runs: ``later_inner_lr`` is the step size of the second and later
    steps (``ssmref`` protocol only; default: the run's ``inner_lr`` times its
    ``later_lr_scale``, the step sizes it was meta-trained with).  ``blas_threads_limit``:
    BLAS threads while evaluating (``None``: the BLAS settings as they are).

    Writing holds the run's write lock (:mod:`ssmref.metarl.runlock`).  If another process holds
    it (a ``train`` of this run), an explicit ``name`` is refused (``RunLocked``), and the default
    evaluation is computed and returned without writing (said through ``log``): the run's files
    stay its writer's.  ``write=False`` writes nothing (no result, no plot) and takes no lock.
    ``name_asked=False``: ``name`` is the command line's default name for these settings
    (:func:`cli_result_name`), not one the user asked for, so a locked run falls back as above
    (default: ``name is not None``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory")
    tasks = check_int("tasks", tasks, minimum=1, maximum=MAX_COUNT)
    steps = check_int("steps", steps, minimum=0, maximum=MAX_EVAL_STEPS)
    check_flag("write", write)
    check_choice("protocol", protocol, PROTOCOLS)
    explicit_name = name is not None if name_asked is None else bool(name_asked)
    name = name or ("evaluation.json" if protocol == "ssmref" else f"evaluation_{protocol}.json")
    if not isinstance(name, str) or os.path.basename(name) != name or not name.endswith(".json") \
            or name.startswith(".") or name in RUN_FILES:
        raise ValueError(f"--out-name must be a plain file name ending in .json and not one of "
                         f"the run's own files {list(RUN_FILES)}, got {name!r}")
    config = read_config(run_dir)
    check_eval_batch(config, tasks, protocol)
    with ExitStack() as stack:
        if write:
            try:
                stack.enter_context(run_lock(run_dir, "evaluate"))
            except RunLocked as e:
                if explicit_name:
                    raise
                log(f"{run_dir} is being written by another writer ({e.holder}): this "
                    f"evaluation is not written to {name}")
                write = False
        return evaluate_core(run_dir, config, tasks, steps, later_inner_lr, protocol, name, log, plot,
                         blas_threads_limit, write)


def evaluate_core(run_dir, config, tasks, steps, later_inner_lr, protocol, name, log, plot,
                  blas_threads_limit, write):
    # evaluate() once its arguments and config.json are checked (and the lock is held to write)
    trainer = load_trainer(run_dir, config)
    trainer.blas_threads = blas_threads_limit
    rl = is_rl(config["env"])
    if not rl and protocol != "ssmref":
        raise ValueError(f"--protocol {protocol} applies to the RL envs (navigation2d, bandit); "
                         f"{run_dir} is a {config['env']} run, evaluated by its grid MSE")
    if not rl and later_inner_lr is not None:
        raise ValueError(f"--later-inner-lr applies to the RL envs (navigation2d, bandit); "
                         f"{run_dir} is a {config['env']} run")
    if protocol == "finn" and later_inner_lr is not None:
        raise ValueError("--protocol finn sets the later step size (alpha / 2); "
                         "--later-inner-lr applies to --protocol ssmref")
    alpha = trainer.config.inner_lr
    if protocol == "finn":
        later_inner_lr = alpha / 2
    elif rl and later_inner_lr is None and trainer.config.later_lr_scale != 1:
        later_inner_lr = alpha * trainer.config.later_lr_scale     # the run's own schedule
    episodes = FINN_EPISODES if protocol == "finn" else None
    held_out = trainer.family.sample_tasks(tasks, onp.random.default_rng([EVAL_SEED, 0]))
    t0 = time.perf_counter()
    result = {"env": config["env"], "iteration": trainer.iteration, "num_tasks": tasks,
              "steps": list(range(steps + 1)), "eval_seed": EVAL_SEED, "protocol": protocol,
              "ssmref_version": __version__}
    if rl:
        result["inner_lr_by_step"] = [alpha if k == 0 or later_inner_lr is None
                                      else float(later_inner_lr) for k in range(steps)]
        result["episodes_per_step"] = episodes or trainer.config.episodes_per_task
        sets = 2 if protocol == "finn" and config["env"] == "navigation2d" else 1
        progress = Progress(f"evaluate ({protocol} protocol)", sets * (steps + 1))
        result.update(_rl_goal_set(trainer, held_out, 1, steps, later_inner_lr, episodes,
                                   lambda k: progress.update(k + 1)))
        if sets == 2:
            result["finn_goals"] = _rl_goal_set(trainer, finn_goals(), 2, steps, later_inner_lr,
                                                episodes, lambda k: progress.update(steps + k + 2))
    else:
        progress = Progress("evaluate", tasks)
        values = trainer.evaluate(held_out, onp.random.default_rng([EVAL_SEED, 1]), steps=steps,
                                  per_task=True, callback=lambda j: progress.update(j + 1))
        result.update(_summary(values, "mse_by_step"))
        result.update(inner_lr=alpha, k_shot=trainer.config.k_shot)        # every step's
    result["seconds"] = time.perf_counter() - t0
    if config["env"] == "navigation2d":
        result["reference_finn2017"] = {str(k): v for k, v in FINN_NAVIGATION.items()}
    if config["env"] == "bandit":
        result["oracle_return"] = float(onp.mean(trainer.family.oracle_return(held_out)))
        result["random_arm_return"] = float(trainer.family.horizon * onp.mean(    # E[p_a], a ~ U
            [t["p"] for t in held_out]))
    if not write:
        return result
    write_json(run_dir / name, result)
    if plot:                  # train's results share one picture, both protocols on it
        if name in TRAIN_RESULTS:
            png = plot_results([read_json(run_dir / n, what="evaluation result")
                                for n in TRAIN_RESULTS if (run_dir / n).exists()],
                               run_dir / "adaptation.png")
        else:
            png = plot_results([result], run_dir / (name[:-len(".json")] + ".png"))
        if png:
            log(f"wrote {png}")
    log(f"wrote {run_dir / name}")
    return result


def add_evaluate_arguments(p):
    p.add_argument("run_dir", help="a directory written by `python -m ssmref train`")
    p.add_argument("--tasks", type=int, default=40, help="held-out tasks")
    p.add_argument("--steps", type=int, default=3,
                   help="inner steps (0: the returns before adaptation only)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="ssmref",
                   help="RL: 'ssmref' (the run's episodes and step sizes: alpha, then "
                        "alpha x its later_lr_scale) or 'finn' (Finn et al.: 40 episodes per "
                        "step, alpha then alpha/2, also on Finn's goals)")
    p.add_argument("--later-inner-lr", type=float, default=None,
                   help="RL, ssmref protocol: step size of the 2nd and later steps "
                        "(default: the run's inner_lr x its later_lr_scale)")
    p.add_argument("--out-name", default=None,
                   help="file name in RUN_DIR for the result (default: evaluation.json or "
                        "evaluation_finn.json with the default --tasks and --steps, as train "
                        "writes them; with other settings a file named by them, e.g. "
                        "evaluation_ssmref_40tasks_0steps.json, so train's result stays)")
    p.add_argument("--no-write", action="store_true",
                   help="print the table only: write nothing into RUN_DIR and take no lock (a "
                        "run that another process is writing is read so anyway)")
    add_blas_threads_argument(p)


def add_blas_threads_argument(p):
    """``--blas-threads N`` of ``train`` and ``evaluate`` (0 becomes ``None``: leave them)."""
    p.add_argument("--blas-threads", type=int, default=DEFAULT_BLAS_THREADS,
                   help=f"BLAS threads in the hot loops (default {DEFAULT_BLAS_THREADS}: the "
                        f"products are small; 0 leaves the BLAS settings as they are)")


def cli_result_name(protocol, tasks, steps, later_inner_lr=None):
    """The file ``evaluate`` writes without ``--out-name``: with the default settings (40 tasks,
    3 steps) the file ``train`` writes with them, ``evaluation.json`` (``evaluation_finn.json``
    for ``--protocol finn``), the same result again; with any other settings a file named by
    them (``evaluation_ssmref_40tasks_0steps.json``), so a different result never replaces
    ``train``'s."""
    if (tasks, steps, later_inner_lr) == (40, 3, None):
        return TRAIN_RESULTS[PROTOCOLS.index(protocol)]
    later = "" if later_inner_lr is None else f"_later{later_inner_lr:g}"
    return f"evaluation_{protocol}_{tasks}tasks_{steps}steps{later}.json"


def run_evaluate(args):
    try:
        name = args.out_name or cli_result_name(args.protocol, args.tasks, args.steps,
                                                args.later_inner_lr)
        if args.steps == 0:
            print("--steps 0: no inner step; the result holds the returns (or MSE) before "
                  "adaptation only", file=sys.stderr)
        result = evaluate(args.run_dir, tasks=args.tasks, steps=args.steps,
                          later_inner_lr=args.later_inner_lr, protocol=args.protocol,
                          name=name, blas_threads_limit=args.blas_threads or None,
                          write=not args.no_write, name_asked=args.out_name is not None)
        print(format_table(result))
    except (RunError, ValueError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0
