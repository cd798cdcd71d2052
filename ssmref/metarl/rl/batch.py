"""A batch of padded episodes: the data layout every policy-gradient function reads, and its checks.

A batch holds ``N`` episodes padded to ``T`` steps:

- ``rewards``, ``values``, ``log_probs``, ``advantages``: shape ``(N, T)``;
- ``obs``: shape ``(N, T, obs_dim)``;
- ``mask``: shape ``(N, T)``, 1.0 where the step happened and 0.0 after the episode ended.  Each row
  is ones then zeros (a prefix of valid steps, possibly empty, possibly the whole row); anything
  else is a ``ValueError``.  ``mask`` is data: it is never differentiated.

Entries of any input at masked steps are *ignored*, even when they are NaN or infinite: every
function selects with ``where(mask, x, 0)`` (:func:`masked`) before doing arithmetic, and returns
0.0 at masked steps.

The checks run once, in the public functions of :mod:`ssmref.metarl.rl`; the math they call (and
that the trainers call on their own rollouts) assumes a valid float64 mask.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_array


def masked(x, m):
    """``x`` where the step is valid, 0.0 elsewhere (also replaces NaN/inf padding)."""
    if np.ndim(x) == 3:
        return np.where(m[:, :, None] > 0, x, 0.0)
    return np.where(m > 0, x, 0.0)


def check_mask(mask):
    """``mask`` as a float64 ndarray of shape (N, T): entries 0/1, each row ones then zeros."""
    m = onp.asarray(getval(mask))
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (N, T), got shape {m.shape}")
    if m.dtype == bool:
        m = m.astype(onp.float64)
    if not onp.all((m == 0.0) | (m == 1.0)):
        raise ValueError("mask entries must be 0.0 or 1.0")
    if m.shape[1] > 1 and onp.any(m[:, 1:] > m[:, :-1]):
        raise ValueError("mask rows must be ones then zeros (an episode cannot restart)")
    return m.astype(onp.float64)


def check_like_mask(name, x, m, trailing=()):
    """``x`` must have shape ``mask.shape + trailing``, the error naming both shapes, and follow
    :func:`ssmref.checks.check_array` (numeric, not bool), finite at the valid steps (padding may
    hold anything: :func:`masked` replaces it)."""
    want = m.shape + tuple(trailing)
    got = tuple(np.shape(x))
    if len(got) != len(want) or got[:2] != want[:2] or (trailing and got[2:] != want[2:]):
        raise ValueError(f"{name} has shape {got} but mask has shape {m.shape}; "
                         f"{name} must have shape {'(N, T)' if not trailing else '(N, T, ...)'} "
                         f"matching mask")
    check_array(name, x, finite=m > 0)


def check_discount(name, x):
    """``x`` as a float in ``[0, 1]`` (a discount ``gamma`` or a GAE ``lam``)."""
    if isinstance(x, bool) or not onp.isscalar(x) or not onp.isfinite(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {x!r}")
    return float(x)


def check_valid_steps(m, where):
    """``ValueError`` if ``mask`` has no valid step (a mean over valid steps would be 0 / 0)."""
    if float(onp.sum(m)) == 0.0:
        raise ValueError(f"{where}: mask has no valid step")
