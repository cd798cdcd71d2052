"""Hostile inputs: every argument of selective_scan, selective_state_update and ssd is refused with a
ValueError naming it (and the expected vs received shape where a shape is wrong)."""

import numpy as onp
import pytest

from ssmref.selective import selective_scan, selective_state_update, ssd

r = onp.random.default_rng(0)
b, d, n, L, g = 2, 4, 3, 5, 2
NAN = onp.full((b, d, L), onp.nan)


def scan_kw(**over):
    kw = dict(u=r.standard_normal((b, d, L)), delta=r.random((b, d, L)), A=-r.random((d, n)),
              B=r.standard_normal((b, g, n, L)), C=r.standard_normal((b, n, L)))
    kw.update(over)
    return kw


cA = -r.random((d, n)) + 1j * r.random((d, n))
SCAN_CASES = [
    (dict(u=r.standard_normal((b, d))), r"u must be \(batch, dim, seqlen\), got shape \(2, 4\)"),
    (dict(u=r.standard_normal((b, d, L)) + 1j), "u must be real"),
    (dict(u=onp.ones((b, d, L), bool)), "u must be numeric.*bool"),
    (dict(u=onp.array([["a"]]).reshape(1, 1, 1)), "u must be a numeric array"),
    (dict(u=onp.zeros((b, d, 0)), delta=onp.zeros((b, d, 0))), r"u must have shape .*got \(2, 4, 0\)"),
    (dict(delta=r.random((b, d, L + 1))), r"delta must have shape \(batch=2, dim=4, seqlen=5\), got \(2, 4, 6\)"),
    (dict(delta=NAN), "delta has non-finite"),
    (dict(A=-r.random((d + 1, n))), r"A must have shape \(dim=4, dstate\), got \(5, 3\)"),
    (dict(A=-r.random(d)), r"A must be \(dim, dstate\)"),
    (dict(B=None), "B is required"),
    (dict(B=r.standard_normal((1, b, g, n, L))), "B must be .*fixed.*varying.*grouped"),
    (dict(B=r.standard_normal((b, 3, n, L))), "B has ngroups=3, which must divide dim=4"),
    (dict(B=r.standard_normal((b, n, L + 1))), r"B must have shape \(batch=2, dstate=3, seqlen=5\)"),
    (dict(B=r.standard_normal((d, n)) + 1j), "B must be real for real A"),
    (dict(C=r.standard_normal((d, n + 1))), r"C must have shape \(dim=4, dstate=3\)"),
    (dict(A=cA, B=r.standard_normal((b, n, L))), r"B must have shape .*2\*seqlen \(interleaved"),
    (dict(A=cA, B=r.standard_normal((d, n)), C=r.standard_normal((b, n, 2 * L)) + 1j), r"C must have shape .*seqlen=5\), got \(2, 3, 10\)"),
    (dict(D=r.standard_normal(d + 1)), r"D must have shape \(dim=4,?\), got \(5,\)"),
    (dict(D=r.standard_normal(d) + 1j), "D must be real"),
    (dict(z=r.standard_normal((b, d))), r"z must have shape"),
    (dict(z=NAN), "z has non-finite"),
    (dict(delta_bias=r.standard_normal((d, 1))), "delta_bias must have shape"),
    (dict(delta_bias=onp.ones(d) * 1j), "delta_bias must be real"),
    (dict(delta_softplus=1), "delta_softplus must be True or False"),
    (dict(return_last_state="yes"), "return_last_state must be True or False"),
    (dict(method="loop"), "method must be one of"),
    (dict(A=onp.full((d, n), -onp.inf)), "A has non-finite"),
]


@pytest.mark.parametrize("over,match", SCAN_CASES)
def test_selective_scan_refuses(over, match):
    with pytest.raises(ValueError, match=match):
        selective_scan(**scan_kw(**over))


def step_kw(heads=True, **over):
    h = 4
    hd = (h, d) if heads else (d,)
    kw = dict(state=r.standard_normal((b,) + hd + (n,)), x=r.standard_normal((b,) + hd),
              dt=r.standard_normal((b,) + hd), A=-r.random(hd + (n,)),
              B=r.standard_normal((b, g, n) if heads else (b, n)),
              C=r.standard_normal((b, g, n) if heads else (b, n)))
    kw.update(over)
    return kw


STEP_CASES = [
    (dict(state=r.standard_normal((b, n))), "state must be"),
    (dict(state=r.standard_normal((b, 4, d, n)) + 1j), "state must be real for real A"),
    (dict(x=r.standard_normal((b, d))), r"x must have shape \(batch=2, nheads=4, dim=4\), got \(2, 4\)"),
    (dict(dt=r.standard_normal((b, 4, d + 1))), "dt must have shape"),
    (dict(A=-r.random((d, n))), r"A must have shape \(nheads=4, dim=4, dstate=3\), got \(4, 3\)"),
    (dict(B=r.standard_normal((b, 3, n)), C=r.standard_normal((b, 3, n))), "ngroups=3, which must divide nheads=4"),
    (dict(C=r.standard_normal((b, 1, n))), "C must have the shape of B"),
    (dict(B=r.standard_normal((b, g, n)) + 1j), "B must be real for real A"),
    (dict(D=r.standard_normal(4)), r"D must have shape \(nheads=4, dim=4\)"),
    (dict(z=r.standard_normal((b, 4, d)) * onp.inf), "z has non-finite"),
    (dict(dt_bias=r.standard_normal((4, d)) + 1j), "dt_bias must be real"),
    (dict(dt_softplus=None), "dt_softplus must be True or False"),
    (dict(heads=False, B=r.standard_normal((b, 2, n)), C=r.standard_normal((b, 2, n))),
     "ngroups=2, which must divide nheads=1"),
    (dict(heads=False, x=r.standard_normal((b, d)).astype(bool)), "x must be numeric.*bool"),
]


