"""SHOT-IM, SAR, CoTTA, TTT and TTT++ as adapter strategies (T3A: :mod:`ssmref.adaptation.t3a`).

With ``N`` rows of logits, ``q_n = softmax(logits_n)``, ``H(q) = −Σ_c q_c log q_c``, ``λ =
entropy_weight`` and ``loss`` what ``loss_fn`` returned, each objective is minimised by the
adapter's guarded steps 3-8 (clip, Adam, step bound, trust region, EMA anchor)::

    shot:   loss + λ [ (1/N) Σ_n H(q_n) − H((1/N) Σ_n q_n) ]              SHOT-IM (Liang et al. 2020)
    sar:    S1 = {n : H_n(θ) < E0},  g1 = ∇ [loss + λ mean_{S1} H_n](θ),   E0 = sar_margin · ln C
            ε = ρ g1 / (‖g1‖_global + 1e-12)                               (SAM, Foret et al. 2021)
            S2 = {n ∈ S1 : H_n(θ + ε) < E0},  g = ∇ [loss + λ mean_{S2} H_n](θ + ε)
            e ← 0.9 e + 0.1 mean_{S2} H_n(θ + ε)   (the first value starts e)
            after the step: if e < e_reset: θ ← θ_src, Adam and the anchor restart  (Niu et al. 2023)
    cotta:  teacher logits T = f(x; θ_T), or (1/K) Σ_k f(aug_k(x); θ_T) when the source model's
            mean confidence (1/N) Σ_n max_c softmax(f(x; θ_src))_nc < ap
            loss + λ (1/N) Σ_n −Σ_c softmax(T_n)_c log q_nc                 (Wang et al. 2022)
            after the step (student first): θ_T ← α θ_T + (1 − α) θ;  then every element
            θ_i ← θ_src,i with probability p (stochastic restore)
    ttt:    loss + w_ssl · CE(outputs["ssl_logits"], batch["ssl_labels"])  (Sun et al. 2020)
    ttt++:  ttt + w_mean · (1/d) ‖μ(F) − μ_src‖² + w_cov · ‖Σ(F) − Σ_src‖_F² / (4 d²)
            F = outputs["features"] (N, d) with the queue of earlier rows      (Liu et al. 2021)
            Σ(F) = (Fᵀ F − (1ᵀF)ᵀ(1ᵀF)/n) / (n − 1)

Defaults are the papers' official configurations (``docs/adaptation.md`` has the table).  The
resets of SAR and the restore of CoTTA replace parameters after the guarded step; they are not
steps, so the step bound does not apply to them (a reset moves to ``θ_src`` itself).
"""

import math

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_int, check_scalar
from ssmref.nn import categorical_entropy, log_softmax, softmax
from ssmref.params import stop_gradient

from ssmref.adaptation.strategies import (AdaptationStrategy, SkipStep, logits_of,
                                          register_adaptation_strategy)


def _rows(x):
    """``x (..., k) -> (N, k)``."""
    return np.reshape(x, (-1, np.shape(x)[-1]))


def _finite(loss, grads):
    return math.isfinite(loss) and all(bool(onp.all(onp.isfinite(g))) for g in grads.values())


# ---------------------------------------------------------------------------------------------
# SHOT-IM: information maximisation, entropy minus diversity
# ---------------------------------------------------------------------------------------------

@register_adaptation_strategy("shot")
class SHOTStrategy(AdaptationStrategy):
    """SHOT-IM: ``loss + λ [mean_n H(q_n) − diversity_weight · H(mean_n q_n)]``.

    Freeze the classifier with ``deny_layers`` (SHOT adapts the encoder only).  SHOT's code
    writes ``H`` with ``log(q + 1e-5)``; here ``H`` is exact (``log_softmax``).
    Liang, Hu, Feng, "Do We Really Need to Access the Source Data?", ICML 2020.
    """

    def __init__(self, cfg=None, diversity_weight=1.0):
        super().__init__(cfg)
        self.diversity_weight = float(check_scalar("diversity_weight", diversity_weight))

    def post_loss(self, loss, outputs, batch):
        L = _rows(logits_of(outputs, "shot"))                        # (N, C)
        mean_q = np.mean(softmax(L), axis=0)                         # (C,)
        diversity = -np.sum(mean_q * np.log(mean_q))
        im = np.mean(categorical_entropy(L)) - self.diversity_weight * diversity
        return loss + self.cfg.entropy_weight * im


# ---------------------------------------------------------------------------------------------
# SAR: reliable entropy, sharpness-aware gradient, model recovery
# ---------------------------------------------------------------------------------------------

