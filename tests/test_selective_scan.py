"""selective_scan and selective_state_update: the definition (a loop), the adjoint recurrence, the
associative scan, L decoding steps and the dense time-invariant system all agree; gradients are
exact at orders 1 and 2; the recurrence is one tape node; nothing is modified in place."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from autograd.tracer import Node, trace
from hypothesis import given
from hypothesis import strategies as st

from ssmref.selective import selective_scan, selective_state_update
from ssmref.selective.functional import softplus
from ssmref.selective.lti import time_invariant_ssm
from ssmref.selective.naive import selective_scan_loop, state_update_step
from ssmref.ssm import ssm_scan

LAYOUTS = ("fixed", "varying", "grouped")


def draw_bc(rng, layout, b, d, n, L, g, complex_):
    """B or C in mamba's layouts; ``interleaved`` is real (b, g, n, 2L) for complex A."""
    def z(shape):
        return rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_ else 0)
    return {"fixed": lambda: z((d, n)), "varying": lambda: z((b, n, L)),
            "grouped": lambda: z((b, g, n, L)),
            "interleaved": lambda: rng.standard_normal((b, g, n, 2 * L))}[layout]()


def draw_scan(rng, b=2, g=2, k=2, n=3, L=6, complex_=False, layout_B="grouped", layout_C="varying",
              options=True):
    d = g * k
    A = -rng.uniform(0.1, 1.0, (d, n)) + (1j * rng.standard_normal((d, n)) if complex_ else 0)
    kw = dict(u=rng.standard_normal((b, d, L)), delta=rng.uniform(-1.0, 1.0, (b, d, L)), A=A,
              B=draw_bc(rng, layout_B, b, d, n, L, g, complex_),
              C=draw_bc(rng, layout_C, b, d, n, L, g, complex_))
    if options:
        kw.update(D=rng.standard_normal(d), z=rng.standard_normal((b, d, L)),
                  delta_bias=rng.standard_normal(d), delta_softplus=True)
    return kw


def as_steps(kw):
    """The scan's B/C at step t in selective_state_update's head form (h = d heads of dim 1)."""
    b, d, L = kw["u"].shape
    n = kw["A"].shape[1]

    def at(X, t):
        if X.ndim == 2:                                             # fixed: one group per channel
            return onp.broadcast_to(X, (b, d, n))
        X = X[:, None] if X.ndim == 3 else X
        if X.shape[-1] == 2 * L and onp.iscomplexobj(kw["A"]) and not onp.iscomplexobj(X):
            return X[..., 2 * t] + 1j * X[..., 2 * t + 1]
        return X[..., t]                                            # (b, g, n)
    return at


def scan_by_steps(kw):
    b, d, L = kw["u"].shape
    n = kw["A"].shape[1]
    at = as_steps(kw)
    state = onp.zeros((b, d, 1, n), dtype=complex if onp.iscomplexobj(kw["A"]) else float)
    col = lambda v: None if v is None else v[:, None]              # noqa: E731  (d,) -> (d, 1)
    outs = []
    for t in range(L):
        step = lambda v: None if v is None else v[:, :, t, None]   # noqa: E731  (b, d, 1)
        Bt, Ct = at(kw["B"], t), at(kw["C"], t)                     # (b, g, n): mamba wants equal g
        if Bt.shape != Ct.shape:
            Bt, Ct = (onp.repeat(X, d // X.shape[1], axis=1) for X in (Bt, Ct))    # (b, d, n)
        out, state = selective_state_update(
            state, step(kw["u"]), step(kw["delta"]), kw["A"][:, None], Bt, Ct,
            col(kw.get("D")), step(kw.get("z")), col(kw.get("delta_bias")), kw.get("delta_softplus", False))
        outs.append(out[:, :, 0])
    return onp.stack(outs, axis=-1), state[:, :, 0]


def close(a, b, tol=1e-12):
    onp.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, onp.max(onp.abs(b))))


# ----------------------------------------------------------------------------- equivalences

