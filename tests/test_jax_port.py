"""The cross-check kit's JAX client: ``examples/jax_port.py``, an independent JAX port of the SSM
kinds (dense and structured: S4, S4D, S5).

The port computes the vectors' cases (float64 and float32) and the checker decides: both pass
their tables, and each ``--broken`` variant fails exactly the cases its convention touches (so it
passes every other case).  Compilation dominates the cost (about a second per case and dtype), so
the default run covers one case of each structured kind (:data:`FAST`; the torch port's tests
cover the dense kinds) and three variants; ``-m slow`` runs every SSM case from the command line,
as a user would, and every variant on every SSM case.  Skipped when jax is not installed.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import ports                                                              # tests/ports.py

jax = pytest.importorskip("jax")

from ssmref import crosscheck as X                                       # noqa: E402
from ssmref.crosscheck.families import structured                        # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, "examples", "jax_port.py")

DENSE_KINDS = ("ssm_scan", "ssm_step", "ssm_kernel", "ssm_scan_vjp", "discretize")
STRUCTURED = [c.name for c in structured.CASES]
SSM = [n for n, c in X.CASES.items() if c.kind in DENSE_KINDS] + STRUCTURED
#: One case of each structured kind, covering zoh and bilinear, "re" and "2re", both step layouts.
FAST = ["diag_discretize_zoh", "diag_scan_bilinear_re", "diag_scan_slow", "diag_scan_vjp_zoh",
        "diag_kernel_L4096", "diag_kernel_vjp", "s4d_kernel", "s5_bidirectional",
        "dplr_discretize", "dplr_truncate", "dplr_kernel"]


def attrs_of(name):
    return X.CASES[name].build(np.random.default_rng(0))[1]


def kinds(*names):
    return {n for n in SSM if X.CASES[n].kind in names}


#: variant -> the cases its convention touches, from the vectors' side (kinds and attrs)
TOUCHED = {
    "re-instead-of-2re": {n for n in SSM if attrs_of(n).get("output") == "2re"},
    "bilinear-instead-of-zoh": {n for n in SSM if attrs_of(n).get("method") == "zoh"},
    "conj-dropped-in-Ct": kinds("dplr_kernel"),
    "old-state": kinds("ssm_scan", "ssm_step", "ssm_scan_vjp", "diag_scan", "diag_scan_vjp",
                       "bidirectional"),
    "kernel-lag-shift": kinds("ssm_kernel", "diag_kernel", "diag_kernel_vjp", "s4d_kernel",
                              "dplr_kernel"),
    "torch-grad": kinds("diag_scan_vjp", "diag_kernel_vjp"),        # complex parameters only
    # float64: NaN at the Λ = 0 state; elsewhere (exp(ΔΛ) − 1)/Λ is within 1e-10 relative
    "expm1-dropped": {"diag_discretize_zoh"},
}
NAMED = ("re-instead-of-2re", "bilinear-instead-of-zoh", "conj-dropped-in-Ct")


@pytest.fixture(scope="module")
def port():
    """The port as a module: one process, one compilation cache for every run."""
    return ports.load("jax_port")


@pytest.fixture(scope="module")
def vectors(written_vectors):
    """``dtype -> folder`` of every SSM case."""
    return lambda dtype: written_vectors("jax_vectors", SSM, dtype)


def test_port_never_imports_ssmref():
    assert "ssmref" not in ports.imported_packages("jax_port")


def test_the_variants_are_the_ones_tested(port):
    assert set(port.BROKEN) == set(TOUCHED)
    assert set(port.KINDS) == set(DENSE_KINDS) | {k.name for k in structured.KINDS}
    assert {X.CASES[n].kind for n in FAST} == {k.name for k in structured.KINDS}
    for variant in NAMED:
        assert TOUCHED[variant] & set(FAST) and set(FAST) - TOUCHED[variant]


def test_command_line(vectors, tmp_path):
    run = [sys.executable, PORT, vectors("float64"), str(tmp_path)]
    proc = subprocess.run(run + ["--cases", "ssm_step", "diag_discretize_zoh", "maml_mlp"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown case" in proc.stderr      # not in these vectors
    proc = subprocess.run(run + ["--cases", "ssm_step", "diag_discretize_zoh"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "2 cases in" in proc.stdout, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["diag_discretize_zoh.npz", "ssm_step.npz"]
    with np.load(tmp_path / "diag_discretize_zoh.npz") as z:
        assert z["B_bar"].dtype == np.complex128                          # complex stays complex
    assert X.check(vectors("float64"), str(tmp_path), skip_missing=True)["passed"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_port_passes_a_case_of_each_structured_kind(port, vectors, tmp_path, dtype):
    port.run(vectors(dtype), str(tmp_path), dtype, cases=FAST, quiet=True)
    with np.load(tmp_path / "diag_scan_slow.npz") as z:
        want = np.complex128 if dtype == "float64" else np.complex64
        assert z["x_last"].dtype == want                    # computed in the dtype, not cast
    bad, report = ports.failed(vectors(dtype), tmp_path, FAST, dtype)
    assert not bad, X.format_report(report)


@pytest.mark.parametrize("variant", NAMED)
def test_broken_variant_fails_exactly_the_cases_it_touches_among_fast(port, vectors, tmp_path,
                                                                       variant):
    port.run(vectors("float64"), str(tmp_path), "float64", variant, cases=FAST, quiet=True)
    bad, _ = ports.failed(vectors("float64"), tmp_path, FAST, "float64")
    assert bad == TOUCHED[variant] & set(FAST)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_port_passes_every_ssm_case_from_the_command_line(vectors, tmp_path, dtype, capsys):
    """About half a minute each: every SSM case, run as a user would."""
    proc = subprocess.run([sys.executable, PORT, vectors(dtype), str(tmp_path), "--dtype", dtype],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and f"{len(SSM)} cases in" in proc.stdout, proc.stderr
    bad, report = ports.failed(vectors(dtype), tmp_path, SSM, dtype)
    assert not bad, X.format_report(report)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(TOUCHED))
def test_broken_variant_fails_exactly_the_cases_it_touches(port, vectors, tmp_path, variant):
    port.run(vectors("float64"), str(tmp_path), "float64", variant, cases=SSM, quiet=True)
    bad, _ = ports.failed(vectors("float64"), tmp_path, SSM, "float64")
    assert bad == TOUCHED[variant]
