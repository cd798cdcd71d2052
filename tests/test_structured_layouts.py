"""S4D's per-channel layout, the real parametrisation, S5's bidirectional layer, HiPPO forms."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref.ssm import hippo_legs, ssm_kernel
from ssmref.structured import (bidirectional, bidirectional_kernels, diag_kernel, diag_scan,
                               diag_to_dense, from_real, hippo_dplr, hippo_nplr, init_diag,
                               s4d_kernel, s4d_legs, s4d_lin, s4d_to_diag)


def rel(a, b):
    return onp.max(onp.abs(onp.asarray(a) - onp.asarray(b))) / max(onp.max(onp.abs(b)), 1e-300)


def s4d_params(rng, H, N, c=None, per_state=False):
    shape_c = (H, N) if c is None else (c, H, N)
    return {"Lambda": -rng.uniform(0.1, 1, (H, N)) + 1j * rng.standard_normal((H, N)) * 4,
            "B": rng.standard_normal((H, N)) + 1j * rng.standard_normal((H, N)),
            "C": rng.standard_normal(shape_c) + 1j * rng.standard_normal(shape_c),
            "D": rng.standard_normal((H,) if c is None else (c, H)),
            "dt": onp.exp(rng.uniform(-4, -1, (H, N) if per_state else (H,)))}


@given(seed=st.integers(0, 2 ** 31), H=st.integers(1, 3), N=st.integers(1, 3), c=st.sampled_from([None, 2]),
       per_state=st.booleans(), method=st.sampled_from(["zoh", "bilinear"]))
def test_s4d_layout_is_a_block_structured_mimo_system(seed, H, N, c, per_state, method):
    rng = onp.random.default_rng(seed)
    prm = s4d_params(rng, H, N, c, per_state)
    mimo = s4d_to_diag(prm)
    cc = 1 if c is None else c
    assert mimo["B"].shape == (H * N, H) and mimo["C"].shape == (cc * H, H * N) and mimo["dt"].shape == (H * N,)
    K = s4d_kernel(prm, 17, method=method, output="2re")
    K_mimo = diag_kernel(mimo, 17, method=method, output="2re")               # (L, cH, H)
    K3 = K if c is not None else K[None]
    for h in range(H):
        for o in range(cc):
            assert rel(K3[o, h], K_mimo[:, o * H + h, h]) < 1e-13
            others = onp.delete(K_mimo[:, o * H + h, :], h, axis=1)
            assert onp.all(others == 0)                                        # channels do not mix
    # channel h alone is the SISO system (Λ_h, B_h, C_h, Δ_h)
    u = rng.standard_normal((12, H))
    y, _ = diag_scan(mimo, u, method=method, output="2re")
    dt = prm["dt"] if per_state else onp.repeat(prm["dt"][:, None], N, axis=1)
    for h in range(H):
        siso = {"Lambda": prm["Lambda"][h], "B": prm["B"][h][:, None],
                "C": (prm["C"][h] if c is None else prm["C"][0, h])[None],
                "D": onp.array([[prm["D"][h] if c is None else prm["D"][0, h]]]), "dt": dt[h]}
        y_h, _ = diag_scan(siso, u[:, h:h + 1], method=method, output="2re")
        assert rel(y[:, h], y_h[:, 0]) < 1e-13


def test_s4d_kernel_gradients_and_hostile(rng):
    prm = s4d_params(rng, 2, 3)
    W = rng.standard_normal((2, 6))
    for key in ("Lambda", "B", "C", "dt"):
        check_grads(lambda x: np.sum(W * s4d_kernel(dict(prm, **{key: x}), 6, method="zoh", output="2re")),
                    modes=["rev"], order=2)(prm[key])
    cases = [("Lambda", onp.ones(3) + 0j, "Lambda'\\] must have shape \\(H, N\\)"),
             ("B", onp.ones((2, 4)) + 0j, "B'\\] must have shape \\(2, 3\\)"),
             ("C", onp.ones((2, 2, 4)) + 0j, "C'\\] must have shape \\(\\*, 2, 3\\)"),
             ("D", onp.ones(3), "D'\\] must have shape \\(1, 2\\)"),
             ("dt", onp.ones(3), "dt'\\] must have shape \\(2,\\) \\(per channel\\) or \\(2, 3\\)"),
             ("dt", -onp.ones(2), "dt'\\] must be > 0"),
             ("dt", onp.ones(2, dtype=bool), "dt'\\] must be numeric, got a bool")]
    for key, value, match in cases:
        with pytest.raises(ValueError, match=match):
            s4d_kernel(dict(prm, **{key: value}), 6, method="zoh", output="2re")


def test_real_parametrisation_is_stable_and_differentiable(rng):
    raw = {"log_neg_re": rng.standard_normal(3), "im": rng.standard_normal(3) * 3,
           "B_re": rng.standard_normal((3, 2)), "B_im": rng.standard_normal((3, 2)),
           "C_re": rng.standard_normal((1, 3)), "C_im": rng.standard_normal((1, 3)),
           "D": rng.standard_normal((1, 2)), "log_dt": onp.log(0.1)}
    prm = from_real(raw)
    assert onp.all(prm["Lambda"].real < 0)
    u = rng.standard_normal((10, 2))

    def loss(r):
        return np.sum(diag_scan(from_real(r), u, method="zoh", output="2re")[0] ** 2)
    g = autograd.grad(loss)(raw)
    assert set(g) == set(raw) and all(onp.isrealobj(v) for v in g.values())
    for key in raw:
        check_grads(lambda x: loss(dict(raw, **{key: x})), modes=["rev"], order=2)(raw[key])
    with pytest.raises(ValueError, match="raw\\['im'\\] must be real"):
        from_real(dict(raw, im=raw["im"] + 1j))
    with pytest.raises(ValueError, match="missing \\['log_dt'\\]"):
        from_real({k: v for k, v in raw.items() if k != "log_dt"})


def two_sided(K_f, K_b, D, u):
    """y_t = sum_k K_f[k] u_{t-k} + sum_k K_b[k] u_{t+k} + D u_t, as explicit Toeplitz sums."""
    T = u.shape[-2]
    y = u @ D.T
    for t in range(T):
        for k in range(t + 1):
            y[..., t, :] += u[..., t - k, :] @ K_f[k].T
        for k in range(T - t):
            y[..., t, :] += u[..., t + k, :] @ K_b[k].T
    return y


@pytest.mark.parametrize("separate", [False, True])
@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_bidirectional_is_a_two_sided_convolution(rng, separate, method):
    prm = init_diag(3, 2, 2, rng=1, init="random", dt_min=0.05, dt_max=0.3, dt_per_state=True)
    back = {"C": rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))}
    if separate:
        back.update(init_diag(4, 2, 2, rng=2, init="random", dt_min=0.05, dt_max=0.3))
        back.pop("D")
    u = rng.standard_normal((3, 15, 2))
    K_f, K_b = bidirectional_kernels(prm, back, 15, method=method, output="2re")
    dense_b = diag_to_dense(dict(prm, **back, D=onp.zeros((2, 2))), method=method, output="2re")
    assert rel(K_b, ssm_kernel(dense_b, 15)) < 1e-12
    want = two_sided(K_f, K_b, prm["D"], u)
    for mode in ("scan", "parallel", "convolve"):
        y = bidirectional(prm, back, u, method=method, output="2re", mode=mode)
        assert y.shape == (3, 15, 2) and rel(y, want) < 1e-12, mode
    if not separate:   # lag 0 counted in both directions: K_f[0] + K_b[0] on u_t
        y1 = bidirectional(prm, back, u[:, :1], method=method, output="2re")
        assert rel(y1[:, 0], u[:, 0] @ (K_f[0] + K_b[0] + prm["D"]).T) < 1e-13


def test_bidirectional_gradients_and_hostile(rng):
    prm = init_diag(2, 1, 1, rng=3, init="random", dt_min=0.1, dt_max=0.3)
    back = {"C": rng.standard_normal((1, 2)) + 1j * rng.standard_normal((1, 2))}
    u = rng.standard_normal((6, 1))
    check_grads(lambda c: np.sum(bidirectional(prm, {"C": c}, u, method="zoh", output="2re") ** 2),
                modes=["rev"], order=2)(back["C"])
    check_grads(lambda lam: np.sum(bidirectional(dict(prm, Lambda=lam), back, u, method="zoh", output="2re",
                                                 mode="parallel") ** 2), modes=["rev"], order=2)(prm["Lambda"])
    with pytest.raises(ValueError, match="backward must be a dict with key 'C'"):
        bidirectional(prm, {"B": prm["B"]}, u, method="zoh", output="2re")
    with pytest.raises(ValueError, match="unexpected keys \\['D'\\]"):
        bidirectional(prm, dict(back, D=prm["D"]), u, method="zoh", output="2re")
    with pytest.raises(ValueError, match="backward\\['C'\\] must have shape \\(1, n_b\\)"):
        bidirectional(prm, {"C": onp.ones((2, 2))}, u, method="zoh", output="2re")
    with pytest.raises(ValueError, match="mode must be one of"):
        bidirectional(prm, back, u, method="zoh", output="2re", mode="fft")


@pytest.mark.parametrize("N", [1, 2, 5, 16])
def test_hippo_nplr_and_dplr_reconstruct_hippo_legs(N):
    A, P, B = hippo_nplr(N)
    A_ref, b_ref = hippo_legs(N)
    assert onp.array_equal(A, A_ref) and onp.array_equal(B[:, 0], b_ref)
    S = A + P @ P.T
    assert onp.allclose(S + S.T, -onp.eye(N), atol=1e-13)                      # normal: -I/2 + skew
    lam, Pt, Bt, V = hippo_dplr(N)
    assert onp.allclose(V.conj().T @ V, onp.eye(N), atol=1e-13)                 # unitary
    assert onp.allclose(lam.real, -0.5, atol=0)
    assert onp.allclose(onp.sort(lam.imag), -onp.sort(lam.imag)[::-1], atol=1e-12)         # ±μ pairs
    assert rel(V @ (onp.diag(lam) - Pt @ Pt.conj().T) @ V.conj().T, A) < 10 * N * 1e-16
    assert rel(V @ Bt, B) < 10 * N * 1e-16


def test_s4d_inits():
    assert onp.array_equal(s4d_lin(3), onp.array([-0.5, -0.5 + 1j * onp.pi, -0.5 + 2j * onp.pi]))
    lam, B = s4d_legs(3)
    full, _, Bf, _ = hippo_dplr(6)
    assert lam.shape == (3,) and onp.all(lam.imag < 0)
    assert onp.allclose(onp.sort_complex(onp.concatenate([lam, lam.conj()])), onp.sort_complex(full))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="N must be an int"):
            hippo_dplr(bad)


def test_gradients_with_respect_to_whole_parameter_dicts(rng):
    """Under autograd the params dict arrives as a DictBox: every public function accepts it."""
    from ssmref.structured import diag_convolve, dplr_kernel, dplr_scan, init_dplr
    prm = init_diag(3, 2, 1, rng=4, init="random", dt_min=0.05, dt_max=0.2, dt_per_state=True)
    u = rng.standard_normal((8, 2))

    def loss(q):
        return (np.sum(diag_scan(q, u, method="zoh", output="2re")[0] ** 2)
                + np.sum(diag_convolve(q, u, method="bilinear", output="re")[0] ** 2)
                + np.sum(bidirectional(q, {"C": q["C"]}, u, method="zoh", output="2re") ** 2))
    g = autograd.grad(loss)(prm)
    for key in prm:
        g_key = autograd.grad(lambda x: loss(dict(prm, **{key: x})))(prm[key])
        assert onp.allclose(g[key], g_key, rtol=1e-12, atol=1e-14), key
    s4 = dict(init_dplr(3, 1, 1, rng=5, dt=0.1), Ct=rng.standard_normal((1, 3)) + 0j)
    g = autograd.grad(lambda q: np.sum(dplr_kernel(q, 6) ** 2) + np.sum(dplr_scan(q, u[:, :1])[0] ** 2))(s4)
    assert set(g) == set(s4) and g["Lambda"].dtype == onp.complex128 and onp.isrealobj(g["dt"])


def test_hostile_initialisation_arguments():
    cases = [(dict(n=0), "n must be an int"), (dict(m=True), "m must be an int"),
             (dict(init="hippo"), "init must be one of"), (dict(dt_min=0.0), "dt_min must be > 0"),
             (dict(dt_min=0.1, dt_max=0.01), "dt_max must be >= 0.1"),
             (dict(dt_per_state=1), "dt_per_state must be True or False")]
    for change, match in cases:
        kw = dict(n=3, m=1, p=1, rng=0) | change
        with pytest.raises(ValueError, match=match):
            init_diag(kw.pop("n"), kw.pop("m"), kw.pop("p"), **kw)
    from ssmref.structured import init_dplr
    with pytest.raises(ValueError, match="dt must be > 0"):
        init_dplr(4, 1, 1, dt=-1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        diag_to_dense(init_diag(2, 1, 1, rng=0), method="euler", output="re")
