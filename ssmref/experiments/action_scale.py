"""Does test-time adaptation help a meta-trained navigation policy whose actions are rescaled?

The policy: an :class:`ssmref.metarl.policy.SSMMetaPolicy` meta-trained on :class:`ssmref.metarl.envs.Navigation2D`
by ``python -m ssmref train`` (``RUN_DIR/policy.npz``).  The shift: at test time the environment
multiplies every action by a factor ``c`` before its usual scaling and clipping
(:class:`ScaledActions`; ``c = 1`` is no shift, ``0.5`` halves the speed of in-range actions,
``-1`` mirrors them).  The policy never saw a shifted action during meta-training.

For every held-out task (goal) and every ``c``, starting from the meta-parameters, ``rounds``
rounds of: ``E`` fresh episodes with the current parameters, advantages ``A = normalize(R − b)``
(discounted returns minus the linear feature baseline, as in meta-training), one update.  The
variants (declared before any run):

- ``none``: no update (the parameters stay the meta-parameters);
- ``maml``: the update the policy was meta-trained for, one SGD step ``θ ← θ − α ∇L`` of the
  REINFORCE surrogate ``L = −mean(log π(a|o) A)`` with the run's ``α`` (:func:`ssmref.maml.adapt`);
- ``adapter``: one step of :class:`ssmref.adaptation.Adapter` on the same loss through
  :meth:`~ssmref.adaptation.MetaRLHook.policy_loss` (Adam lr 1e-2, gradient clipping, the step
  bound and the EMA-anchored trust region; :data:`ADAPTER_CONFIGS`), in an episodic context so
  that each task starts from the meta-parameters; ``adapter-lr1e-3``: the same with Adam lr 1e-3.

Reported: the mean return over tasks of the episodes of round ``k`` (``k = 0`` is the
meta-parameters), for ``k = 0..rounds``; all variants see the same task and the same seeds.
"""

import dataclasses

import numpy as onp

from ssmref import maml
from ssmref.adaptation import AdaptationConfig, MetaRLHook, create_adapter
from ssmref.metarl.envs import Navigation2D
from ssmref.metarl import surrogate_loss, trajectory_data
from ssmref.metarl.policy import SSMMetaPolicy, policy_rollout
from ssmref.rng import as_rng

ACTION_SCALES = (1.0, 0.5, -1.0)
VARIANTS = ("none", "maml", "adapter", "adapter-lr1e-3")
ADAPTER_CONFIG = AdaptationConfig(lr=1e-2, max_step_scale=0.1, grad_clip_norm=1.0,
                                  trust_region_eps=1.0, ema_decay=0.9, episodic=True)
ADAPTER_CONFIGS = {"adapter": ADAPTER_CONFIG,
                   "adapter-lr1e-3": dataclasses.replace(ADAPTER_CONFIG, lr=1e-3)}


class ScaledActions:
    """A vectorized environment whose actions are multiplied by ``scale`` before ``env.step``."""

    def __init__(self, env, scale):
        if not onp.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale!r}")
        self.env, self.scale = env, float(scale)

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, rng=None):
        return self.env.reset(rng)

    def step(self, actions):
        return self.env.step(self.scale * onp.asarray(actions, dtype=onp.float64))


def _returns(traj):
    return float(traj["rewards"].sum(axis=1).mean())


def run_task(policy, task, scale, variant, *, rounds=3, episodes=20, inner_lr=0.1, gamma=0.99,
             rng=None, adapter_config=None):
    """Mean return of each round ``0..rounds`` for one task, action scale and variant."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    rng = as_rng(rng)
    family = Navigation2D()
    make_env = lambda: ScaledActions(family.make_env([task], episodes), scale)  # noqa: E731
    loss_fn = surrogate_loss(policy.spec)
    model = SSMMetaPolicy.from_params(policy.params, policy.spec)
    adapter = create_adapter(model, adapter_config or ADAPTER_CONFIGS.get(variant, ADAPTER_CONFIG))
    hook = MetaRLHook(adapter, value_coef=0.0)
    out = []
    with adapter.context():
        for k in range(rounds + 1):
            traj = policy_rollout(model.params, model.spec, make_env(), rng)
            out.append(_returns(traj))
            if k == rounds or variant == "none":
                continue
            data = trajectory_data(traj, gamma)
            if variant == "maml":
                model.params = maml.adapt(model.params, loss_fn, data, inner_lr=inner_lr)
            else:
                batch = {"obs": data["obs"], "actions": data["actions"],
                         "rewards": data["rewards"], "mask": data["mask"],
                         "advantages": data["adv"]}
                info = adapter.adapt(hook.policy_loss, batch,
                                     fwd_fn=lambda b: model(b["obs"], b["actions"], b["rewards"]))
                if not info["updated"]:
                    raise RuntimeError(f"adapter refused a step: {info.get('reason')}")
    return out


def run(policy, *, tasks=20, rounds=3, episodes=20, scales=ACTION_SCALES, variants=VARIANTS,
        inner_lr=0.1, seed=0, log=None):
    """``{(scale, variant): (rounds + 1, tasks) array}`` of mean returns, on ``tasks`` held-out
    goals drawn from ``seed``; every (scale, variant) pair sees the same goals and seeds."""
    goals = Navigation2D().sample_tasks(tasks, onp.random.default_rng([seed, 0]))
    results = {}
    for scale in scales:
        for variant in variants:
            rows = [run_task(policy, task, scale, variant, rounds=rounds, episodes=episodes,
                             inner_lr=inner_lr, rng=onp.random.default_rng([seed, 1, j]))
                    for j, task in enumerate(goals)]
            results[(scale, variant)] = onp.array(rows).T          # (rounds + 1, tasks)
            if log:
                log(format_row(scale, variant, results[(scale, variant)]))
    return results


def format_row(scale, variant, values):
    means = values.mean(axis=1)
    errs = values.std(axis=1, ddof=1) / onp.sqrt(values.shape[1]) if values.shape[1] > 1 \
        else onp.zeros_like(means)
    cells = "  ".join(f"{m:7.2f} ± {e:4.2f}" for m, e in zip(means, errs))
    return f"{scale:>6}  {variant:<15} {cells}"


def header(rounds):
    return f"{'scale':>6}  {'variant':<15} " + "  ".join(f"{'round ' + str(k):>14}"
                                                       for k in range(rounds + 1))
