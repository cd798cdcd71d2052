"""Minimal reproducer for mamba_ssm's maintainers: the Triton ``softplus`` loses relative accuracy
when its output is small.

mamba_ssm/ops/triton/softplus.py (2.3.2.post1), for triton >= 3::

    return tl.math.log(tl.math.exp(dt) + 1)

For ``dt`` well below 0, ``exp(dt) + 1`` rounds to a float32 near 1 and the ``log`` returns that
rounding error over a result of size ``exp(dt)``: relative errors of ``2^-24 / Δ``, about 1e-3 at
``Δ = softplus(dt) = 5e-5``.  Mamba-2 initialises ``Δ`` down to 1e-3 and long-memory heads go
lower; the error of ``Δ`` scales the decay ``exp(Δ A)`` of every step, so a float32 SSD with a
memory of a thousand steps fails ssmref's float32 tolerance by 2x (docs/kernels.md).  The fix,
measured here: ``log1p(e)`` for ``e = exp(dt)``, written ``log(u) * (e / (u - 1))`` with
``u = 1 + e`` (exact up to a few ulps: the rounding of ``u`` cancels), or
``libdevice.log1p(tl.exp(dt))`` on a GPU.

    python examples/kernels/mamba_softplus_repro.py     # on a GPU, or on a CPU (interpreter)
"""

import os
import sys

import numpy as np
import torch

if not torch.cuda.is_available():                 # no GPU: Triton's interpreter on the CPU
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness
    harness.install_shims()
    harness.import_mamba_ops()

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from mamba_ssm.ops.triton.softplus import softplus  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def softplus_log1p(dt):
    e = tl.exp(dt)
    u = 1.0 + e
    return tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))


@triton.jit
def _apply(fn: tl.constexpr, x_ptr, y_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(y_ptr + offs, fn(tl.load(x_ptr + offs)))


def relative_errors(fn, deltas):
    """``|fn(x) - softplus(x)| / softplus(x)`` in float32 at ``x = softplus⁻¹(deltas)``."""
    n = triton.next_power_of_2(len(deltas))
    x64 = np.log(np.expm1(np.resize(np.asarray(deltas, dtype=np.float64), n)))
    x = torch.tensor(x64, dtype=torch.float32, device=DEVICE)
    y = torch.empty_like(x)
    _apply[(1,)](fn, x, y, N=n)
    exact = np.log1p(np.exp(x.double().cpu().numpy()))          # of the float32 inputs
    return (np.abs(y.double().cpu().numpy() - exact) / exact)[:len(deltas)]


def main():
    deltas = np.geomspace(1e-5, 1e-1, 9)
    mamba, fixed = relative_errors(softplus, deltas), relative_errors(softplus_log1p, deltas)
    print(f"{'delta':>8} {'mamba softplus':>15} {'log1p form':>11}   (relative error, float32)")
    for d, a, b in zip(deltas, mamba, fixed):
        print(f"{d:8.1e} {a:15.1e} {b:11.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
