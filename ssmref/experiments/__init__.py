"""Experiments: measurements made with ssmref's public API, not part of the library.

They import ``ssmref`` as a user would; the library never imports them (only the command line
does, for ``python -m ssmref adapt``).  Their numbers are reported in ``docs/adaptation.md``.

- :mod:`ssmref.experiments.tta_shift`     test-time adaptation (none / norm / tent / eata / shot /
  sar / cotta / ttt++'s alignment / t3a) of an SSM sequence classifier under shifted dynamics;
  ``python -m ssmref adapt``, ``examples/tta_shift.py``
- :mod:`ssmref.experiments.two_moons`     TTT++'s synthetic two-moons table reproduced with NumPy;
  ``python -m ssmref adapt --benchmark two-moons``
- :mod:`ssmref.experiments.action_scale`  adapting a meta-trained navigation policy whose actions
  are rescaled at test time (MAML step vs. the guarded adapter); ``examples/nav_action_scale.py``
"""
