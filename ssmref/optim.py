"""First-order optimizers as pure ``(init, update)`` pairs, and global-norm gradient clipping.

Contract (the style of ``jax.example_libraries.optimizers``)::

    init, update = adam(lr=1e-3)
    state = init(params)                                  # a dict; never mutated
    params, state = update(grads, state, params)          # new params, new state

- ``params`` and ``grads`` are parameter trees (nested dicts of float64 arrays, see
  :mod:`ssmref.params`) with the same keys and the same leaf shapes.
- ``update`` is pure: it returns new dicts of new arrays and never writes into ``grads``, ``state``
  or ``params``, so keeping an old ``state`` is enough to roll an optimizer back.
- The math is written once per array (``_adam_leaf``) and lifted to trees by
  :func:`ssmref.params.tree_map`.
- Everything is written with ``autograd.numpy`` and can be traced, but see the notes on
  differentiability: ``sqrt(v)`` and ``min(1, .)`` are not smooth everywhere.
- Bad input (trees of different structure or leaf shapes, a negative learning rate, ``b1`` outside
  ``[0, 1)``, a state that is not an Adam state, ...) raises ``ValueError`` naming the argument.
- Non-finite gradients are not checked here; they propagate exactly as in PyTorch.  Callers that
  must not take a non-finite step (the test-time adapter) check before calling.

Framework conventions (what a port must match; see ``docs/optim.md``):

- **Adam is** ``torch.optim.Adam`` (``amsgrad=False, maximize=False``): ``eps`` is added *outside*
  the square root, ``sqrt(v_hat) + eps``; optax's ``adam`` has the same ``eps`` plus an ``eps_root``
  inside the root (default 0).  Bias correction is applied from step 1.
- **weight_decay is L2**: ``g <- g + weight_decay * theta`` *before* the moments, as
  ``torch.optim.Adam``; it is not AdamW's decoupled ``theta <- theta - lr * wd * theta``
  (``torch.optim.AdamW``, ``optax.adamw``).
- **Clipping is** ``torch.nn.utils.clip_grad_norm_``: ``coef = min(1, max_norm / (norm + 1e-6))``;
  optax's ``clip_by_global_norm`` uses ``max_norm / norm`` without the ``1e-6``.
"""

import autograd.numpy as np
import numpy as onp

from ssmref.checks import check_int, check_scalar
from ssmref.optim_args import (check_adam_hyper, check_adam_state, check_real_tree,
                               check_tree_like)
from ssmref.params import global_norm, is_node, tree_map

CLIP_EPS = 1e-6  # added to the total norm in the clipping coefficient, as torch does


def apply_updates(params, updates):
    """``theta + delta`` leaf by leaf: the one way a step is applied to parameters."""
    check_tree_like("updates", updates, "params", params)
    return tree_map(lambda p, d: p + d, params, updates)


# ---------------------------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------------------------

def sgd(lr):
    """Plain gradient descent, ``theta_t = theta_{t-1} - lr * g_t``.

    Returns ``(init, update)``; the state is ``{"step": t}`` (kept only for a uniform interface).
    """
    check_scalar("lr", lr, low=0.0)

    def init(params):
        check_real_tree("params", params)
        return {"step": 0}

    def update(grads, state, params):
        if not is_node(state) or sorted(state.keys()) != ["step"]:
            raise ValueError(f"state must be an SGD state {{'step': t}}, got {state!r}")
        check_int("state['step']", state["step"], minimum=0)
        check_real_tree("params", params)
        check_tree_like("grads", grads, "params", params)
        delta = tree_map(lambda g: -lr * g, grads)
        return apply_updates(params, delta), {"step": int(state["step"]) + 1}

    return init, update


# ---------------------------------------------------------------------------------------------
# Adam (torch.optim.Adam semantics)
# ---------------------------------------------------------------------------------------------

def adam_init(params):
    """Adam state ``{"step": 0, "m": zeros_like(params), "v": zeros_like(params)}``.

    ``step`` is a Python ``int`` (the number of updates taken); ``m`` and ``v`` are float64 trees
    with the leaf shapes of ``params``.
    """
    check_real_tree("params", params)
    zeros = tree_map(lambda p: onp.zeros(np.shape(p)), params)
    return {"step": 0, "m": zeros, "v": tree_map(onp.copy, zeros)}


def _adam_leaf(g, m, v, p, t, lr, b1, b2, eps, weight_decay):
    """One Adam step for one array; returns ``(delta, m_t, v_t)``.  Operation order as torch."""
    # L2 weight decay, added to the gradient (not AdamW)
    g = g + weight_decay * p if weight_decay != 0 else g
    # First and second moment estimates
    # (torch: m.lerp_(g, 1 - b1); v.mul_(b2).addcmul_(g, g, value=1 - b2))
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    # Bias corrections, from step t = 1
    bias1 = 1 - b1 ** t
    bias2 = 1 - b2 ** t
    # delta = -(lr / bias1) * m / (sqrt(v) / sqrt(bias2) + eps); eps outside the square root
    denom = np.sqrt(v) / np.sqrt(bias2) + eps
    return -(lr / bias1) * (m / denom), m, v


