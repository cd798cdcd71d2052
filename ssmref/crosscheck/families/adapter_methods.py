"""SHOT-IM, SAR, CoTTA, TTT, TTT++ and T3A in the kit (kind ``adapter_method``).

A small network with a shared encoder and two heads (``docs/adaptation.md``, "More methods")::

    z = tanh(x W1ᵀ + b1)              enc.W1 (H, d), enc.b1 (H,)        features (B, H)
    logits = z Wᵀ + b                 head.W (C, H), head.b (C,)
    ssl_logits = z Vᵀ + c             ssl.W (K, H), ssl.b (K,)

adapted by one ``Adapter.adapt`` call per batch ``x[s]`` with ``loss_fn = 0`` (no labels) and the
case's strategy; ``ssl_labels[s]`` is the self-supervised target of ``ttt`` / ``ttt++``.  Outputs,
for ``S`` batches: ``traj.<name> (S+1, ...)`` for every leaf (the trainable ones move), and
``updated (S,)``, ``steps (S,)`` as the ``adapter`` kind.  The strategy's keyword arguments are
the attribute ``strategy_kwargs``; ``ttt++``'s source features are the input
``source_features``; ``cotta``'s random draws come from ``numpy.random.default_rng(seed)`` in
the documented order (``ssmref.adaptation.methods.CoTTAStrategy``).
"""

import dataclasses
import types

import autograd.numpy as np
import numpy as onp

from ssmref.adaptation import (AdaptationConfig, CoTTAStrategy, SARStrategy, SHOTStrategy,
                               T3AStrategy, TTTPlusPlusStrategy, TTTStrategy, create_adapter)
from ssmref.crosscheck.kinds import Case, Kind
from ssmref.params import tree_copy

D, H, C, K, S, B = 3, 5, 3, 2, 5, 12
LEAVES = ("enc.W1", "enc.b1", "head.W", "head.b", "ssl.W", "ssl.b")

_BASE = AdaptationConfig(lr=0.05, max_step_scale=0.05, grad_clip_norm=1.0, trust_region_eps=0.3,
                         ema_decay=0.5, entropy_weight=1.0, max_steps_per_call=1)
_ENCODER = dataclasses.replace(_BASE, allow_layers=r"^enc\.")
_BODY = dataclasses.replace(_BASE, allow_layers=r"^(enc|head)\.")
_HEAD = AdaptationConfig(allow_layers=r"^head\.")

STRATEGIES = {"shot": SHOTStrategy, "sar": SARStrategy, "cotta": CoTTAStrategy,
              "ttt": TTTStrategy, "ttt++": TTTPlusPlusStrategy, "t3a": T3AStrategy}


def forward(params, x):
    z = np.tanh(np.dot(x, params["enc"]["W1"].T) + params["enc"]["b1"])
    return {"logits": np.dot(z, params["head"]["W"].T) + params["head"]["b"], "features": z,
            "ssl_logits": np.dot(z, params["ssl"]["W"].T) + params["ssl"]["b"]}


def _build(strategy, cfg, kwargs=None, x_scale=1.0, source=False):
    def build(rng):
        params = {"params.enc.W1": rng.standard_normal((H, D)),
                  "params.enc.b1": 0.1 * rng.standard_normal(H),
                  "params.head.W": rng.standard_normal((C, H)),
                  "params.head.b": 0.1 * rng.standard_normal(C),
                  "params.ssl.W": rng.standard_normal((K, H)), "params.ssl.b": onp.zeros(K)}
        x = x_scale * (rng.standard_normal((S, B, D)) + 0.5)
        inputs = dict(params, x=x, ssl_labels=rng.integers(0, K, (S, B)).astype(onp.int64))
        if source:
            inputs["source_features"] = 0.5 * rng.standard_normal((40, H))
        attrs = {"config": dataclasses.asdict(cfg), "strategy": strategy,
                 "strategy_kwargs": dict(kwargs or {}), "loss": "none (0)"}
        return inputs, attrs
    return build


def run_method_case(x, attrs):
    """``(outputs, adapter)`` of one ``adapter_method`` case."""
    cfg = AdaptationConfig(**attrs["config"])
    kwargs = dict(attrs["strategy_kwargs"])
    if "source_features" in x:
        kwargs["source_features"] = x["source_features"]
    strategy = STRATEGIES[attrs["strategy"]](cfg, **kwargs)
    params = {}
    for name in LEAVES:
        group, leaf = name.split(".")
        params.setdefault(group, {})[leaf] = onp.array(x["params." + name])
    model = types.SimpleNamespace(params=params)
    adapter = create_adapter(model, cfg, strategy)

    def fwd(batch):
        return forward(model.params, batch["x"])

    traj, infos = [tree_copy(model.params)], []
    for s in range(x["x"].shape[0]):
        infos.append(adapter.adapt(lambda outputs, batch: 0.0,
                                   {"x": x["x"][s], "ssl_labels": x["ssl_labels"][s]}, fwd_fn=fwd))
        traj.append(tree_copy(model.params))
    out = {}
    for name in LEAVES:
        group, leaf = name.split(".")
        out["traj." + name] = onp.stack([t[group][leaf] for t in traj])
    out["updated"] = onp.array([float(i["updated"]) for i in infos])
    out["steps"] = onp.array([float(i["steps"]) for i in infos])
    return out, adapter


def _compute(x, attrs):
    return run_method_case(x, attrs)[0]


CASES = [
    Case("adapter_shot", kind="adapter_method", build=_build("shot", _ENCODER), compute=_compute,
         doc="SHOT-IM on the encoder: mean entropy minus the entropy of the mean prediction"),
    Case("adapter_sar", kind="adapter_method",
         build=_build("sar", _BODY, dict(margin=0.8, reset_constant=0.635)), compute=_compute,
         doc="SAR: reliable rows (H < 0.8 ln 3) at θ and at θ + ε, the SAM gradient, model "
             "recovery when the entropy average falls below 0.635 (from call 4 on)"),
    Case("adapter_cotta", kind="adapter_method",
         build=_build("cotta", _BODY,
                      dict(teacher_decay=0.9, restore_prob=0.05, n_augment=4, seed=3),
                      x_scale=0.3), compute=_compute,
         doc="CoTTA: a 0.9 EMA teacher (0.999 by default; 0.9 makes the order visible), 4 noise "
             "augmentations (source confidence < 0.92), restore with probability 0.05; the "
             "teacher follows the student after its step"),
    Case("adapter_ttt", kind="adapter_method", build=_build("ttt", _ENCODER), compute=_compute,
         doc="TTT: the self-supervised head's cross-entropy, encoder only"),
    Case("adapter_tttpp", kind="adapter_method",
         build=_build("ttt++", _ENCODER, dict(queue_size=2 * B), source=True), compute=_compute,
         doc="TTT++: TTT plus mean and covariance alignment to source features, a queue of two "
             "batches"),
    Case("adapter_t3a", kind="adapter_method", build=_build("t3a", _HEAD, dict(filter_k=3)),
         compute=_compute,
         doc="T3A: supports filtered to the 3 lowest-entropy per class; head.W replaced, "
             "head.b = 0"),
]


def _axis(name):
    return (0, "call") if name.startswith("traj.") or name in ("updated", "steps") else None


KINDS = [Kind("adapter_method",
              output_class=lambda name: "grad" if name.startswith("traj.") else "value",
              sequence_axis=_axis)]
