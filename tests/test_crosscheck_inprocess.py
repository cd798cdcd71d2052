"""Checking in-process: ``load_case``, ``check_case``, ``assert_case`` with NumPy arrays and torch
tensors, correct ports passing, wrong ones failing at the right index, and every kind of bad
input refused with a message naming the case and the output."""

import numpy as np
import pytest

from ssmref import crosscheck as X
from ssmref.selective import selective_scan
from ssmref.structured import diag_scan

CASES = ["selective_scan", "selective_scan_complex", "diag_scan_bilinear_re", "ssm_step"]


@pytest.fixture(scope="module")
def vec64(tmp_path_factory):
    out = tmp_path_factory.mktemp("vec64")
    X.write_vectors(out, cases=CASES)
    return out


@pytest.fixture(scope="module")
def vec32(tmp_path_factory):
    out = tmp_path_factory.mktemp("vec32")
    X.write_vectors(out, dtype="float32", cases=CASES)
    return out


def scan_inputs(inputs, attrs):
    """The selective-scan case's inputs as ``selective_scan``'s arguments."""
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    return [inputs.get(k) for k in names], dict(delta_softplus=attrs["delta_softplus"],
                                                 return_last_state=True)


def test_load_case_is_inputs_and_attrs(vec32):
    inputs, attrs = X.load_case(vec32, "selective_scan")
    assert sorted(inputs) == ["A", "B", "C", "D", "delta", "delta_bias", "u", "z"]
    assert attrs == {"delta_softplus": True}
    assert all(a.dtype == np.float64 for a in inputs.values())
    np.testing.assert_array_equal(inputs["u"], inputs["u"].astype(np.float32))   # rounded
    expected = X.load_expected(vec32, "selective_scan")
    assert sorted(expected) == ["last_state", "out"] and expected["out"].shape == (2, 8, 64)


# ---------------------------------------------------------------------------------------------
# Correct ports pass
# ---------------------------------------------------------------------------------------------

def test_expected_outputs_perturbed_within_the_tolerance_pass(vec32, rng):
    expected = X.load_expected(vec32, "selective_scan")
    exact = X.check_case(vec32, "selective_scan", expected)
    assert exact.passed and exact.err_over_tol == 0 and exact.dtype == "float32"
    # half of the absolute part of the tolerance, with random signs, on every entry
    tol_abs = {k: o.tol_abs for k, o in exact.outputs.items()}
    near = {k: y + 0.5 * tol_abs[k] * rng.choice([-1.0, 1.0], y.shape)
            for k, y in expected.items()}
    rep = X.check_case(vec32, "selective_scan", near)
    assert rep.passed and 0.25 < rep.err_over_tol <= 0.5 and rep.failed == []
    for k, o in rep.outputs.items():
        assert o.passed and o.first_bad is None and o.n_bad == 0
        assert o.max_abs == pytest.approx(0.5 * tol_abs[k], rel=1e-12)
    assert X.assert_case(vec32, "selective_scan", near) == rep
    assert "selective_scan [selective_scan]  PASS" in str(rep)


@pytest.mark.parametrize("method", ["recurrence", "parallel"])
def test_an_independent_evaluation_passes(vec64, method):
    inputs, attrs = X.load_case(vec64, "selective_scan")
    args, kw = scan_inputs(inputs, attrs)
    out, last = selective_scan(*args, **kw, method=method)           # parallel: log-depth scan
    rep = X.assert_case(vec64, "selective_scan", {"out": out, "last_state": last})
    assert rep.passed and rep.err_over_tol < 1e-3 and rep.dtype == "float64"


def test_complex_outputs_of_a_structured_case(vec64):
    inputs, attrs = X.load_case(vec64, "diag_scan_bilinear_re")
    params = {k: inputs[k] for k in ("Lambda", "B", "C", "D", "dt")}
    y, x_last = diag_scan(params, inputs["u"], inputs["h0"], **attrs)
    assert np.iscomplexobj(x_last)
    rep = X.assert_case(vec64, "diag_scan_bilinear_re", {"y": y, "x_last": x_last})
    assert rep.passed and rep.err_over_tol < 1e-3
    # a wrong phase fails, though every modulus is right
    turned = x_last * np.exp(1e-3j)
    rep = X.check_case(vec64, "diag_scan_bilinear_re", {"y": y, "x_last": turned})
    assert rep.failed == ["x_last"] and rep.outputs["x_last"].first_bad == (0, 0)
    with pytest.raises(ValueError, match=r"case diag_scan_bilinear_re: output 'x_last'.*complex"):
        X.check_case(vec64, "diag_scan_bilinear_re", {"y": y, "x_last": x_last.real})
    with pytest.raises(ValueError, match=r"case diag_scan_bilinear_re: output 'y' is complex"):
        X.check_case(vec64, "diag_scan_bilinear_re", {"y": y + 0j, "x_last": x_last})


