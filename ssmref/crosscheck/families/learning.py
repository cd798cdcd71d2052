"""The SSM policy, MAML and the test-time adapter in the kit.

- ``policy``: the SSM meta-RL policy's head outputs, value, log-probability (summed over action
  dims) and its gradient, on whole episodes (``ssmref.metarl`` policy, sequence form, scan mode);
- ``maml``: fast weights after ``steps`` inner steps ``θ ← θ − α ∇L(θ; support)``, the meta-loss,
  and the second- and first-order meta-gradients (Meta-SGD: also w.r.t. the per-parameter rates);
- ``adapter``: the parameter trajectory of ``Adapter.adapt`` over batches (clip, Adam, step bound,
  trust region, EMA anchor; tent's entropy term).

Effective length: the policy's SSM, ``min(T, 1 / (1 − ρ(A)))``; 1 for the others.  There is no
naive baseline for these kinds: baseline mode uses the table.
"""

import dataclasses
import json
import types

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref import ssm
from ssmref.adaptation import AdaptationConfig, create_adapter
from ssmref.crosscheck.kinds import Case, Kind, memory_length, params_in, prefixed
from ssmref.maml import adapt, meta_gradient
from ssmref.nn import categorical_log_prob, mlp_apply, mlp_init
from ssmref.params import flatten_dict, tree_copy, tree_map, unflatten_dict
from ssmref.metarl.policy import PolicySpec, log_prob, policy_init, policy_sequence


# ---------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------

def _build_policy(discrete):
    def build(rng):
        obs_dim, action_dim = (1, 5) if discrete else (2, 2)
        params, spec = policy_init(obs_dim, action_dim, discrete=discrete, state_dim=8,
                                   ssm_output_dim=8, hidden_sizes=(32, 32),
                                   use_prev_action_reward=True, init_log_std=-0.5,
                                   ssm_scale=0.9, mode="scan", rng=rng)
        flat = flatten_dict(params)
        for name in sorted(flat):                  # trained nets do not have zero biases
            if name.endswith(".b"):
                flat[name] = 0.1 * rng.standard_normal(flat[name].shape)
        N, T = 4, 50
        obs = rng.standard_normal((N, T, obs_dim))
        if discrete:                               # a K-armed bandit: Bernoulli rewards
            actions = rng.integers(0, action_dim, (N, T)).astype(onp.int64)
            rewards = (rng.random((N, T)) < 0.5).astype(onp.float64)
        else:                                      # a point robot: actions ~ N(mean, 0.6^2)
            actions = 0.6 * rng.standard_normal((N, T, action_dim))
            rewards = -onp.abs(rng.standard_normal((N, T)))
        inputs = prefixed("params.", unflatten_dict(flat))
        inputs.update(obs=obs, actions=actions, rewards=rewards)
        return inputs, {"spec": json.loads(spec.to_json())}
    return build


def _compute_policy(x, attrs):
    spec = PolicySpec.from_json(json.dumps(attrs["spec"]))
    params = params_in(x, "params.")
    obs, actions, rewards = x["obs"], x["actions"], x["rewards"]

    def forward(p):
        return policy_sequence(p, spec, obs, actions, rewards, mode="scan")

    out = forward(params)
    head = "logits" if spec.discrete else "mean"
    result = {head: out[head], "value": out["values"], "log_prob": log_prob(spec, out, actions)}
    grads = autograd.grad(lambda p: np.sum(log_prob(spec, forward(p), actions)))(params)
    result.update(prefixed("grad.", grads))
    return result


# ---------------------------------------------------------------------------------------------
# MAML
# ---------------------------------------------------------------------------------------------

def _mse(params, data):
    """The MAML regression loss: ``mean((mlp(x) - y)^2)`` over all elements (tanh MLP)."""
    x, y = data
    return np.mean((mlp_apply(params, x, activation="tanh") - y) ** 2)


