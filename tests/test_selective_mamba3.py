"""mamba3_siso (Mamba-3 SISO): the chunked form equals the recurrence for every chunk size, L
decoding steps equal the sequence, varlen segments equal separate calls (empty and length-1
segments too), the trapezoid at its end without rotation is Mamba-2's ssd, gradients are exact at
orders 1 and 2, and bad input is one ValueError line naming the argument."""

import autograd.numpy as np
import numpy as onp
import pytest
from autograd.test_util import check_grads
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmref.selective import mamba3_siso, mamba3_siso_step, ssd
from ssmref.selective.mamba3_loop import mamba3_loop

NAMES = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")


def draw(rng, b=2, L=9, h=4, hqk=2, n=4, p=3, r=2, states=True, N=None, options=True):
    DT = onp.exp(rng.uniform(onp.log(1e-2), onp.log(0.8), (b, h, L)))
    x = dict(Q=rng.standard_normal((b, L, hqk, n)), K=rng.standard_normal((b, L, hqk, n)),
             V=rng.standard_normal((b, L, h, p)), ADT=-rng.uniform(0.5, 3.0, (b, h, L)) * DT, DT=DT,
             Trap=rng.standard_normal((b, h, L)), Q_bias=rng.standard_normal((h, n)),
             K_bias=rng.standard_normal((h, n)), Angles=3 * rng.standard_normal((b, L, h, r)),
             D=rng.standard_normal(h) if options else None,
             Z=rng.standard_normal((b, L, h, p)) if options else None)
    N = b if N is None else N
    st_ = (tuple(rng.standard_normal(s) for s in ((N, h, r), (N, h, p, n), (N, h, n), (N, h, p)))
           if states else None)
    return x, st_


def run(x, states, chunk=64, final=True, **kw):
    return mamba3_siso(*[x[k] for k in NAMES], states, chunk, final, **kw)


def close(a, b, tol=1e-12):
    for u, v in zip(a, b):
        onp.testing.assert_allclose(u, v, rtol=tol, atol=tol * max(1.0, onp.max(onp.abs(v))))


@settings(max_examples=25)
@given(seed=st.integers(0, 2 ** 32 - 1), L=st.integers(1, 12), chunk=st.integers(1, 13),
       hqk=st.sampled_from([1, 2]), r=st.integers(1, 3), states=st.booleans(), options=st.booleans())
def test_chunked_equals_recurrence(seed, L, chunk, hqk, r, states, options):
    x, s = draw(onp.random.default_rng(seed), L=L, hqk=hqk, n=6, r=r, states=states, options=options)
    close(run(x, s, chunk), run(x, s, method="recurrence"))


def test_steps_equal_the_sequence():
    x, s = draw(onp.random.default_rng(0), L=11)
    want = run(x, s)
    outs, state = [], s
    for t in range(11):
        o, state = mamba3_siso_step(x["Q"][:, t], x["K"][:, t], x["V"][:, t], x["ADT"][..., t],
                                    x["DT"][..., t], x["Trap"][..., t], x["Q_bias"], x["K_bias"],
                                    x["Angles"][:, t], x["D"], x["Z"][:, t], state)
        outs.append(o)
    close([onp.stack(outs, 1)] + list(state), want, 1e-13)


def test_step_without_states_starts_from_zeros():
    x, s = draw(onp.random.default_rng(1), L=1)
    zeros = tuple(onp.zeros_like(v) for v in s)
    args = [x[k][:, 0] if k in ("Q", "K", "V", "Angles", "Z") else
            (x[k][..., 0] if k in ("ADT", "DT", "Trap") else x[k]) for k in NAMES]
    o1, f1 = mamba3_siso_step(*args)
    o2, f2 = mamba3_siso_step(*args, zeros)
    close([o1, *f1], [o2, *f2], 0)


