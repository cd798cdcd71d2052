"""Test-time adaptation: bounded, guarded Adam steps on a model's parameters during inference.

Contract (``docs/adaptation.md`` is the same spec in prose, with the sources).

A *model* is any object with a ``params`` attribute, a dict of arrays (nested dicts allowed, keys
may contain dots, e.g. ``{"head.weight": W}`` or ``{"ssm": {"A": A}}``) that its forward reads **at
call time**.  Each leaf has a *path* (its keys) and a *name* (the keys joined by ``"."``:
``"head.weight"``, ``"ssm.A"``).  The adapter differentiates through ``fwd_fn(batch)`` by setting
``model.params`` to a tree whose trainable leaves are autograd boxes, and restores the model's
attributes in ``finally`` (also when the forward, the loss or the strategy raises).

Trainable tensors ``p``: the floating-point leaves whose name matches ``allow_layers``
(``re.search``; ``None`` allows all) and does not match ``deny_layers``.  One step, in this order::

    1. g = ∇_θ strategy.post_loss(loss_fn(outputs, batch), outputs, batch),  outputs = fwd_fn(batch)
    2. if the loss or any g is non-finite: change nothing, return updated=False and a reason
    3. if grad_clip_norm > 0:   g ← clip_by_global_norm(g, grad_clip_norm)       (torch's 1e-6)
    4. Δ = the torch.optim.Adam step for g (weight_decay as L2)
    5. if max_step_scale = s > 0:   Δ_p ← Δ_p · min(1, s · max(‖θ_p‖, 1) / ‖Δ_p‖)   (1 if Δ_p = 0)
    6. θ ← θ + Δ
    7. if trust_region_eps = ε > 0 and ema_decay > 0:
                                θ_p ← a_p + (θ_p − a_p) · min(1, ε / ‖θ_p − a_p‖)   (1 if θ_p = a_p)
    8. if ema_decay = d > 0:     a ← d · a + (1 − d) · θ
       the anchor a starts at the parameters as they were before the adapter's first step.

Norms are Frobenius norms of one tensor.  After step 8 a second guard refuses the step if the new
parameters, the optimizer state or the anchor are non-finite.  ``adapt`` runs
``max_steps_per_call`` steps and stops at the first refused or skipped one.

Where each piece lives (every name below is importable from ``ssmref.adaptation``):

- :mod:`~ssmref.adaptation.config`      ``AdaptationConfig``, the hyperparameters
- :mod:`~ssmref.adaptation.selection`   which leaves adapt: ``param_leaves``, ``select_names``
- :mod:`~ssmref.adaptation.strategies`  step 1's objective: ``AdaptationStrategy``, ``SkipStep``,
  the registry, ``none``, ``tent``, ``eata``
- :mod:`~ssmref.adaptation.methods`     ``shot``, ``sar``, ``cotta``, ``ttt``, ``ttt++``
- :mod:`~ssmref.adaptation.t3a`         ``t3a`` (no gradient: ``T3AAdapter``)
- :mod:`~ssmref.adaptation.update`      steps 3-8 as small chained transforms: ``guarded_update``
- :mod:`~ssmref.adaptation.adapter`     steps 1-2 and the guards: ``Adapter``, ``create_adapter``
- :mod:`~ssmref.adaptation.hooks`       ``SSMHook``, ``MetaRLHook``, ``ssm_hidden_states``
- :mod:`~ssmref.adaptation.monitor`     ``observe``'s statistics: ``MetaFeatures``,
  ``FeatureTracker``

References: Wang, Shelhamer, Liu, Olshausen, Darrell, "Tent: Fully Test-Time Adaptation by Entropy
Minimization", ICLR 2021; Niu et al., "Efficient Test-Time Model Adaptation without Forgetting"
(EATA), ICML 2022; Kingma & Ba, "Adam", ICLR 2015 (as implemented by ``torch.optim.Adam``).
"""

from ssmref.adaptation import monitor
from ssmref.adaptation.adapter import Adapter, copy_tree, create_adapter, rebuild
from ssmref.adaptation.config import AdaptationConfig
from ssmref.adaptation.hooks import MetaRLHook, SSMHook, ssm_hidden_states
from ssmref.adaptation.monitor import MetaFeatures
from ssmref.adaptation.selection import param_leaves, select_names
from ssmref.adaptation.strategies import (AdaptationStrategy, EATAStrategy, NoStrategy, SkipStep, TentStrategy,
                         available_strategies, logits_of, make_strategy,
                         register_adaptation_strategy, unregister_adaptation_strategy)
from ssmref.adaptation.update import guarded_update
from ssmref.adaptation.methods import (CoTTAStrategy, SARStrategy, SHOTStrategy, TTTPlusPlusStrategy,
                                       TTTStrategy)
from ssmref.adaptation.t3a import T3AAdapter, T3AStrategy

__all__ = ["AdaptationConfig", "Adapter", "AdaptationStrategy", "CoTTAStrategy", "MetaFeatures",
           "MetaRLHook", "SARStrategy", "SHOTStrategy", "SSMHook", "SkipStep", "T3AAdapter",
           "T3AStrategy", "TTTPlusPlusStrategy", "TTTStrategy", "available_strategies",
           "create_adapter",
           "register_adaptation_strategy", "select_names", "ssm_hidden_states",
           "unregister_adaptation_strategy"]
