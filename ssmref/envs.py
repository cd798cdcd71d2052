"""Task distributions for meta-learning: two RL environments and two supervised task families.

Contract
--------
A *task family* is a small frozen configuration object:

- :class:`Navigation2D`   2-D point navigation to a random goal (Finn et al. 2017, MAML, sec. 5.3)
- :class:`Bandit`         K-armed Bernoulli bandit, one bandit per trial (Duan et al. 2016, RL^2)
- :class:`Sinusoid`       K-shot sinusoid regression (Finn et al. 2017, sec. 5.1)
- :class:`LTISystemID`    identification of a random stable discrete-time linear system

``family.sample_tasks(n, rng) -> list`` of ``n`` task dicts of plain float64 arrays and floats; a
task carries everything needed to reproduce it, nothing is hidden in the family object.

RL families build a *vectorized* environment from tasks::

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

Supervised families share ``sample(task, k, rng) -> (x, y)``,
``support_query(task, k_support, k_query=None, rng=None) -> dict`` (support and query are
independent draws from the same task) and ``target(task, x) -> y`` (the noiseless map).

These environments are not differentiated: plain NumPy, float64, in-place updates allowed.

References
----------
- C. Finn, P. Abbeel, S. Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
  Networks", ICML 2017; code github.com/cbfinn/maml (``data_generator.py``, sinusoid) and
  github.com/cbfinn/maml_rl (``maml_examples/point_env_randgoal.py``, ``maml_trpo_point.py``,
  ``rllab/envs/normalized_env.py``, ``sandbox/rocky/tf/samplers/vectorized_sampler.py``).
- Y. Duan, J. Schulman, X. Chen, P. Bartlett, I. Sutskever, P. Abbeel, "RL^2: Fast Reinforcement
  Learning via Slow Reinforcement Learning", arXiv:1611.02779, 2016, sec. 4.1 (bandits).
"""

from dataclasses import dataclass

import numpy as onp

from ssmref.rng import as_rng


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------

def _check_int(name, value, minimum=1):
    """``value`` as an int >= ``minimum`` (bools rejected), else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, onp.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_interval(name, interval, lower=-onp.inf, upper=onp.inf, open_upper=False):
    """``interval = (lo, hi)`` with ``lower <= lo <= hi <= upper`` (``< upper`` if open_upper)."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of floats, got {interval!r}") from None
    too_high = hi >= upper if open_upper else hi > upper
    if not (onp.isfinite(lo) and onp.isfinite(hi)) or lo > hi or lo < lower or too_high:
        bound = f"< {upper}" if open_upper else f"<= {upper}"
        raise ValueError(f"{name} must satisfy {lower} <= low <= high {bound}, got {interval!r}")
    return lo, hi


def _stack_field(tasks, key, shape, where):
    """``tasks[i][key]`` for all i as one float64 array of shape ``(len(tasks),) + shape``."""
    if hasattr(tasks, "keys") or isinstance(tasks, (str, bytes)):
        raise ValueError(f"{where}: tasks must be a list of task dicts, got {type(tasks).__name__}")
    tasks = list(tasks)
    if not tasks:
        raise ValueError(f"{where}: tasks is empty")
    rows = []
    for i, task in enumerate(tasks):
        if not hasattr(task, "keys") or key not in task:
            raise ValueError(f"{where}: tasks[{i}] must be a dict with key {key!r}")
        value = onp.asarray(task[key], dtype=onp.float64)
        if value.shape != shape:
            raise ValueError(f"{where}: tasks[{i}][{key!r}]: expected shape {shape}, "
                             f"got {value.shape}")
        rows.append(value)
    return onp.stack(rows)


def _check_task(task, keys, where):
    """``ValueError`` unless ``task`` is a dict holding every key in ``keys``."""
    if not hasattr(task, "keys") or any(k not in task for k in keys):
        raise ValueError(f"{where}: task must be a dict with keys {list(keys)}, got {task!r}")


# --------------------------------------------------------------------------------------------
# Functional core: the rules, one pure function each
# --------------------------------------------------------------------------------------------

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


def bandit_reward(probs, actions, uniforms):
    """Bernoulli bandit reward ``r = 1.0 if u < p[a] else 0.0`` with ``u ~ U[0, 1)`` given.

    Shapes: ``probs (N, K)``, ``actions (N,)`` int, ``uniforms (N,)`` -> ``reward (N,)`` float64.
    ``P(r = 1) = p[a]`` because ``P(u < p) = p`` for ``u ~ U[0, 1)``.
    """
    p_action = probs[onp.arange(probs.shape[0]), actions]      # (N,)
    return (uniforms < p_action).astype(onp.float64)


