"""Monitoring for test-time adaptation: what a batch of predictions says, and how far its features
have moved.

Two pieces, both on plain values (never differentiated):

- :func:`prediction_stats` reads a model's outputs and returns predictive entropy, confidence and
  prediction variance;
- :class:`FeatureTracker` keeps an exponential moving mean and variance of features and measures
  the standardized shift of a new batch **against the statistics before they absorb it**.

:class:`MetaFeatures` is the record that :meth:`ssmref.adaptation.Adapter.observe` returns.

How outputs are read (``docs/adaptation.md``, "Monitoring")::

    outputs = {"logits": L, ...}            classification, L: (..., C)
    outputs = {"mean": M, "log_std": S}     regression / Gaussian policy, M: (..., d)
    outputs = {"mean": M}                   regression without a variance
    outputs = L                             a bare array is taken as logits

All leading dimensions are samples: ``L`` is read as ``N = prod(L.shape[:-1])`` rows of ``C``
class scores (a 1-D ``L`` is one row); ``M`` as ``N`` rows of ``d`` outputs (a 1-D ``M`` as ``N``
scalar outputs).  With ``P`` the ``(N, C)`` softmax probabilities::

    entropy          = (1/N) Σ_n H(P_n),      H(q) = −Σ_c q_c log q_c   (0 log 0 = 0)
    mean_confidence  = (1/N) Σ_n max_c P_nc
    prediction_var   = (1/C) Σ_c Var_n(P_nc)                          (population variance, ddof 0)

For regression outputs ``prediction_var = (1/d) Σ_j Var_n(M_nj)``, ``mean_confidence`` is
``None``, and ``entropy`` is the mean Gaussian differential entropy
``Σ_i (log σ_i + (1 + log 2π)/2)`` when ``log_std`` is given, else ``None``.

Feature shift.  Features ``F`` are read as ``(N, k)`` rows (leading dimensions flattened, the last
axis is the feature axis).  With the batch mean ``μ`` and population variance ``σ²`` per feature,
and the tracker's moving mean ``m`` and variance ``v`` (momentum ``β``)::

    shift = sqrt( (1/k) Σ_j (μ_j − m_j)² / (v_j + 1e-8) )        with m, v BEFORE this batch
    m ← β m + (1 − β) μ
    v ← β v + (1 − β) σ² + β (1 − β) (μ − m_old)²                 the variance of the β : (1 − β)
                                                                   mixture of old and new
The first batch initialises ``m = μ, v = σ²`` and has ``shift = None`` (nothing to compare with).
A batch with non-finite features leaves the tracker unchanged and reports ``shift = nan``.
"""

import dataclasses
import math
import time
from typing import Optional

import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_scalar
from ssmref.nn import categorical_entropy, gaussian_entropy, softmax

SHIFT_EPS = 1e-8  # added to the tracked variance in the standardized shift


@dataclasses.dataclass
class MetaFeatures:
    """One observation of a batch (see the module docstring for the exact definitions).

    ``timestamp`` is ``time.time()`` when it was made; ``batch_size`` the number of rows ``N`` the
    statistics averaged over; ``notes`` a dict of extra facts (output kind, class count, tracker
    count, and why a value is missing).
    """
    timestamp: float
    batch_size: int
    entropy: Optional[float]
    mean_confidence: Optional[float]
    prediction_var: Optional[float]
    feature_shift: Optional[float]
    notes: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Reading outputs
# ---------------------------------------------------------------------------------------------

def split_outputs(outputs):
    """``(kind, array, log_std)`` with kind ``"logits"`` or ``"mean"``; ``ValueError`` otherwise.

    A dict (or autograd ``DictBox``) must hold ``"logits"`` or ``"mean"``; ``"logits"`` wins when
    both are present.  Anything else is taken as an array of logits.
    """
    if hasattr(outputs, "keys") and not hasattr(outputs, "shape"):
        if "logits" in outputs:
            return "logits", outputs["logits"], None
        if "mean" in outputs:
            return "mean", outputs["mean"], (outputs["log_std"] if "log_std" in outputs else None)
        raise ValueError(f"outputs must hold 'logits' or 'mean', got keys {sorted(outputs.keys())}")
    return "logits", outputs, None


