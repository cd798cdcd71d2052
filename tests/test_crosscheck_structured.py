"""The structured kinds in the cross-check kit: complex vectors, effective lengths from |Λ̄|,
baseline mode, and hostile vectors (ssmref.crosscheck.families.structured)."""

import json
import shutil

import numpy as np
import pytest

from ssmref import crosscheck as X
from ssmref.crosscheck.families import structured as S
from ssmref.crosscheck.files import write_npz
from ssmref.structured import diag_kernel, diag_scan, dplr_kernel, dplr_untruncate

KINDS = [k.name for k in S.KINDS]
NAMES = [c.name for c in S.CASES]
TWO_RE = {c.name for c in S.CASES if c.kind in KINDS and c.build(np.random.default_rng(0))[1]
          .get("output") == "2re"}


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    path = tmp_path_factory.mktemp("structured")
    X.write_vectors(path, cases=NAMES)
    return path


@pytest.fixture(scope="module")
def cases(vectors):
    return X.load_vectors(vectors)["cases"]


def test_every_new_kind_has_a_case_and_is_registered():
    assert set(KINDS) <= set(X.KINDS) and {c.kind for c in S.CASES} == set(KINDS)
    assert {"diag_scan_zoh_2re", "diag_scan_bilinear_re", "diag_scan_slow", "diag_kernel_L4096",
            "s4d_kernel", "s5_bidirectional", "dplr_kernel", "dplr_truncate",
            "diag_scan_vjp_zoh", "diag_kernel_vjp"} <= set(NAMES)


def test_complex_arrays_are_complex128_and_readable_without_pickle(vectors):
    manifest = json.loads((vectors / "manifest.json").read_text())
    for entry in manifest["cases"]:
        rules = X.KIND_RULES[entry["kind"]]
        with np.load(vectors / entry["file"], allow_pickle=False) as z:
            for k in rules.required_inputs:
                want = np.complex128 if k in rules.complex_inputs else np.float64
                assert z[k].dtype == want, (entry["name"], k)
            for k in entry["outputs"]:
                assert z[k].dtype in (np.float64, np.complex128) and np.all(np.isfinite(z[k]))
    with np.load(vectors / "diag_scan_vjp_zoh.npz") as z:
        assert z["dLambda"].dtype == z["dB"].dtype == z["dC"].dtype == z["dh0"].dtype \
            == z["x_last"].dtype == np.complex128
        assert z["y"].dtype == z["dD"].dtype == z["ddt"].dtype == z["du"].dtype == np.float64
        assert z["ddt"].shape == z["dt"].shape == (8,)               # one step per state
    with np.load(vectors / "diag_scan_vjp_bilinear.npz") as z:
        assert z["ddt"].shape == z["dt"].shape == ()                  # one scalar step


def test_expected_values_are_ssmref_functions(cases):
    c = cases["diag_scan_zoh_2re"]
    x, a = c["inputs"], c["attrs"]
    y, x_last = diag_scan(S.diag_params(x), x["u"], x["h0"], method=a["method"], output=a["output"])
    assert np.allclose(c["outputs"]["y"], y, rtol=0, atol=1e-12)     # recurrence vs convolution
    assert np.allclose(c["outputs"]["x_last"], x_last, rtol=0, atol=1e-12)
    c = cases["diag_kernel_L4096"]
    K = diag_kernel(S.diag_params(c["inputs"]), 4096, method="zoh", output="2re")
    np.testing.assert_array_equal(c["outputs"]["K"], K)
    assert K.shape == (4096, 2, 2)
    c = cases["dplr_kernel"]
    assert c["outputs"]["K"].shape == (1024, 2, 1)
    # the true C behind the vector's C̃ is C̃ (I − Ā^L)^{-1}: K[0] = Re(C B̄)
    C = dplr_untruncate(c["inputs"], 1024)
    from ssmref.structured import dplr_discretize
    _, B_bar = dplr_discretize(c["inputs"])
    assert np.allclose(c["outputs"]["K"][0], np.real(C @ B_bar), atol=1e-12)
    assert cases["s4d_kernel"]["outputs"]["K"].shape == (2, 4, 2048)


def test_zoh_discretization_case_holds_the_limit_at_lambda_zero(cases):
    x, out = cases["diag_discretize_zoh"]["inputs"], cases["diag_discretize_zoh"]["outputs"]
    assert x["Lambda"][0] == 0 and x["dt"].min() < 1e-5
    np.testing.assert_allclose(out["B_bar"][0], x["dt"][0] * x["B"][0], rtol=1e-15)
    assert out["Lambda_bar"][0] == 1


