"""S4's DPLR form: bilinear discretization, the O(N r) recurrence and the Cauchy kernel equal the
dense real reference (ssmref.ssm) on the 2x2 embedding; gradients through the ifft and the Woodbury
solve are exact to second order; bad arguments raise ValueError."""

import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref.ssm import discretize, ssm_kernel, ssm_scan
from ssmref.structured import (dplr_discretize, dplr_from_half, dplr_kernel, dplr_scan, dplr_to_dense,
                               dplr_truncate, dplr_untruncate, init_dplr)
from ssmref.structured.embed import complex_state, real_state


def rel(a, b):
    return onp.max(onp.abs(onp.asarray(a) - onp.asarray(b))) / max(onp.max(onp.abs(b)), 1e-300)


def random_dplr(rng, N, m, p, r):
    """A generic stable DPLR system: Re Λ < 0 and Q = P, so A + A^* = 2 Re Λ − 2 P P^* < 0."""
    P = (rng.standard_normal((N, r)) + 1j * rng.standard_normal((N, r))) / 2
    return {"Lambda": -rng.uniform(0.1, 1, N) + 2j * rng.standard_normal(N), "P": P, "Q": P.copy(),
            "B": rng.standard_normal((N, m)) + 1j * rng.standard_normal((N, m)),
            "C": rng.standard_normal((p, N)) + 1j * rng.standard_normal((p, N)),
            "D": rng.standard_normal((p, m)), "dt": float(rng.uniform(0.05, 0.5))}


@given(seed=st.integers(0, 2 ** 31), N=st.integers(1, 6), r=st.integers(1, 2), hippo=st.booleans())
def test_discretization_equals_dense_bilinear(seed, N, r, hippo):
    rng = onp.random.default_rng(seed)
    prm = init_dplr(N, 2, 1, rng=seed, dt=0.1) if hippo else random_dplr(rng, N, 2, 1, r)
    cont = dplr_to_dense(prm, discrete=False)
    Ad, Bd = discretize(cont["A"], cont["B"], prm["dt"], "bilinear")
    disc = dplr_to_dense(prm)
    assert rel(disc["A"], Ad) < 1e-13 and rel(disc["B"], Bd) < 1e-13
    Abar, Bbar = dplr_discretize(prm)
    A = onp.diag(prm["Lambda"]) - prm["P"] @ prm["Q"].conj().T
    I = onp.eye(N)
    assert rel(Abar, onp.linalg.solve(I - prm["dt"] / 2 * A, I + prm["dt"] / 2 * A)) < 1e-13


@given(seed=st.integers(0, 2 ** 31), N=st.integers(1, 5), r=st.integers(1, 2), T=st.integers(1, 30),
       batch=st.sampled_from([None, 2]), with_h0=st.booleans())
def test_recurrence_equals_dense_scan(seed, N, r, T, batch, with_h0):
    rng = onp.random.default_rng(seed)
    prm = random_dplr(rng, N, 2, 3, r)
    lead = () if batch is None else (batch,)
    u = rng.standard_normal(lead + (T, 2))
    h0 = (rng.standard_normal(lead + (N,)) + 1j * rng.standard_normal(lead + (N,))) if with_h0 else None
    y, x = dplr_scan(prm, u, h0)
    y2, x2 = ssm_scan(dplr_to_dense(prm), u, None if h0 is None else real_state(h0))
    assert y.shape == lead + (T, 3) and rel(y, y2) < 1e-12 and rel(x, complex_state(x2)) < 1e-12


@given(seed=st.integers(0, 2 ** 31), N=st.integers(1, 6), r=st.integers(1, 2), L=st.integers(1, 70),
       hippo=st.booleans())
def test_cauchy_kernel_equals_dense_kernel(seed, N, r, L, hippo):
    """K from C̃ by the generating function at the roots of unity (odd and even L: z = -1 included)."""
    rng = onp.random.default_rng(seed)
    prm = init_dplr(N, 2, 2, rng=seed, dt=0.05) if hippo else random_dplr(rng, N, 2, 2, r)
    Ct = dplr_truncate(prm, L)
    K = dplr_kernel(dict(prm, Ct=Ct), L)
    assert K.shape == (L, 2, 2)
    assert rel(K, ssm_kernel(dplr_to_dense(prm), L)) < 1e-11
    assert rel(dplr_untruncate(dict(prm, Ct=Ct), L), prm["C"]) < 1e-11


def test_truncation_convention_is_row_times_matrix_without_conjugation(rng):
    prm = random_dplr(rng, 4, 1, 2, 1)
    Abar, _ = dplr_discretize(prm)
    L = 9
    want = prm["C"] @ (onp.eye(4) - onp.linalg.matrix_power(Abar, L))
    assert rel(dplr_truncate(prm, L), want) < 1e-13
    # annotated-s4's test_gen_dplr: its C argument is (I - Ā^L)^* Cb with output row conj(Cb)
    Cb = prm["C"].conj().T                                                                  # (N, p)
    C_annot = (onp.eye(4) - onp.linalg.matrix_power(Abar, L)).conj().T @ Cb
    assert rel(C_annot.conj().T, want) < 1e-13                                              # = conj(C̃)
    K = dplr_kernel(dict(prm, Ct=C_annot.conj().T), L)
    assert rel(K, ssm_kernel(dplr_to_dense(prm), L)) < 1e-12


