"""A training run's configuration, and the trainer it builds.

A run configuration is a JSON-serialisable dict (written to ``RUN_DIR/config.json``)::

    {"env": name, "seed": int, "iterations": int, "checkpoint_every": int, "lr_decay": bool,
     "family": {...}, "policy": {...}, "maml": {...}, "preset": str | None,
     "ssmref_version": str}

``family`` holds the keyword arguments of the task family (:func:`ssmref.metarl.envs.make`),
``policy`` (RL envs) the policy's ``kind`` (``"ssm"``, the default, or ``"mlp"``; absent in runs
written before the MLP policy: ``"ssm"``) and the keyword arguments of its init function
(:func:`ssmref.metarl.policy.policy_init`, :func:`ssmref.metarl.policy.mlp.mlp_policy_init`),
``maml`` the fields of the trainer's config (:class:`~ssmref.metarl.MetaMAMLConfig` for the RL
envs, :class:`~ssmref.metarl.MetaRegressionConfig` for ``sinusoid``).  :data:`DEFAULTS` says
which envs can be trained and with what, :data:`PRESETS` names published configurations; a
config is checked once, by :func:`make_config`.
"""

from dataclasses import fields

import numpy as onp

from ssmref import __version__
from ssmref.checks import check_choice, check_int, check_scalar
from ssmref.metarl.envs import ENVS, make
from ssmref.metarl.fewshot import MetaRegression, MetaRegressionConfig, regression_init
from ssmref.metarl.maml_rl import MetaMAML, MetaMAMLConfig
from ssmref.metarl.policy.kinds import POLICY_KINDS, init_policy, policy_spec

