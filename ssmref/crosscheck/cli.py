"""The command line: ``vectors`` and ``check`` (registered in :mod:`ssmref.cli`), and
:func:`main` for ``python -m ssmref.crosscheck``."""

import argparse
import json
import math
import sys
import time

from ssmref.crosscheck.checker import check
from ssmref.crosscheck.files import one_line
from ssmref.crosscheck.precision import DEFAULT_K, DTYPES, POWER_LIMITS
from ssmref.crosscheck.registry import CASES, write_vectors
from ssmref.crosscheck.report import format_report
from ssmref.crosscheck.vectorset import inside_any
from ssmref.storage import atomic_write


def add_vectors_arguments(parser):
    """Arguments of ``python -m ssmref vectors OUT_DIR [--dtype D] [--cases NAME ...]
    [--certify]``."""
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write manifest.json "
                        "and one .npz per case to (created if needed)")
    parser.add_argument("--dtype", default="float64", choices=DTYPES,
                        help="round every float input to this dtype first (default float64)")
    parser.add_argument("--cases", nargs="+", metavar="NAME", default=None,
                        help=f"write only these cases (default all: {', '.join(CASES)})")
    parser.add_argument("--certify", action="store_true",
                        help="also record each SSM case's ref_error: the expected outputs' error "
                             "against a 40-digit recomputation (needs mpmath; about two minutes "
                             "for every case)")
    return parser


def run_vectors(args):
    """Write the vectors; exit status 0, or 2 with a one-line message on stderr."""
    t0 = time.perf_counter()
    try:
        manifest = write_vectors(args.out_dir, args.dtype, args.cases,
                                 certify=getattr(args, "certify", False))
    except (ValueError, OSError, ImportError) as e:
        print(f"ssmref vectors: error: {one_line(e)}", file=sys.stderr)
        return 2
    written = len(args.cases) if args.cases else len(manifest["cases"])
    print(f"wrote {written} cases ({args.dtype}) to {args.out_dir} in "
          f"{time.perf_counter() - t0:.1f} s: a set of {len(manifest['cases'])} cases, set id "
          f"{manifest['set_id']}")
    return 0


def add_check_arguments(parser):
    """Arguments of ``python -m ssmref check VECTORS_DIR RESULTS_DIR [...]``."""
    parser.add_argument("vectors_dir", metavar="VECTORS_DIR", help="written by 'vectors'")
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="one <case>.npz per case: the outputs of the code under test")
    parser.add_argument("--dtype", default=None, choices=DTYPES,
                        help="the candidate's precision, which picks the tolerances "
                             "(default: the dtype the vectors were written for)")
    parser.add_argument("--mode", default="table", choices=("table", "baseline"),
                        help="table: per-dtype tolerances grown with sequence length; baseline: "
                             "error <= k x the larger error of the naive step loop and the naive "
                             "log-depth form in dtype + atol")
    parser.add_argument("--k", type=float, default=DEFAULT_K,
                        help=f"baseline mode's factor (default {DEFAULT_K:g})")
    parser.add_argument("--cases", nargs="+", metavar="NAME", default=None,
                        help="check only these cases (default: every case in the manifest)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="check only the cases that have a results file (the others are "
                             "listed as skipped); by default a missing results file is an error")
    parser.add_argument("--rtol", type=float, default=None, help="replace the table's rtol (default: the table's)")
    parser.add_argument("--atol", type=float, default=None,
                        help="replace the table's atol, relative to each output's max |y| "
                             "(default: the table's)")
    parser.add_argument("--power-limit", type=float, default=None,
                        help="an output within a tolerance that cannot detect a relative error "
                             "of this size is inconclusive, not passed (exit 3; default: the "
                             "dtype's, " + ", ".join(f"{d} {v:g}" for d, v in POWER_LIMITS.items())
                             + ")")
    parser.add_argument("--verbose", action="store_true",
                        help="a table for every case (default: one line per passing case)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the report as JSON (not inside the vectors or "
                             "results directory; default: none)")
    return parser


def run_check(args):
    """Check; exit status 0 (all pass), 1 (some output out of tolerance or not finite), 2
    (unusable input: a one-line message on stderr, no traceback), or 3 (inconclusive: nothing
    failed, but some output's tolerance cannot detect a relative error of ``--power-limit``)."""
    try:
        for flag in ("rtol", "atol"):
            v = getattr(args, flag, None)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{flag} must be a finite number >= 0, got {v}")
        if getattr(args, "json", None):
            inside = inside_any(args.json, [args.vectors_dir, args.results_dir])
            if inside is not None:
                raise ValueError(f"--json {args.json} is inside {inside}, an input of the check; "
                                 f"write the report elsewhere")
        report = check(args.vectors_dir, args.results_dir, dtype=args.dtype, mode=args.mode,
                       k=args.k, cases=args.cases, rtol=getattr(args, "rtol", None),
                       atol=getattr(args, "atol", None),
                       skip_missing=getattr(args, "skip_missing", False),
                       power_limit=getattr(args, "power_limit", None))
        if getattr(args, "json", None):
            text = json.dumps(report, indent=2, sort_keys=True) + "\n"
            atomic_write(args.json, lambda f: f.write(text.encode("utf-8")))
    except (ValueError, OSError) as e:
        print(f"ssmref check: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(format_report(report, verbose=getattr(args, "verbose", False)))
    return 0 if report["passed"] else (3 if report["inconclusive"] else 1)


def main(argv=None):
    """``python -m ssmref.crosscheck vectors|check ...`` (the same as ``python -m ssmref``)."""
    parser = argparse.ArgumentParser(prog="python -m ssmref.crosscheck",
                                     description="The cross-check kit: golden vectors and the "
                                                 "checker.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    add_vectors_arguments(sub.add_parser("vectors", help="write the golden vectors"))
    add_check_arguments(sub.add_parser("check", help="check results against the vectors"))
    args = parser.parse_args(argv)
    return run_vectors(args) if args.command == "vectors" else run_check(args)
