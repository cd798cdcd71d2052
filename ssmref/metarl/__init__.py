"""Meta-learning with MAML: meta-RL with the SSM policy (Finn et al. 2017, sec. 5.3) and few-shot
regression (sec. 5.1), from the task families to the run directories.

- :mod:`ssmref.metarl.envs`     task families: 2-D navigation, bandits, sinusoids, LTI system id
- :mod:`ssmref.metarl.rl`       returns, GAE, the linear baseline, REINFORCE and DiCE, rollouts
- :mod:`ssmref.metarl.policy`   the SSM policy: spec, functional core, the ``SSMMetaPolicy`` shell
- :mod:`ssmref.metarl.trainer`  the training loop and checkpoint every meta-trainer shares
- :mod:`ssmref.metarl.maml_rl`  ``MetaMAML``: the MAML-RL meta-training loop
- :mod:`ssmref.metarl.fewshot`  ``MetaRegression``: MAML for few-shot (sinusoid) regression
"""

from ssmref.metarl.fewshot import MetaRegression, MetaRegressionConfig
from ssmref.metarl.maml_rl import (ESTIMATORS, MetaMAML, MetaMAMLConfig, surrogate_loss,
                                   trajectory_data)

__all__ = ["MetaMAML", "MetaMAMLConfig", "MetaRegression", "MetaRegressionConfig", "ESTIMATORS",
           "surrogate_loss", "trajectory_data"]
