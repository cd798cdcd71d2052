"""ssd (Mamba-2): the loop, the adjoint recurrence, the associative scan and the chunked algorithm
agree for every chunk size and length; seq_idx restarts, initial_states, dt processing, D shapes;
ssd is the selective scan with A = a·1 per head; gradients exact at orders 1 and 2."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref.selective import selective_scan, ssd
from ssmref.selective.functional import softplus
from ssmref.selective.naive import ssd_loop


def draw_ssd(rng, b=2, L=7, g=2, k=2, p=2, n=3, options=True, seq=None):
    h = g * k
    kw = dict(x=rng.standard_normal((b, L, h, p)), dt=rng.uniform(-0.5, 1.5, (b, L, h)),
              A=-rng.uniform(0.1, 1.5, h), B=rng.standard_normal((b, L, g, n)),
              C=rng.standard_normal((b, L, g, n)))
    if options:
        kw.update(D=rng.standard_normal((h, p) if rng.random() < 0.5 else (h,)),
                  z=rng.standard_normal((b, L, h, p)), dt_bias=rng.standard_normal(h),
                  initial_states=rng.standard_normal((b, h, p, n)), dt_softplus=True,
                  dt_limit=(0.05, 1.2))
    if seq == "packed":                                        # non-decreasing ids, mamba's use
        kw["seq_idx"] = onp.cumsum(rng.random((b, L)) < 0.3, axis=1) + rng.integers(0, 2, (b, 1))
    elif seq == "any":                                         # arbitrary ids >= 0
        kw["seq_idx"] = rng.integers(0, 3, (b, L))
    return kw


def close(a, b, tol=1e-12):
    onp.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, onp.max(onp.abs(b))))


@given(seed=st.integers(0, 2 ** 32 - 1), b=st.integers(1, 2), L=st.integers(1, 13), g=st.integers(1, 2),
       k=st.integers(1, 2), p=st.integers(1, 2), n=st.integers(1, 3), options=st.booleans(),
       seq=st.sampled_from([None, "packed", "any"]))
def test_loop_recurrence_parallel_and_every_chunk_size_agree(seed, b, L, g, k, p, n, options, seq):
    kw = draw_ssd(onp.random.default_rng(seed), b, L, g, k, p, n, options, seq)
    want, want_final = ssd_loop(**kw, return_final_states=True)
    for method, Q in [("recurrence", 4), ("parallel", 4)] + [("chunked", Q) for Q in (1, 2, 3, L, L + 3, 64)]:
        out, final = ssd(**kw, chunk_size=Q, return_final_states=True, method=method)
        assert out.shape == (b, L, g * k, p) and final.shape == (b, g * k, p, n)
        close(out, want)
        close(final, want_final)


def test_packed_sequences_equal_separate_runs(rng):
    """seq_idx [0]*5 + [1]*7: the first sequence continues initial_states, the second starts at 0;
    the final state is the second sequence's."""
    kw = draw_ssd(rng, b=1, L=12)
    seq_idx = onp.array([[0] * 5 + [1] * 7])
    out, final = ssd(**kw, chunk_size=4, seq_idx=seq_idx, return_final_states=True)
    cut = lambda v, s: v[:, s] if isinstance(v, onp.ndarray) and v.shape[:2] == (1, 12) else v   # noqa: E731
    first = {k: cut(v, slice(0, 5)) for k, v in kw.items()}
    second = {k: cut(v, slice(5, 12)) for k, v in kw.items() if k != "initial_states"}
    o1 = ssd(**first, chunk_size=4)
    o2, f2 = ssd(**second, chunk_size=4, return_final_states=True)
    close(out, onp.concatenate([o1, o2], axis=1))
    close(final, f2)
    # a first sequence with an id other than 0 does not read initial_states
    shifted = ssd(**kw, chunk_size=4, seq_idx=seq_idx + 1)
    close(shifted[:, :5], ssd(**{**first, "initial_states": None}, chunk_size=4))
    # constant seq_idx 0 is no seq_idx at all
    close(ssd(**kw, chunk_size=4, seq_idx=onp.zeros((1, 12), int)), ssd(**kw, chunk_size=4))


