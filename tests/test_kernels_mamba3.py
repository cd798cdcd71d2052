"""mamba_ssm's real Mamba-3 SISO Triton kernels (``mamba3_siso_combined`` forward and backward,
``mamba3_siso_step``), run by Triton's interpreter on a CPU, against the kit's Mamba-3 cases
(``examples/kernels/mamba3_client.py``; docs/kernels.md).

The kernel casts ``Q, K, V, Z, Angles, Trap`` to bfloat16 whatever it is given, so it runs on
bfloat16 vectors with GPU bfloat16 emulated.  Skipped when triton, torch or the mamba_ssm sdist
are missing (``examples/kernels/install.sh``); the long cases are ``slow``.
"""

import importlib.util

import pytest

pytest.importorskip("torch")
pytest.importorskip("einops")
if importlib.util.find_spec("triton") is None:   # not importorskip: the harness imports triton
    pytest.skip("triton is not installed: run examples/kernels/install.sh",
                allow_module_level=True)

from tests.kernel_examples import load as _load  # noqa: E402


harness = _load("harness")
if harness.mamba_ssm_source() is None:
    pytest.skip(f"mamba_ssm {harness.MAMBA_SSM_VERSION} sdist not in {harness.kernels_cache()}: "
                "run examples/kernels/install.sh", allow_module_level=True)
client = _load("mamba3_client")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vectors(written_vectors):
    return lambda dtype: written_vectors("mamba3_kernels", list(client.CASES), dtype)


def reports(cases, vectors_dir, dtype="bfloat16", **kw):
    return dict(client.check_cases(vectors_dir, dtype, cases, gpu_bfloat16=True, **kw))


@triton.jit
def _atomic_kernel(out, x, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.atomic_add(out + offs % 2, tl.load(x + offs))


def test_bfloat16_atomic_add_emulated():
    """The interpreter refuses ``tl.atomic_add`` on bfloat16 memory (mamba's backward adds
    ``dK`` and ``dAngles`` so); the emulation adds each value in order, rounding once."""
    x = torch.tensor([1.0, 2.0, 0.5, -4.0], dtype=torch.bfloat16)
    out = torch.zeros(2, dtype=torch.bfloat16)
    with pytest.raises(Exception, match="Unsupported data type"):
        _atomic_kernel[(1,)](out, x, 4)
    out.zero_()
    with harness.gpu_bfloat16():
        _atomic_kernel[(1,)](out, x, 4)
    assert out.tolist() == [1.5, -2.0]


def test_step_bfloat16(vectors):
    """``mamba3_siso_step``: GQA, every pair rotated, D, Z."""
    got = reports(["mamba3_siso_step"], vectors("bfloat16"))
    assert got["mamba3_siso_step"].passed, str(got["mamba3_siso_step"])


def test_combined_forward_bfloat16(vectors):
    """``mamba3_siso_combined`` forward (headdim_v padded for TMA), no input states."""
    got = reports(["mamba3_siso_no_states"], vectors("bfloat16"))
    assert got["mamba3_siso_no_states"].passed, str(got["mamba3_siso_no_states"])


def test_combined_backward_bfloat16(vectors):
    """mamba's Triton backward: every gradient, input states included."""
    got = reports(["mamba3_siso_vjp"], vectors("bfloat16"))
    assert got["mamba3_siso_vjp"].passed, str(got["mamba3_siso_vjp"])


def test_empty_sequence_finding(vectors):
    """Finding (mamba's host code, so on a GPU too): for a zero-length sequence in
    ``cu_seqlens`` the final V state is the previous sequence's last ``V`` (``V[0, cu_seqlens[1:]
    - 1]``, mamba3_siso_fwd.py) and the final K state an unwritten slot of a ``torch.empty``
    buffer (``(seq_len - 1) % chunk_size``); ``out``, the SSM and angle states pass."""
    vec = vectors("bfloat16")
    kernels = client.load_kernels()
    with harness.gpu_bfloat16():
        got = client.run_case(kernels, vec, "mamba3_siso_varlen", "bfloat16")
    report = harness.verdict(vec, "mamba3_siso_varlen", got, "bfloat16")
    assert sorted(report.failed) == ["k_state", "v_state"]
    assert report.outputs["v_state"].first_bad[0] == 1      # the empty sequence [37, 37)
    assert report.outputs["k_state"].first_bad[0] == 1
    t, _ = client.inputs(vec, "mamba3_siso_varlen", "bfloat16")
    assert torch.equal(got["v_state"][1], t["V"][0, 36])
    assert torch.equal(got["v_state"][[0, 2, 3]], t["Input_V_State"][[0, 2, 3]] * 0
                       + t["V"][0, [36, 37, 99]])


@pytest.mark.slow
def test_every_case_bfloat16(vectors):
    """Every case but the varlen one is within bfloat16's tolerances (the varlen one fails as
    ``test_empty_sequence_finding`` says; the long memory is inconclusive in bfloat16)."""
    cases = [c for c in client.CASES if c != "mamba3_siso_varlen"]
    got = reports(cases, vectors("bfloat16"))
    assert len(got) == 5 and all(r.within_tolerance for r in got.values()), \
        {n: str(r) for n, r in got.items() if not r.within_tolerance}
    assert all(r.passed or r.inconclusive for r in got.values())   # long memory: inconclusive


@pytest.mark.slow
def test_float32_tolerances_finding(vectors):
    """The kernel computes with bfloat16 operands (its input cast): judged with float32's
    tolerances on the same inputs it fails by far, so float32 vectors cannot check it."""
    got = reports(["mamba3_siso_no_states"], vectors("bfloat16"), tolerances="float32")
    assert got["mamba3_siso_no_states"].err_over_tol > 100
