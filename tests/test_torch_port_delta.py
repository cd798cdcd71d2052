"""The delta rule family's real client: ``examples/torch_port_delta.py``, an independent PyTorch
port of every delta case kind.

The port passes the float64 and float32 tables; each of its ``--broken`` variants fails exactly
the cases the bug touches, and nothing else.  Skipped when torch is not installed.
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
from ssmref.crosscheck.families import delta  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, "examples", "torch_port_delta.py")
DELTA = [c.name for c in delta.CASES]


def _load_port():
    return ports.load("torch_port_delta")


port = _load_port()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vectors(written_vectors):
    return lambda dtype: written_vectors("delta", DELTA, dtype)


def failed_cases(vectors_dir, results_dir, dtype="float64", **kw):
    report = crosscheck.check(vectors_dir, str(results_dir), dtype, **kw)
    return {c["name"] for c in report["cases"] if not c["passed"]}


def expected_failures(vectors_dir):
    """The cases each bug touches, from the cases' own inputs and attrs."""
    cases = crosscheck.load_vectors(vectors_dir)["cases"]
    return {
        "beta-on-value": set(cases),                                  # every case has β < 1
        "gate-after": {n for n, c in cases.items() if c["attrs"]["gate"] != "none"},
        "old-state": set(cases),
        "tile-heads": {n for n, c in cases.items()
                       if c["inputs"]["v"].shape[-2] > c["inputs"]["q"].shape[-2] > 1},
        "varlen-carry": {n for n, c in cases.items() if "cu_seqlens" in c["inputs"]},
    }


def test_port_never_imports_ssmref():
    assert "ssmref" not in ports.imported_packages("torch_port_delta")


@pytest.mark.slow                       # a subprocess importing torch: about 6 s
def test_float64_port_passes_from_the_command_line(vectors, tmp_path, capsys):
    proc = subprocess.run([sys.executable, PORT, vectors("float64"), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(DELTA)} cases in" in proc.stdout
    parser = crosscheck.add_check_arguments(argparse.ArgumentParser())
    capsys.readouterr()
    rc = crosscheck.run_check(parser.parse_args([vectors("float64"), str(tmp_path)]))
    assert rc == 0, capsys.readouterr().out


def test_float32_port_passes_the_float32_table(vectors, tmp_path):
    port.run(vectors("float32"), tmp_path, dtype="float32")
    with np.load(tmp_path / "kda_vjp.npz") as z:
        assert z["o"].dtype == np.float32 and z["dg"].shape[-1] == 16
    report = crosscheck.check(vectors("float32"), str(tmp_path))
    assert report["passed"]
    assert max(c["err_over_tol"] for c in report["cases"]) < 0.2


@pytest.mark.parametrize("bug", port.BROKEN)
def test_each_broken_variant_fails_exactly_the_cases_it_touches(vectors, tmp_path, bug):
    port.run(vectors("float64"), tmp_path, broken=bug)
    want = expected_failures(vectors("float64"))[bug]
    assert want and failed_cases(vectors("float64"), tmp_path) == want


def test_float32_chunked_port_passes_the_float32_table(vectors, tmp_path):
    """The WY/UT form in float32 (a triangular solve per chunk, another rounding order) passes
    with the same margin as the loop (measured: err_over_tol 0.047 at worst)."""
    port.run(vectors("float32"), tmp_path, dtype="float32", chunked=True)
    report = crosscheck.check(vectors("float32"), str(tmp_path))
    assert report["passed"] and max(c["err_over_tol"] for c in report["cases"]) < 0.2
    with pytest.raises(ValueError, match="not with --chunked"):
        port.run(vectors("float32"), tmp_path, broken="old-state", chunked=True)
