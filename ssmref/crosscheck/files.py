"""The vectors on disk: deterministic ``.npz`` files, the manifest's structure, and results.

Nothing here unpickles, and every problem with a file raises :class:`VectorsError`, which the
command line turns into exit status 2 and one line on stderr.  What a case's arrays must hold is
the registry's business (:mod:`ssmref.crosscheck.registry`).
"""

import os
import re
import zipfile

import numpy as onp

from ssmref.crosscheck.precision import DTYPES
from ssmref import storage
from ssmref.storage import atomic_write

SPEC_VERSION = "1"
#: What a case name and a file name may hold: they name files inside the vectors and results
#: directories, so nothing that could lead outside them.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class VectorsError(ValueError):
    """Unusable input for the checker (missing directory, file or key, wrong shape, bad manifest):
    ``python -m ssmref check`` exits 2 with this message on one line."""


class UnknownNameError(VectorsError, KeyError):
    """An unknown case name, or an output name a case does not have (or lacks): both a
    :class:`VectorsError` (a ``ValueError``) and a ``KeyError``, with a plain message."""

    __str__ = ValueError.__str__         # KeyError's would print the message in quotes


def one_line(e):
    """An exception's message on one line (its type's name if it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


def select_names(names, known, what):
    """``names`` (a name, a list, or ``None`` for all) as a list in ``known``'s order."""
    if names is None:
        return list(known)
    if isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{what}: unknown case(s) {unknown}; known: {list(known)}")
    return [n for n in known if n in names]


# --- deterministic, atomic files -------------------------------------------------------------

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path, arrays):
    """Write ``name -> array`` to ``path`` as an uncompressed ``.npz`` that ``numpy.load`` reads,
    byte for byte the same for the same arrays: entries in sorted order, each with a fixed
    timestamp and attributes (``numpy.savez`` stamps the current time).  Atomic; no pickles."""
    plain = {}
    for name in sorted(arrays):
        a = onp.asarray(arrays[name])
        if a.dtype.kind not in "fiubc":
            raise ValueError(f"write_npz: array {name!r} has dtype {a.dtype}; only numbers "
                             f"are stored")
        plain[name] = onp.array(a, dtype=a.dtype.newbyteorder("<"), order="C")   # keeps 0-d

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, a in plain.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
                info.create_system = 3
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_STORED
                with zf.open(info, "w", force_zip64=True) as fid:
                    onp.lib.format.write_array(fid, a, allow_pickle=False)

    atomic_write(path, write)


def read_npz(path, what="file"):
    """``name -> ndarray`` from an ``.npz`` (:func:`ssmref.storage.read_npz`: a regular file, every
    member an ``.npy`` array checked header-first, never unpickled); :class:`VectorsError`
    otherwise."""
    try:
        return storage.read_npz(path, what=what)
    except ValueError as e:
        raise VectorsError(one_line(e)) from None


# --- the manifest and results ---------------------------------------------------------------

