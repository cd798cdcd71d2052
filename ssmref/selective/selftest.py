"""Self-test cases of the selective SSMs (``python -m ssmref selftest``), without pytest.

Each case checks one invariant of ``docs/selective.md``: the evaluations agree (recurrence,
associative scan, decoding steps, chunked SSD for any chunk size), and the time-invariant case is
the dense SSM of :mod:`ssmref.ssm`; Mamba-3's cases are in :mod:`.mamba3_selftest`.
"""

import numpy as onp

from ssmref.selective import selective_scan, selective_state_update, ssd
from ssmref.selective.lti import time_invariant_ssm
from ssmref.selective.mamba3_selftest import CASES as MAMBA3_CASES
from ssmref.ssm import ssm_scan


def _check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def _rel(a, b):
    return float(onp.max(onp.abs(a - b)) / max(onp.max(onp.abs(b)), 1e-300))


def case_scan_forms_agree():
    rng = onp.random.default_rng(0)
    b, d, n, L = 2, 4, 3, 40
    u, delta = rng.standard_normal((b, d, L)), rng.standard_normal((b, d, L))
    A = -rng.uniform(0.5, 2.0, (d, n))
    B, C = rng.standard_normal((b, 2, n, L)), rng.standard_normal((b, n, L))   # grouped, varying
    D, z, bias = rng.standard_normal(d), rng.standard_normal((b, d, L)), rng.standard_normal(d)
    out, last = selective_scan(u, delta, A, B, C, D, z, bias, True, True)
    par = selective_scan(u, delta, A, B, C, D, z, bias, True, method="parallel")
    _check(_rel(par, out) < 1e-12, "the associative scan differs from the recurrence")
    state, outs = onp.zeros((b, d, n)), []
    for t in range(L):
        o, state = _step(state, u, delta, A, B, C, D, z, bias, t)
        outs.append(o)
    _check(_rel(onp.stack(outs, -1), out) < 1e-12, "L decoding steps differ from the scan")
    _check(_rel(state, last) < 1e-12, "the decoded state differs from the last state")


def _step(state, u, delta, A, B, C, D, z, bias, t):
    # heads of size 1 (h = d), 2 groups: the layout of mamba's selective_state_update with heads
    o, new = selective_state_update(state[:, :, None], u[:, :, t, None], delta[:, :, t, None],
                                    A[:, None], B[..., t],
                                    onp.repeat(C[:, None, :, t], 2, axis=1), D[:, None],
                                    z[:, :, t, None], bias[:, None], True)
    return o[:, :, 0], new[:, :, 0]


def case_ssd_chunk_sizes_agree():
    rng = onp.random.default_rng(1)
    b, L, h, p, g, n = 2, 37, 4, 3, 2, 5
    x, dt = rng.standard_normal((b, L, h, p)), rng.standard_normal((b, L, h))
    A = -rng.uniform(0.2, 1.5, h)
    B, C = rng.standard_normal((b, L, g, n)), rng.standard_normal((b, L, g, n))
    s0 = rng.standard_normal((b, h, p, n))
    seq_idx = onp.array([[0] * 20 + [1] * 17, [0] * 37])
    want, final = ssd(x, dt, A, B, C, 8, initial_states=s0, seq_idx=seq_idx, dt_softplus=True,
                      return_final_states=True, method="recurrence")
    for chunk in (1, 5, 16, 64):
        got, got_final = ssd(x, dt, A, B, C, chunk, initial_states=s0, seq_idx=seq_idx,
                             dt_softplus=True, return_final_states=True)
        _check(_rel(got, want) < 1e-12 and _rel(got_final, final) < 1e-12,
               f"chunk_size {chunk}: the chunked SSD differs from the recurrence")


def case_time_invariant_scan_is_the_dense_ssm():
    rng = onp.random.default_rng(2)
    d, n, L = 3, 4, 30
    delta = rng.uniform(0.01, 0.5, d)
    real_A = -rng.uniform(0.5, 2.0, (d, n))
    for A in (real_A, real_A + 1j * rng.standard_normal((d, n))):
        zero = 0j if onp.iscomplexobj(A) else 0.0                    # B, C complex with complex A
        B, C = rng.standard_normal((d, n)) + zero, rng.standard_normal((d, n)) + zero
        D, u = rng.standard_normal(d), rng.standard_normal((1, d, L))
        out = selective_scan(u, onp.broadcast_to(delta[None, :, None], (1, d, L)), A, B, C, D)
        y, _ = ssm_scan(time_invariant_ssm(delta, A, B, C, D), u[0].T)
        _check(_rel(out[0].T, y) < 1e-12, "the time-invariant scan differs from the dense SSM")


CASES = [
    ("Mamba: recurrence = associative scan = L decoding steps", case_scan_forms_agree),
    ("Mamba-2: chunked SSD = recurrence for chunk sizes 1..64, seq_idx", case_ssd_chunk_sizes_agree),
    ("Mamba: time-invariant scan = dense SSM (real and complex A)",
     case_time_invariant_scan_is_the_dense_ssm),
] + MAMBA3_CASES
