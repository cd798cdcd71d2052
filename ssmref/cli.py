"""The ``ssmref`` command line: ``python -m ssmref SUBCOMMAND``.

Subcommands:

- ``selftest``: every module's self-test cases (see :mod:`ssmref.selftest`); exit 0 iff all pass.
"""

import argparse

from ssmref import __version__


def _selftest(args):
    from ssmref.selftest import SSM_CASES, run_cases
    return run_cases(SSM_CASES)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m ssmref", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ssmref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser("selftest", help="run the self-tests; exit 0 iff all pass")
    p.set_defaults(func=_selftest)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)
