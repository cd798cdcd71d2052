"""Which parameters adapt: a model's leaves by name, chosen by regular expressions.

A model's ``params`` is a dict of arrays, nested or not, whose keys may contain dots.  Each leaf has
a *path*, the tuple of its keys, and a *name*, the keys joined by ``"."``::

    {"ssm": {"A": A}}     path ("ssm", "A")      name "ssm.A"
    {"head.weight": W}    path ("head.weight",)  name "head.weight"

The adapter reads and writes leaves by path (:func:`ssmref.params.tree_leaves_with_path`), so a
key with a dot is never split; names are what the patterns match, so two leaves may not share
one.  A leaf ``p`` is trainable when::

    p is floating point
    and (allow_layers is None or re.search(a, name_p) for some a in allow_layers)
    and not re.search(d, name_p) for any d in deny_layers
"""

import re

import numpy as onp
from autograd.tracer import getval

from ssmref.params import tree_leaves_with_path


def param_leaves(tree):
    """``[(path, name, value)]`` for every leaf of ``tree`` (a model's ``params``), depth first in
    sorted key order.  Keys must be non-empty strings; two leaves with the same name (``{"a.b": x,
    "a": {"b": y}}``) raise ``ValueError``."""
    out, seen = [], set()
    for path, value in tree_leaves_with_path(tree, where="model.params"):
        name = ".".join(path)
        if name in seen:
            raise ValueError(f"model.params has two leaves named {name!r}")
        seen.add(name)
        out.append((path, name, value))
    return out


def is_floating(value):
    """True for a floating-point array or scalar (the leaves that can adapt)."""
    a = getval(value)
    return isinstance(a, (onp.ndarray, float, onp.floating)) and onp.asarray(a).dtype.kind == "f"


def compile_patterns(name, value):
    """``None``, or a list of compiled regexes, from ``None``, a regex string or a sequence of
    them; anything else raises ``ValueError`` naming ``name``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        raise ValueError(f"{name} must be None, a regex string or a list of them, "
                         f"got {value!r}") from None
    out = []
    for p in items:
        if not isinstance(p, str):
            raise ValueError(f"{name} must hold regex strings, got {p!r}")
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"{name}: invalid regex {p!r} ({e})") from None
    return out


def matching(names, allow, deny):
    """The ``names`` that some compiled pattern of ``allow`` (all if ``None``) and no pattern of
    ``deny`` finds with ``re.search``, in the given order."""
    return [n for n in names
            if (allow is None or any(p.search(n) for p in allow))
            and not (deny and any(p.search(n) for p in deny))]


def select_names(names, allow_layers=None, deny_layers=None):
    """The names ``n`` with ``re.search(a, n)`` for some ``a`` in ``allow_layers`` (all if
    ``None``) and no ``re.search(d, n)`` for ``d`` in ``deny_layers``, in the given order; each
    pattern argument is ``None``, a regex or a list of regexes."""
    return matching(names, compile_patterns("allow_layers", allow_layers),
                    compile_patterns("deny_layers", deny_layers))
