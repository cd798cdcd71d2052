"""Strategies: what the adapter minimises, ``post_loss(loss, outputs, batch) -> objective``.

With ``N`` rows of logits (all leading dimensions are rows), ``q_n = softmax(logits_n)`` and
``H_n = −Σ_c q_nc log q_nc`` (:func:`ssmref.nn.categorical_entropy`)::

    none:  loss
    tent:  loss + entropy_weight · (1/N) Σ_n H_n
    eata:  E0 = eata_margin · ln C,   S = {n : H_n < E0},   w_n = exp(E0 − H_n)  (a constant)
           loss + entropy_weight · (1/|S|) Σ_{n∈S} w_n H_n;      S empty → SkipStep

A strategy raises :class:`SkipStep` to skip a step (nothing changes).  The registry maps names to
builders, ``builder(cfg) -> AdaptationStrategy``; :func:`register_adaptation_strategy` adds one.

References: Wang, Shelhamer, Liu, Olshausen, Darrell, "Tent: Fully Test-Time Adaptation by Entropy
Minimization", ICLR 2021; Niu et al., "Efficient Test-Time Model Adaptation without Forgetting"
(EATA), ICML 2022.
"""

import math

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_scalar
from ssmref.nn import categorical_entropy
from ssmref.params import stop_gradient

from ssmref.adaptation.config import AdaptationConfig
from ssmref.adaptation.monitor import split_outputs


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
    adapter_class = None     # None: the ordinary Adapter; t3a sets its own

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None else AdaptationConfig()

    def post_loss(self, loss, outputs, batch):
        return loss

    # Three hooks for the methods that need more than an objective (ssmref.adaptation.methods);
    # the base class does nothing in them.  Trees are the adapter's flat dicts key -> array.
    def start(self, source):
        """Called once by the adapter with ``θ_src``, the trainable leaves on creation."""

    def gradient(self, value_and_grad, theta, forward, batch):
        """``(loss, grads)`` for step 1.  ``value_and_grad(θ')`` evaluates the objective and its
        gradient at ``θ'`` on ``batch``; ``forward(θ', b=batch)`` runs the model at ``θ'`` on
        ``b`` (plain outputs).  The base class: one evaluation at ``θ``."""
        return value_and_grad(theta)

    def after_update(self, theta, new, source):
        """``(new', reset)`` after steps 3-8 accepted ``new``: a strategy may replace the new
        parameters (CoTTA's restore) or return ``(θ_src, True)`` to reset to the source and
        restart Adam and the anchor (SAR's recovery).  The base class: ``(new, False)``."""
        return new, False

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


# ---------------------------------------------------------------------------------------------
# The registry: name -> builder(cfg)
# ---------------------------------------------------------------------------------------------

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
    """An :class:`AdaptationStrategy` from a registered name (or an instance, or any object with
    a callable ``post_loss`` such as a builder returns, used as is)."""
    if isinstance(strategy, AdaptationStrategy) or (
            not isinstance(strategy, str) and callable(getattr(strategy, "post_loss", None))):
        return strategy
    if not isinstance(strategy, str) or strategy not in _REGISTRY:
        raise ValueError(f"unknown adaptation strategy {strategy!r}; registered: "
                         f"{available_strategies()}")
    out = _REGISTRY[strategy](cfg)
    if not callable(getattr(out, "post_loss", None)):
        raise ValueError(f"builder of strategy {strategy!r} returned {out!r}, which has no "
                         f"post_loss(loss, outputs, batch)")
    return out


# ---------------------------------------------------------------------------------------------
# The built-in strategies
# ---------------------------------------------------------------------------------------------

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
        H = categorical_entropy(logits_of(outputs, "tent"))  # (...,) one entropy per row
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
        margin = self.cfg.eata_margin if margin is None else margin
        self.margin = float(check_scalar("margin", margin, low=0.0))

    def threshold(self, num_classes):
        """``E0 = margin · ln C``."""
        return self.margin * math.log(num_classes)

    def selection(self, logits):
        """``(mask, weights, E0)`` on values: the reliable rows and their constant weights."""
        H = onp.asarray(getval(categorical_entropy(stop_gradient(logits))))
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
        H = categorical_entropy(logits)
        term = np.sum(np.where(mask, w * H, 0.0)) / onp.sum(mask)
        return loss + self.cfg.entropy_weight * term
