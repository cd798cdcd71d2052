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
``policy.npz``                RL envs: the policy, loadable with :meth:`SSMMetaPolicy.load`
``evaluation.json``           written by ``evaluate`` (and at the end of ``train``)
``adaptation.png``            the adaptation curve, when matplotlib is installed
============================  =====================================================================

Meta-iteration ``i`` draws from ``numpy.random.default_rng([seed, i])``, so a run resumed from a
checkpoint (``--resume``) continues exactly as the uninterrupted run would have.

``evaluate RUN_DIR`` loads the checkpoint, draws ``--tasks`` (40) held-out tasks from a fixed seed
that is independent of the training seed, and reports the mean over tasks after ``0..--steps`` (3)
inner gradient steps, each step on fresh data: ``returns_by_step`` for the RL envs
(``navigation2d``, ``bandit``), ``mse_by_step`` for ``sinusoid``.

The configuration and the trainer it builds: :mod:`ssmref.metarl.run_config`; the table and the
plot: :mod:`ssmref.metarl.report`.
"""

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as onp

from ssmref import __version__
from ssmref.checks import check_int
from ssmref.metarl.maml_rl import MetaMAML
from ssmref.metarl.policy import SSMMetaPolicy
from ssmref.metarl.report import format_table, plot_adaptation, progress_line
from ssmref.metarl.run_config import (TRAINABLE_ENVS, build_family, is_rl, maml_config,
                                      make_config, new_trainer, trainer_class)
from ssmref.params import flatten_dict
from ssmref.storage import atomic_write, save_npz

EVAL_SEED = 20170309        # held-out tasks and their episodes (independent of --seed)

# Finn et al. 2017 (fig. 4 / table in sec. 5.3): 2-D navigation, MAML, mean return after 0/1/2 steps.
FINN_NAVIGATION = {0: -40.4, 1: -11.7, 2: -3.3}


class RunError(ValueError):
    """A run directory that cannot be used (reported as one line, exit code 2)."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def write_json(path, obj):
    """Write ``obj`` as JSON to ``path`` atomically (:func:`ssmref.storage.atomic_write`)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None


def read_metrics(path, upto):
    """The metric records of ``path`` with ``iteration <= upto`` (later ones belong to iterations
    after the last checkpoint and are dropped on resume)."""
    if not Path(path).exists():
        return []
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break                       # a line cut short by an interruption
                if rec.get("iteration", upto + 1) <= upto:
                    records.append(rec)
    return records


def load_trainer(run_dir, config):
    """The trainer of the checkpoint in ``run_dir``, with the MAML settings of ``config``."""
    path = Path(run_dir) / "checkpoint.npz"
    if config.get("env") not in TRAINABLE_ENVS:
        raise RunError(f"{Path(run_dir) / 'config.json'}: env must be one of {TRAINABLE_ENVS}, "
                       f"got {config.get('env')!r}")
    if not path.exists():
        raise RunError(f"{path} not found: nothing to resume or evaluate")
    trainer = trainer_class(config).load(path, build_family(config))
    want = maml_config(config)
    stored = asdict(trainer.config)
    if "lr_decay_iterations" in stored:          # follows the run's (possibly extended) length
        stored["lr_decay_iterations"] = want.lr_decay_iterations
    if stored != asdict(want):
        raise RunError(f"{path}: its MAML settings differ from {Path(run_dir) / 'config.json'}")
    trainer.config = want
    return trainer


def save_trainer(run_dir, trainer):
    """``checkpoint.npz``, ``params.npz`` and (RL) ``policy.npz`` of ``trainer`` in ``run_dir``."""
    run_dir = Path(run_dir)
    trainer.save(run_dir / "checkpoint.npz")
    save_npz(run_dir / "params.npz", flatten_dict(trainer.params))
    if isinstance(trainer, MetaMAML):
        SSMMetaPolicy.from_params(trainer.params, trainer.spec).save(run_dir / "policy.npz")


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def train(config, run_dir, *, resume=False, log=print, log_every=None, evaluate_at_end=True,
          eval_tasks=40, eval_steps=3):
    """Run (or resume) the meta-training of ``config`` in ``run_dir``; returns the trainer."""
    run_dir = Path(run_dir)
    if resume:
        stored = read_json(run_dir / "config.json")
        extend = config.get("iterations") is not None and config["iterations"] != stored["iterations"]
        if extend:
            stored["iterations"] = int(config["iterations"])
        config = stored
        trainer = load_trainer(run_dir, config)
        if trainer.iteration > config["iterations"]:
            raise RunError(f"{run_dir} is at iteration {trainer.iteration}; --iterations "
                           f"{config['iterations']} would go back")
        if extend:                                   # only once the checkpoint has loaded
            write_json(run_dir / "config.json", config)
        history = read_metrics(run_dir / "metrics.jsonl", trainer.iteration)
        log(f"resuming {run_dir} at iteration {trainer.iteration}/{config['iterations']}")
    else:
        if (run_dir / "config.json").exists() or (run_dir / "checkpoint.npz").exists():
            raise RunError(f"{run_dir} already holds a run; pass --resume to continue it or "
                           f"choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config)
        trainer, history = new_trainer(config), []
        log(f"training {config['env']} for {config['iterations']} meta-iterations "
            f"(seed {config['seed']}) -> {run_dir}")
    # rewrite the metrics up to the checkpoint (drops records of iterations that were lost)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
    atomic_write(run_dir / "metrics.jsonl", lambda f: f.write(text.encode("utf-8")))
    total = config["iterations"]
    log_every = log_every or max(1, total // 50)
    rate = None
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        while trainer.iteration < total:
            t0 = time.perf_counter()
            rec = trainer.meta_step(onp.random.default_rng([config["seed"], trainer.iteration]))
            rec["seconds"] = time.perf_counter() - t0
            rate = rec["seconds"] if rate is None else 0.9 * rate + 0.1 * rec["seconds"]
            metrics.write(json.dumps(rec, sort_keys=True) + "\n")
            metrics.flush()
            if trainer.iteration % config["checkpoint_every"] == 0 or trainer.iteration == total:
                save_trainer(run_dir, trainer)
            if trainer.iteration % log_every == 0 or trainer.iteration == total:
                log(progress_line(rec, total, rate))
    if not (run_dir / "checkpoint.npz").exists():
        save_trainer(run_dir, trainer)
    if evaluate_at_end:
        result = evaluate(run_dir, tasks=eval_tasks, steps=eval_steps, log=log)
        log(format_table(result))
    return trainer


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------

def evaluate(run_dir, *, tasks=40, steps=3, later_inner_lr=None, name="evaluation.json", log=print,
             plot=True):
    """Evaluate the checkpoint of ``run_dir`` on ``tasks`` held-out tasks after ``0..steps``
    inner steps; writes and returns ``evaluation.json``'s content.  RL runs: ``later_inner_lr``
    is the step size of the second and later steps (default: the run's ``inner_lr``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory")
    tasks = check_int("tasks", tasks, minimum=1)
    steps = check_int("steps", steps, minimum=0)
    if Path(name).name != name or not name.endswith(".json") or name == ".json":
        raise ValueError(f"name must be a file name ending in .json, got {name!r}")
    config = read_json(run_dir / "config.json")
    trainer = load_trainer(run_dir, config)
    held_out = trainer.family.sample_tasks(tasks, onp.random.default_rng([EVAL_SEED, 0]))
    t0 = time.perf_counter()
    extra = {}
    if later_inner_lr is not None:
        if not is_rl(config["env"]):
            raise ValueError("later_inner_lr applies to the RL envs only")
        extra["later_inner_lr"] = float(later_inner_lr)
    values = trainer.evaluate(held_out, onp.random.default_rng([EVAL_SEED, 1]), steps=steps,
                              per_task=True, **extra)                      # (steps + 1, tasks)
    alpha = trainer.config.inner_lr
    inner_lrs = [alpha if k == 0 or later_inner_lr is None else float(later_inner_lr)
                 for k in range(steps)]
    key = "returns_by_step" if is_rl(config["env"]) else "mse_by_step"
    result = {"env": config["env"], "iteration": trainer.iteration, "num_tasks": tasks,
              "steps": list(range(steps + 1)), "eval_seed": EVAL_SEED,
              "inner_lr_by_step": inner_lrs,
              key: [float(v) for v in values.mean(axis=1)],
              key.replace("_by_step", "_stderr_by_step"):
                  [float(v) for v in values.std(axis=1, ddof=1) / onp.sqrt(tasks)]
                  if tasks > 1 else [0.0] * (steps + 1),
              "seconds": time.perf_counter() - t0, "ssmref_version": __version__}
    if config["env"] == "navigation2d":
        result["reference_finn2017"] = {str(k): v for k, v in FINN_NAVIGATION.items()}
    if config["env"] == "bandit":
        result["oracle_return"] = float(onp.mean(trainer.family.oracle_return(held_out)))
    write_json(run_dir / name, result)
    if plot:
        png_name = "adaptation.png" if name == "evaluation.json" else name[:-len(".json")] + ".png"
        png = plot_adaptation(result, run_dir / png_name)
        if png:
            log(f"wrote {png}")
    log(f"wrote {run_dir / name}")
    return result


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _hidden(text):
    return [int(h) for h in text.split(",") if h]


def add_train_arguments(p):
    p.add_argument("--env", choices=TRAINABLE_ENVS, default="navigation2d", help="task family")
    p.add_argument("--out", default=None, help="run directory (default: runs/ENV)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--iterations", type=int, default=None, help="meta-iterations (env default)")
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--meta-batch-size", type=int, default=None, help="tasks per meta-iteration")
    p.add_argument("--episodes-per-task", type=int, default=None, help="RL: episodes per task")
    p.add_argument("--inner-lr", type=float, default=None)
    p.add_argument("--outer-lr", type=float, default=None)
    p.add_argument("--first-order", action="store_true", help="FOMAML")
    p.add_argument("--estimator", choices=("reinforce", "dice"), default=None,
                   help="RL inner loss (default reinforce)")
    p.add_argument("--max-grad-norm", type=float, default=None,
                   help="RL: clip the meta-gradient's global norm (0: off)")
    p.add_argument("--constant-lr", action="store_true",
                   help="RL: no linear decay of the outer lr (navigation2d decays by default)")
    p.add_argument("--horizon", type=int, default=None, help="RL: episode length")
    p.add_argument("--hidden", type=_hidden, default=None, help="hidden sizes, e.g. 64,64")
    p.add_argument("--state-dim", type=int, default=None, help="RL: SSM state size")
    p.add_argument("--eval-tasks", type=int, default=40)
    p.add_argument("--eval-steps", type=int, default=3)
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")


def config_from_args(args):
    maml, family, policy = {}, {}, {}
    for name in ("meta_batch_size", "episodes_per_task", "inner_lr", "outer_lr", "estimator",
                 "max_grad_norm"):
        if getattr(args, name) is not None:
            maml[name] = getattr(args, name)
    if args.first_order:
        maml["first_order"] = True
    if args.horizon is not None:
        family["horizon"] = args.horizon
    if args.hidden is not None:
        (policy if is_rl(args.env) else maml)["hidden_sizes"] = args.hidden
    if args.state_dim is not None:
        policy["state_dim"] = policy["ssm_output_dim"] = args.state_dim
    return make_config(args.env, seed=args.seed, iterations=args.iterations,
                       checkpoint_every=args.checkpoint_every, family=family, policy=policy,
                       maml=maml, lr_decay=False if args.constant_lr else None)


def run_train(args):
    out = args.out or os.path.join("runs", args.env)
    try:
        if args.resume:
            config = {"iterations": args.iterations}
        else:
            config = config_from_args(args)
        train(config, out, resume=args.resume, evaluate_at_end=not args.no_eval,
              eval_tasks=args.eval_tasks, eval_steps=args.eval_steps)
    except (RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def add_evaluate_arguments(p):
    p.add_argument("run_dir", help="a directory written by `python -m ssmref train`")
    p.add_argument("--tasks", type=int, default=40, help="held-out tasks (default 40)")
    p.add_argument("--steps", type=int, default=3, help="inner steps (default 3)")
    p.add_argument("--later-inner-lr", type=float, default=None,
                   help="RL: step size of the 2nd and later steps (default: the run's inner_lr)")
    p.add_argument("--out-name", default="evaluation.json",
                   help="file name in RUN_DIR for the result (default evaluation.json)")


def run_evaluate(args):
    try:
        print(format_table(evaluate(args.run_dir, tasks=args.tasks, steps=args.steps,
                                    later_inner_lr=args.later_inner_lr, name=args.out_name)))
    except (RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
