"""2-D point navigation to a random goal (Finn et al. 2017, MAML, sec. 5.3).

One step of ``PointEnvRandGoal`` behind rllab ``normalize``, for a policy action ``a``::

    s'     = s + clip(-0.1 + (a + 1) * 0.5 * 0.2, -0.1, 0.1)     (the move; s_0 = (0, 0))
    reward = -||s' - goal||                                      (after the move)
    done   = |s'_x - goal_x| < 0.01 and |s'_y - goal_y| < 0.01

with ``goal ~ U[-0.5, 0.5)^2`` per task and episodes of 100 steps.

Reference: C. Finn, P. Abbeel, S. Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of
Deep Networks", ICML 2017; github.com/cbfinn/maml_rl (``maml_examples/point_env_randgoal.py``,
``maml_trpo_point.py``, ``rllab/envs/normalized_env.py``,
``sandbox/rocky/tf/samplers/vectorized_sampler.py``).
"""

from dataclasses import dataclass

import numpy as onp

from ssmref.checks import check_array, check_int, check_scalar
from ssmref.metarl.envs.tasks import repeat_rows, stack_field
from ssmref.metarl.envs.vector import VecEnv
from ssmref.rng import as_rng


def scale_action(action, low=-0.1, high=0.1):
    """rllab ``normalize``: a policy action in ``[-1, 1]`` mapped affinely onto ``[low, high]``.

        scaled = clip(low + (action + 1) * 0.5 * (high - low), low, high)

    written in exactly rllab's operation order (``NormalizedEnv.step``), so results match rllab bit
    for bit; for the point env (``low, high = -0.1, 0.1``) this is ``clip(0.1 * a, -0.1, 0.1)`` up
    to rounding. Any real ``action`` is accepted: out-of-range actions are clipped, not rejected.
    Shapes: ``action`` any, result the same shape, float64.
    """
    action = onp.asarray(action, dtype=onp.float64)
    return onp.clip(low + (action + 1.0) * 0.5 * (high - low), low, high)


def navigation_transition(pos, goal, action, tolerance=0.01):
    """One step of Finn et al.'s ``PointEnvRandGoal`` behind rllab ``normalize``.

        s'     = s + scale_action(a)                      (no bound on the position)
        d      = s' - goal
        reward = -sqrt(d_x^2 + d_y^2)                      (after the move)
        done   = |d_x| < tolerance and |d_y| < tolerance  (strict, after the move)

    Shapes: ``pos, goal, action (N, 2)`` -> ``pos' (N, 2)``, ``reward (N,)``, ``done (N,) bool``.
    Source: cbfinn/maml_rl ``maml_examples/point_env_randgoal.py``.
    """
    pos_next = pos + scale_action(action)              # (N, 2)
    dx = pos_next[:, 0] - goal[:, 0]                   # (N,)
    dy = pos_next[:, 1] - goal[:, 1]                   # (N,)
    reward = -((dx ** 2 + dy ** 2) ** 0.5)             # rllab: - (x ** 2 + y ** 2) ** 0.5
    done = (onp.abs(dx) < tolerance) & (onp.abs(dy) < tolerance)
    return pos_next, reward, done


