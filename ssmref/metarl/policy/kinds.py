"""The two policies MetaMAML trains, behind one set of functions: ``kind`` ``"ssm"`` (the SSM
policy, :class:`~ssmref.metarl.policy.PolicySpec`) and ``"mlp"`` (Finn et al.'s Gaussian MLP,
:class:`~ssmref.metarl.policy.mlp.MLPPolicySpec`).  Each spec carries its ``kind``; its JSON carries
its format tag, so a checkpoint says which policy it holds (checkpoints written before the MLP
policy existed hold an SSM spec).
"""

import json

from ssmref.metarl.policy.mlp import (MLP_FORMAT, MLPPolicySpec, mlp_policy_init,
                                      mlp_policy_param_shapes)
from ssmref.metarl.policy.spec import (FORMAT, PolicySpec, check_param_shapes, check_params,
                                       policy_init, policy_param_shapes)

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
    try:
        tag = json.loads(text).get("format")
    except (ValueError, AttributeError):
        raise ValueError("spec must be a JSON object") from None
    if tag == MLP_FORMAT:
        return MLPPolicySpec.from_json(text)
    if tag == FORMAT:
        return PolicySpec.from_json(text)
    raise ValueError(f"spec format must be {FORMAT!r} or {MLP_FORMAT!r}, got {tag!r}")


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
