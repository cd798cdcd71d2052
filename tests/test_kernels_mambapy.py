"""mamba.py's selective scans (PyPI ``mambapy``, pinned in the ``kernels`` extra) against the kit:
``examples/kernels/mambapy_client.py``.

Every expressible case passes with both scans in float64 and float32, and with the parallel scan
in float16 and bfloat16.  The findings are asserted as findings, so that a changed mambapy shows
up as a changed test: the sequential scan cannot run in float16 / bfloat16, and with ``A`` in
bfloat16 (not in float32 as ``MambaBlock`` passes it) the long-memory cases fail.  Skipped
without torch or mambapy (``.ci/run`` installs both).
"""

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mambapy")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(ROOT, "examples", "kernels", "mambapy_client.py")


def _load_client():
    spec = importlib.util.spec_from_file_location("mambapy_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()
#: The sequential scan's slowest cases (a Python loop over 2049 and 6000 steps, and its
#: backward): in the slow sweep only.
SLOW = {"selective_scan_L2049", "selective_scan_long_memory", "selective_scan_vjp_long"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vectors(written_vectors):
    return lambda dtype: written_vectors("mambapy", client.CASES, dtype)


def outcomes(vectors_dir, dtype, cases, scans=client.SCANS, **kw):
    """``{(scan, case): (within tolerance or None if it raised, err_over_tol, error)}``; in
    float16 / bfloat16 every case within tolerance is also inconclusive (the tolerance cannot
    detect a 1 % error), so the verdict here is the tolerance's, not a pass."""
    rows = client.check_all(vectors_dir, dtype, cases, scans, **kw)
    for _, _, rep, _ in rows:
        assert rep is None or rep.passed or not rep.within_tolerance or (
            rep.inconclusive and dtype in ("float16", "bfloat16"))
    return {(scan, name): (None, None, error) if rep is None
            else (rep.within_tolerance, rep.err_over_tol, None)
            for scan, name, rep, error in rows}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_both_scans_pass_forward_and_gradients(vectors, dtype):
    got = outcomes(vectors(dtype), dtype, client.CASES, ["pscan"])
    got.update(outcomes(vectors(dtype), dtype, [c for c in client.CASES if c not in SLOW],
                        ["sequential"]))
    assert all(passed for passed, _, _ in got.values()), got
    threshold = {k: v for k, v in got.items() if k[1] == "selective_scan_softplus_threshold"}
    worst = max(ratio for k, (_, ratio, _) in got.items() if k not in threshold)
    assert worst < (1e-6 if dtype == "float64" else 0.2), got
    if dtype == "float64":         # F.softplus returns its argument above 20: 4e-11 off
        assert all(1e-5 < ratio < 1e-2 for _, ratio, _ in threshold.values()), threshold


def test_finding_the_sequential_scan_cannot_run_in_half_precision(vectors):
    for dtype, name in (("bfloat16", "BFloat16"), ("float16", "Half")):
        got = outcomes(vectors(dtype), dtype, ["selective_scan_L1"], ["sequential"])
        passed, _, error = got["sequential", "selective_scan_L1"]
        assert passed is None and error == f"expected scalar type Float but found {name}"


def test_pscan_in_bfloat16_passes_with_A_in_float32_as_the_block_passes_it(vectors):
    cases = ["selective_scan", "selective_scan_long_memory", "selective_scan_vjp"]
    got = outcomes(vectors("bfloat16"), "bfloat16", cases, ["pscan"])
    assert all(passed for passed, _, _ in got.values()), got


def test_finding_A_in_bfloat16_loses_the_long_memory(vectors):
    """exp(ΔA) with Δ ~ 1e-4 rounds to 1 in bfloat16: the state stops decaying.  The table fails
    it; baseline mode passes it (a naive bfloat16 loop is as far off)."""
    torch_exp = torch.exp(torch.tensor(-1e-4, dtype=torch.bfloat16))
    assert torch_exp.item() == 1.0
    v = vectors("bfloat16")
    name = "selective_scan_long_memory"
    passed, ratio, _ = outcomes(v, "bfloat16", [name], ["pscan"], params_in_dtype=True)[
        "pscan", name]
    assert passed is False and 3 < ratio < 30
    base = outcomes(v, "bfloat16", [name], ["pscan"], params_in_dtype=True, mode="baseline")
    assert base["pscan", name][0] is True


def test_the_scans_of_issue_26_agree_with_the_reference_within_float32():
    """mamba.py issue 26: the two scans differ (``torch.allclose`` is False), but each is within
    the float32 tolerance of the float64 reference: the difference is rounding."""
    for stable in (False, True):
        lines = client.scan_disagreement(seeds=range(3), stable=stable).splitlines()[1:]
        for line in lines:
            seed, scale, p, s, diff, close = line.split()
            assert float(p) < 1 and float(s) < 1 and float(diff) < 1e-6 and close == "False"


def test_the_command_line_prints_the_table(vectors, capsys):
    assert client.main(["--dtype", "float32", "--cases", "selective_scan_L1"]) == 0
    out = capsys.readouterr().out
    assert "pscan      float32   selective_scan_L1" in out and "FAIL" not in out
    assert client.main(["--dtype", "bfloat16", "--cases", "selective_scan_L1"]) == 1
    assert "ERROR" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_every_case_every_scan_every_dtype(vectors, dtype):
    got = outcomes(vectors(dtype), dtype, client.CASES)
    for (scan, name), (passed, ratio, error) in got.items():
        if scan == "sequential" and dtype in ("float16", "bfloat16"):
            assert passed is None and "expected scalar type Float" in error
        else:
            assert passed, (scan, name, ratio)
