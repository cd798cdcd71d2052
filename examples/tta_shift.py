"""Test-time adaptation of an SSM sequence classifier under shifted dynamics.

Trains a small SSM classifier (a filter bank with energy features,
``ssmref.experiments.tta_shift``) to tell four stochastic damped oscillators apart, then evaluates
it on streams whose dynamics are shifted (more damping, observation noise, or both), with no
adaptation, test-batch normalisation, Tent and EATA (``ssmref.adaptation``).  Prints accuracy
tables, mean ± std over seeds.

    python examples/tta_shift.py                 # the numbers in docs/adaptation.md (~40 s)
    python examples/tta_shift.py --seeds 0 1 2   # fewer seeds
    python examples/tta_shift.py --json out.json # also write the full result
    python examples/tta_shift.py --smoke         # tiny sizes, under a second (used by the tests)
"""

import sys

from ssmref.experiments.tta_shift import main

if __name__ == "__main__":
    sys.exit(main())