# Per-env defaults.  navigation2d: Finn et al.'s task (20 tasks x 20 episodes x 100 steps) with
# the SSM policy meta-trained through three steps of Finn et al.'s evaluation protocol (a step of
# alpha = 0.5, then steps of alpha / 2, each on fresh episodes), the meta-objective the mean of the
# losses after the second and the third step, A initialised with spectral radius 0.7, and an Adam
# outer loop sized to finish in 10 minutes on 2 cores (docs/train.md).
_NAV_POLICY = {"state_dim": 8, "ssm_output_dim": 8, "hidden_sizes": [64, 64]}
DEFAULTS = {
    "navigation2d": {
        "iterations": 300,
        "lr_decay": True,
        "family": {"horizon": 100},
        "policy": {**_NAV_POLICY, "ssm_scale": 0.7},
        "maml": {"max_grad_norm": 1.0, "inner_lr": 0.5, "adapt_rounds": 3, "later_lr_scale": 0.5,
                 "loss_rounds": 2},
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

TRAINABLE_ENVS = tuple(DEFAULTS)        # the task families of ssmref.metarl.envs that train runs

# The defaults of a policy kind other than the env's default one (navigation2d: the SSM policy).
POLICY_DEFAULTS = {"ssm": {"state_dim": 8, "ssm_output_dim": 8, "hidden_sizes": [64, 64]},
                   "mlp": {"hidden_sizes": [100, 100], "activation": "relu"}}

# Published configurations, confirmed in cbfinn/maml_rl (maml_examples/maml_trpo_point.py):
# MAMLGaussianMLPPolicy (100, 100) ReLU, fast_learning_rate 0.5, fast_batch_size 20 trajectories,
# meta_batch_size 40, MAMLTRPO with step_size 0.01 (ConjugateGradientOptimizer defaults: 10 CG
# iterations, reg_coeff 1e-5, backtrack ratio 0.8, 15 backtracks), linear feature baseline,
# discount 0.99, max_path_length 100, n_itr 100.
PRESETS = {
    "finn2017": {
        "env": "navigation2d",
        "iterations": 100,
        "lr_decay": False,
        "family": {"horizon": 100},
        "policy": {"kind": "mlp", "hidden_sizes": [100, 100], "activation": "relu"},
        "maml": {"meta_batch_size": 40, "episodes_per_task": 20, "inner_lr": 0.5,
                 "outer": "trpo", "max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5,
                 "ls_backtrack_ratio": 0.8, "ls_max_steps": 15, "gamma": 0.99},
    },
    # The SSM policy meta-trained through Finn et al.'s two steps only (alpha = 0.5, then
    # alpha / 2; the meta-objective the loss after the second), 350 iterations.
    "ssm2step": {"env": "navigation2d", "iterations": 350,
                 "maml": {"max_grad_norm": 1.0, "inner_lr": 0.5, "adapt_rounds": 2,
                          "later_lr_scale": 0.5}},
    # The SSM policy meta-trained for one inner step of alpha = 0.1 (Finn et al.'s paper), A
    # initialised with spectral radius 0.9: one step adapts, a second does not help.  At 0.9, a
    # first inner step of size 0.5 made A unstable on some tasks (seed 1: radius 1.13, then 17
    # after the second step, a non-finite meta-gradient at the first iteration); at 0.7 it did
    # not on seeds 0-5 (docs/train.md).
    "ssm1step": {"env": "navigation2d", "iterations": 250, "policy": _NAV_POLICY,
                 "maml": {"max_grad_norm": 1.0}},
}


def is_rl(env):
    """True for an RL task family (it builds environments; trained with :class:`MetaMAML`), False
    for a supervised one (``sinusoid``; trained with :class:`MetaRegression`)."""
    return hasattr(ENVS[env], "make_env")


def make_config(env=None, *, seed=0, iterations=None, checkpoint_every=25, family=None,
                policy=None, maml=None, lr_decay=None, preset=None):
    """The run configuration: the per-env :data:`DEFAULTS` (or the :data:`PRESETS` entry
    ``preset``, which names its env) updated with the given dicts.

    ``policy["kind"]`` other than the env's default kind starts from :data:`POLICY_DEFAULTS`.
    ``lr_decay`` (RL envs): the outer learning rate decays linearly to 0 at the run's last
    iteration (``MetaMAMLConfig.lr_decay_iterations = iterations``)."""
    if preset is not None:
        check_choice("preset", preset, tuple(PRESETS))
        if env is not None and env != PRESETS[preset]["env"]:
            raise ValueError(f"preset {preset!r} is for env {PRESETS[preset]['env']!r}, "
                             f"not {env!r}")
        env = PRESETS[preset]["env"]
    env = "navigation2d" if env is None else env
    check_choice("env", env, TRAINABLE_ENVS)
    d = {**DEFAULTS[env], **(PRESETS[preset] if preset else {})}
    policy = dict(policy or {})
    if is_rl(env):
        default_kind = d["policy"].get("kind", "ssm")
        kind = check_choice("policy kind", policy.get("kind", default_kind), POLICY_KINDS)
        base = d["policy"] if kind == default_kind else POLICY_DEFAULTS[kind]
        policy = {**base, **policy, "kind": kind}
    elif policy:
        raise ValueError(f"policy settings apply to the RL envs only, not {env!r}")
    config = {"env": env, "seed": check_int("seed", seed, minimum=0),
              "ssmref_version": __version__, "preset": preset,
              "iterations": check_int("iterations", d["iterations"] if iterations is None
                                      else iterations, minimum=1, maximum=MAX_ITERATIONS),
              "checkpoint_every": check_int("checkpoint_every", checkpoint_every, minimum=1),
              "lr_decay": bool(d.get("lr_decay", False) if lr_decay is None else lr_decay),
              "family": {**d["family"], **(family or {})},
              "policy": policy,
              "maml": _maml_settings(d["maml"], maml or {})}
    if config["lr_decay"] and not is_rl(env):
        raise ValueError("lr_decay applies to the RL envs only (navigation2d, bandit)")
    if "lr_decay_iterations" in config["maml"]:
        raise ValueError("set the schedule with lr_decay (it follows the run's iterations), "
                         "not maml['lr_decay_iterations']")
    check_config(config)
    if is_rl(env):
        new_trainer(config)                 # the policy's settings, checked once by building it
    return config


def _maml_settings(defaults, given):
    """The MAML settings: ``given`` over ``defaults``; a default ``loss_rounds`` is capped at a
    given ``adapt_rounds`` (``--adapt-rounds 1`` alone trains one round on its own loss)."""
    maml = {**defaults, **given}
    rounds = given.get("adapt_rounds")
    if ("loss_rounds" in defaults and "loss_rounds" not in given and isinstance(rounds, int)
            and not isinstance(rounds, bool) and rounds >= 1):
        maml["loss_rounds"] = min(maml["loss_rounds"], rounds)
    return maml


#: The largest width or state size a policy may declare: far above any published setting, and
#: low enough that a hostile configuration cannot ask for terabytes before it is refused (the
#: total is bounded too: ``ssmref.checks.MAX_MODEL_PARAMETERS``).
MAX_POLICY_SIZE = 100_000
#: The most meta-iterations a run may ask for (Finn et al.: 100 to 70 000).
MAX_ITERATIONS = 10_000_000
#: The longest episode (Finn et al.: 100; RL^2's bandits: up to 500).
MAX_HORIZON = 10_000
#: The largest count of tasks, episodes, arms, support points, inner steps or rounds, CG or
#: line-search iterations a configuration may ask for.
MAX_COUNT = 10_000
#: The most environment steps (tasks x episodes x horizon, times the sampled rounds) or support
#: points (tasks x k_shot) one meta-iteration or one evaluation step may sample: 10⁷ (Finn et
#: al.'s navigation: 8 x 10⁴), so that a configuration cannot ask for an unbounded allocation.
MAX_BATCH_STEPS = 10_000_000


def check_config(config):
    """``ValueError`` unless ``config``'s settings build a valid run, checked without building the
    trainer (nothing is allocated): the env, the seed, the lengths, the task family's keyword
    arguments, the MAML settings, the policy's kind and sizes."""
    check_choice("env", config["env"], TRAINABLE_ENVS)
    check_int("seed", config["seed"], minimum=0)
    check_int("iterations", config["iterations"], minimum=0, maximum=MAX_ITERATIONS)
    check_int("checkpoint_every", config["checkpoint_every"], minimum=1)
    if config.get("preset") is not None:
        check_choice("preset", config["preset"], tuple(PRESETS))
    for key in ("family", "policy", "maml"):
        if not isinstance(config[key], dict):
            raise ValueError(f"{key} must be an object, got {type(config[key]).__name__}")
    for key, bound in (("horizon", MAX_HORIZON), ("num_arms", MAX_COUNT)):
        if key in config["family"]:
            check_int(f"family {key}", config["family"][key], minimum=1, maximum=bound)
    try:
        family = build_family(config)
    except TypeError as e:                  # a keyword the task family does not take
        raise ValueError(f"family settings {sorted(config['family'])} do not apply to env "
                         f"{config['env']!r} ({e})") from None
    check_batch(family, maml_config(config))
    if not is_rl(config["env"]):
        if config["policy"]:
            raise ValueError(f"policy settings apply to the RL envs only, not {config['env']!r}")
        return
    kind = check_choice("policy kind", config["policy"].get("kind", "ssm"), POLICY_KINDS)
    sizes = dict(config["policy"])
    hidden = sizes.pop("hidden_sizes", [])
    if not isinstance(hidden, (list, tuple)):
        raise ValueError(f"policy hidden_sizes must be a list, got {hidden!r}")
    for i, h in enumerate(hidden):
        check_int(f"policy hidden_sizes[{i}]", h, minimum=1, maximum=MAX_POLICY_SIZE)
    for name in ("state_dim", "ssm_output_dim"):
        if name in sizes:
            check_int(f"policy {name}", sizes[name], minimum=1, maximum=MAX_POLICY_SIZE)
    if "ssm_scale" in sizes:             # the initial spectral radius of the SSM's A
        check_scalar("policy ssm_scale", sizes["ssm_scale"], low=0.0)
    if kind == "mlp" and "state_dim" in sizes:
        raise ValueError("policy state_dim applies to the SSM policy, not the MLP policy")
    policy_spec(kind, family, **{k: v for k, v in config["policy"].items() if k != "kind"})


def check_batch(family, mc):
    """``ValueError`` if the MAML settings ``mc`` ask one meta-iteration of ``family`` for more
    than :data:`MAX_COUNT` of anything or :data:`MAX_BATCH_STEPS` steps (support points)."""
    counts = ("meta_batch_size", "episodes_per_task", "inner_steps", "adapt_rounds", "cg_iters",
              "ls_max_steps", "k_shot")
    for name in counts:
        if hasattr(mc, name):
            check_int(f"maml {name}", getattr(mc, name), minimum=1, maximum=MAX_COUNT)
    if hasattr(mc, "episodes_per_task"):
        steps = mc.meta_batch_size * mc.episodes_per_task * family.horizon * (mc.adapt_rounds + 1)
        what = "meta_batch_size x episodes_per_task x horizon x (adapt_rounds + 1)"
    else:
        steps, what = mc.meta_batch_size * mc.k_shot * 2, "meta_batch_size x k_shot x 2"
    if steps > MAX_BATCH_STEPS:
        raise ValueError(f"one meta-iteration would sample {what} = {steps:,} steps, more than "
                         f"{MAX_BATCH_STEPS:,} (MAX_BATCH_STEPS)")


def build_family(config):
    """The task family of ``config`` (:func:`ssmref.metarl.envs.make`)."""
    return make(config["env"], **config["family"])


def trainer_class(config):
    """:class:`MetaMAML` for the RL envs, :class:`MetaRegression` for ``sinusoid``."""
    return MetaMAML if is_rl(config["env"]) else MetaRegression


def maml_config(config):
    """The trainer's config; with ``lr_decay`` the schedule ends at the run's last iteration
    (so extending a run with ``--resume --iterations N`` stretches it over the new length)."""
    cls = MetaMAMLConfig if is_rl(config["env"]) else MetaRegressionConfig
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
    if not is_rl(config["env"]):
        return MetaRegression(family, regression_init(mc, init_rng), mc)
    kwargs = dict(config["policy"])
    kind = kwargs.pop("kind", "ssm")                  # runs written before the MLP policy: SSM
    if "hidden_sizes" in kwargs:
        kwargs["hidden_sizes"] = tuple(kwargs["hidden_sizes"])
    params, spec = init_policy(kind, family, init_rng, **kwargs)
    return MetaMAML(family, params, spec, mc)
