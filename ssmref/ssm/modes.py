"""The three modes by name, and the state sequence.

    MODES = {"scan": ssm_scan, "convolve": ssm_convolve, "parallel": ssm_parallel_scan}

All three compute the same ``(y, h_last)`` (tested to 1e-10 relative for any ``T``); they differ in
cost and in how their rounding errors grow (``docs/ssm.md``).
"""

import numpy as onp
import autograd.numpy as np

from ssmref.checks import check_choice
from ssmref.ssm.convolution import ssm_convolve
from ssmref.ssm.parallel import ssm_parallel_scan
from ssmref.ssm.recurrent import ssm_scan

MODES = {"scan": ssm_scan, "convolve": ssm_convolve, "parallel": ssm_parallel_scan}


def run_ssm(params, u, h0=None, mode="scan"):
    """Dispatch to one of :data:`MODES` (``"scan"``, ``"convolve"``, ``"parallel"``)."""
    check_choice("mode", mode, tuple(MODES))
    return MODES[mode](params, u, h0)


# The states are the outputs of the same system with C = I and D = 0.
def ssm_states(params, u, h0=None, mode="scan"):
    """The state sequence ``h_t`` of ``h_t = A h_{t-1} + B u_t``: ``u (..., T, m) -> (..., T, n)``.

    Only ``params["A"]`` and ``params["B"]`` are read.
    """
    n, m = np.shape(params["B"])
    return run_ssm({"A": params["A"], "B": params["B"], "C": onp.eye(n), "D": onp.zeros((n, m))},
                   u, h0, mode)[0]
