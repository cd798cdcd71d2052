"""First-order rounding-error bounds for the structured kinds, where 1e-14 is not always reachable.

Standard model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §2-3): every
real operation is exact times ``(1 + δ)``, ``|δ| ≤ ε = 2^-53``; a complex product or quotient has
relative error ≤ ``c ε`` (``√5`` and ``4`` suffice; we use 5), a complex sum ≤ ``ε``, a dot
product of length ``k`` ≤ ``γ_k ≈ k ε`` times the sum of the moduli of its terms.  Terms of order
``ε²`` are dropped.  Each function returns the bound on the normwise relative error
``||x̂ − x||_F / ||x̂||_F`` for the given data; tests check the measured error (against
:mod:`.structured_certify`'s 40-digit recomputations) never exceeds it, and
:mod:`.structured` widens the tolerance of ``diag_scan_vjp``'s ``ddt`` by
``diag_scan_vjp_dt_bound``.

Why 1e-14 is not reachable everywhere:

- **Recurrences** (``diag_scan``, ``diag_parallel_scan``, ``dplr_scan``): ``Λ̄`` is rounded once
  (``|δλ̄| ≤ c_λ ε |λ̄|``) and applied ``t`` times, so ``Λ̄^k`` carries ``k c_λ ε``.  For a mode with
  ``ρ = |λ̄|`` the accumulated error relative to the state is of order ``c ε / (1 − ρ)``:
  ``1/(1 − ρ) ≈ 1/(Δ |Re Λ|)`` time steps of memory (2000 for ``Δ = 1e-3``, ``Re Λ = −1/2``).
  Any float64 recurrence has this error; the kernel path does not (below).
- **Bilinear powers** ``exp(k w)``, ``w = 2 atanh(ΔΛ/2)``: the part of ``w`` not formed error-free
  has absolute error ``≈ ε e`` (``e = |w − z|`` for ``|z| ≤ 1/2``, ``|w|`` up to ``|z| = 2``,
  ``|w(4/z)|`` beyond), so ``λ̄^k`` has relative error ``≈ (3 k e + c) ε``: in the middle band
  (``1/2 < |ΔΛ| ≤ 2``) this is the conditioning of ``λ̄^k`` (the kernel is backward stable there),
  elsewhere it is smaller.  ZOH needs no such term: ``kΔΛ`` is formed error-free.
- **DPLR kernel**: the Woodbury correction nearly cancels the diagonal Cauchy sum when the low-rank
  term is large (HiPPO: ``||P||² = N²/2``; the resolvent of ``A`` is much smaller than that of
  ``diag(Λ)``), so the error is ``ε`` times the sums of moduli, not times ``|K̂|``.
"""

import numpy as onp

from ssmref.structured import accurate
from ssmref.structured import validate
from ssmref.structured.diagonal import diag_scan_core, discrete_system, output_scale
from ssmref.structured.dplr import unit_roots

EPS = onp.finfo(float).eps / 2
C_OP = 5.0                      # one complex product / quotient, in units of ε
C_LAMBDA = {"zoh": 4.0, "bilinear": 8.0}     # |λ̂ − λ̄| / (ε |λ̄|): exp(hi)·exp(lo) / quotient of z/2-terms
C_B = {"zoh": 6.0, "bilinear": 8.0}          # |b̂ − b| / (ε |b|) for the input factor b(λ)


def _gamma(k):
    return k * EPS / (1.0 - k * EPS)


def _norm_rel(err, value):
    return float(onp.linalg.norm(err) / max(onp.linalg.norm(value), 1e-300))


def diag_kernel_error_bound(params, length, *, method, output):
    """Bound on ``||K̂ − K||_F / ||K̂||_F`` for :func:`diag_kernel`.

        |K̂[k] − K[k]| ≤ s Σ_n |C_pn| |B̄_nm| |λ̄_n|^k ε (c_B + c_k + 2 C_OP + n + 1)
        c_k = 4 (ZOH: compensated exponent),   c_k = 4 + 3 k e(ΔΛ_n) (bilinear; e from
        :func:`ssmref.structured.accurate.bilinear_error_scale`: |w − z|, |w| or |w(4/z)|)
    """
    validate.options(method, output)
    (Lam, B, C, D, dt), (m, n, p) = validate.diag_params(params)
    L = validate.length(length)
    _, Bbar = discrete_system(Lam, B, dt, method)
    k = onp.arange(L, dtype=float)[:, None]                                      # (L, 1)
    mod_pow = onp.abs(accurate.power(k, dt, Lam, method))                         # |λ̄|^k, (L, n)
    c_k = 4.0 + (3.0 * k * accurate.bilinear_error_scale(dt, Lam) if method == "bilinear" else 0.0)
    weight = mod_pow * (C_B[method] + c_k + 2 * C_OP + n + 1) * EPS              # (L, n)
    s = output_scale(output)
    err = s * onp.einsum("pn,ln,nm->lpm", onp.abs(C), weight, onp.abs(Bbar))
    K = s * onp.real(onp.einsum("pn,ln,nm->lpm", C, accurate.power(k, dt, Lam, method), Bbar))
    return _norm_rel(err, K)