def read_manifest(vectors_dir, kinds):
    """The manifest of ``vectors_dir``, its structure checked; ``kinds``: the known case kinds."""
    if not os.path.isdir(vectors_dir):
        raise VectorsError(f"vectors directory {vectors_dir} does not exist")
    path = os.path.join(vectors_dir, "manifest.json")
    if not os.path.lexists(path):
        raise VectorsError(f"{path} does not exist (write vectors with: python -m ssmref vectors "
                           f"{vectors_dir})")
    try:
        manifest = storage.read_json(path, what="manifest")
    except ValueError as e:
        raise VectorsError(one_line(e)) from None
    want = {"spec_version", "ssmref_version", "dtype", "cases"}
    if not isinstance(manifest, dict) or not want <= set(manifest):
        got = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise VectorsError(f"{path}: expected keys {sorted(want)}, got {got}")
    if manifest["spec_version"] != SPEC_VERSION:
        raise VectorsError(f"{path}: spec_version {manifest['spec_version']!r} is not supported "
                           f"(this checker reads {SPEC_VERSION!r})")
    if manifest["dtype"] not in DTYPES:
        raise VectorsError(f"{path}: dtype {manifest['dtype']!r} is not one of {list(DTYPES)}")
    if not isinstance(manifest["cases"], list) or not manifest["cases"]:
        raise VectorsError(f"{path}: 'cases' must be a non-empty list")
    seen = set()
    for i, c in enumerate(manifest["cases"]):
        keys = {"name", "file", "kind", "inputs", "outputs", "attrs"}
        if not isinstance(c, dict) or not keys <= set(c):
            raise VectorsError(f"{path}: cases[{i}] must have keys {sorted(keys)}")
        name, file = c["name"], c["file"]
        if not isinstance(name, str) or not name or name in seen:
            raise VectorsError(f"{path}: cases[{i}] has a missing or repeated name {name!r}")
        seen.add(name)
        if not NAME.fullmatch(name):
            raise VectorsError(f"{path}: cases[{i}]: name {name!r} must be letters, digits, '_', "
                               f"'-' and '.' (it names the results file <name>.npz)")
        if not isinstance(file, str) or not NAME.fullmatch(file) or not file.endswith(".npz"):
            raise VectorsError(f"{path}: case {name}: 'file' must be a plain .npz file name, "
                               f"got {file!r}")
        if c["kind"] not in kinds:
            raise VectorsError(f"{path}: case {name}: unknown kind {c['kind']!r}; "
                               f"known {list(kinds)}")
        for key in ("inputs", "outputs"):
            if not isinstance(c[key], list) or not all(isinstance(k, str) for k in c[key]) \
                    or (key == "outputs" and not c[key]):
                raise VectorsError(f"{path}: case {name}: {key!r} must be a list of names")
        if not isinstance(c["attrs"], dict):
            raise VectorsError(f"{path}: case {name}: 'attrs' must be an object")
    return manifest


#: Array types NumPy has no arithmetic for (ml_dtypes' bfloat16 and float8 in JAX arrays),
#: widened to float32 first: exact.
_NARROW_FLOATS = ("bfloat16", "float8")


def to_numpy(x):
    """``x`` as a NumPy array: a torch tensor is detached and moved to the CPU (torch is never
    imported here), bfloat16 and float8 tensors widened to float32 and complex32 to complex64
    (exact; NumPy has no such types), conjugate and negative views resolved; anything else goes
    through ``numpy.asarray`` (JAX arrays with bfloat16 widened to float32)."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):        # a torch.Tensor
        t = x.detach().cpu().resolve_conj().resolve_neg()     # never .numpy() on a grad tensor
        name = str(t.dtype).replace("torch.", "")
        if name.startswith(_NARROW_FLOATS):
            t = t.float()
        elif name in ("complex32", "chalf"):
            t = t.cfloat()
        return t.numpy()
    a = onp.asarray(x)
    if a.dtype.name.startswith(_NARROW_FLOATS):
        a = a.astype(onp.float32)
    return a


def as_result(a, expected, where):
    """A result array as float64 (complex128 where ``expected`` is complex), after checking its
    dtype and shape: a complex result for a real expected output, or a real one for a complex
    expected output, is refused (never silently cut to its real part)."""
    a = onp.asarray(a)
    complex_expected = onp.iscomplexobj(expected)
    if a.dtype.kind == "c" and not complex_expected:
        raise VectorsError(f"{where} is complex ({a.dtype}) but the expected output is real")
    if complex_expected and a.dtype.kind != "c":
        raise VectorsError(f"{where} has dtype {a.dtype}, but the expected output is complex "
                           f"(store complex64 or complex128)")
    if a.dtype.kind not in "fiuc":
        raise VectorsError(f"{where} has dtype {a.dtype}, expected a real number type "
                           f"(store bfloat16 results as float32)")
    if a.shape != onp.shape(expected):
        raise VectorsError(f"{where} has shape {a.shape}, expected {onp.shape(expected)}")
    return a.astype(onp.complex128 if complex_expected else onp.float64)
