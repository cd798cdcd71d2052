"""The linear time-invariant state space model (output reads the NEW state)::

    h_t = A h_{t-1} + B u_t          h_{-1} = h0 (zeros by default)
    y_t = C h_t + D u_t

``A: (n, n)``, ``B: (n, m)``, ``C: (p, n)``, ``D: (p, m)``; inputs ``u_t: (m,)``, states ``h_t: (n,)``,
outputs ``y_t: (p,)``.  Three equivalent modes compute the same outputs:

- :mod:`~ssmref.ssm.recurrent` ``ssm_step``, ``ssm_scan``: the recurrence, the definition;
- :mod:`~ssmref.ssm.convolution` ``ssm_kernel``, ``ssm_convolve``: ``y = K * u + D u`` with
  ``K_k = C A^k B``, by FFT;
- :mod:`~ssmref.ssm.parallel` ``ssm_parallel_scan``: an associative scan of the affine maps
  ``h -> A h + B u_t`` in O(log T) rounds.

Around them: :mod:`~ssmref.ssm.dims` (shape checks, once per public call),
:mod:`~ssmref.ssm.discretization` (ZOH and bilinear, the ``expm`` primitive),
:mod:`~ssmref.ssm.init` (random and HiPPO-LegS parameters), :mod:`~ssmref.ssm.modes` (the modes
by name, the state sequence), :mod:`~ssmref.ssm.model` (``StateSpaceModel``, the stateful shell)
and :mod:`~ssmref.ssm.selftest` (``python -m ssmref.ssm``).

The other common convention reads the OLD state, ``y_t = C' h_{t-1} + D' u_t``; it describes the
same input-output map when ``C' = C A`` and ``D' = C B + D`` (``docs/ssm.md``).

References: Gu, Goel, Ré, "Efficiently Modeling Long Sequences with Structured State Spaces" (S4,
ICLR 2022); Gu et al., "HiPPO: Recurrent Memory with Optimal Polynomial Projections" (NeurIPS 2020);
Blelloch, "Prefix Sums and Their Applications" (1990); Smith et al., "Simplified State Space Layers
for Sequence Modeling" (S5, ICLR 2023) for the parallel scan of linear recurrences.
"""

from ssmref.recurrence import associative_scan
from ssmref.ssm.convolution import causal_fft_conv, ssm_convolve, ssm_kernel
from ssmref.ssm.dims import PARAM_NAMES, ssm_dims
from ssmref.ssm.discretization import discretize, expm, undiscretize
from ssmref.ssm.init import hippo_legs, init_ssm, spectral_radius
from ssmref.ssm.model import StateSpaceModel
from ssmref.ssm.modes import MODES, run_ssm, ssm_states
from ssmref.ssm.parallel import affine_combine, ssm_parallel_scan
from ssmref.ssm.recurrent import ssm_scan, ssm_step

__all__ = ["PARAM_NAMES", "MODES", "StateSpaceModel", "affine_combine", "associative_scan",
           "causal_fft_conv", "discretize", "expm", "hippo_legs", "init_ssm", "run_ssm",
           "spectral_radius", "ssm_convolve", "ssm_dims", "ssm_kernel", "ssm_parallel_scan",
           "ssm_scan", "ssm_states", "ssm_step", "undiscretize"]