def test_conjugate_pair_halves_expand_to_a_real_system(rng):
    half = random_dplr(rng, 3, 1, 1, 1)
    full = dplr_from_half(half)
    assert full["Lambda"].shape == (6,) and full["C"].shape == (1, 6) and full["dt"] == half["dt"]
    u = rng.standard_normal((20, 1))
    y, x = dplr_scan(full, u)
    assert onp.allclose(x[3:], x[:3].conj(), rtol=1e-13, atol=1e-15)           # the state is [x, conj(x)]
    assert rel(y[-1], 2 * onp.real(half["C"] @ x[:3]) + half["D"] @ u[-1]) < 1e-13   # Re(C_full x_full)
    dense = dplr_to_dense(full)
    Ct = dplr_truncate(full, 16)
    assert rel(dplr_kernel(dict(full, Ct=Ct), 16), ssm_kernel(dense, 16)) < 1e-12
    # the full state stays [x, conj(x)]: its kernel's ifft is real before Re is taken
    Abar, Bbar = dplr_discretize(full)
    K_complex = onp.stack([full["C"] @ onp.linalg.matrix_power(Abar, k) @ Bbar for k in range(16)])
    assert onp.abs(K_complex.imag).max() < 1e-13 * onp.abs(K_complex).max()


def test_gradients_second_order(rng):
    prm = random_dplr(rng, 3, 2, 2, 2)
    prm["Q"] = prm["Q"] + 0.3 * (rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2)))
    prm["Ct"] = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    W = rng.standard_normal((8, 2, 2))
    for key in ("Lambda", "P", "Q", "B", "Ct", "dt"):
        check_grads(lambda x: np.sum(W * dplr_kernel(dict(prm, **{key: x}), 8)), modes=["rev"], order=2)(prm[key])
    u = rng.standard_normal((5, 2))
    Wy = rng.standard_normal((5, 2))
    for key in ("Lambda", "P", "Q", "B", "C", "D", "dt"):
        def loss(x):
            y, h = dplr_scan(dict(prm, **{key: x}), u)
            return np.sum(Wy * y) + np.sum(np.abs(h) ** 2)
        check_grads(loss, modes=["rev"], order=2)(prm[key])
    check_grads(lambda v: np.sum(Wy * dplr_scan(prm, v)[0]), modes=["rev"], order=2)(u)
    for key in ("Lambda", "P", "C", "dt"):
        check_grads(lambda x: np.sum(np.abs(dplr_truncate(dict(prm, **{key: x}), 5)) ** 2),
                    modes=["rev"], order=2)(prm[key])


def test_hostile_arguments(rng):
    prm = random_dplr(rng, 3, 2, 2, 1)
    prm["Ct"] = prm["C"]
    u = rng.standard_normal((4, 2))
    cases = [
        (dict(Lambda=onp.ones((3, 1)) + 0j), "Lambda'\\] must have shape \\(N,\\)"),
        (dict(P=onp.ones((4, 1))), "P'\\] must have shape \\(3, \\*\\)"),
        (dict(P=onp.ones((3, 0))), "rank r >= 1"),
        (dict(Q=onp.ones((3, 2))), "Q'\\] must have shape \\(3, 1\\)"),
        (dict(Q=onp.ones((3, 1), dtype=bool)), "Q'\\] must be numeric, got a bool"),
        (dict(B=onp.ones((2, 2))), "B'\\] must have shape \\(3, \\*\\)"),
        (dict(dt=onp.ones(3) * 0.1), "dt'\\] must be a scalar for a DPLR system"),
        (dict(dt=-0.1), "dt'\\] must be > 0"),
        (dict(dt=onp.nan), "dt'\\] has non-finite"),
        (dict(Ct=onp.ones((2, 4))), "Ct'\\] must have shape \\(\\*, 3\\)"),
        (dict(Lambda=onp.array([0.1, -1, -1]) + 0j), "positive real part"),
    ]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            dplr_kernel(dict(prm, **change), 5)
    with pytest.raises(ValueError, match="missing 'Ct'"):
        dplr_kernel({k: v for k, v in prm.items() if k != "Ct"}, 5)
    with pytest.raises(ValueError, match="missing \\['Q'\\]"):
        dplr_scan({k: v for k, v in prm.items() if k != "Q"}, u)
    with pytest.raises(ValueError, match="D'\\] must be real"):
        dplr_scan(dict(prm, D=prm["D"] + 1j), u)
    with pytest.raises(ValueError, match="u must be real"):
        dplr_scan(prm, u + 1j)
    with pytest.raises(ValueError, match="h0 must have shape \\(3,\\)"):
        dplr_scan(prm, u, onp.ones(2))
    with pytest.raises(ValueError, match="length must be an int"):
        dplr_truncate(prm, 0)
    stuck = dict(prm, Lambda=onp.array([0.0, -1, -1]) + 0j, P=onp.zeros((3, 1)), Q=onp.zeros((3, 1)))
    with pytest.raises(ValueError, match="I - Abar\\^L is singular"):
        dplr_untruncate(stuck, 4)                                     # Λ = 0: Ā has eigenvalue 1
    with pytest.raises(ValueError, match="discrete must be True or False"):
        dplr_to_dense(prm, discrete="yes")
