"""Self-tests that run without pytest: ``python -m ssmref.ssm`` and ``python -m ssmref selftest``.

Each case prints one line (``PASS name`` or ``FAIL name: why``); the last line is
``N passed, M failed`` and the exit status is non-zero iff any case failed.  The cases are the
five of the original README (initialisation and forward pass, sequence processing, state persistence and
reset, save/load, parameter access) plus numerical ones: mode equivalence, gradients against
central differences, and discretization round trips.
"""

import os
import tempfile
import time
import traceback

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref import ssm
from ssmref.params import tree_map, tree_vdot


def _check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def case_init_and_forward():
    model = ssm.StateSpaceModel(3, 8, 2, rng=0)
    _check(model.params["A"].shape == (8, 8) and model.params["D"].shape == (2, 3), "parameter shapes")
    _check(abs(ssm.spectral_radius(model.params["A"]) - 0.1) < 1e-12, "spectral radius equals scale")
    u = onp.random.default_rng(1).standard_normal((4, 3))
    y = model.forward(u)
    _check(y.shape == (4, 2) and model.hidden_state.shape == (4, 8), "forward shapes")
    h = u @ model.params["B"].T
    _check(onp.allclose(y, h @ model.params["C"].T + u @ model.params["D"].T, rtol=1e-14), "y = C h' + D u")


def case_sequence():
    model = ssm.StateSpaceModel(2, 5, 3, rng=2, scale=0.9)
    us = onp.random.default_rng(3).standard_normal((4, 20, 2))
    y = model.forward_sequence(us)
    model.reset_state()
    y_steps = onp.stack([model.forward(us[:, t]) for t in range(20)], axis=1)
    _check(y.shape == (4, 20, 3), "sequence output shape")
    _check(onp.allclose(y, y_steps, rtol=1e-12, atol=1e-14), "forward_sequence equals step loop")


def case_state_persistence_and_reset():
    model = ssm.StateSpaceModel(2, 4, 1, rng=4, scale=0.8)
    us = onp.random.default_rng(5).standard_normal((12, 2))
    whole = model.forward_sequence(us)
    first = model.forward_sequence(us[:5])
    rest = model.forward_sequence(us[5:], reset=False)
    _check(onp.allclose(onp.concatenate([first, rest]), whole, rtol=1e-12), "state carried across calls")
    model.reset_state()
    _check(model.hidden_state is None, "reset clears the state")
    _check(onp.allclose(model.forward_sequence(us[:5]), first, rtol=0, atol=0), "reset restarts from zero")


def case_save_load():
    model = ssm.StateSpaceModel(2, 4, 3, rng=6, mode="parallel")
    model.forward_sequence(onp.ones((7, 2)))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.npz")
        model.save(path)
        loaded = ssm.StateSpaceModel.load(path)
    _check(loaded.mode == "parallel", "mode restored")
    _check(all(onp.array_equal(model.params[k], loaded.params[k]) for k in ssm.PARAM_NAMES), "params bit-exact")
    _check(onp.array_equal(model.hidden_state, loaded.hidden_state), "hidden state bit-exact")


def case_parameter_access():
    model = ssm.StateSpaceModel(2, 3, 2, rng=7)
    got = model.get_parameters()
    got["A"][0, 0] = 123.0
    _check(model.params["A"][0, 0] != 123.0, "get_parameters returns a copy")
    new = tree_map(lambda x: x * 0.5, got)
    model.set_parameters(new)
    new["B"][0, 0] = 456.0
    _check(model.params["B"][0, 0] != 456.0, "set_parameters stores a copy")
    try:
        model.set_parameters({**got, "A": onp.zeros((4, 4))})
    except ValueError:
        pass
    else:
        raise AssertionError("set_parameters accepted a wrong shape")


def case_mode_equivalence():
    rng = onp.random.default_rng(8)
    worst = 0.0
    for T in (1, 2, 7, 64, 257):
        params = ssm.init_ssm(3, 6, 2, rng=rng, scale=0.95)
        u = rng.standard_normal((2, T, 3))
        h0 = rng.standard_normal((2, 6))
        y, h = ssm.ssm_scan(params, u, h0)
        for f in (ssm.ssm_convolve, ssm.ssm_parallel_scan):
            y2, h2 = f(params, u, h0)
            worst = max(worst, onp.max(onp.abs(y2 - y)) / onp.max(onp.abs(y)),
                        onp.max(onp.abs(h2 - h)) / onp.max(onp.abs(h)))
    _check(worst < 1e-10, f"modes differ by {worst:.3g} (relative)")


