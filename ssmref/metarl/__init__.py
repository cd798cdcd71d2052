"""Meta-learning with MAML: meta-RL with the SSM policy or Finn et al.'s MLP policy (Finn et al.
2017, sec. 5.3) and few-shot regression (sec. 5.1), from the task families to the run directories.

- :mod:`ssmref.metarl.envs`     task families: 2-D navigation, bandits, sinusoids, LTI system id
- :mod:`ssmref.metarl.rl`       returns, GAE, the linear baseline, REINFORCE and DiCE, rollouts
- :mod:`ssmref.metarl.policy`   the SSM policy (spec, functional core, ``SSMMetaPolicy``), the
                                Gaussian MLP policy (``policy.mlp``), both task-batched
                                (``policy.tasks``) behind one interface (``policy.kinds``)
- :mod:`ssmref.metarl.threads`  the BLAS-thread limit of the hot loops
- :mod:`ssmref.metarl.trainer`  the training loop and checkpoint every meta-trainer shares
- :mod:`ssmref.metarl.maml_rl`  ``MetaMAML``: the MAML-RL meta-training loop
- :mod:`ssmref.metarl.maml_losses`  the data of a sampled batch and the MAML-RL losses on it
- :mod:`ssmref.metarl.trpo`     the TRPO outer step (conjugate gradient, Fisher-vector products)
- :mod:`ssmref.metarl.fewshot`  ``MetaRegression``: MAML for few-shot (sinusoid) regression
- :mod:`ssmref.metarl.run_config`, :mod:`~ssmref.metarl.rundir`, :mod:`~ssmref.metarl.train`,
  :mod:`~ssmref.metarl.evaluation`, :mod:`~ssmref.metarl.report`: ``python -m ssmref train`` and
  ``evaluate``
"""

from ssmref.metarl.fewshot import MetaRegression, MetaRegressionConfig
from ssmref.metarl.maml_losses import (ESTIMATORS, surrogate_loss, tasks_surrogate_loss,
                                       tasks_trajectory_data, trajectory_data)
from ssmref.metarl.maml_rl import OUTERS, MetaMAML, MetaMAMLConfig

__all__ = ["MetaMAML", "MetaMAMLConfig", "MetaRegression", "MetaRegressionConfig", "ESTIMATORS",
           "OUTERS", "surrogate_loss", "trajectory_data", "tasks_surrogate_loss",
           "tasks_trajectory_data"]
