"""The power of the checker's table for every case and dtype: which checks are conclusive.

    PYTHONPATH=. python benchmarks/crosscheck_power.py [--power-limit P] [--cases NAME ...]

For each case (its vectors written in float32), the effective length ``L``, the length factor
``g(L)``, the largest cancellation factor ``κ`` of its outputs, and per dtype the smallest relative
error the table detects on its weakest output (``detectable = rtol + atol g(L) κ``, doubled for
gradients): a check is conclusive when that is at most the power limit (by default the
dtype's, ``crosscheck.POWER_LIMITS``).  Prints a Markdown table
(``docs/crosscheck.md`` holds its output) and one line per dtype with the number of conclusive
cases.  It needs no results: the power depends on the dtype, the output's class, ``L`` and ``κ``.
"""

import argparse
import tempfile

from ssmref import crosscheck as X

DTYPES = ("float32", "float16", "bfloat16")


def power(case, dtype):
    """The largest ``detectable`` of a case's outputs in ``dtype`` (table mode)."""
    L = X.effective_length(case["kind"], case["inputs"], case["attrs"])
    kappas = X.condition(case["kind"], case["inputs"], case["attrs"])
    worst = 0.0
    for name in case["outputs"]:
        r, a = X.tolerance(dtype, X.output_class(case["kind"], name), L,
                           kappa=kappas.get(name, 1.0))
        worst = max(worst, X.detectable(r, a, 1.0))
    return L, max(kappas.values(), default=1.0), worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--power-limit", type=float, default=None,
                    help="one limit for every dtype (default: each dtype's POWER_LIMITS)")
    ap.add_argument("--cases", nargs="+", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        X.write_vectors(tmp + "/vec", "float32", cases=args.cases)
        cases = X.load_vectors(tmp + "/vec")["cases"]
    print("| case | L | g(L) | κ | " + " | ".join(f"{d} detects" for d in DTYPES) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in DTYPES) + " |")
    conclusive = {d: 0 for d in DTYPES}
    for name, case in cases.items():
        cells = []
        for dtype in DTYPES:
            L, kappa, worst = power(case, dtype)
            ok = worst <= (args.power_limit or X.POWER_LIMITS[dtype])
            conclusive[dtype] += ok
            cells.append(f"{worst:.1e}" + ("" if ok else " (inconclusive)"))
        print(f"| {name} | {L:.0f} | {X.length_factor(L):.2f} | {kappa:.3g} | "
              + " | ".join(cells) + " |")
    for dtype in DTYPES:
        print(f"{dtype}: {conclusive[dtype]} of {len(cases)} cases conclusive at a power limit "
              f"of {args.power_limit or X.POWER_LIMITS[dtype]:g}")


if __name__ == "__main__":
    main()
