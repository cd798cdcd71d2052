"""The selective family's real client: ``examples/torch_port_selective.py``, an independent
PyTorch port of every selective case kind.

The port passes the float64 and float32 tables; each of its ``--broken`` variants (a bug real
ports have had) fails exactly the cases the bug touches, and nothing else.  Skipped when torch is
not installed.
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

import ports                                                              # tests/ports.py

torch = pytest.importorskip("torch")

from ssmref import crosscheck  # noqa: E402  (after the importorskip)
from ssmref.crosscheck.families import selective  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, "examples", "torch_port_selective.py")
SELECTIVE = [c.name for c in selective.CASES]


def _load_port():
    return ports.load("torch_port_selective")


port = _load_port()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As the port's command line does: small tensors, a busy machine (10x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vectors(written_vectors):
    """``dtype -> folder`` of the selective cases."""
    return lambda dtype: written_vectors("selective", SELECTIVE, dtype)


def failed_cases(vectors_dir, results_dir, dtype="float64", **kw):
    report = crosscheck.check(vectors_dir, str(results_dir), dtype, **kw)
    return {c["name"] for c in report["cases"] if not c["passed"]}


def expected_failures(vectors_dir):
    """The cases each bug touches, from the cases' own inputs and attrs."""
    cases = crosscheck.load_vectors(vectors_dir)["cases"]
    softplus = {n for n, c in cases.items()
                if c["attrs"].get("delta_softplus") or c["attrs"].get("dt_softplus")}
    return {
        # every case: Mamba and Mamba-2 both discretize B with Euler's Δ B
        "zoh": set(cases),
        # every case that applies softplus, except where δ + δ_bias ≈ 20: there softplus(x) = x
        # to within e^{-15} (max_rel 1e-9), which no tolerance can (or should) see
        "no-softplus": softplus - {"selective_scan_softplus_threshold"},
        # SSD with more than one chunk
        "no-chunk-carry": {n for n, c in cases.items() if c["kind"].startswith("ssd")
                           and c["inputs"]["x"].shape[1] > c["attrs"]["chunk_size"]},
        # gradients w.r.t. complex inputs (A and B as complex arrays; interleaved C is real)
        "torch-grad": {n for n, c in cases.items() if c["kind"].endswith("_vjp")
                       and any(np.iscomplexobj(v) for v in c["inputs"].values())},
        # decoding with a state cache narrower than the arithmetic
        "round-before-out": {n for n, c in cases.items() if c["kind"] == "selective_decode"},
    }


def test_port_never_imports_ssmref():
    assert "ssmref" not in ports.imported_packages("torch_port_selective")


def test_float64_port_passes_from_the_command_line(vectors, tmp_path, capsys):
    proc = subprocess.run([sys.executable, PORT, vectors("float64"), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(SELECTIVE)} cases in" in proc.stdout
    parser = crosscheck.add_check_arguments(argparse.ArgumentParser())
    capsys.readouterr()
    rc = crosscheck.run_check(parser.parse_args([vectors("float64"), str(tmp_path)]))
    assert rc == 0, capsys.readouterr().out


def test_float32_port_passes_the_float32_table(vectors, tmp_path):
    port.run(vectors("float32"), tmp_path, dtype="float32")
    with np.load(tmp_path / "selective_scan_vjp_complex.npz") as z:
        assert z["out"].dtype == np.float32 and z["dA"].dtype == np.complex64
    report = crosscheck.check(vectors("float32"), str(tmp_path))
    assert report["passed"]
    assert max(c["err_over_tol"] for c in report["cases"]) < 0.2     # measured: 0.04


@pytest.mark.parametrize("bug", port.BROKEN)
def test_each_broken_variant_fails_exactly_the_cases_it_touches(vectors, tmp_path, bug):
    port.run(vectors("float64"), tmp_path, broken=bug)
    want = expected_failures(vectors("float64"))[bug]
    assert want and failed_cases(vectors("float64"), tmp_path) == want


def test_the_rounding_order_bug_hides_in_bfloat16_tolerances(vectors, tmp_path):
    """vLLM's reference read ``out`` from the state rounded to bfloat16: off by 5e-4 of the
    output, 50 times the float32 tolerance, inside the bfloat16 one."""
    name = "selective_decode_bf16_state"
    port.run(vectors("float32"), tmp_path, dtype="float32", broken="round-before-out",
             cases=[name])
    for dtype, mode in (("float32", "table"), ("float32", "baseline")):
        assert failed_cases(vectors("float32"), tmp_path, dtype, mode=mode, cases=[name]) == {name}
    weak = crosscheck.check(vectors("float32"), str(tmp_path), "bfloat16", cases=[name])
    assert weak["passed"]            # 5e-4 is below what bfloat16's table can detect (6.6 %)
    strict = crosscheck.check(vectors("float32"), str(tmp_path), "bfloat16", cases=[name],
                              power_limit=0.01)
    assert strict["within_tolerance"] and strict["inconclusive"] and not strict["passed"]


@pytest.mark.gpu
def test_float32_port_passes_on_cuda(vectors, tmp_path):
    proc = subprocess.run([sys.executable, PORT, vectors("float32"), str(tmp_path), "--dtype",
                           "float32", "--device", "cuda"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert crosscheck.check(vectors("float32"), str(tmp_path))["passed"]