@register_adaptation_strategy("sar")
class SARStrategy(AdaptationStrategy):
    """SAR (Niu et al., ICLR 2023; ``github.com/mr-eggplant/SAR``, ``sar.py``, ``sam.py``).

    ``margin`` (default 0.4, ``E0 = margin · ln C``), ``rho`` (0.05), ``reset_constant`` (0.2),
    ``ema_momentum`` (0.9).  An empty ``S1`` or ``S2`` raises :class:`SkipStep` (the official code
    then steps on a ``nan`` loss's zero gradient).  As the official code, the entropy average
    ``e`` survives a reset (it is cleared and then re-assigned).  ``reliable_mask=False`` is the
    broken variant without the filter (every row counts).
    """

    def __init__(self, cfg=None, margin=0.4, rho=0.05, reset_constant=0.2, ema_momentum=0.9,
                 reliable_mask=True):
        super().__init__(cfg)
        self.margin = float(check_scalar("margin", margin, low=0.0))
        self.rho = float(check_scalar("rho", rho, low=0.0))
        self.reset_constant = float(check_scalar("reset_constant", reset_constant))
        self.ema_momentum = float(check_scalar("ema_momentum", ema_momentum, low=0.0, high=1.0))
        self.reliable_mask = bool(reliable_mask)
        self.ema, self.resets, self._phase, self._mask1, self._second = None, 0, 1, None, None

    def post_loss(self, loss, outputs, batch):
        L = _rows(logits_of(outputs, "sar"))
        H = categorical_entropy(L)                                   # (N,)
        E0 = self.margin * math.log(np.shape(L)[-1])
        h = onp.asarray(getval(H))
        with onp.errstate(invalid="ignore"):
            reliable = h < E0 if self.reliable_mask else onp.ones(h.shape, dtype=bool)
        if self._phase == 1:
            self._mask1 = mask = reliable
        else:
            mask = self._mask1 & reliable
        if not mask.any():
            raise SkipStep(f"sar: no reliable sample in pass {self._phase} (E0 = {E0:.6g})")
        term = np.sum(np.where(mask, H, 0.0)) / onp.sum(mask)
        if self._phase == 2:
            self._second = float(getval(term))
        return loss + self.cfg.entropy_weight * term

    def gradient(self, value_and_grad, theta, forward, batch):
        self._phase, self._second = 1, None
        loss, g1 = value_and_grad(theta)
        if not _finite(loss, g1):
            return loss, g1                          # the adapter's guard refuses it
        norm = math.sqrt(sum(float(onp.sum(g * g)) for g in g1.values()))
        scale = self.rho / (norm + 1e-12)
        perturbed = {k: theta[k] + scale * g1[k] for k in theta}     # θ + ε
        self._phase = 2
        try:
            _, g2 = value_and_grad(perturbed)
        finally:
            self._phase = 1
        if self._second is not None and math.isfinite(self._second):
            m = self.ema_momentum
            self.ema = self._second if self.ema is None else m * self.ema + (1 - m) * self._second
        return loss, g2

    def after_update(self, theta, new, source):
        if self.ema is not None and self.ema < self.reset_constant:
            self.resets += 1
            return {k: v.copy() for k, v in source.items()}, True
        return new, False


# ---------------------------------------------------------------------------------------------
# CoTTA: EMA teacher, augmentation-averaged pseudo-labels, stochastic restore
# ---------------------------------------------------------------------------------------------

def gaussian_augment(batch, rng, std):
    """``batch`` with ``N(0, std²)`` noise added to every floating-point array (dict values or
    the batch itself): the default augmentation of ``cotta`` for inputs that are not images."""
    if isinstance(batch, dict):
        return {k: gaussian_augment(v, rng, std) for k, v in batch.items()}
    a = onp.asarray(batch)
    if a.dtype.kind != "f":
        return batch
    return a + std * rng.standard_normal(a.shape)


