"""``python -m ssmref train`` and ``python -m ssmref evaluate``: the main job.

``train --env ENV --out RUN_DIR`` meta-trains with second-order MAML and writes ``RUN_DIR``:

============================  =====================================================================
``config.json``               everything needed to rerun: env, seed, iterations, family, policy and
                              MAML settings, ssmref version (written once, atomically)
``metrics.jsonl``             one JSON object per meta-iteration (``iteration``, losses, returns,
                              ``grad_norm``, ``seconds``)
``checkpoint.npz``            the trainer (parameters, Adam state, iteration; atomic, no pickle),
                              every ``--checkpoint-every`` iterations and at the end
``params.npz``                the final meta-parameters (dotted names, :func:`ssmref.params.save_npz`)
``policy.npz``                RL envs: the policy, loadable with :meth:`SSMMetaPolicy.load`
``evaluation.json``           written by ``evaluate`` (and at the end of ``train``)
``adaptation.png``            the adaptation curve, when matplotlib is installed
============================  =====================================================================

Meta-iteration ``i`` draws from ``numpy.random.default_rng([seed, i])``, so a run resumed from a
checkpoint (``--resume``) continues exactly as the uninterrupted run would have.

``evaluate RUN_DIR`` loads the checkpoint, draws ``--tasks`` (40) held-out tasks from a fixed seed
that is independent of the training seed, and reports the mean over tasks after ``0..--steps`` (3)
inner gradient steps, each step on fresh data: ``returns_by_step`` for the RL envs (``navigation2d``,
``bandit``), ``mse_by_step`` for ``sinusoid``.
"""

import json
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as onp

from ssmref import __version__
from ssmref import params as P
from ssmref.metarl.envs import Bandit, Navigation2D, Sinusoid
from ssmref.metarl.fewshot import MetaRegression, MetaRegressionConfig, regression_init
from ssmref.metarl import MetaMAML, MetaMAMLConfig
from ssmref.metarl.policy import SSMMetaPolicy, policy_init

ENVS = ("navigation2d", "bandit", "sinusoid")
EVAL_SEED = 20170309        # held-out tasks and their episodes (independent of --seed)

# Finn et al. 2017 (fig. 4 / table in sec. 5.3): 2-D navigation, MAML, mean return after 0/1/2 steps.
FINN_NAVIGATION = {0: -40.4, 1: -11.7, 2: -3.3}

# Per-env defaults.  navigation2d: Finn et al.'s setting (20 tasks x 20 episodes x 100 steps,
# alpha = 0.1, one inner step) with an Adam outer loop sized to finish in 10 minutes on 2 cores.
DEFAULTS = {
    "navigation2d": {
        "iterations": 250,
        "lr_decay": True,
        "family": {"horizon": 100},
        "policy": {"state_dim": 8, "ssm_output_dim": 8, "hidden_sizes": [64, 64]},
        "maml": {"max_grad_norm": 1.0},
    },
    "bandit": {
        "iterations": 150,
        "family": {"num_arms": 5, "horizon": 10},
        "policy": {"state_dim": 8, "ssm_output_dim": 8, "hidden_sizes": [32],
                   "use_prev_action_reward": True},
        "maml": {"inner_lr": 0.5, "outer_lr": 1e-2},
    },
    "sinusoid": {
        "iterations": 10000,
        "family": {},
        "policy": {},
        "maml": {},
    },
}


class RunError(ValueError):
    """A run directory that cannot be used (reported as one line, exit code 2)."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def write_json(path, obj):
    """Write ``obj`` as JSON to ``path`` atomically (:func:`ssmref.params.atomic_write`)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    P.atomic_write(path, lambda f: f.write(text.encode("utf-8")))


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


# ---------------------------------------------------------------------------------------------
# Building a trainer from a run configuration
# ---------------------------------------------------------------------------------------------

