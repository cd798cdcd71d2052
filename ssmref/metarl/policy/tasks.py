"""Both policies run task-batched: one set of parameters per task, all tasks in one computation.

MAML-RL adapts one policy per task; MetaMAML samples, adapts and differentiates all ``M`` tasks of
a meta-batch at once instead of one by one.  Here every parameter leaf carries a leading task
axis, ``Θ_p: (M, ...)`` (``Θ_p[i]`` is task ``i``'s copy; :func:`ssmref.maml.tile_params` builds
``Θ`` from ``θ``), and every array a leading ``(M, E)`` (tasks, episodes of a task)::

    dense:  y[i] = x[i] W[i]^T + b[i]                    x: (M, ..., in) -> (M, ..., out)
    SSM:    h_t[i] = A[i] h_{t-1}[i] + B[i] x_t[i],   y_t[i] = C[i] h_t[i] + D[i] x_t[i]

so task ``i``'s outputs depend on ``Θ[i]`` only, and ``∇_Θ Σ_i L_i`` holds every task's gradient
(what :func:`ssmref.maml.batched_meta_loss` relies on).  The equations of each policy are those of
:mod:`ssmref.metarl.policy.core` (SSM policy) and :mod:`ssmref.metarl.policy.mlp` (Gaussian MLP);
the tests check that task ``i`` of the batched forms equals the one-policy forms with ``Θ[i]``.

Two deliberate differences from the one-policy forms: the value head of the SSM policy is not
computed (MAML-RL uses the linear baseline; the value head gets no gradient from its loss), and
the sequence form of an SSM whose spec asks for ``"parallel"`` uses the convolution (the modes
give the same values to rounding, ``docs/policy.md``).  Unchecked: the trainer checks once.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.metarl.policy.core import (ACTIVATION, encode_actions, log_prob, policy_inputs_core,
                                       sample)
from ssmref.metarl.rl.rollout import rollout
from ssmref.nn import get_activation
from ssmref.params import stop_gradient, tree_map
from ssmref.ssm.convolution import next_pow2


def tile_values(params, num_tasks):
    """``Θ`` with ``Θ_p[i] = θ_p`` as plain arrays (for sampling; not differentiable)."""
    return tree_map(lambda p: onp.repeat(onp.asarray(p)[None], num_tasks, axis=0),
                    stop_gradient(params))


def split_tasks(x, num_tasks):
    """``(M * E, ...) -> (M, E, ...)``: the task-major rows of a vectorized env, by task."""
    return np.reshape(x, (num_tasks, -1) + np.shape(x)[1:])


# y[i] = x[i] W[i]^T + b[i]
def dense_tasks(layer, x):
    """One dense layer per task: ``W: (M, out, in)``, ``b: (M, out)``, ``x: (M, ..., in)``."""
    shape = np.shape(x)
    M, out = np.shape(layer["b"])
    flat = np.reshape(x, (M, -1, shape[-1]))                                  # (M, R, in)
    y = np.matmul(flat, np.swapaxes(layer["W"], 1, 2)) + layer["b"][:, None, :]   # (M, R, out)
    return np.reshape(y, shape[:-1] + (out,))


# relu(x) = x * [x > 0], the indicator a constant: the values and every derivative of
# ssmref.nn.relu (derivative 0 at 0), one product per pass instead of a where and a zeros array
def _relu(x):
    return x * (getval(x) > 0)


def mlp_tasks(params, x, activation):
    """:func:`ssmref.nn.mlp_apply` per task (hidden ``activation``, linear output layer)."""
    act, n = (_relu if activation == "relu" else get_activation(activation)), len(params)
    h = x
    for i in range(n):
        h = dense_tasks(params[f"layer{i}"], h)
        h = h if i == n - 1 else act(h)
    return h


def _per_task_log_std(log_std, ndim):
    """``(M, d) -> (M, 1, ..., 1, d)`` broadcasting against means of ``ndim`` dims."""
    M, d = np.shape(log_std)
    return np.reshape(log_std, (M,) + (1,) * (ndim - 2) + (d,))


# ---------------------------------------------------------------------------------------------
# The SSM per task
# ---------------------------------------------------------------------------------------------

# [A^0 X, A^1 X, ..., A^{L-1} X] per task, by doubling: the next L terms are A^L times the first L
def _powers_times_tasks(A, X, length):
    S = X[:, None]                                                    # (M, 1, n, k)
    power = A                                                         # (M, n, n)
    while np.shape(S)[1] < length:
        S = np.concatenate([S, np.matmul(power[:, None], S)], axis=1)
        power = np.matmul(power, power)
    return S[:, :length]                                              # (M, L, n, k)


# y_t = Σ_{k<=t} C A^k B x_{t-k} + D x_t   (causal FFT convolution, explicitly zero-padded)
def _ssm_convolve_tasks(ssm, x):
    M, E, T, m = np.shape(x)
    K = np.matmul(ssm["C"][:, None], _powers_times_tasks(ssm["A"], ssm["B"], T))   # (M, T, p, m)
    N = next_pow2(2 * T)
    Kp = np.concatenate([K, np.zeros((M, N - T) + np.shape(K)[2:])], axis=1)       # (M, N, p, m)
    xp = np.concatenate([x, np.zeros((M, E, N - T, m))], axis=2)                    # (M, E, N, m)
    zf = np.einsum("sfpm,sefm->sefp", np.fft.rfft(Kp, axis=1), np.fft.rfft(xp, axis=2))
    z = np.fft.irfft(zf, axis=2)[:, :, :T, :]                                       # (M, E, T, p)
    return z + dense_tasks({"W": ssm["D"], "b": np.zeros((M, np.shape(ssm["D"])[1]))}, x)


# h_t = A h_{t-1} + B x_t,  y_t = C h_t + D x_t,  h_{-1} = 0
def _ssm_step_tasks(ssm, h, x):
    h_next = (np.matmul(h, np.swapaxes(ssm["A"], 1, 2))
              + np.matmul(x, np.swapaxes(ssm["B"], 1, 2)))                          # (M, E, n)
    y = (np.matmul(h_next, np.swapaxes(ssm["C"], 1, 2))
         + np.matmul(x, np.swapaxes(ssm["D"], 1, 2)))                               # (M, E, p)
    return y, h_next


def _ssm_scan_tasks(ssm, x):
    M, E, T, _ = np.shape(x)
    h = np.zeros((M, E, np.shape(ssm["A"])[1]))
    ys = []
    for t in range(T):
        y, h = _ssm_step_tasks(ssm, h, x[:, :, t, :])
        ys.append(y)
    return np.stack(ys, axis=2)                                                     # (M, E, T, p)


def _ssm_heads(params, spec, y, obs):
    head = mlp_tasks(params["pi"], np.concatenate([y, obs], axis=-1), ACTIVATION)
    if spec.discrete:
        return {"logits": head}
    return {"mean": head, "log_std": _per_task_log_std(params["log_std"], np.ndim(head))}


# ---------------------------------------------------------------------------------------------
# Distributions of whole episodes, one step, rollouts
# ---------------------------------------------------------------------------------------------

def tasks_distribution(params, spec, obs, actions, rewards):
    """The action distributions of whole episodes, task-batched: ``obs: (M, E, T, obs_dim)``,
    ``actions``, ``rewards``: the episodes' own (aligned with ``obs``, read by the SSM policy with
    ``use_prev_action_reward`` only).  Returns ``{"mean" (M, E, T, d), "log_std" (M, 1, 1, d)}``
    or ``{"logits" (M, E, T, K)}``."""
    if spec.kind == "mlp":
        mean = mlp_tasks(params["pi"], obs, spec.activation)
        return {"mean": mean, "log_std": _per_task_log_std(params["log_std"], np.ndim(mean))}
    x = policy_inputs_core(spec, obs, actions, rewards)                             # (M, E, T, in)
    y = _ssm_scan_tasks(params["ssm"], x) if spec.mode == "scan" else \
        _ssm_convolve_tasks(params["ssm"], x)
    return _ssm_heads(params, spec, y, obs)


def tasks_step(params, spec, state, obs, prev_action, prev_reward):
    """One step of ``M * E`` episodes: ``(distribution, state)``; ``obs: (M, E, obs_dim)``,
    ``prev_action``/``prev_reward``: ``None`` at the episodes' first step.  ``state``: the SSM
    states ``(M, E, n)`` (``None`` at the first step), always ``None`` for the MLP policy."""
    if spec.kind == "mlp":
        mean = mlp_tasks(params["pi"], obs, spec.activation)
        return {"mean": mean, "log_std": _per_task_log_std(params["log_std"], 3)}, None
    M, E = np.shape(obs)[:2]
    h = np.zeros((M, E, spec.state_dim)) if state is None else state
    x = obs
    if spec.use_prev_action_reward:
        if prev_action is None:
            ar = np.zeros((M, E, spec.action_dim + 1))                # e(a_{-1}) = 0, r_{-1} = 0
        else:
            ar = np.concatenate([encode_actions(spec, prev_action), prev_reward[..., None]], -1)
        x = np.concatenate([obs, ar], axis=-1)                        # (M, E, in_dim)
    y, h_next = _ssm_step_tasks(params["ssm"], h, x)
    return _ssm_heads(params, spec, y, obs), h_next


def tasks_rollout(params, spec, env, rng, num_tasks):
    """Run ``env`` (``num_tasks * E`` task-major rows) for ``env.horizon`` steps, task ``i``'s
    rows with ``Θ[i]``: :func:`ssmref.metarl.rl.rollout`'s keys (``obs (N, T, obs_dim)``,
    ``actions``, ``rewards``, ``mask``, ``task_index``) and ``log_probs (N, T)``, ``N = M * E``.
    Actions are drawn from ``rng`` for all rows at once, step by step."""
    params, M = stop_gradient(params), num_tasks
    state = None

    def act(obs, t, prev_action, prev_reward):
        nonlocal state
        by_task = [None if v is None else split_tasks(v, M) for v in (prev_action, prev_reward)]
        dist, state = tasks_step(params, spec, state, split_tasks(obs, M), *by_task)
        a = onp.asarray(sample(spec, dist, rng))                      # (M, E) or (M, E, d)
        lp = onp.asarray(log_prob(spec, dist, a))                     # (M, E)
        return a.reshape((-1,) + a.shape[2:]), {"log_probs": lp.reshape(-1)}
    return rollout(env, act, rng)
