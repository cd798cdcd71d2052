"""The test-time adapter in the kit (kind ``adapter``).

A linear classifier ``logits = x Wᵀ + b`` (``W: (K, d)``, the ``(out, in)`` layout of every dense
layer in ssmref and of ``torch.nn.Linear``), adapted by ``Adapter.adapt`` on batches ``x[s]``,
one call per batch; each call runs up to ``config.max_steps_per_call`` steps (steps 1-8 of
``docs/adaptation.md``: clip, Adam, step bound, trust region, EMA anchor; the strategy's entropy
term; the non-finite guard and the strategy's skips).  ``loss_fn`` is the mean cross-entropy over
the batch.  Outputs, for ``S`` batches:

- ``traj.W (S+1, K, d)``, ``traj.b (S+1, K)``: the parameters before the first call and after each
  call (per call, not per step);
- ``updated (S,)``: 1.0 where the call applied at least one step, else 0.0 (``adapt``'s ``updated``);
- ``steps (S,)``: the number of steps the call applied (``adapt``'s ``steps``).
"""

import dataclasses
import types

import autograd.numpy as np
import numpy as onp

from ssmref.adaptation import AdaptationConfig, create_adapter
from ssmref.crosscheck.kinds import Case, Kind
from ssmref.nn import categorical_log_prob
from ssmref.params import tree_copy

_TENT_CONFIG = AdaptationConfig(
    lr=0.02,                # Adam steps of ~0.02 per entry ...
    max_step_scale=0.05,    # ... bounded to 0.05 max(|theta_p|, 1) per tensor (W, step 1)
    weight_decay=0.01,      # L2 inside Adam (AdamW's decoupled decay would fail)
    grad_clip_norm=0.5,     # the global gradient norm is ~1.5: clipped at every step
    trust_region_eps=0.08,  # |theta_p - a_p| <= 0.08 (W, every step)
    ema_decay=0.5,          # the EMA anchor, which also switches the trust region on
    entropy_weight=0.5,     # tent's entropy term
    max_steps_per_call=1,
    adam_eps=1e-5)          # large enough that where eps goes (outside the sqrt) shows in float32

#: eata: the reliable rows only (entropy below E0 = 0.4 ln 4), weighted; two steps per call.
_EATA_CONFIG = dataclasses.replace(_TENT_CONFIG, entropy_weight=1.0, eata_margin=0.4,
                                   max_steps_per_call=2)

#: the non-finite guard, with strategy "none" (the entropy weight is not read).
_GUARD_CONFIG = dataclasses.replace(_TENT_CONFIG, entropy_weight=0.0)

LOSS = "mean cross-entropy over the batch"


def _build_adapter(strategy, cfg, W_scale=1.0, nan_at=None, blank_batch=None):
    """``nan_at = (s, i, j)``: ``x[s, i, j] = nan`` (that batch's loss is nan: the call must change
    nothing); ``blank_batch = s``: ``x[s]`` near zero (every row's entropy near ``ln K``: eata
    has no reliable row and skips the call)."""
    def build(rng):
        d, K, S, B = 8, 4, 5, 16
        W = W_scale * rng.standard_normal((d, K)) / onp.sqrt(d)
        W = onp.ascontiguousarray(W.T)                                    # (K, d): x Wᵀ + b
        b = 0.1 * rng.standard_normal(K)
        means = rng.standard_normal((K, d))
        labels = rng.integers(0, K, (S, B)).astype(onp.int64)
        x = means[labels] + 0.5 * rng.standard_normal((S, B, d)) + 0.3   # shifted test inputs
        if blank_batch is not None:
            x[blank_batch] = 0.01 * rng.standard_normal((B, d))
        if nan_at is not None:
            x[nan_at] = onp.nan
        attrs = {"config": dataclasses.asdict(cfg), "strategy": strategy, "loss": LOSS}
        return {"params.W": W, "params.b": b, "x": x, "labels": labels}, attrs
    return build


def run_adapter_case(x, attrs):
    """``(outputs, infos)``: the ``adapter`` case's outputs (``traj.W``, ``traj.b``, ``updated``,
    ``steps``) from one ``Adapter.adapt`` call per batch ``x[s]``; ``infos`` are the dicts ``adapt``
    returned."""
    cfg = AdaptationConfig(**attrs["config"])
    params = {"W": onp.array(x["params.W"]), "b": onp.array(x["params.b"])}
    model = types.SimpleNamespace(params=params)               # any object with a params dict
    adapter = create_adapter(model, cfg, attrs["strategy"])

    def forward(batch):
        return np.dot(batch["x"], model.params["W"].T) + model.params["b"]    # (B, K)

    def cross_entropy(logits, batch):
        return -np.mean(categorical_log_prob(logits, batch["labels"]))

    traj, infos = [tree_copy(model.params)], []
    for s in range(x["x"].shape[0]):
        infos.append(adapter.adapt(cross_entropy, {"x": x["x"][s], "labels": x["labels"][s]},
                                   fwd_fn=forward))
        traj.append(tree_copy(model.params))
    out = {f"traj.{k}": onp.stack([t[k] for t in traj]) for k in ("W", "b")}
    out["updated"] = onp.array([float(i["updated"]) for i in infos])
    out["steps"] = onp.array([float(i["steps"]) for i in infos])
    return out, infos


def _compute_adapter(x, attrs):
    return run_adapter_case(x, attrs)[0]


CASES = [
    Case("adapter_tent", kind="adapter", build=_build_adapter("tent", _TENT_CONFIG),
         compute=_compute_adapter,
         doc="tent on a linear classifier: 5 calls of 1 step, clipping, step bound, trust region, "
             "EMA"),
    Case("adapter_eata", kind="adapter",
         build=_build_adapter("eata", _EATA_CONFIG, W_scale=3.0, blank_batch=3),
         compute=_compute_adapter,
         doc="eata: reliable rows only, constant weights exp(E0 - H); 2 steps per call; call 3 has "
             "no reliable row and is skipped"),
    Case("adapter_guard", kind="adapter",
         build=_build_adapter("none", _GUARD_CONFIG, nan_at=(2, 5, 3)), compute=_compute_adapter,
         doc="the non-finite guard: batch 2 holds a nan, its loss is nan, the call changes nothing "
             "(Adam's step count, moments, anchor) and reports updated=False"),
]


def _adapter_axis(name):
    return (0, "call") if name.startswith("traj.") or name in ("updated", "steps") else None


KINDS = [
    # the trajectory is made of gradient steps: gradient tolerances
    Kind("adapter", output_class=lambda name: "grad" if name.startswith("traj.") else "value",
         sequence_axis=_adapter_axis),
]
