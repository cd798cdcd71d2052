"""Structured time-invariant SSMs: complex diagonal (S4D, S5) and diagonal-plus-low-rank (S4).

Every function is a float64/complex128 reference differentiable with ``autograd``, proven equal
(in ``tests/test_structured*.py``) to the dense real SSM of ``ssmref.ssm`` on the 2x2-block real
embedding, and certified by its measured error against a 40-digit recomputation.

Modules (equations in each module's docstring; the spec is ``docs/structured.md``):

- :mod:`~ssmref.structured.accurate`       ``Λ̄``, ``B̄`` factors and ``Λ̄^k`` directly from ``(Λ, Δ)``
- :mod:`~ssmref.structured.diagonal`       ``diag_discretize``, ``diag_scan``, ``diag_parallel_scan``,
  ``diag_kernel``, ``diag_convolve``
- :mod:`~ssmref.structured.diagonal_loop`  the definition: plain loops with their arithmetic passed in
- :mod:`~ssmref.structured.bidirectional`  S5's bidirectional layer
- :mod:`~ssmref.structured.layouts`        S4D's per-channel layout, S4D's real parametrisation
- :mod:`~ssmref.structured.embed`          the equivalent real dense systems
- :mod:`~ssmref.structured.hippo`          HiPPO-LegS in NPLR / DPLR form, S4D-Lin / S4D-LegS
- :mod:`~ssmref.structured.dplr`           S4: bilinear DPLR recurrence and the Cauchy kernel
- :mod:`~ssmref.structured.init`           initial / random test parameters
- :mod:`~ssmref.structured.validate`       argument checks (``ValueError`` naming the argument)

The certification lives in the kit: :mod:`ssmref.crosscheck.families.structured_certify` (40-digit
recomputations, ``certify`` / ``reference``; mpmath, imported lazily) and
:mod:`ssmref.crosscheck.families.structured_bounds` (first-order rounding-error bounds where 1e-14
is not reachable).

Conventions: ``autograd.grad`` of a real loss w.r.t. a complex ``z`` is ``∂L/∂Re z − i ∂L/∂Im z``
(as ``jax.grad``; PyTorch's ``.grad`` is its conjugate); outputs read the NEW state
(``K[0] = s·Re(C B̄)``); ``output="re"`` or ``"2re"`` (conjugate-symmetric half) is always explicit.
"""

from ssmref.structured.bidirectional import bidirectional, bidirectional_kernels
from ssmref.structured.diagonal import (diag_convolve, diag_discretize, diag_kernel,
                                        diag_parallel_scan, diag_scan)
from ssmref.structured.dplr import (dplr_discretize, dplr_from_half, dplr_kernel, dplr_scan,
                                    dplr_truncate, dplr_untruncate)
from ssmref.structured.embed import complex_to_real_system, diag_to_dense, dplr_to_dense
from ssmref.structured.hippo import hippo_dplr, hippo_nplr, s4d_legs, s4d_lin
from ssmref.structured.init import init_diag, init_dplr
from ssmref.structured.layouts import from_real, s4d_kernel, s4d_to_diag

__all__ = [
    "bidirectional", "bidirectional_kernels",
    "diag_convolve", "diag_discretize", "diag_kernel", "diag_parallel_scan", "diag_scan",
    "dplr_discretize", "dplr_from_half", "dplr_kernel", "dplr_scan", "dplr_truncate", "dplr_untruncate",
    "complex_to_real_system", "diag_to_dense", "dplr_to_dense",
    "hippo_dplr", "hippo_nplr", "s4d_legs", "s4d_lin",
    "init_diag", "init_dplr",
    "from_real", "s4d_kernel", "s4d_to_diag",
]
