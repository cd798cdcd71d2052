"""One validation rule for array arguments (:func:`ssmref.checks.check_array`), at every public
function that takes arrays: a bool array is refused as a number, and a NaN is refused in an input,
each with one ``ValueError`` line naming the argument.

``CASES`` lists the public functions with a valid call and the arrays to spoil.  Documented
exceptions take non-finite entries where the math never reads them: the padding of a
policy-gradient batch (``mask`` 0) and the inputs of ``policy_step``'s restarting rows (tested at
the end); the adapter's guards and monitors take NaN on purpose (``tests/test_adaptation.py``).
"""

import numpy as onp
import pytest

from ssmref import checks, delta, maml, optim, selective, ssm, structured
from ssmref.metarl import policy, rl

R = onp.random.default_rng(0)


def normal(*shape):
    return R.standard_normal(shape)


P = ssm.init_ssm(2, 3, 2, rng=0)
DIAG = structured.init_diag(3, 2, 2, rng=0)
DPLR = structured.init_dplr(4, 2, 2, rng=0)
POL, SPEC = policy.policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                               hidden_sizes=(4,), rng=0)
MASK = onp.ones((2, 3))
b, d, n, L = 2, 4, 3, 5
SEL = dict(u=normal(b, d, L), delta=onp.abs(normal(b, d, L)), A=-onp.abs(normal(d, n)),
           B=normal(d, n), C=normal(d, n))
SSD = dict(x=normal(b, L, 2, 3), dt=onp.abs(normal(b, L, 2)), A=-onp.abs(normal(2)),
           B=normal(b, L, 1, n), C=normal(b, L, 1, n))
DELTA = dict(q=normal(1, L, 2, 3), k=normal(1, L, 2, 3) / 3, v=normal(1, L, 2, 4),
             beta=onp.full((1, L, 2), 0.5))
M3 = dict(Q=normal(1, L, 1, 4), K=normal(1, L, 1, 4), V=normal(1, L, 2, 3),
          ADT=-0.1 * onp.ones((1, 2, L)), DT=0.1 * onp.ones((1, 2, L)), Trap=normal(1, 2, L),
          Q_bias=normal(2, 4), K_bias=normal(2, 4), Angles=normal(1, L, 2, 2))
GRADS = {"w": normal(3)}


def _mse(p, data):
    return ((p["w"] - data) ** 2).sum()


# name -> (call(args), args, {argument path: message name}); a path "params.A" spoils a leaf.
CASES = {
    "ssm_step": (lambda a: ssm.ssm_step(a["params"], a["h"], a["u"]),
                 dict(params=P, h=normal(3), u=normal(2)), ["params.A", "h", "u"]),
    "ssm_scan": (lambda a: ssm.ssm_scan(a["params"], a["u"], a["h0"]),
                 dict(params=P, u=normal(4, 2), h0=normal(3)), ["params.B", "u", "h0"]),
    "ssm_convolve": (lambda a: ssm.ssm_convolve(a["params"], a["u"]),
                     dict(params=P, u=normal(4, 2)), ["params.C", "u"]),
    "ssm_parallel_scan": (lambda a: ssm.ssm_parallel_scan(a["params"], a["u"]),
                          dict(params=P, u=normal(4, 2)), ["params.D", "u"]),
    "ssm_kernel": (lambda a: ssm.ssm_kernel(a["params"], 4), dict(params=P), ["params.A"]),
    "discretize": (lambda a: ssm.discretize(a["A"], a["B"], 0.1),
                   dict(A=-onp.eye(3), B=normal(3, 2)), ["A", "B"]),
    "causal_fft_conv": (lambda a: ssm.causal_fft_conv(a["K"], a["u"]),
                        dict(K=normal(4, 2, 2), u=normal(4, 2)), ["K", "u"]),
    "clip_by_global_norm": (lambda a: optim.clip_by_global_norm(a["grads"], 1.0),
                            dict(grads=GRADS), ["grads.w"]),
    "adam update": (lambda a: optim.adam()[1](a["grads"], optim.adam()[0](a["params"]),
                                              a["params"]),
                    dict(grads=GRADS, params={"w": normal(3)}), ["grads.w", "params.w"]),
    "maml adapt": (lambda a: maml.adapt(a["params"], _mse, onp.zeros(3), inner_lr=a["lr"]),
                   dict(params={"w": normal(3)}, lr={"w": onp.full(3, 0.1)}),
                   ["params.w", "lr.w"]),
    "maml meta_gradient": (lambda a: maml.meta_gradient(a["params"], _mse,
                                                        [(onp.zeros(3), onp.ones(3))],
                                                        inner_lr=0.1),
                           dict(params={"w": normal(3)}), ["params.w"]),
    "diag_scan": (lambda a: structured.diag_scan(a["params"], a["u"], method="zoh", output="re"),
                  dict(params=DIAG, u=normal(4, 2)), ["params.Lambda", "params.B", "u"]),
    "diag_convolve": (lambda a: structured.diag_convolve(a["params"], a["u"], method="zoh",
                                                         output="re"),
                      dict(params=DIAG, u=normal(4, 2)), ["params.C", "u"]),
    "dplr_scan": (lambda a: structured.dplr_scan(a["params"], a["u"]),
                  dict(params=DPLR, u=normal(4, 2)), ["params.P", "u"]),
    "selective_scan": (lambda a: selective.selective_scan(**a), SEL, ["u", "delta", "A", "B"]),
    "ssd": (lambda a: selective.ssd(chunk_size=2, **a), SSD, ["x", "dt", "B"]),
    "mamba3_siso": (lambda a: selective.mamba3_siso(**a), M3, ["Q", "DT", "Angles"]),
    "delta_rule": (lambda a: delta.delta_rule(**a), DELTA, ["q", "v", "beta"]),
    "policy_sequence": (lambda a: policy.policy_sequence(POL, SPEC, a["obs"]),
                        dict(obs=normal(2, 3, 2)), ["obs"]),
    "policy_step": (lambda a: policy.policy_step(POL, SPEC, a["h"], a["obs"]),
                    dict(h=normal(2, 3), obs=normal(2, 2)), ["h", "obs"]),
    "discounted_returns": (lambda a: rl.discounted_returns(a["rewards"], MASK, 0.9),
                           dict(rewards=normal(2, 3)), ["rewards"]),
    "gae": (lambda a: rl.gae(a["rewards"], a["values"], MASK, 0.9, 0.95),
            dict(rewards=normal(2, 3), values=normal(2, 3)), ["rewards", "values"]),
    "fit_linear_baseline": (lambda a: rl.fit_linear_baseline(a["obs"], a["returns"], MASK),
                            dict(obs=normal(2, 3, 2), returns=normal(2, 3)), ["obs", "returns"]),
}

