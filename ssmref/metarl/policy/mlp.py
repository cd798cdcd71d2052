"""Finn et al.'s MAML-RL policy: a Gaussian MLP on the observation (``--policy mlp``).

For one step with observation ``o_t`` (no memory: the policy reads the observation only)::

    h_0 = o_t,   h_{i+1} = act(W_i h_i + b_i)   (i < L),   mean_t = W_L h_L + b_L
    pi(a | o_t) = N(mean_t, diag(exp(log_std))^2),          log_std: (d,), state independent

``act`` is ReLU by default (maml_rl ``maml_trpo_point.py``: ``hidden_nonlinearity=tf.nn.relu``,
``hidden_sizes=(100, 100)``).  The parameter tree::

    {"pi": {"layer0": {"W": (h1, obs_dim), "b": (h1,)}, ..., "layerL": {"W": (d, hL), "b": (d,)}},
     "log_std": (d,)}

Initialisation as maml_rl's ``MAMLGaussianMLPPolicy``: Xavier-uniform weights
``W ~ U(-r, r)``, ``r = sqrt(6 / (fan_in + fan_out))`` (``tf_layers.xavier_initializer()``), zero
biases, ``log_std = log(init_std)`` with ``init_std = 1``.  One difference, on purpose: maml_rl
clamps ``log_std >= log(1e-6)`` with ``tf.maximum``; here there is no clamp (a ``max`` kink inside a
function differentiated three times; no run came near it).  The layers are ``ssmref.nn``'s
(``y = x W^T + b``, the ``torch.nn.Linear`` layout).  MetaMAML runs this policy task-batched
(:mod:`ssmref.metarl.policy.tasks`); the functions here are the one-policy forms.
"""

import dataclasses

import numpy as onp

from ssmref.checks import check_choice, check_int, check_parameter_count, check_scalar
from ssmref.metarl.policy.spec import decode_spec, encode_spec
from ssmref.nn import ACTIVATIONS, mlp_apply
from ssmref.rng import as_rng

MLP_FORMAT = "ssmref.mlp_policy/1"      # the spec's JSON tag (PolicySpec's is "ssmref.policy/1")


@dataclasses.dataclass(frozen=True)
class MLPPolicySpec:
    """The Gaussian MLP policy's static configuration (continuous actions only)."""
    obs_dim: int
    action_dim: int
    hidden_sizes: tuple = (100, 100)     # maml_trpo_point.py
    activation: str = "relu"             # of the hidden layers; the output layer is linear

    kind = "mlp"                         # class attributes, not fields
    discrete = False
    use_prev_action_reward = False

    def __post_init__(self):
        for name in ("obs_dim", "action_dim"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        sizes = self.hidden_sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise ValueError(f"hidden_sizes must be a sequence of ints, got {sizes!r}")
        object.__setattr__(self, "hidden_sizes", tuple(
            check_int(f"hidden_sizes[{i}]", h, minimum=1) for i, h in enumerate(sizes)))
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_parameter_count("the policy", mlp_policy_param_shapes(self))

    def to_json(self):
        """The spec as a JSON string (sorted keys, with the format tag)."""
        return encode_spec(self, MLP_FORMAT)

    @classmethod
    def from_json(cls, text):
        """Inverse of :meth:`to_json`; ``ValueError`` on anything malformed."""
        return decode_spec(cls, text, MLP_FORMAT)


def mlp_policy_param_shapes(spec):
    """The flat layout ``{"log_std": (d,), "pi.layer0.W": (h1, obs_dim), ...}`` of ``spec``."""
    sizes = [spec.obs_dim, *spec.hidden_sizes, spec.action_dim]
    shapes = {"log_std": (spec.action_dim,)}
    for i in range(len(sizes) - 1):
        shapes[f"pi.layer{i}.W"] = (sizes[i + 1], sizes[i])
        shapes[f"pi.layer{i}.b"] = (sizes[i + 1],)
    return dict(sorted(shapes.items()))


# W ~ U(-r, r), r = sqrt(6 / (fan_in + fan_out));  b = 0;  log_std = log(init_std)
def mlp_policy_init(obs_dim, action_dim, *, hidden_sizes=(100, 100), activation="relu",
                    init_std=1.0, rng=None):
    """``(params, spec)`` of a new Gaussian MLP policy, weights drawn layer by layer (``W``
    then nothing for ``b``) from one generator (module docstring)."""
    spec = MLPPolicySpec(obs_dim, action_dim, tuple(hidden_sizes), activation)
    check_scalar("init_std", init_std, low=0.0, low_open=True)
    rng = as_rng(rng)
    sizes = [spec.obs_dim, *spec.hidden_sizes, spec.action_dim]
    pi = {}
    for i in range(len(sizes) - 1):
        r = onp.sqrt(6.0 / (sizes[i] + sizes[i + 1]))
        pi[f"layer{i}"] = {"W": rng.uniform(-r, r, size=(sizes[i + 1], sizes[i])),
                           "b": onp.zeros(sizes[i + 1])}
    log_std = onp.full(spec.action_dim, float(onp.log(init_std)))
    return {"pi": pi, "log_std": log_std}, spec


# mean = MLP(o),  log_std shared by every step
def mlp_policy_distribution(params, spec, obs):
    """``{"mean": (..., d), "log_std": (d,)}`` for ``obs: (..., obs_dim)``.  Unchecked."""
    return {"mean": mlp_apply(params["pi"], obs, activation=spec.activation),
            "log_std": params["log_std"]}