@given(seed=st.integers(0, 2 ** 32 - 1), b=st.integers(1, 2), g=st.integers(1, 2), k=st.integers(1, 2),
       n=st.integers(1, 3), L=st.integers(1, 9), complex_=st.booleans(), options=st.booleans(),
       layout_B=st.sampled_from(LAYOUTS + ("interleaved",)), layout_C=st.sampled_from(LAYOUTS + ("interleaved",)))
def test_four_evaluations_agree(seed, b, g, k, n, L, complex_, options, layout_B, layout_C):
    if not complex_:
        layout_B, layout_C = (x if x != "interleaved" else "grouped" for x in (layout_B, layout_C))
    kw = draw_scan(onp.random.default_rng(seed), b, g, k, n, L, complex_, layout_B, layout_C, options)
    want, want_last = selective_scan_loop(**kw, return_last_state=True)
    for method in ("recurrence", "parallel"):
        out, last = selective_scan(**kw, return_last_state=True, method=method)
        assert out.shape == (b, g * k, L) and out.dtype == onp.float64
        assert last.shape == (b, g * k, n) and onp.iscomplexobj(last) == complex_
        close(out, want)
        close(last, want_last)
    out, last = scan_by_steps(kw)
    close(out, want)
    close(last, want_last)


@given(seed=st.integers(0, 2 ** 32 - 1), d=st.integers(1, 3), n=st.integers(1, 3), L=st.integers(1, 12),
       complex_=st.booleans())
def test_time_invariant_case_is_the_dense_ssm(seed, d, n, L, complex_):
    rng = onp.random.default_rng(seed)
    kw = draw_scan(rng, 2, 1, d, n, L, complex_, "fixed", "fixed", options=False)
    step = rng.uniform(0.05, 1.0, d)
    kw["delta"] = onp.broadcast_to(step[None, :, None], kw["u"].shape)
    D = rng.standard_normal(d)
    out = selective_scan(**kw, D=D)
    params = time_invariant_ssm(step, kw["A"], kw["B"], kw["C"], D)
    assert params["A"].shape == ((2 if complex_ else 1) * d * n,) * 2
    y, _ = ssm_scan(params, onp.transpose(kw["u"], (0, 2, 1)))
    close(onp.transpose(y, (0, 2, 1)), out)


def test_return_last_state_and_defaults(rng):
    kw = draw_scan(rng, options=False)
    out = selective_scan(**kw)
    out2, last = selective_scan(**kw, return_last_state=True)
    assert isinstance(out, onp.ndarray) and onp.array_equal(out, out2)
    # no D, no z, no bias, no softplus: y = Σ C x with Δ = delta as given (negative steps allowed)
    manual = selective_scan(**{**kw, "delta": kw["delta"] + 0.0}, D=onp.zeros(4), delta_bias=onp.zeros(4),
                            delta_softplus=False)
    onp.testing.assert_array_equal(manual, out)


def test_softplus_is_exact_and_applied_after_the_bias(rng):
    x = onp.array([-800.0, -40.0, 0.0, 20.0, 20.5, 40.0, 800.0])
    onp.testing.assert_allclose(softplus(x), onp.log1p(onp.exp(-onp.abs(x))) + onp.maximum(x, 0), rtol=1e-15)
    assert softplus(onp.array(20.5)) - 20.5 == pytest.approx(onp.exp(-20.5), rel=1e-6)   # mamba: 0
    kw = draw_scan(rng, options=False)
    kw["delta"] = kw["delta"] * 30.0                                # crosses the threshold of 20
    bias = rng.standard_normal(4)
    got = selective_scan(**kw, delta_bias=bias, delta_softplus=True)
    want = selective_scan(**{**kw, "delta": softplus(kw["delta"] + bias[:, None])})
    onp.testing.assert_array_equal(got, want)


def test_interleaved_layout_is_the_complex_array(rng):
    kw = draw_scan(rng, complex_=True, layout_B="grouped", layout_C="varying")
    Bc = kw["B"]
    Bi = onp.stack([Bc.real, Bc.imag], axis=-1).reshape(Bc.shape[:-1] + (-1,))   # (re, im, re, im, ...)
    close(selective_scan(**{**kw, "B": Bi}), selective_scan(**kw), 1e-14)

    def loss(B):
        return np.sum(selective_scan(**{**kw, "B": B}) ** 2)
    g_complex, g_inter = autograd.grad(loss)(Bc), autograd.grad(loss)(Bi)
    assert g_inter.dtype == onp.float64
    # autograd's complex gradient is ∂L/∂Re - i ∂L/∂Im; the interleaved one is (∂L/∂Re, ∂L/∂Im)
    close(g_inter[..., 0::2], g_complex.real)
    close(g_inter[..., 1::2], -g_complex.imag)


