"""The ``adapter_method`` kind's real client: ``examples/torch_port_tta.py``, an independent
PyTorch port of SHOT-IM, SAR, CoTTA, TTT, TTT++ and T3A.

The port passes the float64 and float32 tables; each of its ``--broken`` variants fails exactly
the case its bug touches.  Skipped when torch is not installed.
"""

import os

import pytest

import ports                                                              # tests/ports.py

torch = pytest.importorskip("torch")

from ssmref import crosscheck  # noqa: E402  (after the importorskip)
from ssmref.crosscheck.families import adapter_methods  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, "examples", "torch_port_tta.py")
CASES = [c.name for c in adapter_methods.CASES]


def _load_port():
    return ports.load("torch_port_tta")


port = _load_port()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vectors(written_vectors):
    return lambda dtype: written_vectors("adapter_methods", CASES, dtype)


def failed_cases(vectors_dir, results_dir, dtype="float64"):
    report = crosscheck.check(vectors_dir, str(results_dir), dtype)
    return {c["name"] for c in report["cases"] if not c["passed"]}


def test_port_never_imports_ssmref():
    assert "ssmref" not in ports.imported_packages("torch_port_tta")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_port_passes(vectors, tmp_path, dtype):
    times = port.run(vectors(dtype), str(tmp_path), dtype=dtype)
    assert sorted(times) == sorted(CASES)
    assert failed_cases(vectors(dtype), tmp_path, dtype) == set()


@pytest.mark.parametrize("bug, case", [("t3a-no-filter", "adapter_t3a"),
                                       ("sar-no-mask", "adapter_sar"),
                                       ("cotta-teacher-first", "adapter_cotta")])
def test_each_broken_variant_fails_exactly_its_case(vectors, tmp_path, bug, case):
    port.run(vectors("float64"), str(tmp_path), broken=bug)
    assert failed_cases(vectors("float64"), tmp_path) == {case}


def test_the_cases_exercise_what_the_bugs_break():
    """SAR resets and leaves unreliable rows; CoTTA averages augmentations; T3A drops supports."""
    built = {c.name: c for c in adapter_methods.CASES}
    from ssmref.crosscheck.registry import case_seed
    import numpy as onp
    runs = {}
    for name in ("adapter_sar", "adapter_cotta", "adapter_t3a"):
        x, attrs = built[name].build(onp.random.default_rng(case_seed(name)))
        runs[name] = adapter_methods.run_method_case(x, attrs)[1].strategy
    assert 0 < runs["adapter_sar"].resets < adapter_methods.S
    assert runs["adapter_cotta"].augmented
    assert len(runs["adapter_t3a"].labels) < adapter_methods.C + adapter_methods.S * adapter_methods.B