@register_adaptation_strategy("cotta")
class CoTTAStrategy(AdaptationStrategy):
    """CoTTA (Wang, Fink, Van Gool, Dai, CVPR 2022; ``github.com/qinenergy/cotta``,
    ``cifar/cotta.py``, ``cifar/cfgs/cifar10/cotta.yaml``): ``teacher_decay`` α = 0.999,
    ``restore_prob`` p = 0.01, ``confidence_threshold`` ap = 0.92, ``n_augment`` K = 32.

    ``augment(batch, rng) -> batch`` defaults to Gaussian input noise of std ``augment_std``
    (CoTTA's image transforms do not apply to general inputs).  Every random draw comes from
    ``numpy.random.default_rng(seed)``, in this order per step: the K augmentations (only when
    confidence is low), then one uniform array per trainable tensor in tree order for the
    restore (element restored where ``u < p``).  ``teacher_first=True`` is the broken variant
    that moves the teacher towards the student before the student's step.
    """

    def __init__(self, cfg=None, teacher_decay=0.999, restore_prob=0.01,
                 confidence_threshold=0.92, n_augment=32, augment=None, augment_std=0.05,
                 seed=0, teacher_first=False):
        super().__init__(cfg)
        self.teacher_decay = float(check_scalar("teacher_decay", teacher_decay, low=0.0,
                                                high=1.0))
        self.restore_prob = float(check_scalar("restore_prob", restore_prob, low=0.0, high=1.0))
        self.confidence_threshold = float(check_scalar("confidence_threshold",
                                                       confidence_threshold))
        self.n_augment = check_int("n_augment", n_augment, minimum=1)
        self.augment_std = float(check_scalar("augment_std", augment_std, low=0.0))
        self.augment = augment
        self.rng = onp.random.default_rng(seed)
        self.teacher_first = bool(teacher_first)
        self.source, self.teacher, self.target, self.augmented = None, None, None, None

    def start(self, source):
        self.source = source                                         # the anchor model θ_src
        self.teacher = {k: v.copy() for k, v in source.items()}      # θ_T = θ_src

    def teacher_logits(self, batch, forward):
        """``(T, augmented)``: the teacher's logits for ``batch`` (plain ``(N, C)``)."""
        conf = onp.max(softmax(_rows(logits_of(forward(self.source), "cotta"))), axis=-1)
        if onp.mean(conf) >= self.confidence_threshold:
            return onp.asarray(_rows(logits_of(forward(self.teacher), "cotta"))), False
        aug = self.augment or (lambda b, rng: gaussian_augment(b, rng, self.augment_std))
        outs = [_rows(logits_of(forward(self.teacher, aug(batch, self.rng)), "cotta"))
                for _ in range(self.n_augment)]
        return onp.mean(outs, axis=0), True

    def gradient(self, value_and_grad, theta, forward, batch):
        if self.teacher_first:                                       # broken: teacher first
            self._move_teacher(theta)
        self.target, self.augmented = self.teacher_logits(batch, forward)
        return value_and_grad(theta)

    def post_loss(self, loss, outputs, batch):
        if self.target is None:
            raise ValueError("cotta: post_loss needs the teacher's logits; use it through an "
                             "Adapter")
        L = _rows(logits_of(outputs, "cotta"))
        p_teacher = stop_gradient(softmax(self.target))
        ce = -np.sum(p_teacher * log_softmax(L), axis=-1)            # (N,)
        return loss + self.cfg.entropy_weight * np.mean(ce)

    def _move_teacher(self, theta):
        a = self.teacher_decay
        self.teacher = {k: a * self.teacher[k] + (1 - a) * theta[k] for k in self.teacher}

    def after_update(self, theta, new, source):
        if not self.teacher_first:
            self._move_teacher(new)                                  # student first, then teacher
        out = {}
        for k in sorted(new):
            restore = self.rng.random(onp.shape(new[k])) < self.restore_prob
            out[k] = onp.where(restore, source[k], new[k])
        return out, False


# ---------------------------------------------------------------------------------------------
# TTT and TTT++: a self-supervised head; TTT++ aligns feature statistics
# ---------------------------------------------------------------------------------------------

