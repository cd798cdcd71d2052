"""Measured errors on the delta rule cases of the cross-check kit, per dtype, against the table's
tolerances: the table of docs/delta.md ("Measured errors").

    PYTHONPATH=. python benchmarks/delta_kit_errors.py [--cases NAME ...]

For each dtype (float32, float16, bfloat16) the vectors are written with that dtype (inputs
rounded to it) and measured, as ``err_over_tol`` of the table mode (worst output; ≤ 1 passes):

- ``naive``: every operation in the dtype (``ssmref.crosscheck.naive_outputs``: the plain
  recurrence, reductions accumulated in float32 for float16 / bfloat16, the reverse pass rounded);
- ``f32 math``: float32 arithmetic on the dtype's inputs, the outputs rounded to the dtype (a
  kernel that computes in float32 and reads / writes float16 or bfloat16 tensors, as fla's do);
- ``×0.7`` / ``×1.3``: the expected outputs scaled, 30 % wrong: the smallest ``err_over_tol`` of
  the two over every output, which must be above 1 (the output fails) for every case and dtype.
"""

import argparse
import tempfile

import numpy as onp

from ssmref import crosscheck as X
from ssmref.crosscheck.families import delta
from ssmref.crosscheck.precision import round_to_dtype


def measure(cases, dtype):
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        X.write_vectors(d, dtype=dtype, cases=cases)
        for name, case in X.load_vectors(d)["cases"].items():
            kind, x, attrs = case["kind"], case["inputs"], case["attrs"]
            naive = X.naive_outputs(kind, x, attrs, dtype)
            f32 = {k: round_to_dtype(v, dtype)
                   for k, v in X.naive_outputs(kind, x, attrs, "float32").items()}
            wrong = min(o["err_over_tol"] for s in (0.7, 1.3) for o in X.report_case(
                case, {k: s * v for k, v in case["outputs"].items()}, dtype)["outputs"])
            rows[name] = (X.effective_length(kind, x, attrs),
                          X.report_case(case, naive, dtype)["err_over_tol"],
                          X.report_case(case, f32, dtype)["err_over_tol"], wrong)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", default=[c.name for c in delta.CASES])
    a = p.parse_args(argv)
    results = {dt: measure(a.cases, dt) for dt in ("float32", "float16", "bfloat16")}
    print("| case | L | f32 naive | f16 naive | f16 f32-math | bf16 naive | bf16 f32-math "
          "| ×0.7 / ×1.3 (f32, f16, bf16) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    worst_wrong = onp.inf
    for name in a.cases:
        L = results["float32"][name][0]
        r32, r16, rbf = (results[dt][name] for dt in ("float32", "float16", "bfloat16"))
        worst_wrong = min(worst_wrong, r32[3], r16[3], rbf[3])
        print(f"| {name} | {L:.0f} | {r32[1]:.3f} | {r16[1]:.2f} | {r16[2]:.3f} | {rbf[1]:.2f} | "
              f"{rbf[2]:.3f} | {r32[3]:.0f}, {r16[3]:.1f}, {rbf[3]:.2f} |")
    print(f"smallest err_over_tol of a 30 % wrong result: {worst_wrong:.2f}")


if __name__ == "__main__":
    main()
