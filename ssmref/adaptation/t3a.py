"""T3A: test-time template adjustment of a linear classifier, without gradients.

Iwasawa & Matsuo, "Test-Time Classifier Adjustment Module for Model-Agnostic Domain
Generalization", NeurIPS 2021; code ``github.com/matsuolab/T3A`` (``domainbed/adapt_algorithms.py``,
class ``T3A``).  The classifier is ``logits = z Wᵀ + b`` on features ``z (N, d)``, ``W (C, d)``.
Supports start as the rows of ``W`` (labelled by the classifier's own prediction on them).  For
each batch, with the *source* classifier ``p = softmax(z W_srcᵀ + b_src)``::

    supports ← supports ∪ {z_n},  label ŷ_n = argmax_c p_nc,  score H(p_n)
    keep, per class, the M supports of lowest entropy                    (filter_k = M, default 100)
    W'_c = normalize( Σ_{s: ŷ_s = c} s / ‖s‖ ),   b' = 0               (normalize(v) = v / max(‖v‖, 1e-12))

and the adjusted classifier ``z W'ᵀ`` predicts.  T3A takes no gradient step, so of the adapter's
eight steps only the guards apply: a batch with non-finite features changes nothing, and the
context/episodic contract holds (the supports are the strategy's state).  Clipping, Adam, the step
bound and the trust region have nothing to act on: ``W'`` is recomputed from the supports, not
accumulated.  The adapter selects, with ``allow_layers``, the classifier's weight ``(C, d)`` and
optionally its bias ``(C,)``; the model's outputs hold ``"features"``, the classifier's input.
"""

import numpy as onp

from ssmref.checks import check_int

from ssmref.adaptation.adapter import Adapter, unboxed
from ssmref.adaptation.strategies import AdaptationStrategy, register_adaptation_strategy


def row_entropy(logits):
    """``H(softmax(L_n))`` per row, plain NumPy, ``(N, C) -> (N,)``."""
    z = logits - onp.max(logits, axis=-1, keepdims=True)
    logp = z - onp.log(onp.sum(onp.exp(z), axis=-1, keepdims=True))
    return -onp.sum(onp.exp(logp) * logp, axis=-1)


def normalize_rows(x, eps=1e-12):
    """``x_n / max(‖x_n‖, eps)`` (``torch.nn.functional.normalize``)."""
    return x / onp.maximum(onp.linalg.norm(x, axis=-1, keepdims=True), eps)


@register_adaptation_strategy("t3a")
class T3AStrategy(AdaptationStrategy):
    """The supports of T3A and their update: ``filter_k`` = M per class (the official default
    100; ``None`` keeps every support, i.e. no entropy filter)."""

    def __init__(self, cfg=None, filter_k=100):
        super().__init__(cfg)
        self.filter_k = None if filter_k is None else check_int("filter_k", filter_k, minimum=1)
        self.supports = self.labels = self.scores = None

    def post_loss(self, loss, outputs, batch):
        raise ValueError("t3a takes no gradient step; use it through create_adapter(..., 't3a')")

    def start_supports(self, W, b):
        """Warm-up supports: the rows of ``W``, labelled and scored by the classifier."""
        logits = W @ W.T + b                                         # (C, C)
        self.supports, self.labels, self.scores = W.copy(), onp.argmax(logits, -1), \
            row_entropy(logits)

    def add(self, z, W, b):
        """Append the batch's features, keep the best M per class; returns the new ``W'``."""
        logits = z @ W.T + b                                         # the source classifier
        S = onp.concatenate([self.supports, z])
        y = onp.concatenate([self.labels, onp.argmax(logits, -1)])
        h = onp.concatenate([self.scores, row_entropy(logits)])
        keep = []
        for c in range(W.shape[0]):
            idx = onp.flatnonzero(y == c)
            keep.append(idx[onp.argsort(h[idx], kind="stable")][:self.filter_k])
        keep = onp.concatenate(keep)
        self.supports, self.labels, self.scores = S[keep], y[keep], h[keep]
        return self.weights(W.shape[0])

    def weights(self, num_classes):
        """``W'_c = normalize(Σ_{s: ŷ_s = c} normalize(s))``, ``(C, d)``."""
        onehot = self.labels[:, None] == onp.arange(num_classes)      # (S, C)
        return normalize_rows((normalize_rows(self.supports).T @ onehot).T)


class T3AAdapter(Adapter):
    """The adapter for ``t3a``: same construction, ``adapt``, ``observe``, ``context`` and
    ``stats`` as :class:`Adapter`; ``adapt(loss_fn, batch, fwd_fn)`` ignores ``loss_fn`` (T3A has
    no loss), updates the supports once per call and writes ``W'`` (and ``b' = 0``) into the
    model.  It returns ``updated``, ``steps`` (1), ``loss`` (``None``), ``losses`` (``[]``),
    ``logits`` (``z W'ᵀ``, T3A's prediction for the batch, which counts its own features) and
    ``num_supports``."""

    def __init__(self, model, cfg=None, strategy="t3a"):
        super().__init__(model, cfg, strategy)
        shapes = {k: v.shape for k, v in self._source.items()}
        weight = [k for k, s in shapes.items() if len(s) == 2]
        bias = [k for k, s in shapes.items() if len(s) == 1]
        if len(weight) != 1 or len(bias) > 1 or len(shapes) != len(weight) + len(bias) or (
                bias and shapes[bias[0]] != shapes[weight[0]][:1]):
            raise ValueError(f"t3a: allow_layers must select the classifier's weight (C, d) and "
                             f"optionally its bias (C,); selected {self.trainable_names} with "
                             f"shapes {list(shapes.values())}")
        self._weight, self._bias = weight[0], (bias[0] if bias else None)
        W = self._source[self._weight]
        b = self._source[self._bias] if self._bias else onp.zeros(W.shape[0])
        self.strategy.start_supports(W, b)

    def _source_classifier(self):
        W = self._source[self._weight]
        return W, (self._source[self._bias] if self._bias else onp.zeros(W.shape[0]))

    def adapt(self, loss_fn=None, batch=None, fwd_fn=None):
        if fwd_fn is None:
            fwd_fn = self.default_forward
        if not self.cfg.enabled:
            return {"updated": False, "steps": 0, "loss": None, "losses": [],
                    "reason": "adaptation disabled (cfg.enabled=False)"}
        with self._restoring_model(), onp.errstate(all="ignore"):
            outputs = fwd_fn(batch)
        if not isinstance(outputs, dict) or "features" not in outputs:
            raise ValueError("t3a needs outputs['features'], the classifier's input (N, d)")
        z = onp.asarray(unboxed(outputs)["features"], dtype=float)
        W, b = self._source_classifier()
        z = z.reshape(-1, z.shape[-1]) if z.ndim >= 1 else z
        if z.ndim != 2 or z.shape[1] != W.shape[1]:
            raise ValueError(f"t3a: features must be (N, {W.shape[1]}), got {z.shape}")
        out = {"updated": False, "steps": 0, "loss": None, "losses": []}
        if not onp.all(onp.isfinite(z)):
            self._state.steps_refused += 1
            return dict(out, reason="refused: non-finite features; nothing changed")
        W_new = self.strategy.add(z, W, b)
        new = {self._weight: W_new}
        if self._bias:
            new[self._bias] = onp.zeros_like(b)
        theta = self._theta()
        self._write(dict(theta, **new))
        self._state.steps_taken += 1
        return dict(out, updated=True, steps=1, logits=z @ W_new.T,
                    num_supports=len(self.strategy.labels))


T3AStrategy.adapter_class = T3AAdapter
