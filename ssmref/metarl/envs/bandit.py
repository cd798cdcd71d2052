"""K-armed Bernoulli bandits, one bandit per trial (Duan et al. 2016, RL^2, sec. 4.1).

A task is ``p ~ U[0, 1)^K``; an episode (RL^2's trial) is ``horizon`` pulls of the same bandit::

    r_t = 1.0 if u_t < p[a_t] else 0.0,    u_t ~ U[0, 1)      (so P(r_t = 1) = p[a_t])

The best fixed arm's expected return, ``horizon * max_i p_i``, is the oracle.

Reference: Y. Duan, J. Schulman, X. Chen, P. Bartlett, I. Sutskever, P. Abbeel, "RL^2: Fast
Reinforcement Learning via Slow Reinforcement Learning", arXiv:1611.02779, 2016, sec. 4.1.
"""

from dataclasses import dataclass

import numpy as onp

from ssmref.checks import check_int
from ssmref.metarl.envs.tasks import repeat_rows, stack_field
from ssmref.metarl.envs.vector import VecEnv
from ssmref.rng import as_rng


def bandit_reward(probs, actions, uniforms):
    """Bernoulli bandit reward ``r = 1.0 if u < p[a] else 0.0`` with ``u ~ U[0, 1)`` given.

    Shapes: ``probs (N, K)``, ``actions (N,)`` int, ``uniforms (N,)`` -> ``reward (N,)`` float64.
    ``P(r = 1) = p[a]`` because ``P(u < p) = p`` for ``u ~ U[0, 1)``.
    """
    p_action = probs[onp.arange(probs.shape[0]), actions]      # (N,)
    return (uniforms < p_action).astype(onp.float64)


class VecBandit(VecEnv):
    """Duan et al. 2016's (RL^2) Bernoulli bandit, ``N`` rows at once (one bandit per row).

    An episode is ``horizon`` pulls of the same bandit (RL^2 calls this a trial of ``horizon``
    one-step episodes; the paper uses ``horizon`` in {10, 100, 500} and ``K`` in {5, 10, 50}).

    - observation ``(N, 1)``: always ``1.0``, the one-hot encoding of the bandit's single state
      (rllab flattens ``Discrete(1)`` this way); a recurrent policy appends its previous action,
      reward and done flag itself, as RL^2 does;
    - action ``(N,)`` integer arm indices in ``[0, K)``;
    - reward ``(N,)``: ``1.0`` with probability ``p[a]``, else ``0.0`` (:func:`bandit_reward`);
      each step draws ``u = rng.random(N)`` once, from the generator given to ``reset``;
    - never terminates; ``truncated`` is True for every row on step ``horizon``; ``mask`` is all
      ones.

    ``probs (N, K)`` in ``[0, 1]``; ``task_index (N,)`` int (default ``arange(N)``).
    ``info = {"mask", "t", "p_action": (N,) the chosen arm's p}`` (for pseudo-regret).
    """

    obs_dim = 1
    action_dim = None
    discrete = True

    def __init__(self, probs, horizon=100, task_index=None):
        probs = onp.array(probs, dtype=onp.float64)
        if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 1:
            raise ValueError(f"probs: expected shape (N, K) with N, K >= 1, got {probs.shape}")
        if not onp.all((probs >= 0.0) & (probs <= 1.0)):
            raise ValueError("probs must lie in [0, 1]")
        self.probs = probs
        self.num_actions = probs.shape[1]
        self._init_rows(probs.shape[0], horizon, task_index)
        self._rng = None

    def reset(self, rng=None):
        """Start ``N`` trials; rewards come from ``as_rng(rng)``. Returns ones ``(N, 1)``."""
        self._rng = as_rng(rng)
        self._begin()
        return onp.ones((self.num_envs, 1))

    def step(self, actions):
        """Pull one arm per row: ``actions (N,)`` int -> ``(obs, reward, terminated, truncated,
        info)``, shapes as in the class docstring."""
        self._check_running()
        actions = onp.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions: expected shape ({self.num_envs},), got {actions.shape}")
        if not onp.issubdtype(actions.dtype, onp.integer):
            raise ValueError(f"actions: expected integer arm indices, got dtype {actions.dtype}")
        if onp.any((actions < 0) | (actions >= self.num_actions)):
            raise ValueError(f"actions: arm indices must lie in [0, {self.num_actions}), "
                             f"got min {actions.min()}, max {actions.max()}")
        uniforms = self._rng.random(self.num_envs)                          # (N,)
        reward = bandit_reward(self.probs, actions, uniforms)
        p_action = self.probs[onp.arange(self.num_envs), actions]
        never = onp.zeros(self.num_envs, dtype=bool)
        mask = onp.ones(self.num_envs, dtype=bool)
        return self._finish(onp.ones((self.num_envs, 1)), reward, never, mask,
                            {"p_action": p_action})

    def oracle_return(self):
        """``(N,)``: expected return of always pulling the best arm, ``horizon * max_i p_i``."""
        return self.horizon * self.probs.max(axis=1)


@dataclass(frozen=True)
class Bandit:
    """Task family of RL^2's Bernoulli bandits: ``num_arms`` arms with ``p_i ~ U[0, 1)`` i.i.d.

    ``sample_tasks(n, rng) -> [{"p": (num_arms,) float64}, ...]`` (one ``rng.uniform(0, 1,
    (n, num_arms))`` draw). ``make_env(tasks, episodes_per_task) -> VecBandit``; an episode is
    ``horizon`` pulls of the same bandit. ``oracle_return(tasks) = horizon * max_i p_i`` per task.
    Source: Duan et al. 2016 (RL^2), sec. 4.1: ``num_arms`` in {5, 10, 50}, ``horizon`` in
    {10, 100, 500}; any ``num_arms >= 2`` is allowed here.
    """

    num_arms: int = 5               # K
    horizon: int = 100              # pulls per trial

    obs_dim = 1
    action_dim = None
    discrete = True

    def __post_init__(self):
        check_int("num_arms", self.num_arms, minimum=2)
        check_int("horizon", self.horizon, minimum=1)

    @property
    def num_actions(self):
        return self.num_arms

    def sample_tasks(self, n, rng=None):
        """``n`` bandits, each ``{"p": (num_arms,)}`` with ``p_i ~ U[0, 1)``."""
        n = check_int("n", n, minimum=1)
        probs = as_rng(rng).uniform(0.0, 1.0, size=(n, self.num_arms))     # (n, K)
        return [{"p": p.copy()} for p in probs]

    def make_env(self, tasks, episodes_per_task=1):
        """A :class:`VecBandit` running every task ``episodes_per_task`` times (task-major)."""
        probs = stack_field(tasks, "p", (self.num_arms,), "Bandit.make_env")
        probs, task_index = repeat_rows(probs, episodes_per_task)
        return VecBandit(probs, self.horizon, task_index)

    def oracle_return(self, tasks):
        """``(n,)``: ``horizon * max_i p_i`` per task, the expected return of the best fixed arm."""
        probs = stack_field(tasks, "p", (self.num_arms,), "Bandit.oracle_return")
        return self.horizon * probs.max(axis=1)

