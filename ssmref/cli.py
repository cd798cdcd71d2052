"""The ``ssmref`` command line: ``python -m ssmref SUBCOMMAND``.

Subcommands:

- ``train``: meta-train an SSM policy (or a sinusoid regressor) with second-order MAML and print
  the before/after-adaptation table (:mod:`ssmref.metarl.train`).
- ``evaluate``: returns (or MSE) of a trained run after 0..3 inner steps -> ``evaluation.json``.
- ``vectors``: write the cross-check golden vectors (:mod:`ssmref.crosscheck`).
- ``check``: check an implementation's results against the vectors (exit 0 / 1 / 2).
- ``selftest``: the self-test cases of every SSM (:mod:`ssmref.ssm.selftest`,
  :mod:`ssmref.structured.selftest`, :mod:`ssmref.selective.selftest`,
  :mod:`ssmref.delta.selftest`); exit 0 iff all pass.
- ``adapt``: test-time adaptation of an SSM classifier under shifted dynamics
  (:mod:`ssmref.experiments.tta_shift`; accuracy of every adaptation method over seeds), or with
  ``--benchmark two-moons`` TTT++'s synthetic table (:mod:`ssmref.experiments.two_moons`).
"""

import argparse

from ssmref import __version__


def _selftest(args):
    from ssmref.delta.selftest import CASES as DELTA_CASES
    from ssmref.selective.selftest import CASES as SELECTIVE_CASES
    from ssmref.ssm.selftest import SSM_CASES, run_cases
    from ssmref.structured.selftest import CASES as STRUCTURED_CASES
    return run_cases(SSM_CASES + STRUCTURED_CASES + SELECTIVE_CASES + DELTA_CASES)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m ssmref", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ssmref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    from ssmref.metarl import train
    p = sub.add_parser("train", help="meta-train with second-order MAML (default: navigation2d)")
    train.add_train_arguments(p)
    p.set_defaults(func=train.run_train)
    p = sub.add_parser("evaluate", help="evaluate a training run after 0..3 inner steps")
    train.add_evaluate_arguments(p)
    p.set_defaults(func=train.run_evaluate)
    from ssmref import crosscheck
    p = sub.add_parser("vectors", help="write the cross-check golden vectors to OUT_DIR")
    crosscheck.add_vectors_arguments(p)
    p.set_defaults(func=crosscheck.run_vectors)
    p = sub.add_parser("check", help="check RESULTS_DIR against VECTORS_DIR (exit 0/1/2)")
    crosscheck.add_check_arguments(p)
    p.set_defaults(func=crosscheck.run_check)
    p = sub.add_parser("selftest", help="run the self-tests; exit 0 iff all pass")
    p.set_defaults(func=_selftest)
    p = sub.add_parser("adapt", help="test-time adaptation: SSM under shifted dynamics, or "
                       "--benchmark two-moons")
    from ssmref.experiments import tta_shift
    tta_shift.add_arguments(p)
    p.set_defaults(func=tta_shift.run_from_args)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)
