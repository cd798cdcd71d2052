"""Test-time adaptation: bounded, guarded Adam steps on a model's parameters during inference.

Contract (``docs/adaptation.md`` is the same spec in prose, with the sources).

A *model* is any object with a ``params`` attribute, a dict of arrays (nested dicts allowed, keys
may contain dots, e.g. ``{"head.weight": W}`` or ``{"ssm": {"A": A}}``) that its forward reads **at
call time**.  Each leaf has a *path* (its keys) and a *name* (the keys joined by ``"."``:
``"head.weight"``, ``"ssm.A"``).  The adapter differentiates through ``fwd_fn(batch)`` by setting
``model.params`` to a tree whose trainable leaves are autograd boxes, and restores the model's
attributes in ``finally`` (also when the forward, the loss or the strategy raises).

Trainable tensors ``p``: the floating-point leaves whose name matches ``allow_layers``
(``re.search``; ``None`` allows all) and does not match ``deny_layers``.  One step, in this order::

    1. g = ∇_θ strategy.post_loss(loss_fn(outputs, batch), outputs, batch),  outputs = fwd_fn(batch)
    2. if the loss or any g is non-finite: change nothing, return updated=False and a reason
    3. if grad_clip_norm > 0:   g ← clip_by_global_norm(g, grad_clip_norm)       (torch's 1e-6)
    4. Δ = the torch.optim.Adam step for g (weight_decay as L2)
    5. if max_step_scale = s > 0:   Δ_p ← Δ_p · min(1, s · max(‖θ_p‖, 1) / ‖Δ_p‖)   (1 if Δ_p = 0)
    6. θ ← θ + Δ
    7. if trust_region_eps = ε > 0 and ema_decay > 0:
                                θ_p ← a_p + (θ_p − a_p) · min(1, ε / ‖θ_p − a_p‖)   (1 if θ_p = a_p)
    8. if ema_decay = d > 0:     a ← d · a + (1 − d) · θ
       the anchor a starts at the parameters as they were before the adapter's first step.

Norms are Frobenius norms of one tensor.  After step 8 a second guard refuses the step if the new
parameters, the optimizer state or the anchor are non-finite.  ``adapt`` runs
``max_steps_per_call`` steps and stops at the first refused or skipped one.

Strategies add to the loss (``post_loss``); ``none``, ``tent`` (Wang et al. 2021) and ``eata``
(reliable-sample entropy minimization, Niu et al. 2022) are built in, and
:func:`register_adaptation_strategy` adds more.  A strategy raises :class:`SkipStep` to skip a
step (``eata`` with no reliable sample).

References: Wang, Shelhamer, Liu, Olshausen, Darrell, "Tent: Fully Test-Time Adaptation by Entropy
Minimization", ICLR 2021; Niu et al., "Efficient Test-Time Model Adaptation without Forgetting"
(EATA), ICML 2022; Kingma & Ba, "Adam", ICLR 2015 (as implemented by ``torch.optim.Adam``).
"""

import contextlib
import copy
import dataclasses
import math
import re
import warnings
from typing import Optional

import autograd.numpy as np
import numpy as onp
from autograd import value_and_grad
from autograd.tracer import Box, getval

from . import monitor
from .monitor import MetaFeatures, row_entropy, split_outputs
from .nn import gaussian_entropy, gaussian_log_prob, log_softmax
from .optim import CLIP_EPS, _check_hyper, adam_init, adam_step, clip_by_global_norm
from .params import is_node, stop_gradient