def as_rows(x, name, scalar_rows=False):
    """``x`` as a float64 ``(N, k)`` array of rows: the last axis is kept, the others flattened.

    A 0-d ``x`` is one row of one entry.  A 1-d ``x`` is one row of ``k`` entries, or, with
    ``scalar_rows``, ``N`` rows of one entry each.
    """
    a = onp.asarray(getval(x), dtype=onp.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(-1, 1) if scalar_rows else a.reshape(1, -1)
    if a.shape[-1] == 0:
        raise ValueError(f"{name} has an empty last axis, shape {a.shape}")
    return a.reshape(-1, a.shape[-1])


def prediction_stats(outputs):
    """``(entropy, mean_confidence, prediction_var, batch_size, notes)`` of a batch of outputs."""
    kind, arr, log_std = split_outputs(outputs)
    if kind == "logits":
        L = as_rows(arr, "logits")                           # (N, C)
        N, C = L.shape
        with onp.errstate(invalid="ignore", over="ignore", divide="ignore"):
            P = softmax(L)                                   # (N, C)
            H = categorical_entropy(L)                       # (N,)
            entropy = float(onp.mean(H))
            confidence = float(onp.mean(onp.max(P, axis=-1)))
            variance = float(onp.mean(onp.var(P, axis=0)))
        return entropy, confidence, variance, N, {"kind": "logits", "num_classes": C}
    M = as_rows(arr, "mean", scalar_rows=True)               # (N, d)
    N, d = M.shape
    with onp.errstate(invalid="ignore", over="ignore", divide="ignore"):
        variance = float(onp.mean(onp.var(M, axis=0)))
        entropy = None
        if log_std is not None:
            S = onp.asarray(getval(log_std), dtype=onp.float64)
            S = as_rows(onp.broadcast_to(S, onp.shape(getval(arr))), "log_std",
                        scalar_rows=True)                    # (N, d), as M
            entropy = float(onp.mean(gaussian_entropy(S)))
    notes = {"kind": "mean", "output_dim": d}
    if log_std is None:
        notes["entropy"] = "no log_std: entropy undefined"
    notes["mean_confidence"] = "regression outputs: no confidence"
    return entropy, None, variance, N, notes


# ---------------------------------------------------------------------------------------------
# Feature shift
# ---------------------------------------------------------------------------------------------

class FeatureTracker:
    """Exponential moving mean and variance of features, and the standardized shift of a batch.

    ``momentum`` is ``β`` in ``m ← β m + (1 − β) μ``.  State: ``count`` (batches absorbed),
    ``mean`` and ``var`` (``None`` before the first batch).  See the module docstring.
    """

    def __init__(self, momentum=0.9):
        self.momentum = float(check_scalar("momentum", momentum, low=0.0, high=1.0,
                                           high_open=True))
        self.count = 0
        self.mean = None
        self.var = None

    def observe(self, features):
        """Measure the batch against the current statistics, then absorb it.

        Returns ``(shift, note)``: ``shift`` is ``None`` for the first batch and ``nan`` for a batch
        with non-finite features (which is not absorbed); ``note`` says why, or is ``None``.
        """
        F = as_rows(features, "features")                   # (N, k)
        if self.mean is not None and F.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features have {F.shape[1]} columns, the tracker has "
                             f"{self.mean.shape[0]}")
        if not onp.all(onp.isfinite(F)):
            return math.nan, "non-finite features: tracker not updated"
        mu = onp.mean(F, axis=0)                             # (k,)
        var = onp.var(F, axis=0)                             # (k,) population variance
        if self.mean is None:
            self.mean, self.var, self.count = mu, var, 1
            return None, "first batch: tracker initialised"
        # the shift is measured BEFORE the statistics absorb this batch
        shift = float(onp.sqrt(onp.mean((mu - self.mean) ** 2 / (self.var + SHIFT_EPS))))
        b = self.momentum
        delta = mu - self.mean
        self.mean = b * self.mean + (1.0 - b) * mu
        self.var = b * self.var + (1.0 - b) * var + b * (1.0 - b) * delta ** 2
        self.count += 1
        return shift, None


def make_meta_features(outputs, features, tracker):
    """Everything :meth:`Adapter.observe` reports, with ``tracker`` updated by ``features``."""
    entropy, confidence, variance, n, notes = prediction_stats(outputs)
    shift = None
    if features is not None:
        shift, note = tracker.observe(features)
        if note:
            notes["feature_shift"] = note
        notes["tracker_count"] = tracker.count
    else:
        notes["feature_shift"] = "no features given"
    return MetaFeatures(timestamp=time.time(), batch_size=n, entropy=entropy,
                        mean_confidence=confidence, prediction_var=variance,
                        feature_shift=shift, notes=notes)
