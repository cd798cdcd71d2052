"""The vectors on disk: the manifest's format, deterministic ``.npz`` files, and reading and
validating vectors and results (:class:`VectorsError` on anything unusable)."""

import json
import os
import zipfile

import numpy as np

from ssmref import params as P
from ssmref import ssm as S
from ssmref.crosscheck.dtypes import DTYPES

SPEC_VERSION = "1"
KINDS = ("ssm_scan", "ssm_step", "ssm_kernel", "ssm_scan_vjp", "discretize", "policy", "maml",
         "adapter")


class VectorsError(ValueError):
    """Unusable input for the checker (missing directory, file or key, wrong shape, bad manifest):
    ``python -m ssmref check`` exits 2 with this message on one line."""


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def _select(names, known, what):
    if names is None:
        return list(known)
    if isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{what}: unknown case(s) {unknown}; known: {list(known)}")
    return [n for n in known if n in names]


def _ssm(inputs):
    return {k: inputs[k] for k in S.PARAM_NAMES}


# --- deterministic, atomic files -------------------------------------------------------------

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path, arrays):
    """Write ``name -> array`` to ``path`` as an uncompressed ``.npz`` that ``numpy.load`` reads,
    byte for byte the same for the same arrays: entries in sorted order, each with a fixed
    timestamp and attributes (``numpy.savez`` stamps the current time).  Atomic; no pickles."""
    plain = {}
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype.kind not in "fiub":
            raise ValueError(f"write_npz: array {name!r} has dtype {a.dtype}; only numbers "
                             f"are stored")
        plain[name] = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")   # keeps 0-d

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, a in plain.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
                info.create_system = 3
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_STORED
                with zf.open(info, "w", force_zip64=True) as fid:
                    np.lib.format.write_array(fid, a, allow_pickle=False)

    P.atomic_write(path, write)


