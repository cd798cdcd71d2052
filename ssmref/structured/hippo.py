"""HiPPO-LegS in normal-plus-low-rank (NPLR) and diagonal-plus-low-rank (DPLR) form; S4D's inits.

HiPPO-LegS (``ssmref.ssm.hippo_legs``, S4's time-invariant matrix)::

    A_ij = -sqrt(2i+1) sqrt(2j+1)  (i > j),   -(i+1)  (i = j),   0  (i < j);     B_i = sqrt(2i+1)

With ``P_i = sqrt(i + 1/2)`` the matrix ``S = A + P P^T`` is normal: ``S = -I/2 + K`` with ``K``
real skew-symmetric (``S_ij = -sqrt(2i+1)sqrt(2j+1)/2`` for ``i > j``, ``+...`` for ``i < j``).
``-iK`` is Hermitian: ``-iK = V diag(μ) V^*`` with ``V`` unitary and ``μ`` real, so

    S = V diag(Λ) V^*,    Λ = -1/2 + iμ,
    A = S - P P^T = V (diag(Λ) - P̃ P̃^*) V^*,    P̃ = V^* P,   B̃ = V^* B          (DPLR)

(Gu, Goel, Ré, S4, ICLR 2022, Theorem 1 and Appendix C; annotated-s4's ``make_NPLR_HiPPO`` /
``make_DPLR_HiPPO`` compute the same with ``eigh(-i S)``, which reads only one triangle; here the
skew part is used so the Hermitian matrix is exact).  The eigenvalues ``μ`` come in pairs ``±μ``
(and one 0 for odd ``N``): ``Λ`` is closed under conjugation and the system is real.

S4D's initialisations keep one eigenvalue of each conjugate pair (``output="2re"``):
S4D-Lin ``Λ_n = -1/2 + iπn``; S4D-LegS the ``N`` eigenvalues of the DPLR form of size ``2N`` with
``Im Λ < 0`` (the half the official S4 code keeps), with ``B̃`` restricted to them.
"""

import numpy as onp

from ssmref.checks import check_int
from ssmref.ssm import hippo_legs


def hippo_nplr(N):
    """``(A (N, N), P (N, 1), B (N, 1))`` real: HiPPO-LegS with ``A + P P^T`` normal."""
    N = check_int("N", N, minimum=1)
    A, b = hippo_legs(N)
    P = onp.sqrt(onp.arange(N) + 0.5)[:, None]
    return A, P, b[:, None]


def hippo_dplr(N):
    """``(Lambda (N,), P (N, 1), B (N, 1), V (N, N))`` with ``A = V (diag(Λ) − P P^*) V^*``, ``B_legs = V B``.

    ``Λ = −1/2 + iμ`` (``μ`` ascending), ``P = V^* P_nplr`` and ``B = V^* B_nplr`` complex, ``V``
    unitary.  The low-rank factor is ``Q = P`` (``A = Λ − P Q^*``).  Reconstruction error of ``A``
    is about ``N ε ||A||`` (float64 ``eigh``).
    """
    A, P, B = hippo_nplr(N)
    S = A + P @ P.T
    K = (S - S.T) / 2.0                                   # the exactly skew part
    mu, Vm = onp.linalg.eigh(-1j * K)                     # -iK Hermitian: K = V diag(iμ) V^*
    lam = onp.mean(onp.diag(S)) + 1j * mu                 # diag(S) = -1/2
    Vh = Vm.conj().T
    return lam, Vh @ P, Vh @ B, Vm


def s4d_lin(N):
    """S4D-Lin eigenvalues ``Λ_n = −1/2 + iπn``, ``n = 0..N−1`` (one per conjugate pair)."""
    N = check_int("N", N, minimum=1)
    return -0.5 + 1j * onp.pi * onp.arange(N)


def s4d_legs(N):
    """S4D-LegS: ``(Lambda (N,), B (N,))``, the ``Im Λ < 0`` half of :func:`hippo_dplr` ``(2N)``.

    With ``output="2re"`` this half stands for the whole diagonal part ``S`` of HiPPO-LegS
    (without the low-rank term, as S4D does).
    """
    N = check_int("N", N, minimum=1)
    lam, _, B, _ = hippo_dplr(2 * N)
    keep = onp.argsort(lam.imag, kind="stable")[:N]       # the N most negative imaginary parts
    return lam[keep], B[keep, 0]
