"""Task distributions for meta-learning: two RL environments and two supervised task families.

A *task family* is a small frozen configuration object:

- :class:`Navigation2D`   2-D point navigation to a random goal (Finn et al. 2017, MAML, sec. 5.3)
- :class:`Bandit`         K-armed Bernoulli bandit, one bandit per trial (Duan et al. 2016, RL^2)
- :class:`Sinusoid`       K-shot sinusoid regression (Finn et al. 2017, sec. 5.1)
- :class:`LTISystemID`    identification of a random stable discrete-time linear system

``family.sample_tasks(n, rng) -> list`` of ``n`` task dicts of plain float64 arrays and floats; a
task carries everything needed to reproduce it, nothing is hidden in the family object.  RL
families build a vectorized environment, ``family.make_env(tasks, episodes_per_task)``
(:mod:`ssmref.metarl.envs.vector`: the step contract and the rule for episode ends); supervised
families draw data, ``family.sample(task, k, rng)`` (:mod:`ssmref.metarl.envs.regression`).

:data:`ENVS` is the one registry of task families by name, and :func:`make` builds one.
"""

from ssmref.metarl.envs.bandit import Bandit, VecBandit, bandit_reward
from ssmref.metarl.envs.navigation import (Navigation2D, VecNavigation2D, navigation_transition,
                                           scale_action)
from ssmref.metarl.envs.regression import LTISystemID, Sinusoid, lti_simulate, sinusoid
from ssmref.metarl.envs.vector import VecEnv

__all__ = ["ENVS", "make", "Navigation2D", "Bandit", "Sinusoid", "LTISystemID", "VecEnv",
           "VecNavigation2D", "VecBandit", "scale_action", "navigation_transition",
           "bandit_reward", "sinusoid", "lti_simulate"]

ENVS = {
    "navigation2d": Navigation2D,
    "bandit": Bandit,
    "sinusoid": Sinusoid,
    "lti_system_id": LTISystemID,
}


def make(name, **kwargs):
    """The task family registered as ``name`` in :data:`ENVS`, constructed with ``kwargs``.

    Raises ``ValueError`` listing the known names for an unknown ``name``.
    """
    if name not in ENVS:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(sorted(ENVS))}")
    return ENVS[name](**kwargs)
