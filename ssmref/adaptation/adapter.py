"""The adapter: steps 1 and 2 and the guards around :mod:`ssmref.adaptation.update`.

A *model* is any object with a ``params`` dict (nested, keys may contain dots) that its forward
reads **at call time**.  To differentiate, the adapter sets ``model.params`` to a tree whose
trainable leaves are autograd boxes and restores the model's attributes in ``finally``.  One step::

    1. outputs = fwd_fn(batch);   g = ∇_θ strategy.post_loss(loss_fn(outputs, batch), outputs, batch)
    2. if the loss or any g is non-finite: change nothing, return updated=False and a reason
    3.-8. (θ, Adam state, a) ← guarded_update(θ, g, Adam state, a)     a = θ before the first step
    then: if the new θ, Adam state or a is non-finite: change nothing, updated=False and a reason

``adapt`` runs ``max_steps_per_call`` steps and stops at the first refused or skipped one.
"""

import contextlib
import copy
import dataclasses
import math
import warnings
from typing import Optional

import autograd.numpy as np
import numpy as onp
from autograd import value_and_grad
from autograd.tracer import getval

from ssmref.optim import adam_init
from ssmref.params import contains_box, tree_map_with_path

from ssmref.adaptation import monitor
from ssmref.adaptation.config import AdaptationConfig
from ssmref.adaptation.selection import is_floating, matching, param_leaves
from ssmref.adaptation.strategies import SkipStep, make_strategy
from ssmref.adaptation.update import guarded_update


# ---------------------------------------------------------------------------------------------
# The model's params, by path.  Not ssmref.params.tree_copy / stop_gradient: a model's keys may
# hold dots, and its containers keep their key order and its leaves their dtype.
# ---------------------------------------------------------------------------------------------

def rebuild(template, values):
    """A tree like ``template`` (plain dicts) whose leaf at path ``q`` is ``values[q]`` if present,
    else the template's leaf.  Never splits strings, never writes into ``template``."""
    return tree_map_with_path(lambda q, v: values.get(q, v), template)


def copy_tree(tree):
    """A deep copy of a params tree (plain dicts; array leaves copied, dtype kept)."""
    def copy_leaf(q, v):
        v = getval(v)
        return onp.array(v, copy=True) if isinstance(v, onp.ndarray) else copy.deepcopy(v)
    return tree_map_with_path(copy_leaf, tree)


def unboxed(tree):
    """``tree`` with every autograd box replaced by its value (the other leaves as they are)."""
    return tree_map_with_path(lambda q, v: getval(v), tree)


def _all_finite(tree):
    return all(bool(onp.all(onp.isfinite(getval(v)))) for v in tree.values())


def _key(i):
    """The key of the ``i``-th trainable tensor in the adapter's flat trees (θ, g, Adam state,
    anchor).  ``ssmref.optim`` and ``ssmref.params`` need dot-free keys and names may hold dots;
    zero-padded indices also sort in tree order, so global norms sum in that order."""
    return f"t{i:05d}"


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _State:
    """All the adapter changes besides ``model.params`` (copied whole by episodic contexts)."""
    opt: dict                          # Adam state {"step", "m", "v"} over the trainable dict
    anchor: Optional[dict] = None      # a, over the trainable dict; None before the first step
    tracker: monitor.FeatureTracker = None
    last_features: Optional[monitor.MetaFeatures] = None
    steps_taken: int = 0               # accepted steps
    steps_refused: int = 0             # non-finite guard
    steps_skipped: int = 0             # SkipStep from the strategy


