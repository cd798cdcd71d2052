"""The delta rule family: the evaluations agree (recurrence, WY/UT chunks of any size, decoding
steps), the reductions hold (KDA with a gate shared by the key channels is Gated DeltaNet, a zero
gate is DeltaNet, GVA is the repeated heads, packed sequences are separate runs), and every float
argument has exact gradients (central differences, to second order)."""

import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from ssmref.delta import (delta_rule, delta_rule_step, gated_delta_rule, gated_delta_rule_step,
                          kda, kda_step)
from ssmref.delta.recurrent import core_layout, l2norm


def rel(a, b):
    return float(onp.max(onp.abs(a - b)) / onp.max(onp.abs(b)))


def inputs(rng, B=2, T=29, H=2, HV=4, K=5, V=3, beta_per_channel=False, normalise=True):
    q, k = rng.standard_normal((2, B, T, H, K))
    if normalise:                                  # fla's models feed unit keys: a stable rule
        k = k / onp.linalg.norm(k, axis=-1, keepdims=True)
    return dict(q=q, k=k, v=rng.standard_normal((B, T, HV, V)),
                g=onp.log(rng.uniform(0.5, 1.0, (B, T, HV))),
                gk=onp.log(rng.uniform(0.5, 1.0, (B, T, HV, K))),
                beta=rng.uniform(0, 1, (B, T, HV, V) if beta_per_channel else (B, T, HV)),
                S0=rng.standard_normal((B, HV, K, V)))


def run(model, x, **kw):
    if model == "delta":
        return delta_rule(x["q"], x["k"], x["v"], x["beta"], initial_state=x["S0"],
                          output_final_state=True, **kw)
    f, g = (gated_delta_rule, x["g"]) if model == "gated" else (kda, x["gk"])
    return f(x["q"], x["k"], x["v"], g, x["beta"], initial_state=x["S0"], output_final_state=True,
             **kw)


@pytest.mark.parametrize("model", ["delta", "gated", "kda"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_chunked_equals_the_recurrence_for_every_chunk_size(rng, model, per_channel):
    x = inputs(rng, beta_per_channel=per_channel)
    want, final = run(model, x, method="recurrence")
    for C in (1, 3, 8, 29, 64):
        o, S = run(model, x, chunk_size=C)
        assert rel(o, want) < 1e-13 and rel(S, final) < 1e-13, C


@pytest.mark.parametrize("model", ["delta", "gated", "kda"])
def test_l2norm_in_kernel_is_normalising_first(rng, model):
    x = inputs(rng, normalise=False)
    o, S = run(model, x, use_qk_l2norm_in_kernel=True, chunk_size=8)
    want, final = run(model, dict(x, q=l2norm(x["q"]), k=l2norm(x["k"])), method="recurrence")
    assert rel(o, want) < 1e-13 and rel(S, final) < 1e-13
    assert rel(l2norm(x["q"]), x["q"] / onp.sqrt(onp.sum(x["q"] ** 2, -1, keepdims=True) + 1e-6)) == 0


def test_decoding_steps_equal_the_sequence(rng):
    x = inputs(rng, beta_per_channel=True)
    for model, step, g in (("delta", None, None), ("gated", gated_delta_rule_step, x["g"]),
                           ("kda", kda_step, x["gk"])):
        S, outs = x["S0"], []
        for t in range(x["v"].shape[1]):
            if step is None:
                o, S = delta_rule_step(x["q"][:, t], x["k"][:, t], x["v"][:, t], x["beta"][:, t], S)
            else:
                o, S = step(x["q"][:, t], x["k"][:, t], x["v"][:, t], g[:, t], x["beta"][:, t], S)
            outs.append(o)
        want, final = run(model, x)
        assert rel(onp.stack(outs, axis=1), want) < 1e-13 and rel(S, final) < 1e-13, model


def test_reductions(rng):
    x = inputs(rng)
    shared = onp.repeat(x["g"][..., None], 5, axis=-1)              # one gate for every key channel
    o_kda, S_kda = kda(x["q"], x["k"], x["v"], shared, x["beta"], None, x["S0"], True)
    o_g, S_g = gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], None, x["S0"], True)
    assert rel(o_kda, o_g) < 1e-13 and rel(S_kda, S_g) < 1e-13
    o_0, _ = gated_delta_rule(x["q"], x["k"], x["v"], 0 * x["g"], x["beta"], 0.3, x["S0"])
    o_d, _ = delta_rule(x["q"], x["k"], x["v"], x["beta"], 0.3, x["S0"])
    assert rel(o_0, o_d) < 1e-13
    # GVA: value head i reads query/key head i // (HV / H), as repeated heads do
    rep = lambda a: onp.repeat(a, 2, axis=2)                        # noqa: E731
    o_rep, _ = gated_delta_rule(rep(x["q"]), rep(x["k"]), x["v"], x["g"], x["beta"], 5 ** -0.5,
                                x["S0"])
    assert rel(o_g, o_rep) < 1e-13
    # the default scale is K^-1/2
    o_s, _ = gated_delta_rule(x["q"] * 5 ** -0.5, x["k"], x["v"], x["g"], x["beta"], 1.0, x["S0"])
    assert rel(o_g, o_s) < 1e-13


