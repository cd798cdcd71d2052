"""The SSM: the three modes agree, state carries, gradients are right, bad input is refused."""

import os
import zipfile

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
import scipy.signal
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref import params as P
from ssmref import ssm as S

MODES = list(S.MODES.items())


def random_system(rng, m=None, n=None, p=None, rho=None):
    m = m or int(rng.integers(1, 4))
    n = n or int(rng.integers(1, 9))
    p = p or int(rng.integers(1, 4))
    rho = rng.uniform(0.0, 0.99) if rho is None else rho
    return S.init_ssm(m, n, p, rng=rng, scale=rho)


def rel_err(a, b):
    return onp.max(onp.abs(a - b)) / max(onp.max(onp.abs(b)), 1e-300)


# ----------------------------------------------------------------------------- equivalences

@given(seed=st.integers(0, 2 ** 32 - 1), T=st.integers(1, 300), batched=st.booleans(),
       with_h0=st.booleans())
def test_modes_agree(seed, T, batched, with_h0):
    rng = onp.random.default_rng(seed)
    params = random_system(rng)
    m, n, _ = S.ssm_dims(params)
    batch = (int(rng.integers(1, 4)),) if batched else ()
    u = rng.standard_normal(batch + (T, m))
    h0 = rng.standard_normal(batch + (n,)) if with_h0 else None
    y, h = S.ssm_scan(params, u, h0)
    for name, f in MODES:
        y2, h2 = f(params, u, h0)
        assert y2.shape == y.shape and h2.shape == h.shape, name
        assert rel_err(y2, y) < 1e-10, name
        assert rel_err(h2, h) < 1e-10, name


def test_scan_matches_explicit_loop(rng):
    params = random_system(rng, 2, 3, 2)
    u, h0 = rng.standard_normal((6, 2)), rng.standard_normal(3)
    A, B, C, D = (params[k] for k in "ABCD")
    h, ys = h0, []
    for t in range(6):
        h = A @ h + B @ u[t]
        ys.append(C @ h + D @ u[t])
    y, h_last = S.ssm_scan(params, u, h0)
    onp.testing.assert_allclose(y, onp.array(ys), rtol=1e-14)
    onp.testing.assert_allclose(h_last, h, rtol=1e-14)


def test_old_state_convention_maps_to_new(rng):
    """y_t = C h_t + D u_t  equals  y_t = C' h_{t-1} + D' u_t  with C' = C A, D' = C B + D."""
    params = random_system(rng, 2, 4, 3)
    u = rng.standard_normal((10, 2))
    y, _ = S.ssm_scan(params, u)
    A, B, C, D = (params[k] for k in "ABCD")
    # scipy.signal.dlsim reads the old state: y_t = C' x_t + D' u_t with x_{t+1} = A x_t + B u_t
    _, y_old, _ = scipy.signal.dlsim((A, B, C @ A, C @ B + D, 1.0), u)
    onp.testing.assert_allclose(y, y_old, rtol=1e-12, atol=1e-14)


def test_kernel_is_impulse_response(rng):
    params = random_system(rng, 2, 5, 3)
    K = S.ssm_kernel(params, 9)
    for j in range(2):
        impulse = onp.zeros((9, 2))
        impulse[0, j] = 1.0
        y, _ = S.ssm_scan(params, impulse)
        # y_0 = C B e_j + D e_j, then y_k = C A^k B e_j
        onp.testing.assert_allclose(y[1:, :], K[1:, :, j], rtol=1e-12, atol=1e-15)
        onp.testing.assert_allclose(y[0], K[0, :, j] + params["D"][:, j], rtol=1e-12)


