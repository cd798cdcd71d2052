"""Meta-reinforcement learning with the SSM policy: MAML-RL (Finn et al. 2017, sec. 5.3).

- :mod:`ssmref.metarl.maml_rl`  ``MetaMAML``: the MAML-RL meta-training loop
"""

from ssmref.metarl.maml_rl import (ESTIMATORS, MetaMAML, MetaMAMLConfig, surrogate_loss,
                                   trajectory_data)

__all__ = ["MetaMAML", "MetaMAMLConfig", "ESTIMATORS", "surrogate_loss", "trajectory_data"]