def test_packed_sequences_are_separate_runs(rng):
    x = inputs(rng, B=1, T=20, beta_per_channel=True)
    cu = onp.array([0, 7, 7, 8, 20])                                 # an empty and a length-1 one
    S0 = rng.standard_normal((4,) + x["S0"].shape[1:])
    o, S = kda(x["q"], x["k"], x["v"], x["gk"], x["beta"], None, S0, True, cu, chunk_size=4)
    for n, (a, b) in enumerate(zip(cu[:-1], cu[1:])):
        if a == b:
            assert onp.array_equal(S[n], S0[n])                     # nothing read: the initial state
            continue
        sl = slice(a, b)
        o_n, S_n = kda(x["q"][:, sl], x["k"][:, sl], x["v"][:, sl], x["gk"][:, sl],
                       x["beta"][:, sl], None, S0[n:n + 1], True, method="recurrence")
        assert rel(o[:, sl], o_n) < 1e-13 and rel(S[n], S_n[0]) < 1e-13
    o2, S2 = kda(x["q"], x["k"], x["v"], x["gk"], x["beta"], None, S0, True, cu, method="recurrence")
    assert rel(o, o2) < 1e-13 and rel(S, S2) < 1e-13
    assert delta_rule(x["q"], x["k"], x["v"], x["beta"], cu_seqlens=cu)[1] is None


def test_long_memory_with_gates_near_one(rng):
    x = inputs(rng, B=1, T=300, H=1, HV=1, K=4, V=2)
    x["g"] = onp.log1p(-rng.uniform(1e-4, 1e-3, x["g"].shape))      # decays 0.999..0.9999
    want, final = run("gated", x, method="recurrence")
    o, S = run("gated", x, chunk_size=64)
    assert rel(o, want) < 1e-12 and rel(S, final) < 1e-12


@pytest.mark.parametrize("method,C", [("chunked", 3), ("recurrence", 64)])
def test_gradients_of_every_float_argument_to_second_order(rng, method, C):
    x = inputs(rng, B=1, T=7, H=1, HV=2, K=3, V=2, beta_per_channel=True, normalise=False)
    S0 = rng.standard_normal((3, 2, 3, 2))
    cu = onp.array([0, 3, 3, 7])

    def f(q, k, v, g, beta, S0, scale):
        o, S = kda(q, k, v, g, beta, scale, S0, True, cu, use_qk_l2norm_in_kernel=True,
                   method=method, chunk_size=C)
        return np.sum(np.sin(o)) + np.sum(S * S)
    check_grads(f, argnum=tuple(range(7)), modes=["rev"], order=2)(
        x["q"], x["k"], x["v"], x["gk"], x["beta"], S0, 0.7)


def test_gated_gradients_headwise_beta(rng):
    x = inputs(rng, B=2, T=6, H=1, HV=1, K=3, V=2)

    def f(q, k, v, g, beta, S0):
        o, S = gated_delta_rule(q, k, v, g, beta, None, S0, True, chunk_size=4)
        return np.sum(np.cos(o)) + np.sum(S ** 3)
    check_grads(f, argnum=tuple(range(6)), modes=["rev"], order=2)(
        x["q"], x["k"], x["v"], x["g"], x["beta"], x["S0"])


@given(T=st.integers(1, 20), C=st.integers(1, 9), H=st.integers(1, 2), groups=st.integers(1, 2),
       K=st.integers(1, 4), V=st.integers(1, 3), per_channel_gate=st.booleans(),
       per_channel_beta=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_any_shape_and_chunk_size_agree(T, C, H, groups, K, V, per_channel_gate, per_channel_beta,
                                        seed):
    rng = onp.random.default_rng(seed)
    HV = H * groups
    q, k = rng.standard_normal((2, 1, T, H, K))
    g = onp.log(rng.uniform(0.3, 1.0, (1, T, HV) + ((K,) if per_channel_gate else ())))
    beta = rng.uniform(0, 1, (1, T, HV) + ((V,) if per_channel_beta else ()))
    v, S0 = rng.standard_normal((1, T, HV, V)), rng.standard_normal((1, HV, K, V))
    f = kda if per_channel_gate else gated_delta_rule
    want = f(q, k, v, g, beta, None, S0, True, use_qk_l2norm_in_kernel=True, method="recurrence")
    got = f(q, k, v, g, beta, None, S0, True, use_qk_l2norm_in_kernel=True, chunk_size=C)
    assert rel(got[0], want[0]) < 1e-12 and rel(got[1], want[1]) < 1e-12


@pytest.mark.parametrize("with_g", [False, True])
def test_core_layout_of_one_step_is_the_sequence_layout_at_that_step(with_g):
    """The layout without a time axis (the step form, the kit's step baseline) is the sequence
    layout of a one-step sequence; with a rounding arithmetic every value is rounded."""
    rng = onp.random.default_rng(2)
    q, k = rng.standard_normal((2, 2, 5)), rng.standard_normal((2, 2, 5))
    v, beta = rng.standard_normal((2, 4, 3)), rng.uniform(0, 1, (2, 4))
    g = -rng.uniform(0, 1, (2, 4)) if with_g else None
    step = core_layout(q, k, v, g, beta, 0.3, True, time=False)
    seq = core_layout(*(None if x is None else x[:, None] for x in (q, k, v, g, beta)), 0.3, True)
    assert [a.shape for a in step] == [(2, 4, 5), (2, 4, 5), (2, 4, 3), (2, 4, 1), (2, 4, 1)]
    for a, b in zip(step, seq):
        onp.testing.assert_array_equal(a, b[:, 0])
    low = core_layout(*(None if x is None else x.astype(onp.float32) for x in (q, k, v, g, beta)),
                      0.3, True, rnd=lambda x: onp.asarray(x, dtype=onp.float16).astype(onp.float32),
                      time=False)
    assert all(a.dtype == onp.float32 for a in low)
    onp.testing.assert_array_equal(low[0], low[0].astype(onp.float16))
    assert 0 < onp.max(onp.abs(low[0] - step[0])) < 1e-2