def sinusoid(x, amplitude, phase):
    """Finn et al.'s sinusoid ``y = amplitude * sin(x - phase)`` (cbfinn/maml data_generator.py).

    Shapes: ``x`` any; ``amplitude``, ``phase`` scalars (or broadcastable); result like ``x``.
    """
    return amplitude * onp.sin(onp.asarray(x, dtype=onp.float64) - phase)


def spectral_radius(M):
    """``max |eig(M)|`` of a square matrix ``M (n, n)``."""
    return float(onp.max(onp.abs(onp.linalg.eigvals(M))))


def lti_simulate(A, B, C, D, u, h0=None):
    """Simulate ``h_t = A h_{t-1} + B u_t``, ``y_t = C h_t + D u_t`` (output reads the NEW state).

    The same convention as :mod:`ssmref.ssm`; ``h_{-1} = h0`` (zeros by default). The other common
    convention (``scipy.signal.dlsim``: ``y_t = C' x_t + D' u_t``, ``x_{t+1} = A x_t + B u_t``)
    gives the same outputs with ``C' = C A``, ``D' = C B + D`` and ``x_0 = h0``.

    Shapes: ``A (n, n)``, ``B (n, m)``, ``C (p, n)``, ``D (p, m)``; ``u (T, m)`` -> ``y (T, p)``,
    or batched ``u (batch, T, m)`` -> ``y (batch, T, p)``; ``h0 (n,)`` or ``(batch, n)``.
    A plain loop over time: the readable reference, not a fast one.
    """
    A, B, C, D = (onp.asarray(M, dtype=onp.float64) for M in (A, B, C, D))
    n, m, p = A.shape[0], B.shape[1], C.shape[0]
    for name, M, shape in (("A", A, (n, n)), ("B", B, (n, m)), ("C", C, (p, n)), ("D", D, (p, m))):
        if M.shape != shape:
            raise ValueError(f"lti_simulate: {name}: expected shape {shape}, got {M.shape}")
    u = onp.asarray(u, dtype=onp.float64)
    if u.ndim not in (2, 3) or u.shape[-1] != m:
        raise ValueError(f"lti_simulate: u: expected shape (T, {m}) or (batch, T, {m}), "
                         f"got {u.shape}")
    batched = u.ndim == 3
    u3 = u if batched else u[None]                     # (batch, T, m)
    batch, T = u3.shape[0], u3.shape[1]
    if h0 is None:
        h = onp.zeros((batch, n))
    else:
        h0 = onp.asarray(h0, dtype=onp.float64)
        if h0.shape not in ((n,), (batch, n)):
            raise ValueError(f"lti_simulate: h0: expected shape ({n},) or ({batch}, {n}), "
                             f"got {h0.shape}")
        h = onp.broadcast_to(h0, (batch, n)).copy()
    y = onp.zeros((batch, T, p))
    for t in range(T):
        h = h @ A.T + u3[:, t] @ B.T                    # (batch, n)   h_t = A h_{t-1} + B u_t
        y[:, t] = h @ C.T + u3[:, t] @ D.T              # (batch, p)   y_t = C h_t + D u_t
    return y if batched else y[0]


# --------------------------------------------------------------------------------------------
# Vectorized RL environments
# --------------------------------------------------------------------------------------------

class _VecEnv:
    """Bookkeeping shared by the vectorized envs: time, alive rows, sticky termination.

    Subclasses set ``num_envs``, ``horizon``, ``task_index`` and call :meth:`_begin` in ``reset``
    and :meth:`_finish` at the end of ``step`` (see the module docstring for the rule).
    """

    def _init_rows(self, num_envs, horizon, task_index):
        self.num_envs = num_envs
        self.horizon = _check_int("horizon", horizon)
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


