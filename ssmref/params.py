"""Parameter dicts: the one data structure every ssmref model uses.

A *parameter tree* is a dict ``name -> ndarray`` whose values may themselves be dicts (composite
models, e.g. ``{"ssm": {"A": ..., ...}, "head": {...}}``).  Keys are strings without dots; the dotted
path ``"ssm.A"`` names a leaf.  Leaves are visited in sorted key order, so every function here is
deterministic.  Trees whose keys contain dots (torch ``state_dict`` names such as ``"head.weight"``)
are handled by the path-addressed functions :func:`tree_leaves_with_path` and
:func:`tree_map_with_path`, which name a leaf by the tuple of its keys.

Under ``autograd`` a dict argument arrives as a ``DictBox``: ``isinstance(x, dict)`` is False while
tracing.  This module therefore recognises a node by its ``keys`` method, never by its type, and
builds plain dicts (of possibly boxed leaves) as results.

Math on trees is written once per array and lifted by :func:`tree_map`, which raises a clear
``ValueError`` when two trees do not have the same structure.

Saving and loading trees is :mod:`ssmref.storage` (``save_npz`` writes the dotted names).
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import Box, getval

SEP = "."


def is_node(x):
    """True for a dict or an autograd ``DictBox`` (anything with ``keys``, but not an array)."""
    return hasattr(x, "keys") and not hasattr(x, "shape")


def _sorted_keys(tree, where):
    keys = list(tree.keys())
    for k in keys:
        if not isinstance(k, str) or not k or SEP in k:
            raise ValueError(f"{where}: keys must be non-empty strings without '{SEP}', got {k!r}")
    return sorted(keys)


def tree_map(fn, tree, *rest):
    """``fn`` applied leaf by leaf: ``tree_map(f, a, b)[k] = f(a[k], b[k])``, recursively.

    All trees must have the same keys at every level; otherwise ``ValueError`` names the path.
    """
    return _map_at(fn, tree, rest, "")


def _map_at(fn, tree, rest, path):
    if not is_node(tree):
        for other in rest:
            if is_node(other):
                raise ValueError(f"tree structures differ at {path or '<root>'}: leaf vs dict")
        return fn(tree, *rest)
    keys = _sorted_keys(tree, path or "<root>")
    for other in rest:
        if not is_node(other) or sorted(other.keys()) != keys:
            got = sorted(other.keys()) if is_node(other) else "a leaf"
            raise ValueError(f"tree structures differ at {path or '<root>'}: keys {keys} vs {got}")
    return {k: _map_at(fn, tree[k], [o[k] for o in rest], f"{path}{SEP}{k}" if path else k)
            for k in keys}


def tree_leaves(tree):
    """The leaves in sorted-path order."""
    return [v for _, v in flatten_dict(tree).items()]


def flatten_dict(tree, prefix=""):
    """``{"a": {"b": x}} -> {"a.b": x}``, keys in sorted order."""
    if not is_node(tree):
        raise ValueError(f"flatten_dict: expected a dict of arrays, got {type(tree).__name__}")
    out = {}
    for k in _sorted_keys(tree, prefix or "<root>"):
        name = f"{prefix}{SEP}{k}" if prefix else k
        v = tree[k]
        if is_node(v):
            out.update(flatten_dict(v, name))
        else:
            out[name] = v
    return out


def unflatten_dict(flat):
    """Inverse of :func:`flatten_dict`: ``{"a.b": x} -> {"a": {"b": x}}``."""
    tree = {}
    for name in sorted(flat):
        parts = name.split(SEP)
        if any(not p for p in parts):
            raise ValueError(f"invalid parameter name {name!r}")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"parameter name {name!r} nests below a leaf")
        if parts[-1] in node:
            raise ValueError(f"parameter name {name!r} is both a leaf and a dict")
        node[parts[-1]] = flat[name]
    return tree


def ravel(tree):
    """``(vector, unravel)``: all leaves concatenated in sorted-path order, and its inverse.

    Differentiable: ``unravel(ravel(t)[0])`` rebuilds ``t`` from array slices without copies that
    autograd cannot follow.
    """
    flat = flatten_dict(tree)
    names = list(flat)
    shapes = [np.shape(flat[n]) for n in names]
    sizes = [int(onp.prod(s)) for s in shapes]
    vec = np.concatenate([np.reshape(flat[n], (-1,)) for n in names]) if names else np.zeros(0)

    def unravel(v):
        out, start = {}, 0
        for n, s, k in zip(names, shapes, sizes):
            out[n] = np.reshape(v[start:start + k], s)
            start += k
        return unflatten_dict(out)

    return vec, unravel


def tree_vdot(a, b):
    """``sum_k <a_k, b_k>`` over matching leaves."""
    return sum(tree_leaves(tree_map(lambda x, y: np.sum(x * y), a, b)))


def global_norm(tree):
    """``sqrt(sum_k ||t_k||^2)``, the Euclidean norm of all leaves taken as one vector."""
    return np.sqrt(sum(np.sum(x * x) for x in tree_leaves(tree)))


def tree_allclose(a, b, rtol=1e-7, atol=0.0):
    """Same structure and ``numpy.allclose`` on every leaf (values, not boxes)."""
    try:
        checks = tree_map(lambda x, y: np.shape(x) == np.shape(y)
                          and bool(onp.allclose(x, y, rtol=rtol, atol=atol)), a, b)
    except ValueError:
        return False
    return all(tree_leaves(checks))


def stop_gradient(tree):
    """The values of ``tree`` (a parameter tree, an array or a scalar) as constants for autograd.

    autograd has no ``stop_gradient``; this strips every autograd box from the leaves
    (``autograd.tracer.getval``), so whatever is computed from the result is invisible to every
    enclosing ``grad``, at every order (the analogue of ``jax.lax.stop_gradient`` and
    ``tensor.detach()``).  A primitive whose VJP returns zeros would give the same derivatives, but
    autograd would still record everything computed from it and backpropagate zeros through it;
    unboxing keeps it off the tape.
    """
    if is_node(tree):
        return tree_map(getval, tree)
    return getval(tree)


def tree_copy(tree):
    """A deep copy with every leaf a fresh float64 ndarray (never an alias of the input)."""
    return tree_map(lambda x: onp.array(x, dtype=onp.float64, copy=True), tree)


# ---------------------------------------------------------------------------------------------
# Trees addressed by key paths: keys may contain dots
# ---------------------------------------------------------------------------------------------
# The functions above name a leaf by its dotted path, so their keys cannot contain dots.  Models
# from elsewhere often use torch ``state_dict`` names as keys (``{"head.weight": W}``), and the
# test-time adapter works on any model.  The functions below address a leaf by its *path*, the
# tuple of its keys (``("head.weight",)``, ``("ssm", "A")``), which is never split.

def tree_leaves_with_path(tree, where="tree"):
    """``[(path, leaf)]`` for every leaf, depth first in sorted key order.

    Keys may be any non-empty strings, dots included; anything else (or a ``tree`` that is not a
    dict) raises ``ValueError`` naming ``where`` and the path of the bad key.
    """
    if not is_node(tree):
        raise ValueError(f"{where} must be a dict of arrays, got {type(tree).__name__}")
    out = []

    def walk(node, path):
        keys = list(node.keys())
        for k in keys:
            if not isinstance(k, str) or not k:
                raise ValueError(f"{where} keys must be non-empty strings, got {k!r} "
                                 f"under {'.'.join(path) or '<root>'}")
        for k in sorted(keys):
            if is_node(node[k]):
                walk(node[k], path + (k,))
            else:
                out.append((path + (k,), node[k]))

    walk(tree, ())
    return out


def tree_map_with_path(fn, tree):
    """A new tree of plain dicts with ``fn(path, leaf)`` at every leaf (``fn((), tree)`` for a
    leaf).  Keys keep their order and are not inspected; nothing is written into ``tree``."""
    if not is_node(tree):
        return fn((), tree)

    def walk(node, path):
        return {k: walk(node[k], path + (k,)) if is_node(node[k]) else fn(path + (k,), node[k])
                for k in node.keys()}

    return walk(tree, ())


def contains_box(tree):
    """True when ``tree`` (a tree, an array or a scalar) is or holds an autograd box, i.e. when
    something computed from it is being traced."""
    if isinstance(tree, Box):
        return True
    return is_node(tree) and any(contains_box(tree[k]) for k in tree.keys())