@pytest.mark.parametrize("over,match", STEP_CASES)
def test_selective_state_update_refuses(over, match):
    with pytest.raises(ValueError, match=match):
        selective_state_update(**step_kw(**over))


def ssd_kw(**over):
    h, p = 4, 2
    kw = dict(x=r.standard_normal((b, L, h, p)), dt=r.random((b, L, h)), A=-r.random(h),
              B=r.standard_normal((b, L, g, n)), C=r.standard_normal((b, L, g, n)), chunk_size=2)
    kw.update(over)
    return kw


SSD_CASES = [
    (dict(x=r.standard_normal((b, L, 4))), r"x must be \(batch, seqlen, nheads, headdim\)"),
    (dict(dt=r.random((b, L, 3))), r"dt must have shape \(batch=2, seqlen=5, nheads=4\), got \(2, 5, 3\)"),
    (dict(A=-r.random(4) + 1j), "A must be real"),
    (dict(A=-r.random((4, 2))), r"A must have shape \(nheads=4\) \(Mamba-2.*got \(4, 2\)"),
    (dict(B=r.standard_normal((b, L, 3, n)), C=r.standard_normal((b, L, 3, n))), "ngroups=3, which must divide nheads=4"),
    (dict(C=r.standard_normal((b, L, g, n + 1))), r"C must have shape \(batch=2, seqlen=5, ngroups=2, dstate=3\)"),
    (dict(chunk_size=0), "chunk_size must be an int >= 1"),
    (dict(chunk_size=True), "chunk_size must be an int"),
    (dict(chunk_size=2.0), "chunk_size must be an int"),
    (dict(D=r.standard_normal(2)), r"D must have shape \(nheads=4,?\)"),
    (dict(D=r.standard_normal((4, 3))), r"D must have shape \(nheads=4, headdim=2\)"),
    (dict(D=r.standard_normal((4, 2, 1))), r"D must be \(nheads,\) or \(nheads, headdim\)"),
    (dict(z=r.standard_normal((b, L, 4, 3))), "z must have shape"),
    (dict(dt_bias=r.standard_normal((4, 2))), r"dt_bias must have shape \(nheads=4,?\)"),
    (dict(initial_states=r.standard_normal((b, 4, 2))), r"initial_states must have shape \(batch=2, nheads=4, headdim=2, dstate=3\)"),
    (dict(initial_states=onp.full((b, 4, 2, n), onp.nan)), "initial_states has non-finite"),
    (dict(seq_idx=onp.zeros((b, L))), "seq_idx must be an integer array"),
    (dict(seq_idx=onp.zeros((b, L), bool)), "seq_idx must be an integer array"),
    (dict(seq_idx=onp.zeros((b, L + 1), int)), r"seq_idx must have shape \(batch=2, seqlen=5\), got \(2, 6\)"),
    (dict(seq_idx=-onp.ones((b, L), int)), "seq_idx must be >= 0"),
    (dict(dt_limit=(1.0, 0.5)), "dt_limit must be a pair"),
    (dict(dt_limit=(onp.nan, 1.0)), "dt_limit must be a pair"),
    (dict(dt_limit=(True, 2.0)), "dt_limit must be a pair"),
    (dict(dt_limit=(0.0,)), "dt_limit must be a pair"),
    (dict(dt_limit=(onp.inf, onp.inf)), "dt_limit must be a pair"),
    (dict(dt_softplus="no"), "dt_softplus must be True or False"),
    (dict(return_final_states=0), "return_final_states must be True or False"),
    (dict(method="quadratic"), "method must be one of"),
]


@pytest.mark.parametrize("over,match", SSD_CASES)
def test_ssd_refuses(over, match):
    with pytest.raises(ValueError, match=match):
        ssd(**ssd_kw(**over))


def test_valid_edge_values_are_accepted():
    """What is allowed: integer arrays (as float64), L = 1, chunk_size > L, an infinite upper limit,
    complex A with a real fixed B, one group without heads as (b, 1, n)."""
    out = selective_scan(**scan_kw(u=onp.ones((b, d, L), int), A=cA, B=r.standard_normal((d, n)),
                                   C=r.standard_normal((b, n, 2 * L))))
    assert out.dtype == onp.float64
    assert ssd(**ssd_kw(x=r.standard_normal((b, 1, 4, 2)), dt=r.random((b, 1, 4)), B=r.standard_normal((b, 1, g, n)),
                        C=r.standard_normal((b, 1, g, n)), chunk_size=7, dt_limit=(-onp.inf, onp.inf))).shape == (b, 1, 4, 2)
    out, new = selective_state_update(**step_kw(heads=False, B=r.standard_normal((b, 1, n)), C=r.standard_normal((b, 1, n))))
    assert out.shape == (b, d) and new.shape == (b, d, n)
