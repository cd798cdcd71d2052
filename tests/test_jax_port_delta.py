"""The kit's JAX client for the delta rule family: ``examples/jax_port_delta.py``, an independent
JAX port of the ``delta_rule``, ``delta_rule_step`` and ``delta_rule_vjp`` kinds (DeltaNet, Gated
DeltaNet, KDA) written from the docs.

The port passes the float64 and float32 tables as the loop over time and as the WY/UT chunked
form, and each ``--broken`` variant fails exactly the cases its convention touches.  Compilation
dominates the cost (about a second per case), so the default run covers :data:`FAST` (no gate, a
head gate with GVA, the step, KDA's gradients); ``-m slow`` runs every case from the command line
in both forms and every variant on every case.  Skipped when jax is not installed.
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
from ssmref.crosscheck.families import delta                             # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, "examples", "jax_port_delta.py")
DELTA = [c.name for c in delta.CASES]
FAST = ["delta_rule", "gated_delta_rule", "gated_delta_rule_step", "kda_vjp"]
#: Tells every variant of the default run apart without compiling a gradient.
FAST_VARIANTS = ["delta_rule", "gated_delta_rule", "gated_delta_rule_step"]
#: The chunked form's two special paths: a gate per key channel, a β per value column.
FAST_CHUNKED = ["kda", "gated_delta_rule_beta_per_channel"]


VARIANTS = ("beta-on-value", "gate-after", "tile-heads", "varlen-carry")


@functools.lru_cache(maxsize=None)
def touched():
    """variant -> the cases its convention touches, from the cases' own inputs and attrs (built
    when first asked, not at collection)."""
    cases = {n: X.build_case(n) for n in DELTA}
    return {
        "beta-on-value": set(DELTA),                                     # every case has β < 1
        "gate-after": {n for n, (_, _, a) in cases.items() if a["gate"] != "none"},
        "tile-heads": {n for n, (x, _, _) in cases.items()
                       if x["v"].shape[-2] > x["q"].shape[-2] > 1},
        "varlen-carry": {n for n, (x, _, _) in cases.items() if "cu_seqlens" in x},
    }


@pytest.fixture(scope="module")
def port():
    """The port as a module: one process, one compilation cache for every run."""
    return ports.load("jax_port_delta")


@pytest.fixture(scope="module")
def vectors(written_vectors):
    return lambda dtype: written_vectors("jax_delta", DELTA, dtype)


def test_port_never_imports_ssmref():
    assert "ssmref" not in ports.imported_packages("jax_port_delta")


def test_the_variants_are_the_ones_tested(port):
    want = touched()
    assert set(port.BROKEN) == set(want) == set(VARIANTS)
    assert set(port.KINDS) == {k.name for k in delta.KINDS}
    assert {X.CASES[n].kind for n in FAST} == set(port.KINDS)
    assert len(want["gate-after"]) == 8 and len(want["tile-heads"]) == 3
    assert want["varlen-carry"] == {"gated_delta_rule_varlen", "gated_delta_rule_vjp"}
    for variant in ("gate-after", "tile-heads"):      # the default run tells them apart
        assert want[variant] & set(FAST_VARIANTS) and set(FAST_VARIANTS) - want[variant]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_port_passes(port, vectors, tmp_path, dtype):
    port.run(vectors(dtype), str(tmp_path), dtype, cases=FAST, quiet=True)
    with np.load(tmp_path / "kda_vjp.npz") as z:
        assert z["o"].dtype == np.dtype(dtype) and z["dg"].shape[-1] == 16   # a gate per channel
    bad, report = ports.failed(vectors(dtype), tmp_path, FAST, dtype)
    worst = max(c["err_over_tol"] for c in report["cases"])
    assert not bad and worst < (1e-6 if dtype == "float64" else 0.2), X.format_report(report)


def test_chunked_port_passes_the_float32_table(port, vectors, tmp_path):
    port.run(vectors("float32"), str(tmp_path), "float32", cases=FAST_CHUNKED, quiet=True,
             chunked=True)
    bad, report = ports.failed(vectors("float32"), tmp_path, FAST_CHUNKED, "float32")
    worst = max(c["err_over_tol"] for c in report["cases"])
    assert not bad and worst < 0.2, X.format_report(report)


@pytest.mark.parametrize("variant", ["beta-on-value", "gate-after", "tile-heads"])
def test_broken_variant_fails_exactly_the_cases_it_touches_among_fast(port, vectors, tmp_path,
                                                                       variant):
    port.run(vectors("float64"), str(tmp_path), "float64", variant, cases=FAST_VARIANTS,
             quiet=True)
    bad, _ = ports.failed(vectors("float64"), tmp_path, FAST_VARIANTS, "float64")
    assert bad == touched()[variant] & set(FAST_VARIANTS)


def test_a_recurrence_bug_is_refused_with_chunked(port, vectors, tmp_path):
    with pytest.raises(ValueError, match="not with --chunked"):
        port.run(vectors("float64"), str(tmp_path), "float64", "gate-after", chunked=True)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_port_passes_every_case_from_the_command_line(vectors, tmp_path, dtype):
    """Every case as a user runs it, the loop over time and the WY/UT form."""
    for form in ([], ["--chunked"]):
        proc = subprocess.run([sys.executable, PORT, vectors(dtype), str(tmp_path), "--dtype",
                               dtype] + form, cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0 and f"{len(DELTA)} cases in" in proc.stdout, proc.stderr
        bad, report = ports.failed(vectors(dtype), tmp_path, DELTA, dtype)
        worst = max(c["err_over_tol"] for c in report["cases"])
        assert not bad and worst < (1e-6 if dtype == "float64" else 0.2), X.format_report(report)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_broken_variant_fails_exactly_the_cases_it_touches(port, vectors, tmp_path, variant):
    port.run(vectors("float64"), str(tmp_path), "float64", variant, quiet=True)
    bad, _ = ports.failed(vectors("float64"), tmp_path, DELTA, "float64")
    assert bad == touched()[variant]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["tile-heads", "varlen-carry"])
def test_layout_variants_fail_the_same_cases_in_the_chunked_form(port, vectors, tmp_path,
                                                                 variant):
    port.run(vectors("float64"), str(tmp_path), "float64", variant, quiet=True, chunked=True)
    bad, _ = ports.failed(vectors("float64"), tmp_path, DELTA, "float64")
    assert bad == touched()[variant]