# ---------------------------------------------------------------------------------------------
# A wrong result fails, at the right index
# ---------------------------------------------------------------------------------------------

def test_a_wrong_result_fails_with_its_first_failing_index(vec32):
    expected = X.load_expected(vec32, "selective_scan")
    out = expected["out"].copy()                                  # (b, d, L): time is axis 2
    s = np.max(np.abs(out))
    out[0, 3, 40] += 0.01 * s                                     # a later step in batch 0
    out[1, 5, 17] += 0.01 * s                                     # the earliest step: reported
    rep = X.check_case(vec32, "selective_scan", dict(expected, out=out))
    o = rep.outputs["out"]
    assert not rep.passed and rep.failed == ["out"] and rep.outputs["last_state"].passed
    assert o.first_bad == (1, 5, 17) and o.first_bad_step == 17 and o.n_bad == 2
    assert o.err_over_tol > 100 and rep.err_over_tol == o.err_over_tol
    with pytest.raises(X.CaseAssertionError) as info:
        X.assert_case(vec32, "selective_scan", dict(expected, out=out))
    assert isinstance(info.value, AssertionError) and info.value.report == rep
    assert "FAIL selective_scan/out" in str(info.value) and "t=17 (1, 5, 17)" in str(info.value)
    nan = expected["last_state"].copy()
    nan[1, 2, 3] = np.nan
    rep = X.check_case(vec32, "selective_scan", dict(expected, last_state=nan))
    assert rep.failed == ["last_state"] and rep.outputs["last_state"].first_bad == (1, 2, 3)


def test_dtype_none_is_the_manifests_and_an_explicit_dtype_picks_other_tolerances(vec32):
    expected = X.load_expected(vec32, "selective_scan")
    off = {k: y + 1e-4 * np.max(np.abs(y)) for k, y in expected.items()}
    assert not X.check_case(vec32, "selective_scan", off).passed          # float32: 1e-5
    rep = X.check_case(vec32, "selective_scan", off, dtype="float16")    # float16: 5e-3
    assert rep.passed and rep.dtype == "float16"
    assert any("written for float32" in n for n in rep.notes)
    assert X.check_case(vec32, "selective_scan", expected, mode="baseline").passed


# ---------------------------------------------------------------------------------------------
# torch tensors
# ---------------------------------------------------------------------------------------------

