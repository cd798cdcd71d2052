"""The ``ssmref`` command line: ``python -m ssmref SUBCOMMAND`` or ``ssmref SUBCOMMAND``.

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
- ``plot``: redraw the pictures of a training run (:mod:`ssmref.metarl.plots`).

``--help`` of every subcommand shows each option's default.  Ctrl-C ends a command with exit
status 130 and one line (``train`` first saves its checkpoint: :mod:`ssmref.metarl.interrupt`).
"""

import argparse
import os
import sys

from ssmref import __version__


def _selftest(args):
    from ssmref.delta.selftest import CASES as DELTA_CASES
    from ssmref.selective.selftest import CASES as SELECTIVE_CASES
    from ssmref.ssm.selftest import SSM_CASES, run_cases
    from ssmref.structured.selftest import CASES as STRUCTURED_CASES
    return run_cases(SSM_CASES + STRUCTURED_CASES + SELECTIVE_CASES + DELTA_CASES)


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line on stderr and exit status 2, as every other
    refusal of the command line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


DESCRIPTION = ("ssmref: the float64 reference for state space models, MAML meta-learning and "
               "test-time adaptation. Each subcommand has its own --help.")


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default: ``(default: X)`` is added to an option's help
    unless it already says its default or has none to say (``None``, a flag's ``False``)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) \
                or not action.option_strings:
            return text
        default = action.default
        if isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
        return f"{text} (default: {default})".replace("%", "%%")


def build_parser(prog="python -m ssmref"):
    parser = _OneLineParser(prog=prog, description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"ssmref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def add(name, text):
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    from ssmref.metarl import train
    p = add("train", "meta-train with second-order MAML (default: navigation2d)")
    train.add_train_arguments(p)
    p.set_defaults(func=train.run_train)
    p = add("evaluate", "evaluate a training run after 0..3 inner steps")
    train.add_evaluate_arguments(p)
    p.set_defaults(func=train.run_evaluate)
    from ssmref import crosscheck
    p = add("vectors", "write the cross-check golden vectors to OUT_DIR")
    crosscheck.add_vectors_arguments(p)
    p.set_defaults(func=crosscheck.run_vectors)
    p = add("check", "check RESULTS_DIR against VECTORS_DIR (exit 0/1/2)")
    crosscheck.add_check_arguments(p)
    p.set_defaults(func=crosscheck.run_check)
    p = add("selftest", "run the self-tests; exit 0 iff all pass")
    p.set_defaults(func=_selftest)
    p = add("adapt", "test-time adaptation: SSM under shifted dynamics, or --benchmark two-moons")
    from ssmref.experiments import tta_shift
    tta_shift.add_arguments(p)
    p.set_defaults(func=tta_shift.run_from_args)
    from ssmref.metarl import plots
    p = add("plot", "redraw the pictures of a training run from its directory")
    plots.add_plot_arguments(p)
    p.set_defaults(func=plots.run_plot)
    return parser


def main(argv=None, prog="python -m ssmref"):
    """Run the subcommand of ``argv`` (default ``sys.argv[1:]``); returns its exit status (130
    after Ctrl-C, with one line on stderr)."""
    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def console():
    """The ``ssmref`` console command (``setup.cfg``'s entry point)."""
    sys.exit(main(prog=os.path.basename(sys.argv[0]) or "ssmref"))
