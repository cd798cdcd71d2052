"""The convolution mode: the recurrence unrolled into a causal convolution with the kernel ``K``::

    h_t = A^{t+1} h0 + Σ_{k=0}^{t} A^k B u_{t-k}
    y_t = C A^{t+1} h0 + Σ_{k=0}^{t} K_k u_{t-k} + D u_t,        K_k = C A^k B

computed with an FFT of length ``N = next_pow2(2T)`` (so the circular convolution equals the linear
one on ``[0, T)``).  Cost O(T log T p m) for the convolution plus O(T n² (m + p)) for the powers,
formed by doubling in ``ceil(log2 T)`` matrix products.

The convolution is one autograd primitive, :func:`fft_conv`, whose VJP is two correlations, each
computed by :func:`fft_conv` itself on time-reversed arrays (so every order is exact)::

    ∂u_s = Σ_{t≥s} K_{t-s}ᵀ g_t           = flip(Kᵀ * flip(g))_s
    ∂K_k = Σ_batch Σ_{t≥k} g_t u_{t-k}ᵀ    = the same with the batch as the summed channel

Inside the primitive NumPy's ``rfft(x, n=N)`` pads; autograd's gradient of ``rfft(x, n=N)`` is
wrong when ``n`` pads, but no autograd FFT is differentiated here: the VJP above replaces it.
"""

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp_argnums, primitive

from ssmref.checks import check_int, check_real_array, shape_of
from ssmref.recurrence import matmul_last
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


# Doubling: given the first L blocks S = [X, A X, ..., A^{L-1} X] and P = A^L, the next L are P S.
def powers_times(A, X, length):
    """``[A^0 X, A^1 X, ..., A^{length-1} X]`` side by side: ``(n, length, k)`` for ``X: (n, k)``
    (one ``(n, n) @ (n, L k)`` product per doubling)."""
    n, k = np.shape(X)
    S, power = X, A                                       # (n, L k) with L = 1
    while np.shape(S)[1] < length * k:
        S = np.concatenate([S, np.dot(power, S)], axis=1)
        power = np.dot(power, power)
    return np.reshape(S[:, :length * k], (n, length, k))


def _kernel(C, AkB):
    """``K: (L, p, m)``, ``K[k] = C A^k B``, from ``AkB: (n, L, m)``."""
    n, L, m = np.shape(AkB)
    CAkB = np.dot(C, np.reshape(AkB, (n, L * m)))                    # (p, L m)
    return np.transpose(np.reshape(CAkB, (-1, L, m)), (1, 0, 2))


def ssm_kernel(params, length):
    """The convolution kernel ``K: (length, p, m)``, ``K[k] = C A^k B``."""
    ssm_dims(params)
    length = check_int("length", length, minimum=1)
    return _kernel(params["C"], powers_times(params["A"], params["B"], length))


def next_pow2(x):
    """The smallest power of two ``>= x`` (``x >= 1``): an FFT length without wrap-around."""
    return 1 << (int(x) - 1).bit_length()


# z_t = Σ_{k=0}^{t} K_k u_{t-k}: zero-padded to N >= 2T, the circular convolution is the linear one.
@primitive
def fft_conv(K, u):
    """Causal convolution, unchecked: ``z_t = Σ_{k=0}^{t} K[k] u_{t-k}`` for real ``K: (T, p, m)``,
    ``u: (..., T, m)`` -> ``(..., T, p)``; one autograd node (VJP in the module docstring)."""
    T, p, m = K.shape
    N = next_pow2(2 * T)
    Kf = onp.fft.rfft(K, n=N, axis=0)                                   # (F, p, m)
    uf = onp.fft.rfft(onp.reshape(u, (-1, T, m)), n=N, axis=1)          # (batch, F, m)
    zf = onp.matmul(uf.transpose(1, 0, 2), Kf.transpose(0, 2, 1))       # (F, batch, p)
    z = onp.fft.irfft(zf.transpose(1, 0, 2), n=N, axis=1)[:, :T]        # (batch, T, p)
    return onp.reshape(z, u.shape[:-1] + (p,))


def _fft_conv_vjp(argnums, z, args, kwargs):
    K, u = args
    T, p, m = np.shape(K)

    def vjp(g):
        grads = []
        for argnum in argnums:
            if argnum == 0:
                # ∂K_k = Σ_b Σ_s g_{s+k} u_sᵀ: kernel flip(g) (T, p, b), input u (m, T, b)
                g_rev = np.reshape(g, (-1, T, p))[:, ::-1]                     # (b, T, p)
                u_b = np.reshape(u, (-1, T, m))                                # (b, T, m)
                corr = fft_conv(np.transpose(g_rev, (1, 2, 0)), np.transpose(u_b, (2, 1, 0)))
                grads.append(np.transpose(corr[:, ::-1], (1, 2, 0)))          # (T, p, m)
            else:
                # ∂u = flip(Kᵀ * flip(g))
                grads.append(fft_conv(np.transpose(K, (0, 2, 1)), g[..., ::-1, :])[..., ::-1, :])
        return tuple(grads)
    return vjp


defvjp_argnums(fft_conv, _fft_conv_vjp)


def causal_fft_conv(K, u):
    """``z_t = Σ_{k=0}^{t} K[k] u_{t-k}`` for ``K: (T, p, m)``, ``u: (T, m)`` or ``(..., T, m)``
    -> ``(..., T, p)``; ``K`` must have exactly ``T`` lags and ``m`` matching ``u``."""
    K_shape, u_shape = shape_of(K), shape_of(u)
    if len(u_shape) < 2:
        raise ValueError(f"u must have shape (..., T, m), got {u_shape}")
    T, m = u_shape[-2:]
    if len(K_shape) != 3 or K_shape[0] != T or K_shape[2] != m:
        raise ValueError(f"K must have shape ({T}, p, {m}) for u of shape {u_shape}, got {K_shape}")
    check_real_array("K", K)
    check_real_array("u", u)
    return fft_conv(K, u)


def ssm_convolve(params, u, h0=None):
    """Same values as :func:`ssmref.ssm.ssm_scan`, as an FFT convolution plus the ``h0`` term::

        y_t = (K * u)_t + D u_t + C A^{t+1} h0
        h_{T-1} = Σ_{k=0}^{T-1} A^k B u_{T-1-k} + A^T h0
    """
    m, n, p, batch = check_sequence_inputs(params, u, h0)
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    T = np.shape(u)[-2]
    AkB = powers_times(A, B, T)                                          # (n, T, m)
    y = fft_conv(_kernel(C, AkB), u) + matmul_last(u, D.T)               # (..., T, p)
    u_rev = np.reshape(u[..., ::-1, :], batch + (T * m,))                # u_{T-1-k}, (..., T m)
    h_last = np.dot(u_rev, np.transpose(np.reshape(AkB, (n, T * m))))     # (..., n)
    if h0 is not None:
        CAt = powers_times(A.T, np.dot(A.T, C.T), T)                     # (n, T, p): (C A^{t+1})ᵀ
        free = np.dot(h0, np.reshape(CAt, (n, T * p)))                   # (..., T p)
        y = y + np.reshape(free, np.shape(h0)[:-1] + (T, p))
        h_last = h_last + np.dot(h0, matrix_power(A, T).T)
    return y, h_last
