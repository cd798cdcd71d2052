"""The SSM policy for meta-RL: a linear state space model over (observation, previous action,
previous reward), and two MLP heads, a policy and a value, on its output and the observation.

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
summed over the action dimension (:func:`ssmref.nn.gaussian_log_prob`).

Shapes: ``obs_dim`` = dim of ``o_t``; ``action_dim`` = ``K`` (number of actions) when discrete,
``d`` when continuous; ``in_dim = obs_dim`` or ``obs_dim + action_dim + 1``; ``n = state_dim``;
``p = ssm_output_dim``; ``feature_dim = p + obs_dim``.  Parameter tree (keys without dots)::

    {"ssm": {"A": (n, n), "B": (n, in_dim), "C": (p, n), "D": (p, in_dim)},
     "pi":  {"layer0": {"W": (h1, feature_dim), "b": (h1,)}, ..., "layerL": {"W": (K|d, hL), ...}},
     "v":   {"layer0": {"W": (h1, feature_dim), "b": (h1,)}, ..., "layerL": {"W": (1, hL), ...}},
     "log_std": (d,)}                                    (continuous only)

The static configuration (dims, ``discrete``, ``use_prev_action_reward``, the hidden sizes, the
sequence mode) lives in a frozen :class:`PolicySpec`, apart from the differentiable ``params``.

Two forms compute the same numbers (to rounding, tested to 1e-12):

- the *sequence* form, :func:`policy_sequence`, runs whole episodes ``(N, T, obs_dim)``, each row
  from the zero state, with any of the SSM's modes (``"scan"``, ``"convolve"``, ``"parallel"``);
- the *step* form, :func:`policy_step`, advances ``N`` parallel episodes by one step for rollouts;
  ``reset (N,)`` starts a new episode in the rows where it is True (zero state, zero previous
  action and reward), so consecutive episodes can stream through one state.

Everything in the functional core is a pure function of ``params`` (no in-place writes), so it is
differentiable with autograd to any order.  :class:`SSMMetaPolicy` is a thin stateful shell: it
holds ``params`` (read at call time, so the test-time adapter can swap traced parameters in), the
spec, and the hidden state of a rollout.

References: Duan et al., "RL^2: Fast Reinforcement Learning via Slow Reinforcement Learning" (2016)
for the (o, a_{t-1}, r_{t-1}) input; Finn et al., "Model-Agnostic Meta-Learning" (ICML 2017) for the
Gaussian MLP policy of MAML-RL; Gu et al., S4 (ICLR 2022) for the SSM layer.
"""

import dataclasses
import json

import autograd.numpy as np
import numpy as onp
from autograd.tracer import Box, getval

from . import params as P
from ssmref.metarl.rl.rollout import rollout
from .nn import (categorical_entropy, categorical_log_prob, categorical_sample, gaussian_entropy,
                 gaussian_log_prob, gaussian_sample, mlp_apply, mlp_init)
from .rng import as_rng
from .ssm import MODES, init_ssm, run_ssm, ssm_step

__all__ = ["PolicySpec", "SSMMetaPolicy", "policy_init", "policy_param_shapes", "check_params",
           "encode_actions", "policy_inputs", "policy_heads", "policy_sequence", "policy_step",
           "log_prob", "entropy", "sample", "policy_rollout", "FORMAT"]

FORMAT = "ssmref.policy/1"      # written into saved files; load refuses anything else
ACTIVATION = "tanh"             # hidden layers of both heads; the output layers are linear


# ---------------------------------------------------------------------------------------------
# The static configuration
# ---------------------------------------------------------------------------------------------