def _spoil(args, path, how):
    """A copy of ``args`` with the array at ``path`` replaced by its bool or NaN version."""
    head, _, leaf = path.partition(".")
    x = onp.asarray(args[head][leaf] if leaf else args[head])
    bad = (x != 0) if how == "bool" else onp.where(onp.arange(x.size).reshape(x.shape) == 0,
                                                   onp.nan, x)
    out = dict(args)
    if leaf:
        out[head] = {**args[head], leaf: bad}
    else:
        out[head] = bad
    return out


def _shown(path):
    """How the message names the argument: ``params['A']`` for a leaf, else its name."""
    head, _, leaf = path.partition(".")
    return f"[{leaf!r}]" if leaf else head


PARAMS = [(name, path) for name, (_, _, paths) in CASES.items() for path in paths]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_valid_call_runs(name):
    call, args, _ = CASES[name]
    call(args)


@pytest.mark.parametrize("name,path", PARAMS)
def test_bool_is_refused_naming_the_argument(name, path):
    call, args, _ = CASES[name]
    with pytest.raises(ValueError) as err:
        call(_spoil(args, path, "bool"))
    msg = str(err.value)
    assert "\n" not in msg and _shown(path) in msg and "bool" in msg, msg


@pytest.mark.parametrize("name,path", PARAMS)
def test_nan_is_refused_naming_the_argument(name, path):
    call, args, _ = CASES[name]
    with pytest.raises(ValueError) as err:
        call(_spoil(args, path, "nan"))
    msg = str(err.value)
    assert "\n" not in msg and _shown(path) in msg and "non-finite" in msg, msg


def test_ssm_scan_refuses_bool_and_nan_like_diag_scan():
    u = normal(4, 2)
    for bad, word in ((u > 0, "bool"), (onp.where(u > 0, onp.nan, u), "non-finite")):
        for fn in (lambda x: ssm.ssm_scan(P, x),
                   lambda x: structured.diag_scan(DIAG, x, method="zoh", output="re")):
            with pytest.raises(ValueError, match=f"^u (must be numeric, got a {word}|has {word})"):
                fn(bad)


def test_a_mask_selects_the_entries_that_must_be_finite():
    x = onp.array([[1.0, onp.nan], [2.0, 3.0]])
    checks.check_array("x", x, finite=onp.array([[True, False], [True, True]]))
    with pytest.raises(ValueError, match="x has non-finite entries where it is read"):
        checks.check_array("x", x, finite=onp.array([True, True]))
    checks.check_array("x", x, finite=False)


def test_nan_in_padding_and_in_restarting_rows_is_allowed_where_documented():
    rewards = onp.array([[1.0, 2.0, onp.nan]])
    rl.discounted_returns(rewards, onp.array([[1.0, 1.0, 0.0]]), 0.9)
    out, _ = policy.policy_step(POL, SPEC, normal(2, 3), normal(2, 2),
                                reset=onp.array([True, False]))
    assert onp.all(onp.isfinite(out["mean"]))