__all__ = ["AdaptationConfig", "Adapter", "AdaptationStrategy", "MetaFeatures", "MetaRLHook",
           "SSMHook", "SkipStep", "available_strategies", "create_adapter",
           "register_adaptation_strategy", "select_names", "ssm_hidden_states",
           "unregister_adaptation_strategy"]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class AdaptationConfig:
    """Hyperparameters of the adapter; the first twelve fields and their defaults are the contract.

    Validated on construction and again by :func:`create_adapter`; a bad value raises
    ``ValueError`` naming the field.
    """
    enabled: bool = True               # False: adapt() does nothing (observe() still works)
    lr: float = 1e-4                   # Adam learning rate
    max_step_scale: float = 0.1        # s in step 5; 0 disables the step bound
    weight_decay: float = 0.0          # L2 added to the gradient inside Adam (torch.optim.Adam)
    grad_clip_norm: float = 1.0        # global-norm clipping threshold; 0 disables clipping
    trust_region_eps: float = 1e-3     # ε in step 7 (active only when ema_decay > 0 too)
    ema_decay: float = 0.0             # d in step 8; 0 keeps the anchor fixed (and step 7 off)
    entropy_weight: float = 0.0        # weight of the entropy term of tent / eata
    max_steps_per_call: int = 1        # steps per adapt() call
    allow_layers: object = None        # None, a regex or a list of regexes (re.search on names)
    deny_layers: object = None         # None, a regex or a list of regexes
    episodic: bool = False             # context() restores everything on exit
    # --- beyond the contract ---
    b1: float = 0.9                    # Adam betas, as torch.optim.Adam(betas=(b1, b2))
    b2: float = 0.999
    adam_eps: float = 1e-8             # Adam eps, outside the square root
    eata_margin: float = 0.4           # eata: E0 = eata_margin * ln(C)
    monitor_momentum: float = 0.9      # β of the feature tracker

    def __post_init__(self):
        self.validate()

    def validate(self):
        """``ValueError`` naming the first bad field; returns ``self``."""
        for name in ("enabled", "episodic"):
            if not isinstance(getattr(self, name), (bool, onp.bool_)):
                raise ValueError(f"AdaptationConfig.{name} must be a bool, got "
                                 f"{getattr(self, name)!r}")
        for name in ("lr", "max_step_scale", "weight_decay", "grad_clip_norm",
                     "trust_region_eps", "adam_eps", "eata_margin"):
            _field(name, lambda: _check_hyper(name, getattr(self, name), lo=0.0))
        for name in ("ema_decay", "b1", "b2", "monitor_momentum"):
            _field(name, lambda: _check_hyper(name, getattr(self, name), lo=0.0, hi=1.0,
                                              hi_open=True))
        _field("entropy_weight", lambda: _check_hyper("entropy_weight", self.entropy_weight))
        k = self.max_steps_per_call
        if isinstance(k, (bool, onp.bool_)) or not isinstance(k, (int, onp.integer)) or k < 1:
            raise ValueError(f"AdaptationConfig.max_steps_per_call must be an int >= 1, got {k!r}")
        for name in ("allow_layers", "deny_layers"):
            _patterns(name, getattr(self, name))
        return self


def _field(name, check):
    try:
        check()
    except ValueError as e:
        raise ValueError(f"AdaptationConfig.{name}: {e}") from None


def _patterns(name, value):
    """``None`` or a list of compiled regexes from ``None``, a string or a sequence of strings."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        raise ValueError(f"AdaptationConfig.{name} must be None, a regex string or a list of them, "
                         f"got {value!r}") from None
    out = []
    for p in items:
        if not isinstance(p, str):
            raise ValueError(f"AdaptationConfig.{name} must hold regex strings, got {p!r}")
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"AdaptationConfig.{name}: invalid regex {p!r} ({e})") from None
    return out


def select_names(names, allow_layers=None, deny_layers=None):
    """The names ``n`` with ``any(re.search(a, n))`` over ``allow_layers`` (all if ``None``) and
    no ``re.search(d, n)`` over ``deny_layers``, in the given order."""
    allow = _patterns("allow_layers", allow_layers)
    deny = _patterns("deny_layers", deny_layers)
    return [n for n in names
            if (allow is None or any(p.search(n) for p in allow))
            and not (deny and any(p.search(n) for p in deny))]


# ---------------------------------------------------------------------------------------------
# Strategies and their registry
# ---------------------------------------------------------------------------------------------

class SkipStep(Exception):
    """Raised by a strategy's ``post_loss`` to skip the step (nothing changes); carries a reason."""


class AdaptationStrategy:
    """Base class: ``post_loss(loss, outputs, batch) -> loss`` returns the objective to minimise.

    ``self.cfg`` is the adapter's :class:`AdaptationConfig`.  ``post_loss`` runs inside the
    differentiated function: ``outputs`` may hold autograd boxes; use ``autograd.numpy``, no
    in-place writes, and :func:`ssmref.params.stop_gradient` for constants.  Raise
    :class:`SkipStep` to skip the step.  The base class returns ``loss`` unchanged.
    """
    name = "base"

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None else AdaptationConfig()

    def post_loss(self, loss, outputs, batch):
        return loss

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


_REGISTRY = {}


def register_adaptation_strategy(name, builder=None, *, overwrite=False):
    """Register ``builder`` (called as ``builder(cfg)``, returns an :class:`AdaptationStrategy`)
    under ``name``.

    Two forms: ``@register_adaptation_strategy("name")`` on a class (or function), which returns it
    unchanged, and ``register_adaptation_strategy("name", builder)``, which returns ``builder``.
    Registering a name that is already taken by another builder raises ``ValueError`` unless
    ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"strategy name must be a non-empty string, got {name!r}")

    def register(b):
        if not callable(b):
            raise ValueError(f"builder for strategy {name!r} must be callable, got {b!r}")
        if name in _REGISTRY and _REGISTRY[name] is not b and not overwrite:
            raise ValueError(f"strategy {name!r} is already registered (by "
                             f"{_REGISTRY[name]!r}); pass overwrite=True to replace it")
        _REGISTRY[name] = b
        if isinstance(b, type) and issubclass(b, AdaptationStrategy) and "name" not in vars(b):
            b.name = name
        return b

    return register if builder is None else register(builder)


def unregister_adaptation_strategy(name):
    """Remove ``name`` from the registry; ``ValueError`` if it is not registered."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown adaptation strategy {name!r}; registered: "
                         f"{available_strategies()}")
    del _REGISTRY[name]


