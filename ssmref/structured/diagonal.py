"""The complex diagonal SSM (S4D, S5): discretization, scan, parallel scan, kernel, convolution.

Continuous time, ``n`` complex states, ``m`` real inputs, ``p`` real outputs::

    x'(t) = diag(Λ) x(t) + B u(t)            Λ: (n,), B: (n, m) complex
    y(t)  = s · Re(C x(t)) + D u(t)          C: (p, n) complex, D: (p, m) real

with ``s = 1`` (``output="re"``: the state is the whole system) or ``s = 2`` (``output="2re"``:
the state holds one member of each conjugate pair, and the other half, its conjugate, contributes
the same real part again).  Step ``Δ``: a scalar, or one per state (``(n,)``: state ``i`` runs on
its own clock, as in S5); for S4D's per-channel step see :mod:`ssmref.structured.layouts`.

Discretization (per state, :mod:`ssmref.structured.accurate`)::

    zoh:       Λ̄ = exp(ΔΛ),                 B̄ = diag((Λ̄ − 1)/Λ) B      (= Δ B where Λ = 0)
    bilinear:  Λ̄ = (1 + ΔΛ/2)/(1 − ΔΛ/2),    B̄ = diag(Δ/(1 − ΔΛ/2)) B

Discrete time, output reads the NEW state (as ``ssmref.ssm`` and every peer)::

    x_t = Λ̄ ⊙ x_{t-1} + B̄ u_t,    x_{-1} = h0 (zeros by default)
    y_t = s · Re(C x_t) + D u_t
    K[k] = s · Re(C diag(Λ̄^k) B̄)   (p, m),   y = K * u + D u + s · Re(C Λ̄^{t+1} h0)

``K[0] = s·Re(C B̄)``.  The kernel takes ``Λ̄^k`` directly from ``(Λ, Δ)`` (``exp(kΔΛ)`` with a
compensated exponent for ZOH, ``exp(k · 2 atanh(ΔΛ/2))`` for bilinear), never from a rounded ``Λ̄``
raised to the k-th power.

References: Gupta, Gu, Berant, "Diagonal State Spaces are as Effective as Structured State
Spaces" (DSS, 2022); Gu, Gupta, Goel, Ré, "On the Parameterization and Initialization of Diagonal
State Space Models" (S4D, NeurIPS 2022); Smith, Warrington, Linderman, "Simplified State Space
Layers for Sequence Modeling" (S5, ICLR 2023).
"""

import autograd.numpy as np
import numpy as onp

from ssmref.checks import check_choice, shape_of
from ssmref.recurrence import diagonal_combine, linear_recurrence
from ssmref.ssm import associative_scan, causal_fft_conv
from ssmref.structured import accurate
from ssmref.structured import validate


# ---------------------------------------------------------------------------------------------
# Discretization
# ---------------------------------------------------------------------------------------------

def discrete_system(Lam, B, dt, method):
    # Λ̄ (n,), B̄ = diag(b) B (n, m)
    lam_bar = accurate.discrete_eigenvalue(dt, Lam, method)
    b = accurate.input_factor(dt, Lam, method)
    return lam_bar, b[:, None] * B


def diag_discretize(Lambda, B, dt, method):
    """``(Λ̄ (n,), B̄ (n, m))`` of the complex diagonal system, per state.

        zoh:       Λ̄ = exp(ΔΛ),                 B̄ = (Λ̄ − 1)/Λ ⊙ B    (ΔB where Λ = 0)
        bilinear:  Λ̄ = (1 + ΔΛ/2)/(1 − ΔΛ/2),    B̄ = Δ/(1 − ΔΛ/2) ⊙ B

    ``Lambda: (n,)`` complex (real is cast), ``B: (n, m)`` complex, ``dt``: scalar or ``(n,)``.
    ZOH uses ``expm1`` of a compensated ``ΔΛ`` divided by the exact ``Λ``: relative error ~ε also
    where ``ΔΛ`` is tiny (the form ``(exp(ΔΛ) − 1)/Λ`` loses all digits as ``ΔΛ → 0``).
    """
    if len(shape_of(Lambda)) != 1:
        raise ValueError(f"Lambda must have shape (n,), got {shape_of(Lambda)}")
    n = shape_of(Lambda)[0]
    Lam = validate.eigenvalues("Lambda", Lambda, (n,))
    B = validate.complex_array("B", B, (n, None))
    dt = validate.step("dt", dt, n)
    check_choice("method", method, validate.METHODS)
    validate.stability(Lam, dt, method, allow_unstable=True)
    return discrete_system(Lam, B, dt, method)


