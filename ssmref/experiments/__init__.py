"""Experiments: measurements made with ssmref's public API, not part of the library.

They import ``ssmref`` as a user would; the library never imports them (only the command line
does, for ``python -m ssmref adapt``).  Their numbers are reported in ``docs/adaptation.md``.

- :mod:`ssmref.experiments.tta_shift`     test-time adaptation (none / norm / tent / eata) of an
  SSM sequence classifier under shifted dynamics; ``python -m ssmref adapt``,
  ``examples/tta_shift.py``
- :mod:`ssmref.experiments.action_scale`  adapting a meta-trained navigation policy whose actions
  are rescaled at test time (MAML step vs. the guarded adapter); ``examples/nav_action_scale.py``
"""