def test_varlen_segments_are_separate_sequences():
    rng = onp.random.default_rng(2)
    cu = onp.array([0, 5, 5, 6, 17])                        # lengths 5, 0, 1, 11
    x, s = draw(rng, b=1, L=17, N=4)
    got = run(x, s, 4, cu_seqlens=cu)
    for i in range(4):
        lo, hi = cu[i], cu[i + 1]
        st_i = tuple(v[i:i + 1] for v in s)
        if hi == lo:
            close([g[i:i + 1] for g in got[1:]], st_i, 0)    # the input states, unchanged
            continue
        seg = {k: (None if v is None else v if k in ("Q_bias", "K_bias", "D") else
                   v[:, :, lo:hi] if k in ("ADT", "DT", "Trap") else v[:, lo:hi]) for k, v in x.items()}
        want = run(seg, st_i, method="recurrence")
        close([got[0][:, lo:hi]] + [g[i:i + 1] for g in got[1:]], want)
    close(run(x, s, 1, cu_seqlens=cu), got)
    empty = run(x, None, cu_seqlens=onp.array([0, 0, 17]))
    close([e[:1] for e in empty[1:]], [onp.zeros_like(v[:1]) for v in s], 0)


def test_trapezoid_at_its_end_without_rotation_is_ssd():
    """σ(Trap) = 1 (Trap = 40 rounds it to 1 exactly), Angles = 0, no biases, ADT = A·DT:
    S_t = e^{A DT_t} S_{t-1} + DT_t v_t k_tᵀ, SSD with x = V, B = K, C = Q."""
    rng = onp.random.default_rng(3)
    b, L, g, k, n, p = 2, 23, 2, 2, 4, 3
    h = g * k
    x, s = draw(rng, b=b, L=L, h=h, hqk=g, n=n, p=p, r=2)
    A = -rng.uniform(0.5, 2.0, h)
    x.update(Trap=onp.full((b, h, L), 40.0), Angles=onp.zeros((b, L, h, 2)),
             Q_bias=onp.zeros((h, n)), K_bias=onp.zeros((h, n)), ADT=x["DT"] * A[:, None])
    s = (onp.zeros_like(s[0]),) + s[1:]
    got = run(x, s, 8)
    want = ssd(x["V"], onp.transpose(x["DT"], (0, 2, 1)), A, x["K"], x["Q"], 8, x["D"], x["Z"],
               initial_states=s[1], return_final_states=True)
    close([got[0], got[2]], want)
    close([got[3], got[4]], [x["K"][:, -1].repeat(k, axis=1), x["V"][:, -1]], 0)
    x["Trap"] = onp.full((b, h, L), 3.0)                     # the previous k v enters: not SSD
    assert onp.max(onp.abs(run(x, s, 8)[0] - want[0])) > 1e-3


@pytest.mark.parametrize("method", ["chunked", "recurrence"])
def test_gradients_orders_1_and_2(method):
    x, s = draw(onp.random.default_rng(4), b=1, L=5, h=2, hqk=1, n=4, p=2, r=1)
    rng = onp.random.default_rng(5)
    shapes = [onp.shape(v) for v in run(x, s)]
    w = [rng.standard_normal(sh) for sh in shapes]

    def loss(*args):
        vals = dict(zip(NAMES, args[:11]))
        outs = mamba3_siso(*[vals[k] for k in NAMES], tuple(args[11:]), 3, True, method=method)
        return sum(np.sum(wi * o) for wi, o in zip(w, outs))

    check_grads(loss, modes=["rev"], order=2)(*[x[k] for k in NAMES], *s)


def test_gradients_through_varlen():
    x, s = draw(onp.random.default_rng(6), b=1, L=6, h=2, hqk=2, n=4, p=2, r=2, N=3)
    cu = onp.array([0, 1, 1, 6])

    def loss(V, ADT, Trap, Angles, ssm0):
        vals = dict(x, V=V, ADT=ADT, Trap=Trap, Angles=Angles)
        outs = run(vals, (s[0], ssm0, s[2], s[3]), 2, cu_seqlens=cu)
        return np.sum(np.sin(outs[0])) + np.sum(outs[2] ** 2) + np.sum(outs[3])

    check_grads(loss, modes=["rev"], order=2)(x["V"], x["ADT"], x["Trap"], x["Angles"], s[1])


def _bad(**change):
    x, s = draw(onp.random.default_rng(7), b=1, L=6, h=4, hqk=2, n=4, p=3, r=2, N=2)
    kw = dict(x, Input_States=s, cu_seqlens=onp.array([0, 2, 6]))
    kw.update(change)
    return kw