def _build_maml(metasgd):
    def build(rng):
        hidden = [40, 40]                           # Finn et al.'s sinusoid regressor
        params = mlp_init([1, *hidden, 1], rng=rng)
        for layer in params.values():
            layer["b"] = 0.1 * rng.standard_normal(layer["b"].shape)
        M, K, Q = 4, 10, 15
        amp = rng.uniform(0.1, 5.0, (M, 1, 1))
        phase = rng.uniform(0.0, onp.pi, (M, 1, 1))
        sx, qx = rng.uniform(-5.0, 5.0, (M, K, 1)), rng.uniform(-5.0, 5.0, (M, Q, 1))
        inputs = prefixed("params.", params)
        inputs.update(support_x=sx, support_y=amp * onp.sin(sx - phase),
                      query_x=qx, query_y=amp * onp.sin(qx - phase))
        attrs = {"steps": 1 if metasgd else 2, "hidden": hidden, "activation": "tanh",
                 "loss": "mean squared error", "tasks": M}
        if metasgd:
            lr = tree_map(lambda a: 0.01 * rng.uniform(0.5, 1.5, a.shape), params)
            inputs.update(prefixed("lr.", lr))
        else:
            inputs["inner_lr"] = onp.array(0.01)
        return inputs, attrs
    return build


def _tasks(x):
    M = x["support_x"].shape[0]
    return [((x["support_x"][i], x["support_y"][i]), (x["query_x"][i], x["query_y"][i]))
            for i in range(M)]


def _compute_maml(x, attrs):
    params, tasks, steps = params_in(x, "params."), _tasks(x), int(attrs["steps"])
    if "inner_lr" not in x:                          # Meta-SGD: per-parameter rates, learned too
        lr = params_in(x, "lr.")
        loss, (g_theta, g_lr) = meta_gradient(params, _mse, tasks, inner_lr=lr, steps=steps,
                                              wrt_inner_lr=True)
        out = {"meta_loss": onp.asarray(loss)}
        out.update(prefixed("meta_grad.", g_theta))
        out.update(prefixed("meta_grad_lr.", g_lr))
        return out
    lr = float(x["inner_lr"])
    fast = [flatten_dict(adapt(params, _mse, support, inner_lr=lr, steps=steps))
            for support, _ in tasks]
    out = {f"fast.{k}": onp.stack([f[k] for f in fast]) for k in fast[0]}   # (M, ...)
    loss, g2 = meta_gradient(params, _mse, tasks, inner_lr=lr, steps=steps)
    _, g1 = meta_gradient(params, _mse, tasks, inner_lr=lr, steps=steps, first_order=True)
    out["meta_loss"] = onp.asarray(loss)
    out.update(prefixed("meta_grad.", g2))
    out.update(prefixed("meta_grad_fo.", g1))
    return out


# ---------------------------------------------------------------------------------------------
# The test-time adapter
# ---------------------------------------------------------------------------------------------

_ADAPTER_CONFIG = AdaptationConfig(
    lr=0.02,                # Adam steps of ~0.02 per entry ...
    max_step_scale=0.05,    # ... bounded to 0.05 max(|theta_p|, 1) per tensor (W, step 1)
    weight_decay=0.01,      # L2 inside Adam (AdamW's decoupled decay would fail)
    grad_clip_norm=0.5,     # the global gradient norm is ~1.5: clipped at every step
    trust_region_eps=0.08,  # |theta_p - a_p| <= 0.08 (W, every step)
    ema_decay=0.5,          # the EMA anchor, which also switches the trust region on
    entropy_weight=0.5,     # tent's entropy term
    max_steps_per_call=1,
    adam_eps=1e-5)          # large enough that where eps goes (outside the sqrt) shows in float32


