"""The kit's JAX client for Mamba-3 SISO: ``examples/jax_port_mamba3.py``, an independent JAX port
of the ``mamba3_siso``, ``mamba3_siso_step`` and ``mamba3_siso_vjp`` kinds written from the docs.

The port passes the float64 and float32 tables as the loop over time and as the chunked form, and
each ``--broken`` variant fails exactly the cases its convention touches.  Compilation dominates
the cost (about a second per case), so the default run covers :data:`FAST` (both sequence kinds
and the step; GQA, wrapping angles); ``-m slow`` runs every case from the command line, the
chunked form on every case and every variant on every case.  Skipped when jax is not installed.
"""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

import ports                                                              # tests/ports.py

jax = pytest.importorskip("jax")

from ssmref import crosscheck as X                                       # noqa: E402
from ssmref.crosscheck.families import mamba3                            # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, "examples", "jax_port_mamba3.py")
MAMBA3 = [c.name for c in mamba3.CASES]
FAST = ["mamba3_siso", "mamba3_siso_step"]


def unwrapped_angle_leaves_the_circle(name):
    """Whether some final angle ``θ_{-1} + Σ π tanh(Angles) DT`` (not reduced mod 2π) of a
    non-empty sequence of the case leaves ``[0, 2π)``."""
    x, _, attrs = X.build_case(name)
    angles, dt = x["Angles"], x["DT"]
    if attrs["step"]:                                                    # add the seqlen axis
        angles, dt = angles[:, None], dt[..., None]
    inc = np.pi * np.tanh(angles) * np.moveaxis(dt, 2, 1)[..., None]    # (b, L, h, r)
    cu = x.get("cu_seqlens", np.array([0, inc.shape[1]]))
    theta0 = x.get("Input_Angle_State", np.zeros((len(cu) - 1,) + inc.shape[2:]))
    for i, (lo, hi) in enumerate(zip(cu[:-1], cu[1:])):
        total = np.sum(inc[:, lo:hi], axis=1) + (theta0[i] if "cu_seqlens" in x else theta0)
        if hi > lo and np.any((total < 0) | (total >= 2 * np.pi)):
            return True
    return False


def gqa_groups(name):
    """Whether ``i // (h/g)`` and ``i % g`` pick different Q/K heads (``1 < g < h``)."""
    x = X.build_case(name)[0]
    return 1 < x["Q"].shape[-2] < x["V"].shape[-2]


VARIANTS = ("no-sigmoid", "no-wrap", "tile-heads")


@functools.lru_cache(maxsize=None)
def touched():
    """variant -> the cases its convention touches, from the vectors' side (built when first
    asked, not at collection)."""
    return {"no-sigmoid": set(MAMBA3),                                   # Trap is never σ(Trap)
            "no-wrap": {n for n in MAMBA3 if unwrapped_angle_leaves_the_circle(n)},
            "tile-heads": {n for n in MAMBA3 if gqa_groups(n)}}


@pytest.fixture(scope="module")
def port():
    """The port as a module: one process, one compilation cache for every run."""
    return ports.load("jax_port_mamba3")


@pytest.fixture(scope="module")
def vectors(written_vectors):
    return lambda dtype: written_vectors("jax_mamba3", MAMBA3, dtype)


def test_port_never_imports_ssmref():
    assert "ssmref" not in ports.imported_packages("jax_port_mamba3")


def test_the_variants_are_the_ones_tested(port):
    want = touched()
    assert set(port.BROKEN) == set(want) == set(VARIANTS)
    assert set(port.KINDS) == {k.name for k in mamba3.KINDS}
    assert want["no-wrap"] == {"mamba3_siso", "mamba3_siso_no_states", "mamba3_siso_varlen"}
    assert want["tile-heads"] == {"mamba3_siso"}
    for variant, cases in want.items():               # FAST tells each variant's cases apart
        assert cases & set(FAST), variant
    assert set(FAST) - want["no-wrap"] and set(FAST) - want["tile-heads"]


@pytest.mark.parametrize("dtype,chunked", [("float64", False), ("float32", False),
                                           ("float32", True)])
def test_port_passes(port, vectors, tmp_path, dtype, chunked):
    port.run(vectors(dtype), str(tmp_path), dtype, cases=FAST, quiet=True, chunked=chunked)
    with np.load(tmp_path / "mamba3_siso.npz") as z:
        assert z["ssm_state"].dtype == np.dtype(dtype)             # computed in the dtype
    bad, report = ports.failed(vectors(dtype), tmp_path, FAST, dtype)
    worst = max(c["err_over_tol"] for c in report["cases"])
    assert not bad and worst < (1e-6 if dtype == "float64" else 0.5), X.format_report(report)


@pytest.mark.parametrize("variant", VARIANTS)
def test_broken_variant_fails_exactly_the_cases_it_touches_among_fast(port, vectors, tmp_path,
                                                                       variant):
    port.run(vectors("float64"), str(tmp_path), "float64", variant, cases=FAST, quiet=True)
    bad, _ = ports.failed(vectors("float64"), tmp_path, FAST, "float64")
    assert bad == touched()[variant] & set(FAST)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_port_passes_every_case_from_the_command_line(vectors, tmp_path, dtype):
    """Every case as a user runs it, the loop over time and the chunked form."""
    for form in ([], ["--chunked"]):
        proc = subprocess.run([sys.executable, PORT, vectors(dtype), str(tmp_path), "--dtype",
                               dtype] + form, cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0 and f"{len(MAMBA3)} cases in" in proc.stdout, proc.stderr
        bad, report = ports.failed(vectors(dtype), tmp_path, MAMBA3, dtype)
        worst = max(c["err_over_tol"] for c in report["cases"])
        assert not bad and worst < (1e-6 if dtype == "float64" else 0.5), X.format_report(report)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunked", [False, True])
def test_broken_variant_fails_exactly_the_cases_it_touches(port, vectors, tmp_path, variant,
                                                           chunked):
    port.run(vectors("float64"), str(tmp_path), "float64", variant, quiet=True, chunked=chunked)
    bad, report = ports.failed(vectors("float64"), tmp_path, MAMBA3, "float64")
    assert bad == touched()[variant]
    if variant == "no-wrap":                                   # the rotations are the same
        outs = {o["name"] for c in report["cases"] for o in c["outputs"] if not o["passed"]}
        assert outs == {"angle_state"}
