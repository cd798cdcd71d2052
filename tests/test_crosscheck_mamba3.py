"""Mamba-3 SISO in the kit: the cases' inputs (exact in every narrow dtype, final angles off the
wrap point), their effective lengths, the naive float32 baseline within the table, the 40-digit
references of the fast cases, the torch client ``examples/torch_port_mamba3.py`` passing in
float64 and float32, and each of its ``--broken`` variants failing exactly the cases it touches."""

import importlib.util
import os

import numpy as np
import pytest

from ssmref import crosscheck as X
from ssmref.crosscheck import registry
from ssmref.crosscheck.families import mamba3
from ssmref.crosscheck.files import VectorsError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAMBA3 = [c.name for c in mamba3.CASES]


def test_the_kinds_and_cases_are_registered():
    assert {c.kind for c in mamba3.CASES} == {k.name for k in mamba3.KINDS} <= set(X.KINDS)
    assert set(MAMBA3) <= set(X.CASES)


@pytest.mark.parametrize("name", MAMBA3)
def test_inputs_are_the_same_in_every_dtype_and_angles_stay_off_the_wrap(name):
    inputs, outputs, attrs = X.build_case(name)
    for dtype in ("float32", "float16", "bfloat16"):
        other = X.build_case(name, dtype)[0]
        assert all(np.array_equal(other[k], v) for k, v in inputs.items()), dtype
    theta = outputs["angle_state"]
    assert np.all((theta >= mamba3.ANGLE_MARGIN) & (theta <= 2 * np.pi - mamba3.ANGLE_MARGIN))


def test_effective_lengths():
    length = {n: X.effective_length(X.CASES[n].kind, *X.build_case(n)[::2]) for n in MAMBA3}
    assert length["mamba3_siso_long_memory"] == 2000           # the angle keeps every step
    assert length["mamba3_siso_varlen"] == 62                  # the longest segment
    assert length["mamba3_siso_step"] == 1
    x, _, attrs = X.build_case("mamba3_siso_long_memory")
    no_angles = dict(x, Angles=np.zeros_like(x["Angles"]))     # only the state's own decay
    assert 50 < X.effective_length("mamba3_siso", no_angles, attrs) < 1000


@pytest.mark.parametrize("name", MAMBA3)
def test_the_naive_float32_loop_is_within_the_table(name):
    x, want, attrs = X.build_case(name, "float32")
    kind = X.CASES[name].kind
    got = X.naive_outputs(kind, x, attrs, "float32")
    L = X.effective_length(kind, x, attrs)
    for k, y in want.items():
        rtol, atol = X.tolerance("float32", X.output_class(kind, k), L)
        err = np.max(np.abs(got[k] - y) / (rtol * np.abs(y) + atol * max(np.max(np.abs(y)), 1e-300)))
        assert err < 0.5, (k, err)


def test_bad_vectors_are_refused(tmp_path):
    x, out, attrs = X.build_case("mamba3_siso_varlen")
    with pytest.raises(ValueError, match="cu_seqlens must start at 0, be non-decreasing"):
        registry.validate_inputs("mamba3_siso", dict(x, cu_seqlens=x["cu_seqlens"][::-1]), attrs)
    x, out, attrs = X.build_case("mamba3_siso_vjp")
    with pytest.raises(ValueError, match="gssm has shape"):
        registry.validate_inputs("mamba3_siso_vjp", dict(x, gssm=x["gssm"][:1]), attrs)
    X.write_vectors(tmp_path, cases=["mamba3_siso_step"])
    np.savez(tmp_path / "mamba3_siso_step.npz", **dict(X.build_case("mamba3_siso_step")[0],
                                                      **X.build_case("mamba3_siso_step")[1],
                                                      Trap=np.zeros((3, 5))))
    with pytest.raises(VectorsError, match=r"unusable inputs \(Trap must have shape"):
        X.load_vectors(tmp_path)


def test_the_40_digit_reference_certifies_varlen_with_empty_segments():
    """(The first case of each kind: tests/test_crosscheck_certify.py; all: its slow tests.)"""
    pytest.importorskip("mpmath")
    name = "mamba3_siso_varlen"
    inputs, outputs, attrs = X.build_case(name)
    errors = registry.ref_errors(X.CASES[name].kind, inputs, attrs, outputs)
    assert sorted(errors) == sorted(outputs) and max(errors.values()) < 1e-15, errors
    bad = dict(outputs, out=outputs["out"] * (1 + 1e-9))
    assert registry.ref_errors(X.CASES[name].kind, inputs, attrs, bad)["out"] > 9e-10


# ---------------------------------------------------------------------------------------------
# The torch client
# ---------------------------------------------------------------------------------------------

def _port():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "torch_port_mamba3", os.path.join(ROOT, "examples", "torch_port_mamba3.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _failed(vec, res, dtype):
    report = X.check(vec, str(res), dtype, skip_missing=True)
    return {c["name"] for c in report["cases"] if not c["passed"]}, report


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_torch_port_passes(written_vectors, tmp_path, dtype):
    port = _port()
    vec = written_vectors("mamba3", MAMBA3, dtype)
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                   # small tensors: 10x faster here
    try:
        port.run(vec, tmp_path, dtype=dtype)
    finally:
        torch.set_num_threads(threads)
    failed, report = _failed(vec, tmp_path, dtype)
    worst = max(c["err_over_tol"] for c in report["cases"])
    assert not failed and worst < (1e-6 if dtype == "float64" else 0.5)


def _wraps(name):
    """Whether some final angle of the case, not reduced mod 2π, leaves [0, 2π)."""
    x, _, attrs = X.build_case(name)
    if attrs["step"]:                                          # the seqlen axis, of length 1
        x = dict(x, Angles=x["Angles"][:, None], DT=x["DT"][..., None])
    inc = np.pi * np.tanh(x["Angles"]) * np.moveaxis(x["DT"], 2, 1)[..., None]   # (b, L, h, r)
    cu = x.get("cu_seqlens", [0, inc.shape[1]])
    theta0 = x.get("Input_Angle_State")
    for i in range(len(cu) - 1):
        total = np.sum(inc[:, cu[i]:cu[i + 1]], axis=1)
        total = total if "cu_seqlens" not in x else total[0]
        total = total + (0 if theta0 is None else theta0[i] if "cu_seqlens" in x else theta0)
        if cu[i + 1] > cu[i] and np.any((total < 0) | (total >= 2 * np.pi)):
            return True
    return False


@pytest.mark.parametrize("broken", ["no-sigmoid", "no-wrap", "mamba2"])
def test_each_broken_variant_fails_exactly_its_cases(written_vectors, tmp_path, broken):
    port = _port()
    vec = written_vectors("mamba3", MAMBA3, "float64")
    port.run(vec, tmp_path, broken=broken)
    failed, report = _failed(vec, tmp_path, "float64")
    expected = set(MAMBA3) if broken != "no-wrap" else {n for n in MAMBA3 if _wraps(n)}
    assert failed == expected
    if broken == "no-wrap":
        assert {"mamba3_siso_step", "mamba3_siso_long_memory"}.isdisjoint(expected)
        bad = {o["name"] for c in report["cases"] for o in c["outputs"] if not o["passed"]}
        assert bad == {"angle_state"}                          # the rotations are the same
