"""Self-test cases of the delta rule family (``python -m ssmref selftest``), without pytest.

Each case checks one invariant of ``docs/delta.md``: the WY/UT chunked form equals the recurrence
for every chunk size, decoding steps equal the sequence, packed sequences are separate runs, and
KDA with one gate for every key channel is Gated DeltaNet.
"""

import numpy as onp

from ssmref.delta import gated_delta_rule, gated_delta_rule_step, kda


def _check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def _rel(a, b):
    return float(onp.max(onp.abs(a - b)) / max(onp.max(onp.abs(b)), 1e-300))


def _inputs(rng, B=2, T=37, H=2, HV=4, K=6, V=3):
    k = rng.standard_normal((B, T, H, K))
    return dict(q=rng.standard_normal((B, T, H, K)), k=k / onp.linalg.norm(k, axis=-1, keepdims=True),
                v=rng.standard_normal((B, T, HV, V)), g=onp.log(rng.uniform(0.6, 1.0, (B, T, HV, K))),
                beta=rng.uniform(0.0, 1.0, (B, T, HV, V)), S0=rng.standard_normal((B, HV, K, V)))


def case_chunk_sizes_agree():
    x = _inputs(onp.random.default_rng(0))
    want, final = kda(x["q"], x["k"], x["v"], x["g"], x["beta"], None, x["S0"], True,
                      method="recurrence")
    for C in (1, 5, 16, 64):
        o, S = kda(x["q"], x["k"], x["v"], x["g"], x["beta"], None, x["S0"], True, chunk_size=C)
        _check(_rel(o, want) < 1e-12 and _rel(S, final) < 1e-12,
               f"chunk_size {C}: the WY/UT chunked form differs from the recurrence")


def case_decoding_steps_agree():
    x = _inputs(onp.random.default_rng(1))
    g = x["g"][..., 0]                                               # one gate per head
    want, final = gated_delta_rule(x["q"], x["k"], x["v"], g, x["beta"], None, x["S0"], True,
                                   use_qk_l2norm_in_kernel=True)
    S, outs = x["S0"], []
    for t in range(x["v"].shape[1]):
        o, S = gated_delta_rule_step(x["q"][:, t], x["k"][:, t], x["v"][:, t], g[:, t],
                                     x["beta"][:, t], S, use_qk_l2norm_in_kernel=True)
        outs.append(o)
    _check(_rel(onp.stack(outs, axis=1), want) < 1e-12 and _rel(S, final) < 1e-12,
           "T decoding steps differ from the sequence")


def case_packed_sequences_and_kda_reduction():
    x = _inputs(onp.random.default_rng(2), B=1, T=30)
    g = x["g"][..., :1]
    shared = onp.repeat(g, x["q"].shape[-1], axis=-1)
    cu = onp.array([0, 12, 12, 13, 30])
    S0 = onp.random.default_rng(3).standard_normal((4,) + x["S0"].shape[1:])
    o, S = kda(x["q"], x["k"], x["v"], shared, x["beta"], None, S0, True, cu, chunk_size=8)
    o2, S2 = gated_delta_rule(x["q"], x["k"], x["v"], g[..., 0], x["beta"], None, S0, True, cu,
                              method="recurrence")
    _check(_rel(o, o2) < 1e-12 and _rel(S, S2) < 1e-12, "KDA with a shared gate differs from GDN")
    _check(onp.array_equal(S[1], S0[1]), "an empty sequence changed its state")
    o3, S3 = gated_delta_rule(x["q"][:, 13:], x["k"][:, 13:], x["v"][:, 13:], g[:, 13:, :, 0],
                              x["beta"][:, 13:], None, S0[3:], True)
    _check(_rel(o[:, 13:], o3) < 1e-12 and _rel(S[3], S3[0]) < 1e-12,
           "a packed sequence differs from the same sequence alone")


CASES = [
    ("delta rule: WY/UT chunks of 1..64 = recurrence (KDA, GVA, β per channel)",
     case_chunk_sizes_agree),
    ("delta rule: T decoding steps = the sequence (Gated DeltaNet, l2norm)",
     case_decoding_steps_agree),
    ("delta rule: packed sequences are separate runs; KDA with one gate = Gated DeltaNet",
     case_packed_sequences_and_kda_reduction),
]