def available_strategies():
    """The registered strategy names, sorted."""
    return sorted(_REGISTRY)


def make_strategy(strategy, cfg):
    """An :class:`AdaptationStrategy` from a registered name (or an instance, used as is)."""
    if isinstance(strategy, AdaptationStrategy):
        return strategy
    if not isinstance(strategy, str) or strategy not in _REGISTRY:
        raise ValueError(f"unknown adaptation strategy {strategy!r}; registered: "
                         f"{available_strategies()}")
    out = _REGISTRY[strategy](cfg)
    if not callable(getattr(out, "post_loss", None)):
        raise ValueError(f"builder of strategy {strategy!r} returned {out!r}, which has no "
                         f"post_loss(loss, outputs, batch)")
    return out


def logits_of(outputs, who):
    """The logits in ``outputs`` (a dict with ``"logits"``, or a bare array)."""
    kind, arr, _ = split_outputs(outputs)
    if kind != "logits":
        raise ValueError(f"{who} needs logits: outputs must be an array of logits or a dict with "
                         f"'logits'")
    if np.ndim(arr) < 1:
        raise ValueError(f"{who}: logits must have a class axis, got shape {np.shape(arr)}")
    return arr


@register_adaptation_strategy("none")
class NoStrategy(AdaptationStrategy):
    """``post_loss = loss``: adapt on ``loss_fn`` alone."""


@register_adaptation_strategy("tent")
class TentStrategy(AdaptationStrategy):
    """Tent: ``loss + entropy_weight · (1/N) Σ_n H(softmax(logits_n))`` over all ``N`` rows."""

    def post_loss(self, loss, outputs, batch):
        H = row_entropy(logits_of(outputs, "tent"))        # (...,) one entropy per row
        return loss + self.cfg.entropy_weight * np.mean(H)


@register_adaptation_strategy("eata")
class EATAStrategy(AdaptationStrategy):
    """EATA's reliable, re-weighted entropy (Niu et al. 2022, Eqs. 3 and 6)::

        E0 = margin · ln C,   S = {n : H_n < E0},   w_n = exp(E0 − H_n)  (a constant)
        post_loss = loss + entropy_weight · (1/|S|) Σ_{n∈S} w_n H_n

    An empty ``S`` raises :class:`SkipStep`.  ``margin`` defaults to ``cfg.eata_margin`` (0.4).
    Not included: EATA's redundancy filter (cosine similarity to a moving average of
    predictions) and its Fisher anti-forgetting regularizer (see ``docs/adaptation.md``).
    """

    def __init__(self, cfg=None, margin=None):
        super().__init__(cfg)
        self.margin = self.cfg.eata_margin if margin is None else float(margin)
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be finite and >= 0, got {margin!r}")

    def threshold(self, num_classes):
        """``E0 = margin · ln C``."""
        return self.margin * math.log(num_classes)

    def selection(self, logits):
        """``(mask, weights, E0)`` on values: the reliable rows and their constant weights."""
        H = onp.asarray(getval(row_entropy(stop_gradient(logits))))
        E0 = self.threshold(np.shape(logits)[-1])
        with onp.errstate(invalid="ignore"):
            mask = H < E0                                   # nan entropies are never reliable
            w = onp.where(mask, onp.exp(onp.where(mask, E0 - H, 0.0)), 0.0)
        return mask, w, E0

    def post_loss(self, loss, outputs, batch):
        logits = logits_of(outputs, "eata")
        mask, w, E0 = self.selection(logits)
        if not mask.any():
            raise SkipStep(f"eata: no reliable sample (all {mask.size} entropies >= "
                           f"E0 = {E0:.6g})")
        H = row_entropy(logits)
        term = np.sum(np.where(mask, w * H, 0.0)) / onp.sum(mask)
        return loss + self.cfg.entropy_weight * term


# ---------------------------------------------------------------------------------------------
# Parameter trees with dotted or nested names
# ---------------------------------------------------------------------------------------------

def param_leaves(tree):
    """``[(path, name, value)]`` for every leaf, depth first in sorted key order.

    ``path`` is the tuple of keys, ``name`` the keys joined by ``"."``; keys may contain dots
    (``{"head.weight": W}`` has path ``("head.weight",)`` and name ``"head.weight"``).  Two leaves
    with the same name raise ``ValueError``.
    """
    if not is_node(tree):
        raise ValueError(f"model.params must be a dict of arrays, got {type(tree).__name__}")
    out, seen = [], set()

    def walk(node, path):
        for k in sorted(node.keys(), key=str):
            if not isinstance(k, str) or not k:
                raise ValueError(f"model.params keys must be non-empty strings, got {k!r} "
                                 f"under {'.'.join(path) or '<root>'}")
            v = node[k]
            if is_node(v):
                walk(v, path + (k,))
            else:
                name = ".".join(path + (k,))
                if name in seen:
                    raise ValueError(f"model.params has two leaves named {name!r}")
                seen.add(name)
                out.append((path + (k,), name, v))

    walk(tree, ())
    return out


