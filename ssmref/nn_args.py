"""Validation of the arguments of :mod:`ssmref.nn`: sizes, ranks and axes, each a one-line
``ValueError`` naming the argument; checks read shapes only, so traced arrays pass through."""

import numpy as onp

from ssmref.checks import check_int, shape_of


def check_dim(name, value):
    """A size: an int >= 1."""
    return check_int(name, value, minimum=1)


def check_ndim_at_least(name, x, n):
    """``x`` has at least ``n`` dimensions."""
    if len(shape_of(x)) < n:
        raise ValueError(f"{name} must have at least {n} dimension(s), got shape {shape_of(x)}")


def check_axis(name, x, axis):
    """``axis`` indexes a dimension of ``x``."""
    nd = len(shape_of(x))
    if not isinstance(axis, (int, onp.integer)) or not -nd <= axis < nd or nd == 0:
        raise ValueError(f"axis {axis!r} is out of range for {name} of shape {shape_of(x)}")