def test_dt_processing_is_bias_then_softplus_then_clamp(rng):
    kw = draw_ssd(rng, options=False)
    bias = rng.standard_normal(4)
    got = ssd(**kw, chunk_size=3, dt_bias=bias, dt_softplus=True, dt_limit=(0.3, 0.9))
    dt = onp.clip(softplus(kw["dt"] + bias), 0.3, 0.9)
    onp.testing.assert_array_equal(got, ssd(**{**kw, "dt": dt}, chunk_size=3))
    # the default limit (0, inf) still clamps: a negative step is the identity step
    neg = kw["dt"] < 0
    assert neg.any()
    close(ssd(**kw, chunk_size=3), ssd(**{**kw, "dt": onp.where(neg, 0.0, kw["dt"])}, chunk_size=3))
    close(ssd(**kw, chunk_size=3, dt_limit=(-onp.inf, onp.inf)),
          ssd_loop(**kw, dt_limit=(-onp.inf, onp.inf)))


def test_D_per_head_is_D_per_channel_broadcast(rng):
    kw = draw_ssd(rng, options=False)
    D = rng.standard_normal(4)
    close(ssd(**kw, chunk_size=4, D=D), ssd(**kw, chunk_size=4, D=onp.repeat(D[:, None], 2, axis=1)), 1e-15)
    close(ssd(**kw, chunk_size=4, D=D) - ssd(**kw, chunk_size=4), D[:, None] * kw["x"])


def test_ssd_is_the_selective_scan_with_scalar_A_per_head(rng):
    """mamba's ssd_selective_scan mapping: channels (h p), dt and A repeated over p (and A over n),
    B, C as (b, g, n, L) groups."""
    kw = draw_ssd(rng, b=2, L=9, g=2, k=2, p=3, n=4, options=False)
    kw["dt"] = onp.abs(kw["dt"])
    b, L, h, p = kw["x"].shape
    n = kw["B"].shape[-1]
    D, z, bias = rng.standard_normal((h, p)), rng.standard_normal((b, L, h, p)), rng.standard_normal(h)
    out = ssd(**kw, chunk_size=4, D=D, z=z, dt_bias=bias, dt_softplus=True)
    to_bdl = lambda v: onp.transpose(v, (0, 2, 3, 1)).reshape(b, h * p, L)   # noqa: E731  (b, hp, L)
    scan = selective_scan(
        to_bdl(kw["x"]), to_bdl(onp.repeat(kw["dt"][..., None], p, axis=-1)),
        onp.repeat(kw["A"], p)[:, None] * onp.ones(n), onp.transpose(kw["B"], (0, 2, 3, 1)),
        onp.transpose(kw["C"], (0, 2, 3, 1)), D.reshape(-1), to_bdl(z), onp.repeat(bias, p), True)
    close(to_bdl(out), scan)


def test_inputs_are_not_modified(rng):
    kw = draw_ssd(rng, seq="packed")
    before = {k: onp.copy(v) for k, v in kw.items() if isinstance(v, onp.ndarray)}
    for method in ("chunked", "recurrence", "parallel"):
        ssd(**kw, chunk_size=3, return_final_states=True, method=method)
    for k, v in before.items():
        onp.testing.assert_array_equal(kw[k], v)


FLOAT_ARGS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


@pytest.mark.parametrize("seq", [None, "packed"])
def test_gradients_match_the_loop_and_central_differences(seq):
    rng = onp.random.default_rng(11)
    kw = draw_ssd(rng, b=1, L=5, g=2, k=2, p=3, n=2, seq=seq)
    kw["dt_limit"] = (0.0, onp.inf)                         # keep away from the clamp's kinks
    kw["dt"] = kw["dt"] + 0.5
    W = rng.standard_normal((1, 5, 4, 3))

    def loss_of(fun, name, **extra):
        def loss(v):
            out, final = fun(**{**kw, name: v}, return_final_states=True, **extra)
            return np.sum(W * out) + np.sum(out ** 2) + np.sum(np.sin(final))
        return loss
    for name in FLOAT_ARGS:
        want = autograd.grad(loss_of(ssd_loop, name))(kw[name])
        for Q in (2, 5):
            close(autograd.grad(loss_of(ssd, name, chunk_size=Q))(kw[name]), want, 1e-11)
        close(autograd.grad(loss_of(ssd, name, chunk_size=2, method="parallel"))(kw[name]), want, 1e-11)
        check_grads(loss_of(ssd, name, chunk_size=2), modes=["rev"], order=2)(kw[name])
        if name in ("dt", "A", "initial_states"):
            check_grads(loss_of(ssd, name, chunk_size=2, method="recurrence"), modes=["rev"], order=2)(kw[name])


def test_clamped_steps_have_zero_gradient(rng):
    kw = draw_ssd(rng, options=False)
    g = autograd.grad(lambda dt: np.sum(ssd(**{**kw, "dt": dt}, chunk_size=3) ** 2))(kw["dt"])
    assert onp.all(g[kw["dt"] < 0] == 0) and onp.all(g[kw["dt"] > 0] != 0)
