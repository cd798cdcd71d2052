"""Shared test configuration: hypothesis profiles, the one seeding fixture, and golden vectors
written once per session for the ports' tests.

``SSMREF_HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) selects the deterministic CI profile;
the default is ``dev``.
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
