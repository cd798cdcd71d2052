"""The complex-gradient convention: ssmref (autograd, like JAX) returns ∂L/∂Re − i ∂L/∂Im for a
real loss; PyTorch's ``.grad`` is the conjugate, ∂L/∂Re + i ∂L/∂Im.  Shown by central differences
on the real and imaginary parts separately, and (when torch is installed) against torch."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest

from ssmref.selective import selective_scan

b, d, n, L = 1, 2, 2, 5


def case(rng):
    cplx = lambda *s: rng.standard_normal(s) + 1j * rng.standard_normal(s)   # noqa: E731
    return dict(u=rng.standard_normal((b, d, L)), delta=rng.uniform(0.1, 0.6, (b, d, L)),
                A=-rng.uniform(0.2, 1.0, (d, n)) + 1j * rng.standard_normal((d, n)),
                B=cplx(d, n), C=cplx(b, n, L), D=rng.standard_normal(d))


def loss_fn(kw, W):
    def loss(**over):
        out, last = selective_scan(**{**kw, **over}, return_last_state=True)
        return np.sum(W * out) + np.sum(np.abs(last) ** 2)
    return loss


def central_differences(loss, name, z, step=1e-6):
    """``(∂L/∂Re z, ∂L/∂Im z)`` entry by entry."""
    d_re, d_im = onp.zeros(z.shape), onp.zeros(z.shape)
    for idx in onp.ndindex(z.shape):
        e = onp.zeros(z.shape, complex)
        e[idx] = step
        d_re[idx] = (loss(**{name: z + e}) - loss(**{name: z - e})) / (2 * step)
        d_im[idx] = (loss(**{name: z + 1j * e}) - loss(**{name: z - 1j * e})) / (2 * step)
    return d_re, d_im


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_autograd_gradient_is_dre_minus_i_dim(rng, name):
    kw = case(rng)
    loss = loss_fn(kw, rng.standard_normal((b, d, L)))
    g = autograd.grad(lambda z: loss(**{name: z}))(kw[name])
    d_re, d_im = central_differences(loss, name, kw[name])
    onp.testing.assert_allclose(g.real, d_re, rtol=1e-7, atol=1e-8)
    onp.testing.assert_allclose(g.imag, -d_im, rtol=1e-7, atol=1e-8)


def torch_selective_scan(torch, u, delta, A, B, C, D):
    """The definition in PyTorch (complex A, fixed B, varying C), a loop over time."""
    x = torch.zeros(u.shape[0], A.shape[0], A.shape[1], dtype=torch.complex128)
    ys = []
    for t in range(u.shape[2]):
        x = torch.exp(delta[:, :, t, None] * A) * x + (delta[:, :, t] * u[:, :, t])[..., None] * B
        ys.append(2 * torch.einsum("bdn,bn->bd", x, C[:, :, t]).real + D * u[:, :, t])
    return torch.stack(ys, dim=-1), x


def test_torch_grad_is_the_conjugate(rng):
    torch = pytest.importorskip("torch")
    kw = case(rng)
    W = rng.standard_normal((b, d, L))
    loss = loss_fn(kw, W)
    t = {k: torch.tensor(v, requires_grad=k in ("A", "B", "C")) for k, v in kw.items()}
    out, last = torch_selective_scan(torch, **t)
    onp.testing.assert_allclose(out.detach().numpy(), selective_scan(**kw), rtol=1e-13, atol=1e-13)
    ((torch.tensor(W) * out).sum() + (last.abs() ** 2).sum()).backward()
    for name in ("A", "B", "C"):
        g = autograd.grad(lambda z: loss(**{name: z}))(kw[name])
        onp.testing.assert_allclose(t[name].grad.numpy(), onp.conj(g), rtol=1e-12, atol=1e-12)
    d_re, d_im = central_differences(loss, "A", kw["A"])
    onp.testing.assert_allclose(t["A"].grad.numpy(), d_re + 1j * d_im, rtol=1e-7, atol=1e-8)
