"""Policy-gradient math on batches of trajectories, independent of any policy.

- :mod:`~ssmref.metarl.rl.batch`       the data layout (``(N, T)`` arrays and a prefix ``mask``)
- :mod:`~ssmref.metarl.rl.returns`     discounted returns, ``discount_cumsum``, GAE
- :mod:`~ssmref.metarl.rl.baseline`    rllab's linear feature baseline
- :mod:`~ssmref.metarl.rl.surrogates`  advantage normalisation, REINFORCE, DiCE and its baselines
- :mod:`~ssmref.metarl.rl.rollout`     running a policy on a vectorized environment

Conventions (each one is a place where frameworks differ; ``docs/rl.md`` gives the sources): the
value after the last valid step is 0 (no bootstrapping); returns restart the discount at each step
while DiCE discounts from the episode's start; REINFORCE is a loss, DiCE an objective; advantages
are normalised with the population std plus ``1e-8``; the baseline is rllab's
``LinearFeatureBaseline`` (clipped features, ``lstsq``, 5 attempts).
"""

from ssmref.metarl.rl.baseline import (BASELINE_MAX_ATTEMPTS, LinearFeatureBaseline,
                                       baseline_features, fit_linear_baseline,
                                       predict_linear_baseline)
from ssmref.metarl.rl.returns import discount_cumsum, discounted_returns, gae
from ssmref.metarl.rl.rollout import rollout
from ssmref.metarl.rl.surrogates import (BASELINE_TERMS, dice_magic_box, dice_surrogate,
                                         normalize_advantages, reinforce_surrogate)
from ssmref.params import stop_gradient

__all__ = [
    "stop_gradient", "dice_magic_box",
    "discount_cumsum", "discounted_returns", "gae",
    "baseline_features", "fit_linear_baseline", "predict_linear_baseline", "LinearFeatureBaseline",
    "normalize_advantages", "reinforce_surrogate", "dice_surrogate", "rollout",
    "BASELINE_MAX_ATTEMPTS", "BASELINE_TERMS",
]