class VecNavigation2D(_VecEnv):
    """Finn et al. 2017's 2-D point navigation, ``N`` rows at once (one goal per row).

    - observation ``(N, 2)``: the position; every episode starts at ``(0, 0)``;
    - action ``(N, 2)`` real, scaled by :func:`scale_action` to a move in ``[-0.1, 0.1]^2``;
    - reward ``(N,)``: ``-||s_{t+1} - goal||`` after the move; done when both ``|s_{t+1} - goal|``
      components are ``< 0.01`` (:func:`navigation_transition`); horizon 100 in the paper;
    - frozen rows after done, ``info["mask"]``: see the module docstring.

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
        goals = onp.array(goals, dtype=onp.float64)
        if goals.ndim != 2 or goals.shape[1] != 2 or goals.shape[0] < 1:
            raise ValueError(f"goals: expected shape (N, 2) with N >= 1, got {goals.shape}")
        if not onp.all(onp.isfinite(goals)):
            raise ValueError("goals must be finite")
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
        actions = onp.asarray(actions, dtype=onp.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions: expected shape ({self.num_envs}, 2), got {actions.shape}")
        if not onp.all(onp.isfinite(actions)):
            raise ValueError("actions must be finite (NaN or inf received)")
        mask = self._alive.copy()                                           # (N,)
        pos_next, reward, reached = navigation_transition(self._pos, self.goals, actions,
                                                          self.goal_tolerance)
        self._pos = onp.where(mask[:, None], pos_next, self._pos)          # frozen rows stay
        reward = onp.where(mask, reward, 0.0)
        reached = reached & mask
        d = self._pos - self.goals                                          # (N, 2)
        distance = (d[:, 0] ** 2 + d[:, 1] ** 2) ** 0.5                     # = -reward if alive
        return self._finish(self._pos.copy(), reward, reached, mask, {"distance": distance})


class VecBandit(_VecEnv):
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


# --------------------------------------------------------------------------------------------
# Task families
# --------------------------------------------------------------------------------------------

def _repeat_rows(array, episodes_per_task):
    """``array (n, ...)`` repeated task-major -> ``(n * e, ...)``, and ``task_index (n * e,)``."""
    episodes_per_task = _check_int("episodes_per_task", episodes_per_task)
    n = array.shape[0]
    task_index = onp.repeat(onp.arange(n), episodes_per_task)              # (N,) task-major
    return onp.repeat(array, episodes_per_task, axis=0), task_index


@dataclass(frozen=True)
class Navigation2D:
    """Task family of Finn et al. 2017's 2-D navigation: goal ``~ U[goal_low, goal_high)^2``.

    ``sample_tasks(n, rng) -> [{"goal": (2,) float64}, ...]``, drawn as one
    ``rng.uniform(goal_low, goal_high, size=(n, 2))`` like rllab's ``sample_goals``.
    ``make_env(tasks, episodes_per_task) -> VecNavigation2D`` with ``N = n * episodes_per_task``.
    Source: cbfinn/maml_rl ``maml_examples/point_env_randgoal.py``; MAML paper sec. 5.3.
    """

    horizon: int = 100              # max_path_length in maml_trpo_point.py
    goal_low: float = -0.5
    goal_high: float = 0.5

    obs_dim = 2
    action_dim = 2
    num_actions = None
    discrete = False

    def __post_init__(self):
        _check_int("horizon", self.horizon)
        _check_interval("(goal_low, goal_high)", (self.goal_low, self.goal_high))

    def sample_tasks(self, n, rng=None):
        """``n`` goals, each ``{"goal": (2,)}`` uniform on the square."""
        n = _check_int("n", n)
        goals = as_rng(rng).uniform(self.goal_low, self.goal_high, size=(n, 2))   # (n, 2)
        return [{"goal": g.copy()} for g in goals]

    def make_env(self, tasks, episodes_per_task=1):
        """A :class:`VecNavigation2D` running each task ``episodes_per_task`` times (task-major)."""
        goals = _stack_field(tasks, "goal", (2,), "Navigation2D.make_env")
        goals, task_index = _repeat_rows(goals, episodes_per_task)
        return VecNavigation2D(goals, self.horizon, task_index)


@dataclass(frozen=True)
class Bandit:
    """Task family of RL^2's Bernoulli bandits: ``num_arms`` arms with ``p_i ~ U[0, 1)`` i.i.d.

    ``sample_tasks(n, rng) -> [{"p": (num_arms,) float64}, ...]`` (one ``rng.uniform(0, 1,
    (n, num_arms))`` draw). ``make_env(tasks, episodes_per_task) -> VecBandit``; an episode is
    ``horizon`` pulls of the same bandit. ``oracle_return(tasks) = horizon * max_i p_i`` per task.
    Source: Duan et al. 2016 (RL^2), sec. 4.1: ``num_arms`` in {5, 10, 50}, ``horizon`` in
    {10, 100, 500}; any ``num_arms >= 2`` is allowed here.
    """

    num_arms: int = 5
    horizon: int = 100

    obs_dim = 1
    action_dim = None
    discrete = True

    def __post_init__(self):
        _check_int("num_arms", self.num_arms, minimum=2)
        _check_int("horizon", self.horizon)

    @property
    def num_actions(self):
        return self.num_arms

    def sample_tasks(self, n, rng=None):
        """``n`` bandits, each ``{"p": (num_arms,)}`` with ``p_i ~ U[0, 1)``."""
        n = _check_int("n", n)
        probs = as_rng(rng).uniform(0.0, 1.0, size=(n, self.num_arms))     # (n, K)
        return [{"p": p.copy()} for p in probs]

    def make_env(self, tasks, episodes_per_task=1):
        """A :class:`VecBandit` running every task ``episodes_per_task`` times (task-major)."""
        probs = _stack_field(tasks, "p", (self.num_arms,), "Bandit.make_env")
        probs, task_index = _repeat_rows(probs, episodes_per_task)
        return VecBandit(probs, self.horizon, task_index)

    def oracle_return(self, tasks):
        """``(n,)``: ``horizon * max_i p_i`` per task, the expected return of the best fixed arm."""
        probs = _stack_field(tasks, "p", (self.num_arms,), "Bandit.oracle_return")
        return self.horizon * probs.max(axis=1)


@dataclass(frozen=True)
class Sinusoid:
    """Finn et al. 2017's sinusoid regression: ``y = amplitude * sin(x - phase)``.

    amplitude ``~ U[0.1, 5.0)``, phase ``~ U[0, pi)``, inputs ``x ~ U[-5, 5)``, noiseless.
    ``sample_tasks(n, rng)`` draws all amplitudes, then all phases (``data_generator.py`` order) and
    returns ``[{"amplitude": float, "phase": float}, ...]``.
    ``sample(task, k, rng) -> (x (k, 1), y (k, 1))``;
    ``support_query(task, k_support, k_query=None, rng)`` draws ``k_support + k_query`` inputs at
    once and splits them in that order (``inputa``/``inputb`` in cbfinn/maml; ``k_query``
    defaults to ``k_support``, the paper's K-shot setting); ``grid(task, num)`` is the fixed
    evaluation grid ``x = linspace(-5, 5, num)``.
    Source: cbfinn/maml ``data_generator.py``; MAML paper sec. 5.1.
    """

    amplitude_range: tuple = (0.1, 5.0)
    phase_range: tuple = (0.0, onp.pi)
    x_range: tuple = (-5.0, 5.0)

    input_dim = 1
    output_dim = 1

    def __post_init__(self):
        _check_interval("amplitude_range", self.amplitude_range)
        _check_interval("phase_range", self.phase_range)
        _check_interval("x_range", self.x_range)

    def sample_tasks(self, n, rng=None):
        """``n`` tasks ``{"amplitude": float, "phase": float}``."""
        n = _check_int("n", n)
        rng = as_rng(rng)
        amplitudes = rng.uniform(*self.amplitude_range, size=n)             # (n,)
        phases = rng.uniform(*self.phase_range, size=n)                     # (n,)
        return [{"amplitude": float(a), "phase": float(p)} for a, p in zip(amplitudes, phases)]

    def target(self, task, x):
        """The noiseless map ``amplitude * sin(x - phase)``; ``x`` any shape, ``y`` the same."""
        _check_task(task, ("amplitude", "phase"), "Sinusoid.target")
        return sinusoid(x, task["amplitude"], task["phase"])

    def sample(self, task, k, rng=None):
        """``k`` points: ``x (k, 1) ~ U[x_range)``, ``y = target(task, x) (k, 1)``."""
        k = _check_int("k", k)
        x = as_rng(rng).uniform(*self.x_range, size=(k, 1))                 # (k, 1)
        return x, self.target(task, x)

    def support_query(self, task, k_support, k_query=None, rng=None):
        """``{"x_support": (k_support, 1), "y_support", "x_query": (k_query, 1), "y_query"}``."""
        k_support = _check_int("k_support", k_support)
        k_query = k_support if k_query is None else _check_int("k_query", k_query)
        x, y = self.sample(task, k_support + k_query, rng)
        return {"x_support": x[:k_support], "y_support": y[:k_support],
                "x_query": x[k_support:], "y_query": y[k_support:]}

    def grid(self, task, num=100):
        """Evaluation grid ``x = linspace(*x_range, num)[:, None]`` and ``y``, both ``(num, 1)``."""
        num = _check_int("num", num, minimum=2)
        x = onp.linspace(*self.x_range, num)[:, None]                        # (num, 1)
        return x, self.target(task, x)


@dataclass(frozen=True)
class LTISystemID:
    """System identification of a random stable discrete-time linear system.

        h_t = A h_{t-1} + B u_t,   y_t = C h_t + D u_t,   h_{-1} = 0   (output reads the NEW state)

    Each task draws, in this order: ``rho ~ U[rho_range)``; ``G (n, n)`` standard normal and
    ``A = G * rho / spectral_radius(G)`` (so ``spectral_radius(A) = rho < 1``); fan-in scaled
    ``B ~ N(0, 1/m) (n, m)``, ``C ~ N(0, 1/n) (p, n)``, ``D ~ N(0, 1/m) (p, m)`` (``D = 0`` when
    ``feedthrough`` is False; the draw still happens, so the stream does not depend on it).
    Task dict: ``{"A", "B", "C", "D": arrays, "rho": float}``.

    Data: ``sample(task, k, rng) -> (u (k, T, m), y (k, T, p))`` with inputs ``u ~ N(0, 1)`` i.i.d.
    and ``y`` simulated by :func:`lti_simulate`; ``support_query`` draws ``k_support + k_query``
    sequences at once and splits them (different input sequences of the same system).
    Dimensions: ``input_dim = m``, ``state_dim = n``, ``output_dim = p``, ``seq_len = T``.
    Reference: the random-stable-system construction is the standard one used for SSM
    initialisation and system-identification benchmarks (e.g. Ljung, "System Identification", 1999).
    """

    input_dim: int = 1
    state_dim: int = 4
    output_dim: int = 1
    seq_len: int = 50
    rho_range: tuple = (0.5, 0.95)
    feedthrough: bool = True

    def __post_init__(self):
        for name in ("input_dim", "state_dim", "output_dim", "seq_len"):
            _check_int(name, getattr(self, name))
        _check_interval("rho_range", self.rho_range, lower=0.0, upper=1.0, open_upper=True)

    def sample_tasks(self, n, rng=None):
        """``n`` systems ``{"A": (n, n), "B": (n, m), "C": (p, n), "D": (p, m), "rho": float}``."""
        n_tasks = _check_int("n", n)
        rng = as_rng(rng)
        m, n, p = self.input_dim, self.state_dim, self.output_dim
        tasks = []
        for _ in range(n_tasks):
            rho = float(rng.uniform(*self.rho_range))
            G = rng.standard_normal((n, n))
            A = G * (rho / spectral_radius(G))
            B = rng.standard_normal((n, m)) / onp.sqrt(m)
            C = rng.standard_normal((p, n)) / onp.sqrt(n)
            D = rng.standard_normal((p, m)) / onp.sqrt(m)
            if not self.feedthrough:
                D = onp.zeros((p, m))
            tasks.append({"A": A, "B": B, "C": C, "D": D, "rho": rho})
        return tasks

    def target(self, task, u):
        """``y`` for inputs ``u (T, m)`` or ``(batch, T, m)``; :func:`lti_simulate` from 0."""
        _check_task(task, ("A", "B", "C", "D"), "LTISystemID.target")
        return lti_simulate(task["A"], task["B"], task["C"], task["D"], u)

    def sample(self, task, k, rng=None):
        """``k`` sequences: ``u (k, T, m) ~ N(0, 1)``, ``y (k, T, p)``."""
        k = _check_int("k", k)
        u = as_rng(rng).standard_normal((k, self.seq_len, self.input_dim))  # (k, T, m)
        return u, self.target(task, u)

    def support_query(self, task, k_support, k_query=None, rng=None):
        """``{"x_support": (k_support, T, m), "y_support": (k_support, T, p),
        "x_query": (k_query, T, m), "y_query": (k_query, T, p)}``."""
        k_support = _check_int("k_support", k_support)
        k_query = k_support if k_query is None else _check_int("k_query", k_query)
        u, y = self.sample(task, k_support + k_query, rng)
        return {"x_support": u[:k_support], "y_support": y[:k_support],
                "x_query": u[k_support:], "y_query": y[k_support:]}


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

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
