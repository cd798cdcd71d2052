"""Steps 3 to 8 of the adapter's update, as small transforms chained in the contract's order.

For the trainable tensors ``p``, with ``‖·‖`` the Frobenius norm of one tensor, ``θ`` the
parameters, ``g`` the (finite) gradient and ``a`` the anchor::

    3. clip_gradient  if c = grad_clip_norm > 0:  g ← g · min(1, c / (‖g‖_global + 1e-6))
                      (else measure_gradient: g unchanged, its norm reported)
    4. adam_delta     Δ = the torch.optim.Adam step for g (weight_decay as L2)
    5. bound_step     if s = max_step_scale > 0:  Δ_p ← Δ_p · min(1, s · max(‖θ_p‖, 1) / ‖Δ_p‖)
    6. apply_step     θ ← θ + Δ
    7. trust_region   if ε = trust_region_eps > 0 and ema_decay > 0:
                                                  θ_p ← a_p + (θ_p − a_p) · min(1, ε / ‖θ_p − a_p‖)
    8. ema_anchor     if d = ema_decay > 0:       a ← d · a + (1 − d) · θ

The factors of steps 5 and 7 are 1 when ``Δ_p = 0`` or ``θ_p = a_p``.  A transform is a pure
function ``Update -> Update``, where :class:`Update` carries everything a step reads or writes;
:func:`chain` composes transforms left to right, as ``optax.chain`` does (steps 7 and 8 act on
the parameters after step 6, so the record carries them, the Adam state and the anchor along
with the update).  :func:`adapter_update` is the chain for a config, with the steps it switches
off left out; :func:`guarded_update` runs it.  Nothing is modified in place.

The trees here are flat dicts ``key -> float64 array`` with dot-free keys (``ssmref.optim``'s
trees), one per trainable tensor; the adapter maps them to the tensors' names.
"""

import math
from typing import NamedTuple

import numpy as onp

from ssmref.optim import CLIP_EPS, adam_step, clip_by_global_norm


class Update(NamedTuple):
    """What the steps read and write; each transform returns a new record."""
    params: dict       # θ: the parameters on entry until step 6, the new parameters after it
    updates: dict      # g until step 4, Δ from step 4 on
    opt_state: dict    # the Adam state {"step", "m", "v"} (ssmref.optim.adam_init)
    anchor: dict       # a
    info: dict         # what the steps measured: grad_norm, clip_coef, bound_scale, trust_scale


def chain(*transforms):
    """One transform that runs ``transforms`` in order."""
    def run(u):
        for transform in transforms:
            u = transform(u)
        return u
    return run


def tensor_norm(x):
    """``‖x‖``, the Frobenius norm of one tensor."""
    return float(onp.sqrt(onp.sum(x * x)))


# 3. g ← g · min(1, c / (‖g‖_global + 1e-6)),  ‖g‖_global = sqrt(Σ_p ‖g_p‖²)   (clip_grad_norm_)
def clip_gradient(max_norm):
    def clip(u):
        g, norm = clip_by_global_norm(u.updates, max_norm)
        coef = min(1.0, max_norm / (float(norm) + CLIP_EPS))
        return u._replace(updates=g, info=dict(u.info, grad_norm=float(norm), clip_coef=coef))
    return clip


# 3. without clipping: g unchanged; its global norm is still reported
def measure_gradient(u):
    norm = math.sqrt(sum(float(onp.sum(g * g)) for g in u.updates.values()))
    return u._replace(info=dict(u.info, grad_norm=norm, clip_coef=1.0))


# 4. g_t = g + wd·θ;  m_t = b1 m + (1 − b1) g_t;  v_t = b2 v + (1 − b2) g_t²    (torch.optim.Adam)
#    Δ = −(lr / (1 − b1^t)) · m_t / (√v_t / √(1 − b2^t) + eps),  t = the accepted steps so far + 1
def adam_delta(lr, b1, b2, eps, weight_decay):
    def adam(u):
        delta, opt_state = adam_step(u.updates, u.opt_state, u.params, lr=lr, b1=b1, b2=b2,
                                     eps=eps, weight_decay=weight_decay)
        return u._replace(updates=delta, opt_state=opt_state)
    return adam


# 5. Δ_p ← Δ_p · min(1, s · max(‖θ_p‖, 1) / ‖Δ_p‖)
def bound_step(s):
    def bound(u):
        scale = {}
        for k in sorted(u.updates):
            limit = s * max(tensor_norm(u.params[k]), 1.0)
            norm = tensor_norm(u.updates[k])
            scale[k] = 1.0 if norm <= limit else limit / norm
        delta = {k: u.updates[k] * scale[k] for k in sorted(u.updates)}
        return u._replace(updates=delta, info=dict(u.info, bound_scale=scale))
    return bound


# 6. θ ← θ + Δ
def apply_step(u):
    return u._replace(params={k: u.params[k] + u.updates[k] for k in sorted(u.params)})


# 7. θ_p ← a_p + (θ_p − a_p) · min(1, ε / ‖θ_p − a_p‖)
def trust_region(eps):
    def project(u):
        params, scale = {}, {}
        for k in sorted(u.params):
            diff = u.params[k] - u.anchor[k]
            r = tensor_norm(diff)
            scale[k] = 1.0 if r <= eps else eps / r
            params[k] = u.anchor[k] + diff * scale[k] if scale[k] < 1.0 else u.params[k]
        return u._replace(params=params, info=dict(u.info, trust_scale=scale))
    return project


# 8. a ← d · a + (1 − d) · θ
def ema_anchor(d):
    def move(u):
        return u._replace(anchor={k: d * u.anchor[k] + (1.0 - d) * u.params[k]
                                  for k in sorted(u.params)})
    return move


def adapter_update(cfg):
    """Steps 3 to 8 for an :class:`~ssmref.adaptation.AdaptationConfig`, as one transform."""
    s, eps, d = cfg.max_step_scale, cfg.trust_region_eps, cfg.ema_decay
    steps = [clip_gradient(cfg.grad_clip_norm) if cfg.grad_clip_norm > 0 else measure_gradient,
             adam_delta(cfg.lr, cfg.b1, cfg.b2, cfg.adam_eps, cfg.weight_decay)]
    if s > 0:
        steps.append(bound_step(s))
    steps.append(apply_step)
    if eps > 0 and d > 0:
        steps.append(trust_region(eps))
    if d > 0:
        steps.append(ema_anchor(d))
    return chain(*steps)


def guarded_update(theta, grads, opt_state, anchor, cfg):
    """Steps 3 to 8 for finite gradients: ``(new_theta, new_opt_state, new_anchor, info)``.

    ``theta``, ``grads``, ``anchor``: dicts ``key -> array`` with the same dot-free keys;
    ``opt_state`` an :func:`ssmref.optim.adam_init` state over them; ``anchor`` is ``a`` (pass
    ``theta`` itself before the first step).  Nothing is modified.  ``info``: ``grad_norm``
    (before clipping), ``clip_coef``, and per key the factors ``bound_scale`` (step 5) and
    ``trust_scale`` (step 7) that were applied (empty when the step is off).  The guards around
    it (non-finite gradients before, non-finite results after) are the adapter's.
    """
    u = Update(theta, grads, opt_state, anchor, {"bound_scale": {}, "trust_scale": {}})
    u = adapter_update(cfg)(u)
    return u.params, u.opt_state, u.anchor, u.info