def make_config(env, *, seed=0, iterations=None, checkpoint_every=25, family=None, policy=None,
                maml=None, lr_decay=None):
    """The run configuration: per-env :data:`DEFAULTS` updated with the given dicts.

    ``lr_decay`` (RL envs): the outer learning rate decays linearly to 0 at the run's last
    iteration (``MetaMAMLConfig.lr_decay_iterations = iterations``)."""
    if env not in ENVS:
        raise ValueError(f"env must be one of {ENVS}, got {env!r}")
    d = DEFAULTS[env]
    config = {"env": env, "seed": int(seed), "ssmref_version": __version__,
              "iterations": int(d["iterations"] if iterations is None else iterations),
              "checkpoint_every": int(checkpoint_every),
              "lr_decay": bool(d.get("lr_decay", False) if lr_decay is None else lr_decay),
              "family": {**d["family"], **(family or {})},
              "policy": {**d["policy"], **(policy or {})},
              "maml": {**d["maml"], **(maml or {})}}
    if config["lr_decay"] and env == "sinusoid":
        raise ValueError("lr_decay applies to the RL envs only (navigation2d, bandit)")
    if "lr_decay_iterations" in config["maml"]:
        raise ValueError("set the schedule with lr_decay (it follows the run's iterations), "
                         "not maml['lr_decay_iterations']")
    if config["iterations"] < 0 or config["checkpoint_every"] < 1:
        raise ValueError(f"iterations must be >= 0 and checkpoint_every >= 1, got "
                         f"{config['iterations']} and {config['checkpoint_every']}")
    build_family(config)
    maml_config(config)
    return config


def build_family(config):
    cls = {"navigation2d": Navigation2D, "bandit": Bandit, "sinusoid": Sinusoid}[config["env"]]
    return cls(**config["family"])


def maml_config(config):
    """The trainer's config; with ``lr_decay`` the schedule ends at the run's last iteration
    (so extending a run with ``--resume --iterations N`` stretches it over the new length)."""
    cls = MetaRegressionConfig if config["env"] == "sinusoid" else MetaMAMLConfig
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(config["maml"]) - known)
    if unknown:
        raise ValueError(f"unknown MAML settings {unknown} for env {config['env']!r}; "
                         f"known: {sorted(known)}")
    if config.get("lr_decay"):
        return cls(**{**config["maml"], "lr_decay_iterations": int(config["iterations"])})
    return cls(**config["maml"])


def new_trainer(config):
    """A freshly initialised trainer for ``config`` (parameters drawn from ``seed``)."""
    family, mc = build_family(config), maml_config(config)
    init_rng = onp.random.default_rng([config["seed"], 2 ** 32 - 1])
    if config["env"] == "sinusoid":
        return MetaRegression(family, regression_init(mc, init_rng), mc)
    kwargs = dict(config["policy"])
    kwargs["hidden_sizes"] = tuple(kwargs.get("hidden_sizes", (64, 64)))
    if family.discrete:
        params, spec = policy_init(family.obs_dim, family.num_actions, discrete=True,
                                   rng=init_rng, **kwargs)
    else:
        params, spec = policy_init(family.obs_dim, family.action_dim, discrete=False,
                                   rng=init_rng, **kwargs)
    return MetaMAML(family, params, spec, mc)


def load_trainer(run_dir, config):
    path = Path(run_dir) / "checkpoint.npz"
    if not path.exists():
        raise RunError(f"{path} not found: nothing to resume or evaluate")
    cls = MetaRegression if config["env"] == "sinusoid" else MetaMAML
    trainer = cls.load(path, build_family(config))
    want = maml_config(config)
    stored = asdict(trainer.config)
    if "lr_decay_iterations" in stored:          # follows the run's (possibly extended) length
        stored["lr_decay_iterations"] = want.lr_decay_iterations
    if stored != asdict(want):
        raise RunError(f"{path}: its MAML settings differ from {Path(run_dir) / 'config.json'}")
    trainer.config = want
    return trainer


