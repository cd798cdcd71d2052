"""Self-test cases of Mamba-3 SISO (``python -m ssmref selftest``), without pytest.

Each case checks one invariant of ``docs/mamba3.md``: the chunked form equals the recurrence for
every chunk size (varlen segments, empty ones included), L decoding steps equal the sequence, and
with the trapezoid at its end and no rotation Mamba-3 is Mamba-2's SSD.
"""

import numpy as onp

from ssmref.selective import mamba3_siso, mamba3_siso_step, ssd

_ARGS = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")


def _check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def _rel(a, b):
    return max(float(onp.max(onp.abs(x - y)) / max(onp.max(onp.abs(y)), 1e-300)) for x, y in zip(a, b))


def _draw(rng, b, L, h=4, hqk=2, n=8, p=3, r=3, N=None):
    DT = onp.exp(rng.uniform(onp.log(1e-2), onp.log(0.5), (b, h, L)))
    x = dict(Q=rng.standard_normal((b, L, hqk, n)), K=rng.standard_normal((b, L, hqk, n)),
             V=rng.standard_normal((b, L, h, p)), ADT=-rng.uniform(0.5, 4.0, (b, h, L)) * DT, DT=DT,
             Trap=rng.standard_normal((b, h, L)), Q_bias=rng.standard_normal((h, n)),
             K_bias=rng.standard_normal((h, n)), Angles=3 * rng.standard_normal((b, L, h, r)),
             D=rng.standard_normal(h), Z=rng.standard_normal((b, L, h, p)))
    N = b if N is None else N
    states = tuple(rng.standard_normal(s) for s in ((N, h, r), (N, h, p, n), (N, h, n), (N, h, p)))
    return [x[k] for k in _ARGS], states


def case_chunked_equals_recurrence():
    rng = onp.random.default_rng(10)
    args, states = _draw(rng, 2, 37)
    want = mamba3_siso(*args, states, 64, True, method="recurrence")
    for chunk in (1, 5, 16, 64):
        got = mamba3_siso(*args, states, chunk, True)
        _check(_rel(got, want) < 1e-12, f"chunk_size {chunk}: chunked differs from the recurrence")
    args, states = _draw(rng, 1, 30, N=4)
    cu = onp.array([0, 11, 11, 12, 30])                       # segments of 11, 0, 1, 18 steps
    want = mamba3_siso(*args, states, 64, True, cu, method="recurrence")
    for chunk in (1, 4, 64):
        got = mamba3_siso(*args, states, chunk, True, cu)
        _check(_rel(got, want) < 1e-12, f"varlen, chunk_size {chunk}: chunked differs")
    _check(all(onp.array_equal(g[1], s[1]) for g, s in zip(got[1:], states)),
           "an empty segment must return its input states")


def case_steps_equal_the_sequence():
    rng = onp.random.default_rng(11)
    args, states = _draw(rng, 2, 20)
    want = mamba3_siso(*args, states, 8, True)
    outs, st = [], states
    for t in range(20):
        Q, K, V, ADT, DT, Trap, Qb, Kb, Ang, D, Z = args
        o, st = mamba3_siso_step(Q[:, t], K[:, t], V[:, t], ADT[..., t], DT[..., t], Trap[..., t],
                                 Qb, Kb, Ang[:, t], D, Z[:, t], st)
        outs.append(o)
    _check(_rel([onp.stack(outs, 1)] + list(st), want) < 1e-12, "20 steps differ from the sequence")


def case_reduces_to_mamba2():
    rng = onp.random.default_rng(12)
    b, L, h, g, n = 2, 25, 4, 2, 8
    (Q, K, V, _, DT, _, _, _, _, D, Z), states = _draw(rng, b, L, h=h, hqk=g, n=n)
    A = -rng.uniform(0.5, 2.0, h)
    zero_bias = onp.zeros((h, n))
    got = mamba3_siso(Q, K, V, DT * A[:, None], DT, onp.full((b, h, L), 40.0), zero_bias, zero_bias,
                      onp.zeros((b, L, h, 3)), D, Z, (onp.zeros((b, h, 3)),) + states[1:], 8, True)
    want = ssd(V, onp.transpose(DT, (0, 2, 1)), A, K, Q, 8, D, Z, initial_states=states[1],
               return_final_states=True)
    _check(_rel([got[0], got[2]], want) < 1e-12, "σ(Trap) = 1 without rotation differs from ssd")


CASES = [
    ("Mamba-3: chunked = recurrence for chunk sizes 1..64, varlen with empty segments",
     case_chunked_equals_recurrence),
    ("Mamba-3: L decoding steps = the sequence", case_steps_equal_the_sequence),
    ("Mamba-3: trapezoid at its end, no rotation = Mamba-2's ssd", case_reduces_to_mamba2),
]
