"""Shared test configuration: hypothesis profiles, the one seeding fixture, golden vectors
written once per session for the ports' tests, and the rule on skipped tests.

``SSMREF_HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) selects the deterministic CI profile;
the default is ``dev``.

Skips: a test that needs an optional dependency (torch, jax, matplotlib, the real kernels) skips
without it, so ``python -m pytest`` runs on a machine with the core dependencies alone.  CI
installs every optional dependency first and sets ``SSMREF_STRICT_SKIPS=1``, under which a
skipped test *fails*, naming its skip reason, unless it is marked ``gpu`` (it needs a CUDA
device, which CI does not have): so no independent comparison can be skipped silently.
"""

import os

import numpy as onp
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SSMREF_HYPOTHESIS_PROFILE", "dev"))

pytest_plugins = ["pytester"]           # tests/test_conftest.py runs this file on small suites

STRICT_SKIPS = os.environ.get("SSMREF_STRICT_SKIPS") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one, the only "
                                       "skip allowed under SSMREF_STRICT_SKIPS=1")


def _cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not _cuda_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``SSMREF_STRICT_SKIPS=1`` a skip of a test not marked ``gpu`` becomes a failure."""
    outcome = yield
    report = outcome.get_result()
    if not (STRICT_SKIPS and report.skipped) or hasattr(report, "wasxfail") \
            or item.get_closest_marker("gpu"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"skipped under SSMREF_STRICT_SKIPS=1, where every optional dependency "
                       f"is installed and only tests marked 'gpu' may skip: {reason}")


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible and different per test."""
    seed = sum(map(ord, request.node.nodeid)) % (2 ** 32)
    return onp.random.default_rng(seed)


@pytest.fixture(scope="session")
def written_vectors(tmp_path_factory):
    """``(label, cases, dtype) -> folder`` holding those cases' golden vectors in ``dtype``, each
    written once per session (about a second for the SSM cases)."""
    from ssmref import crosscheck
    made = {}

    def get(label, cases, dtype):
        if (label, dtype) not in made:
            made[label, dtype] = str(tmp_path_factory.mktemp(f"{label}_{dtype}"))
            crosscheck.write_vectors(made[label, dtype], dtype=dtype, cases=cases)
        return made[label, dtype]
    return get
