"""The SSM policy's static configuration, its parameter layout and its initialisation.

For a :class:`PolicySpec` with ``n = state_dim``, ``p = ssm_output_dim``, ``in_dim`` the SSM's input
width (``obs_dim``, or ``obs_dim + action_dim + 1`` with the previous action and reward) and
``feature_dim = p + obs_dim``, the parameter tree (keys without dots) is::

    {"ssm": {"A": (n, n), "B": (n, in_dim), "C": (p, n), "D": (p, in_dim)},
     "pi":  {"layer0": {"W": (h1, feature_dim), "b": (h1,)}, ..., "layerL": {"W": (K|d, hL), ...}},
     "v":   {"layer0": {"W": (h1, feature_dim), "b": (h1,)}, ..., "layerL": {"W": (1, hL), ...}},
     "log_std": (d,)}                                    (continuous only)

``action_dim`` is the number of actions ``K`` when ``discrete``, the action vector's ``d``
otherwise.  The model itself is in :mod:`ssmref.metarl.policy.core`.
"""

import dataclasses
import json

import autograd.numpy as np
import numpy as onp

from ssmref.checks import check_choice, check_flag, check_int, check_parameter_count
from ssmref.nn import mlp_init
from ssmref.params import flatten_dict
from ssmref.rng import as_rng
from ssmref.storage import parse_json
from ssmref.ssm import MODES, init_ssm

FORMAT = "ssmref.policy/1"      # written into saved files; load refuses anything else


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

    kind = "ssm"                          # a class attribute (MLPPolicySpec's is "mlp")

    def __post_init__(self):
        for name in ("obs_dim", "action_dim", "state_dim", "ssm_output_dim"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        for name in ("discrete", "use_prev_action_reward"):
            object.__setattr__(self, name, check_flag(name, getattr(self, name)))
        sizes = self.hidden_sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise ValueError(f"hidden_sizes must be a sequence of ints, got {self.hidden_sizes!r}")
        sizes = tuple(check_int(f"hidden_sizes[{i}]", h, minimum=1) for i, h in enumerate(sizes))
        object.__setattr__(self, "hidden_sizes", sizes)
        check_choice("mode", self.mode, tuple(MODES))
        if self.discrete and self.action_dim < 2:
            raise ValueError(f"a discrete policy needs action_dim (the number of actions) >= 2, "
                             f"got {self.action_dim}")
        check_parameter_count("the policy", policy_param_shapes(self))

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
        return encode_spec(self, FORMAT)

    @classmethod
    def from_json(cls, text):
        """Inverse of :meth:`to_json`; ``ValueError`` on anything malformed."""
        return decode_spec(cls, text, FORMAT)


def encode_spec(spec, format_tag):
    """A policy spec dataclass (with a ``hidden_sizes`` tuple) as a JSON string: its fields, sorted,
    and ``"format": format_tag``."""
    d = dataclasses.asdict(spec)
    d["hidden_sizes"] = list(spec.hidden_sizes)
    d["format"] = format_tag
    return json.dumps(d, sort_keys=True)


def decode_spec(cls, text, format_tag):
    """Inverse of :func:`encode_spec`: exactly the fields of ``cls`` and the format tag, or
    ``ValueError``; the field values are then checked by ``cls`` itself."""
    d = parse_json(text, "spec")                     # bounded depth: never a RecursionError
    fields = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(d, dict) or set(d) != fields | {"format"}:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{cls.__name__} must be a JSON object with keys "
                         f"{sorted(fields | {'format'})}, got {got}")
    if d.pop("format") != format_tag:
        raise ValueError(f"{cls.__name__} format must be {format_tag!r}")
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
    check_param_shapes(params, policy_param_shapes(spec))


def check_param_shapes(params, want):
    """``ValueError`` unless the parameter tree ``params`` has exactly the flat leaves ``want``
    (``{"pi.layer0.W": shape, ...}``), each of its shape (autograd boxes allowed)."""
    flat = flatten_dict(params)
    missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
    if missing or extra:
        raise ValueError(f"params do not match the spec: missing {missing}, unexpected {extra}")
    for name, shape in want.items():
        if np.shape(flat[name]) != shape:
            raise ValueError(f"params[{name!r}] has shape {np.shape(flat[name])}, expected {shape}")




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