def test_effective_length_comes_from_the_slowest_mode(cases):
    c = cases["diag_scan_slow"]
    x = c["inputs"]
    slowest = np.max(np.exp(x["dt"] * x["Lambda"].real))             # |exp(ΔΛ)|
    L = X.effective_length("diag_scan", x, c["attrs"])
    assert L == pytest.approx(1 / (1 - slowest)) and 2000 < L < 4096
    fast = dict(x, dt=x["dt"] * 100)
    assert X.effective_length("diag_scan", fast, c["attrs"]) == pytest.approx(
        1 / (1 - np.max(np.exp(fast["dt"] * x["Lambda"].real))))
    c = cases["diag_scan_zoh_re"]
    assert X.effective_length("diag_scan", c["inputs"], c["attrs"]) < 512
    c = cases["diag_scan_bilinear_2re"]            # bilinear: |Λ̄| → 1 for fast oscillations
    assert X.effective_length("diag_scan", c["inputs"], c["attrs"]) == 512
    c = cases["s4d_kernel"]
    assert 1000 < X.effective_length("s4d_kernel", c["inputs"], c["attrs"]) < 2048
    c = cases["dplr_kernel"]
    assert 50 < X.effective_length("dplr_kernel", c["inputs"], c["attrs"]) < 1024
    assert X.effective_length("dplr_discretize", cases["dplr_discretize"]["inputs"], {}) == 1


@pytest.mark.parametrize("name", NAMES)
def test_expected_outputs_pass_and_naive_float64_agrees(name, cases):
    """The naive computations of baseline mode implement the same definitions (float64)."""
    c = cases[name]
    rep = X.report_case(c, c["outputs"], "float64")
    assert rep["passed"] and rep["err_over_tol"] == 0
    naive = X.naive_outputs(c["kind"], c["inputs"], c["attrs"], "float64")
    X.assert_close(naive, c["outputs"], dtype="float64", kind=c["kind"], length=rep["length"])


def test_baseline_mode_for_the_structured_kinds(tmp_path):
    X.write_vectors(tmp_path / "v", dtype="float32", cases=NAMES)
    vectors = X.load_vectors(tmp_path / "v")
    cases, sid = vectors["cases"], vectors["set_id"]
    (tmp_path / "r").mkdir()
    for name, c in cases.items():
        naive = X.naive_outputs(c["kind"], c["inputs"], c["attrs"], "float32")
        for k, v in naive.items():
            assert v.dtype == c["outputs"][k].dtype and np.all(np.isfinite(v)), (name, k)
            err = np.max(np.abs(v - c["outputs"][k])) / np.max(np.abs(c["outputs"][k]))
            assert 0 < err < 5e-4, (name, k, err)           # float32 rounding, and no more
        np.savez(tmp_path / "r" / f"{name}.npz", **naive, _set_id=sid)
    report = X.check(tmp_path / "v", tmp_path / "r", mode="baseline")
    assert report["passed"] and not report["notes"]
    table = X.check(tmp_path / "v", tmp_path / "r")
    # the naive float32 forms exceed the table where docs/crosscheck.md says: B̄ as
    # (exp(ΔΛ) − 1)/Λ at tiny ΔΛ (err/tol 1.7), a recurrence whose rounded Λ̄ is powered 4000
    # times (1.6); diag_scan_bilinear_2re's recurrence sits just inside (0.91)
    failed = {c["name"] for c in table["cases"] if not c["passed"]}
    assert {"diag_discretize_zoh", "diag_scan_slow"} <= failed <= \
        {"diag_discretize_zoh", "diag_scan_slow", "diag_scan_bilinear_2re"}


