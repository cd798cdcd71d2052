"""Validation of the public arguments of :mod:`ssmref.metarl.policy.core`, once, at the boundary.

Checks read values (under autograd the arguments may be boxes) and never enter the math.  Arrays
follow the package's one rule (:func:`ssmref.checks.check_array`): numeric, never bool, finite;
observations, rewards, states and continuous actions come back as float64 (boxes unchanged),
discrete actions as integer arrays.  The results are NamedTuples (:class:`EpisodeInputs`,
:class:`StepInputs`).  Every failure is a one-line ``ValueError`` naming the argument and shapes.
"""

from typing import NamedTuple, Optional

import numpy as onp
from autograd.tracer import isbox

from ssmref.checks import check_array, shape_of, values


class EpisodeInputs(NamedTuple):
    """Checked inputs of whole episodes (``policy_inputs``, ``policy_sequence``)."""
    obs: object                    # (..., T, obs_dim) float
    prev_actions: Optional[object]  # (..., T) int or (..., T, d) float, or None
    prev_rewards: Optional[object]  # (..., T) float, or None


class StepInputs(NamedTuple):
    """Checked inputs of one step of ``N`` parallel episodes (``policy_step``)."""
    h: Optional[object]            # (N, n) float, or None: every row starts now
    obs: object                    # (N, obs_dim) float
    prev_action: Optional[object]  # (N,) int or (N, d) float, or None
    prev_reward: Optional[object]  # (N,) float, or None
    reset: Optional[onp.ndarray]   # (N,) bool, or None


def as_float(name, x, live=None):
    """``x`` checked (:func:`check_array`) as a float64 array, or unchanged if it is a box.

    ``live`` (bool, over the leading axis): only those rows must be finite; the others are rows
    that start an episode, whose inputs the step form ignores (documented in ``policy_step``)."""
    raw = check_array(name, x, finite=True if live is None else live)
    return x if isbox(x) else onp.asarray(raw, dtype=onp.float64)


def check_actions(spec, name, actions, lead, live=None):
    """``actions`` of shape ``lead`` (int, discrete) or ``lead + (d,)`` (float, continuous).

    ``live`` (bool, shape ``lead``): only those entries must lie in ``[0, K)`` (discrete) or be
    finite (continuous); the others are ignored by the caller; ``None`` checks all.
    """
    K = spec.action_dim
    if spec.discrete:
        a = check_array(name, actions)
        if a.shape != lead:
            raise ValueError(f"{name} must have shape {lead} (integer actions), got {a.shape}")
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer array (discrete actions), "
                             f"got dtype {a.dtype}")
        sel = a if live is None else a[live]
        if sel.size and (sel.min() < 0 or sel.max() >= K):
            raise ValueError(f"{name} must lie in [0, {K}), "
                             f"got values in [{sel.min()}, {sel.max()}]")
        return a
    if shape_of(actions) != lead + (K,):
        raise ValueError(f"{name} must have shape {lead + (K,)}, got {shape_of(actions)}")
    return as_float(name, actions, live)


def check_rewards(name, rewards, lead, live=None):
    if shape_of(rewards) != lead:
        raise ValueError(f"{name} must have shape {lead}, got {shape_of(rewards)}")
    return as_float(name, rewards, live)


def episode_args(spec, obs, prev_actions, prev_rewards):
    """The arguments of ``policy_inputs`` / ``policy_sequence`` as :class:`EpisodeInputs`."""
    got = shape_of(obs)
    if len(got) not in (2, 3) or got[-1] != spec.obs_dim or got[-2] < 1:
        raise ValueError(f"obs must have shape (T, {spec.obs_dim}) or (N, T, {spec.obs_dim}) "
                         f"with T >= 1, got {got}")
    obs = as_float("obs", obs)
    lead = got[:-1]                                                 # (..., T)
    if prev_actions is not None:
        prev_actions = check_actions(spec, "prev_actions", prev_actions, lead)
    if prev_rewards is not None:
        prev_rewards = check_rewards("prev_rewards", prev_rewards, lead)
    if spec.use_prev_action_reward and (prev_actions is None or prev_rewards is None):
        raise ValueError("this policy reads the previous action and reward "
                         "(use_prev_action_reward=True): pass prev_actions and prev_rewards")
    return EpisodeInputs(obs, prev_actions, prev_rewards)


def step_args(spec, h, obs, prev_action, prev_reward, reset):
    """The arguments of ``policy_step`` as :class:`StepInputs`."""
    if len(shape_of(obs)) != 2 or shape_of(obs)[-1] != spec.obs_dim:
        raise ValueError(f"obs must have shape (N, {spec.obs_dim}), got {shape_of(obs)}")
    obs = as_float("obs", obs)
    N, n = shape_of(obs)[0], spec.state_dim
    if reset is not None:
        reset = values("reset", reset)                              # bool: not a number
        if reset.shape != (N,) or reset.dtype.kind not in "bui" or \
                not onp.all((reset == 0) | (reset == 1)):
            raise ValueError(f"reset must be a bool array of shape ({N},), got {reset.dtype} "
                             f"{reset.shape}")
        reset = reset.astype(bool)
    if h is not None:
        if shape_of(h) != (N, n):
            raise ValueError(f"h must have shape ({N}, {n}), got {shape_of(h)}")
        h = as_float("h", h)
    starting = onp.ones(N, dtype=bool) if h is None else reset       # rows that start now
    if spec.use_prev_action_reward:
        if prev_action is None or prev_reward is None:
            if starting is None or not bool(onp.all(starting)):
                raise ValueError("this policy reads the previous action and reward "
                                 "(use_prev_action_reward=True): pass prev_action and prev_reward "
                                 "(None is allowed only when every row starts an episode)")
        else:
            live = None if starting is None else ~starting
            prev_action = check_actions(spec, "prev_action", prev_action, (N,), live)
            prev_reward = check_rewards("prev_reward", prev_reward, (N,), live)
    return StepInputs(h, obs, prev_action, prev_reward, reset)


def check_env(spec, env):
    """``ValueError`` unless ``env`` (a vectorized env or a task family) fits the policy's dims."""
    if bool(env.discrete) != spec.discrete:
        raise ValueError(f"env.discrete is {env.discrete}, the policy's is {spec.discrete}")
    k = env.num_actions if spec.discrete else env.action_dim
    if env.obs_dim != spec.obs_dim or k != spec.action_dim:
        raise ValueError(f"env has obs_dim {env.obs_dim} and "
                         f"{'num_actions' if spec.discrete else 'action_dim'} {k}; the policy "
                         f"expects {spec.obs_dim} and {spec.action_dim}")
