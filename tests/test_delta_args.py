"""Hostile inputs to the delta rule family: one-line ValueErrors naming the argument."""

import numpy as onp
import pytest

from ssmref.delta import delta_rule, gated_delta_rule, gated_delta_rule_step, kda

r = onp.random.default_rng(0)
B, T, H, HV, K, V = 1, 6, 2, 4, 3, 2


def kw(**over):
    d = dict(q=r.standard_normal((B, T, H, K)), k=r.standard_normal((B, T, H, K)),
             v=r.standard_normal((B, T, HV, V)), g=-r.random((B, T, HV)), beta=r.random((B, T, HV)))
    d.update(over)
    return d


CASES = [
    (dict(q=r.standard_normal((B, T, K))), r"q must be \(B, T, H, K\), got shape \(1, 6, 3\)"),
    (dict(k=r.standard_normal((B, T, H, K + 1))), r"k must have shape \(B=1, T=6, H=2, K=3\), got \(1, 6, 2, 4\)"),
    (dict(v=r.standard_normal((B, T, 3, V))), r"v has HV=3 value heads, which must be a multiple of the H=2"),
    (dict(v=r.standard_normal((B, T + 1, HV, V))), r"v must have shape \(B=1, T=6, HV, V\)"),
    (dict(g=-r.random((B, T, H))), r"g must have shape \(B=1, T=6, HV=4\)"),
    (dict(beta=r.random((B, T, HV, V + 1))), r"beta must have shape \(B=1, T=6, HV=4, V=2\)"),
    (dict(beta=r.random((B, T))), r"beta must be \(B, T, HV\) or \(B, T, HV, V\)"),
    (dict(q=onp.full((B, T, H, K), onp.nan)), "q has non-finite entries"),
    (dict(g=onp.full((B, T, HV), -onp.inf)), "g has non-finite entries"),
    (dict(beta=onp.ones((B, T, HV), bool)), "beta must be numeric.*got a bool"),
    (dict(v=r.standard_normal((B, T, HV, V)) + 1j), "v must be real"),
    (dict(scale=float("nan")), "scale must be finite"),
    (dict(scale=onp.ones(2)), "scale must be a real scalar"),
    (dict(initial_state=r.standard_normal((B, H, K, V))), r"initial_state must have shape \(B=1, HV=4, K=3, V=2\)"),
    (dict(output_final_state=1), "output_final_state must be True or False"),
    (dict(use_qk_l2norm_in_kernel="yes"), "use_qk_l2norm_in_kernel must be True or False"),
    (dict(method="parallel"), "method must be one of"),
    (dict(chunk_size=0), "chunk_size must be an int >= 1"),
    (dict(cu_seqlens=onp.array([0, 4, 2, 6])), "cu_seqlens must be non-decreasing, got 4 then 2"),
    (dict(cu_seqlens=onp.array([0, 4, 7])), r"cu_seqlens must start at 0 and end at T=6"),
    (dict(cu_seqlens=onp.array([1, 6])), r"cu_seqlens must start at 0"),
    (dict(cu_seqlens=onp.array([0.0, 6.0])), "cu_seqlens must be an integer array"),
    (dict(cu_seqlens=onp.array([[0, 6]])), r"cu_seqlens must have shape \(N\+1,\)"),
    (dict(cu_seqlens=onp.array([0, 2, 6]), initial_state=r.standard_normal((1, HV, K, V))),
     r"initial_state must have shape \(N=2, HV=4, K=3, V=2\)"),
]


@pytest.mark.parametrize("over,match", CASES)
def test_gated_delta_rule_refuses(over, match):
    with pytest.raises(ValueError, match=match) as e:
        gated_delta_rule(**kw(**over))
    assert "\n" not in str(e.value)


def test_batched_cu_seqlens_and_the_other_functions_refuse():
    x = kw(q=r.standard_normal((2, T, H, K)), k=r.standard_normal((2, T, H, K)),
           v=r.standard_normal((2, T, HV, V)), g=-r.random((2, T, HV)), beta=r.random((2, T, HV)))
    with pytest.raises(ValueError, match="cu_seqlens needs batch size 1"):
        gated_delta_rule(**x, cu_seqlens=onp.array([0, 6]))
    with pytest.raises(ValueError, match=r"g must have shape \(B=1, T=6, HV=4, K=3\).*KDA"):
        kda(**kw())
    x = kw()
    x.pop("g")
    with pytest.raises(ValueError, match="beta has non-finite"):
        delta_rule(**dict(x, beta=onp.full((B, T, HV), onp.nan)))
    with pytest.raises(ValueError, match=r"state must have shape \(B=1, HV=4, K=3, V=2\)"):
        gated_delta_rule_step(r.standard_normal((B, H, K)), r.standard_normal((B, H, K)),
                              r.standard_normal((B, HV, V)), -r.random((B, HV)), r.random((B, HV)),
                              onp.zeros((B, HV, V, K)))


def test_fla_positional_order_is_refused_not_misread():
    x = kw()
    with pytest.raises(ValueError, match="cu_seqlens must be an integer array"):
        gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], None, None, True, True)
