"""Selective state space models (Mamba, Mamba-2) as a float64 reference for GPU kernels.

Same argument names, shapes, layouts and defaults as mamba_ssm's PyTorch reference functions, as
pure NumPy/autograd functions (nothing is modified in place), differentiable to any order w.r.t.
every float argument:

- :func:`selective_scan`          Mamba's S6 scan (``selective_scan_fn``)            -- :mod:`.scan`
- :func:`selective_state_update`  one decoding step (``selective_state_update``)    -- :mod:`.scan`
- :func:`ssd`                     Mamba-2's SSD (``mamba_chunk_scan_combined``)       -- :mod:`.ssd`
- :func:`mamba3_siso`             Mamba-3 SISO (``mamba3_siso_combined``)             -- :mod:`.mamba3`
- :func:`mamba3_siso_step`        its decoding step (``mamba3_siso_step``)            -- :mod:`.mamba3`

Building blocks others may reuse: :func:`.scan.selective_core` (the unchecked recurrence of both
scan functions), :func:`.chunked.ssd_chunked` and :func:`.ssd.ssd_recurrence` (the SSD forms),
:func:`.functional.diagonal_scan` (recurrence / associative scan), :mod:`.naive` and
:mod:`.mamba3_loop` (the definitions as taped loops, with their arithmetic passed in: exact, or
rounding to a dtype for the cross-check kit) and :func:`.lti.time_invariant_ssm` (the dense system
of the time-invariant case).
Equations, conventions and how they differ from mamba_ssm and JAX ports: ``docs/selective.md``
(Mamba-3: ``docs/mamba3.md``).
"""

from ssmref.selective.mamba3 import mamba3_siso, mamba3_siso_step
from ssmref.selective.scan import selective_scan, selective_state_update
from ssmref.selective.ssd import ssd

__all__ = ["selective_scan", "selective_state_update", "ssd", "mamba3_siso", "mamba3_siso_step"]
