"""MAML and Meta-SGD in the kit (kind ``maml``).

A tanh MLP regressor (``layer{i}.W: (out, in)``, ``y = x Wᵀ + b``, linear output layer) and ``M``
sinusoid tasks; the loss is ``mean((mlp(x) − y)²)`` over one task's points.  Inner steps
``θ_{k+1} = θ_k − α ⊙ ∇L_s(θ_k)``, ``steps`` times with the same ``α``; the meta-loss is the
mean over tasks of the query loss.  ``α`` is the input ``inner_lr`` (a 0-d array: MAML) or the
inputs ``lr.<name>`` (Meta-SGD: one array per parameter, broadcasting to its shape).

Each case lists its outputs; a case has a subset of these (``docs/crosscheck.md``):

- ``fast.<name> (M, …)``: the fast weights of each task;
- ``meta_loss ()``;
- ``meta_grad.<name>`` / ``meta_grad_lr[.<name>]``: second-order meta-gradient w.r.t. ``θ`` / ``α``;
- ``meta_grad_fo.<name>`` / ``meta_grad_fo_lr[.<name>]``: the first-order (FOMAML) ones: inner
  gradients are constants, ``α`` is not (``∇_α F = −mean_i Σ_k ∇L_s(θ_k^i) ⊙ ∇L_q(θ_K^i)``,
  summed over the axes where ``α`` broadcasts).
"""

import autograd.numpy as np
import numpy as onp

from ssmref.crosscheck.kinds import Case, Kind, params_in, prefixed
from ssmref.maml import adapt, meta_gradient
from ssmref.nn import mlp_apply, mlp_init
from ssmref.params import flatten_dict, tree_map

#: Output groups of a MAML case: ``fast``, ``meta_loss``, ``meta_grad``, ``meta_grad_lr``,
#: ``meta_grad_fo``, ``meta_grad_fo_lr``.
ALL_OUTPUTS = ("fast", "meta_loss", "meta_grad", "meta_grad_lr", "meta_grad_fo", "meta_grad_fo_lr")


def _mse(params, data):
    """The MAML regression loss: ``mean((mlp(x) - y)^2)`` over all elements (tanh MLP)."""
    x, y = data
    return np.mean((mlp_apply(params, x, activation="tanh") - y) ** 2)


def _build_maml(metasgd, steps=None, rate_shapes=None):
    """``metasgd``: per-parameter rates ``lr.<name>`` (full shapes, or ``rate_shapes[name]``,
    drawn after everything else), else the scalar ``inner_lr = 0.01``.  ``steps``: default 1 for
    Meta-SGD, 2 for MAML."""
    def build(rng):
        hidden = [40, 40]                           # Finn et al.'s sinusoid regressor
        params = mlp_init([1, *hidden, 1], rng=rng)
        for layer in params.values():
            layer["b"] = 0.1 * rng.standard_normal(layer["b"].shape)
        M, K, Q = 4, 10, 15
        amp = rng.uniform(0.1, 5.0, (M, 1, 1))
        phase = rng.uniform(0.0, onp.pi, (M, 1, 1))
        sx, qx = rng.uniform(-5.0, 5.0, (M, K, 1)), rng.uniform(-5.0, 5.0, (M, Q, 1))
        inputs = prefixed("params.", params)
        inputs.update(support_x=sx, support_y=amp * onp.sin(sx - phase),
                      query_x=qx, query_y=amp * onp.sin(qx - phase))
        n_steps = steps if steps is not None else (1 if metasgd else 2)
        attrs = {"steps": n_steps, "hidden": hidden, "activation": "tanh",
                 "loss": "mean squared error", "tasks": M}
        if metasgd:
            if rate_shapes is None:
                lr = tree_map(lambda a: 0.01 * rng.uniform(0.5, 1.5, a.shape), params)
                inputs.update(prefixed("lr.", lr))
            else:
                flat = flatten_dict(params)
                for name in sorted(flat):
                    shape = rate_shapes.get(name, flat[name].shape)
                    inputs["lr." + name] = 0.01 * rng.uniform(0.5, 1.5, shape)
        else:
            inputs["inner_lr"] = onp.array(0.01)
        return inputs, attrs
    return build


