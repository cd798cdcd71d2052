"""``python -m ssmref train`` and ``python -m ssmref evaluate``: the main job.

``train --env ENV --out RUN_DIR`` meta-trains with second-order MAML and writes ``RUN_DIR``:

============================  =====================================================================
``config.json``               everything needed to rerun: env, seed, iterations, family, policy and
                              MAML settings, ssmref version (written once, atomically)
``metrics.jsonl``             one JSON object per meta-iteration (``iteration``, losses, returns,
                              ``grad_norm``, ``seconds``)
``checkpoint.npz``            the trainer (parameters, Adam state, iteration; atomic, no pickle;
                              :class:`ssmref.metarl.trainer.MetaTrainer`), every
                              ``--checkpoint-every`` iterations and at the end
``params.npz``                the final meta-parameters (dotted names, :func:`ssmref.storage.save_npz`)
``policy.npz``                the SSM policy, loadable with :meth:`SSMMetaPolicy.load`
``evaluation.json``           the evaluation at the end of ``train``
``evaluation_finn.json``      navigation2d: the same with ``--protocol finn``
``evaluation_*.json``         ``evaluate``'s results, named by their settings (or ``--out-name``)
``*.png``                     the pictures (:mod:`ssmref.metarl.plots`), with matplotlib
``run.lock``                  the write lock: one ``train``/``evaluate`` writes a run at a time
                              (:mod:`ssmref.metarl.runlock`; holder's pid, command, start time)
============================  =====================================================================

Ctrl-C keeps every finished meta-iteration in the checkpoint and exits 130 with one line
(:mod:`ssmref.metarl.interrupt`).

Meta-iteration ``i`` draws from ``numpy.random.default_rng([seed, i])``, so a run resumed from a
checkpoint (``--resume``) continues exactly as the uninterrupted run would have.

``--resume`` continues a run with its stored settings; a setting given on the command line that
differs from the stored one is refused (only ``--iterations`` may change).  ``--blas-threads``
(default 1) limits the BLAS threads of the hot loops (:mod:`ssmref.metarl.threads`).

``evaluate RUN_DIR`` (:mod:`ssmref.metarl.evaluation`) loads the checkpoint, draws ``--tasks`` (40)
held-out tasks from a fixed seed that is independent of the training seed, and reports the mean
over tasks after ``0..--steps`` (3) inner gradient steps, each step on fresh data:
``returns_by_step`` for the RL envs (``navigation2d``, ``bandit``), ``mse_by_step`` for
``sinusoid``; ``--protocol finn`` is Finn et al.'s.

The configuration and the trainer it builds: :mod:`ssmref.metarl.run_config`; the files:
:mod:`ssmref.metarl.rundir`; the table and the plot: :mod:`ssmref.metarl.report`.
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as onp

from ssmref.metarl.evaluation import (EVAL_SEED, FINN_NAVIGATION, MAX_EVAL_STEPS,  # noqa: F401
                                      PROTOCOLS, add_blas_threads_argument, add_evaluate_arguments,
                                      check_eval_batch, evaluate, finn_goals, run_evaluate)
from ssmref.metarl.option_words import in_option_words
from ssmref.metarl.interrupt import KeepFinishedIterations, TrainingInterrupted, resume_command
from ssmref.metarl.plots import draw_run
from ssmref.metarl.report import format_table, progress_line
from ssmref.metarl.rundir import (RunError, load_trainer, one_line, read_config,  # noqa: F401
                                  read_json, read_metrics, run_file, save_trainer)
from ssmref.metarl.runlock import run_lock
from ssmref.metarl.run_config import (DEFAULTS, MAX_COUNT, MAX_ITERATIONS,  # noqa: F401
                                      PRESETS, TRAINABLE_ENVS, is_rl, maml_config, make_config,
                                      new_trainer)
from ssmref.metarl.policy.kinds import POLICY_KINDS
from ssmref.metarl.maml_rl import OUTERS
from ssmref.metarl.threads import DEFAULT_BLAS_THREADS
from ssmref.checks import check_int
from ssmref.params import flatten_dict
from ssmref.storage import atomic_write, write_json


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def check_resume_settings(run_dir, stored, given):
    """``RunError`` if a setting in ``given`` (``{"seed": 3, "maml": {"inner_lr": 0.5}, ...}``,
    the options given on a ``--resume`` command line) differs from the stored run's."""
    effective = {**stored, "preset": stored.get("preset"),
                 "policy": {"kind": "ssm", **stored.get("policy", {})},
                 "maml": asdict(maml_config({**stored, "lr_decay": False}))}
    conflicts = []
    for key, value in given.items():
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in pairs:
            have = effective.get(key) if sub is None else effective.get(key, {}).get(sub)
            if isinstance(have, (list, tuple)) and isinstance(v, (list, tuple)):
                have, v = list(have), list(v)
            if have != v:
                conflicts.append(f"{key if sub is None else key + '.' + sub}: stored {have!r}, "
                                 f"given {v!r}")
    if conflicts:
        raise RunError(f"{run_dir} was trained with other settings ({'; '.join(conflicts)}); "
                       f"--resume keeps a run's settings (only --iterations may change): drop "
                       f"those options or start a new run with another --out")