def _check_int(name, value, minimum=1):
    if isinstance(value, (bool, onp.bool_)) or not isinstance(value, (int, onp.integer)) \
            or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_bool(name, value):
    if not isinstance(value, (bool, onp.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """Everything about a policy that is not a differentiable array.  Validated on construction.

    ``action_dim`` is the number of actions ``K`` when ``discrete``, the action vector's ``d``
    otherwise.  ``mode`` is the default SSM mode of the sequence form.
    """
    obs_dim: int
    action_dim: int
    discrete: bool
    state_dim: int = 16                   # n
    ssm_output_dim: int = 16              # p
    hidden_sizes: tuple = (64, 64)        # hidden widths of both heads (may be empty: linear heads)
    use_prev_action_reward: bool = False  # x_t = [o_t, e(a_{t-1}), r_{t-1}] instead of o_t
    mode: str = "convolve"                # "scan" | "convolve" | "parallel"

    def __post_init__(self):
        for name in ("obs_dim", "action_dim", "state_dim", "ssm_output_dim"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name)))
        for name in ("discrete", "use_prev_action_reward"):
            object.__setattr__(self, name, _check_bool(name, getattr(self, name)))
        sizes = self.hidden_sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise ValueError(f"hidden_sizes must be a sequence of ints, got {self.hidden_sizes!r}")
        sizes = tuple(_check_int(f"hidden_sizes[{i}]", h) for i, h in enumerate(sizes))
        object.__setattr__(self, "hidden_sizes", sizes)
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if self.discrete and self.action_dim < 2:
            raise ValueError(f"a discrete policy needs action_dim (the number of actions) >= 2, "
                             f"got {self.action_dim}")

    @property
    def input_dim(self):
        """``in_dim``, the SSM's input width: ``obs_dim`` (+ ``action_dim + 1``)."""
        return self.obs_dim + (self.action_dim + 1 if self.use_prev_action_reward else 0)

    @property
    def feature_dim(self):
        """Width of ``z_t = [y_t, o_t]``: ``ssm_output_dim + obs_dim``."""
        return self.ssm_output_dim + self.obs_dim

    def to_json(self):
        """The spec as a JSON string (sorted keys, with the file format tag)."""
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["format"] = FORMAT
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Inverse of :meth:`to_json`; ``ValueError`` on anything malformed."""
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ValueError(f"spec is not valid JSON ({e})") from None
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) != fields | {"format"}:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"spec must be a JSON object with keys {sorted(fields | {'format'})}, "
                             f"got {got}")
        if d.pop("format") != FORMAT:
            raise ValueError(f"spec format must be {FORMAT!r}")
        if not isinstance(d["hidden_sizes"], list):
            raise ValueError(f"spec hidden_sizes must be a list, got {d['hidden_sizes']!r}")
        return cls(**d)


def policy_param_shapes(spec):
    """The flat parameter layout ``{"ssm.A": (n, n), ..., "log_std": (d,)}`` of ``spec``."""
    n, p, m, f = spec.state_dim, spec.ssm_output_dim, spec.input_dim, spec.feature_dim
    shapes = {"ssm.A": (n, n), "ssm.B": (n, m), "ssm.C": (p, n), "ssm.D": (p, m)}
    for head, out in (("pi", spec.action_dim), ("v", 1)):
        sizes = [f, *spec.hidden_sizes, out]
        for i in range(len(sizes) - 1):
            shapes[f"{head}.layer{i}.W"] = (sizes[i + 1], sizes[i])
            shapes[f"{head}.layer{i}.b"] = (sizes[i + 1],)
    if not spec.discrete:
        shapes["log_std"] = (spec.action_dim,)
    return dict(sorted(shapes.items()))


def check_params(params, spec):
    """``ValueError`` unless ``params`` has exactly the leaves and shapes of ``spec``.

    Works on autograd ``DictBox`` trees (nodes are recognised by ``keys``, never by type).
    """
    if not isinstance(spec, PolicySpec):
        raise ValueError(f"spec must be a PolicySpec, got {type(spec).__name__}")
    want = policy_param_shapes(spec)
    flat = P.flatten_dict(params)
    missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
    if missing or extra:
        raise ValueError(f"params do not match the spec: missing {missing}, unexpected {extra}")
    for name, shape in want.items():
        if np.shape(flat[name]) != shape:
            raise ValueError(f"params[{name!r}] has shape {np.shape(flat[name])}, expected {shape}")


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------

def policy_init(obs_dim, action_dim, *, discrete, state_dim=16, ssm_output_dim=16,
                hidden_sizes=(64, 64), use_prev_action_reward=False, init_log_std=0.0,
                ssm_scale=0.9, ssm_method="random", dt=0.1, mode="convolve", rng=None):
    """``(params, spec)`` of a new policy.

    Drawn in this order from one generator (so an int seed fixes everything):
    ``params["ssm"] = init_ssm(in_dim, state_dim, ssm_output_dim, scale=ssm_scale,
    method=ssm_method, dt=dt)`` (``"random"``: spectral radius of ``A`` exactly ``ssm_scale``;
    ``"hippo"``: HiPPO-LegS discretized at ``dt``), then ``params["pi"] = mlp_init([feature_dim,
    *hidden_sizes, action_dim])``, then ``params["v"] = mlp_init([feature_dim, *hidden_sizes, 1])``
    (LeCun-normal weights, zero biases).  Continuous policies get
    ``params["log_std"] = init_log_std * ones(d)`` (``init_log_std`` a float or a ``(d,)`` array).
    """
    spec = PolicySpec(obs_dim, action_dim, discrete, state_dim, ssm_output_dim, hidden_sizes,
                      use_prev_action_reward, mode)
    rng = as_rng(rng)
    f = spec.feature_dim
    params = {
        "ssm": init_ssm(spec.input_dim, spec.state_dim, spec.ssm_output_dim, rng=rng,
                        scale=ssm_scale, method=ssm_method, dt=dt),
        "pi": mlp_init([f, *spec.hidden_sizes, spec.action_dim], rng=rng),
        "v": mlp_init([f, *spec.hidden_sizes, 1], rng=rng),
    }
    if not spec.discrete:
        ls = onp.asarray(init_log_std, dtype=onp.float64)
        if ls.shape not in ((), (spec.action_dim,)) or not onp.all(onp.isfinite(ls)):
            raise ValueError(f"init_log_std must be a finite float or have shape "
                             f"({spec.action_dim},), got {init_log_std!r}")
        params["log_std"] = onp.broadcast_to(ls, (spec.action_dim,)).copy()
    return params, spec


# ---------------------------------------------------------------------------------------------
# Input validation (on values, never differentiated)
# ---------------------------------------------------------------------------------------------

def _as_float(x):
    """``x`` as a float64 array, or unchanged if it is an autograd box (being differentiated)."""
    return x if isinstance(x, Box) else onp.asarray(x, dtype=onp.float64)


def _check_sequence_obs(spec, obs):
    obs = _as_float(obs)
    if np.ndim(obs) not in (2, 3) or np.shape(obs)[-1] != spec.obs_dim or np.shape(obs)[-2] < 1:
        raise ValueError(f"obs must have shape (T, {spec.obs_dim}) or (N, T, {spec.obs_dim}) "
                         f"with T >= 1, got {np.shape(obs)}")
    return obs


def _check_actions(spec, name, actions, lead, check_range=None):
    """``actions`` of shape ``lead`` (int, discrete) or ``lead + (d,)`` (float, continuous).

    ``check_range`` (bool, shape ``lead``): only those entries of discrete actions must lie in
    ``[0, K)`` (the others are ignored by the caller); ``None`` checks all.
    """
    K = spec.action_dim
    if spec.discrete:
        a = onp.asarray(getval(actions))
        if a.shape != lead:
            raise ValueError(f"{name} must have shape {lead} (integer actions), got {a.shape}")
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer array (discrete actions), "
                             f"got dtype {a.dtype}")
        sel = a if check_range is None else a[check_range]
        if sel.size and (sel.min() < 0 or sel.max() >= K):
            raise ValueError(f"{name} must lie in [0, {K}), "
                             f"got values in [{sel.min()}, {sel.max()}]")
        return a
    a = _as_float(actions)
    if np.shape(a) != lead + (K,):
        raise ValueError(f"{name} must have shape {lead + (K,)}, got {np.shape(a)}")
    return a


def _check_rewards(name, rewards, lead):
    r = _as_float(rewards)
    if np.shape(r) != lead:
        raise ValueError(f"{name} must have shape {lead}, got {np.shape(r)}")
    return r


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
    obs = _check_sequence_obs(spec, obs)
    lead = np.shape(obs)[:-1]                                       # (..., T)
    if prev_actions is not None:
        prev_actions = _check_actions(spec, "prev_actions", prev_actions, lead)
    if prev_rewards is not None:
        prev_rewards = _check_rewards("prev_rewards", prev_rewards, lead)
    if not spec.use_prev_action_reward:
        return obs
    if prev_actions is None or prev_rewards is None:
        raise ValueError("this policy reads the previous action and reward "
                         "(use_prev_action_reward=True): pass prev_actions and prev_rewards")
    ar = np.concatenate([encode_actions(spec, prev_actions), prev_rewards[..., None]],
                        axis=-1)                                    # (..., T, K+1) or (..., T, d+1)
    zero = np.zeros(lead[:-1] + (1, spec.action_dim + 1))           # (..., 1, K+1): a_{-1}, r_{-1}
    shifted = np.concatenate([zero, ar[..., :-1, :]], axis=-2)      # (..., T, K+1)
    return np.concatenate([obs, shifted], axis=-1)                  # (..., T, in_dim)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------

def policy_heads(params, spec, y, obs):
    """The heads on ``z = [y, obs]``: ``y: (..., p)``, ``obs: (..., obs_dim)`` -> a dict

    ``"logits" (..., K)`` (discrete) or ``"mean" (..., d)`` and ``"log_std" (d,)`` (continuous),
    ``"values" (...)`` and ``"features" (..., p)`` (``= y``, the SSM outputs).
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

