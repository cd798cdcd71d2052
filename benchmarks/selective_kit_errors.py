"""Measured errors of correct implementations on the selective cases of the cross-check kit, per
dtype, against the table's tolerances: the table of docs/selective.md ("Measured errors").

    PYTHONPATH=. python benchmarks/selective_kit_errors.py [--cases NAME ...] [--lengths]
    PYTHONPATH=. python benchmarks/selective_kit_errors.py --family mamba3      (docs/mamba3.md)

For each dtype (float32, float16, bfloat16) the vectors are written with that dtype (inputs
rounded to it) and three correct implementations are measured, as normwise errors
``max |x − y| / max |y|`` (the worst value output / the worst gradient output):

- ``naive``: every operation in the dtype (``ssmref.crosscheck.naive_outputs``: the plain
  recurrence, products accumulated in float32 for float16 / bfloat16, the reverse pass rounded);
- ``f32 math``: float32 arithmetic on the dtype's inputs, the outputs rounded to the dtype (a
  kernel that computes in float32 and reads / writes float16 or bfloat16 tensors, as Mamba's do);
- ``torch``: examples/torch_port_selective.py (``--family mamba3``: torch_port_mamba3.py) in
  float32 (float32 column only; skipped without torch).

``tol`` is the table's absolute part ``atol · g(L)`` (values / gradients).  ``--lengths`` prints
instead the effective length of each case under three rules: the largest one-step decay
``1 / (1 − max a)``, the geometric mean decay per channel, and the kit's ``max_t M_t``.
"""

import argparse
import importlib.util
import os
import tempfile

import numpy as onp

from ssmref import crosscheck as X
from ssmref.crosscheck.families import mamba3, selective

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def normwise(out, want, kind):
    """``(worst value error, worst gradient error)``, normwise relative (None where absent)."""
    worst = {"value": None, "grad": None}
    for k, y in want.items():
        e = float(onp.max(onp.abs(onp.asarray(out[k]) - y)) / max(onp.max(onp.abs(y)), 1e-300))
        cls = X.output_class(kind, k)
        worst[cls] = e if worst[cls] is None else max(worst[cls], e)
    return worst["value"], worst["grad"]


def fmt(pair):
    return " / ".join(f"{v:.1e}" for v in pair if v is not None)


FAMILIES = {"selective": (selective, "torch_port_selective.py"),
            "mamba3": (mamba3, "torch_port_mamba3.py")}


def torch_results(vec_dir, names, port_file="torch_port_selective.py"):
    try:
        import torch
    except ImportError:
        return None
    spec = importlib.util.spec_from_file_location("port", os.path.join(ROOT, "examples", port_file))
    port = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(port)
    torch.set_num_threads(1)
    res = tempfile.mkdtemp()
    port.run(vec_dir, res, dtype="float32", cases=names)
    out = {}
    for n in names:
        with onp.load(os.path.join(res, n + ".npz")) as z:
            out[n] = {k: z[k] for k in z.files}
    return out


def lengths(names):
    print("| case | T | 1 / (1 − max a) | mean decay | max_t M_t (the kit) |")
    print("| --- | --- | --- | --- | --- |")
    for n in names:
        inputs, _, attrs = X.build_case(n)
        kind = X.CASES[n].kind
        if kind.startswith("ssd"):
            dt = inputs["dt"] + inputs["dt_bias"]
            dt = onp.clip(onp.logaddexp(0, dt), *selective.N.limit_of(attrs))
            log_a, T = onp.moveaxis(dt, 1, 0) * inputs["A"], dt.shape[1]          # (L, b, h)
        elif kind in ("selective_scan", "selective_scan_vjp"):
            dt = inputs["delta"] + (inputs["delta_bias"][:, None] if "delta_bias" in inputs else 0)
            dt = onp.logaddexp(0, dt) if attrs["delta_softplus"] else dt
            log_a, T = onp.moveaxis(dt, 2, 0)[..., None] * onp.real(inputs["A"]), dt.shape[2]
        elif kind == "selective_decode":
            dt = onp.logaddexp(0, inputs["dt"] + inputs["dt_bias"])
            log_a, T = dt[..., None] * inputs["A"], dt.shape[0]
        else:
            continue
        with onp.errstate(divide="ignore"):
            by_max = min(T, 1 / (1 - onp.exp(onp.max(log_a))))
            by_mean = min(T, onp.max(1 / (1 - onp.exp(onp.mean(log_a, axis=0)))))
        print(f"| {n} | {T} | {by_max:.0f} | {by_mean:.0f} | "
              f"{X.effective_length(kind, inputs, attrs):.0f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="selective")
    ap.add_argument("--cases", nargs="+")
    ap.add_argument("--lengths", action="store_true")
    a = ap.parse_args(argv)
    family, port_file = FAMILIES[a.family]
    a.cases = a.cases or [c.name for c in family.CASES]
    if a.lengths:
        return lengths(a.cases)
    rows = {n: [] for n in a.cases}
    for dtype in ("float32", "float16", "bfloat16"):
        vec = tempfile.mkdtemp()
        X.write_vectors(vec, dtype=dtype, cases=a.cases)
        cases = X.load_vectors(vec)["cases"]
        peers = torch_results(vec, a.cases, port_file) if dtype == "float32" else None
        for n, c in cases.items():
            kind, want = c["kind"], c["outputs"]
            L = X.effective_length(kind, c["inputs"], c["attrs"])
            if dtype == "float32":
                rows[n] += [f"{L:.0f}", f"{X.length_factor(L):.2f}"]
            naive = X.naive_outputs(kind, c["inputs"], c["attrs"], dtype)
            rows[n].append(fmt(normwise(naive, want, kind)))
            if dtype == "float32":
                rows[n].append(fmt(normwise(peers[n], want, kind)) if peers else "-")
            else:
                f32 = X.naive_outputs(kind, c["inputs"], c["attrs"], "float32")
                io = {k: X.round_to_dtype(v, dtype) for k, v in f32.items()}
                rows[n].append(fmt(normwise(io, want, kind)))
            has_grads = any(X.output_class(kind, k) == "grad" for k in want)
            tols = [X.tolerance(dtype, cls, L)[1] for cls in ("value", "grad")[:1 + has_grads]]
            rows[n].append(" / ".join(f"{t:.1e}" for t in tols))
    print("| case | L | g(L) | f32 naive | f32 torch | f32 tol | f16 naive | f16 f32-math | "
          "f16 tol | bf16 naive | bf16 f32-math | bf16 tol |")
    print("|" + " --- |" * 12)
    for n, r in rows.items():
        print(f"| {n} | " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