@given(seed=st.integers(0, 2 ** 32 - 1), cuts=st.lists(st.integers(1, 59), max_size=4))
def test_chunks_with_carried_state_equal_whole(seed, cuts):
    rng = onp.random.default_rng(seed)
    params = random_system(rng)
    m, n, _ = S.ssm_dims(params)
    u = rng.standard_normal((2, 60, m))
    h0 = rng.standard_normal((2, n))
    bounds = [0] + sorted(set(cuts)) + [60]
    for _, f in MODES:
        y_whole, h_whole = f(params, u, h0)
        h, pieces = h0, []
        for a, b in zip(bounds[:-1], bounds[1:]):
            y, h = f(params, u[:, a:b], h)
            pieces.append(y)
        onp.testing.assert_allclose(onp.concatenate(pieces, axis=1), y_whole, rtol=1e-10, atol=1e-13)
        onp.testing.assert_allclose(h, h_whole, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("mode", S.MODES)
def test_batched_equals_per_row(rng, mode):
    params = random_system(rng, 3, 4, 2)
    u, h0 = rng.standard_normal((5, 17, 3)), rng.standard_normal((5, 4))
    y, h = S.run_ssm(params, u, h0, mode)
    for b in range(5):
        yb, hb = S.run_ssm(params, u[b], h0[b], mode)
        onp.testing.assert_allclose(y[b], yb, rtol=1e-12, atol=1e-14)
        onp.testing.assert_allclose(h[b], hb, rtol=1e-12, atol=1e-14)


def test_shared_h0_broadcasts_over_batch(rng):
    params = random_system(rng, 2, 3, 2)
    u, h0 = rng.standard_normal((4, 8, 2)), rng.standard_normal(3)
    for _, f in MODES:
        y, _ = f(params, u, h0)
        y_rows, _ = f(params, u, onp.tile(h0, (4, 1)))
        onp.testing.assert_allclose(y, y_rows, rtol=1e-13)


def test_long_sequences_cross_fft_sizes(rng):
    params = random_system(rng, 2, 8, 2, rho=0.99)
    for T in (1023, 1024, 1025, 2049):
        u = rng.standard_normal((T, 2))
        y, h = S.ssm_scan(params, u)
        for _, f in MODES:
            y2, h2 = f(params, u)
            assert rel_err(y2, y) < 1e-10 and rel_err(h2, h) < 1e-10


def test_step_broadcasts_leading_dims(rng):
    params = random_system(rng, 2, 3, 2)
    h, u = rng.standard_normal((4, 1, 3)), rng.standard_normal((5, 2))
    y, h2 = S.ssm_step(params, h, u)
    assert y.shape == (4, 5, 2) and h2.shape == (4, 5, 3)


def test_associative_scan_time_varying(rng):
    """The generic scan is right for time-varying A_t too (as a port of S5/Mamba would use it)."""
    T, n = 11, 3
    M = rng.standard_normal((T, n, n)) * 0.5
    v = rng.standard_normal((T, 2, n))
    _, h = S.associative_scan(S.affine_combine, (M, v))
    x, want = onp.zeros((2, n)), []
    for t in range(T):
        x = x @ M[t].T + v[t]
        want.append(x)
    onp.testing.assert_allclose(h, onp.array(want), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- initialisation

def test_init_shapes_and_scale(rng):
    params = S.init_ssm(3, 7, 2, rng=rng, scale=0.5)
    assert {k: v.shape for k, v in params.items()} == {"A": (7, 7), "B": (7, 3), "C": (2, 7), "D": (2, 3)}
    assert abs(S.spectral_radius(params["A"]) - 0.5) < 1e-12
    assert all(v.dtype == onp.float64 for v in params.values())


def test_init_is_seeded():
    a, b = S.init_ssm(2, 3, 1, rng=5), S.init_ssm(2, 3, 1, rng=5)
    assert P.tree_allclose(a, b, rtol=0)
    assert not P.tree_allclose(a, S.init_ssm(2, 3, 1, rng=6), rtol=0)


def test_hippo_legs_matrix():
    A, b = S.hippo_legs(3)
    s = onp.sqrt([1.0, 3.0, 5.0])
    want = onp.array([[-1, 0, 0], [-s[1] * s[0], -2, 0], [-s[2] * s[0], -s[2] * s[1], -3]])
    onp.testing.assert_allclose(A, want, rtol=1e-15)
    onp.testing.assert_allclose(b, s, rtol=1e-15)


@pytest.mark.parametrize("n", [1, 4, 64])
def test_hippo_init_is_stable(n):
    params = S.init_ssm(2, n, 1, rng=0, method="hippo", dt=0.01)
    assert abs(S.spectral_radius(params["A"]) - onp.exp(-0.01)) < 1e-8


@pytest.mark.parametrize("kwargs", [dict(scale=-1.0), dict(method="legt"), dict(method="hippo", dt=0.0)])
def test_init_bad_options(kwargs):
    with pytest.raises(ValueError):
        S.init_ssm(2, 3, 1, rng=0, **kwargs)


@pytest.mark.parametrize("dims", [(0, 3, 1), (2, 2.5, 1), (2, 3, True)])
def test_init_bad_dims(dims):
    with pytest.raises(ValueError, match="_dim"):
        S.init_ssm(*dims)


# ----------------------------------------------------------------------------- discretization

@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discretize_matches_scipy(rng, method):
    A, B = rng.standard_normal((4, 4)), rng.standard_normal((4, 2))
    Ad, Bd = S.discretize(A, B, 0.2, method)
    want = scipy.signal.cont2discrete((A, B, onp.eye(4), onp.zeros((4, 2))), 0.2, method=method)
    onp.testing.assert_allclose(Ad, want[0], rtol=1e-12, atol=1e-14)
    onp.testing.assert_allclose(Bd, want[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discretize_round_trip(rng, method):
    A, B = rng.standard_normal((5, 5)) - 3 * onp.eye(5), rng.standard_normal((5, 2))
    A2, B2 = S.undiscretize(*S.discretize(A, B, 0.05, method), 0.05, method)
    onp.testing.assert_allclose(A2, A, atol=1e-9)
    onp.testing.assert_allclose(B2, B, atol=1e-9)


def test_zoh_with_singular_A(rng):
    """ZOH with A = 0 is an integrator: Ad = I, Bd = dt B (no A^{-1} needed)."""
    B = rng.standard_normal((3, 2))
    Ad, Bd = S.discretize(onp.zeros((3, 3)), B, 0.25)
    onp.testing.assert_allclose(Ad, onp.eye(3), atol=1e-15)
    onp.testing.assert_allclose(Bd, 0.25 * B, rtol=1e-14)


def test_zoh_is_exact_for_piecewise_constant_input(rng):
    """Two ZOH half steps with the same input equal one full step."""
    A, B = rng.standard_normal((3, 3)), rng.standard_normal((3, 1))
    Ah, Bh = S.discretize(A, B, 0.1)
    Af, Bf = S.discretize(A, B, 0.2)
    onp.testing.assert_allclose(Ah @ Ah, Af, rtol=1e-12)
    onp.testing.assert_allclose(Ah @ Bh + Bh, Bf, rtol=1e-12)


def test_discretize_bad_input():
    with pytest.raises(ValueError, match="A must be square"):
        S.discretize(onp.zeros((2, 3)), onp.zeros((2, 1)), 0.1)
    with pytest.raises(ValueError, match="B must have shape"):
        S.discretize(onp.zeros((2, 2)), onp.zeros((3, 1)), 0.1)
    with pytest.raises(ValueError, match="dt"):
        S.discretize(onp.zeros((2, 2)), onp.zeros((2, 1)), -0.1)
    with pytest.raises(ValueError, match="method"):
        S.discretize(onp.zeros((2, 2)), onp.zeros((2, 1)), 0.1, "euler")


# ----------------------------------------------------------------------------- gradients

def _scalarize(f, rng, shape_u, n):
    """A scalar loss of all six arrays with random output weights (so every output is checked)."""
    W = rng.standard_normal(shape_u[:-1] + (2,))
    Wh = rng.standard_normal(shape_u[:-2] + (n,))

    def loss(A, B, C, D, u, h0):
        y, h = f({"A": A, "B": B, "C": C, "D": D}, u, h0)
        return np.sum(W * y) + np.sum(Wh * np.sin(h)) + np.sum(y ** 2) * 0.1
    return loss


@pytest.mark.parametrize("mode", S.MODES)
@pytest.mark.parametrize("argnum,name", list(enumerate(["A", "B", "C", "D", "u", "h0"])))
def test_gradients_first_and_second_order(rng, mode, argnum, name):
    params = random_system(rng, 2, 3, 2, rho=0.9)
    u, h0 = rng.standard_normal((2, 7, 2)), rng.standard_normal((2, 3))
    loss = _scalarize(S.MODES[mode], rng, u.shape, 3)
    args = [params[k] for k in "ABCD"] + [u, h0]

    def of_one(x):
        return loss(*(args[:argnum] + [x] + args[argnum + 1:]))
    check_grads(of_one, modes=["rev"], order=2)(args[argnum])


def explicit_ssm(p, u, h0):
    """The SSM in closed form, independent of every mode's code: with the powers ``A^k`` by
    repeated products, ``h_t = A^{t+1} h0 + Σ_{k≤t} A^{t-k} B u_k``, ``y_t = C h_t + D u_t``."""
    A, B, C, D = p["A"], p["B"], p["C"], p["D"]
    T = u.shape[-2]
    powers = [np.eye(A.shape[0])]
    for _ in range(T):
        powers.append(np.dot(A, powers[-1]))
    ys, h = [], None
    for t in range(T):
        h = np.einsum("ij,bj->bi", powers[t + 1], h0) + sum(
            np.einsum("ij,jk,bk->bi", powers[t - k], B, u[:, k]) for k in range(t + 1))
        ys.append(np.einsum("ij,bj->bi", C, h) + np.einsum("ij,bj->bi", D, u[:, t]))
    return np.stack(ys, axis=1), h


@pytest.mark.parametrize("mode", S.MODES)
def test_gradients_agree_with_the_closed_form(rng, mode):
    """Every mode's gradient (every parameter, the input and the initial state) equals the
    gradient of the closed form, an evaluation that shares no code with the modes."""
    params = random_system(rng, 2, 4, 3, rho=0.95)
    u = rng.standard_normal((3, 17, 2))
    h0 = rng.standard_normal((3, 4))
    W = rng.standard_normal((3, 4))

    def loss(f):
        def of(th):
            y, h = f(th["p"], th["u"], th["h0"])
            return np.sum(np.tanh(y)) + np.sum(W * h)
        return of
    theta = {"p": params, "u": u, "h0": h0}
    y_ref, h_ref = explicit_ssm(params, u, h0)
    y, h = S.MODES[mode](params, u, h0)
    assert rel_err(y, y_ref) < 1e-12 and rel_err(h, h_ref) < 1e-12
    g_ref = autograd.grad(loss(explicit_ssm))(theta)
    g = autograd.grad(loss(S.MODES[mode]))(theta)
    assert P.tree_leaves(g) and len(P.tree_leaves(g)) == len(P.tree_leaves(g_ref)) == 6
    for a, b in zip(P.tree_leaves(g), P.tree_leaves(g_ref)):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discretize_gradients(rng, method):
    A, B = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
    Wa, Wb = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))

    def loss(A, B, dt):
        Ad, Bd = S.discretize(A, B, dt, method)
        return np.sum(Wa * Ad) + np.sum(Wb * Bd) + np.sum(Ad ** 2) * np.sum(Bd ** 2)
    check_grads(lambda A: loss(A, B, 0.3), modes=["rev"], order=2)(A)
    check_grads(lambda B: loss(A, B, 0.3), modes=["rev"], order=2)(B)
    check_grads(lambda dt: loss(A, B, dt), modes=["rev"], order=2)(0.3)


def test_kernel_gradient(rng):
    params = random_system(rng, 2, 3, 2, rho=0.9)
    W = rng.standard_normal((6, 2, 2))
    check_grads(lambda p: np.sum(W * S.ssm_kernel(p, 6)), modes=["rev"], order=2)(params)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("mode", S.MODES)
def test_bad_shapes_raise(mode, rng):
    f = S.MODES[mode]
    params = random_system(rng, 2, 3, 1)
    cases = [
        (lambda: f(params, onp.zeros((5, 3))), r"u must have shape \(T, 2\).*got \(5, 3\)"),
        (lambda: f(params, onp.zeros(5)), r"u must have shape"),
        (lambda: f(params, onp.zeros((1, 2, 5, 2))), r"u must have shape"),
        (lambda: f(params, onp.zeros((0, 2))), r"at least one time step"),
        (lambda: f(params, onp.zeros((5, 2)), onp.zeros(4)), r"h0 must have shape \(3,\).*got \(4,\)"),
        (lambda: f(params, onp.zeros((2, 5, 2)), onp.zeros((3, 3))), r"h0 must have shape"),
        (lambda: f(params, onp.zeros((5, 2)), onp.zeros((1, 3))), r"h0 must have shape"),
        (lambda: f({**params, "A": onp.zeros((3, 2))}, onp.zeros((5, 2))), r"params\['A'\]"),
        (lambda: f({**params, "C": onp.zeros((1, 4))}, onp.zeros((5, 2))), r"params\['C'\] has shape"),
        (lambda: f({**params, "D": onp.zeros(2)}, onp.zeros((5, 2))), r"params\['D'\] must be a matrix"),
        (lambda: f({k: params[k] for k in "ABC"}, onp.zeros((5, 2))), r"missing \['D'\]"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()


def test_step_and_kernel_bad_input(rng):
    params = random_system(rng, 2, 3, 1)
    with pytest.raises(ValueError, match="h must have shape"):
        S.ssm_step(params, onp.zeros(2), onp.zeros(2))
    with pytest.raises(ValueError, match="u must have shape"):
        S.ssm_step(params, onp.zeros(3), onp.zeros(3))
    with pytest.raises(ValueError, match="length"):
        S.ssm_kernel(params, 0)
    with pytest.raises(ValueError, match="mode"):
        S.run_ssm(params, onp.zeros((2, 2)), mode="fft")


# ----------------------------------------------------------------------------- the model class

def test_model_forward_persists_state(rng):
    model = S.StateSpaceModel(2, 4, 3, rng=rng, scale=0.9)
    us = rng.standard_normal((3, 10, 2))
    ys = [model.forward(us[:, t]) for t in range(10)]
    y_ref, h_ref = S.ssm_scan(model.params, us)
    onp.testing.assert_allclose(onp.stack(ys, axis=1), y_ref, rtol=1e-13)
    onp.testing.assert_allclose(model.hidden_state, h_ref, rtol=1e-13)
    with pytest.raises(ValueError, match="reset_state"):
        model.forward(rng.standard_normal((2, 2)))      # different batch size
    model.reset_state()
    assert model.forward(rng.standard_normal((2, 2))).shape == (2, 3)


@pytest.mark.parametrize("mode", S.MODES)
def test_model_forward_sequence_reset_and_continue(rng, mode):
    model = S.StateSpaceModel(2, 4, 1, rng=rng, scale=0.9, mode=mode)
    us = rng.standard_normal((20, 2))
    whole = model.forward_sequence(us)
    a = model.forward_sequence(us[:7])
    b = model.forward_sequence(us[7:], reset=False)
    onp.testing.assert_allclose(onp.concatenate([a, b]), whole, rtol=1e-11, atol=1e-14)
    again = model.forward_sequence(us)           # reset=True ignores the stored state
    onp.testing.assert_allclose(again, whole, rtol=0, atol=0)


def test_model_reads_params_at_call_time(rng):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    u = rng.standard_normal((4, 2))
    model.params = {**model.params, "D": model.params["D"] * 0}
    y = model.forward_sequence(u)
    onp.testing.assert_allclose(y, S.ssm_scan(model.params, u)[0], rtol=1e-14)


def test_model_is_differentiable_through_params(rng):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    u = rng.standard_normal((6, 2))
    original = model.params

    def loss(params):
        model.params = params
        try:
            return np.sum(model.forward_sequence(u) ** 2)
        finally:
            model.params = original
    g = autograd.grad(loss)(original)
    g_ref = autograd.grad(lambda p: np.sum(S.ssm_scan(p, u)[0] ** 2))(original)
    assert P.tree_allclose(g, g_ref, rtol=1e-13)


def test_get_parameters_does_not_alias(rng):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    got = model.get_parameters()
    for k in "ABCD":
        assert not onp.shares_memory(got[k], model.params[k])
    got["A"][:] = 7.0
    assert not onp.any(model.params["A"] == 7.0)
    new = P.tree_map(lambda x: x + 1.0, got)
    model.set_parameters(new)
    new["C"][:] = -9.0
    assert not onp.any(model.params["C"] == -9.0)


def test_set_parameters_validates(rng):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    good = model.get_parameters()
    with pytest.raises(ValueError, match="dims"):
        model.set_parameters(S.init_ssm(2, 4, 1, rng=0))
    with pytest.raises(ValueError, match="non-finite"):
        model.set_parameters({**good, "B": good["B"] * onp.nan})
    with pytest.raises(ValueError, match="missing"):
        model.set_parameters({"A": good["A"]})


def test_model_bad_input(rng):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    with pytest.raises(ValueError, match=r"u must have shape \(2,\)"):
        model.forward(onp.zeros(3))
    with pytest.raises(ValueError, match=r"us must have shape"):
        model.forward_sequence(onp.zeros((4, 3)))
    with pytest.raises(ValueError, match="mode"):
        S.StateSpaceModel(2, 3, 1, mode="fft")


def test_repr(rng):
    text = repr(S.StateSpaceModel(2, 3, 1, rng=rng))
    assert "input_dim=2" in text and "state_dim=3" in text and "hidden_state=None" in text


# ----------------------------------------------------------------------------- persistence

@pytest.mark.parametrize("with_state", [False, True])
def test_save_load_bit_exact(rng, tmp_path, with_state):
    model = S.StateSpaceModel(3, 5, 2, rng=rng, mode="convolve")
    if with_state:
        model.forward_sequence(rng.standard_normal((4, 9, 3)))
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = S.StateSpaceModel.load(path)
    for k in "ABCD":
        assert loaded.params[k].dtype == onp.float64
        assert onp.array_equal(loaded.params[k], model.params[k])
    assert loaded.mode == "convolve"
    if with_state:
        assert onp.array_equal(loaded.hidden_state, model.hidden_state)
    else:
        assert loaded.hidden_state is None
    # the loaded model continues exactly where the saved one stopped
    u = rng.standard_normal((4, 3, 3)) if with_state else rng.standard_normal((3, 3))
    onp.testing.assert_array_equal(loaded.forward_sequence(u, reset=False),
                                   model.forward_sequence(u, reset=False))


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        onp.savez(f, **arrays)


class _Boom:
    """Unpickling this would set a flag: the test proves load never unpickles."""
    unpickled = False

    def __reduce__(self):
        return (_mark_unpickled, ())


def _mark_unpickled():
    _Boom.unpickled = True
    return "pwned"


def test_load_rejects_malformed_files(rng, tmp_path):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    good = {**{k: model.params[k] for k in "ABCD"}, "mode": onp.array(0)}
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "C"}, r"missing arrays \['C'\]"),
        "shape": ({**good, "B": onp.zeros((4, 2))}, r"params\['B'\] has shape"),
        "dtype": ({**good, "A": onp.zeros((3, 3), dtype=onp.int64)}, r"'A' has dtype int64"),
        "extra": ({**good, "junk": onp.zeros(1)}, r"unexpected arrays \['junk'\]"),
        "state": ({**good, "hidden_state": onp.zeros(5)}, r"hidden_state has shape"),
        "mode": ({**good, "mode": onp.array(9)}, r"mode index"),
    }
    for name, (arrays, pattern) in cases.items():
        path = tmp_path / f"{name}.npz"
        _write_npz(path, **arrays)
        with pytest.raises(ValueError, match=pattern):
            S.StateSpaceModel.load(path)


def test_load_never_unpickles(rng, tmp_path):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    path = tmp_path / "evil.npz"
    evil = onp.empty(1, dtype=object)
    evil[0] = _Boom()
    _write_npz(path, **{k: model.params[k] for k in "ABCD"}, mode=onp.array(0), hidden_state=evil)
    with pytest.raises(ValueError, match="unreadable array"):
        S.StateSpaceModel.load(path)
    assert not _Boom.unpickled


def test_load_rejects_truncated_and_non_zip(rng, tmp_path):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("not a zip at all")
    (tmp_path / "empty.npz").write_bytes(b"")
    onp.save(tmp_path / "single.npy", onp.zeros(3))
    # a zip whose member is not an .npy
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("A.npy", b"garbage")
    for name in ("trunc.npz", "text.npz", "empty.npz", "zip.npz", "absent.npz", "single.npy"):
        with pytest.raises(ValueError, match=name):
            S.StateSpaceModel.load(tmp_path / name)


def test_interrupted_save_keeps_previous_file(rng, tmp_path, monkeypatch):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    path = tmp_path / "m.npz"
    model.save(path)
    before, saved_A = path.read_bytes(), model.params["A"].copy()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")
    monkeypatch.setattr(os, "replace", crash)
    model.set_parameters(P.tree_map(lambda x: x + 1.0, model.params))
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]          # no temporary file left behind
    assert onp.array_equal(S.StateSpaceModel.load(path).params["A"], saved_A)


def test_save_failure_while_writing_keeps_previous_file(rng, tmp_path, monkeypatch):
    model = S.StateSpaceModel(2, 3, 1, rng=rng)
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def half_write(f, **arrays):
        f.write(b"PK\x03\x04partial")
        raise OSError("disk full")
    monkeypatch.setattr(onp, "savez", half_write)
    with pytest.raises(OSError):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
