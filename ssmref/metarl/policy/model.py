"""The stateful shell of the SSM policy: parameters, spec and rollout state, with save and load.

:class:`SSMMetaPolicy` holds ``params`` (read at call time, so the test-time adapter can swap
traced parameters in), the :class:`~ssmref.metarl.policy.spec.PolicySpec` and the hidden state of a
rollout driven by :meth:`SSMMetaPolicy.act`; all the math is the functional core
(:mod:`ssmref.metarl.policy.core`).  Files: an ``.npz`` of the parameters under dotted names and
the spec as JSON (format tag ``"ssmref.policy/1"``), written atomically, read without pickle.
"""

import numpy as onp

from ssmref.checks import check_array, check_int
from ssmref.metarl.policy.core import (entropy, log_prob, policy_inputs, policy_rollout,
                                       policy_sequence, policy_step, sample)
from ssmref.metarl.policy.spec import PolicySpec, check_params, policy_init, policy_param_shapes
from ssmref.params import flatten_dict, stop_gradient, tree_copy, unflatten_dict
from ssmref.ssm import ssm_states
from ssmref.storage import load_npz, save_npz


def _resolve(name, value, alias_name, alias):
    if value is not None and alias is not None:
        raise ValueError(f"pass {name} or {alias_name}, not both")
    return value if value is not None else alias


class SSMMetaPolicy:
    """The SSM policy with its parameters, spec and rollout state (the original README's
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
        return ssm_states(self.params["ssm"], x, None, self.spec.mode if mode is None else mode)

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
            n = check_int("n", n, minimum=1)
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
        params = stop_gradient(self.params)
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
        return tree_copy(stop_gradient(self.params))

    def set_parameters(self, params):
        """Replace ``params`` by a validated float64 copy (same layout as the spec, finite)."""
        check_params(params, self.spec)
        new = tree_copy(stop_gradient(params))
        for name, v in flatten_dict(new).items():
            check_array(f"params[{name!r}]", v)
        self.params = new

    def save(self, path):
        """Write ``params`` (dotted names, float64) and the spec (JSON text as a ``uint8`` array
        named ``spec_json``) to ``path``, atomically, without pickle.  The rollout state is not
        saved."""
        check_params(self.params, self.spec)
        arrays = {k: onp.asarray(v, dtype=onp.float64)
                  for k, v in flatten_dict(self.params).items()}
        arrays["spec_json"] = onp.frombuffer(self.spec.to_json().encode("utf-8"), dtype=onp.uint8)
        save_npz(path, arrays)

    @classmethod
    def load(cls, path):
        """Read a policy written by :meth:`save`; ``ValueError`` on any malformed file (missing or
        unexpected arrays, a bad spec, wrong shapes or dtypes, non-finite parameters)."""
        raw = load_npz(path)
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
            return cls.from_params(unflatten_dict(raw), spec)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self):
        s = self.spec
        kind = f"discrete K={s.action_dim}" if s.discrete else f"continuous d={s.action_dim}"
        return (f"SSMMetaPolicy(obs_dim={s.obs_dim}, {kind}, state_dim={s.state_dim}, "
                f"ssm_output_dim={s.ssm_output_dim}, hidden_sizes={s.hidden_sizes}, "
                f"use_prev_action_reward={s.use_prev_action_reward}, mode={s.mode!r})")