def rebuild(template, values):
    """A tree like ``template`` (plain dicts) whose leaf at path ``q`` is ``values[q]`` if present,
    else the template's leaf.  Never splits strings, never writes into ``template``."""

    def walk(node, path):
        out = {}
        for k in node.keys():
            v = node[k]
            q = path + (k,)
            out[k] = walk(v, q) if is_node(v) else values.get(q, v)
        return out

    return walk(template, ())


def _copy_leaf(v):
    v = getval(v)
    return onp.array(v, copy=True) if isinstance(v, onp.ndarray) else copy.deepcopy(v)


def copy_tree(tree):
    """A deep copy of a params tree (plain dicts; array leaves copied, dtype kept)."""
    return {k: copy_tree(tree[k]) if is_node(tree[k]) else _copy_leaf(tree[k]) for k in tree.keys()}


def _is_float_leaf(v):
    a = getval(v)
    return onp.asarray(a).dtype.kind == "f" if isinstance(a, (onp.ndarray, float, onp.floating)) \
        else False


def _contains_box(x):
    if isinstance(x, Box):
        return True
    if is_node(x):
        return any(_contains_box(x[k]) for k in x.keys())
    return False


def _unbox_tree(x):
    if is_node(x):
        return {k: _unbox_tree(x[k]) for k in x.keys()}
    return getval(x)


def _all_finite(tree):
    return all(bool(onp.all(onp.isfinite(getval(v)))) for v in tree.values())


def _norm(x):
    return float(onp.sqrt(onp.sum(x * x)))


def _key(i):
    return f"t{i:05d}"  # keys of the internal trainable dict: sortable, dot-free


# ---------------------------------------------------------------------------------------------
# Steps 3-8 of the update, as one pure function
# ---------------------------------------------------------------------------------------------

