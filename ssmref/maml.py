"""Model-agnostic meta-learning (MAML), its first-order variant and Meta-SGD, as pure functions.

Contract (``docs/maml.md`` is the same spec in prose):

* ``loss_fn(params, data) -> scalar``: ``params`` is a parameter tree (see :mod:`ssmref.params`),
  ``data`` anything ``loss_fn`` understands.  It must be differentiable with ``autograd`` twice.
* A *task* is a pair ``(support, query)`` of such ``data``.
* ``inner_lr`` is ``α``: a non-negative float (MAML), or a tree with the structure of ``params``
  whose leaves are finite arrays broadcastable to their parameter's shape (Meta-SGD; as in Li et
  al. 2017 the learned rates may take either sign, so an outer step can never make them invalid).

Inner loop, ``K = steps`` plain gradient steps on the support loss ``L_s`` (``⊙`` elementwise)::

    θ_0 = θ,     θ_{k+1} = θ_k − α ⊙ ∇L_s(θ_k),     adapt(θ) = θ_K

Meta-objective over tasks ``i = 1..N`` (query loss ``L_q``)::

    F(θ, α) = (1/N) Σ_i L_q^i(θ_K^i(θ, α))

Its gradient, with ``H_k = ∇²L_s(θ_k)`` (symmetric), ``A = diag(α)`` and ``v = ∇L_q(θ_K)``::

    ∇_θ F = (1/N) Σ_i (I − H_0 A)(I − H_1 A) ⋯ (I − H_{K−1} A) v          (second order)
    ∇_θ F = (1/N) Σ_i v                                                     (first order, FOMAML)

``α`` sits to the *right* of each Hessian because the meta-gradient is the transpose of the Jacobian
``∂θ_{k+1}/∂θ_k = I − A H_k``.  Nothing is written in this form here: autograd differentiates
through the inner gradient, and the tests check that it equals this product.

References: Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML; Nichol, Achiam & Schulman (2018), "On First-Order Meta-Learning Algorithms",
arXiv:1803.02999 (FOMAML); Li, Zhou, Chen & Li (2017), "Meta-SGD: Learning to Learn Quickly for
Few-Shot Learning", arXiv:1707.09835.

Layout: the inner loop (:func:`adapt`); the outer objective (:func:`meta_loss`,
:func:`meta_gradient`) and its batched form; reverse mode per leaf (:func:`_tree_vjp`, at the
end).  The arguments are checked once, in each public function, by :mod:`ssmref.maml_args`.  The MAML-RL trainer ``MetaMAML`` builds on this
module in :mod:`ssmref.metarl`.  For speed the tape is kept short: parameters are traced leaf by
leaf (no autograd ``DictBox``), and the inner step and the tiling over tasks are one node per leaf
(``docs/maml.md``, "Speed"); the derivatives are autograd's, tested against the plain forms.
"""

import autograd.numpy as np
import numpy as onp
from autograd.core import VJPNode, add_outgrads
from autograd.extend import defvjp, primitive, vspace
from autograd.tracer import getval, isbox, new_box, toposort, trace_stack

from ssmref.checks import check_flag, check_int
from ssmref.maml_args import check_common, check_tasks
from ssmref.params import (flatten_dict, is_node, stop_gradient, tree_leaves, tree_map,
                           unflatten_dict)
from ssmref.recurrence import sum_to

__all__ = ["adapt", "meta_loss", "meta_gradient", "tile_params", "batched_meta_loss",
           "batched_meta_gradient", "stop_gradient", "value_and_grad_tree"]


# ---------------------------------------------------------------------------------------------
# Inner loop
# ---------------------------------------------------------------------------------------------

def adapt(params, loss_fn, support, *, inner_lr, steps=1, first_order=False):
    """Fast parameters after ``steps`` gradient steps on the support loss.

    ``θ_0 = params``;  ``θ_{k+1} = θ_k − α ⊙ ∇_θ loss_fn(θ_k, support)``;  returns ``θ_steps``.

    ``inner_lr`` (``α``) is a float, or (Meta-SGD, Li et al. 2017) a tree with the structure of
    ``params`` whose leaves broadcast to their parameter's shape; the same ``α`` is used at every
    step.  ``steps=0`` returns a new dict holding the input leaves (not copies).

    Second order (default): the inner gradients are taken with autograd on the (possibly traced)
    ``θ_k``, so an enclosing ``grad`` differentiates through them and picks up the Hessian terms.
    ``first_order=True``: each inner gradient is :func:`stop_gradient`-ed, so
    ``∂θ_{k+1}/∂θ_k = I`` and ``∂θ_{k+1}/∂α = −∇L_s(θ_k)`` (as constants); FOMAML.

    Raises ``ValueError`` for a non-dict ``params``, non-floating leaves, ``steps < 0``, a negative
    or non-finite float ``inner_lr`` (Meta-SGD tree entries may be negative), an ``inner_lr``
    tree whose structure or shapes do not match ``params``, non-finite entries, or a ``loss_fn``
    that does not return a real scalar.
    """
    check_common(params, loss_fn, inner_lr, steps, first_order)
    return adapt_core(params, loss_fn, support, inner_lr, steps, first_order)


