"""Files that can be trusted: nothing a user saved is lost or half-written, and nothing read runs
code, allocates more than the file holds, recurses without bound, blocks, or reads outside the
directory it was given.

Writing (:func:`atomic_write`, :func:`save_npz`, :func:`write_json`, :func:`save_checkpoint`): a
temporary file in the target's directory, flushed and ``fsync``-ed, then ``os.replace``-d over the
target; on any error the previous file is untouched and the temporary removed.  A process killed
mid-write leaves the target intact and at most one temporary ``.<name>.ssmref-tmp-<pid>-<random>``
beside it; the next write to the same target removes the temporaries of processes that no longer
run.

Reading ``.npz`` (:func:`load_npz`, :func:`load_checkpoint`): never unpickles; every zip member
must be one ``<name>.npy`` array (no other member, no name twice); each array's header (dtype,
shape) is read and checked against the caller's expectation and against the member's stored
size *before* its data is read, so a header declaring a huge shape allocates nothing.

Reading JSON (:func:`read_json`): at most ``max_bytes``, nesting at most ``max_depth``, strict
(no ``NaN``/``Infinity``); checked before parsing.

Paths (:func:`regular_file`, :func:`inside`): a file to read must be a regular file (a FIFO or a
device is refused without opening it), and a name taken from a file (a manifest's case name)
must stay inside its directory, also through symbolic links.

Every failure is a ``ValueError`` naming the file and the problem.
"""

import json
import math
import os
import re
import secrets
import stat
import zipfile

import numpy as onp

from ssmref.params import flatten_dict, is_node, unflatten_dict

MAX_JSON_BYTES = 16 * 2 ** 20      # config, manifest and metadata files are kilobytes
MAX_JSON_DEPTH = 64                # ssmref writes at most 5 levels
MAX_ARRAY_BYTES = 2 ** 34          # 16 GiB: beyond any array ssmref writes; a declared size
                                   # above it is refused before anything is allocated
_TMP = ".ssmref-tmp-"


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------