def _state_params(ssm):
    """The SSM with ``C = I``, ``D = 0``: its outputs are the states ``h_t``."""
    n, m = np.shape(ssm["B"])
    return {"A": ssm["A"], "B": ssm["B"], "C": onp.eye(n), "D": onp.zeros((n, m))}


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
    mode = spec.mode if mode is None else mode
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    obs = _check_sequence_obs(spec, obs)
    x = policy_inputs(spec, obs, prev_actions, prev_rewards)         # (N, T, in_dim)
    y, _ = run_ssm(params["ssm"], x, None, mode)                     # (N, T, p)
    out = policy_heads(params, spec, y, obs)
    if return_states:
        out["states"] = run_ssm(_state_params(params["ssm"]), x, None, mode)[0]   # (N, T, n)
    return out


# ---------------------------------------------------------------------------------------------
# Step form
# ---------------------------------------------------------------------------------------------

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
    obs = _as_float(obs)
    if np.ndim(obs) != 2 or np.shape(obs)[-1] != spec.obs_dim:
        raise ValueError(f"obs must have shape (N, {spec.obs_dim}), got {np.shape(obs)}")
    N, n = np.shape(obs)[0], spec.state_dim
    if reset is not None:
        reset = onp.asarray(getval(reset))
        if reset.shape != (N,) or reset.dtype.kind not in "bui" or \
                not onp.all((reset == 0) | (reset == 1)):
            raise ValueError(f"reset must be a bool array of shape ({N},), got {reset.dtype} "
                             f"{reset.shape}")
        reset = reset.astype(bool)
    if h is None:
        h, reset = np.zeros((N, n)), onp.ones(N, dtype=bool)
    else:
        h = _as_float(h)
        if np.shape(h) != (N, n):
            raise ValueError(f"h must have shape ({N}, {n}), got {np.shape(h)}")
    all_start = reset is not None and bool(onp.all(reset))
    if reset is not None:
        h = np.where(reset[:, None], 0.0, h)                         # (N, n): h_{-1} = 0
    x = obs
    if spec.use_prev_action_reward:
        if prev_action is None or prev_reward is None:
            if not all_start:
                raise ValueError("this policy reads the previous action and reward "
                                 "(use_prev_action_reward=True): pass prev_action and prev_reward "
                                 "(None is allowed only when every row starts an episode)")
            ar = np.zeros((N, spec.action_dim + 1))
        else:
            live = None if reset is None else ~reset
            prev_action = _check_actions(spec, "prev_action", prev_action, (N,), live)
            prev_reward = _check_rewards("prev_reward", prev_reward, (N,))
            ar = np.concatenate([encode_actions(spec, prev_action), prev_reward[:, None]],
                                axis=-1)                             # (N, K+1) or (N, d+1)
            if reset is not None:
                ar = np.where(reset[:, None], 0.0, ar)               # e(a_{-1}) = 0, r_{-1} = 0
        x = np.concatenate([obs, ar], axis=-1)                       # (N, in_dim)
    y, h_next = ssm_step(params["ssm"], h, x)                        # (N, p), (N, n)
    return policy_heads(params, spec, y, obs), h_next


# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------

def log_prob(spec, out, actions):
    """``log pi(a)`` per step, ``(...)``: :func:`ssmref.nn.categorical_log_prob` of
    ``out["logits"]`` or :func:`ssmref.nn.gaussian_log_prob` of ``out["mean"], out["log_std"]``
    (summed over the action dimension)."""
    if spec.discrete:
        return categorical_log_prob(out["logits"], actions)
    return gaussian_log_prob(out["mean"], out["log_std"], _as_float(actions))


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

def _check_env(spec, env):
    if bool(env.discrete) != spec.discrete:
        raise ValueError(f"env.discrete is {env.discrete}, the policy's is {spec.discrete}")
    k = env.num_actions if spec.discrete else env.action_dim
    if env.obs_dim != spec.obs_dim or k != spec.action_dim:
        raise ValueError(f"env has obs_dim {env.obs_dim} and "
                         f"{'num_actions' if spec.discrete else 'action_dim'} {k}; the policy "
                         f"expects {spec.obs_dim} and {spec.action_dim}")


def policy_rollout(params, spec, env, rng=None, deterministic=False):
    """Run every row of a vectorized environment (:mod:`ssmref.metarl.envs`) for ``env.horizon``
    steps with :func:`policy_step`, feeding back each step's action and reward (:func:`ssmref.metarl.rl.rollout`
    with this policy as ``act``).

    Returns the keys of :func:`ssmref.metarl.rl.rollout`, ``obs (N, T, obs_dim)``, ``actions``,
    ``rewards (N, T)``, ``mask (N, T)``, ``task_index (N,)``, plus ``log_probs (N, T)`` and
    ``values (N, T)`` as computed during the rollout (plain arrays; nothing is differentiated).
    ``rng`` (one generator) is passed to ``env.reset`` and then draws the actions.
    """
    _check_env(spec, env)
    rng = as_rng(rng)
    params = P.stop_gradient(params)
    h = None

    def act(obs, t, prev_action, prev_reward):
        nonlocal h
        out, h = policy_step(params, spec, h, obs, prev_action, prev_reward)
        a = onp.asarray(sample(spec, out, rng, deterministic))
        return a, {"log_probs": log_prob(spec, out, a), "values": out["values"]}
    return rollout(env, act, rng)