@register_adaptation_strategy("ttt")
class TTTStrategy(AdaptationStrategy):
    """TTT (Sun et al., ICML 2020): ``loss + ssl_weight · CE(ssl_logits, ssl_labels)``.

    The model outputs ``"ssl_logits" (..., K)`` (the self-supervised head on the shared
    encoder) and the batch holds ``"ssl_labels" (...)`` (ints); adapt the encoder (not the main
    head) with ``deny_layers``.  Online TTT: one adapter across the stream; episodic TTT: a
    context with ``episodic=True`` per batch.
    """

    def __init__(self, cfg=None, ssl_weight=1.0):
        super().__init__(cfg)
        self.ssl_weight = float(check_scalar("ssl_weight", ssl_weight, low=0.0))

    def ssl_loss(self, outputs, batch):
        if not isinstance(outputs, dict) or "ssl_logits" not in outputs:
            raise ValueError(f"{self.name} needs outputs['ssl_logits']")
        if not hasattr(batch, "keys") or "ssl_labels" not in batch:
            raise ValueError(f"{self.name} needs batch['ssl_labels']")
        L = _rows(outputs["ssl_logits"])                             # (N, K)
        y = onp.reshape(onp.asarray(batch["ssl_labels"]), (-1,))
        if y.shape[0] != np.shape(L)[0]:
            raise ValueError(f"{self.name}: ssl_logits {np.shape(outputs['ssl_logits'])} and "
                             f"ssl_labels {onp.shape(batch['ssl_labels'])} disagree")
        one_hot = y[:, None] == onp.arange(np.shape(L)[-1])
        return -np.mean(np.sum(np.where(one_hot, log_softmax(L), 0.0), axis=-1))

    def post_loss(self, loss, outputs, batch):
        if self.ssl_weight == 0.0:                    # no self-supervised head (ttt++: alignment)
            return loss
        return loss + self.ssl_weight * self.ssl_loss(outputs, batch)


def covariance(F):
    """``Σ = (Fᵀ F − (1ᵀF)ᵀ(1ᵀF)/n) / (n − 1)``, ``F (n, d) -> (d, d)`` (TTT++'s
    ``discrepancy.covariance``)."""
    n = np.shape(F)[0]
    s = np.sum(F, axis=0)
    return (np.dot(F.T, F) - np.outer(s, s) / n) / (n - 1)


@register_adaptation_strategy("ttt++")
class TTTPlusPlusStrategy(TTTStrategy):
    """TTT++ (Liu et al., NeurIPS 2021; ``github.com/vita-epfl/ttt-plus-plus``, ``synthetic/``,
    ``cifar/ttt++.py``, ``cifar/online.py``): TTT plus feature alignment to the source statistics
    (``set_source_statistics(features)`` first), ``mean_weight`` 0.1, ``cov_weight`` 1.0 (the
    synthetic benchmark's weights).  ``queue_size`` rows of earlier accepted batches' features
    (constants) join the current ones once the queue is full (0: no queue, as the synthetic code).
    """

    def __init__(self, cfg=None, ssl_weight=1.0, mean_weight=0.1, cov_weight=1.0, queue_size=0,
                 source_features=None):
        super().__init__(cfg, ssl_weight)
        self.mean_weight = float(check_scalar("mean_weight", mean_weight, low=0.0))
        self.cov_weight = float(check_scalar("cov_weight", cov_weight, low=0.0))
        self.queue_size = check_int("queue_size", queue_size, minimum=0)
        self.queue, self.source_mean, self.source_cov, self._last = None, None, None, None
        if source_features is not None:
            self.set_source_statistics(source_features)

    def set_source_statistics(self, features):
        """``μ_src``, ``Σ_src`` from source features ``(n, d)``; returns ``self``."""
        F = onp.asarray(features, dtype=float)
        if F.ndim != 2 or F.shape[0] < 2:
            raise ValueError(f"features must have shape (n >= 2, d), got {F.shape}")
        self.source_mean, self.source_cov = F.mean(axis=0), onp.asarray(covariance(F))
        return self

    def alignment(self, F):
        """``w_mean (1/d) ‖μ(F) − μ_src‖² + w_cov ‖Σ(F) − Σ_src‖_F² / (4 d²)``."""
        d = np.shape(F)[-1]
        if self.source_mean is None or self.source_mean.shape != (d,):
            raise ValueError(f"ttt++: call set_source_statistics(features (n, {d})) first")
        mean_term = np.mean((np.mean(F, axis=0) - self.source_mean) ** 2)
        cov_term = np.sum((covariance(F) - self.source_cov) ** 2) / (4.0 * d * d)
        return self.mean_weight * mean_term + self.cov_weight * cov_term

    def post_loss(self, loss, outputs, batch):
        F = _rows(outputs["features"]) if isinstance(outputs, dict) and "features" in outputs \
            else None
        if F is None:
            raise ValueError("ttt++ needs outputs['features'] (N, d)")
        self._last = onp.asarray(getval(F))
        full = self.queue is not None and len(self.queue) >= self.queue_size > 0
        G = np.concatenate([F, self.queue], axis=0) if full else F
        return super().post_loss(loss, outputs, batch) + self.alignment(G)

    def after_update(self, theta, new, source):
        if self.queue_size > 0 and self._last is not None:
            rows = self._last if self.queue is None else onp.concatenate([self._last, self.queue])
            self.queue = rows[:self.queue_size]                      # newest first
        return new, False
