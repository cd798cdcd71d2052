"""mamba_ssm's real Triton kernels, run by Triton's interpreter on a CPU, against the kit
(``examples/kernels/mamba_ssm_client.py``; docs/kernels.md).

Every case passes except the documented findings, which are asserted as findings, so a fixed
kernel (or interpreter) shows up as a failing test, not as silence:

- mamba's ``softplus`` is ``log(exp(x) + 1)``: float32 ``ssd_long`` fails by about 2x; with an
  accurate softplus (shimmed from outside the kernel file) it passes and no output gets worse;
- the interpreter truncates float32 -> bfloat16 casts, so the bfloat16 state cache of
  ``selective_decode_bf16_state`` fails unless bfloat16 is emulated as on a GPU;
- with TF32 dots (a GPU's default, emulated), float32 SSD is float16-accurate.

Skipped when triton, torch or the mamba_ssm sdist are not installed
(``examples/kernels/install.sh``); the default run takes a few seconds, the dtype sweeps are
``slow``.
"""

import importlib.util

import numpy as np
import pytest

pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:      # not importorskip: the harness imports it
    pytest.skip("triton is not installed: run examples/kernels/install.sh",
                allow_module_level=True)

from tests.kernel_examples import load as _load  # noqa: E402


harness = _load("harness")
if harness.mamba_ssm_source() is None:
    pytest.skip(f"mamba_ssm {harness.MAMBA_SSM_VERSION} sdist not in {harness.kernels_cache()}: "
                "run examples/kernels/install.sh", allow_module_level=True)
client = _load("mamba_ssm_client")

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
    return lambda dtype: written_vectors("mamba_kernels", list(client.CASES), dtype)


def reports(vectors_dir, dtype, cases, **kw):
    return dict(client.check_cases(vectors_dir, dtype, cases, **kw))


# ---------------------------------------------------------------------------------------------
# Default: quick float32 cases and the two findings at their smallest
# ---------------------------------------------------------------------------------------------

def test_selective_state_update_float32(vectors):
    got = reports(vectors("float32"), "float32",
                  ["selective_state_update", "selective_state_update_heads"])
    assert all(r.passed for r in got.values()), {n: str(r) for n, r in got.items()}


def test_softplus_finding_minimal():
    """The maintainers' reproducer: mamba's own ``softplus`` where it is 2e-5 .. 1e-2 (Mamba's
    Δ range), float32: errors of 1e-3 relative; the log1p form: a few ulps."""
    repro = _load("mamba_softplus_repro")
    deltas = np.geomspace(2e-5, 1e-2, 64)
    assert repro.relative_errors(repro.softplus, deltas).max() > 1e-3
    assert repro.relative_errors(repro.softplus_log1p, deltas).max() < 1e-6


def test_bf16_state_cache_needs_gpu_rounding(vectors):
    """The interpreter's truncating cast fails the bfloat16 cache; a GPU's rounding passes."""
    name = "selective_decode_bf16_state"
    interp = reports(vectors("float32"), "float32", [name])[name]
    gpu = reports(vectors("float32"), "float32", [name], gpu_bfloat16=True)[name]
    assert not interp.passed and interp.outputs["states"].err_over_tol > 100
    assert gpu.passed and gpu.outputs["states"].err_over_tol == 0   # bit-exact cache


def test_tf32_finding(vectors):
    """With float32 ``tl.dot`` operands read as TF32 (triton's default on NVIDIA GPUs), SSD
    fails the float32 tolerances by more than 10x and passes float16's: on a GPU, float32
    ``mamba_chunk_scan_combined`` is float16-accurate (it passes float32's without TF32: the
    slow test)."""
    vec = vectors("float32")
    kernels = client.load_kernels()
    with harness.gpu_tf32():
        outputs = client.run_case(kernels, vec, "ssd_L1", "float32")
    as_float32 = harness.verdict(vec, "ssd_L1", outputs, "float32")
    as_float16 = harness.verdict(vec, "ssd_L1", outputs, "float16")
    assert not as_float32.passed and as_float32.err_over_tol > 10
    assert as_float16.passed and as_float16.err_over_tol < 0.2


def test_gpu_bfloat16_emulation():
    """Round to nearest even as torch does, and ``tl.dot`` on bfloat16 values."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1000).astype(np.float32),
                        np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)], np.float32)])
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(harness.f32_to_bf16_bits(x), want)

    @triton.jit
    def dot(a_ptr, b_ptr, c_ptr, N: tl.constexpr):
        r = tl.arange(0, N)
        a = tl.load(a_ptr + r[:, None] * N + r[None, :])
        b = tl.load(b_ptr + r[:, None] * N + r[None, :])
        tl.store(c_ptr + r[:, None] * N + r[None, :], tl.dot(a, b))

    a, b = (torch.randint(-2, 3, (16, 16)).to(torch.bfloat16) for _ in range(2))
    c = torch.zeros(16, 16)
    dot[(1,)](a, b, c, N=16)
    assert (c - a.float() @ b.float()).abs().max() > 1e3          # bit patterns multiplied
    with harness.gpu_bfloat16():
        dot[(1,)](a, b, c, N=16)
    assert torch.equal(c, a.float() @ b.float())


# ---------------------------------------------------------------------------------------------
# Slow: every case, every dtype
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_float32_softplus_finding_and_fix(vectors):
    """float32: everything passes but ``ssd_long`` (softplus, about 2x) and the bf16 cache (the
    interpreter); with the fix and GPU bfloat16 everything passes, and no output gets worse."""
    vec = vectors("float32")
    plain = reports(vec, "float32", client.CASES)
    fixed = reports(vec, "float32", client.CASES, fix_softplus=True, gpu_bfloat16=True)
    failing = {n for n, r in plain.items() if not r.passed}
    assert failing == {"ssd_long", "selective_decode_bf16_state"}
    long = plain["ssd_long"]
    assert 1.3 < long.err_over_tol < 4, str(long)
    assert long.outputs["out"].first_bad_step is not None
    assert all(r.passed for r in fixed.values()), {n: str(r) for n, r in fixed.items()}
    assert fixed["ssd_long"].err_over_tol < 0.1
    for name, report in plain.items():
        if name != "selective_decode_bf16_state":
            for out, check in report.outputs.items():
                assert fixed[name].outputs[out].err_over_tol <= check.err_over_tol * 1.01, out


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_sweep(vectors, dtype):
    """float16 and bfloat16 (GPU bfloat16 emulated): every case is within its tolerance (where
    the dtype's table is too weak for a case, e.g. bfloat16 gradients, it is inconclusive
    rather than passed: ``docs/crosscheck.md``, "Power")."""
    got = reports(vectors(dtype), dtype, client.CASES, gpu_bfloat16=True)
    assert all(r.within_tolerance for r in got.values()), {
        n: str(r) for n, r in got.items() if not r.within_tolerance}
    assert all(r.passed or r.inconclusive for r in got.values())
