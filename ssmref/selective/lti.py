"""The time-invariant special case of the selective scan, as a dense :mod:`ssmref.ssm` system.

With a step ``Δ_i`` constant in time and fixed ``B, C: (d, n)``, channel ``i`` of
:func:`ssmref.selective.selective_scan` is the linear SSM (output reads the new state)

    x_t = diag(exp(Δ_i A_i)) x_{t-1} + Δ_i B_i u_t,     y_t = C_i x_t + D_i u_t,

so the ``d`` channels together are one block-diagonal system with ``m = p = d`` and state size
``d·n``.  For complex ``A`` each complex state ``x = ξ + iη`` becomes a 2x2 real block: with
``exp(Δ A) = α + iβ``,

    [ξ; η]_t = [[α, -β], [β, α]] [ξ; η]_{t-1} + Δ u_t [Re B; Im B],   y_t = [2 Re C, -2 Im C] [ξ; η]_t

(``2·Re(C x)`` is the selective scan's complex output), state size ``2·d·n``.
"""

import numpy as onp
import scipy.linalg

from ssmref.selective import args


def time_invariant_ssm(delta, A, B, C, D=None):
    """Dense ``{"A", "B", "C", "D"}`` for :func:`ssmref.ssm.ssm_scan` equal to the selective scan
    with ``delta[b, i, t] = delta[i]``, fixed ``B, C (d, n)`` and no softplus/bias/gate.

    ``delta: (d,)``, ``A: (d, n)`` real or complex, ``B, C: (d, n)``, ``D: (d,)`` or ``None``.
    Plain NumPy (not differentiated): a cross-check of the selective scan, not a model.
    State order: ``i*n + j`` (real) or ``(i*n + j)*2 + {0: re, 1: im}`` (complex).
    """
    delta = args.array("delta", delta, (None,), ("dim",))
    d = delta.shape[0]
    A = args.array("A", A, (d, None), ("dim", "dstate"), complex_ok=True)
    n = A.shape[1]
    cA = onp.iscomplexobj(A)
    B, C = (args.array(nm, X, (d, n), ("dim", "dstate"), complex_ok=cA, note=" for real A")
            for nm, X in (("B", B), ("C", C)))
    D = onp.zeros(d) if D is None else args.array("D", D, (d,), ("dim",))
    decay = onp.exp(delta[:, None] * A)                            # (d, n)
    drive = delta[:, None] * B                                     # (d, n)
    eye = onp.eye(d)[:, None, :]                                   # (d, 1, d): channel selector
    if not cA:
        A_d = onp.diag(decay.reshape(-1))                          # (dn, dn)
        B_d = (drive[:, :, None] * eye).reshape(d * n, d)          # (dn, d)
        C_d = onp.einsum("ij,ik->kij", C, onp.eye(d)).reshape(d, d * n)   # (d, dn)
        return {"A": A_d, "B": B_d, "C": C_d, "D": onp.diag(D)}
    al, be = decay.real, decay.imag
    blocks = onp.stack([onp.stack([al, -be], -1), onp.stack([be, al], -1)], -2)   # (d, n, 2, 2)
    A_d = scipy.linalg.block_diag(*blocks.reshape(-1, 2, 2))      # (2dn, 2dn)
    Bri = onp.stack([drive.real, drive.imag], -1)                  # (d, n, 2)
    B_d = (Bri[:, :, :, None] * eye[:, :, None, :]).reshape(2 * d * n, d)          # (2dn, d)
    Cri = onp.stack([2 * C.real, -2 * C.imag], -1)                 # (d, n, 2)
    C_d = onp.einsum("ijr,ik->kijr", Cri, onp.eye(d)).reshape(d, 2 * d * n)       # (d, 2dn)
    return {"A": A_d, "B": B_d, "C": C_d, "D": onp.diag(D)}
