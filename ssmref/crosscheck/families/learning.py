"""The SSM policy, MAML and the test-time adapter in the kit.

- ``policy`` (here): the SSM meta-RL policy's head outputs, value, log-probability (summed over
  action dims) and its gradient, on whole episodes (``ssmref.metarl`` policy, sequence form,
  scan mode);
- ``maml`` (:mod:`.maml`): fast weights after ``steps`` inner steps ``θ ← θ − α ⊙ ∇L(θ; support)``,
  the meta-loss, and the second- and first-order meta-gradients w.r.t. ``θ`` and ``α``;
- ``adapter`` (:mod:`.adapter`): the parameter trajectory of ``Adapter.adapt`` over batches (clip,
  Adam, step bound, trust region, EMA anchor; the strategies' entropy terms; the guards);
- ``adapter_method`` (:mod:`.adapter_methods`): the same for SHOT-IM, SAR, CoTTA, TTT, TTT++ and
  T3A on a network with an encoder and two heads.

``CASES`` and ``KINDS`` gather the three.

Effective length: the policy's SSM, ``min(T, 1 / (1 − ρ(A)))``; 1 for the others.  There is no
naive baseline for these kinds: baseline mode uses the table.
"""

import json

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref import ssm
from ssmref.crosscheck.families import adapter, adapter_methods, maml
from ssmref.crosscheck.kinds import Case, Kind, memory_length, params_in, prefixed
from ssmref.metarl.policy import PolicySpec, log_prob, policy_init, policy_sequence
from ssmref.params import flatten_dict, unflatten_dict


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


CASES = [
    Case("policy_gaussian", kind="policy", build=_build_policy(False), compute=_compute_policy,
         doc="continuous SSM policy: mean, value, log-prob (summed over dims) and its gradient"),
    Case("policy_categorical", kind="policy", build=_build_policy(True), compute=_compute_policy,
         doc="discrete SSM policy (K 5, previous action and reward as input)"),
]
CASES += maml.CASES + adapter.CASES + adapter_methods.CASES


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
    return "grad" if name.startswith("grad.") else "value"


KINDS = [
    Kind("policy", required_inputs=("params.ssm.A", "obs"), validate=_validate_policy,
         effective_length=_policy_length, output_class=_gradient_names,
         sequence_axis=lambda name: (
             (1, "t") if name in ("mean", "logits", "value", "log_prob") else None)),
]
KINDS += maml.KINDS + adapter.KINDS + adapter_methods.KINDS