# ---------------------------------------------------------------------------------------------
# Recurrent modes
# ---------------------------------------------------------------------------------------------

def _readout(C, x, D, u, scale):
    # y = s Re(C x) + D u;  x: (..., T, n), u: (..., T, m) -> (..., T, p)
    return scale * np.real(np.dot(x, C.T)) + np.dot(u, D.T)


def output_scale(output):
    """``s`` of ``y = s·Re(C x) + D u``: ``2.0`` for ``output="2re"`` (the conjugate-symmetric
    half), else ``1.0``; the one definition, used by every form, bound and reference."""
    return 2.0 if output == "2re" else 1.0


def _inputs_in_time_major(u, Bbar):
    # B̄ u_t for every t, time first: (T, ..., n)
    bu = np.dot(u + 0j, Bbar.T)                              # (..., T, n); +0j: real u, complex B̄
    return np.moveaxis(bu, -2, 0)                            # (T, ..., n)


def diag_scan_core(Lam, B, C, D, dt, u, h0, method, output):
    lam_bar, Bbar = discrete_system(Lam, B, dt, method)
    b = _inputs_in_time_major(u, Bbar)                       # (T, ..., n)
    a = np.reshape(lam_bar, (1,) * (np.ndim(b) - 1) + (-1,))  # (1, ..., n): constant in time
    x = linear_recurrence(a, b, h0)                          # (T, ..., n)
    x = np.moveaxis(x, 0, -2)                                # (..., T, n)
    return _readout(C, x, D, u, output_scale(output)), x[..., -1, :]


def diag_scan(params, u, h0=None, *, method, output):
    """The recurrence ``x_t = Λ̄ ⊙ x_{t-1} + B̄ u_t``, ``y_t = s·Re(C x_t) + D u_t``: ``(y, x_last)``.

    ``params``: ``{"Lambda": (n,), "B": (n, m), "C": (p, n), "D": (p, m), "dt": () or (n,)}``;
    ``u: (T, m)`` or ``(batch, T, m)`` real; ``h0: (n,)`` or ``(batch, n)`` complex.
    ``method``: ``"zoh"`` or ``"bilinear"``; ``output``: ``"re"`` (s = 1) or ``"2re"`` (s = 2,
    conjugate-symmetric half).  Returns ``y: (..., T, p)`` real and ``x_last: (..., n)`` complex.
    The time loop is :func:`ssmref.recurrence.linear_recurrence` (one primitive, adjoint VJP).
    """
    validate.options(method, output)
    (Lam, B, C, D, dt), (m, n, p) = validate.diag_params(params)
    u, h0, _ = validate.sequence(u, h0, m, n)
    validate.stability(Lam, dt, method, allow_unstable=True)
    return diag_scan_core(Lam, B, C, D, dt, u, h0, method, output)


def diag_parallel_scan(params, u, h0=None, *, method, output):
    """Same values as :func:`diag_scan`, by the associative scan of S5 (Smith et al. 2023):
    elements ``(Λ̄, B̄ u_t)`` combined by ``(λ1, v1) • (λ2, v2) = (λ2 λ1, λ2 v1 + v2)`` with
    :func:`ssmref.ssm.associative_scan` (O(log T) rounds); ``h0`` enters as ``v_0 += Λ̄ ⊙ h0``.
    """
    validate.options(method, output)
    (Lam, B, C, D, dt), (m, n, p) = validate.diag_params(params)
    u, h0, batch = validate.sequence(u, h0, m, n)
    validate.stability(Lam, dt, method, allow_unstable=True)
    lam_bar, Bbar = discrete_system(Lam, B, dt, method)
    v = _inputs_in_time_major(u, Bbar)                       # (T, ..., n)
    if h0 is not None:
        v = np.concatenate([v[:1] + lam_bar * h0, v[1:]], axis=0)
    lam_t = lam_bar * np.ones(np.shape(v))                   # (T, ..., n): Λ̄ at every step
    _, x = associative_scan(diagonal_combine, (lam_t, v))       # (T, ..., n)
    x = np.moveaxis(x, 0, -2)                                # (..., T, n)
    return _readout(C, x, D, u, output_scale(output)), x[..., -1, :]