def regular_file(path, what="file"):
    """``path`` if it names a regular file (after following links); ``ValueError`` if it is
    missing, a directory, a FIFO, a socket or a device (checked with ``stat``, never opened)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist (no such file)") from None
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ValueError(f"{what} {path} is {kind}")
    return path


def inside(directory, name, what="name"):
    """``directory/name``, refusing a ``name`` that is absolute, holds ``..`` or a path separator,
    or resolves (through symbolic links) outside ``directory``."""
    if not isinstance(name, str) or not name or name in (".", "..") or os.path.isabs(name) \
            or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{what} {name!r} is not a plain file name inside {directory}")
    path = os.path.join(directory, name)
    root = os.path.realpath(directory)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise ValueError(f"{what} {name!r} leads outside {directory}")
    return path


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------

def _stale_temporaries(directory, base):
    """Temporaries of ``base`` left by processes that no longer run."""
    pattern = re.compile(r"\." + re.escape(base) + re.escape(_TMP) + r"(\d+)-[0-9a-f]+$")
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid():
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                out.append(os.path.join(directory, name))
            except (PermissionError, OverflowError, ValueError):
                pass                     # alive (another user's process), or not a pid
    return out


def atomic_write(path, write):
    """Call ``write(f)`` on a new temporary file (binary) beside ``path``, flush and ``fsync`` it,
    make it readable (mode 644), then move it over ``path`` with ``os.replace``.  If anything
    fails, the previous file at ``path`` is untouched and the temporary removed; temporaries of
    earlier writes to ``path`` whose process died are removed after a successful write."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory")
    tmp = os.path.join(directory, f".{base}{_TMP}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise ValueError(f"cannot write {path} ({e.strerror})") from None
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
    for stale in _stale_temporaries(directory, base):
        try:
            os.unlink(stale)
        except OSError:
            pass


def write_json(path, obj):
    """``obj`` as indented, key-sorted, strict JSON (no NaN), written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ---------------------------------------------------------------------------------------------
# JSON with bounds
# ---------------------------------------------------------------------------------------------

def json_depth(text):
    """The deepest nesting of ``[`` / ``{`` in JSON ``text`` (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text, where, *, max_depth=MAX_JSON_DEPTH):
    """``json.loads(text)``, strict, after checking the nesting depth; ``ValueError`` naming
    ``where`` otherwise."""
    if json_depth(text) > max_depth:
        raise ValueError(f"{where}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: not valid JSON ({str(e).splitlines()[0]})") from None


def read_json(path, *, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH, what="file"):
    """The JSON value in ``path`` (a regular file of at most ``max_bytes``, nested at most
    ``max_depth`` levels, UTF-8, strict JSON without NaN/Infinity)."""
    path = regular_file(path, what)
    if os.path.getsize(path) > max_bytes:
        raise ValueError(f"{what} {path} is larger than {max_bytes} bytes")
    try:
        with open(path, "rb") as f:
            text = f.read(max_bytes + 1).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be read ({e.strerror})") from None
    return parse_json(text, f"{what} {path}", max_depth=max_depth)


# ---------------------------------------------------------------------------------------------
# .npz: written without pickles, read with every header checked before any data
# ---------------------------------------------------------------------------------------------

def save_npz(path, arrays):
    """Write a flat dict ``name -> array`` (or a tree, flattened with dotted names) to ``path``,
    atomically.  Object arrays are refused (they would need pickle to read)."""
    flat = flatten_dict(arrays) if any(is_node(v) for v in arrays.values()) else dict(arrays)
    plain = {}
    for name, v in flat.items():
        a = onp.asarray(v)
        if a.dtype.hasobject:
            raise ValueError(f"save_npz: array {name!r} has dtype object, which needs pickle")
        plain[name] = a
    atomic_write(path, lambda f: onp.savez(f, **plain))


def _read_header(member, info, where):
    """``(shape, fortran_order, dtype)`` of an ``.npy`` member from its header alone."""
    try:
        version = onp.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = onp.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = onp.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as e:
        raise ValueError(f"{where}: unreadable array header ({str(e).splitlines()[0]})") from None
    if dtype.hasobject:
        raise ValueError(f"{where}: unreadable array (dtype object needs pickle, which is never used)")
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"{where}: invalid shape {shape}")
    return tuple(shape), bool(fortran), dtype


def _read_array(z, info, name, where, want, max_bytes):
    with z.open(info) as member:
        shape, fortran, dtype = _read_header(member, info, where)
        if want is not None:
            want(name, shape, dtype)                    # the caller's check, before any data
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > max_bytes:
            raise ValueError(f"{where}: declares {nbytes} bytes (shape {shape}), more than the "
                             f"limit of {max_bytes}")
        header_len = member.tell()
        if header_len + nbytes != info.file_size:
            raise ValueError(f"{where}: declares shape {shape} of {dtype} ({nbytes} bytes) but "
                             f"holds {info.file_size - header_len} bytes of data")
        data = member.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{where}: truncated array data ({len(data)} of {nbytes} bytes)")
    flat = onp.frombuffer(data, dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


def read_npz(path, *, check=None, only=None, max_bytes=MAX_ARRAY_BYTES, what="file"):
    """``name -> ndarray`` from an ``.npz``; ``check(name, shape, dtype)`` may raise
    ``ValueError`` from the headers, before any data is read.  ``only``: read just these names
    (the others' names are still validated)."""
    path = regular_file(path, what)
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            for i, n in enumerate(names):
                if not n.endswith(".npy") or len(n) == 4:
                    raise ValueError(f"{what} {path}: member {n!r} is not an .npy array")
                if n in names[:i] or n[:-4] in (m[:-4] for m in names[:i]):
                    raise ValueError(f"{what} {path}: array {n[:-4]!r} appears twice")
            return {info.filename[:-4]: _read_array(z, info, info.filename[:-4],
                                                    f"{what} {path}: array {info.filename[:-4]!r}",
                                                    check, max_bytes)
                    for info in infos if only is None or info.filename[:-4] in only}
    except zipfile.BadZipFile as e:
        raise ValueError(f"{what} {path} is not a readable .npz file ({e})") from None
    except (OSError, EOFError, RuntimeError, NotImplementedError) as e:
        raise ValueError(f"{what} {path} is not a readable .npz file "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _spec(spec):
    """``(shape or None, dtype kind)`` from an ``expected`` entry of :func:`load_npz`."""
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], str):
        return spec
    return spec, "f"


def _kind_ok(dtype, kind):
    return dtype.kind == kind or (kind == "i" and dtype.kind == "u")


def load_npz(path, expected=None, *, allow_extra=False, finite=False):
    """Read a file written by :func:`save_npz` into a flat dict ``name -> ndarray``.

    ``expected`` maps each required name to its shape (a tuple, or ``None`` for any shape) and,
    optionally, a dtype kind: ``{"A": (4, 4), "step": ((), "i")}``; the default kind is ``"f"``
    (floating).  Names not in ``expected`` are an error unless ``allow_extra``.  Shapes and dtypes
    are checked from the headers, before any data is read.  ``finite=True`` also refuses NaN and
    infinities in the floating arrays.  Every problem raises ``ValueError`` naming the file and
    the array.
    """
    path = os.fspath(path)

    def check(name, shape, dtype):
        if expected is None:
            return
        if name not in expected:
            if allow_extra:
                return
            raise ValueError(f"{path}: unexpected arrays {[name]}; expected {sorted(expected)}")
        want, kind = _spec(expected[name])
        if not _kind_ok(dtype, kind):
            raise ValueError(f"{path}: array {name!r} has dtype {dtype}, expected kind {kind!r}")
        if want is not None and shape != tuple(want):
            raise ValueError(f"{path}: array {name!r} has shape {shape}, expected {tuple(want)}")

    out = read_npz(path, check=check)
    if expected is not None:
        check_arrays(out, expected, where=path, allow_extra=allow_extra)
    if finite:
        for name, a in out.items():
            if a.dtype.kind in "fc" and not onp.all(onp.isfinite(a)):
                raise ValueError(f"{path}: array {name!r} has non-finite entries")
    return out


def check_arrays(arrays, expected, *, where="arrays", allow_extra=False):
    """Validate a flat dict of arrays against ``expected`` exactly as :func:`load_npz` does
    (names, shapes, dtype kinds; ``where`` prefixes the messages); returns ``arrays``."""
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise ValueError(f"{where}: missing arrays {missing}; found {sorted(arrays)}")
    if not allow_extra:
        extra = [k for k in arrays if k not in expected]
        if extra:
            raise ValueError(f"{where}: unexpected arrays {extra}; expected {sorted(expected)}")
    for name, spec in expected.items():
        shape, kind = _spec(spec)
        a = arrays[name]
        if not _kind_ok(a.dtype, kind):
            raise ValueError(f"{where}: array {name!r} has dtype {a.dtype}, expected kind {kind!r}")
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{where}: array {name!r} has shape {a.shape}, expected {tuple(shape)}")
    return arrays


# ---------------------------------------------------------------------------------------------
# Checkpoints: several parameter trees and a JSON header in one .npz
# ---------------------------------------------------------------------------------------------

def save_checkpoint(path, trees, meta):
    """One atomic ``.npz`` holding several parameter trees and a JSON header.

    ``trees``: ``{group: tree}``, stored as arrays ``"<group>.<dotted name>"``; ``meta``: a
    JSON-serialisable dict (strict: no NaN), stored as the ``uint8`` array ``meta_json``.
    """
    arrays = {f"{g}.{k}": v for g, tree in trees.items() for k, v in flatten_dict(tree).items()}
    text = json.dumps(meta, allow_nan=False)
    arrays["meta_json"] = onp.frombuffer(text.encode("utf-8"), dtype=onp.uint8)
    save_npz(path, arrays)


def load_checkpoint(path, groups, shapes, *, finite=True):
    """``(meta, {group: tree})`` from a file of :func:`save_checkpoint`.

    The header is read first (bounded JSON); ``shapes(meta)`` returns the expected ``{dotted name:
    shape}`` of every group's tree, and every array's header is checked against it before its
    data is read; with ``finite`` (default) NaN and infinities are refused.  Anything else raises
    ``ValueError`` naming ``path``; ``shapes`` may raise ``ValueError``/``KeyError``/``TypeError``
    for a header it cannot use.
    """
    path = os.fspath(path)
    meta = _read_meta(path)
    try:
        expected_shapes = shapes(meta)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed metadata ({e})") from None
    expected = {f"{g}.{k}": s for g in groups for k, s in expected_shapes.items()}
    expected["meta_json"] = (None, "u")
    raw = load_npz(path, expected, finite=finite)
    trees = {g: unflatten_dict({k[len(g) + 1:]: raw[k] for k in raw if k.startswith(g + ".")})
             for g in groups}
    return meta, trees


def _read_meta(path):
    """The JSON header ``meta_json`` of a checkpoint, read alone and bounded."""
    def check(name, shape, dtype):
        if len(shape) != 1 or dtype != onp.uint8:
            raise ValueError(f"{path}: missing or malformed 'meta_json' (a 1-d uint8 array, got "
                             f"{dtype} {shape})")

    raw = read_npz(path, check=check, only={"meta_json"}, max_bytes=MAX_JSON_BYTES)
    if "meta_json" not in raw:
        raise ValueError(f"{path}: missing or malformed 'meta_json'")
    try:
        text = raw["meta_json"].tobytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: malformed metadata: 'meta_json' is not UTF-8 text") from None
    meta = parse_json(text, f"{path}: malformed metadata: meta_json")
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: malformed metadata: meta_json must hold a JSON object, got "
                         f"{type(meta).__name__}")
    return meta