def case_kernel():
    params = ssm.init_ssm(2, 4, 3, rng=9, scale=0.9)
    K = ssm.ssm_kernel(params, 6)
    want = onp.stack([params["C"] @ onp.linalg.matrix_power(params["A"], k) @ params["B"] for k in range(6)])
    _check(onp.allclose(K, want, rtol=1e-13, atol=1e-15), "K[k] = C A^k B")


def case_gradients():
    rng = onp.random.default_rng(10)
    params = ssm.init_ssm(2, 3, 2, rng=rng, scale=0.9)
    u = rng.standard_normal((2, 9, 2))
    h0 = rng.standard_normal((2, 3))
    W = rng.standard_normal((2, 9, 2))
    worst = 0.0
    for mode in ssm.MODES:
        def loss(theta):
            y, h = ssm.run_ssm(theta["p"], theta["u"], theta["h0"], mode)
            return np.sum(W * np.tanh(y)) + np.sum(h ** 2)
        theta = {"p": params, "u": u, "h0": h0}
        g = autograd.grad(loss)(theta)
        d = tree_map(lambda x: rng.standard_normal(x.shape), theta)
        eps = 1e-6
        plus = loss(tree_map(lambda x, v: x + eps * v, theta, d))
        minus = loss(tree_map(lambda x, v: x - eps * v, theta, d))
        fd = (plus - minus) / (2 * eps)
        an = tree_vdot(g, d)
        worst = max(worst, abs(fd - an) / max(abs(an), 1e-12))
    _check(worst < 1e-6, f"directional derivative off by {worst:.3g} (relative)")


def case_discretization_round_trips():
    rng = onp.random.default_rng(11)
    A = rng.standard_normal((4, 4)) - 2 * onp.eye(4)
    B = rng.standard_normal((4, 2))
    for method in ("zoh", "bilinear"):
        Ad, Bd = ssm.discretize(A, B, 0.1, method)
        A2, B2 = ssm.undiscretize(Ad, Bd, 0.1, method)
        _check(onp.allclose(A2, A, atol=1e-10) and onp.allclose(B2, B, atol=1e-10), f"{method} round trip")
    Ad1, _ = ssm.discretize(A, B, 0.3)
    Ad2, _ = ssm.discretize(A, B, 0.2)
    Ad12, _ = ssm.discretize(A, B, 0.5)
    _check(onp.allclose(Ad1 @ Ad2, Ad12, atol=1e-12), "zoh: e^{0.3A} e^{0.2A} = e^{0.5A}")


def case_hippo_stable():
    params = ssm.init_ssm(1, 16, 1, rng=12, method="hippo", dt=0.05)
    rho = ssm.spectral_radius(params["A"])
    _check(abs(rho - onp.exp(-0.05)) < 1e-8, f"spectral radius {rho} != exp(-dt)")


def case_bad_input():
    params = ssm.init_ssm(2, 3, 1, rng=13)
    bad = [lambda: ssm.ssm_scan(params, onp.zeros((5, 3))),
           lambda: ssm.ssm_scan(params, onp.zeros((5, 2)), onp.zeros(4)),
           lambda: ssm.ssm_convolve({**params, "B": onp.zeros((3, 3))}, onp.zeros((5, 2)))]
    for f in bad:
        try:
            f()
        except ValueError:
            continue
        raise AssertionError("bad input accepted")


SSM_CASES = [
    ("initialisation and forward pass", case_init_and_forward),
    ("sequence processing", case_sequence),
    ("state persistence and reset", case_state_persistence_and_reset),
    ("save and load", case_save_load),
    ("parameter access", case_parameter_access),
    ("scan = convolve = parallel scan", case_mode_equivalence),
    ("kernel K[k] = C A^k B", case_kernel),
    ("gradients vs central differences (all modes)", case_gradients),
    ("discretization round trips", case_discretization_round_trips),
    ("HiPPO-LegS + ZOH is stable", case_hippo_stable),
    ("bad input raises ValueError", case_bad_input),
]


def run_cases(cases, out=print):
    """Run ``(name, fn)`` cases, print a line each and the summary; return the exit status."""
    passed = failed = 0
    for name, fn in cases:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # a self-test reports every failure and goes on
            failed += 1
            out(f"FAIL {name}: {type(e).__name__}: {e}")
            if os.environ.get("SSMREF_SELFTEST_TRACEBACK"):
                out(traceback.format_exc())
        else:
            passed += 1
            out(f"PASS {name} ({time.perf_counter() - t0:.2f} s)")
    out(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def ssm_selftest():
    """The SSM self-test (``python -m ssmref.ssm``); returns the exit status."""
    return run_cases(SSM_CASES)
