"""A gymnasium view of the RL task families: one episode of one task at a time.

``pip install 'ssmref[gym]'`` (gymnasium, pinned); the rest of ssmref never imports gymnasium.
A user who knows gymnasium gets the usual contract on top of :mod:`ssmref.metarl.envs`::

    env = NavigationEnv()                          # or BanditEnv(), or gymnasium.make(...)
    obs, info = env.reset(seed=0)                  # a new task from the family, info["task"]
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

- the task: drawn from the family with ``env.np_random`` at every ``reset``, unless the env was
  built with ``task=`` (fixed) or ``reset(options={"task": task})`` names one (a task dict of the
  family, e.g. ``{"goal": np.array([0.3, -0.2])}``);
- the step is the vectorized environment's with one row (:mod:`ssmref.metarl.envs.vector`:
  ``terminated`` when the goal is reached, ``truncated`` at ``horizon``), so returns are the ones
  ``python -m ssmref train`` optimises; ``info`` holds that row's ``t``, ``mask`` and extras
  (navigation: ``distance`` to the goal; bandit: ``p_action``);
- spaces: navigation2d observes the position, ``Box(-0.1 horizon, 0.1 horizon, (2,))`` (a
  move is at most 0.1 per axis), and acts in
  ``Box(-1, 1, (2,))`` (rllab's normalised action; the move is ``0.1 a``, clipped to
  ``[-0.1, 0.1]``, :func:`ssmref.metarl.envs.scale_action`); the bandit observes the constant
  ``1.0`` in ``Box(0, 1, (1,))`` and pulls an arm of ``Discrete(num_arms)``.  Everything is
  float64, as in ssmref.

:func:`register` makes them ``gymnasium.make("ssmref/Navigation2D-v0")`` and
``gymnasium.make("ssmref/Bandit-v0")``.  (``sinusoid`` is supervised: no environment.)
"""

import gymnasium
import numpy as onp
from gymnasium import spaces

from ssmref.metarl.envs.bandit import Bandit
from ssmref.metarl.envs.navigation import Navigation2D


class TaskEnv(gymnasium.Env):
    """One episode at a time of ``family`` (an RL task family of :mod:`ssmref.metarl.envs`),
    on ``task`` (fixed) or on a task drawn at each reset."""

    metadata = {"render_modes": []}

    def __init__(self, family, task=None):
        self.family, self.task = family, task
        self._env = None

    def reset(self, *, seed=None, options=None):
        """``(obs, {"task": task})``; ``seed`` seeds ``np_random`` (task draws, bandit rewards)."""
        super().reset(seed=seed)
        options = options or {}
        task = options.get("task", self.task)
        if task is None:
            task = self.family.sample_tasks(1, self.np_random)[0]
        self._env = self.family.make_env([task], 1)
        obs = self._env.reset(self.np_random)
        return obs[0], {"task": task}

    def step(self, action):
        """``(obs, reward, terminated, truncated, info)`` of one step of the current episode."""
        if self._env is None:
            raise RuntimeError("step() called before reset()")
        obs, reward, terminated, truncated, info = self._env.step(self._batch(action))
        info = {k: (v[0].item() if isinstance(v, onp.ndarray) else v) for k, v in info.items()}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info


class NavigationEnv(TaskEnv):
    """Finn et al.'s 2-D navigation (:class:`ssmref.metarl.envs.Navigation2D`), one goal."""

    def __init__(self, task=None, horizon=100):
        super().__init__(Navigation2D(horizon=horizon), task)
        reach = 0.1 * horizon                       # at most 0.1 per step from the origin
        self.observation_space = spaces.Box(-reach, reach, shape=(2,), dtype=onp.float64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=onp.float64)

    def _batch(self, action):
        return onp.asarray(action, dtype=onp.float64).reshape(1, 2)


class BanditEnv(TaskEnv):
    """RL^2's Bernoulli bandit (:class:`ssmref.metarl.envs.Bandit`), one bandit per episode."""

    def __init__(self, task=None, num_arms=5, horizon=10):
        super().__init__(Bandit(num_arms=num_arms, horizon=horizon), task)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=onp.float64)
        self.action_space = spaces.Discrete(num_arms)

    def _batch(self, action):
        return onp.asarray([int(action)], dtype=onp.int64)


def register():
    """Register ``ssmref/Navigation2D-v0`` and ``ssmref/Bandit-v0`` with gymnasium (their
    keyword arguments are the constructors')."""
    for name, cls in (("Navigation2D-v0", "NavigationEnv"), ("Bandit-v0", "BanditEnv")):
        env_id = f"ssmref/{name}"
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=f"{__name__}:{cls}")