def adapt_core(params, loss_fn, support, inner_lr, steps, first_order):
    """:func:`adapt` without the argument checks."""
    theta = tree_map(lambda p: p, params)
    for _ in range(int(steps)):
        if first_order:
            # Inner gradient on the unboxed values: a constant for every enclosing grad.
            grads = stop_gradient(_loss_grad(stop_gradient(theta), loss_fn, support))
        else:
            grads = _loss_grad(theta, loss_fn, support)
        theta = _sgd_step(theta, grads, inner_lr)
    return theta


def _loss_grad(params, loss_fn, data):
    """``∇_θ loss_fn(θ, data)`` at ``θ = params``; ``ValueError`` unless the loss is a real scalar.

    Built with :func:`_tree_vjp` on the possibly boxed ``params``, so that an enclosing gradient
    differentiates through it (this is where the second-order terms of MAML come from).
    """
    loss, vjp_fn = _tree_vjp(lambda p: loss_fn(p, data), params)
    value = onp.asarray(getval(loss))
    if value.ndim != 0 or value.dtype.kind not in "iuf":
        raise ValueError(f"loss_fn: must return a real scalar, got {value.dtype} with shape "
                         f"{value.shape}")
    return vjp_fn(np.ones_like(loss))


# θ' = θ − α ⊙ g as one node per leaf, with the VJP of the two it replaces (``∂θ = ḡ``,
# ``∂g = −α ḡ``, ``∂α = −Σ ḡ ⊙ g`` over the axes ``α`` was broadcast along), in differentiable ops.
@primitive
def _sgd(p, g, alpha):
    return p - alpha * g


defvjp(_sgd,
       lambda ans, p, g, alpha: lambda G: G,
       lambda ans, p, g, alpha: lambda G: -alpha * G,
       lambda ans, p, g, alpha: lambda G: sum_to(-(G * g), np.shape(alpha)))


def _sgd_step(params, grads, inner_lr):
    """``θ − α ⊙ g``: one inner update, leaf by leaf (a new tree; nothing written in place)."""
    if is_node(inner_lr):
        return tree_map(_sgd, params, grads, inner_lr)
    return tree_map(lambda p, g: _sgd(p, g, inner_lr), params, grads)


# ---------------------------------------------------------------------------------------------
# Outer objective
# ---------------------------------------------------------------------------------------------

def meta_loss(params, loss_fn, tasks, *, inner_lr, steps=1, first_order=False):
    """``F(θ, α) = (1/N) Σ_i loss_fn(adapt(θ, loss_fn, support_i), query_i)`` over ``N`` tasks.

    A scalar, differentiable with autograd w.r.t. ``params`` and ``inner_lr`` (second order
    unless ``first_order``).  ``tasks`` is a non-empty sequence of ``(support, query)`` pairs.
    """
    check_common(params, loss_fn, inner_lr, steps, first_order)
    return meta_loss_core(params, loss_fn, check_tasks(tasks), inner_lr, steps, first_order)


def meta_loss_core(params, loss_fn, tasks, inner_lr, steps, first_order):
    """:func:`meta_loss` without the argument checks."""
    total = 0.0
    for support, query in tasks:
        fast = adapt_core(params, loss_fn, support, inner_lr, steps, first_order)
        loss = loss_fn(fast, query)
        if np.ndim(loss) != 0:
            raise ValueError(f"loss_fn: must return a scalar, got shape {np.shape(loss)}")
        total = total + loss
    return total / len(tasks)


def _as_float_lr(inner_lr):
    """``inner_lr`` with float64 leaves, so autograd can differentiate w.r.t. it (ints cannot)."""
    def to_float(a):
        return a if getval(a) is not a else onp.asarray(a, dtype=onp.float64)
    if is_node(inner_lr):
        return tree_map(to_float, inner_lr)
    return inner_lr if getval(inner_lr) is not inner_lr else float(inner_lr)


