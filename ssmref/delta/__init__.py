"""The delta rule family (DeltaNet, Gated DeltaNet, KDA) as a float64 reference for GPU kernels.

Same argument names, shapes, layouts and defaults as fla's (flash-linear-attention) functions, as
pure NumPy/autograd functions (nothing is modified in place), differentiable to any order w.r.t.
every float argument:

- :func:`delta_rule`             DeltaNet (``chunk_delta_rule``)                     -- :mod:`.rule`
- :func:`gated_delta_rule`       Gated DeltaNet (``chunk_gated_delta_rule``)         -- :mod:`.rule`
- :func:`kda`                    Kimi Delta Attention, a gate per key channel (``chunk_kda``)
- :func:`delta_rule_step`, :func:`gated_delta_rule_step`, :func:`kda_step`: one decoding step

Evaluations that agree: :func:`.recurrent.delta_recurrence` (the definition, a loop over time),
:func:`.chunked.delta_chunked` (the WY/UT chunked form, any chunk size) and
:func:`.recurrent.delta_step_core` (one step).  Equations and conventions: ``docs/delta.md``.
"""

from ssmref.delta.rule import (delta_rule, delta_rule_step, gated_delta_rule,
                               gated_delta_rule_step, kda, kda_step)

__all__ = ["delta_rule", "gated_delta_rule", "kda", "delta_rule_step", "gated_delta_rule_step",
           "kda_step"]
