"""Validation of the public arguments of :mod:`ssmref.optim`, once, at the boundary.

Parameter, gradient and state trees are dicts of real arrays under the package's one rule
(:func:`ssmref.checks.check_array`: numeric, never bool, finite); every failure is a one-line
``ValueError`` naming the leaf.  Checks read values, so traced (boxed) leaves pass through.
"""

import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_int, check_real_array, check_scalar, shape_of
from ssmref.params import flatten_dict, is_node


def check_adam_hyper(lr, b1, b2, eps, weight_decay):
    check_scalar("lr", lr, low=0.0)
    check_scalar("b1", b1, low=0.0, high=1.0, high_open=True)
    check_scalar("b2", b2, low=0.0, high=1.0, high_open=True)
    check_scalar("eps", eps, low=0.0)
    check_scalar("weight_decay", weight_decay, low=0.0)


def check_real_tree(name, tree):
    """Every leaf of ``tree`` is a real (not complex, not object) array."""
    if not is_node(tree):
        raise ValueError(f"{name} must be a dict of arrays (expected a dict), got "
                         f"{type(getval(tree)).__name__}")
    for k, leaf in flatten_dict(tree).items():
        check_real_array(f"{name}[{k!r}]", leaf)


def check_tree_like(name, tree, ref_name, ref):
    """``tree`` has exactly the leaf names and leaf shapes of ``ref``, else ``ValueError``."""
    check_real_tree(name, tree)
    flat, flat_ref = flatten_dict(tree), flatten_dict(ref)
    if sorted(flat) != sorted(flat_ref):
        missing = sorted(set(flat_ref) - set(flat))
        extra = sorted(set(flat) - set(flat_ref))
        raise ValueError(f"{name} does not match {ref_name}: missing {missing}, extra {extra}")
    for k in flat_ref:
        if shape_of(flat[k]) != shape_of(flat_ref[k]):
            raise ValueError(f"{name}[{k!r}] has shape {shape_of(flat[k])}, expected "
                             f"{shape_of(flat_ref[k])} as {ref_name}[{k!r}]")


def check_adam_state(state, params):
    if not is_node(state) or sorted(state.keys()) != ["m", "step", "v"]:
        got = sorted(state.keys()) if is_node(state) else type(state).__name__
        raise ValueError(f"state must be an Adam state with keys ['m', 'step', 'v'], got {got}")
    step = state["step"]
    check_int("state['step']", step, minimum=0)
    check_tree_like("state['m']", state["m"], "params", params)
    check_tree_like("state['v']", state["v"], "params", params)
    for k, v in flatten_dict(state["v"]).items():      # a second moment is a mean of squares
        if onp.any(onp.asarray(getval(v)) < 0):
            raise ValueError(f"state['v'][{k!r}] has negative entries; it must be >= 0")