def meta_gradient(params, loss_fn, tasks, *, inner_lr, steps=1, first_order=False,
                  wrt_inner_lr=False):
    """``(F, grads)``: the meta-loss of :func:`meta_loss` and its gradient.

    * ``wrt_inner_lr=False`` (default): ``grads = ∇_θ F``, a tree shaped like ``params``.  With a
      Meta-SGD ``inner_lr`` this is still the gradient w.r.t. ``params`` only (``α`` held fixed).
    * ``wrt_inner_lr=True``: ``grads = (∇_θ F, ∇_α F)``; ``∇_α F`` has the structure of
      ``inner_lr`` (a float for a float ``α``, a tree with leaves shaped like ``inner_lr``'s
      leaves for Meta-SGD).  Meta-SGD trains ``θ`` and ``α`` together with this.

    Second order by default: ``∇_θ F = mean_i (I − H_0 A) ⋯ (I − H_{K−1} A) ∇L_q(θ_K)`` with
    ``H_k = ∇²L_s(θ_k)``, ``A = diag(α)``.  ``first_order=True`` (FOMAML) treats the inner
    gradients as constants: ``∇_θ F = mean_i ∇L_q(θ_K^i)``, and
    ``∇_α F = −mean_i Σ_k ∇L_s(θ_k^i) ⊙ ∇L_q(θ_K^i)`` (summed over the leaf for a float ``α``).
    """
    check_common(params, loss_fn, inner_lr, steps, first_order)
    tasks = check_tasks(tasks)
    check_flag("wrt_inner_lr", wrt_inner_lr)

    def objective(theta, alpha):
        return meta_loss_core(theta, loss_fn, tasks, alpha, steps, first_order)
    return _outer_value_and_grad(objective, params, inner_lr, wrt_inner_lr)


def _outer_value_and_grad(objective, params, inner_lr, wrt_inner_lr):
    """``(F, ∇_θ F)`` or ``(F, (∇_θ F, ∇_α F))`` of ``objective(θ, α)``."""
    if wrt_inner_lr:
        value, g = value_and_grad_tree(lambda t: objective(t["theta"], t["alpha"]),
                                   {"theta": params, "alpha": _as_float_lr(inner_lr)})
        return value, (g["theta"], g["alpha"])
    return value_and_grad_tree(lambda theta: objective(theta, inner_lr), params)


# ---------------------------------------------------------------------------------------------
# The same objective with the tasks on a leading array axis (one traced computation, not N)
# ---------------------------------------------------------------------------------------------

# Θ_p[i] = θ_p: one node per leaf; the VJP sums over the tasks, ∂θ_p = Σ_i ḡ_i.
@primitive
def _repeat(p, num_tasks):
    return onp.repeat(onp.asarray(p)[None], num_tasks, axis=0)


defvjp(_repeat, lambda ans, p, num_tasks: lambda G: np.sum(G, axis=0))


def tile_params(params, num_tasks):
    """``Θ``: every leaf ``θ_p`` repeated along a new leading axis, ``Θ_p[i] = θ_p`` for
    ``i < num_tasks``; differentiable, gradients w.r.t. ``θ`` sum over tasks."""
    num_tasks = check_int("num_tasks", num_tasks, minimum=1)
    return tree_map(lambda p: _repeat(p, int(num_tasks)), params)


def batched_meta_loss(params, batched_loss_fn, support, query, *, num_tasks, inner_lr, steps=1,
                      first_order=False):
    """:func:`meta_loss` for ``N = num_tasks`` tasks stacked on a leading axis.

    ``batched_loss_fn(Θ, data) -> (N,)``: the per-task losses ``L^i(Θ_i; data_i)`` for parameters
    ``Θ`` whose leaves carry a leading task axis (:func:`tile_params`) and data stacked the same
    way.  Because task ``i``'s loss depends on ``Θ_i`` only, ``∇_Θ Σ_i L^i = (∇L^i(Θ_i))_i``, so
    :func:`adapt` on ``Σ_i L^i`` from ``Θ = tile(θ)`` takes every task's inner steps at once and

        batched_meta_loss(θ) = mean_i L_q^i(adapt(tile(θ))_i)  =  meta_loss(θ, tasks)

    exactly (the tests compare the two, and their gradients, at every order used).  It traces one
    computation instead of ``N``, which is what makes it fast under autograd.  ``inner_lr`` as in
    :func:`adapt` (a float, or a Meta-SGD tree shaped like ``params``; it broadcasts over tasks).
    """
    check_common(params, batched_loss_fn, inner_lr, steps, first_order)
    num_tasks = check_int("num_tasks", num_tasks, minimum=1)
    return batched_meta_loss_core(params, batched_loss_fn, support, query, num_tasks, inner_lr, steps,
                              first_order)


