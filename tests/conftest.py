"""Shared test configuration: hypothesis profiles and the one seeding fixture.

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
