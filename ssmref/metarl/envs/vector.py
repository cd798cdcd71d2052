"""The vectorized RL environment: ``N`` episodes stepped at once, and the rule for episode ends.

RL task families (:mod:`ssmref.metarl.envs`) build a vectorized environment from tasks::

    env = family.make_env(tasks, episodes_per_task)   # N = len(tasks) * episodes_per_task rows
    obs = env.reset(rng)                              # (N, obs_dim)
    obs, reward, terminated, truncated, info = env.step(actions)

Rows are task-major: row ``r`` runs task ``r // episodes_per_task`` (``env.task_index[r]``).
Every returned array has leading dimension ``N``: ``obs (N, obs_dim)`` float64, ``reward (N,)``
float64, ``terminated (N,)`` bool, ``truncated (N,)`` bool, and ``info["mask"] (N,)`` float64.
Environments expose ``horizon``, ``obs_dim``, ``action_dim`` (``None`` when discrete),
``num_actions`` (``None`` when continuous), ``discrete`` and ``num_envs``.

Episode end in a batch (no auto-reset; this is the rule every rollout must follow)
---------------------------------------------------------------------------------
rllab's ``rollout`` appends the step on which ``done`` is returned and then stops the path. Here a
row whose episode has ended is *frozen* instead:

- ``info["mask"][r] == 1.0`` iff row ``r`` was alive *before* this step, i.e. the step belongs to
  its episode (the step that reaches the goal counts, exactly like rllab's last path entry);
- a frozen row's observation stays at its terminal value and its reward is exactly ``0.0``;
- ``terminated`` is sticky: True from the step that reached the goal onwards;
- ``truncated[r]`` is True only on step ``horizon`` and only for rows that never terminated;
- after ``horizon`` steps every row is finished; ``step`` raises ``RuntimeError`` until ``reset``.

So the rllab return of row ``r`` is ``sum_t reward[t, r]`` (= ``sum_t mask[t, r] * reward[t, r]``)
and its path length is ``sum_t mask[t, r]``; policy-gradient terms must be weighted by ``mask``.

These environments are not differentiated: plain NumPy, float64, in-place updates allowed.
"""

import numpy as onp

from ssmref.checks import check_int


class VecEnv:
    """Bookkeeping shared by the vectorized envs: time, alive rows, sticky termination.

    Subclasses set ``num_envs``, ``horizon``, ``task_index`` and call :meth:`_begin` in ``reset``
    and :meth:`_finish` at the end of ``step`` (see the module docstring for the rule).
    """

    def _init_rows(self, num_envs, horizon, task_index):
        self.num_envs = num_envs
        self.horizon = check_int("horizon", horizon, minimum=1)
        if task_index is None:
            task_index = onp.arange(num_envs)
        task_index = onp.asarray(task_index)
        if task_index.shape != (num_envs,) or not onp.issubdtype(task_index.dtype, onp.integer):
            raise ValueError(f"task_index: expected integer array of shape ({num_envs},), "
                             f"got {task_index.dtype} {task_index.shape}")
        self.task_index = task_index.copy()
        self.t = None                                  # None until the first reset

    def _begin(self):
        self.t = 0
        self._alive = onp.ones(self.num_envs, dtype=bool)
        self._terminated = onp.zeros(self.num_envs, dtype=bool)

    def _check_running(self):
        if self.t is None:
            raise RuntimeError("step() called before reset()")
        if self.t >= self.horizon:
            raise RuntimeError(f"all {self.num_envs} episodes ended at the horizon "
                               f"({self.horizon} steps); call reset()")

    def _finish(self, obs, reward, reached, mask, info):
        self.t += 1
        self._terminated = self._terminated | reached
        self._alive = self._alive & ~reached
        if self.t == self.horizon:
            truncated = ~self._terminated
            self._alive = onp.zeros(self.num_envs, dtype=bool)
        else:
            truncated = onp.zeros(self.num_envs, dtype=bool)
        info = {"mask": mask.astype(onp.float64), "t": self.t, **info}
        return obs, reward, self._terminated.copy(), truncated, info

    @property
    def alive(self):
        """``(N,) bool``: rows whose next step still counts (False everywhere before reset)."""
        if self.t is None:
            return onp.zeros(self.num_envs, dtype=bool)
        return self._alive.copy()