def read_npz(path, what="file"):
    """``name -> ndarray`` from an ``.npz`` (never unpickles); :class:`VectorsError` otherwise."""
    try:
        with open(path, "rb") as f:
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise VectorsError(f"{what} {path} holds a single array, not an .npz archive")
            with z:
                return {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise VectorsError(f"{what} {path} does not exist") from None
    except VectorsError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VectorsError(f"{what} {path} is not a readable .npz file ({msg})") from None


# --- reading and validating ------------------------------------------------------------------

def _read_manifest(vectors_dir):
    if not os.path.isdir(vectors_dir):
        raise VectorsError(f"vectors directory {vectors_dir} does not exist")
    path = os.path.join(vectors_dir, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise VectorsError(f"{path} does not exist (write vectors with: python -m ssmref vectors "
                           f"{vectors_dir})") from None
    except (OSError, ValueError) as e:
        raise VectorsError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
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
        if not isinstance(file, str) or os.path.basename(file) != file or not file.endswith(".npz"):
            raise VectorsError(f"{path}: case {name}: 'file' must be a plain .npz file name, "
                               f"got {file!r}")
        if c["kind"] not in KINDS:
            raise VectorsError(f"{path}: case {name}: unknown kind {c['kind']!r}; "
                               f"known {list(KINDS)}")
        for key in ("inputs", "outputs"):
            if not isinstance(c[key], list) or not all(isinstance(k, str) for k in c[key]) \
                    or (key == "outputs" and not c[key]):
                raise VectorsError(f"{path}: case {name}: {key!r} must be a list of names")
        if not isinstance(c["attrs"], dict):
            raise VectorsError(f"{path}: case {name}: 'attrs' must be an object")
    return manifest


def _load_case_arrays(vectors_dir, entry):
    path = os.path.join(vectors_dir, entry["file"])
    arrays = read_npz(path, what=f"case {entry['name']}:")
    missing = [k for k in entry["inputs"] + entry["outputs"] if k not in arrays]
    if missing:
        raise VectorsError(f"case {entry['name']}: {path} lacks {missing}")
    for k in entry["outputs"]:
        a = arrays[k]
        if a.dtype != np.float64:
            raise VectorsError(f"case {entry['name']}: expected output {k!r} has dtype {a.dtype}, "
                               f"not float64")
        if not np.all(np.isfinite(a)):
            raise VectorsError(f"case {entry['name']}: expected output {k!r} is not finite")
    inputs = {k: arrays[k] for k in entry["inputs"]}
    try:
        _validate_inputs(entry["kind"], inputs, entry["attrs"])
    except (KeyError, ValueError, TypeError) as e:
        raise VectorsError(f"case {entry['name']}: unusable inputs ({_one_line(e)})") from None
    return {"name": entry["name"], "kind": entry["kind"], "attrs": entry["attrs"],
            "inputs": inputs, "outputs": {k: arrays[k] for k in entry["outputs"]}}


#: The inputs the checker itself reads (tolerances, baselines), by kind.
REQUIRED_INPUTS = {"ssm_scan": ("A", "B", "C", "D", "u", "h0"),
                   "ssm_step": ("A", "B", "C", "D", "h", "u"),
                   "ssm_kernel": ("A", "B", "C"),
                   "ssm_scan_vjp": ("A", "B", "C", "D", "u", "h0", "gy", "gh"),
                   "discretize": ("A", "B", "dt"),
                   "policy": ("params.ssm.A", "obs"), "maml": (), "adapter": ()}


def _validate_inputs(kind, x, attrs):
    """``ValueError`` unless the inputs and attrs the checker reads have consistent shapes."""
    missing = [k for k in REQUIRED_INPUTS[kind] if k not in x]
    if missing:
        raise ValueError(f"kind {kind!r} needs inputs {missing}")
    for k in REQUIRED_INPUTS[kind]:
        if x[k].dtype.kind != "f":
            raise ValueError(f"input {k!r} has dtype {x[k].dtype}, expected float")
    if kind in ("ssm_scan", "ssm_step", "ssm_scan_vjp"):
        m, n, p = S.ssm_dims(_ssm(x))
        if kind == "ssm_step":
            b = x["h"].shape[0] if x["h"].ndim == 2 else None
            if x["h"].shape != (b, n) or x["u"].shape != (b, m):
                raise ValueError(f"h {x['h'].shape} and u {x['u'].shape} must be (batch, {n}) "
                                 f"and (batch, {m})")
            return
        u = x["u"]
        if u.ndim != 3 or u.shape[2] != m or u.shape[1] < 1:
            raise ValueError(f"u has shape {u.shape}, expected (batch, T, {m})")
        b, T = u.shape[:2]
        want = {"h0": (b, n), "gy": (b, T, p), "gh": (b, n)}
        for k in ("h0", "gy", "gh") if kind == "ssm_scan_vjp" else ("h0",):
            if x[k].shape != want[k]:
                raise ValueError(f"{k} has shape {x[k].shape}, expected {want[k]}")
    elif kind == "ssm_kernel":
        A, B, C = x["A"], x["B"], x["C"]
        if A.ndim != 2 or B.ndim != 2 or C.ndim != 2 or A.shape != (B.shape[0],) * 2 \
                or C.shape[1] != A.shape[0]:
            raise ValueError(f"A {A.shape}, B {B.shape}, C {C.shape} must be (n, n), (n, m), "
                             f"(p, n)")
        length = attrs.get("length")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"attrs.length must be a positive int, got {length!r}")
    elif kind == "discretize":
        A, B, dt = x["A"], x["B"], x["dt"]
        if A.ndim != 2 or A.shape[0] != A.shape[1] or B.ndim != 2 or B.shape[0] != A.shape[0] \
                or dt.shape != ():
            raise ValueError(f"A {A.shape}, B {B.shape}, dt {dt.shape} must be (n, n), (n, m), ()")
        if attrs.get("method") not in ("zoh", "bilinear"):
            raise ValueError(f"attrs.method must be 'zoh' or 'bilinear', "
                             f"got {attrs.get('method')!r}")
    elif kind == "policy":
        A, obs = x["params.ssm.A"], x["obs"]
        if A.ndim != 2 or A.shape[0] != A.shape[1] or obs.ndim != 3:
            raise ValueError(f"params.ssm.A {A.shape} must be square and obs {obs.shape} "
                             f"(N, T, obs_dim)")


def load_vectors(vectors_dir, cases=None):
    """The validated vectors: ``{"manifest": ..., "dtype": ..., "cases": {name: {"name", "kind",
    "attrs", "inputs", "outputs"}}}``; :class:`VectorsError` on anything unusable."""
    manifest = _read_manifest(vectors_dir)
    entries = {c["name"]: c for c in manifest["cases"]}
    try:
        names = _select(cases, entries, "cases")
    except ValueError as e:
        raise VectorsError(str(e)) from None
    return {"manifest": manifest, "dtype": manifest["dtype"],
            "cases": {n: _load_case_arrays(vectors_dir, entries[n]) for n in names}}


def load_case(vectors_dir, name):
    """``(inputs, expected_outputs, attrs)`` of one case, as dicts of arrays (inputs as stored:
    float64, rounded to the manifest's dtype)."""
    case = load_vectors(vectors_dir, [name])["cases"][name]
    return case["inputs"], case["outputs"], case["attrs"]


def _load_results(results_dir, case):
    path = os.path.join(results_dir, case["name"] + ".npz")
    arrays = read_npz(path, what=f"results of case {case['name']}:")
    out = {}
    for k, want in case["outputs"].items():
        if k not in arrays:
            raise VectorsError(f"results of case {case['name']}: {path} lacks output {k!r} "
                               f"(expected {sorted(case['outputs'])})")
        out[k] = _as_result(arrays[k], want.shape, f"results of case {case['name']}: output {k!r}")
    return out


def _as_result(a, shape, where):
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise VectorsError(f"{where} has dtype {a.dtype}, expected a real number type "
                           f"(store bfloat16 results as float32)")
    if a.shape != tuple(shape):
        raise VectorsError(f"{where} has shape {a.shape}, expected {tuple(shape)}")
    return a.astype(np.float64)