def test_groups_map_channel_i_to_group_i_over_d_per_g(rng):
    kw = draw_scan(rng, g=2, k=3, layout_B="grouped", layout_C="grouped", options=False)
    out = selective_scan(**kw)
    for i in range(6):
        one = {k_: (v[:, i:i + 1] if k_ in ("u", "delta") else v[i:i + 1] if k_ == "A" else v)
               for k_, v in kw.items()}
        one["B"], one["C"] = kw["B"][:, i // 3], kw["C"][:, i // 3]              # (b, n, L)
        close(selective_scan(**one)[:, 0], out[:, i])


def test_inputs_are_not_modified(rng):
    kw = draw_scan(rng, complex_=True, layout_B="interleaved")
    before = {k: onp.copy(v) for k, v in kw.items() if isinstance(v, onp.ndarray)}
    selective_scan(**kw, return_last_state=True)
    selective_scan(**kw, method="parallel")
    for k, v in before.items():
        onp.testing.assert_array_equal(kw[k], v)
    state = rng.standard_normal((2, 3, 4, 5))
    keep = state.copy()
    args = (state, rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4)), -rng.random((3, 4, 5)),
            rng.standard_normal((2, 1, 5)), rng.standard_normal((2, 1, 5)))
    out, new = selective_state_update(*args)
    onp.testing.assert_array_equal(state, keep)
    assert not onp.shares_memory(new, state) and out.shape == (2, 3, 4)


def test_state_update_without_heads_is_the_one_head_case(rng):
    b, d, n = 3, 4, 5
    state, x, dt = rng.standard_normal((b, d, n)), rng.standard_normal((b, d)), rng.standard_normal((b, d))
    A, B, C = -rng.random((d, n)), rng.standard_normal((b, n)), rng.standard_normal((b, n))
    D, z, bias = rng.standard_normal(d), rng.standard_normal((b, d)), rng.standard_normal(d)
    out, new = selective_state_update(state, x, dt, A, B, C, D, z, bias, True)
    out_h, new_h = selective_state_update(state[:, None], x[:, None], dt[:, None], A[None], B[:, None],
                                          C[:, None], D[None], z[:, None], bias[None], True)
    assert out.shape == (b, d) and new.shape == (b, d, n)
    onp.testing.assert_array_equal(out, out_h[:, 0])
    onp.testing.assert_array_equal(new, new_h[:, 0])
    # the definition, written out
    delta = softplus(dt + bias)[..., None]
    want_state = onp.exp(delta * A) * state + delta * B[:, None] * x[..., None]
    close(new, want_state)
    close(out, (onp.sum(want_state * C[:, None], -1) + D * x) * z / (1 + onp.exp(-z)))


# ----------------------------------------------------------------------------- gradients

class _CountingNode(Node):
    """A tracer node that only counts how many operations were taped."""
    count = 0

    def __init__(self, value, fun, args, kwargs, parent_argnums, parents):
        type(self).count += 1

    def initialize_root(self):
        pass


def tape_length(fun, x):
    _CountingNode.count = 0
    trace(_CountingNode.new_root(), fun, x)
    return _CountingNode.count


def test_recurrence_is_one_tape_node_not_a_loop():
    def nodes(L, fun, **kw_extra):
        kw = draw_scan(onp.random.default_rng(0), L=L)
        return tape_length(lambda u: np.sum(fun(**{**kw, "u": u}, **kw_extra)), kw["u"])
    short, long_ = nodes(4, selective_scan), nodes(64, selective_scan)
    assert short == long_                           # independent of L: one adjoint primitive
    par_short, par_long = nodes(4, selective_scan, method="parallel"), nodes(64, selective_scan, method="parallel")
    assert par_short < par_long < 4 * par_short     # log-depth: grows with log2(L), not with L
    assert nodes(64, selective_scan_loop) > 20 * long_   # what a taped loop would cost


ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.mark.parametrize("complex_,layout_B,layout_C", [
    (False, "grouped", "fixed"), (False, "fixed", "varying"),
    (True, "interleaved", "fixed"), (True, "varying", "grouped")])