def guarded_update(theta, grads, opt_state, anchor, cfg):
    """Steps 3 to 8 for finite gradients: ``(new_theta, new_opt_state, new_anchor, info)``.

    ``theta``, ``grads``, ``anchor``: dicts ``key -> array`` with the same keys (dot-free, see
    :mod:`ssmref.params`); ``opt_state`` an :func:`ssmref.optim.adam_init` state over them;
    ``anchor`` is ``a`` (pass ``theta`` itself before the first step).  Nothing is modified.
    ``info``: ``grad_norm`` (before clipping), ``clip_coef``, and per key the factors
    ``bound_scale`` (step 5) and ``trust_scale`` (step 7) that were applied.
    """
    # 3. clip the gradient by its global norm (torch's clip_grad_norm_)
    if cfg.grad_clip_norm > 0:
        grads, grad_norm = clip_by_global_norm(grads, cfg.grad_clip_norm)
        clip_coef = min(1.0, cfg.grad_clip_norm / (float(grad_norm) + CLIP_EPS))
    else:
        grad_norm, clip_coef = math.sqrt(sum(float(onp.sum(g * g)) for g in grads.values())), 1.0
    # 4. the Adam step (torch.optim.Adam, weight_decay as L2), not yet applied
    delta, opt_state = adam_step(grads, opt_state, theta, lr=cfg.lr, b1=cfg.b1, b2=cfg.b2,
                                 eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    # 5. bound each tensor's step: ||delta_p|| <= s * max(||theta_p||, 1)
    bound_scale = {}
    if cfg.max_step_scale > 0:
        for k in sorted(delta):
            d_norm = _norm(delta[k])
            limit = cfg.max_step_scale * max(_norm(theta[k]), 1.0)
            c = 1.0 if d_norm <= limit else limit / d_norm          # also 1 for delta_p = 0
            delta[k] = delta[k] * c
            bound_scale[k] = c
    # 6. apply
    new = {k: theta[k] + delta[k] for k in sorted(theta)}
    # 7. trust region: ||theta_p - a_p|| <= eps, by moving theta_p radially towards a_p
    trust_scale = {}
    if cfg.trust_region_eps > 0 and cfg.ema_decay > 0:
        for k in sorted(new):
            diff = new[k] - anchor[k]
            r = _norm(diff)
            c = 1.0 if r <= cfg.trust_region_eps else cfg.trust_region_eps / r
            if c < 1.0:
                new[k] = anchor[k] + diff * c
            trust_scale[k] = c
    # 8. move the anchor towards the new parameters
    if cfg.ema_decay > 0:
        d = cfg.ema_decay
        anchor = {k: d * anchor[k] + (1.0 - d) * new[k] for k in sorted(new)}
    info = {"grad_norm": float(grad_norm), "clip_coef": clip_coef,
            "bound_scale": bound_scale, "trust_scale": trust_scale}
    return new, opt_state, anchor, info


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _State:
    """All the adapter changes besides ``model.params`` (copied whole by episodic contexts)."""
    opt: dict                          # Adam state {"step", "m", "v"} over the trainable dict
    anchor: Optional[dict] = None      # a, over the trainable dict; None before the first step
    tracker: monitor.FeatureTracker = None
    last_features: Optional[MetaFeatures] = None
    steps_taken: int = 0               # accepted steps
    steps_refused: int = 0             # non-finite guard
    steps_skipped: int = 0             # SkipStep from the strategy


class Adapter:
    """Test-time adapter of one model; see the module docstring for the step.

    Build it with :func:`create_adapter`.  Attributes: ``model``, ``cfg``, ``strategy``,
    ``trainable_names`` (the selected leaf names in tree order: depth first, keys sorted),
    ``frozen_names``.  Views (copies): ``anchor`` (``name -> array`` or ``None``),
    ``optimizer_state`` (``{"step", "m", "v"}`` with ``name -> array`` moments),
    ``last_features``, ``stats``; ``tracker`` is the live :class:`ssmref.monitor.FeatureTracker`.
    """

    def __init__(self, model, cfg=None, strategy="none"):
        cfg = AdaptationConfig() if cfg is None else cfg
        if not isinstance(cfg, AdaptationConfig):
            raise ValueError(f"cfg must be an AdaptationConfig, got {type(cfg).__name__}")
        cfg.validate()
        if not hasattr(model, "params"):
            raise ValueError(f"model must have a 'params' dict attribute; "
                             f"{type(model).__name__} has none")
        leaves = param_leaves(model.params)
        names = [n for _, n, _ in leaves]
        float_names = [n for _, n, v in leaves if _is_float_leaf(v)]
        chosen = set(select_names(float_names, cfg.allow_layers, cfg.deny_layers))
        if not chosen:
            raise ValueError(f"no trainable parameters: allow_layers={cfg.allow_layers!r}, "
                             f"deny_layers={cfg.deny_layers!r} select none of the floating-point "
                             f"leaves {float_names}")
        self.model, self.cfg = model, cfg
        self.strategy = make_strategy(strategy, cfg)
        if getattr(self.strategy, "cfg", None) is None:
            self.strategy.cfg = cfg
        self._paths = [q for q, n, _ in leaves if n in chosen]
        self._structure = [(n, onp.shape(getval(v))) for _, n, v in leaves]
        self.trainable_names = [n for _, n, _ in leaves if n in chosen]
        self.frozen_names = [n for n in names if n not in chosen]
        theta = self._theta()
        self._state = _State(opt=adam_init(theta),
                             tracker=monitor.FeatureTracker(cfg.monitor_momentum))

    # ----------------------------------------------------------------------------- views
    def _named(self, tree):
        if tree is None:
            return None
        return {n: tree[_key(i)] for i, n in enumerate(self.trainable_names)}

    @property
    def anchor(self):
        return copy.deepcopy(self._named(self._state.anchor))

    @property
    def optimizer_state(self):
        s = self._state.opt
        return copy.deepcopy({"step": s["step"], "m": self._named(s["m"]),
                              "v": self._named(s["v"])})

    @property
    def tracker(self):
        return self._state.tracker

    @property
    def last_features(self):
        return self._state.last_features

    @property
    def stats(self):
        s = self._state
        return {"steps_taken": s.steps_taken, "steps_refused": s.steps_refused,
                "steps_skipped": s.steps_skipped}

    def trainable_params(self):
        """``name -> array`` copies of the trainable leaves as they are now."""
        return copy.deepcopy(self._named(self._theta()))

    # ----------------------------------------------------------------------------- the step
    def _theta(self):
        """The trainable leaves of ``model.params`` now, as float64 arrays keyed by ``_key(i)``."""
        leaves = param_leaves(self.model.params)
        structure = [(n, onp.shape(getval(v))) for _, n, v in leaves]
        if structure != self._structure:
            raise ValueError("model.params changed structure (names or shapes) since the adapter "
                             "was created; create a new adapter")
        by_path = {q: v for q, _, v in leaves}
        return {_key(i): onp.asarray(getval(by_path[q]), dtype=onp.float64)
                for i, q in enumerate(self._paths)}

    def _objective(self, loss_fn, batch, fwd_fn):
        template = self.model.params

        def objective(train):
            values = {q: train[_key(i)] for i, q in enumerate(self._paths)}
            self.model.params = rebuild(template, values)
            outputs = fwd_fn(batch)
            loss = loss_fn(outputs, batch)
            if np.ndim(loss) != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {np.shape(loss)}")
            total = self.strategy.post_loss(loss, outputs, batch)
            if np.ndim(total) != 0:
                raise ValueError(f"post_loss must return a scalar, got shape {np.shape(total)}")
            return total

        return objective

    @contextlib.contextmanager
    def _restoring_model(self):
        """Every instance attribute of the model (``params`` included) is rebound to its object on
        entry when this exits, normally or not; attributes added inside are removed."""
        attrs = getattr(self.model, "__dict__", None)
        saved = dict(attrs) if attrs is not None else {"params": self.model.params}
        try:
            yield
        finally:
            if attrs is not None:
                for k in [k for k in attrs if k not in saved]:
                    delattr(self.model, k)
            for k, v in saved.items():
                if getattr(self.model, k, None) is not v:
                    setattr(self.model, k, v)

    def _value_and_grad(self, theta, loss_fn, batch, fwd_fn):
        objective = self._objective(loss_fn, batch, fwd_fn)
        with self._restoring_model(), warnings.catch_warnings(), \
                onp.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            # a loss that does not depend on the trainable leaves has zero gradient (not a warning)
            warnings.filterwarnings("ignore", message="Output seems independent of input")
            value, grads = value_and_grad(objective)(theta)
        return float(value), {k: onp.asarray(g, dtype=onp.float64) for k, g in grads.items()}

    def _step(self, loss_fn, batch, fwd_fn):
        """One step; returns a dict of what happened (``updated`` and the rest)."""
        cfg, st = self.cfg, self._state
        theta = self._theta()
        # 1. loss and gradient of the strategy's objective
        try:
            loss, grads = self._value_and_grad(theta, loss_fn, batch, fwd_fn)
        except SkipStep as e:
            st.steps_skipped += 1
            return {"updated": False, "loss": None, "reason": f"skipped: {e}"}
        info = {"loss": loss}
        # 2. non-finite guard: nothing changes
        bad = [self.trainable_names[i] for i in range(len(self._paths))
               if not onp.all(onp.isfinite(grads[_key(i)]))]
        if not math.isfinite(loss) or bad:
            st.steps_refused += 1
            why = (f"non-finite loss ({loss})" if not math.isfinite(loss) else
                   f"non-finite gradient in {bad}")
            return dict(info, updated=False, reason=f"refused: {why}; nothing changed")
        # 3.-8. the update, as a pure function of (theta, g, optimizer state, anchor)
        anchor = st.anchor if st.anchor is not None else {k: v.copy() for k, v in theta.items()}
        with onp.errstate(all="ignore"):  # a non-finite result is caught by the second guard
            new, opt, anchor, extra = guarded_update(theta, grads, st.opt, anchor, cfg)
        # second guard: never commit a non-finite parameter, optimizer state or anchor
        if not (_all_finite(new) and _all_finite(opt["m"]) and _all_finite(opt["v"])
                and _all_finite(anchor)):
            st.steps_refused += 1
            return dict(info, updated=False,
                        reason="refused: the step produced non-finite parameters, optimizer "
                               "state or anchor; nothing changed")
        name = dict(zip((_key(i) for i in range(len(self._paths))), self.trainable_names))
        for k in ("bound_scale", "trust_scale"):
            extra[k] = {name[key]: c for key, c in extra[k].items()}
        # commit
        extra["step_norm"] = math.sqrt(sum(float(onp.sum((new[k] - theta[k]) ** 2)) for k in new))
        self._write(new)
        st.opt, st.anchor = opt, anchor
        st.steps_taken += 1
        return dict(info, updated=True, **extra)

    def _write(self, new):
        values = {q: new[_key(i)] for i, q in enumerate(self._paths)}
        self.model.params = rebuild(self.model.params, values)

    def adapt(self, loss_fn, batch, fwd_fn=None):
        """Run up to ``cfg.max_steps_per_call`` steps of ``post_loss(loss_fn(fwd_fn(batch)))``.

        ``fwd_fn`` defaults to ``model(**batch)`` for a dict batch and ``model(batch)`` otherwise;
        ``loss_fn(outputs, batch)`` returns a scalar.  Stops at the first step that is refused
        (non-finite) or skipped (the strategy raised :class:`SkipStep`).

        Returns a dict: ``updated`` (at least one step applied), ``steps`` (steps applied),
        ``loss`` (the objective at the parameters on entry, ``None`` if not evaluated),
        ``losses`` (the objective of every evaluated step), ``reason`` (why it stopped early or did
        nothing; absent when all steps ran), and for the last applied step ``grad_norm`` (before
        clipping), ``clip_coef``, ``step_norm`` (global norm of the applied change),
        ``bound_scale`` and ``trust_scale`` (per-tensor factors of steps 5 and 7).
        """
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
        if fwd_fn is None:
            fwd_fn = self.default_forward
        if not self.cfg.enabled:
            return {"updated": False, "steps": 0, "loss": None, "losses": [],
                    "reason": "adaptation disabled (cfg.enabled=False)"}
        out = {"updated": False, "steps": 0, "loss": None, "losses": []}
        for _ in range(self.cfg.max_steps_per_call):
            info = self._step(loss_fn, batch, fwd_fn)
            if info.get("loss") is not None:
                out["losses"].append(info["loss"])
                if out["loss"] is None:
                    out["loss"] = info["loss"]
            if not info["updated"]:
                out["reason"] = info["reason"]
                break
            out["steps"] += 1
            out["updated"] = True
            for k in ("grad_norm", "clip_coef", "step_norm", "bound_scale", "trust_scale"):
                out[k] = info[k]
        return out

    def default_forward(self, batch):
        """``model(**batch)`` for a dict batch, else ``model(batch)``."""
        if hasattr(batch, "keys") and not hasattr(batch, "shape"):
            return self.model(**batch)
        return self.model(batch)

    # ----------------------------------------------------------------------------- monitoring
    def observe(self, outputs, batch=None, features=None):
        """:class:`MetaFeatures` of a batch (``batch`` is not read; it is there for symmetry with
        ``adapt`` and for subclasses).  ``features`` update the shift tracker; see
        :mod:`ssmref.monitor` for the definitions."""
        mf = monitor.make_meta_features(outputs, features, self._state.tracker)
        self._state.last_features = mf
        return mf

    # ----------------------------------------------------------------------------- contexts
    def _snapshot(self):
        return copy_tree(self.model.params), copy.deepcopy(self._state)

    def _restore(self, snap):
        params, state = snap
        self.model.params = copy_tree(params)
        self._state = copy.deepcopy(state)

    @contextlib.contextmanager
    def context(self, model=None):
        """A context for a stretch of adaptation; yields the adapter.

        With ``cfg.episodic`` the model's params (all leaves), the optimizer state, the anchor, the
        monitors and the step counters are restored on exit to their values on entry, bit for
        bit, whether the block ends normally or raises.  Without it, nothing is undone, but the
        model is always left usable: ``model.params`` holds plain arrays (``adapt`` already
        guarantees this; the context re-checks after an exception).  ``model``, if given, must be
        the adapter's model.
        """
        if model is not None and model is not self.model:
            raise ValueError("context(model): model is not the model this adapter was created for")
        snap = self._snapshot() if self.cfg.episodic else None
        try:
            yield self
        finally:
            if snap is not None:
                self._restore(snap)
            elif _contains_box(self.model.params):
                self.model.params = _unbox_tree(self.model.params)


def create_adapter(model, cfg=None, strategy="none"):
    """An :class:`Adapter` for ``model``; ``strategy`` is a registered name (or an instance of
    :class:`AdaptationStrategy`).  An unknown name raises ``ValueError`` listing the registered
    ones."""
    return Adapter(model, cfg, strategy)


# ---------------------------------------------------------------------------------------------
# Integration hooks
# ---------------------------------------------------------------------------------------------

def ssm_hidden_states(params, u, h0=None):
    """The state sequence ``h_t`` of ``h_t = A h_{t-1} + B u_t``: ``u (..., T, m) -> (..., T, n)``.

    Computed as :func:`ssmref.ssm.ssm_scan` with ``C = I`` and ``D = 0``.
    """
    from .ssm import ssm_scan
    A, B = params["A"], params["B"]
    n, m = np.shape(B)
    return ssm_scan({"A": A, "B": B, "C": onp.eye(n), "D": onp.zeros((n, m))}, u, h0)[0]


class SSMHook:
    """Monitoring features of an SSM model: ``SSMHook(adapter).attach(model).features(batch)``.

    ``features(batch)`` returns, as plain arrays:

    - ``model.extract_features(**batch)`` (dict batch) or ``model.extract_features(batch)``, if the
      model has ``extract_features`` (the SSM's hidden states, or any summary of them);
    - otherwise, for a :class:`ssmref.ssm.StateSpaceModel`, the hidden-state sequence
      ``(..., T, n)`` of the input (``batch`` an array, or a dict with ``"u"``), from zeros.
    """

    def __init__(self, adapter):
        if not isinstance(adapter, Adapter):
            raise ValueError(f"adapter must be an Adapter, got {type(adapter).__name__}")
        self.adapter = adapter
        self.model = None

    def attach(self, model=None):
        """Bind the hook to ``model`` (default: the adapter's); returns ``self``."""
        self.model = self.adapter.model if model is None else model
        return self

    def features(self, batch):
        if self.model is None:
            raise ValueError("SSMHook.features: call attach(model) first")
        is_dict = hasattr(batch, "keys") and not hasattr(batch, "shape")
        extract = getattr(self.model, "extract_features", None)
        if callable(extract):
            f = extract(**batch) if is_dict else extract(batch)
        else:
            from .ssm import StateSpaceModel
            if not isinstance(self.model, StateSpaceModel):
                raise ValueError(f"{type(self.model).__name__} has no extract_features(batch) and "
                                 f"is not a StateSpaceModel")
            u = batch["u"] if is_dict else batch
            f = ssm_hidden_states(self.model.params, u)
        return _unbox_tree(f) if is_node(f) else onp.asarray(getval(f))


class MetaRLHook:
    """Policy-gradient loss for adapting a policy at test time: ``adapter.adapt(hook.policy_loss,
    batch, fwd_fn)``.

    ``outputs`` as :class:`ssmref.metarl.policy.SSMMetaPolicy` returns them: ``"logits"`` (categorical)
    or ``"mean"``/``"log_std"`` (diagonal Gaussian), optionally ``"values"`` and ``"features"``.
    ``batch``: ``"actions"``, ``"advantages"``, optionally ``"returns"`` (value targets) and
    ``"mask"`` (1 where a step happened; default all ones).  With ``mean_m`` the mask-weighted mean
    over all steps::

        loss = −mean_m(log π(a) · stop_gradient(A)) + value_coef · mean_m((V − R)²)
               − entropy_coef · mean_m(H(π))

    The first term is :func:`ssmref.metarl.rl.reinforce_surrogate` for ``(N, T)`` data.  The value term
    is present when ``outputs`` has ``"values"`` and ``batch`` has ``"returns"``.  Masked steps are
    ignored even if they hold ``nan``.  Logits are not checked for ``nan``, so a non-finite batch
    reaches the adapter's guard instead of raising.
    """

    def __init__(self, adapter, value_coef=0.5, entropy_coef=0.0):
        if not isinstance(adapter, Adapter):
            raise ValueError(f"adapter must be an Adapter, got {type(adapter).__name__}")
        _check_hyper("value_coef", value_coef, lo=0.0)
        _check_hyper("entropy_coef", entropy_coef)
        self.adapter, self.value_coef, self.entropy_coef = adapter, value_coef, entropy_coef

    @staticmethod
    def _log_prob_entropy(outputs, actions):
        if not is_node(outputs):
            raise ValueError(f"MetaRLHook: outputs must be a dict, got {type(outputs).__name__}")
        if "logits" in outputs:
            logits = outputs["logits"]
            a = onp.asarray(getval(actions))
            K = np.shape(logits)[-1]
            if a.dtype.kind not in "iu" or a.shape != np.shape(logits)[:-1]:
                raise ValueError(f"actions must be integers of shape {np.shape(logits)[:-1]}, got "
                                 f"{a.dtype} {a.shape}")
            if a.size and (a.min() < 0 or a.max() >= K):
                raise ValueError(f"actions must lie in [0, {K})")
            logp_all = log_softmax(logits)
            logp = np.sum(np.where(a[..., None] == onp.arange(K), logp_all, 0.0), axis=-1)
            return logp, row_entropy(logits)
        if "mean" in outputs:
            mean = outputs["mean"]
            log_std = outputs["log_std"] if "log_std" in outputs else onp.zeros(np.shape(mean)[-1:])
            return (gaussian_log_prob(mean, log_std, actions),
                    gaussian_entropy(log_std, mean))
        raise ValueError(f"outputs must hold 'logits' or 'mean', got {sorted(outputs.keys())}")

    def policy_loss(self, outputs, batch):
        for k in ("actions", "advantages"):
            if k not in batch:
                raise ValueError(f"MetaRLHook.policy_loss: batch needs {k!r}")
        logp, ent = self._log_prob_entropy(outputs, batch["actions"])
        shape = np.shape(logp)
        adv = onp.asarray(getval(batch["advantages"]), dtype=onp.float64)
        if adv.shape != shape:
            raise ValueError(f"advantages must have shape {shape}, got {adv.shape}")
        m = onp.ones(shape) if batch.get("mask") is None else \
            onp.asarray(getval(batch["mask"]), dtype=onp.float64)
        if m.shape != shape:
            raise ValueError(f"mask must have shape {shape}, got {m.shape}")
        valid = m > 0
        n = onp.sum(valid)
        if n == 0:
            raise ValueError("MetaRLHook.policy_loss: the mask selects no step")

        def masked_mean(x):
            return np.sum(np.where(valid, x, 0.0)) / n

        adv = onp.where(valid, adv, 0.0)
        loss = -masked_mean(logp * adv)
        if "values" in outputs and batch.get("returns") is not None:
            V = outputs["values"]
            if np.ndim(V) == len(shape) + 1 and np.shape(V)[-1] == 1:
                V = V[..., 0]
            R = onp.asarray(getval(batch["returns"]), dtype=onp.float64)
            if np.shape(V) != shape or R.shape != shape:
                raise ValueError(f"values and returns must have shape {shape}, got "
                                 f"{np.shape(V)} and {R.shape}")
            loss = loss + self.value_coef * masked_mean((V - onp.where(valid, R, 0.0)) ** 2)
        if self.entropy_coef:
            loss = loss - self.entropy_coef * masked_mean(ent)
        return loss

    def observe(self, outputs, batch=None):
        """``adapter.observe(outputs, batch, outputs.get("features"))``."""
        feats = outputs["features"] if "features" in outputs else None
        return self.adapter.observe(outputs, batch, feats)
