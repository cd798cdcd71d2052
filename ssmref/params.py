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

Persistence: :func:`save_npz` writes atomically (temporary file in the same directory, ``fsync``,
``os.replace``), so a crash or an exception leaves the previous file intact; :func:`load_npz` never
unpickles (``allow_pickle=False``) and validates names, shapes and dtypes against what the caller
expects, raising ``ValueError`` for anything else.
"""

import json
import os
import tempfile
import zipfile

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
    return _tree_map(fn, tree, rest, "")


def _tree_map(fn, tree, rest, path):
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
    return {k: _tree_map(fn, tree[k], [o[k] for o in rest], f"{path}{SEP}{k}" if path else k)
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


# ---------------------------------------------------------------------------------------------
# Persistence: atomic .npz writes and validating loads, never pickle
# ---------------------------------------------------------------------------------------------

def atomic_write(path, write):
    """Call ``write(f)`` on a new temporary file (binary) in ``path``'s directory, flush and
    ``fsync`` it, make it readable (mode 644), then move it over ``path`` with ``os.replace``.
    If anything fails, the previous file at ``path`` is untouched and the temporary file removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_npz(path, arrays):
    """Write a flat dict ``name -> array`` (or a tree, flattened with dotted names) to ``path``.

    Written with :func:`atomic_write`: a temporary file in the same directory, flushed and
    ``fsync``-ed, then moved over ``path``; if anything fails the previous file is untouched and
    the temporary file is removed.  Object arrays are refused (they would need pickle to read).
    """
    flat = flatten_dict(arrays) if any(is_node(v) for v in arrays.values()) else dict(arrays)
    plain = {}
    for name, v in flat.items():
        a = onp.asarray(v)
        if a.dtype == object:
            raise ValueError(f"save_npz: array {name!r} has dtype object, which needs pickle")
        plain[name] = a
    atomic_write(path, lambda f: onp.savez(f, **plain))


def load_npz(path, expected=None, *, allow_extra=False):
    """Read a file written by :func:`save_npz` into a flat dict ``name -> ndarray``.

    ``expected`` maps each required name to its shape (a tuple, or ``None`` for any shape) and,
    optionally, a dtype kind: ``{"A": (4, 4), "step": ((), "i")}``; the default kind is ``"f"``
    (floating).  Names not in ``expected`` are an error unless ``allow_extra``.  Every problem
    (missing file, not a zip, truncated, object array, missing key, wrong shape or dtype) raises
    ``ValueError`` naming the file and the array.
    """
    path = os.fspath(path)
    try:
        # open the file ourselves: numpy leaks its handle when the zip directory is unreadable
        with open(path, "rb") as f:
            z = onp.load(f, allow_pickle=False)
            if not isinstance(z, onp.lib.npyio.NpzFile):
                raise ValueError("it holds a single array (.npy), not an .npz archive")
            with z:
                out = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    except ValueError as e:
        # numpy raises ValueError for object arrays when allow_pickle=False and for bad headers
        raise ValueError(f"{path}: unreadable array ({e})") from None
    if expected is None:
        return out
    return check_arrays(out, expected, where=path, allow_extra=allow_extra)


def check_arrays(arrays, expected, *, where="arrays", allow_extra=False):
    """Validate a flat dict of arrays against ``expected`` exactly as :func:`load_npz` does
    (names, shapes, dtype kinds; ``where`` prefixes the messages); returns ``arrays``."""
    path, out = where, arrays
    missing = [k for k in expected if k not in out]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; found {sorted(out)}")
    if not allow_extra:
        extra = [k for k in out if k not in expected]
        if extra:
            raise ValueError(f"{path}: unexpected arrays {extra}; expected {sorted(expected)}")
    for name, spec in expected.items():
        shape, kind = spec if (isinstance(spec, tuple) and len(spec) == 2
                               and isinstance(spec[1], str)) else (spec, "f")
        a = out[name]
        if a.dtype.kind != kind and not (kind == "i" and a.dtype.kind == "u"):
            raise ValueError(f"{path}: array {name!r} has dtype {a.dtype}, expected kind {kind!r}")
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{path}: array {name!r} has shape {a.shape}, expected {tuple(shape)}")
    return out


def save_checkpoint(path, trees, meta):
    """One atomic ``.npz`` holding several parameter trees and a JSON header.

    ``trees``: ``{group: tree}``, stored as arrays ``"<group>.<dotted name>"``; ``meta``: a
    JSON-serialisable dict, stored as the ``uint8`` array ``meta_json`` (UTF-8 text).  Read back
    with :func:`load_checkpoint`; no pickle either way.
    """
    arrays = {f"{g}.{k}": v for g, tree in trees.items() for k, v in flatten_dict(tree).items()}
    arrays["meta_json"] = onp.frombuffer(json.dumps(meta).encode("utf-8"), dtype=onp.uint8)
    save_npz(path, arrays)


def load_checkpoint(path, groups, shapes):
    """``(meta, {group: tree})`` from a file of :func:`save_checkpoint`.

    ``shapes(meta)`` returns the expected ``{dotted name: shape}`` of every group's tree (it may
    depend on the header, e.g. on a stored spec); every group must match it exactly (names, shapes,
    floating dtype).  Anything else (a missing or malformed header, a missing, extra or misshapen
    array, a file that is not an ``.npz``) raises ``ValueError`` naming ``path``; ``shapes`` may
    raise ``ValueError``/``KeyError``/``TypeError`` for a header it cannot use.
    """
    raw = load_npz(path)
    if "meta_json" not in raw or raw["meta_json"].dtype != onp.uint8 or raw["meta_json"].ndim != 1:
        raise ValueError(f"{path}: missing or malformed 'meta_json'")
    try:
        meta = json.loads(raw["meta_json"].tobytes().decode("utf-8"))
        expected_shapes = shapes(meta)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed metadata ({e})") from None
    expected = {f"{g}.{k}": s for g in groups for k, s in expected_shapes.items()}
    expected["meta_json"] = (None, "u")
    check_arrays(raw, expected, where=str(path))
    trees = {g: unflatten_dict({k[len(g) + 1:]: raw[k] for k in raw if k.startswith(g + ".")})
             for g in groups}
    return meta, trees
