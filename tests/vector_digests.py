"""The SHA-256 of every golden-vector file and every recorded ``ref_error``, in a pinned arithmetic.

``tests/data/vector_digests.json`` holds what ``python -m ssmref vectors DIR`` (and with
``--certify``) writes: the set id, the SHA-256 of each case file and, for the certified set, every
``ref_error``.  ``tests/test_vector_digests.py`` regenerates the sets and compares, so a change of
one byte of one vector, or of one recorded error, fails.

Float64 results are bit-reproducible only in a fixed arithmetic, and the vectors' bytes depend on
the CPU: OpenBLAS picks its kernels by CPU (``OPENBLAS_CORETYPE``: Haswell, SkylakeX, Prescott
kernels give different bytes for the inputs built from eigendecompositions and for every output
through a matrix product) and NumPy dispatches ``exp``/``log`` and friends to AVX-512 code where the
CPU has it.  The number of BLAS threads (1 or 2) changes nothing.  So the sets are generated in a
subprocess pinned to what every x86-64 CPU with AVX2 and FMA computes: OpenBLAS's Haswell kernels
on one thread, and NumPy with its dispatched targets above AVX2 (AVX-512) disabled.  The digests
also depend on the versions of NumPy, SciPy (their bundled OpenBLAS), autograd and mpmath; they are
recorded in the file, and another environment is reported rather than compared.

Refresh (only from a tree whose vectors are known right; the certified set takes minutes)::

    python tests/vector_digests.py
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGESTS = os.path.join(ROOT, "tests", "data", "vector_digests.json")
PACKAGES = ("numpy", "scipy", "autograd", "mpmath")


def environment():
    """What the vectors' bytes depend on besides the code: the CPU family, the versions of the
    numerical packages and NumPy's BLAS."""
    import numpy as onp
    blas = onp.show_config(mode="dicts")["Build Dependencies"]["blas"]
    env = {"machine": platform.machine(), "blas": f"{blas.get('name')} {blas.get('version')}"}
    env.update({p: importlib.metadata.version(p) for p in PACKAGES})
    return env


def pinned_env():
    """``(environment variables, None)`` for the pinned arithmetic, or ``(None, reason)`` where
    this machine cannot compute it (not x86-64, no AVX2/FMA)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:                                                 # NumPy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"the pinned arithmetic is x86-64's; this machine is {platform.machine()}"
    if not (__cpu_features__.get("AVX2") and __cpu_features__.get("FMA3")):
        return None, "the pinned arithmetic needs AVX2 and FMA3, which this CPU lacks"
    above = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)
             and (f.startswith("AVX512") or f == "X86_V4")]
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("NPY_DISABLE_CPU_FEATURES", None)
    if above:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(above)
    return env, None


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def generate(out_dir, *, certify=False):
    """Write the float64 vector set into ``out_dir`` in the pinned arithmetic; return
    :func:`read_set` of it."""
    env, reason = pinned_env()
    if env is None:
        raise RuntimeError(reason)
    cmd = [sys.executable, "-m", "ssmref", "vectors", out_dir] + (["--certify"] if certify else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return read_set(out_dir, certify=certify)


def read_set(out_dir, *, certify=False):
    """``{"set_id", "files": {file: sha256}}`` of a vectors directory, the hashes computed here
    from the files' bytes (and with ``certify`` ``"ref_error": {case: {output: error}}`` of the
    certified cases)."""
    with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    out = {"set_id": manifest["set_id"],
           "files": {c["file"]: file_sha256(os.path.join(out_dir, c["file"])) for c in manifest["cases"]}}
    if certify:
        out["ref_error"] = {c["name"]: c["ref_error"] for c in manifest["cases"] if "ref_error" in c}
    return out


def differences(want, got):
    """Lines naming every file whose bytes differ, every case added or missing, every changed
    ``ref_error``; empty when ``got`` matches ``want``."""
    lines = []
    for name in sorted(set(want["files"]) | set(got["files"])):
        a, b = want["files"].get(name), got["files"].get(name)
        if a != b:
            lines.append(f"{name}: sha256 {a} recorded, {b} now")
    for case in sorted(set(want.get("ref_error", {})) | set(got.get("ref_error", {}))):
        a, b = want.get("ref_error", {}).get(case), got.get("ref_error", {}).get(case)
        if a != b:
            lines.append(f"{case}: ref_error {a} recorded, {b} now")
    if want["set_id"] != got["set_id"] and not lines:
        lines.append(f"set id {want['set_id']} recorded, {got['set_id']} now")
    return lines


PINNED = "OpenBLAS's Haswell kernels on one thread; NumPy's dispatch above AVX2 (AVX-512) disabled"


def record(default, certified):
    """The contents of :data:`DIGESTS` for a default set and a certified set (as :func:`read_set`
    gives them), both written in the pinned arithmetic."""
    if certified["files"] != default["files"]:
        raise ValueError("--certify changed the case files' bytes")
    return {"environment": environment(), "pinned": PINNED, "default": default,
            "certified": {"set_id": certified["set_id"], "ref_error": certified["ref_error"]}}


def write(rec):
    tmp_path = DIGESTS + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    os.replace(tmp_path, DIGESTS)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        default = generate(os.path.join(tmp, "default"))
        certified = generate(os.path.join(tmp, "certified"), certify=True)
    write(record(default, certified))
    print(f"wrote {DIGESTS}: {len(default['files'])} files, set id {default['set_id']}")


if __name__ == "__main__":
    main()