def adam_step(grads, state, params, *, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """The Adam step ``delta`` (not yet applied) and the new state, as ``torch.optim.Adam``.

    For every leaf, with ``t = state["step"] + 1``::

        g_t   = grad + weight_decay * theta_{t-1}            # L2, torch.optim.Adam (not AdamW)
        m_t   = b1 * m_{t-1} + (1 - b1) * g_t
        v_t   = b2 * v_{t-1} + (1 - b2) * g_t**2
        m_hat = m_t / (1 - b1**t)                            # bias correction from t = 1
        v_hat = v_t / (1 - b2**t)
        delta = -lr * m_hat / (sqrt(v_hat) + eps)            # eps outside the sqrt

    computed in torch's order: ``delta = -(lr / (1 - b1**t)) * m_t / (sqrt(v_t) / sqrt(1 - b2**t)
    + eps)``.  The new parameters are ``theta_t = theta_{t-1} + delta`` (see :func:`adam`).

    Args:
        grads, params: trees with identical names and shapes.
        state: from :func:`adam_init` or a previous call; not modified.
        lr, b1, b2, eps, weight_decay: as ``torch.optim.Adam(lr, betas=(b1, b2), eps,
            weight_decay)``; validated here.

    Returns:
        ``(delta, new_state)``: ``delta`` a tree like ``params``; ``new_state = {"step": t,
        "m": m_t, "v": v_t}``.

    Differentiability: ``delta`` is smooth in ``grads`` and ``params`` wherever ``v_t > 0``; at
    ``v_t = 0`` (a gradient entry that has been exactly zero so far) the derivative of
    ``sqrt(v_t)`` is infinite and autograd returns ``nan``.
    """
    check_adam_hyper(lr, b1, b2, eps, weight_decay)
    check_real_tree("params", params)
    check_tree_like("grads", grads, "params", params)
    check_adam_state(state, params)

    t = int(state["step"]) + 1
    out = tree_map(lambda g, m, v, p: _adam_leaf(g, m, v, p, t, lr, b1, b2, eps, weight_decay),
                   grads, state["m"], state["v"], params)
    # out is a tree of (delta, m, v) triples; split it into three trees
    pick = lambda i: tree_map(lambda triple: triple[i], out)  # noqa: E731
    return pick(0), {"step": t, "m": pick(1), "v": pick(2)}


def adam(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam with ``torch.optim.Adam`` semantics, as a pure ``(init, update)`` pair.

    ``init(params) -> state`` (:func:`adam_init`);
    ``update(grads, state, params) -> (params + delta, new_state)`` with ``delta`` from
    :func:`adam_step` (see there for the equations).  Hyperparameters are validated on
    construction: ``lr >= 0``, ``0 <= b1, b2 < 1``, ``eps >= 0``, ``weight_decay >= 0``.
    """
    check_adam_hyper(lr, b1, b2, eps, weight_decay)  # fail at construction, not at first update
    hyper = dict(lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)

    def update(grads, state, params):
        delta, new_state = adam_step(grads, state, params, **hyper)
        return apply_updates(params, delta), new_state

    return adam_init, update



# ---------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------

def clip_by_global_norm(grads, max_norm):
    """Rescale all gradients together so that their global norm is at most about ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (norm type 2)::

        total_norm = sqrt(sum_k ||g_k||^2)                   # all leaves as one vector
        coef       = min(1, max_norm / (total_norm + 1e-6))  # torch clamps the coefficient to 1
        g_k       <- coef * g_k

    So gradients with ``total_norm + 1e-6 <= max_norm`` come back unchanged (``coef = 1``), and
    clipped gradients have norm ``max_norm * total_norm / (total_norm + 1e-6)``, slightly below
    ``max_norm``.  optax's ``clip_by_global_norm`` has no ``1e-6``.

    Args:
        grads: a parameter tree.
        max_norm: a finite real ``>= 0``.

    Returns:
        ``(clipped, total_norm)``: a new tree (``grads`` is not modified) and the norm *before*
        clipping.

    Differentiability: ``min`` has a kink at ``total_norm + 1e-6 = max_norm`` (autograd splits the
    gradient there), and ``total_norm`` is not differentiable at zero gradients.  An infinite
    ``total_norm`` gives ``coef = 0`` and ``nan`` for infinite entries, as in torch.
    """
    check_scalar("max_norm", max_norm, low=0.0)
    check_real_tree("grads", grads)
    total_norm = global_norm(grads)
    coef = np.minimum(1.0, max_norm / (total_norm + CLIP_EPS))
    return tree_map(lambda g: coef * g, grads), total_norm