# ---------------------------------------------------------------------------------------------
# Convolution modes
# ---------------------------------------------------------------------------------------------

def _powers(Lam, dt, method, count):
    # Λ̄^k for k = 0 .. count-1: (count, n), directly from (Λ, Δ)
    k = onp.arange(count, dtype=float)[:, None]             # (count, 1)
    return accurate.power(k, dt, Lam, method)


def _kernel(Lam, B, C, dt, L, method, output):
    # K[k] = s Re(C diag(Λ̄^k) B̄): (L, p, m)
    _, Bbar = discrete_system(Lam, B, dt, method)
    W = _powers(Lam, dt, method, L)                  # (L, n)
    return output_scale(output) * np.real(np.einsum("pn,ln,nm->lpm", C, W, Bbar))


def diag_kernel(params, length, *, method, output, allow_unstable=False):
    """The convolution kernel ``K: (length, p, m)``, ``K[k] = s·Re(C diag(Λ̄^k) B̄)``.

    The Vandermonde form with ``Λ̄^k`` taken directly from ``(Λ, Δ)``: ``exp(kΔΛ)`` (ZOH, exponent
    compensated: relative error ~ε at every lag) or ``exp(k·2 atanh(ΔΛ/2))`` (bilinear).
    ``K[0] = s·Re(C B̄)`` (the output reads the new state).  Refuses ``Re Λ > 0`` unless
    ``allow_unstable=True``.
    """
    validate.options(method, output)
    (Lam, B, C, D, dt), _ = validate.diag_params(params)
    L = validate.length(length)
    validate.stability(Lam, dt, method, allow_unstable)
    return _kernel(Lam, B, C, dt, L, method, output)


def diag_convolve(params, u, h0=None, *, method, output, allow_unstable=False):
    """Same values as :func:`diag_scan`, by FFT convolution with :func:`diag_kernel`'s kernel:

        y_t    = (K * u)_t + D u_t + s·Re(C (Λ̄^{t+1} ⊙ h0))
        x_last = sum_{k=0}^{T-1} Λ̄^k ⊙ B̄ u_{T-1-k} + Λ̄^T ⊙ h0

    (:func:`ssmref.ssm.causal_fft_conv`: explicit zero padding to ``next_pow2(2T)``).
    """
    validate.options(method, output)
    (Lam, B, C, D, dt), (m, n, p) = validate.diag_params(params)
    u, h0, _ = validate.sequence(u, h0, m, n)
    validate.stability(Lam, dt, method, allow_unstable)
    T = shape_of(u)[-2]
    s = output_scale(output)
    _, Bbar = discrete_system(Lam, B, dt, method)
    W = _powers(Lam, dt, method, T + 1)                         # (T+1, n): Λ̄^0 .. Λ̄^T
    K = s * np.real(np.einsum("pn,ln,nm->lpm", C, W[:T], Bbar))        # (T, p, m)
    y = causal_fft_conv(K, u) + np.dot(u, D.T)                         # (..., T, p)
    x_last = np.einsum("kn,nm,...km->...n", W[:T], Bbar, u[..., ::-1, :] + 0j)   # (..., n)
    if h0 is not None:
        free = W[1:] * np.expand_dims(h0, -2)                          # (..., T, n): Λ̄^{t+1} h0
        y = y + s * np.real(np.dot(free, C.T))
        x_last = x_last + W[T] * h0
    return y, x_last
