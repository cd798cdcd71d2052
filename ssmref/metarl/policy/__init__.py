"""The SSM policy for meta-RL: a linear state space model over (observation, previous action,
previous reward), and two MLP heads, a policy and a value, on its output and the observation.

- :mod:`~ssmref.metarl.policy.spec`   :class:`PolicySpec`, the parameter layout, :func:`policy_init`
- :mod:`~ssmref.metarl.policy.core`   the functional core: inputs, heads, the sequence and step
  forms, distributions, rollouts (the model's equations open that module)
- :mod:`~ssmref.metarl.policy.args`   the checks of the core's public arguments
- :mod:`~ssmref.metarl.policy.model`  :class:`SSMMetaPolicy`, the stateful shell, with save/load

``docs/policy.md`` is the same spec in prose.
"""

from ssmref.metarl.policy.args import check_env
from ssmref.metarl.policy.core import (encode_actions, entropy, log_prob, policy_heads,
                                       policy_inputs, policy_rollout, policy_sequence, policy_step,
                                       sample)
from ssmref.metarl.policy.model import SSMMetaPolicy
from ssmref.metarl.policy.spec import (FORMAT, PolicySpec, check_params, policy_init,
                                       policy_param_shapes)

__all__ = ["PolicySpec", "SSMMetaPolicy", "policy_init", "policy_param_shapes", "check_params",
           "check_env", "encode_actions", "policy_inputs", "policy_heads", "policy_sequence",
           "policy_step", "log_prob", "entropy", "sample", "policy_rollout", "FORMAT"]
