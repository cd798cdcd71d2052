"""The SSM policy's functional core: inputs, heads, the sequence and step forms, distributions.

The model, for one episode ``t = 0, 1, ..., T-1`` (``docs/policy.md`` is the same spec in prose)::

    x_t = o_t                                            use_prev_action_reward = False
    x_t = [o_t, e(a_{t-1}), r_{t-1}]                     use_prev_action_reward = True
          e(a) = one_hot(a, K) (discrete)  or  a (continuous, the raw sampled vector)
          a_{-1} = 0 (the zero vector, NOT one_hot(0)),  r_{-1} = 0
    h_t = A h_{t-1} + B x_t,          h_{-1} = 0         (reset at every episode start)
    y_t = C h_t + D x_t                                  (the output reads the NEW state)
    z_t = [y_t, o_t]                                     (features: SSM output, then observation)
    logits_t = MLP_pi(z_t)      (discrete, K classes)    or    mean_t = MLP_pi(z_t)  (continuous, d)
    V_t      = MLP_v(z_t)                                (a scalar)
    pi(a | history) = Categorical(softmax(logits_t))     or    N(mean_t, diag(exp(log_std))^2)

``log_std: (d,)`` is a learned, state-independent parameter.  The MLPs have ``tanh`` hidden layers
and a linear output layer (:func:`ssmref.nn.mlp_apply`).  Log-probabilities of vector actions are
summed over the action dimension (:func:`ssmref.nn.gaussian_log_prob`).  Shapes and the parameter
tree: :mod:`ssmref.metarl.policy.spec`.

Two forms compute the same numbers (to rounding, tested to 1e-12):

- the *sequence* form, :func:`policy_sequence`, runs whole episodes ``(N, T, obs_dim)``, each row
  from the zero state, with any of the SSM's modes (``"scan"``, ``"convolve"``, ``"parallel"``);
- the *step* form, :func:`policy_step`, advances ``N`` parallel episodes by one step for rollouts;
  ``reset (N,)`` starts a new episode in the rows where it is True (zero state, zero previous
  action and reward), so consecutive episodes can stream through one state.

Everything here is a pure function of ``params`` (no in-place writes), differentiable with autograd
to any order.  Each public function checks its arguments (:mod:`ssmref.metarl.policy.args`) and
calls its unchecked twin ``name_core``; the trainers and :func:`policy_rollout` call those
directly once their boundary has checked.

References: Duan et al., "RL^2: Fast Reinforcement Learning via Slow Reinforcement Learning" (2016)
for the (o, a_{t-1}, r_{t-1}) input; Finn et al., "Model-Agnostic Meta-Learning" (ICML 2017) for the
Gaussian MLP policy of MAML-RL; Gu et al., S4 (ICLR 2022) for the SSM layer.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_choice
from ssmref.metarl.policy.args import as_float, check_env, episode_args, step_args
from ssmref.metarl.policy.spec import check_params
from ssmref.metarl.rl.rollout import rollout
from ssmref.nn import (categorical_entropy, categorical_log_prob, categorical_sample,
                       gaussian_entropy, gaussian_log_prob, gaussian_sample, mlp_apply)
from ssmref.params import stop_gradient
from ssmref.rng import as_rng
from ssmref.ssm import MODES, run_ssm, ssm_states, ssm_step

ACTIVATION = "tanh"             # hidden layers of both heads; the output layers are linear


# ---------------------------------------------------------------------------------------------
# The SSM input x_t
# ---------------------------------------------------------------------------------------------

def encode_actions(spec, actions):
    """``e(a)``: ``one_hot(a, K)`` for discrete int actions ``(...) -> (..., K)``; continuous
    actions ``(..., d)`` unchanged.  An integer outside ``[0, K)`` encodes as the zero vector."""
    if spec.discrete:
        a = onp.asarray(getval(actions))
        return (a[..., None] == onp.arange(spec.action_dim)).astype(onp.float64)   # (..., K)
    return actions


# x_t = [o_t, e(a_{t-1}), r_{t-1}],  e(a_{-1}) = 0,  r_{-1} = 0   (or x_t = o_t)
def policy_inputs_core(spec, obs, prev_actions, prev_rewards):
    if not spec.use_prev_action_reward:
        return obs
    lead = np.shape(obs)[:-1]                                       # (..., T)
    ar = np.concatenate([encode_actions(spec, prev_actions), prev_rewards[..., None]],
                        axis=-1)                                    # (..., T, K+1) or (..., T, d+1)
    zero = np.zeros(lead[:-1] + (1, spec.action_dim + 1))           # (..., 1, K+1): a_{-1}, r_{-1}
    shifted = np.concatenate([zero, ar[..., :-1, :]], axis=-2)      # (..., T, K+1)
    return np.concatenate([obs, shifted], axis=-1)                  # (..., T, in_dim)


def policy_inputs(spec, obs, prev_actions=None, prev_rewards=None):
    """The SSM inputs ``x: (..., T, in_dim)`` of whole episodes.

    ``obs: (..., T, obs_dim)``; ``prev_actions`` and ``prev_rewards`` are the episode's own actions
    ``a_t`` (``(..., T)`` ints or ``(..., T, d)``) and rewards ``r_t`` (``(..., T)``), aligned with
    ``obs`` as a rollout records them; they are shifted here by one step, so ``x_t`` reads
    ``a_{t-1}, r_{t-1}``, zeros at ``t = 0``, and ``a_{T-1}, r_{T-1}`` are not used::

        x_t = [o_t, e(a_{t-1}), r_{t-1}],    e(a_{-1}) = 0,  r_{-1} = 0

    Without ``spec.use_prev_action_reward`` ``x = obs``, and ``prev_actions`` / ``prev_rewards``
    are ignored (their shapes are still checked when given).
    """
    return policy_inputs_core(spec, *episode_args(spec, obs, prev_actions, prev_rewards))


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------

# z = [y, o];  logits | mean = MLP_pi(z),  V = MLP_v(z)
def policy_heads(params, spec, y, obs):
    """The heads on ``z = [y, obs]``: ``y: (..., p)``, ``obs: (..., obs_dim)`` -> a dict

    ``"logits" (..., K)`` (discrete) or ``"mean" (..., d)`` and ``"log_std" (d,)`` (continuous),
    ``"values" (...)`` and ``"features" (..., p)`` (``= y``, the SSM outputs).  Unchecked.
    """
    z = np.concatenate([y, obs], axis=-1)                                    # (..., p + obs_dim)
    head = mlp_apply(params["pi"], z, activation=ACTIVATION)                 # (..., K or d)
    values = mlp_apply(params["v"], z, activation=ACTIVATION)[..., 0]        # (...)
    out = {"logits": head} if spec.discrete else {"mean": head, "log_std": params["log_std"]}
    out["values"] = values
    out["features"] = y
    return out


# ---------------------------------------------------------------------------------------------
# Sequence form
# ---------------------------------------------------------------------------------------------

# h_t = A h_{t-1} + B x_t,  y_t = C h_t + D x_t,  h_{-1} = 0;  then the heads at every step
def policy_sequence_core(params, spec, obs, prev_actions, prev_rewards, mode, return_states=False):
    x = policy_inputs_core(spec, obs, prev_actions, prev_rewards)   # (N, T, in_dim)
    y, _ = run_ssm(params["ssm"], x, None, mode)                    # (N, T, p)
    out = policy_heads(params, spec, y, obs)
    if return_states:
        out["states"] = ssm_states(params["ssm"], x, None, mode)    # (N, T, n)
    return out


def policy_sequence(params, spec, obs, prev_actions=None, prev_rewards=None, mode=None,
                    return_states=False):
    """The policy on whole episodes, each row from the zero state.

    ``obs: (N, T, obs_dim)`` (or ``(T, obs_dim)``); ``prev_actions``, ``prev_rewards``: the
    episodes' actions and rewards, aligned with ``obs`` (see :func:`policy_inputs`; needed only
    with ``use_prev_action_reward``).  ``mode`` (default ``spec.mode``) picks the SSM's
    ``"scan"``, ``"convolve"`` or ``"parallel"`` form; all give the same values.

    Returns the dict of :func:`policy_heads` with leading dims ``(N, T)``: ``"logits"`` or
    ``"mean"``/``"log_std"``, ``"values" (N, T)``, ``"features" (N, T, p)``; with
    ``return_states`` also ``"states" (N, T, n)``, the SSM states ``h_t``.
    """
    check_params(params, spec)
    mode = check_choice("mode", spec.mode if mode is None else mode, tuple(MODES))
    obs, prev_actions, prev_rewards = episode_args(spec, obs, prev_actions, prev_rewards)
    return policy_sequence_core(params, spec, obs, prev_actions, prev_rewards, mode, return_states)


# ---------------------------------------------------------------------------------------------
# Step form
# ---------------------------------------------------------------------------------------------

# starting rows: h_{-1} = 0, e(a_{-1}) = 0, r_{-1} = 0;  then one step of the SSM and the heads
def policy_step_core(params, spec, h, obs, prev_action, prev_reward, reset):
    N = np.shape(obs)[0]
    if h is None:
        h, reset = np.zeros((N, spec.state_dim)), onp.ones(N, dtype=bool)
    if reset is not None:
        h = np.where(reset[:, None], 0.0, h)                         # (N, n): h_{-1} = 0
    x = obs
    if spec.use_prev_action_reward:
        if prev_action is None or prev_reward is None:               # every row starts now
            ar = np.zeros((N, spec.action_dim + 1))
        else:
            ar = np.concatenate([encode_actions(spec, prev_action), prev_reward[:, None]],
                                axis=-1)                             # (N, K+1) or (N, d+1)
            if reset is not None:
                ar = np.where(reset[:, None], 0.0, ar)               # e(a_{-1}) = 0, r_{-1} = 0
        x = np.concatenate([obs, ar], axis=-1)                       # (N, in_dim)
    y, h_next = ssm_step(params["ssm"], h, x)                        # (N, p), (N, n)
    return policy_heads(params, spec, y, obs), h_next


def policy_step(params, spec, h, obs, prev_action=None, prev_reward=None, reset=None):
    """One step of ``N`` parallel episodes: ``(out, h_next)``.

    ``h: (N, n)``, the state after the previous step, or ``None``: every row starts an episode now.
    ``obs: (N, obs_dim)``; ``prev_action``: ``a_{t-1}``, ``(N,)`` ints or ``(N, d)``;
    ``prev_reward``: ``r_{t-1}``, ``(N,)``.  ``reset: (N,)`` bool, True where an episode starts now:
    those rows get ``h_{-1} = 0`` and ``e(a_{-1}) = 0``, ``r_{-1} = 0`` whatever was passed (a
    discrete action there need not be a valid index).  With ``use_prev_action_reward``,
    ``prev_action`` / ``prev_reward`` may be ``None`` only when every row starts now.

    ``out`` is the dict of :func:`policy_heads` for this step (``"values" (N,)``,
    ``"features" (N, p)``); ``h_next = h_t: (N, n)``.
    """
    check_params(params, spec)
    return policy_step_core(params, spec, *step_args(spec, h, obs, prev_action, prev_reward, reset))


# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------

def log_prob(spec, out, actions):
    """``log pi(a)`` per step, ``(...)``: :func:`ssmref.nn.categorical_log_prob` of
    ``out["logits"]`` or :func:`ssmref.nn.gaussian_log_prob` of ``out["mean"], out["log_std"]``
    (summed over the action dimension)."""
    if spec.discrete:
        return categorical_log_prob(out["logits"], actions)
    return gaussian_log_prob(out["mean"], out["log_std"], as_float("actions", actions))


def entropy(spec, out):
    """``H(pi)`` per step, ``(...)``: categorical entropy, or the Gaussian's summed over dims."""
    if spec.discrete:
        return categorical_entropy(out["logits"])
    return gaussian_entropy(out["log_std"], out["mean"])


