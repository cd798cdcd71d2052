"""Rollouts: run a policy on every row of a vectorized environment and record a padded batch.

    for t = 0 .. horizon - 1:
        a_t = act(obs_t, t, a_{t-1}, r_{t-1})          (a_{-1} = r_{-1} = None)
        obs_{t+1}, r_t, ..., info = env.step(a_t)      mask_t = info["mask"]

The environment freezes finished rows (``docs/envs.md``, :mod:`ssmref.metarl.envs.vector`), so
the result is the batch layout of :mod:`ssmref.metarl.rl.batch`.  Plain NumPy; never
differentiated.
"""

import numpy as onp


def rollout(env, act, rng=None):
    """Run every row of a vectorized environment for ``env.horizon`` steps.

    ``act(obs, t, prev_action, prev_reward)`` is the policy for all ``N`` rows at step ``t``: it
    receives ``obs (N, obs_dim)`` and the previous step's actions and rewards (``None`` at
    ``t = 0``; a recurrent policy keeps its own state and resets it at ``t = 0``) and returns the
    actions, ``(N, action_dim)`` float or ``(N,)`` int, or ``(actions, extras)`` with ``extras`` a
    dict of per-step arrays with leading dim ``N`` (e.g. log-probabilities) to record as well.
    ``rng`` is passed to ``env.reset`` (the same generator may then draw the actions).

    Returns a dict of arrays with leading dims ``(N, T)``, ``T = env.horizon``:
    ``obs (N, T, obs_dim)`` (the observation the action was chosen from), ``actions (N, T, ...)``,
    ``rewards (N, T)``, ``mask (N, T)`` (``info["mask"]``: 1.0 where the step belongs to the episode;
    finished rows are frozen by the environment and contribute reward 0 there), every extra
    ``(N, T, ...)``, and ``task_index (N,)``.  The rllab return of row ``r`` is
    ``rewards[r].sum()``.
    """
    obs = env.reset(rng)
    prev_action = prev_reward = None
    rec = {"obs": [], "actions": [], "rewards": [], "mask": []}
    for t in range(env.horizon):
        out = act(obs, t, prev_action, prev_reward)
        a, extras = out if isinstance(out, tuple) else (out, {})
        a = onp.asarray(a)
        next_obs, reward, _, _, info = env.step(a)
        for k, v in (("obs", obs), ("actions", a), ("rewards", reward), ("mask", info["mask"]),
                     *extras.items()):
            rec.setdefault(k, []).append(onp.asarray(v))
        obs, prev_action, prev_reward = next_obs, a, reward
    traj = {k: onp.stack(v, axis=1) for k, v in rec.items()}
    traj["task_index"] = onp.asarray(env.task_index).copy()
    return traj
