"""fla's real simple-GLA Triton kernels, run by Triton's interpreter on a CPU, against the kit's
SSD cases (``examples/kernels/fla_client.py``; docs/kernels.md).

The mapping (q = C, k = B with groups repeated to heads, v = Δ·x, g = Δ·A, scale 1, the state
transposed, D and z outside, seq_idx as cu_seqlens with per-segment initial states) is what the
float32 cases verify: a wrong piece fails them.  Skipped when triton, torch or fla-core are not
installed (``examples/kernels/install.sh``); the dtype sweeps are ``slow``.
"""

import importlib.util

import pytest

pytest.importorskip("torch")
for _package in ("triton", "fla"):                  # not importorskip: the harness imports triton
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed: run examples/kernels/install.sh",
                    allow_module_level=True)

from tests.kernel_examples import load as _load  # noqa: E402


harness = _load("harness")
client = _load("fla_client")

import torch  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vectors(written_vectors):
    return lambda dtype: written_vectors("fla_kernels", list(client.CASES), dtype)


def reports(vectors_dir, dtype, cases, kernels=client.KERNELS, **kw):
    return dict(client.check_cases(vectors_dir, dtype, cases, kernels, **kw))


def test_segments_read_initial_state_of_id_zero():
    seq_idx = torch.tensor([[0, 0, 1, 1, 1], [2, 2, 2, 3, 3]])
    cu, rows, starts = client.segments(seq_idx)
    assert cu.tolist() == [0, 2, 5, 8, 10]
    assert rows == [0, 0, 1, 1] and starts == [True, False, False, False]


def test_float32_seq_idx_chunk(vectors):
    """Groups, D (h, p), z, dt_limit, seq_idx inside chunks, a row not reading its state
    (``chunk_simple_gla``, 2 s; the recurrent kernel runs in the slow tests)."""
    got = reports(vectors("float32"), "float32", ["ssd_seq_idx"], ["chunk_simple_gla"])
    assert got["chunk/ssd_seq_idx"].passed, str(got["chunk/ssd_seq_idx"])


def test_mapping_is_checked(vectors, monkeypatch):
    """A mapping without the transposed state fails: the cases see the state layout."""
    original = client.run_gla

    def untransposed(kernel, t, attrs):
        outputs = original(kernel, t, attrs)
        return dict(outputs, final_states=outputs["final_states"].transpose(-1, -2)
                    .reshape(outputs["final_states"].shape))
    monkeypatch.setattr(client, "run_gla", untransposed)
    got = reports(vectors("float32"), "float32", ["ssd_L1"], ["chunk_simple_gla"])
    assert not got["chunk/ssd_L1"].passed
    assert got["chunk/ssd_L1"].failed == ["final_states"]


def test_tf32_finding(vectors):
    """With TF32 dots (triton's default on NVIDIA GPUs, emulated), ``chunk_simple_gla`` fails
    the float32 tolerances and passes float16's; the recurrent kernel has no ``tl.dot``."""
    vec = vectors("float32")
    kernels = client.load_kernels()
    t, attrs = harness.case_inputs(vec, "ssd_L1", "float32")
    with harness.gpu_tf32():
        chunk = client.run_gla(kernels["chunk_simple_gla"], t, attrs)
        recurrent = client.run_gla(kernels["fused_recurrent_simple_gla"], t, attrs)
    as_float32 = harness.verdict(vec, "ssd_L1", chunk, "float32")
    assert not as_float32.passed and as_float32.err_over_tol > 10
    assert harness.verdict(vec, "ssd_L1", chunk, "float16").passed
    assert harness.verdict(vec, "ssd_L1", recurrent, "float32").passed


@pytest.mark.slow
def test_float32_every_case(vectors):
    got = reports(vectors("float32"), "float32", client.CASES)
    assert len(got) == 8 and all(r.passed for r in got.values()), \
        {n: str(r) for n, r in got.items() if not r.passed}


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