def _build_adapter(rng):
    d, K, S, B = 8, 4, 5, 16
    W = rng.standard_normal((d, K)) / onp.sqrt(d)            # logits = x W + b
    b = 0.1 * rng.standard_normal(K)
    means = rng.standard_normal((K, d))
    labels = rng.integers(0, K, (S, B)).astype(onp.int64)
    x = means[labels] + 0.5 * rng.standard_normal((S, B, d)) + 0.3   # shifted test inputs
    attrs = {"config": dataclasses.asdict(_ADAPTER_CONFIG), "strategy": "tent",
             "loss": "mean cross-entropy over the batch", "steps_per_batch": 1}
    return {"params.W": W, "params.b": b, "x": x, "labels": labels}, attrs


def run_adapter_case(x, attrs):
    """``(trajectory, infos)``: the adapter of the ``adapter`` case on batches ``x[s]``, one
    ``Adapter.adapt`` call per batch; ``infos`` are the dicts ``adapt`` returned."""
    cfg = AdaptationConfig(**attrs["config"])
    params = {"W": onp.array(x["params.W"]), "b": onp.array(x["params.b"])}
    model = types.SimpleNamespace(params=params)               # any object with a params dict
    adapter = create_adapter(model, cfg, attrs["strategy"])

    def forward(batch):
        return np.dot(batch["x"], model.params["W"]) + model.params["b"]     # (B, K)

    def cross_entropy(logits, batch):
        return -np.mean(categorical_log_prob(logits, batch["labels"]))

    traj, infos = [tree_copy(model.params)], []
    for s in range(x["x"].shape[0]):
        info = adapter.adapt(cross_entropy, {"x": x["x"][s], "labels": x["labels"][s]},
                             fwd_fn=forward)
        if not info["updated"]:
            raise RuntimeError(f"adapter case: step {s} was not applied ({info.get('reason')})")
        traj.append(tree_copy(model.params))
        infos.append(info)
    return {f"traj.{k}": onp.stack([t[k] for t in traj]) for k in ("W", "b")}, infos


def _compute_adapter(x, attrs):
    return run_adapter_case(x, attrs)[0]


CASES = [
    Case("policy_gaussian", "policy", _build_policy(False), _compute_policy,
         "continuous SSM policy: mean, value, log-prob (summed over dims) and its gradient"),
    Case("policy_categorical", "policy", _build_policy(True), _compute_policy,
         "discrete SSM policy (K 5, previous action and reward as input)"),
    Case("maml_mlp", "maml", _build_maml(False), _compute_maml,
         "sinusoid MAML: fast weights after 2 steps, meta-loss, 2nd and 1st order meta-grads"),
    Case("maml_metasgd", "maml", _build_maml(True), _compute_maml,
         "Meta-SGD: meta-gradients w.r.t. the parameters and the per-parameter rates"),
    Case("adapter_tent", "adapter", _build_adapter, _compute_adapter,
         "tent on a linear classifier: 5 steps, clipping, step bound, trust region, EMA"),
]


# ---------------------------------------------------------------------------------------------
# The checker's rules
# ---------------------------------------------------------------------------------------------

def _validate_policy(x, attrs):
    A, obs = x["params.ssm.A"], x["obs"]
    if A.ndim != 2 or A.shape[0] != A.shape[1] or obs.ndim != 3:
        raise ValueError(f"params.ssm.A {A.shape} must be square and obs {obs.shape} "
                         f"(N, T, obs_dim)")


def _policy_length(x, attrs):
    return memory_length(x["obs"].shape[1], ssm.spectral_radius(x["params.ssm.A"]))


def _gradient_names(name):
    return "grad" if name.startswith(("grad.", "meta_grad")) else "value"


KINDS = [
    Kind("policy", ("params.ssm.A", "obs"), _validate_policy, _policy_length, _gradient_names,
         lambda name: (1, "t") if name in ("mean", "logits", "value", "log_prob") else None),
    Kind("maml", output_class=_gradient_names),
    # the trajectory is made of gradient steps: gradient tolerances
    Kind("adapter", output_class=lambda name: "grad",
         sequence_axis=lambda name: (0, "step") if name.startswith("traj.") else None),
]
