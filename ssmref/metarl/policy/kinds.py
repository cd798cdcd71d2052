"""The two policies MetaMAML trains, behind one set of functions: ``kind`` ``"ssm"`` (the SSM
policy, :class:`~ssmref.metarl.policy.PolicySpec`) and ``"mlp"`` (Finn et al.'s Gaussian MLP,
:class:`~ssmref.metarl.policy.mlp.MLPPolicySpec`).  Each spec carries its ``kind``; its JSON carries
its format tag, so a checkpoint says which policy it holds (checkpoints written before the MLP
policy existed hold an SSM spec).
"""

import dataclasses
import inspect

from ssmref.metarl.policy.mlp import (MLP_FORMAT, MLPPolicySpec, mlp_policy_init,
                                      mlp_policy_param_shapes)
from ssmref.metarl.policy.spec import (FORMAT, PolicySpec, check_param_shapes, check_params,
                                       policy_init, policy_param_shapes)
from ssmref.storage import parse_json

POLICY_KINDS = ("ssm", "mlp")


def param_shapes(spec):
    """``{dotted name: shape}`` of either policy."""
    if isinstance(spec, MLPPolicySpec):
        return mlp_policy_param_shapes(spec)
    return policy_param_shapes(spec)


def check_policy_params(params, spec):
    """``ValueError`` unless ``params`` has exactly the leaves and shapes of ``spec`` (either
    kind; autograd boxes allowed)."""
    if not isinstance(spec, MLPPolicySpec):
        return check_params(params, spec)
    return check_param_shapes(params, param_shapes(spec))


def spec_from_json(text):
    """The spec of either kind from its JSON (:meth:`PolicySpec.to_json`,
    :meth:`MLPPolicySpec.to_json`); ``ValueError`` on anything else."""
    spec = parse_json(text, "spec")                  # bounded depth: never a RecursionError
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be a JSON object, got {type(spec).__name__}")
    tag = spec.get("format")
    if tag == MLP_FORMAT:
        return MLPPolicySpec.from_json(text)
    if tag == FORMAT:
        return PolicySpec.from_json(text)
    raise ValueError(f"spec format must be {FORMAT!r} or {MLP_FORMAT!r}, got {tag!r}")


def policy_settings(kind):
    """The keyword arguments the init function of ``kind`` takes (its spec's fields and its
    initialisation settings, e.g. ``ssm_scale``), besides the env's dimensions and ``rng``."""
    init = mlp_policy_init if kind == "mlp" else policy_init
    taken = inspect.signature(init).parameters
    return tuple(k for k, v in taken.items() if v.kind == v.KEYWORD_ONLY and k not in ("rng",
                                                                                     "discrete"))


def policy_spec(kind, family, **kwargs):
    """The spec :func:`init_policy` would build, without drawing a parameter: its sizes are
    checked (and bounded, ``MAX_MODEL_PARAMETERS``) before anything is allocated.  ``kwargs``
    may also hold initialisation settings (``ssm_scale``, ...), which the spec ignores."""
    unknown = sorted(set(kwargs) - set(policy_settings(kind)))
    if unknown:
        raise ValueError(f"unknown {kind} policy settings {unknown}; known: "
                         f"{sorted(policy_settings(kind))}")
    if kind == "mlp" and family.discrete:
        raise ValueError("the MLP policy is Gaussian: it needs a continuous-action env "
                         "(navigation2d), not a discrete one")
    cls = MLPPolicySpec if kind == "mlp" else PolicySpec
    fields = {f.name for f in dataclasses.fields(cls)}
    sizes = {k: tuple(v) if k == "hidden_sizes" and isinstance(v, list) else v
             for k, v in kwargs.items() if k in fields}
    if kind == "mlp":
        return MLPPolicySpec(family.obs_dim, family.action_dim, **sizes)
    k = family.num_actions if family.discrete else family.action_dim
    return PolicySpec(family.obs_dim, k, bool(family.discrete), **sizes)


def init_policy(kind, family, rng, **kwargs):
    """``(params, spec)`` of a new policy of ``kind`` for the RL task ``family``:
    :func:`~ssmref.metarl.policy.policy_init` (``"ssm"``) or
    :func:`~ssmref.metarl.policy.mlp.mlp_policy_init` (``"mlp"``, continuous actions only), with
    the keyword arguments of that function."""
    if kind == "mlp":
        if family.discrete:
            raise ValueError("the MLP policy is Gaussian: it needs a continuous-action env "
                             "(navigation2d), not a discrete one")
        return mlp_policy_init(family.obs_dim, family.action_dim, rng=rng, **kwargs)
    if kind != "ssm":
        raise ValueError(f"policy must be one of {POLICY_KINDS}, got {kind!r}")
    k = family.num_actions if family.discrete else family.action_dim
    return policy_init(family.obs_dim, k, discrete=bool(family.discrete), rng=rng, **kwargs)
