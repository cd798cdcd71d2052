"""S4's diagonal-plus-low-rank (DPLR) SSM: bilinear discretization, recurrence, Cauchy kernel.

Continuous time, ``N`` complex states, rank ``r``::

    A = diag(Λ) − P Q^*          Λ: (N,), P, Q: (N, r) complex   (HiPPO: Q = P, r = 1)
    x' = A x + B u,   y = Re(C x) + D u          B: (N, m), C: (p, N) complex, D: (p, m) real

Bilinear discretization with step ``Δ`` (scalar), as S4 (``R(Δ) = (2/Δ − A)^{-1}``)::

    Ā = (I − Δ/2 A)^{-1} (I + Δ/2 A) = A_1 A_0,    B̄ = (I − Δ/2 A)^{-1} Δ B = 2 A_1 B
    A_0 = 2/Δ I + A                                  (forward Euler half)
    A_1 = R(Δ) = E − E P (I_r + Q^* E P)^{-1} Q^* E,   E = diag(1/(2/Δ − Λ))   (Woodbury)

so one step ``x_t = A_1 (A_0 x_{t-1} + 2 B u_t)`` costs O(N r) (S4's linear-time stepping); the
output reads the new state, ``y_t = Re(C x_t) + D u_t``, and ``K[k] = Re(C Ā^k B̄)``.

**Kernel by the truncated generating function.**  With ``C̃ = C (I − Ā^L)`` (no conjugation: the
row vector ``C`` times the matrix),

    K̂(z) = sum_{k<L} C Ā^k B̄ z^k = C̃ (I − Ā z)^{-1} B̄,

and at the roots of unity ``ω_j = exp(−2πi j/L)`` the values ``K̂(ω_j)`` are the DFT of
``K[0..L-1]``, so ``K = Re(ifft(K̂(ω)))``.  For the bilinear ``Ā``,

    (I − Ā z)^{-1} B̄ = 2Δ [2(1 − z) I − Δ(1 + z) A]^{-1} B,

and with ``r_n(z) = 2Δ / (2(1 − z) − ΔΛ_n(1 + z))`` (a Cauchy kernel in ``Λ``) Woodbury gives

    K̂(z) = k00 − (1 + z) k01 [2 I_r + (1 + z) k11]^{-1} k10,
    k00 = C̃ R B,  k01 = C̃ R P,  k10 = Q^* R B,  k11 = Q^* R P,   R = diag(r(z)).

This is S4's ``c(z) [k00 − k01 (1 + k11)^{-1} k10]`` with ``c = 2/(1 + z)`` multiplied through:
it is finite at ``z = −1`` (S4's ``g(z) = (2/Δ)(1 − z)/(1 + z)`` and ``c(z)`` are infinite there),
and ``1 ∓ ω_j`` are formed as ``2 sin²(πj/L) + i sin(2πj/L)`` and ``2 cos²(πj/L) − i sin(2πj/L)``
without cancellation.  annotated-s4's ``kernel_DPLR(Λ, P, Q, B, C, step, L)`` reads its ``C``
argument conjugated (``C.conj() · B`` in its Cauchy sums): pass ``Ct = conj(C_annotated)``.

References: Gu, Goel, Ré, "Efficiently Modeling Long Sequences with Structured State Spaces"
(S4, ICLR 2022), Sections 3.2-3.3 and Appendix C.3; Woodbury identity.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.ssm.convolution import matrix_power
from ssmref.structured import validate


def _resolvent_parts(Lam, P, Q, dt):
    # E = 1/(2/Δ − Λ) (N,), M^{-1} = (I_r + Q^* E P)^{-1} (r, r)
    E = 1.0 / (2.0 / dt - Lam)
    r = np.shape(P)[1]
    M = np.eye(r) + np.einsum("nr,n,ns->rs", np.conj(Q), E, P)
    return E, M


def _apply_resolvent(E, M, P, Q, y):
    # A_1 y = E y − E P M^{-1} Q^* E y;  y: (..., N)
    Ey = E * y
    w = np.linalg.solve(M, np.einsum("nr,...n->r...", np.conj(Q), Ey))   # (r, ...)
    return Ey - E * np.einsum("nr,r...->...n", P, w)


def dplr_discrete_system(Lam, P, Q, B, dt):
    E, M = _resolvent_parts(Lam, P, Q, dt)
    N = np.shape(Lam)[0]
    A0 = (2.0 / dt) * np.eye(N) + np.diag(Lam) - np.dot(P, np.conj(Q).T)   # (N, N)
    A1 = _apply_resolvent(E, M, P, Q, np.eye(N) + 0j)                     # rows: A1 e_i^T -> A1^T
    A1 = A1.T                                                             # (N, N)
    return np.dot(A1, A0), 2.0 * np.dot(A1, B)


def dplr_discretize(params):
    """``(Ā (N, N), B̄ (N, m))`` complex: the bilinear discretization ``Ā = A_1 A_0``, ``B̄ = 2 A_1 B``.

    ``params``: ``{"Lambda": (N,), "P": (N, r), "Q": (N, r), "B": (N, m), "dt": ()}`` (other keys
    ignored).  ``A_1 = (2/Δ − Λ + P Q^*)^{-1}`` by Woodbury (as annotated-s4's ``discrete_DPLR``).
    """
    Lam, P, Q, B, dt = validate.dplr_args(params)
    return dplr_discrete_system(Lam, P, Q, B, dt)


def dplr_truncate(params, length):
    """``C̃ = C (I − Ā^L)`` (p, N) for ``L = length`` (the kernel's input; S4 trains ``C̃``).

    ``Ā^L`` by repeated squaring of the rounded ``Ā`` (relative error ≈ L ε ||Ā^L||).
    """
    Lam, P, Q, B, dt = validate.dplr_args(params)
    C = validate.output_matrix(params, "C", np.shape(Lam)[0])
    L = validate.length(length)
    Abar, _ = dplr_discrete_system(Lam, P, Q, B, dt)
    return C - np.dot(C, matrix_power(Abar, L))


def dplr_untruncate(params, length):
    """``C = C̃ (I − Ā^L)^{-1}`` (p, N) from ``params["Ct"]``; ``ValueError`` if ``I − Ā^L`` is singular."""
    Lam, P, Q, B, dt = validate.dplr_args(params)
    Ct = validate.output_matrix(params, "Ct", np.shape(Lam)[0])
    L = validate.length(length)
    Abar, _ = dplr_discrete_system(Lam, P, Q, B, dt)
    M = np.eye(np.shape(Lam)[0]) - matrix_power(Abar, L)
    validate.invertible("I - Abar^L", M)
    return np.linalg.solve(M.T, Ct.T).T


def dplr_scan(params, u, h0=None):
    """The DPLR recurrence, one O(N r) step at a time: ``(y (..., T, p), x_last (..., N))``.

        x_t = A_1 (A_0 x_{t-1} + 2 B u_t),   y_t = Re(C x_t) + D u_t

    ``params``: ``Lambda, P, Q, B, C, D, dt`` (``C`` the true output matrix, not ``C̃``);
    ``u: (T, m)`` or ``(batch, T, m)`` real; ``h0: (N,)`` or ``(batch, N)`` complex.
    (A taped Python loop over ``t``: the state matrix is not diagonal.)
    """
    Lam, P, Q, B, dt = validate.dplr_args(params)
    N = np.shape(Lam)[0]
    C = validate.output_matrix(params, "C", N)
    D = validate.feedthrough(params, np.shape(C)[0], np.shape(B)[1])
    u, h0, batch = validate.sequence(u, h0, np.shape(B)[1], N)
    E, M = _resolvent_parts(Lam, P, Q, dt)
    x = np.zeros(batch + (N,)) + 0j if h0 is None else h0 + 0j             # (..., N)
    ys = []
    for t in range(np.shape(u)[-2]):
        ut = u[..., t, :]                                                  # (..., m)
        y0 = (2.0 / dt + Lam) * x - np.einsum("nr,...r->...n", P, np.einsum("nr,...n->...r", np.conj(Q), x))
        x = _apply_resolvent(E, M, P, Q, y0 + 2.0 * np.dot(ut + 0j, B.T))
        ys.append(np.real(np.dot(x, C.T)) + np.dot(ut, D.T))
    return np.stack(ys, axis=-2), x


def unit_roots(L):
    # 1 − ω_j and 1 + ω_j, ω_j = exp(−2πi j/L), without cancellation: (L,) each
    half = onp.pi * onp.arange(L) / L                   # θ_j / 2
    s, c, s2 = onp.sin(half), onp.cos(half), onp.sin(2.0 * half)
    return 2.0 * s * s + 1j * s2, 2.0 * c * c - 1j * s2


#: How near ``ΔΛ_n`` may come to a pole ``2(1 − ω_j)/(1 + ω_j)`` of the Cauchy kernel: the error
#: of the Woodbury form grows like ε / distance (benchmarks/domain_edges.py: 1e-11 relative at
#: 1e-6, 1e-9 at 1e-8; 1e-3 at 1e-14).
CAUCHY_GAP = 1e-8


def cauchy_poles(Lam, dt, L):
    """Refuse ``Λ_n`` whose bilinear image ``Λ̄_n`` is (within :data:`CAUCHY_GAP`) a root of unity
    ``1/ω_j``: the diagonal resolvent ``r_n(ω_j)`` is infinite there while the kernel is finite
    (``Λ_n = 0`` is one, at ``ω_0 = 1``); ``|2(1 − ω) − ΔΛ_n(1 + ω)| < CAUCHY_GAP |1 + ω|``."""
    one_minus, one_plus = unit_roots(L)
    lam, d = onp.asarray(getval(Lam)), float(getval(dt))
    gap = onp.abs(2.0 * one_minus[:, None] - d * lam[None, :] * one_plus[:, None])     # (L, N)
    near = gap < CAUCHY_GAP * onp.abs(one_plus)[:, None]
    if onp.any(near):
        j, n = (int(i[0]) for i in onp.nonzero(near))
        raise ValueError(f"params['Lambda'][{n}] = {lam[n]:.6g} puts a pole of the Cauchy kernel "
                         f"within {CAUCHY_GAP:g} of the root of unity omega_{j} of length {L} "
                         f"(Lambda_bar on the unit circle; Lambda = 0 is one): the DPLR kernel "
                         f"cannot be formed there; the dense kernel of dplr_to_dense(params) can")


def _kernel(Lam, P, Q, B, Ct, dt, L):
    one_minus, one_plus = unit_roots(L)
    R = 2.0 * dt / (2.0 * one_minus[:, None] - dt * Lam[None, :] * one_plus[:, None])   # (L, N)
    Qc = np.conj(Q)
    k00 = np.einsum("pn,ln,nm->lpm", Ct, R, B)          # (L, p, m)
    k01 = np.einsum("pn,ln,nr->lpr", Ct, R, P)          # (L, p, r)
    k10 = np.einsum("nr,ln,nm->lrm", Qc, R, B)          # (L, r, m)
    k11 = np.einsum("nr,ln,ns->lrs", Qc, R, P)          # (L, r, r)
    r = np.shape(P)[1]
    Mz = 2.0 * np.eye(r) + one_plus[:, None, None] * k11                         # (L, r, r)
    corr = np.einsum("lpr,lrm->lpm", k01, np.linalg.solve(Mz, k10))              # (L, p, m)
    Khat = k00 - one_plus[:, None, None] * corr                                  # K̂(ω_j)
    return np.real(np.fft.ifft(Khat, axis=0))                                    # (L, p, m)


def dplr_kernel(params, length, *, allow_unstable=False):
    """``K: (length, p, m)``, ``K[k] = Re(C Ā^k B̄)`` from the truncated ``C̃`` by the Cauchy/Woodbury
    form at the roots of unity and an inverse FFT (module docstring).

    ``params``: ``{"Lambda": (N,), "P": (N, r), "Q": (N, r), "B": (N, m), "Ct": (p, N), "dt": ()}``
    with ``Ct = C (I − Ā^L)`` (:func:`dplr_truncate`; ``length`` must be the ``L`` of ``C̃``).
    Cost O(L N (p m + r (p + m + r))) plus the FFT.  Refuses ``Re Λ > 0`` unless
    ``allow_unstable=True`` (with ``Q = P`` and ``Re Λ ≤ 0``, ``A + A^* ⪯ 0``: the system is
    stable), and ``Λ_n`` at a pole of the Cauchy kernel (:func:`cauchy_poles`; ``Λ_n = 0`` is one).
    """
    Lam, P, Q, B, dt = validate.dplr_args(params)
    Ct = validate.output_matrix(params, "Ct", np.shape(Lam)[0])
    L = validate.length(length)
    validate.stable(Lam, allow_unstable)
    cauchy_poles(Lam, dt, L)
    return _kernel(Lam, P, Q, B, Ct, dt, L)


def dplr_from_half(params):
    """Expand S4's conjugate-pair storage (the official ``state-spaces/s4`` code keeps ``N/2``
    states and sums its Cauchy kernels over ``[v, conj(v)]``) into the full system used here:
    every array along the state axis becomes ``[x, conj(x)]`` (``Lambda, P, Q, B`` on axis 0,
    ``C``/``Ct`` on axis 1).  Then ``Re(C_full x_full) = 2 Re(C x)`` on real inputs.
    """
    validate.params_dict(params, ("Lambda", "P", "Q", "B"), "DPLR conjugate-pair halves")
    out = {}
    for k in params.keys():
        x = params[k]
        if k in ("Lambda", "P", "Q", "B"):
            out[k] = np.concatenate([x, np.conj(x)], axis=0)
        elif k in ("C", "Ct"):
            out[k] = np.concatenate([x, np.conj(x)], axis=1)
        else:
            out[k] = x
    return out