class VecNavigation2D(VecEnv):
    """Finn et al. 2017's 2-D point navigation, ``N`` rows at once (one goal per row).

    - observation ``(N, 2)``: the position; every episode starts at ``(0, 0)``;
    - action ``(N, 2)`` real, scaled by :func:`scale_action` to a move in ``[-0.1, 0.1]^2``;
    - reward ``(N,)``: ``-||s_{t+1} - goal||`` after the move; done when both ``|s_{t+1} - goal|``
      components are ``< 0.01`` (:func:`navigation_transition`); horizon 100 in the paper;
    - frozen rows after done, ``info["mask"]``: see :mod:`ssmref.metarl.envs.vector`.

    ``goals (N, 2)``; ``task_index (N,)`` int (default ``arange(N)``). ``reset(rng)`` draws nothing
    (the start is deterministic); ``rng`` is accepted for a uniform interface and validated.
    Source: cbfinn/maml_rl ``point_env_randgoal.py`` behind rllab ``normalize``, and
    ``maml_trpo_point.py`` (``max_path_length = 100``).
    """

    obs_dim = 2
    action_dim = 2
    num_actions = None
    discrete = False
    action_low, action_high = -0.1, 0.1                # the move bounds (rllab Box of the env)
    goal_tolerance = 0.01

    def __init__(self, goals, horizon=100, task_index=None):
        goals = onp.array(check_array("goals", goals), dtype=onp.float64)
        if goals.ndim != 2 or goals.shape[1] != 2 or goals.shape[0] < 1:
            raise ValueError(f"goals: expected shape (N, 2) with N >= 1, got {goals.shape}")
        self.goals = goals
        self._init_rows(goals.shape[0], horizon, task_index)
        self._pos = None

    def reset(self, rng=None):
        """Start all ``N`` episodes at the origin; returns ``obs (N, 2)`` of zeros."""
        as_rng(rng)                                    # validated; nothing is drawn
        self._begin()
        self._pos = onp.zeros((self.num_envs, 2))
        return self._pos.copy()

    def step(self, actions):
        """Advance alive rows: ``actions (N, 2)`` -> ``(obs, reward, terminated, truncated, info)``.

        ``obs (N, 2)`` float64, ``reward (N,)`` float64 (0.0 on frozen rows), ``terminated (N,)``
        bool (sticky), ``truncated (N,)`` bool, ``info = {"mask": (N,) float64, "t": int,
        "distance": (N,) float64}`` (``distance`` to the goal after the step).
        """
        self._check_running()
        actions = onp.asarray(check_array("actions", actions), dtype=onp.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions: expected shape ({self.num_envs}, 2), got {actions.shape}")
        mask = self._alive.copy()                                           # (N,)
        pos_next, reward, reached = navigation_transition(self._pos, self.goals, actions,
                                                          self.goal_tolerance)
        self._pos = onp.where(mask[:, None], pos_next, self._pos)          # frozen rows stay
        reward = onp.where(mask, reward, 0.0)
        reached = reached & mask
        d = self._pos - self.goals                                          # (N, 2)
        distance = (d[:, 0] ** 2 + d[:, 1] ** 2) ** 0.5                     # = -reward if alive
        return self._finish(self._pos.copy(), reward, reached, mask, {"distance": distance})


@dataclass(frozen=True)
class Navigation2D:
    """Task family of Finn et al. 2017's 2-D navigation: goal ``~ U[goal_low, goal_high)^2``.

    ``sample_tasks(n, rng) -> [{"goal": (2,) float64}, ...]``, drawn as one
    ``rng.uniform(goal_low, goal_high, size=(n, 2))`` like rllab's ``sample_goals``.
    ``make_env(tasks, episodes_per_task) -> VecNavigation2D`` with ``N = n * episodes_per_task``.
    Source: cbfinn/maml_rl ``maml_examples/point_env_randgoal.py``; MAML paper sec. 5.3.
    """

    horizon: int = 100              # max_path_length in maml_trpo_point.py
    goal_low: float = -0.5          # goals ~ U[goal_low, goal_high)^2
    goal_high: float = 0.5

    obs_dim = 2
    action_dim = 2
    num_actions = None
    discrete = False

    def __post_init__(self):
        check_int("horizon", self.horizon, minimum=1)
        check_scalar("goal_low", self.goal_low)
        check_scalar("goal_high", self.goal_high, low=self.goal_low)

    def sample_tasks(self, n, rng=None):
        """``n`` goals, each ``{"goal": (2,)}`` uniform on the square."""
        n = check_int("n", n, minimum=1)
        goals = as_rng(rng).uniform(self.goal_low, self.goal_high, size=(n, 2))   # (n, 2)
        return [{"goal": g.copy()} for g in goals]

    def make_env(self, tasks, episodes_per_task=1):
        """A :class:`VecNavigation2D` running each task ``episodes_per_task`` times (task-major)."""
        goals = stack_field(tasks, "goal", (2,), "Navigation2D.make_env")
        goals, task_index = repeat_rows(goals, episodes_per_task)
        return VecNavigation2D(goals, self.horizon, task_index)