def batched_meta_loss_core(params, batched_loss_fn, support, query, num_tasks, inner_lr, steps,
                           first_order):
    """:func:`batched_meta_loss` without the argument checks."""
    def per_task(theta, data):
        losses = batched_loss_fn(theta, data)
        if np.shape(losses) != (int(num_tasks),):
            raise ValueError(f"batched_loss_fn: must return shape ({num_tasks},), got "
                             f"{np.shape(losses)}")
        return losses

    fast = adapt_core(tile_params(params, num_tasks), lambda t, d: np.sum(per_task(t, d)), support,
                  inner_lr, steps, first_order)
    return np.mean(per_task(fast, query))


def batched_meta_gradient(params, batched_loss_fn, support, query, *, num_tasks, inner_lr,
                          steps=1, first_order=False, wrt_inner_lr=False):
    """``(F, grads)`` of :func:`batched_meta_loss`, as :func:`meta_gradient` returns them."""
    check_common(params, batched_loss_fn, inner_lr, steps, first_order)
    num_tasks = check_int("num_tasks", num_tasks, minimum=1)
    check_flag("wrt_inner_lr", wrt_inner_lr)

    def objective(theta, alpha):
        return batched_meta_loss_core(theta, batched_loss_fn, support, query, num_tasks, alpha, steps,
                                  first_order)
    return _outer_value_and_grad(objective, params, inner_lr, wrt_inner_lr)


# ---------------------------------------------------------------------------------------------
# Reverse mode w.r.t. the leaves of a tree
# ---------------------------------------------------------------------------------------------

# autograd boxes a dict argument as one DictBox: every ``params[k]`` is then a node whose VJP
# builds a zero-filled copy of the whole tree (``container_untake``), and these trees are summed.
# In the sinusoid meta-gradient that was 38 of 156 nodes and most of the adds.  Tracing every leaf
# as a root of its own gives the same derivatives (the same backward pass as autograd's
# ``backward_pass``, read at several roots) and hands ``fun`` a plain dict of array boxes.
def _tree_vjp(fun, tree):
    """``(fun(tree), vjp)``: ``vjp(g)`` is the tree of ``g ∂fun/∂leaf`` (zeros for unused leaves).

    Like ``autograd.make_vjp``, on possibly boxed leaves, so an enclosing ``grad`` differentiates
    through ``vjp`` (this is where the second-order terms of MAML come from).
    """
    flat = flatten_dict(tree)
    with trace_stack.new_trace() as trace:
        roots = {name: VJPNode.new_root() for name in flat}
        out = fun(unflatten_dict({name: new_box(x, trace, roots[name]) for name, x in flat.items()}))
    if not (isbox(out) and out._trace == trace):                 # independent of the tree
        return out, lambda g: unflatten_dict({name: vspace(x).zeros() for name, x in flat.items()})
    root_names = {node: name for name, node in roots.items()}

    def vjp(g):
        outgrads, grads = {out._node: (g, False)}, {}
        for node in toposort(out._node):
            g_node = outgrads.pop(node)[0]
            if node in root_names:
                grads[root_names[node]] = g_node
            for parent, ingrad in zip(node.parents, node.vjp(g_node)):
                outgrads[parent] = add_outgrads(outgrads.get(parent), ingrad)
        return unflatten_dict({name: grads[name] if name in grads else vspace(x).zeros()
                               for name, x in flat.items()})
    return out._value, vjp


def value_and_grad_tree(fun, tree):
    """``(fun(tree), ∇ fun(tree))`` for a real scalar ``fun``, w.r.t. the leaves of ``tree`` (a
    dict of arrays, possibly nested): autograd's ``value_and_grad`` with every leaf traced as a
    root of its own, so ``fun`` receives a plain dict of boxes (not a ``DictBox``) and may read
    their values (:func:`stop_gradient`) for work outside the derivative, such as sampling."""
    value, vjp = _tree_vjp(fun, tree)
    return value, vjp(np.ones_like(value))