class Adapter:
    """Test-time adapter of one model; see :mod:`ssmref.adaptation` for the step.

    Build it with :func:`create_adapter`.  Attributes: ``model``, ``cfg``, ``strategy``,
    ``trainable_names`` (the selected leaf names in tree order: depth first, keys sorted),
    ``frozen_names``.  Views (copies): ``anchor`` (``name -> array`` or ``None``),
    ``optimizer_state`` (``{"step", "m", "v"}`` with ``name -> array`` moments),
    ``last_features``, ``stats``; ``tracker`` is the live
    :class:`ssmref.adaptation.monitor.FeatureTracker`.
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
        float_names = [n for _, n, v in leaves if is_floating(v)]
        chosen = set(matching(float_names, *cfg.layer_patterns()))
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
        self._source = {k: v.copy() for k, v in theta.items()}     # θ_src: the params on creation
        self._state = _State(opt=adam_init(theta),
                             tracker=monitor.FeatureTracker(cfg.monitor_momentum))
        if hasattr(self.strategy, "start"):   # a duck-typed strategy may have post_loss only
            self.strategy.start(self._source)

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

    def _forward_at(self, theta, batch, fwd_fn):
        """``fwd_fn(batch)`` with the trainable leaves set to ``theta`` (plain arrays out); the
        model's attributes are restored afterwards."""
        values = {q: theta[_key(i)] for i, q in enumerate(self._paths)}
        with self._restoring_model(), onp.errstate(all="ignore"):
            self.model.params = rebuild(self.model.params, values)
            outputs = fwd_fn(batch)
        return unboxed(outputs) if isinstance(outputs, dict) else getval(outputs)

    def _step(self, loss_fn, batch, fwd_fn):
        """One step; returns a dict of what happened (``updated`` and the rest)."""
        cfg, st = self.cfg, self._state
        theta = self._theta()
        # 1. loss and gradient of the strategy's objective (the strategy may evaluate it more than
        #    once, e.g. SAR's sharpness-aware second pass, or run forwards at other parameters)
        evaluate = lambda th: self._value_and_grad(th, loss_fn, batch, fwd_fn)  # noqa: E731
        try:
            if hasattr(self.strategy, "gradient"):
                loss, grads = self.strategy.gradient(
                    evaluate, theta, lambda th, b=batch: self._forward_at(th, b, fwd_fn), batch)
            else:
                loss, grads = evaluate(theta)
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
        # what a strategy adds after the step (a teacher, a restore, a reset to θ_src)
        reset = False
        if hasattr(self.strategy, "after_update"):
            new, reset = self.strategy.after_update(theta, new, self._source)
        if reset:
            opt, anchor = adam_init(new), None
            extra["reset"] = True
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
        :mod:`ssmref.adaptation.monitor` for the definitions."""
        mf = monitor.make_meta_features(outputs, features, self._state.tracker)
        self._state.last_features = mf
        return mf

    # ----------------------------------------------------------------------------- contexts
    def _snapshot(self):
        strategy_state = {k: v for k, v in getattr(self.strategy, "__dict__", {}).items()
                          if k != "cfg"}
        return (copy_tree(self.model.params), copy.deepcopy(self._state),
                copy.deepcopy(strategy_state))

    def _restore(self, snap):
        params, state, strategy_state = snap
        self.model.params = copy_tree(params)
        self._state = copy.deepcopy(state)
        for k in [k for k in getattr(self.strategy, "__dict__", {}) if k != "cfg"]:
            delattr(self.strategy, k)
        for k, v in copy.deepcopy(strategy_state).items():
            setattr(self.strategy, k, v)

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
            elif contains_box(self.model.params):
                self.model.params = unboxed(self.model.params)


def create_adapter(model, cfg=None, strategy="none"):
    """An :class:`Adapter` for ``model``; ``strategy`` is a registered name (or an instance of
    :class:`AdaptationStrategy`).  An unknown name raises ``ValueError`` listing the registered
    ones.  A strategy whose ``adapter_class`` is set (``t3a``) gets that adapter."""
    cfg = AdaptationConfig() if cfg is None else cfg
    if not isinstance(cfg, AdaptationConfig):
        raise ValueError(f"cfg must be an AdaptationConfig, got {type(cfg).__name__}")
    strategy = make_strategy(strategy, cfg.validate())
    return (getattr(strategy, "adapter_class", None) or Adapter)(model, cfg, strategy)
