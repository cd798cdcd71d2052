"""Validation of the public arguments of :mod:`ssmref.maml`, once, at the boundary.

Checks read values (:func:`ssmref.checks.values`): under autograd the arguments may be boxes.
Arrays follow the package's one rule (:func:`ssmref.checks.check_array`): numeric, never bool,
finite; parameters are floating.  Every failure is a one-line ``ValueError`` naming the argument.
"""

import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_array, check_flag, check_int
from ssmref.params import flatten_dict, is_node, tree_leaves, tree_map


def check_params(params):
    """``ValueError`` unless ``params`` is a tree of finite floating arrays."""
    if not is_node(params):
        raise ValueError(f"params: expected a dict of arrays, got {type(getval(params)).__name__}")
    for path, leaf in zip(flatten_dict(params), tree_leaves(params)):
        a = check_array(f"params[{path!r}]", leaf)
        if a.dtype.kind != "f":
            raise ValueError(f"params[{path!r}]: expected a floating array, got dtype {a.dtype}")


def check_inner_lr(inner_lr, params):
    """``ValueError`` unless ``inner_lr`` is a valid ``α`` for ``params``: a finite non-negative
    real scalar, or a tree shaped like ``params`` of finite real arrays broadcastable to their
    parameter's shape (Meta-SGD; entries of either sign)."""
    if not is_node(inner_lr):
        a = onp.asarray(getval(inner_lr))
        if a.ndim != 0 or a.dtype.kind not in "iuf":
            raise ValueError("inner_lr: expected a float or a dict of arrays shaped like params, "
                             f"got {type(getval(inner_lr)).__name__} with shape {a.shape}")
        if not onp.isfinite(a) or a < 0:
            raise ValueError(f"inner_lr: expected a finite non-negative float, got {float(a)!r}")
        return
    try:
        tree_map(lambda p, a: None, params, inner_lr)
    except ValueError as e:
        raise ValueError(f"inner_lr: must have the same structure as params ({e})") from None
    for path, p, a in zip(flatten_dict(params), tree_leaves(params), tree_leaves(inner_lr)):
        a = check_array(f"inner_lr[{path!r}]", a)
        p_shape = onp.shape(getval(p))
        try:
            ok = onp.broadcast_shapes(a.shape, p_shape) == p_shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"inner_lr[{path!r}]: shape {a.shape} does not broadcast to the "
                             f"parameter shape {p_shape}")


def check_common(params, loss_fn, inner_lr, steps, first_order):
    """The arguments every public function of :mod:`ssmref.maml` takes, checked once."""
    check_params(params)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: expected a callable loss_fn(params, data), got "
                         f"{type(loss_fn).__name__}")
    check_int("steps", steps, minimum=0)
    check_flag("first_order", first_order)
    check_inner_lr(inner_lr, params)


def check_tasks(tasks):
    """``tasks`` as a non-empty list of ``(support, query)`` pairs."""
    try:
        tasks = list(tasks)
    except TypeError:
        raise ValueError(f"tasks: expected a sequence of (support, query) pairs, got "
                         f"{type(tasks).__name__}") from None
    if not tasks:
        raise ValueError("tasks: expected at least one (support, query) pair, got none")
    for i, task in enumerate(tasks):
        if not isinstance(task, (tuple, list)) or len(task) != 2:
            raise ValueError(f"tasks[{i}]: expected a (support, query) pair, got "
                             f"{type(task).__name__}"
                             + (f" of length {len(task)}" if hasattr(task, "__len__") else ""))
    return tasks