# ---------------------------------------------------------------------------------------------
# The stateful shell
# ---------------------------------------------------------------------------------------------

def _resolve(name, value, alias_name, alias):
    if value is not None and alias is not None:
        raise ValueError(f"pass {name} or {alias_name}, not both")
    return value if value is not None else alias


class SSMMetaPolicy:
    """The SSM policy with its parameters, spec and rollout state (the prototype's
    ``SSMMetaPolicy``, with a real SSM layer).

    ``params`` is the parameter tree, read **at call time** by every method, so an adapter can set
    ``model.params`` to a tree of autograd boxes and differentiate through :meth:`forward`.
    ``spec`` is the :class:`PolicySpec`.  ``hidden_state`` is ``None`` or the ``(N, n)`` state of
    the rollout driven by :meth:`act`.
    """

    def __init__(self, obs_dim, action_dim, *, discrete, state_dim=16, ssm_output_dim=16,
                 hidden_sizes=(64, 64), use_prev_action_reward=False, init_log_std=0.0,
                 ssm_scale=0.9, ssm_method="random", dt=0.1, mode="convolve", rng=None):
        self.params, self.spec = policy_init(
            obs_dim, action_dim, discrete=discrete, state_dim=state_dim,
            ssm_output_dim=ssm_output_dim, hidden_sizes=hidden_sizes,
            use_prev_action_reward=use_prev_action_reward, init_log_std=init_log_std,
            ssm_scale=ssm_scale, ssm_method=ssm_method, dt=dt, mode=mode, rng=rng)
        self.reset()

    @classmethod
    def from_params(cls, params, spec):
        """A policy holding a validated copy of ``params`` for ``spec``."""
        if not isinstance(spec, PolicySpec):
            raise ValueError(f"spec must be a PolicySpec, got {type(spec).__name__}")
        model = cls.__new__(cls)
        model.spec = spec
        model.set_parameters(params)
        model.reset()
        return model

    # ----------------------------------------------------------------------------- sequence form
    def forward(self, obs, prev_actions=None, prev_rewards=None, *, mode=None, actions=None,
                rewards=None, **unused):
        """:func:`policy_sequence` with ``self.params``: a dict with ``"logits"`` (discrete) or
        ``"mean"``/``"log_std"`` (continuous), ``"values" (N, T)``, ``"features" (N, T, p)``.

        For ``model(**batch)``: ``actions`` / ``rewards`` (a rollout's keys) are accepted in place
        of ``prev_actions`` / ``prev_rewards`` (the same data: a rollout's actions and rewards,
        aligned with ``obs``); other keys (``mask``, ``advantages``, ...) are ignored.
        """
        prev_actions = _resolve("prev_actions", prev_actions, "actions", actions)
        prev_rewards = _resolve("prev_rewards", prev_rewards, "rewards", rewards)
        return policy_sequence(self.params, self.spec, obs, prev_actions, prev_rewards, mode)

    __call__ = forward

    def extract_features(self, obs, prev_actions=None, prev_rewards=None, *, kind="output",
                         mode=None, actions=None, rewards=None, **unused):
        """Per-step features of a batch of episodes, for monitoring: ``kind="output"`` the SSM
        outputs ``y: (N, T, p)`` (= ``forward(...)["features"]``), ``kind="state"`` the SSM
        states ``h: (N, T, n)``.  Arguments as :meth:`forward`."""
        if kind not in ("output", "state"):
            raise ValueError(f"kind must be 'output' or 'state', got {kind!r}")
        prev_actions = _resolve("prev_actions", prev_actions, "actions", actions)
        prev_rewards = _resolve("prev_rewards", prev_rewards, "rewards", rewards)
        if kind == "output":
            return self.forward(obs, prev_actions, prev_rewards, mode=mode)["features"]
        check_params(self.params, self.spec)
        x = policy_inputs(self.spec, obs, prev_actions, prev_rewards)
        return run_ssm(_state_params(self.params["ssm"]), x, None,
                       self.spec.mode if mode is None else mode)[0]

    def log_prob(self, out, actions):
        """:func:`log_prob` with this policy's spec."""
        return log_prob(self.spec, out, actions)

    def entropy(self, out):
        """:func:`entropy` with this policy's spec."""
        return entropy(self.spec, out)

    # ----------------------------------------------------------------------------- rollouts
    def reset(self, n=None):
        """Start new episodes: ``n`` rows at the zero state (``None``: sized by the next act)."""
        if n is None:
            self.hidden_state, self._starting = None, None
        else:
            n = _check_int("n", n)
            self.hidden_state = onp.zeros((n, self.spec.state_dim))
            self._starting = onp.ones(n, dtype=bool)

    def act(self, obs, prev_action=None, prev_reward=None, rng=None, reset=None,
            deterministic=False):
        """One step of the rollout held in ``hidden_state``: ``(actions, info)``.

        ``obs: (N, obs_dim)``; ``prev_action`` / ``prev_reward``: what this policy did and got at
        the previous step (``None`` right after :meth:`reset`); ``reset: (N,)`` bool marks rows
        whose episode starts now.  Pass a ``Generator`` as ``rng`` (an int would re-seed every
        step).  ``info`` holds plain arrays: ``log_prob (N,)``, ``value (N,)``, ``features (N, p)``
        and the distribution (``logits``, or ``mean`` and ``log_std``).
        """
        obs = onp.asarray(obs, dtype=onp.float64)
        if obs.ndim != 2 or obs.shape[1] != self.spec.obs_dim:
            raise ValueError(f"obs must have shape (N, {self.spec.obs_dim}), got {obs.shape}")
        N = obs.shape[0]
        if self.hidden_state is None:
            self.reset(N)
        if self.hidden_state.shape[0] != N:
            raise ValueError(f"obs has {N} rows but the rollout state has "
                             f"{self.hidden_state.shape[0]}; call reset({N}) first")
        starting = self._starting
        if reset is not None:
            r = onp.asarray(reset)
            if r.shape != (N,) or r.dtype.kind not in "bui":
                raise ValueError(f"reset must be a bool array of shape ({N},), "
                                 f"got {r.dtype} {r.shape}")
            starting = starting | r.astype(bool)
        params = P.stop_gradient(self.params)
        out, h_next = policy_step(params, self.spec, self.hidden_state, obs, prev_action,
                                  prev_reward, reset=starting)
        a = onp.asarray(sample(self.spec, out, rng, deterministic))
        info = {k: onp.asarray(v) for k, v in out.items() if k != "values"}
        info["value"] = onp.asarray(out["values"])
        info["log_prob"] = onp.asarray(log_prob(self.spec, out, a))
        self.hidden_state, self._starting = onp.asarray(h_next), onp.zeros(N, dtype=bool)
        return a, info

    def rollout(self, env, rng=None, deterministic=False):
        """:func:`policy_rollout` with ``self.params`` (``hidden_state`` is not touched)."""
        return policy_rollout(self.params, self.spec, env, rng, deterministic)

    # ----------------------------------------------------------------------------- parameters
    def get_parameters(self):
        """A deep copy of ``params`` (changing it does not change the policy)."""
        return P.tree_copy(P.stop_gradient(self.params))

    def set_parameters(self, params):
        """Replace ``params`` by a validated float64 copy (same layout as the spec, finite)."""
        check_params(params, self.spec)
        new = P.tree_copy(P.stop_gradient(params))
        for name, v in P.flatten_dict(new).items():
            if not onp.all(onp.isfinite(v)):
                raise ValueError(f"params[{name!r}] has non-finite entries")
        self.params = new

    def save(self, path):
        """Write ``params`` (dotted names, float64) and the spec (JSON text as a ``uint8`` array
        named ``spec_json``) to ``path``, atomically, without pickle.  The rollout state is not
        saved."""
        check_params(self.params, self.spec)
        arrays = {k: onp.asarray(v, dtype=onp.float64)
                  for k, v in P.flatten_dict(self.params).items()}
        arrays["spec_json"] = onp.frombuffer(self.spec.to_json().encode("utf-8"), dtype=onp.uint8)
        P.save_npz(path, arrays)

    @classmethod
    def load(cls, path):
        """Read a policy written by :meth:`save`; ``ValueError`` on any malformed file (missing or
        unexpected arrays, a bad spec, wrong shapes or dtypes, non-finite parameters)."""
        raw = P.load_npz(path)
        if "spec_json" not in raw:
            raise ValueError(f"{path}: missing array 'spec_json'; found {sorted(raw)}")
        s = raw.pop("spec_json")
        if s.dtype != onp.uint8 or s.ndim != 1:
            raise ValueError(f"{path}: 'spec_json' must be a 1-d uint8 array, "
                             f"got {s.dtype} {s.shape}")
        try:
            spec = PolicySpec.from_json(s.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: bad spec ({e})") from None
        want = policy_param_shapes(spec)
        missing, extra = sorted(set(want) - set(raw)), sorted(set(raw) - set(want))
        if missing or extra:
            raise ValueError(f"{path}: missing arrays {missing}, unexpected arrays {extra}")
        for name, shape in want.items():
            a = raw[name]
            if a.dtype != onp.float64 or a.shape != shape:
                raise ValueError(f"{path}: array {name!r} is {a.dtype} {a.shape}, expected "
                                 f"float64 {shape}")
        try:
            return cls.from_params(P.unflatten_dict(raw), spec)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self):
        s = self.spec
        kind = f"discrete K={s.action_dim}" if s.discrete else f"continuous d={s.action_dim}"
        return (f"SSMMetaPolicy(obs_dim={s.obs_dim}, {kind}, state_dim={s.state_dim}, "
                f"ssm_output_dim={s.ssm_output_dim}, hidden_sizes={s.hidden_sizes}, "
                f"use_prev_action_reward={s.use_prev_action_reward}, mode={s.mode!r})")
