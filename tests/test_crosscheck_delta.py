"""The delta rule family of the cross-check kit (ssmref.crosscheck.families.delta): what the cases
cover, the naive baselines against the table, tolerances that never pass a 30 % wrong output,
the 40-digit certification and the checker's validation of the inputs."""

import numpy as np
import pytest

from ssmref import crosscheck as X
from ssmref.crosscheck.registry import ref_errors, validate_inputs
from ssmref.crosscheck.families import delta as D

DELTA = [c.name for c in D.CASES]


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    made = {}

    def get(dtype):
        if dtype not in made:
            made[dtype] = tmp_path_factory.mktemp(f"delta_{dtype}")
            X.write_vectors(made[dtype], dtype=dtype, cases=DELTA)
        return X.load_vectors(made[dtype])["cases"]
    return get


def test_the_cases_cover_what_breaks_kernels(vectors):
    cases = vectors("float64")
    seq = {n: c for n, c in cases.items() if c["kind"] != "delta_rule_step"}
    gates = {c["attrs"]["gate"] for c in seq.values()}
    assert gates == {"none", "head", "channel"}
    for kind in ("delta_rule", "delta_rule_vjp"):
        varlen = [c for c in seq.values() if c["kind"] == kind and "cu_seqlens" in c["inputs"]]
        assert varlen, kind
        lengths = np.diff(varlen[0]["inputs"]["cu_seqlens"])
        assert 0 in lengths and 1 in lengths                      # an empty and a length-1 one
    assert any(c["inputs"]["v"].shape[2] > c["inputs"]["q"].shape[2] for c in seq.values())  # GVA
    assert any(c["inputs"]["beta"].ndim == 4 for c in seq.values())                  # β per channel
    assert any(c["attrs"]["use_qk_l2norm_in_kernel"] for c in seq.values())
    assert any(c["inputs"]["q"].shape[1] % c["attrs"]["chunk_size"] for c in seq.values())
    assert any("initial_state" in c["inputs"] for c in seq.values())
    long = cases["gated_delta_rule_long_memory"]
    assert np.exp(long["inputs"]["g"]).min() > 0.999
    assert X.effective_length("delta_rule", long["inputs"], long["attrs"]) > 500
    grads = cases["kda_vjp"]["outputs"]
    assert {"dq", "dk", "dv", "dg", "dbeta"} <= set(grads) and grads["dg"].shape[-1] == 16


def test_expected_outputs_equal_the_recurrence(vectors):
    for name, case in vectors("float64").items():
        if case["kind"] != "delta_rule":
            continue
        o, final = D._sequence(case["inputs"], case["attrs"], method="recurrence")
        assert np.max(np.abs(o - case["outputs"]["o"])) <= 1e-13 * np.max(np.abs(o)), name
        assert np.max(np.abs(final - case["outputs"]["final_state"])) <= 1e-13 * np.max(np.abs(final))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_naive_baselines_pass_and_thirty_percent_wrong_fails_every_output(vectors, dtype):
    for name, case in vectors(dtype).items():
        naive = X.naive_outputs(case["kind"], case["inputs"], case["attrs"], dtype)
        report = X.report_case(case, naive, dtype)
        assert report["within_tolerance"], (name, report["err_over_tol"])
        if dtype == "float32":
            assert report["passed"], name
            assert report["err_over_tol"] < 0.1, name                # a margin of 10 or more
        for s in (0.7, 1.3):
            wrong = X.report_case(case, {k: s * v for k, v in case["outputs"].items()}, dtype)
            assert all(o["err_over_tol"] > 1.5 for o in wrong["outputs"]), (name, s)
            assert not wrong["passed"] and not wrong["inconclusive"], (name, s)


def test_certified_references_agree_on_a_small_case(vectors):
    pytest.importorskip("mpmath")
    case = vectors("float64")["delta_rule_vjp"]
    errs = ref_errors("delta_rule_vjp", case["inputs"], case["attrs"], case["outputs"])
    assert set(errs) == set(case["outputs"]) and max(errs.values()) < 1e-14, errs


@pytest.mark.slow
def test_every_delta_case_is_certified(vectors):
    pytest.importorskip("mpmath")
    for name, case in vectors("float64").items():
        errs = ref_errors(case["kind"], case["inputs"], case["attrs"], case["outputs"])
        assert max(errs.values()) < 1e-14, (name, errs)


def test_a_wrong_gradient_is_measured_as_wrong(vectors):
    pytest.importorskip("mpmath")
    case = vectors("float64")["kda_vjp"]
    bad = dict(case["outputs"], dg=case["outputs"]["dg"] * (1 + 1e-9))
    errs = ref_errors("delta_rule_vjp", case["inputs"], case["attrs"], bad)
    assert 5e-10 < errs["dg"] < 2e-9 and errs["dq"] < 1e-14


def test_the_checker_refuses_unusable_inputs(vectors):
    case = vectors("float64")["gated_delta_rule_varlen"]
    x, attrs = dict(case["inputs"]), dict(case["attrs"])
    validate_inputs("delta_rule", x, attrs)
    with pytest.raises(ValueError, match="cu_seqlens must be non-decreasing"):
        validate_inputs("delta_rule", dict(x, cu_seqlens=np.array([0, 20, 10, 64])), attrs)
    with pytest.raises(ValueError, match="attrs.gate must be one of"):
        validate_inputs("delta_rule", x, dict(attrs, gate="scalar"))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        validate_inputs("delta_rule", dict(x, initial_state=x["initial_state"][:2]), attrs)
    vjp = vectors("float64")["delta_rule_vjp"]
    with pytest.raises(ValueError, match="dht has shape"):
        validate_inputs("delta_rule_vjp", dict(vjp["inputs"], dht=vjp["inputs"]["dht"][:1]),
                          vjp["attrs"])
