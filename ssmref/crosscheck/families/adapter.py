"""The test-time adapter in the kit (kind ``adapter``).

The parameter trajectory of ``Adapter.adapt`` over batches (clip, Adam, step bound, trust region,
EMA anchor; tent's entropy term) on a linear classifier.
"""

import dataclasses
import types

import autograd.numpy as np
import numpy as onp

from ssmref.adaptation import AdaptationConfig, create_adapter
from ssmref.crosscheck.kinds import Case, Kind
from ssmref.nn import categorical_log_prob
from ssmref.params import tree_copy

_ADAPTER_CONFIG = AdaptationConfig(
    lr=0.02,                # Adam steps of ~0.02 per entry ...
    max_step_scale=0.05,    # ... bounded to 0.05 max(|theta_p|, 1) per tensor (W, step 1)
    weight_decay=0.01,      # L2 inside Adam (AdamW's decoupled decay would fail)
    grad_clip_norm=0.5,     # the global gradient norm is ~1.5: clipped at every step
    trust_region_eps=0.08,  # |theta_p - a_p| <= 0.08 (W, every step)
    ema_decay=0.5,          # the EMA anchor, which also switches the trust region on
    entropy_weight=0.5,     # tent's entropy term
    max_steps_per_call=1,
    adam_eps=1e-5)          # large enough that where eps goes (outside the sqrt) shows in float32


def _build_adapter(rng):
    d, K, S, B = 8, 4, 5, 16
    W = rng.standard_normal((d, K)) / onp.sqrt(d)            # logits = x W + b
    b = 0.1 * rng.standard_normal(K)
    means = rng.standard_normal((K, d))
    labels = rng.integers(0, K, (S, B)).astype(onp.int64)
    x = means[labels] + 0.5 * rng.standard_normal((S, B, d)) + 0.3   # shifted test inputs
    attrs = {"config": dataclasses.asdict(_ADAPTER_CONFIG), "strategy": "tent",
             "loss": "mean cross-entropy over the batch", "steps_per_batch": 1}
    return {"params.W": W, "params.b": b, "x": x, "labels": labels}, attrs


def run_adapter_case(x, attrs):
    """``(trajectory, infos)``: the adapter of the ``adapter`` case on batches ``x[s]``, one
    ``Adapter.adapt`` call per batch; ``infos`` are the dicts ``adapt`` returned."""
    cfg = AdaptationConfig(**attrs["config"])
    params = {"W": onp.array(x["params.W"]), "b": onp.array(x["params.b"])}
    model = types.SimpleNamespace(params=params)               # any object with a params dict
    adapter = create_adapter(model, cfg, attrs["strategy"])

    def forward(batch):
        return np.dot(batch["x"], model.params["W"]) + model.params["b"]     # (B, K)

    def cross_entropy(logits, batch):
        return -np.mean(categorical_log_prob(logits, batch["labels"]))

    traj, infos = [tree_copy(model.params)], []
    for s in range(x["x"].shape[0]):
        info = adapter.adapt(cross_entropy, {"x": x["x"][s], "labels": x["labels"][s]},
                             fwd_fn=forward)
        if not info["updated"]:
            raise RuntimeError(f"adapter case: step {s} was not applied ({info.get('reason')})")
        traj.append(tree_copy(model.params))
        infos.append(info)
    return {f"traj.{k}": onp.stack([t[k] for t in traj]) for k in ("W", "b")}, infos


def _compute_adapter(x, attrs):
    return run_adapter_case(x, attrs)[0]


CASES = [
    Case("adapter_tent", "adapter", _build_adapter, _compute_adapter,
         "tent on a linear classifier: 5 steps, clipping, step bound, trust region, EMA"),
]

KINDS = [
    # the trajectory is made of gradient steps: gradient tolerances
    Kind("adapter", output_class=lambda name: "grad",
         sequence_axis=lambda name: (0, "step") if name.startswith("traj.") else None),
]