def torch_selective_scan(torch, u, delta, A, B, C, D, z, delta_bias):
    """An independent float32 PyTorch port: the recurrence of ``docs/selective.md``, varying
    ``B`` and ``C`` of shape ``(b, n, L)``."""
    dt = torch.nn.functional.softplus(delta + delta_bias[:, None])            # (b, d, L)
    x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)         # (b, d, n)
    ys = []
    for t in range(u.shape[2]):
        x = torch.exp(dt[:, :, t, None] * A) * x \
            + (dt[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + D[:, None] * u                              # (b, d, L)
    return y * z * torch.sigmoid(z), x


def test_torch_tensors_that_require_grad(vec32):
    torch = pytest.importorskip("torch")
    inputs, attrs = X.load_case(vec32, "selective_scan")
    args, _ = scan_inputs(inputs, attrs)
    t = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in args]
    out, last = torch_selective_scan(torch, *t)
    assert out.requires_grad and last.requires_grad
    rep = X.assert_case(vec32, "selective_scan", {"out": out, "last_state": last})
    assert rep.passed and 0 < rep.err_over_tol < 0.2
    (out.sum() + last.sum()).backward()                  # the graph is intact after checking
    assert t[0].grad is not None and torch.all(torch.isfinite(t[0].grad))


def test_bfloat16_and_complex_torch_tensors(vec32, vec64):
    torch = pytest.importorskip("torch")
    expected = X.load_expected(vec32, "selective_scan")
    bf16 = {k: torch.tensor(y, dtype=torch.float32, requires_grad=True).to(torch.bfloat16)
            for k, y in expected.items()}
    rep = X.check_case(vec32, "selective_scan", bf16, dtype="bfloat16")
    # bfloat16's table detects errors of 6.6 % and more: within bfloat16's 10 % power limit
    assert rep.passed and not rep.inconclusive and 0 < rep.err_over_tol < 0.2
    # held to 1 %, bfloat16's tolerance is too weak: within it, but inconclusive, not passed
    rep = X.check_case(vec32, "selective_scan", bf16, dtype="bfloat16", power_limit=0.01)
    assert rep.within_tolerance and rep.inconclusive and not rep.passed
    assert not X.check_case(vec32, "selective_scan", bf16).passed        # float32 tolerances
    expected = X.load_expected(vec64, "diag_scan_bilinear_re")
    x_last = torch.tensor(np.conj(expected["x_last"]), dtype=torch.complex64).conj()
    assert x_last.is_conj()                                              # a lazy conjugate view
    rep = X.check_case(vec64, "diag_scan_bilinear_re", {"y": torch.tensor(expected["y"]),
                                                        "x_last": x_last}, dtype="float32")
    assert rep.passed and rep.outputs["x_last"].max_abs > 0                # complex64 rounding
    rep = X.check_case(vec64, "diag_scan_bilinear_re", {"y": torch.tensor(expected["y"]),
                                                        "x_last": x_last.conj()}, dtype="float32")
    assert rep.failed == ["x_last"]                                      # conjugated: fails


def test_bfloat16_arrays_of_ml_dtypes(vec32):
    """JAX's bfloat16 arrays are NumPy arrays of ml_dtypes' bfloat16: widened to float32."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    expected = X.load_expected(vec32, "selective_scan")
    bf16 = {k: y.astype(ml_dtypes.bfloat16) for k, y in expected.items()}
    rep = X.check_case(vec32, "selective_scan", bf16, dtype="bfloat16")
    assert rep.passed and not rep.inconclusive
    assert not X.check_case(vec32, "selective_scan", bf16).passed


# ---------------------------------------------------------------------------------------------
# Bad input: a clear ValueError / KeyError naming the case and the output
# ---------------------------------------------------------------------------------------------

def test_bad_input_is_refused_with_the_case_and_the_output_named(vec32, tmp_path):
    expected = X.load_expected(vec32, "selective_scan")
    for call in (lambda: X.check_case(vec32, "selective_scn", expected),
                 lambda: X.load_case(vec32, "selective_scn")):
        for error in (KeyError, ValueError):
            with pytest.raises(error, match=r"unknown case\(s\) \['selective_scn'\]"):
                call()
    with pytest.raises(KeyError) as info:
        X.check_case(vec32, "selective_scan", {"out": expected["out"]})
    assert str(info.value) == ("case selective_scan: output(s) ['last_state'] missing (the "
                               "case's outputs are ['last_state', 'out'])")
    with pytest.raises(KeyError, match=r"case selective_scan: unknown output\(s\) \['lastate'\]"):
        X.check_case(vec32, "selective_scan", dict(expected, lastate=expected["last_state"]))
    with pytest.raises(ValueError, match=r"case selective_scan: output 'out' has shape "
                                         r"\(8, 64\), expected \(2, 8, 64\)"):
        X.check_case(vec32, "selective_scan", dict(expected, out=expected["out"][0]))
    with pytest.raises(ValueError, match=r"case selective_scan: outputs must be a dict"):
        X.check_case(vec32, "selective_scan", [expected["out"], expected["last_state"]])
    with pytest.raises(ValueError, match=r"case selective_scan: output 'out' has dtype <U"):
        X.check_case(vec32, "selective_scan", dict(expected, out=np.full((2, 8, 64), "x")))
    with pytest.raises(ValueError, match="dtype must be one of"):
        X.check_case(vec32, "selective_scan", expected, dtype="float8")
    with pytest.raises(ValueError, match="mode must be"):
        X.check_case(vec32, "selective_scan", expected, mode="loose")
    with pytest.raises(ValueError, match="a case name must be a str"):
        X.check_case(vec32, 3, expected)
    with pytest.raises(ValueError, match="does not exist"):
        X.check_case(tmp_path / "nowhere", "selective_scan", expected)
    with pytest.raises(ValueError, match="missing"):                   # assert_case too
        X.assert_case(vec32, "selective_scan", {"out": expected["out"]})


def test_bad_input_raises_from_the_api_not_from_deep_inside(vec32):
    expected = X.load_expected(vec32, "selective_scan")
    with pytest.raises(ValueError) as info:
        X.check_case(vec32, "selective_scan", dict(expected, out=expected["out"][0]))
    frames = [f.name for f in info.traceback]
    assert len(frames) <= 6, frames                     # the API, its checks, no numpy internals