def diag_scan_error_bound(params, u, h0=None, *, method, output):
    """Running-error bound on ``||ŷ − y||_F / ||ŷ||_F`` (and the same for ``x_last``) for
    :func:`diag_scan` / :func:`diag_parallel_scan`'s recurrence, returned as ``{"y": .., "x_last": ..}``.

        e_t ≤ ρ e_{t-1} + ε [ (c_λ + C_OP) ρ |x̂_{t-1}| + (c_B + m + 1) Σ_j |B̄_.j| |u_tj| + |b̂_t| ]
        |ŷ_t − y_t| ≤ s Σ_n |C_pn| (e_t,n + (n + 1) ε |x̂_t,n|) + (m + 1) ε Σ_j |D_pj| |u_tj|

    with ``ρ = |λ̄|`` per state, evaluated along the computed trajectory.  (The associative scan
    rounds differently, ``log T`` products per element; its measured errors are of the same size.)
    """
    validate.options(method, output)
    (Lam, B, C, D, dt), (m, n, p) = validate.diag_params(params)
    u, h0, _ = validate.sequence(u, h0, m, n)
    lam_bar, Bbar = discrete_system(Lam, B, dt, method)
    y, _ = diag_scan_core(Lam, B, C, D, dt, u, h0, method, output)
    ub = onp.reshape(u, (-1,) + onp.shape(u)[-2:])                                # (batch, T, m)
    x = onp.zeros((ub.shape[0], n), complex) if h0 is None else onp.broadcast_to(h0, (ub.shape[0], n)) + 0j
    rho = onp.abs(lam_bar)
    e = onp.zeros(x.shape)
    s = output_scale(output)
    ey = onp.zeros(ub.shape[:2] + (p,))
    for t in range(ub.shape[1]):
        b = ub[:, t] @ Bbar.T                                                     # (batch, n)
        abs_bu = onp.abs(ub[:, t]) @ onp.abs(Bbar).T                              # Σ_j |B̄_.j| |u_tj|
        rounding = (C_LAMBDA[method] + C_OP) * rho * onp.abs(x) + (C_B[method] + m + 1) * abs_bu + onp.abs(b)
        e = rho * e + EPS * rounding
        x = lam_bar * x + b
        ey[:, t] = (s * (e + (n + 1) * EPS * onp.abs(x)) @ onp.abs(C).T
                    + (m + 1) * EPS * onp.abs(ub[:, t]) @ onp.abs(D).T)
    return {"y": _norm_rel(ey, onp.reshape(y, ey.shape)), "x_last": _norm_rel(e, x)}


