"""The gradient convention for complex parameters, shown three ways.

For a real loss ``L(z)``, ``z = x + iy``: ``autograd.grad(L)(z) = ∂L/∂x − i ∂L/∂y`` (central
differences on the real and imaginary parts), which is ``jax.grad``'s value; PyTorch's ``.grad``
is the conjugate, ``∂L/∂x + i ∂L/∂y``.  The JAX and PyTorch losses below are written independently
(S4D's kernel formula, ``2 Re(Σ_n C_n (e^{ΔΛ_n} − 1)/Λ_n e^{kΔΛ_n} B_n)``) on the same inputs.
"""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest

from ssmref.structured import diag_kernel, diag_scan, init_diag

L = 12


def setup():
    prm = init_diag(4, 1, 1, rng=5, init="random", dt_min=0.05, dt_max=0.2)
    W = onp.random.default_rng(6).standard_normal(L)
    return prm, W


def loss_ssmref(lam, prm, W):
    K = diag_kernel(dict(prm, Lambda=lam), L, method="zoh", output="2re")[:, 0, 0]
    return np.sum(W * K) + 0.1 * np.sum(K ** 2)


def central_differences(f, z, h=1e-6):
    """(∂f/∂x, ∂f/∂y) for each entry of the complex array ``z``."""
    dx, dy = onp.zeros(z.shape), onp.zeros(z.shape)
    for i in range(z.size):
        e = onp.zeros(z.shape)
        e.flat[i] = h
        dx.flat[i] = (f(z + e) - f(z - e)) / (2 * h)
        dy.flat[i] = (f(z + 1j * e) - f(z - 1j * e)) / (2 * h)
    return dx, dy


def test_autograd_gradient_is_d_dx_minus_i_d_dy():
    prm, W = setup()
    lam = prm["Lambda"]
    g = autograd.grad(loss_ssmref)(lam, prm, W)
    dx, dy = central_differences(lambda z: loss_ssmref(z, prm, W), lam)
    assert onp.allclose(g, dx - 1j * dy, rtol=1e-7, atol=1e-9)
    assert not onp.allclose(g, dx + 1j * dy, rtol=1e-3)                  # the convention matters here


def test_the_same_convention_for_b_c_and_the_scan():
    prm, W = setup()
    u = onp.random.default_rng(7).standard_normal((9, 1))

    def loss(key):
        return lambda z: np.sum(diag_scan(dict(prm, **{key: z}), u, method="bilinear", output="re")[0] ** 2)
    for key in ("B", "C", "Lambda"):
        dx, dy = central_differences(loss(key), prm[key])
        assert onp.allclose(autograd.grad(loss(key))(prm[key]), dx - 1j * dy, rtol=1e-7, atol=1e-9), key


def test_jax_grad_equals_autograd_grad():
    jax = pytest.importorskip("jax")
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        check_against_jax(jax)
    finally:
        jax.config.update("jax_enable_x64", before)


def check_against_jax(jax):
    jnp = jax.numpy
    prm, W = setup()
    dt, B, C = prm["dt"], prm["B"][:, 0], prm["C"][0]

    def loss_jax(lam):
        k = jnp.arange(L)[:, None]
        K = 2 * jnp.real(jnp.exp(k * dt * lam) @ (C * (jnp.exp(dt * lam) - 1) / lam * B))
        return jnp.sum(W * K) + 0.1 * jnp.sum(K ** 2)
    lam = prm["Lambda"]
    assert abs(float(loss_jax(lam)) - loss_ssmref(lam, prm, W)) < 1e-12
    g_jax = onp.asarray(jax.grad(loss_jax)(jnp.asarray(lam)))
    assert onp.allclose(g_jax, autograd.grad(loss_ssmref)(lam, prm, W), rtol=1e-12, atol=1e-13)


def test_torch_grad_is_the_conjugate():
    torch = pytest.importorskip("torch")
    prm, W = setup()
    dt = prm["dt"]
    B, C = torch.tensor(prm["B"][:, 0]), torch.tensor(prm["C"][0])
    lam = torch.tensor(prm["Lambda"], requires_grad=True)
    k = torch.arange(L, dtype=torch.float64)[:, None]
    K = 2 * torch.real(torch.exp(k * dt * lam) @ (C * (torch.exp(dt * lam) - 1) / lam * B))
    loss = torch.sum(torch.tensor(W) * K) + 0.1 * torch.sum(K ** 2)
    loss.backward()
    assert abs(loss.item() - loss_ssmref(prm["Lambda"], prm, W)) < 1e-12
    g_ref = autograd.grad(loss_ssmref)(prm["Lambda"], prm, W)
    assert onp.allclose(lam.grad.numpy(), onp.conj(g_ref), rtol=1e-12, atol=1e-13)