def check_new_run_dir(run_dir):
    """``RunError`` unless a new run can be written to ``run_dir``: missing, or a directory
    without a run (``config.json``, ``checkpoint.npz``), below a writable directory."""
    run_dir = Path(run_dir)
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} exists and is not a directory")
    if (run_dir / "config.json").exists() or (run_dir / "checkpoint.npz").exists():
        raise RunError(f"{run_dir} already holds a run; pass --resume to continue it (also one "
                       f"stopped before its first checkpoint) or choose another --out")
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunError(f"--out {run_dir}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"--out {run_dir}: {parent} is not writable")


def final_protocols(config):
    """The protocols of the evaluation at the end of a run: both for navigation2d."""
    return PROTOCOLS if config["env"] == "navigation2d" else ("ssmref",)


def check_final_evaluation(config, evaluate_at_end, eval_tasks):
    """The evaluation at the end of the run, checked before the run starts (its sizes)."""
    if evaluate_at_end:
        for protocol in final_protocols(config):
            check_eval_batch(config, eval_tasks, protocol)


def check_finite_step(record, trainer, run_dir):
    """``RunError`` if a meta-iteration produced non-finite metrics or parameters: the run stops,
    and its last checkpoint (all finite) is kept."""
    values = [v for v in record.values() if isinstance(v, float)]
    if all(math.isfinite(v) for v in values) and all(
            onp.all(onp.isfinite(p)) for p in flatten_dict(trainer.params).values()):
        return
    raise RunError(f"{run_dir}: meta-iteration {trainer.iteration} produced non-finite values; "
                   f"the run stops, its last checkpoint is kept")


def train(config, run_dir, *, resume=False, log=print, log_every=None, evaluate_at_end=True,
          eval_tasks=40, eval_steps=3, given=None, blas_threads_limit=DEFAULT_BLAS_THREADS):
    """Run (or resume) the meta-training of ``config`` in ``run_dir``; returns the trainer.

    ``resume``: ``config`` may hold only ``iterations`` (``None``: the stored length);
    ``given``: the settings the caller asked for, refused when they differ from the stored ones
    (:func:`check_resume_settings`).  At the end, navigation2d runs are evaluated with both
    protocols (``evaluation.json``, ``evaluation_finn.json``), the others with the default.
    The run's write lock (:mod:`ssmref.metarl.runlock`) is held throughout: ``RunError`` naming
    the holder if another process writes ``run_dir``."""
    run_dir = Path(run_dir)
    if resume:
        if not run_dir.is_dir() or not os.path.lexists(run_dir / "config.json"):
            raise RunError(f"{run_dir} holds no run (no config.json): nothing to resume")
        command = "train --resume"
    else:
        check_final_evaluation(config, evaluate_at_end, eval_tasks)
        check_new_run_dir(run_dir)                   # before anything is created
        run_dir.mkdir(parents=True, exist_ok=True)
        command = "train"
    with run_lock(run_dir, command):                 # one writer at a time (ssmref.metarl.runlock)
        config, trainer, history = (
            _resume(run_dir, config, given, log, evaluate_at_end, eval_tasks) if resume
            else _start(run_dir, config, log))
        return _run(run_dir, config, trainer, history, log, log_every, evaluate_at_end,
                    eval_tasks, eval_steps, blas_threads_limit)


def _start(run_dir, config, log):
    # a new run: (config, trainer, metrics so far)
    # under the lock, the directory is checked again: a run started at the same moment won it
    check_new_run_dir(run_dir)
    write_json(run_dir / "config.json", config)
    log(f"training {config['env']} for {config['iterations']} meta-iterations "
        f"(seed {config['seed']}) -> {run_dir}")
    return config, new_trainer(config), []


def _resume(run_dir, config, given, log, evaluate_at_end, eval_tasks):
    # the stored run, checked against the options given: (config, trainer, metrics so far)
    stored = read_config(run_dir)
    check_resume_settings(run_dir, stored, given or {})
    check_final_evaluation(stored, evaluate_at_end, eval_tasks)
    extend = config.get("iterations") is not None and config["iterations"] != stored["iterations"]
    if extend:
        stored["iterations"] = check_int("iterations", config["iterations"], minimum=1,
                                         maximum=MAX_ITERATIONS)
    config = stored
    if os.path.lexists(run_file(run_dir, "checkpoint.npz")):
        trainer = load_trainer(run_dir, config)
    else:                        # killed before its first checkpoint: start it again, exactly
        trainer = new_trainer(config)
    if trainer.iteration > config["iterations"]:
        raise RunError(f"{run_dir} is at iteration {trainer.iteration}; --iterations "
                       f"{config['iterations']} would go back")
    history = read_metrics(run_file(run_dir, "metrics.jsonl"), trainer.iteration)
    if extend:                                   # only once everything has loaded
        write_json(run_dir / "config.json", config)
    log(f"resuming {run_dir} at iteration {trainer.iteration}/{config['iterations']}")
    return config, trainer, history


def _run(run_dir, config, trainer, history, log, log_every, evaluate_at_end, eval_tasks,
         eval_steps, blas_threads_limit):
    # the meta-iterations, checkpoints and final evaluation of a started or resumed run
    trainer.blas_threads = blas_threads_limit
    # rewrite the metrics up to the checkpoint (drops records of iterations that were lost)
    text = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in history)
    atomic_write(run_dir / "metrics.jsonl", lambda f: f.write(text.encode("utf-8")))
    total = config["iterations"]
    log_every = log_every or max(1, total // 50)
    rate = None
    with open(run_dir / "metrics.jsonl", "a") as metrics, \
            KeepFinishedIterations(trainer, run_dir, total, save_trainer) as guard:
        while trainer.iteration < total:
            t0 = time.perf_counter()
            guard.mark()                         # Ctrl-C goes back to here (interrupt.py)
            rec = trainer.meta_step(onp.random.default_rng([config["seed"], trainer.iteration]))
            rec["seconds"] = time.perf_counter() - t0
            rate = rec["seconds"] if rate is None else 0.9 * rate + 0.1 * rec["seconds"]
            check_finite_step(rec, trainer, run_dir)
            metrics.write(json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
            metrics.flush()
            if trainer.iteration % config["checkpoint_every"] == 0 or trainer.iteration == total:
                save_trainer(run_dir, trainer)
            if trainer.iteration % log_every == 0 or trainer.iteration == total:
                log(progress_line(rec, total, rate))
    if not (run_dir / "checkpoint.npz").exists():
        save_trainer(run_dir, trainer)
    if evaluate_at_end:
        for protocol in final_protocols(config):
            result = evaluate(run_dir, tasks=eval_tasks, steps=eval_steps, protocol=protocol,
                              log=log, plot=False, blas_threads_limit=blas_threads_limit)
            log(format_table(result))
        draw_run(run_dir, log=log)                 # the pictures (ssmref.metarl.plots)
    return trainer


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _hidden(text):
    try:
        return [int(h) for h in text.split(",") if h]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden sizes must be ints separated by commas (e.g. "
                                         f"64,64), got {text!r}") from None


def _per_env(key):
    """``"navigation2d 300, bandit 150, sinusoid 10000"``: a default of every env, for --help."""
    return ", ".join(f"{env} {DEFAULTS[env][key]}" for env in TRAINABLE_ENVS)


def add_train_arguments(p):
    p.add_argument("--env", choices=TRAINABLE_ENVS, default=None,
                   help="task family (default navigation2d, or the preset's)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="a measured configuration (docs/train.md): finn2017 = Finn et al.'s MLP "
                        "policy with the TRPO outer step; ssm2step = the SSM policy "
                        "meta-trained through two inner steps (alpha then alpha/2; the "
                        "navigation default trains through three); ssm1step = the SSM policy "
                        "meta-trained for one inner step of alpha 0.1; default: none, the env's "
                        "defaults")
    p.add_argument("--out", default=None, help="run directory (default: runs/ENV or runs/PRESET)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"meta-iterations (default: {_per_env('iterations')}, or the "
                        "preset's; with --resume: the stored run's)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="write checkpoint.npz every N meta-iterations (default 25)")
    p.add_argument("--policy", choices=POLICY_KINDS, default=None,
                   help="RL: 'ssm' (default) or 'mlp' (Finn et al.'s Gaussian MLP on the "
                        "observation, ReLU, --hidden 100,100 by default)")
    p.add_argument("--outer", choices=OUTERS, default=None,
                   help="RL outer optimiser: 'adam' (default) or 'trpo' (Finn et al.)")
    p.add_argument("--max-kl", type=float, default=None,
                   help="TRPO trust region (default 0.01)")
    p.add_argument("--adapt-rounds", type=int, default=None,
                   help="RL: sampled inner steps in meta-training, each on fresh episodes of "
                        "the policy adapted so far (default: navigation2d 3, bandit 1)")
    p.add_argument("--later-lr-scale", type=float, default=None,
                   help="RL: rounds after the first step with alpha times this (default: "
                        "navigation2d 0.5, Finn et al.'s evaluation; bandit 1)")
    p.add_argument("--loss-rounds", type=int, default=None,
                   help="RL: the meta-objective averages the post-update losses (TRPO: the "
                        "surrogates and the KLs) of the last this many rounds (default: "
                        "navigation2d 2, after the second and the third step; bandit 1)")
    p.add_argument("--meta-batch-size", type=int, default=None,
                   help="tasks per meta-iteration (default 20; sinusoid 25; finn2017 40)")
    p.add_argument("--episodes-per-task", type=int, default=None,
                   help="RL: episodes per task and inner step (default 20)")
    p.add_argument("--inner-lr", type=float, default=None,
                   help="inner step size alpha (default: navigation2d 0.5, bandit 0.5, "
                        "sinusoid 0.01; ssm1step 0.1)")
    p.add_argument("--outer-lr", type=float, default=None,
                   help="Adam learning rate of the meta-parameters (default: navigation2d "
                        "3e-3, bandit 1e-2, sinusoid 1e-3)")
    p.add_argument("--first-order", action="store_true",
                   help="FOMAML: the inner gradients are constants in the meta-gradient")
    p.add_argument("--estimator", choices=("reinforce", "dice"), default=None,
                   help="RL inner loss (default reinforce)")
    p.add_argument("--max-grad-norm", type=float, default=None,
                   help="RL, Adam: clip the meta-gradient's global norm (0: off; default: "
                        "navigation2d 1, bandit 0)")
    p.add_argument("--constant-lr", action="store_true",
                   help="RL: no linear decay of the outer lr (navigation2d decays by default)")
    p.add_argument("--horizon", type=int, default=None,
                   help="RL: episode length (default: navigation2d 100, bandit 10)")
    p.add_argument("--hidden", type=_hidden, default=None,
                   help="hidden sizes, e.g. 64,64 (default: navigation2d 64,64, bandit 32, "
                        "sinusoid 40,40, --policy mlp 100,100)")
    p.add_argument("--state-dim", type=int, default=None,
                   help="SSM policy: state size (default 8)")
    add_blas_threads_argument(p)
    p.add_argument("--eval-tasks", type=int, default=40,
                   help="held-out tasks of the evaluation at the end")
    p.add_argument("--eval-steps", type=int, default=3,
                   help="inner steps of the evaluation at the end")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the evaluation and the pictures at the end (python -m ssmref "
                        "evaluate and plot make them later)")


def given_settings(args):
    """The settings the command line gives explicitly: ``{"seed": ..., "family": {...},
    "policy": {...}, "maml": {...}, ...}`` (what a fresh run applies over the defaults, and what
    ``--resume`` checks against the stored run)."""
    maml, family, policy, top = {}, {}, {}, {}
    for name in ("meta_batch_size", "episodes_per_task", "inner_lr", "outer_lr", "estimator",
                 "max_grad_norm", "outer", "max_kl", "adapt_rounds", "later_lr_scale",
                 "loss_rounds"):
        if getattr(args, name) is not None:
            maml[name] = getattr(args, name)
    if args.first_order:
        maml["first_order"] = True
    if args.horizon is not None:
        family["horizon"] = args.horizon
    if args.policy is not None:
        policy["kind"] = args.policy
    env = args.env or (PRESETS[args.preset]["env"] if args.preset else "navigation2d")
    if args.hidden is not None:
        (policy if is_rl(env) else maml)["hidden_sizes"] = args.hidden
    if args.state_dim is not None:
        policy["state_dim"] = policy["ssm_output_dim"] = args.state_dim
    for name in ("env", "seed", "preset", "checkpoint_every"):
        if getattr(args, name) is not None:
            top[name] = getattr(args, name)
    if args.constant_lr:
        top["lr_decay"] = False
    return {**top, **{k: v for k, v in (("family", family), ("policy", policy),
                                        ("maml", maml)) if v}}


def config_from_args(args):
    g = given_settings(args)
    if g.get("policy", {}).get("kind") == "mlp" and "state_dim" in g["policy"]:
        raise ValueError("--state-dim applies to the SSM policy, not --policy mlp")
    try:
        return make_config(g.get("env"), seed=g.get("seed", 0), iterations=args.iterations,
                           checkpoint_every=g.get("checkpoint_every", 25),
                           family=g.get("family"), policy=g.get("policy"), maml=g.get("maml"),
                           lr_decay=g.get("lr_decay"), preset=g.get("preset"))
    except ValueError as e:
        raise ValueError(in_option_words(str(e), g)) from None


def run_train(args):
    out = args.out or os.path.join("runs", args.preset or args.env or "navigation2d")
    try:
        check_int("--blas-threads", args.blas_threads, minimum=0)
        check_int("--eval-tasks", args.eval_tasks, minimum=1, maximum=MAX_COUNT)   # before any work
        check_int("--eval-steps", args.eval_steps, minimum=0, maximum=MAX_EVAL_STEPS)
        if args.iterations is not None:
            check_int("--iterations", args.iterations, minimum=1, maximum=MAX_ITERATIONS)
        if args.resume:
            config, given = {"iterations": args.iterations}, given_settings(args)
        else:
            config, given = config_from_args(args), None
        train(config, out, resume=args.resume, evaluate_at_end=not args.no_eval,
              eval_tasks=args.eval_tasks, eval_steps=args.eval_steps, given=given,
              blas_threads_limit=args.blas_threads or None)
    except (RunError, ValueError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"interrupted at iteration {e.iteration}/{e.total}, checkpoint saved; continue "
              f"with: {resume_command(out)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:            # outside a meta-iteration: the last checkpoint stands
        print(f"interrupted; {out} keeps its last checkpoint; continue with: "
              f"{resume_command(out)}", file=sys.stderr)
        return 130
    return 0
