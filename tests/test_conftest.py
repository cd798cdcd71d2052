"""The rule on skipped tests (``tests/conftest.py``): under ``SSMREF_STRICT_SKIPS=1``, which CI
sets after installing every optional dependency, a skipped test fails unless it is marked
``gpu``; without the variable skips stay skips."""

from pathlib import Path

from tests.conftest import _cuda_available

GPU = _cuda_available()          # once: pytester restores sys.modules after each test

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

SUITE = """
import pytest

def test_skipped_for_a_missing_dependency():
    pytest.importorskip("a_module_that_is_not_installed")

@pytest.mark.skipif(True, reason="a condition that is not a GPU")
def test_skipped_by_a_marker():
    pass

@pytest.mark.gpu
def test_needs_a_gpu():
    pass

@pytest.mark.xfail(reason="a known failure", strict=True)
def test_expected_to_fail():
    assert False

def test_passes():
    pass
"""


def run(pytester, monkeypatch, strict):
    if strict:
        monkeypatch.setenv("SSMREF_STRICT_SKIPS", "1")
    else:
        monkeypatch.delenv("SSMREF_STRICT_SKIPS", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    return pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")


def test_without_the_variable_skips_stay_skips(pytester, monkeypatch):
    result = run(pytester, monkeypatch, strict=False)
    gpu = GPU
    result.assert_outcomes(passed=1 + gpu, skipped=3 - gpu, xfailed=1)


def test_strict_skips_fail_every_skip_but_the_gpu_ones(pytester, monkeypatch):
    result = run(pytester, monkeypatch, strict=True)
    gpu = GPU
    # a skip in the test's setup (a skipif marker) becomes an error, one in its call a failure
    result.assert_outcomes(passed=1 + gpu, skipped=1 - gpu, failed=1, errors=1, xfailed=1)
    text = result.stdout.str()
    assert "a_module_that_is_not_installed" in text and "a condition that is not a GPU" in text
    assert gpu or "needs a CUDA device" in text          # the one skip allowed, with its reason
    assert text.count("skipped under SSMREF_STRICT_SKIPS=1") == 2