def save_trainer(run_dir, trainer):
    run_dir = Path(run_dir)
    trainer.save(run_dir / "checkpoint.npz")
    P.save_npz(run_dir / "params.npz", P.flatten_dict(trainer.params))
    if isinstance(trainer, MetaMAML):
        SSMMetaPolicy.from_params(trainer.params, trainer.spec).save(run_dir / "policy.npz")


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def _progress(rec, total, rate, env):
    if env == "sinusoid":
        body = f"query mse before {rec['pre_loss']:8.3f}  after {rec['post_loss']:8.3f}"
    else:
        body = f"return before {rec['pre_return']:8.2f}  after {rec['post_return']:8.2f}"
    eta = (total - rec["iteration"]) * rate
    return (f"iter {rec['iteration']:5d}/{total}  {body}  |g| {rec['grad_norm']:.3g}  "
            f"{rate:.2f} s/it  eta {eta / 60:.1f} min")


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
    P.atomic_write(run_dir / "metrics.jsonl", lambda f: f.write(text.encode("utf-8")))
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
                log(_progress(rec, total, rate, config["env"]))
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
    if tasks < 1 or steps < 0:
        raise ValueError(f"tasks must be >= 1 and steps >= 0, got {tasks} and {steps}")
    if Path(name).name != name or not name.endswith(".json") or name == ".json":
        raise ValueError(f"name must be a file name ending in .json, got {name!r}")
    config = read_json(run_dir / "config.json")
    trainer = load_trainer(run_dir, config)
    held_out = trainer.family.sample_tasks(tasks, onp.random.default_rng([EVAL_SEED, 0]))
    t0 = time.perf_counter()
    extra = {}
    if later_inner_lr is not None:
        if config["env"] == "sinusoid":
            raise ValueError("later_inner_lr applies to the RL envs only")
        extra["later_inner_lr"] = float(later_inner_lr)
    values = trainer.evaluate(held_out, onp.random.default_rng([EVAL_SEED, 1]), steps=steps,
                              per_task=True, **extra)                      # (steps + 1, tasks)
    alpha = trainer.config.inner_lr
    inner_lrs = [alpha if k == 0 or later_inner_lr is None else float(later_inner_lr)
                 for k in range(steps)]
    key = "mse_by_step" if config["env"] == "sinusoid" else "returns_by_step"
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


def format_table(result):
    """The before/after-adaptation table of an evaluation result."""
    key = "mse_by_step" if "mse_by_step" in result else "returns_by_step"
    err = result[key.replace("_by_step", "_stderr_by_step")]
    what = "grid MSE" if key == "mse_by_step" else "return"
    ref = result.get("reference_finn2017")
    head = f"{'steps':>5}  {what + ' (mean ± s.e.)':>24}"
    if ref:
        head += f"  {'Finn et al. 2017':>16}"
    lines = [f"{result['env']}: {result['num_tasks']} held-out tasks, iteration "
             f"{result['iteration']}", head]
    for k, (v, e) in enumerate(zip(result[key], err)):
        line = f"{k:>5}  {v:>14.3f} ± {e:<7.3f}"
        if ref:
            line += f"  {ref[str(k)] if str(k) in ref else '':>16}"
        lines.append(line)
    if "oracle_return" in result:
        lines.append(f"best-arm oracle: {result['oracle_return']:.3f}")
    return "\n".join(lines)


def plot_adaptation(result, path):
    """The adaptation curve as a PNG (``None`` when matplotlib is not installed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    key = "mse_by_step" if "mse_by_step" in result else "returns_by_step"
    err = result[key.replace("_by_step", "_stderr_by_step")]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.errorbar(result["steps"], result[key], yerr=err, marker="o", capsize=3, label="ssmref")
    ref = result.get("reference_finn2017")
    if ref:
        ks = sorted(int(k) for k in ref)
        ax.plot(ks, [ref[str(k)] for k in ks], "s--", color="gray", label="Finn et al. 2017")
    ax.set_xlabel("inner gradient steps")
    ax.set_ylabel("grid MSE" if key == "mse_by_step" else "mean return")
    ax.set_title(f"{result['env']}: {result['num_tasks']} held-out tasks")
    ax.set_xticks(result["steps"])
    ax.legend()
    fig.tight_layout()
    try:
        P.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _hidden(text):
    return [int(h) for h in text.split(",") if h]


def add_train_arguments(p):
    p.add_argument("--env", choices=ENVS, default="navigation2d", help="task family")
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
        (maml if args.env == "sinusoid" else policy)["hidden_sizes"] = args.hidden
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
