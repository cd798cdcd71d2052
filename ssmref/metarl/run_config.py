"""A training run's configuration, and the trainer it builds.

A run configuration is a JSON-serialisable dict (written to ``RUN_DIR/config.json``)::

    {"env": name, "seed": int, "iterations": int, "checkpoint_every": int, "lr_decay": bool,
     "family": {...}, "policy": {...}, "maml": {...}, "ssmref_version": str}

``family`` holds the keyword arguments of the task family (:func:`ssmref.metarl.envs.make`),
``policy`` those of :func:`ssmref.metarl.policy.policy_init` (RL envs), ``maml`` the fields of the
trainer's config (:class:`~ssmref.metarl.MetaMAMLConfig` for the RL envs,
:class:`~ssmref.metarl.MetaRegressionConfig` for ``sinusoid``).  :data:`DEFAULTS` says which
envs can be trained and with what; a config is checked once, by :func:`make_config`.
"""

from dataclasses import fields

import numpy as onp

from ssmref import __version__
from ssmref.checks import check_choice, check_int
from ssmref.metarl.envs import ENVS, make
from ssmref.metarl.fewshot import MetaRegression, MetaRegressionConfig, regression_init
from ssmref.metarl.maml_rl import MetaMAML, MetaMAMLConfig
from ssmref.metarl.policy import policy_init

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

TRAINABLE_ENVS = tuple(DEFAULTS)        # the task families of ssmref.metarl.envs that train runs


def is_rl(env):
    """True for an RL task family (it builds environments; trained with :class:`MetaMAML`), False
    for a supervised one (``sinusoid``; trained with :class:`MetaRegression`)."""
    return hasattr(ENVS[env], "make_env")


def make_config(env, *, seed=0, iterations=None, checkpoint_every=25, family=None, policy=None,
                maml=None, lr_decay=None):
    """The run configuration: per-env :data:`DEFAULTS` updated with the given dicts.

    ``lr_decay`` (RL envs): the outer learning rate decays linearly to 0 at the run's last
    iteration (``MetaMAMLConfig.lr_decay_iterations = iterations``)."""
    check_choice("env", env, TRAINABLE_ENVS)
    d = DEFAULTS[env]
    config = {"env": env, "seed": int(seed), "ssmref_version": __version__,
              "iterations": check_int("iterations", d["iterations"] if iterations is None
                                      else iterations, minimum=0),
              "checkpoint_every": check_int("checkpoint_every", checkpoint_every, minimum=1),
              "lr_decay": bool(d.get("lr_decay", False) if lr_decay is None else lr_decay),
              "family": {**d["family"], **(family or {})},
              "policy": {**d["policy"], **(policy or {})},
              "maml": {**d["maml"], **(maml or {})}}
    if config["lr_decay"] and not is_rl(env):
        raise ValueError("lr_decay applies to the RL envs only (navigation2d, bandit)")
    if "lr_decay_iterations" in config["maml"]:
        raise ValueError("set the schedule with lr_decay (it follows the run's iterations), "
                         "not maml['lr_decay_iterations']")
    build_family(config)
    maml_config(config)
    return config


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
    kwargs["hidden_sizes"] = tuple(kwargs.get("hidden_sizes", (64, 64)))
    if family.discrete:
        params, spec = policy_init(family.obs_dim, family.num_actions, discrete=True,
                                   rng=init_rng, **kwargs)
    else:
        params, spec = policy_init(family.obs_dim, family.action_dim, discrete=False,
                                   rng=init_rng, **kwargs)
    return MetaMAML(family, params, spec, mc)
