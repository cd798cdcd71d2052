"""The cross-check kit's real client: ``examples/torch_port.py``, an independent PyTorch port.

Every case of ``ssmref.crosscheck`` is written to a temporary folder, the port computes it in a
subprocess (as a user would run it), and the checker decides: float64 and float32 pass their
tables, and the port with one flipped convention (``--broken old-state``, ``fo-detached-lr``,
``eata-grad-weights``, ``adam-counts-refused``) fails exactly the cases that convention touches.
Skipped when torch is not installed.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, "examples", "torch_port.py")

#: The kinds the torch port implements (the structured kinds have a JAX client,
#: examples/jax_port.py; the selective ones their own, examples/torch_port_selective.py), and
#: their cases.
PORTED_KINDS = ("ssm_scan", "ssm_step", "ssm_kernel", "ssm_scan_vjp", "discretize", "policy",
                "maml", "adapter")
PORTED = [name for name, c in crosscheck.CASES.items() if c.kind in PORTED_KINDS]

#: The cases the old-state convention changes: every SSM scan, step and gradient, both policies.
OLD_STATE_CASES = {name for name, c in crosscheck.CASES.items()
                   if c.kind in ("ssm_scan", "ssm_step", "ssm_scan_vjp", "policy")}


@pytest.fixture(scope="module")
def vectors(written_vectors):
    """``dtype -> folder`` of every case the port implements."""
    return lambda dtype: written_vectors("vectors", PORTED, dtype)


def run_port(vectors_dir, results_dir, *args):
    proc = subprocess.run([sys.executable, PORT, vectors_dir, str(results_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def run_check(capsys, vectors_dir, results_dir, dtype):
    """``python -m ssmref check VECTORS RESULTS --dtype D``, in this process: (status, report)."""
    parser = crosscheck.add_check_arguments(argparse.ArgumentParser())
    capsys.readouterr()
    rc = crosscheck.run_check(parser.parse_args([vectors_dir, str(results_dir), "--dtype", dtype]))
    return rc, capsys.readouterr().out


def test_port_never_imports_ssmref():
    assert "ssmref" not in ports.imported_packages("torch_port")


def test_float64_port_passes(vectors, tmp_path, capsys):
    out = run_port(vectors("float64"), tmp_path, "--dtype", "float64")
    assert f"{len(PORTED)} cases in" in out
    rc, report = run_check(capsys, vectors("float64"), tmp_path, "float64")
    assert rc == 0, report
    assert report.rstrip().splitlines()[-1].endswith(f"in {len(PORTED)} cases")


def test_float32_port_passes_the_float32_table(vectors, tmp_path, capsys):
    run_port(vectors("float32"), tmp_path, "--dtype", "float32")
    with np.load(tmp_path / "ssm_scan.npz") as z:
        assert z["y"].dtype == np.float32          # computed in float32, not cast at the end
    rc, report = run_check(capsys, vectors("float32"), tmp_path, "float32")
    assert rc == 0, report
    baseline = crosscheck.check(vectors("float32"), str(tmp_path), mode="baseline")
    assert baseline["passed"]
    assert max(c["err_over_tol"] for c in baseline["cases"]) < 0.5     # margin 2 or more


def test_old_state_port_fails_exactly_the_cases_it_touches(vectors, tmp_path, capsys):
    run_port(vectors("float64"), tmp_path, "--broken", "old-state")
    rc, text = run_check(capsys, vectors("float64"), tmp_path, "float64")
    assert rc == 1
    assert "FAIL ssm_scan/y" in text
    for mode in ("table", "baseline"):
        report = crosscheck.check(vectors("float64"), str(tmp_path), "float64", mode=mode)
        failed = {c["name"] for c in report["cases"] if not c["passed"]}
        assert failed == OLD_STATE_CASES   # kernel, discretize, maml, adapter still pass


#: The other broken ports and the cases each must fail (run on the MAML and adapter cases).
BROKEN_CASES = {"fo-detached-lr": {"maml_scalar_lr", "maml_metasgd_steps3"},
                "eata-grad-weights": {"adapter_eata"},
                "adam-counts-refused": {"adapter_eata", "adapter_guard"}}
LEARNING_CASES = [name for name, c in crosscheck.CASES.items() if c.kind in ("maml", "adapter")]


@pytest.mark.parametrize("broken", sorted(BROKEN_CASES))
def test_each_broken_learning_port_fails_exactly_its_cases(broken, vectors, tmp_path):
    run_port(vectors("float64"), tmp_path, "--broken", broken, "--cases", *LEARNING_CASES)
    report = crosscheck.check(vectors("float64"), str(tmp_path), "float64", skip_missing=True)
    assert len(report["cases"]) == len(LEARNING_CASES)
    failed = {c["name"] for c in report["cases"] if not c["passed"]}
    assert failed == BROKEN_CASES[broken]


def test_cases_option_runs_only_the_named_cases(vectors, tmp_path):
    run_port(vectors("float64"), tmp_path, "--cases", "ssm_step", "adapter_tent")
    assert sorted(os.listdir(tmp_path)) == ["adapter_tent.npz", "ssm_step.npz"]


@pytest.mark.gpu
def test_float32_port_passes_on_cuda(vectors, tmp_path, capsys):
    run_port(vectors("float32"), tmp_path, "--dtype", "float32", "--device", "cuda")
    rc, report = run_check(capsys, vectors("float32"), tmp_path, "float32")
    assert rc == 0, report