def test_structured_vectors_are_deterministic(tmp_path):
    names = ["diag_scan_vjp_bilinear", "dplr_truncate", "s4d_kernel"]
    X.write_vectors(tmp_path / "a", cases=names)
    X.write_vectors(tmp_path / "b", cases=names)
    for f in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_complex_outputs_are_never_cut_to_their_real_part(vectors, tmp_path, capsys):
    out = X.load_vectors(vectors, ["diag_scan_zoh_re"])["cases"]["diag_scan_zoh_re"]["outputs"]
    np.savez(tmp_path / "diag_scan_zoh_re.npz", y=out["y"], x_last=out["x_last"].real)
    with pytest.raises(X.VectorsError, match="complex"):
        X.check(vectors, tmp_path, cases=["diag_scan_zoh_re"])
    np.savez(tmp_path / "diag_scan_zoh_re.npz", y=out["y"],
             x_last=out["x_last"].astype(np.complex64))                 # complex64 is fine
    assert X.check(vectors, tmp_path, cases=["diag_scan_zoh_re"])["passed"]
    np.savez(tmp_path / "diag_scan_zoh_re.npz", y=out["y"], x_last=np.conj(out["x_last"]))
    rep = X.check(vectors, tmp_path, cases=["diag_scan_zoh_re"])
    assert not rep["passed"]                                           # a conjugated state fails


def test_float32_vectors_round_complex_inputs_part_by_part(tmp_path):
    X.write_vectors(tmp_path, dtype="float32", cases=["diag_kernel_bilinear"])
    x, _ = X.load_case(tmp_path, "diag_kernel_bilinear")
    for k in ("Lambda", "B", "C"):
        assert x[k].dtype == np.complex128
        np.testing.assert_array_equal(x[k], x[k].astype(np.complex64))


def hostile(vectors, tmp_path, name, edit):
    dst = tmp_path / "v"
    shutil.copytree(vectors, dst)
    arrays = dict(np.load(dst / f"{name}.npz"))
    manifest = json.loads((dst / "manifest.json").read_text())
    entry = next(c for c in manifest["cases"] if c["name"] == name)
    edit(arrays, entry["attrs"])
    write_npz(dst / f"{name}.npz", arrays)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


EDITS = {
    "real Lambda": ("diag_scan_zoh_re", lambda z, a: z.update(Lambda=z["Lambda"].real),
                    "expected complex"),
    "complex u": ("diag_scan_zoh_re", lambda z, a: z.update(u=z["u"] + 0j), "expected float"),
    "nan in Lambda": ("diag_kernel_bilinear", lambda z, a: z["Lambda"].__setitem__(0, np.nan),
                      "non-finite"),
    "negative step": ("diag_scan_slow", lambda z, a: z["dt"].__setitem__(0, -1e-3), "> 0"),
    "h0 of another batch": ("diag_scan_zoh_2re", lambda z, a: z.update(h0=z["h0"][:1]), "h0"),
    "gx of another size": ("diag_scan_vjp_zoh", lambda z, a: z.update(gx=z["gx"][:, :3]), "gx"),
    "gK of another length": ("diag_kernel_vjp", lambda z, a: z.update(gK=z["gK"][:10]), "gK"),
    "unknown method": ("diag_kernel_bilinear", lambda z, a: a.update(method="euler"), "method"),
    "unknown output": ("s5_bidirectional", lambda z, a: a.update(output="3re"), "output"),
    "length not int": ("diag_kernel_L4096", lambda z, a: a.update(length=40.5), "length"),
    "s4d step per state": ("s4d_kernel", lambda z, a: z.update(dt=np.ones((4, 16)) * 1e-2), "dt"),
    "dplr P of rank 0": ("dplr_kernel", lambda z, a: z.update(P=z["P"][:, :0], Q=z["Q"][:, :0]),
                         "rank"),
    "Ct of another N": ("dplr_kernel", lambda z, a: z.update(Ct=z["Ct"][:, :3]), "Ct"),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_hostile_vectors_are_unusable_input(what, vectors, tmp_path):
    name, edit, message = EDITS[what]
    dst = hostile(vectors, tmp_path, name, edit)
    with pytest.raises(X.VectorsError, match=message):
        X.load_vectors(dst, [name])


def test_dplr_kernel_case_is_the_kernel_of_its_ct(cases):
    c = cases["dplr_kernel"]
    np.testing.assert_array_equal(c["outputs"]["K"], dplr_kernel(c["inputs"], 1024))
    assert c["attrs"] == {"length": 1024}


def test_two_re_cases_are_the_ones_that_say_so():
    assert TWO_RE == {"diag_scan_zoh_2re", "diag_scan_bilinear_2re", "diag_scan_slow",
                      "diag_scan_vjp_zoh", "diag_kernel_L4096", "diag_kernel_bilinear",
                      "diag_kernel_vjp", "s4d_kernel", "s5_bidirectional"}