def dplr_kernel_error_bound(params, length):
    """Bound on ``||K̂ − K||_F / ||K̂||_F`` for :func:`dplr_kernel` (first order, 2-norms on the rank axis).

    Per root ``ω``: ``r_n = 2Δ/d_n`` with ``d_n = 2(1−ω) − ΔΛ_n(1+ω)`` carries relative error
    ``ε_n = ε (C_OP + 2 + C_OP (2|1−ω| + |ΔΛ_n||1+ω|)/|d_n|)``; each Cauchy sum ``k_ab = Σ a_n r_n b_n``
    has error ``Δk_ab ≤ Σ |a_n| |r_n| |b_n| (ε_n + (N + 2) ε)``; then, with ``s = M^{-1} k10``,
    ``M = 2I + (1+ω) k11``,

        ΔM ≤ |1+ω| Δk11 + 2ε|M|,   Δs ≤ ||M^{-1}|| (Δk10 + ΔM ||s||) + r ε ||s||
        ΔK̂ ≤ Δk00 + |1+ω| (Δk01 ||s|| + ||k01|| Δs) + 2 ε (|k00| + |corr|)

    and the inverse FFT adds ``ε (3 log2 L + 2)`` times ``||K̂||_2/√L``; ``||ΔK||_2 ≤ ||ΔK̂||_2/√L``.
    """
    Lam, P, Q, B, dt = validate.dplr_args(params)
    Ct = validate.output_matrix(params, "Ct", onp.shape(Lam)[0])
    L = validate.length(length)
    N, r = onp.shape(P)
    om, op = unit_roots(L)                                                       # 1 − ω, 1 + ω
    d = 2.0 * om[:, None] - dt * Lam[None, :] * op[:, None]                       # (L, N)
    R = 2.0 * dt / d
    dtil = 2 * onp.abs(om)[:, None] + onp.abs(dt * Lam)[None, :] * onp.abs(op)[:, None]
    eps_n = EPS * (C_OP + 2 + C_OP * dtil / onp.abs(d) + N + 2)                   # (L, N)
    aR, Qc = onp.abs(R), onp.conj(Q)

    def cauchy(a, b):                       # value (L, i, j) and its error bound
        val = onp.einsum("in,ln,nj->lij", a, R, b)
        err = onp.einsum("in,ln,nj->lij", onp.abs(a), aR * eps_n, onp.abs(b))
        return val, err
    k00, e00 = cauchy(Ct, B)
    k01, e01 = cauchy(Ct, P)
    k10, e10 = cauchy(Qc.T, B)
    k11, e11 = cauchy(Qc.T, P)
    M = 2.0 * onp.eye(r) + op[:, None, None] * k11
    Minv = onp.linalg.inv(M)
    s = Minv @ k10
    nrm = lambda X: onp.linalg.norm(X, ord=2, axis=(-2, -1))                     # noqa: E731
    dM = onp.abs(op) * nrm(e11) + 2 * EPS * nrm(M)
    ds = nrm(Minv) * (nrm(e10) + dM * nrm(s)) + r * EPS * nrm(s)
    corr = op[:, None, None] * (k01 @ s)
    dK = (onp.abs(e00) + (onp.abs(op) * (nrm(e01) * nrm(s) + nrm(k01) * ds))[:, None, None]
          + 2 * EPS * (onp.abs(k00) + onp.abs(corr)))
    Khat = k00 - corr
    fft = EPS * (3 * onp.log2(max(L, 2)) + 2) * onp.linalg.norm(Khat)
    K = onp.real(onp.fft.ifft(Khat, axis=0))
    return float((onp.linalg.norm(dK) + fft) / onp.sqrt(L) / max(onp.linalg.norm(K), 1e-300))


def diag_scan_vjp_dt_bound(inputs, attrs, target):
    """The target for ``ddt`` of a ``diag_scan_vjp`` case with one step ``Δ`` for all states.

    There ``ddt = Σ_n t_n`` sums the per-state contributions ``t_n = ∂L/∂Δ_n`` (each through
    ``λ̄_n`` and the input factor ``b_n``), which cancel: ``κ = Σ_n |t_n| / |Σ_n t_n|`` is 75 on
    ``diag_scan_vjp_bilinear``.  Every algorithm that computes the terms in float64 and adds
    them is exact at best to ``ε Σ_n |t_n| = ε κ |ddt|``, so the relative target is scaled by the
    cancellation: ``target · κ`` (the terms are computed here by the same float64 autograd path,
    with ``Δ`` broadcast to one step per state).  For a per-state ``Δ`` there is no sum: ``target``.
    """
    import autograd
    import autograd.numpy as np

    from ssmref.structured.diagonal import diag_convolve

    n = onp.shape(inputs["Lambda"])[0]
    if onp.shape(inputs["dt"]) != ():
        return target
    prm = {k: inputs[k] for k in ("Lambda", "B", "C", "D")}

    def loss(dt_per_state):
        y, x_last = diag_convolve(dict(prm, dt=dt_per_state), inputs["u"], inputs["h0"],
                                  method=attrs["method"], output=attrs["output"])
        return np.sum(inputs["gy"] * y) + np.sum(np.real(np.conj(inputs["gx"]) * x_last))

    terms = autograd.grad(loss)(onp.full(n, float(inputs["dt"])))                 # (n,) t_n
    return target * float(onp.sum(onp.abs(terms)) / max(abs(onp.sum(terms)), 1e-300))