def sample(spec, out, rng=None, deterministic=False):
    """Actions ``(...)`` int64 (discrete, Gumbel-max) or ``(..., d)`` (Gaussian,
    ``mean + exp(log_std) * xi``, reparameterised).  ``deterministic``: the mode (``argmax``
    of the logits, or the mean), drawing nothing."""
    if spec.discrete:
        if deterministic:
            return onp.argmax(getval(out["logits"]), axis=-1).astype(onp.int64)
        return categorical_sample(out["logits"], rng)
    if deterministic:
        return out["mean"]
    return gaussian_sample(out["mean"], out["log_std"], rng)


# ---------------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------------

# a_t ~ pi(. | o_<=t, a_<t, r_<t) by the step form, fed back into the environment
def policy_rollout_core(params, spec, env, rng, deterministic=False):
    params = stop_gradient(params)
    h = None

    def act(obs, t, prev_action, prev_reward):
        nonlocal h
        out, h = policy_step_core(params, spec, h, obs, prev_action, prev_reward, None)
        a = onp.asarray(sample(spec, out, rng, deterministic))
        return a, {"log_probs": log_prob(spec, out, a), "values": out["values"]}
    return rollout(env, act, rng)


def policy_rollout(params, spec, env, rng=None, deterministic=False):
    """Run every row of a vectorized environment (:mod:`ssmref.metarl.envs`) for ``env.horizon``
    steps with :func:`policy_step`, feeding back each step's action and reward
    (:func:`ssmref.metarl.rl.rollout` with this policy as ``act``).

    Returns the keys of :func:`ssmref.metarl.rl.rollout`, ``obs (N, T, obs_dim)``, ``actions``,
    ``rewards (N, T)``, ``mask (N, T)``, ``task_index (N,)``, plus ``log_probs (N, T)`` and
    ``values (N, T)`` as computed during the rollout (plain arrays; nothing is differentiated).
    ``rng`` (one generator) is passed to ``env.reset`` and then draws the actions.
    """
    check_env(spec, env)
    check_params(params, spec)
    return policy_rollout_core(params, spec, env, as_rng(rng), deterministic)