def _tasks(x):
    M = x["support_x"].shape[0]
    return [((x["support_x"][i], x["support_y"][i]), (x["query_x"][i], x["query_y"][i]))
            for i in range(M)]


def _compute_maml(outputs):
    """The expected outputs of the groups ``outputs`` (see :data:`ALL_OUTPUTS`)."""
    def compute(x, attrs):
        params, tasks, steps = params_in(x, "params."), _tasks(x), int(attrs["steps"])
        lr = float(x["inner_lr"]) if "inner_lr" in x else params_in(x, "lr.")
        out = {}
        if "fast" in outputs:
            fast = [flatten_dict(adapt(params, _mse, support, inner_lr=lr, steps=steps))
                    for support, _ in tasks]
            out.update({f"fast.{k}": onp.stack([f[k] for f in fast]) for k in fast[0]})  # (M, …)
        for order, suffix in ((False, ""), (True, "_fo")):
            want_theta, want_lr = f"meta_grad{suffix}" in outputs, f"meta_grad{suffix}_lr" in outputs
            if not (want_theta or want_lr or (not order and "meta_loss" in outputs)):
                continue
            loss, grads = meta_gradient(params, _mse, tasks, inner_lr=lr, steps=steps,
                                        first_order=order, wrt_inner_lr=want_lr)
            g_theta, g_lr = grads if want_lr else (grads, None)
            if not order and "meta_loss" in outputs:
                out["meta_loss"] = onp.asarray(loss)
            if want_theta:
                out.update(prefixed(f"meta_grad{suffix}.", g_theta))
            if want_lr and isinstance(lr, dict):
                out.update(prefixed(f"meta_grad{suffix}_lr.", g_lr))
            elif want_lr:
                out[f"meta_grad{suffix}_lr"] = onp.asarray(g_lr)        # () for a scalar α
        return out
    return compute


#: Meta-SGD rates that broadcast (NumPy / torch rules): a scalar per tensor, a column (one rate
#: per output unit, ``(out, 1)``), a vector on the last axis (one per input unit), a length-1 axis.
BROADCAST_RATES = {"layer0.W": (), "layer1.W": (40, 1), "layer1.b": (1,), "layer2.W": (40,),
                   "layer2.b": ()}

CASES = [
    Case("maml_mlp", kind="maml", build=_build_maml(False),
         compute=_compute_maml(("fast", "meta_loss", "meta_grad", "meta_grad_fo")),
         doc="sinusoid MAML: fast weights after 2 steps, meta-loss, 2nd and 1st order meta-grads"),
    Case("maml_metasgd", kind="maml", build=_build_maml(True),
         compute=_compute_maml(("meta_loss", "meta_grad", "meta_grad_lr")),
         doc="Meta-SGD: meta-gradients w.r.t. the parameters and the per-parameter rates"),
    Case("maml_scalar_lr", kind="maml", build=_build_maml(False),
         compute=_compute_maml(("meta_loss", "meta_grad", "meta_grad_lr", "meta_grad_fo",
                                "meta_grad_fo_lr")),
         doc="MAML, 2 steps: the meta-gradient w.r.t. the scalar rate, second and first order"),
    Case("maml_metasgd_broadcast", kind="maml",
         build=_build_maml(True, rate_shapes=BROADCAST_RATES),
         compute=_compute_maml(("fast", "meta_loss", "meta_grad", "meta_grad_lr")),
         doc="Meta-SGD with broadcast rates (scalar, per row, per column); rate gradients summed "
             "over the broadcast axes"),
    Case("maml_metasgd_steps3", kind="maml", build=_build_maml(True, steps=3),
         compute=_compute_maml(ALL_OUTPUTS),
         doc="Meta-SGD, 3 steps: second- and first-order gradients w.r.t. the parameters "
             "and rates"),
]


def _gradient_names(name):
    return "grad" if name.startswith("meta_grad") else "value"


KINDS = [Kind("maml", output_class=_gradient_names)]
