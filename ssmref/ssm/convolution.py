"""The convolution mode: the recurrence unrolled into a causal convolution with the kernel ``K``::

    h_t = A^{t+1} h0 + Σ_{k=0}^{t} A^k B u_{t-k}
    y_t = C A^{t+1} h0 + Σ_{k=0}^{t} K_k u_{t-k} + D u_t,        K_k = C A^k B

computed with an FFT of length ``N = next_pow2(2T)`` (so the circular convolution equals the linear
one on ``[0, T)``).  Cost O(T log T p m) for the convolution plus O(T n² (m + p)) for the powers,
formed by doubling in ``ceil(log2 T)`` batched products.

autograd 1.9's gradient of ``np.fft.rfft(x, n=N)`` is wrong when ``n`` pads the input, so inputs
are padded explicitly with ``np.concatenate`` and ``rfft`` is called without ``n``.
"""

import autograd.numpy as np

from ssmref.checks import check_int, shape_of
from ssmref.ssm.dims import PARAM_NAMES, check_sequence_inputs, ssm_dims


def matrix_power(A, k):
    """``A^k`` by repeated squaring (differentiable; ``k`` a non-negative int)."""
    result, base = np.eye(np.shape(A)[0]), A
    while k:
        if k & 1:
            result = np.dot(result, base)
        k >>= 1
        if k:
            base = np.dot(base, base)
    return result


# Doubling: given the first L terms S and P = A^L, the next L terms are P S.
def powers_times(A, X, length):
    """``[A^0 X, A^1 X, ..., A^{length-1} X]`` stacked: ``(length, n, k)`` for ``X: (n, k)``."""
    S = X[None]                                           # (1, n, k)
    power = A
    while np.shape(S)[0] < length:
        S = np.concatenate([S, np.einsum("ij,ljk->lik", power, S)], axis=0)
        power = np.dot(power, power)
    return S[:length]


def ssm_kernel(params, length):
    """The convolution kernel ``K: (length, p, m)``, ``K[k] = C A^k B``."""
    ssm_dims(params)
    length = check_int("length", length, minimum=1)
    AkB = powers_times(params["A"], params["B"], length)           # (L, n, m)
    return np.einsum("pn,lnm->lpm", params["C"], AkB)


def _next_pow2(x):
    return 1 << (int(x) - 1).bit_length()


def fft_conv(K, u):
    """Causal convolution, unchecked: ``z_t = Σ_{k=0}^{t} K[k] u_{t-k}`` for ``K: (T, p, m)``,
    ``u: (..., T, m)`` -> ``(..., T, p)`` (explicitly padded FFT, see the module docstring)."""
    T = np.shape(u)[-2]
    N = _next_pow2(2 * T)
    Kp = np.concatenate([K, np.zeros((N - T,) + np.shape(K)[1:])], axis=0)            # (N, p, m)
    up = np.concatenate([u, np.zeros(np.shape(u)[:-2] + (N - T, np.shape(u)[-1]))], axis=-2)
    Kf = np.fft.rfft(Kp, axis=0)                                                    # (N/2+1, p, m)
    uf = np.fft.rfft(up, axis=-2)                                                   # (..., N/2+1, m)
    zf = np.einsum("fpm,...fm->...fp", Kf, uf)                                      # (..., N/2+1, p)
    z = np.fft.irfft(zf, axis=-2)                                                   # (..., N, p)
    return z[..., :T, :]


def causal_fft_conv(K, u):
    """``z_t = Σ_{k=0}^{t} K[k] u_{t-k}`` for ``K: (T, p, m)``, ``u: (T, m)`` or ``(..., T, m)``
    -> ``(..., T, p)``; ``K`` must have exactly ``T`` lags and ``m`` matching ``u``."""
    K_shape, u_shape = shape_of(K), shape_of(u)
    if len(u_shape) < 2:
        raise ValueError(f"u must have shape (..., T, m), got {u_shape}")
    T, m = u_shape[-2:]
    if len(K_shape) != 3 or K_shape[0] != T or K_shape[2] != m:
        raise ValueError(f"K must have shape ({T}, p, {m}) for u of shape {u_shape}, got {K_shape}")
    return fft_conv(K, u)


def ssm_convolve(params, u, h0=None):
    """Same values as :func:`ssmref.ssm.ssm_scan`, as an FFT convolution plus the ``h0`` term::

        y_t = (K * u)_t + D u_t + C A^{t+1} h0
        h_{T-1} = Σ_{k=0}^{T-1} A^k B u_{T-1-k} + A^T h0
    """
    m, n, p, batch = check_sequence_inputs(params, u, h0)
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    T = np.shape(u)[-2]
    AkB = powers_times(A, B, T)                                    # (T, n, m)
    K = np.einsum("pn,lnm->lpm", C, AkB)                           # (T, p, m)
    y = fft_conv(K, u) + np.dot(u, D.T)                            # (..., T, p)
    h_last = np.einsum("knm,...km->...n", AkB, u[..., ::-1, :])    # (..., n)
    if h0 is not None:
        CAt = np.transpose(powers_times(A.T, np.dot(A.T, C.T), T), (0, 2, 1))  # (T, p, n): C A^{t+1}
        y = y + np.einsum("tpn,...n->...tp", CAt, h0)
        h_last = h_last + np.dot(h0, matrix_power(A, T).T)
    return y, h_last