def test_gradients_match_the_loop_and_central_differences(complex_, layout_B, layout_C):
    rng = onp.random.default_rng(7)
    kw = draw_scan(rng, b=1, g=2, k=1, n=2, L=4, complex_=complex_, layout_B=layout_B, layout_C=layout_C)
    W, Ws = rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 2, 2))

    def loss_of(fun, name):
        def loss(v):
            out, last = fun(**{**kw, name: v}, return_last_state=True)
            return np.sum(W * out) + np.sum(np.abs(last) ** 2 * Ws) + np.sum(out ** 2)
        return loss
    for name in ARGS:
        got = autograd.grad(loss_of(selective_scan, name))(kw[name])
        close(got, autograd.grad(loss_of(selective_scan_loop, name))(kw[name]), 1e-11)
        check_grads(loss_of(selective_scan, name), modes=["rev"], order=2)(kw[name])


def test_parallel_gradients_match(rng):
    kw = draw_scan(rng, complex_=True, layout_B="grouped", layout_C="interleaved")
    for name in ("A", "B", "C", "delta"):
        def loss(v, method):
            return np.sum(selective_scan(**{**kw, name: v}, method=method) ** 2)
        close(autograd.grad(loss)(kw[name], "parallel"), autograd.grad(loss)(kw[name], "recurrence"), 1e-11)


@pytest.mark.parametrize("heads", [False, True])
def test_state_update_gradients(heads):
    rng = onp.random.default_rng(3)
    b, h, d, n, g = 2, 2, 2, 3, 2
    hd = (h, d) if heads else (d,)
    gb = (b, g, n) if heads else (b, n)
    kw = dict(state=rng.standard_normal((b,) + hd + (n,)), x=rng.standard_normal((b,) + hd),
              dt=rng.standard_normal((b,) + hd), A=-rng.random(hd + (n,)), B=rng.standard_normal(gb),
              C=rng.standard_normal(gb), D=rng.standard_normal(hd), z=rng.standard_normal((b,) + hd),
              dt_bias=rng.standard_normal(hd), dt_softplus=True)
    for name in ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias"):
        def loss(v):
            out, new = selective_state_update(**{**kw, name: v})
            return np.sum(out ** 2) + np.sum(np.sin(new))
        check_grads(loss, modes=["rev"], order=2)(kw[name])


@pytest.mark.parametrize("complex_", [False, True])
def test_state_update_is_the_definitions_step(complex_):
    """``selective_state_update`` against the plain definition's step (values and gradients)."""
    rng = onp.random.default_rng(11)
    b, h, d, n, g = 2, 4, 2, 3, 2
    cplx = (lambda s: rng.standard_normal(s) + 1j * rng.standard_normal(s)) if complex_ else rng.standard_normal
    kw = dict(state=cplx((b, h, d, n)), x=rng.standard_normal((b, h, d)), dt=rng.standard_normal((b, h, d)),
              A=-rng.random((h, d, n)) + (1j * rng.standard_normal((h, d, n)) if complex_ else 0),
              B=cplx((b, g, n)), C=cplx((b, g, n)), D=rng.standard_normal((h, d)),
              z=rng.standard_normal((b, h, d)), dt_bias=rng.standard_normal((h, d)), dt_softplus=True)
    out, new = selective_state_update(**kw)
    want, want_new = state_update_step(**kw)
    close(new, want_new, 1e-13)
    close(out, want, 1e-13)
    if not complex_:
        for name in ("x", "dt", "A", "B", "D", "z", "dt_bias"):
            def loss(v, fun):
                o, s = fun(**{**kw, name: v})
                return np.sum(o ** 2) + np.sum(np.sin(s))
            close(autograd.grad(loss)(kw[name], selective_state_update),
                  autograd.grad(loss)(kw[name], state_update_step), 1e-12)