@pytest.mark.parametrize("change, match", [
    (dict(K=onp.zeros((1, 6, 2, 6))), r"K must have shape .*headdim_qk=4.*got \(1, 6, 2, 6\)"),
    (dict(V=onp.zeros((1, 6, 3, 3)), D=None, Q_bias=onp.zeros((3, 4)), K_bias=onp.zeros((3, 4))),
     "nheads=3, which must be a multiple of nheads_qk=2"),
    (dict(Q=onp.zeros((1, 6, 2, 5)), K=onp.zeros((1, 6, 2, 5))), "headdim_qk=5, which must be even"),
    (dict(Angles=onp.zeros((1, 6, 4, 3))), r"headdim_angles=3, which must be <= headdim_qk // 2 = 2"),
    (dict(ADT=onp.zeros((1, 6, 4))), r"ADT must have shape \(batch=1, nheads=4, seqlen=6\)"),
    (dict(cu_seqlens=onp.array([0, 4, 2, 6])), "cu_seqlens must start at 0, be non-decreasing"),
    (dict(cu_seqlens=onp.array([0, 2, 7])), "end at seqlen=6"),
    (dict(cu_seqlens=onp.array([0.0, 6.0])), "cu_seqlens must be an integer array"),
    (dict(DT=onp.full((1, 4, 6), onp.nan)), "DT has non-finite entries"),
    (dict(Input_States=(onp.zeros((2, 4, 2)),) * 3), "Input_States must be a tuple"),
    (dict(cu_seqlens=None), r"Input_States\[0\] \(angle state\) must have shape \(num_sequences=1"),
    (dict(chunk_size=0), "chunk_size must be an int >= 1"),
])
def test_bad_input_is_one_line_naming_the_argument(change, match):
    kw = _bad(**change)
    with pytest.raises(ValueError, match=match) as e:
        mamba3_siso(**kw)
    assert "\n" not in str(e.value)


def test_bad_step_input():
    x, s = draw(onp.random.default_rng(8), b=2, L=1, h=4, hqk=2, n=4, p=3, r=2)
    args = {k: (None if v is None else v[:, 0] if k in ("Q", "K", "V", "Angles", "Z") else
                v[..., 0] if k in ("ADT", "DT", "Trap") else v) for k, v in x.items()}
    with pytest.raises(ValueError, match=r"Trap must have shape \(batch=2, nheads=4\), got \(2, 3\)"):
        mamba3_siso_step(**dict(args, Trap=onp.zeros((2, 3))))
    with pytest.raises(ValueError, match=r"Input_States\[1\] \(SSM state\) must have shape "
                                         r"\(batch=2, nheads=4, headdim_v=3, headdim_qk=4\)"):
        mamba3_siso_step(**args, Input_States=(s[0], s[1][:, :, :2], s[2], s[3]))


STATE_NAMES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
OUTPUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")


@settings(max_examples=15)
@given(seed=st.integers(0, 2 ** 32 - 1), L=st.integers(1, 10), hqk=st.sampled_from([1, 2]),
       r=st.integers(1, 3), states=st.booleans(), options=st.booleans())
def test_every_form_equals_the_definition(seed, L, hqk, r, states, options):
    """The chunked form, the recurrence and the step against the plain loop (exact arithmetic)."""
    x, s = draw(onp.random.default_rng(seed), L=L, hqk=hqk, n=6, r=r, states=states, options=options)
    inputs = dict({k: v for k, v in x.items() if v is not None}, **dict(zip(STATE_NAMES, s or ())))
    want = mamba3_loop(inputs)
    want = [want[k] for k in OUTPUTS]
    for method in ("chunked", "recurrence"):
        close(run(x, s, 4, method=method), want)
    first = mamba3_loop({k: v[:, :1] if k in ("Q", "K", "V", "Angles", "Z") else
                         (v[..., :1] if k in ("ADT", "DT", "Trap") else v) for k, v in inputs.items()})
    args = [None if x[k] is None else x[k][:, 0] if k in ("Q", "K", "V", "Angles", "Z") else
            (x[k][..., 0] if k in ("ADT", "DT", "Trap") else x[k]) for k in NAMES]
    o, final = mamba3_siso_step(*args, s)
    close([o, *final], [first["out"][:, 0]] + [first[k] for k in OUTPUTS[1:]])
