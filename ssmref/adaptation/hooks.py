"""Integration hooks: monitoring features of SSM models, and a policy-gradient loss for policies.

``SSMHook(adapter).attach(model).features(batch)``: the model's ``extract_features``, or for a
:class:`ssmref.ssm.StateSpaceModel` its state sequence (:func:`ssmref.ssm.ssm_states`)::

    h_t = A h_{t-1} + B u_t,   h_{-1} = 0,   u (..., T, m) -> h (..., T, n)

``MetaRLHook(adapter).policy_loss(outputs, batch)``, with ``mean_m`` the mean over the steps with
``mask > 0``::

    loss = −mean_m(log π(a) · stop_gradient(A)) + value_coef · mean_m((V − R)²)
           − entropy_coef · mean_m(H(π))

``log π`` and ``H(π)`` are :mod:`ssmref.nn`'s categorical or diagonal-Gaussian log-probability and
entropy, which return ``nan`` for ``nan`` logits, so a non-finite batch reaches the adapter's guard.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_scalar
from ssmref.nn import (categorical_entropy, categorical_log_prob, gaussian_entropy,
                       gaussian_log_prob)
from ssmref.params import is_node
from ssmref.ssm import StateSpaceModel, ssm_states

from ssmref.adaptation.adapter import Adapter, unboxed

# The state sequence of an SSM: the name ssmref.adaptation has always exported for
# ssmref.ssm.ssm_states(params, u, h0=None, mode="scan").
ssm_hidden_states = ssm_states


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
            if not isinstance(self.model, StateSpaceModel):
                raise ValueError(f"{type(self.model).__name__} has no extract_features(batch) and "
                                 f"is not a StateSpaceModel")
            u = batch["u"] if is_dict else batch
            f = ssm_states(self.model.params, u)
        f = unboxed(f)
        return f if is_node(f) else onp.asarray(f)


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
        check_scalar("value_coef", value_coef, low=0.0)
        check_scalar("entropy_coef", entropy_coef)
        self.adapter, self.value_coef, self.entropy_coef = adapter, value_coef, entropy_coef

    @staticmethod
    def _log_prob_entropy(outputs, actions):
        if not is_node(outputs):
            raise ValueError(f"MetaRLHook: outputs must be a dict, got {type(outputs).__name__}")
        if "logits" in outputs:
            logits = outputs["logits"]
            return categorical_log_prob(logits, actions), categorical_entropy(logits)
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
