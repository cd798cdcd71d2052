"""fla's real delta-rule Triton kernels (DeltaNet, Gated DeltaNet, KDA), run by Triton's
interpreter on a CPU, against the kit's delta-rule cases (``examples/kernels/fla_delta_client.py``;
docs/kernels.md).

ssmref's delta rule takes fla's arrays as they are, so the cases check the kernels themselves:
the recurrence, GVA, ``cu_seqlens`` with an empty and a length-1 sequence, the l2norm inside,
the decoding step and the backward.  Skipped when triton, torch or fla-core are not installed
(``examples/kernels/install.sh``); every case and the dtype sweeps are ``slow``.
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
client = _load("fla_delta_client")

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
    return lambda dtype: written_vectors("fla_delta_kernels", list(client.CASES), dtype)


def reports(vectors_dir, dtype, cases, kernels, **kw):
    return dict(client.check_cases(vectors_dir, dtype, cases, kernels, **kw))


def test_float32_step(vectors):
    """``fused_recurrent_gated_delta_rule`` as the decoding step: GVA, the l2norm inside."""
    got = reports(vectors("float32"), "float32", ["gated_delta_rule_step"],
                  ["fused_recurrent_gated_delta_rule"])
    assert got["fused_recurrent_gated_delta_rule/gated_delta_rule_step"].passed, str(got)


def test_float32_chunk_varlen(vectors):
    """``chunk_gated_delta_rule`` (the WY/UT chunk kernels): ``cu_seqlens`` with an empty and
    a length-1 sequence inside chunks, one initial state each."""
    got = reports(vectors("float32"), "float32", ["gated_delta_rule_varlen"],
                  ["chunk_gated_delta_rule"])
    assert got["chunk_gated_delta_rule/gated_delta_rule_varlen"].passed, str(got)


def test_wrong_beta_is_caught(vectors, monkeypatch):
    """A client passing β² (β applied twice) fails: the cases see β."""
    original = client.inputs

    def squared(vectors_dir, name, dtype):
        t, attrs = original(vectors_dir, name, dtype)
        return dict(t, beta=t["beta"] ** 2), attrs
    monkeypatch.setattr(client, "inputs", squared)
    got = reports(vectors("float32"), "float32", ["gated_delta_rule_step"],
                  ["fused_recurrent_gated_delta_rule"])
    report = got["fused_recurrent_gated_delta_rule/gated_delta_rule_step"]
    assert not report.passed and report.err_over_tol > 10


def test_chunk_delta_rule_refuses_float32(vectors):
    """Finding: fla's ``chunk_delta_rule`` asserts its inputs are not float32 (its chunk
    kernels run in float16/bfloat16 only); the client leaves it out of float32 runs."""
    kernel = client.load_kernels(["chunk_delta_rule"])["chunk_delta_rule"]
    t, attrs = client.inputs(vectors("float32"), "delta_rule", "float32")
    with pytest.raises(AssertionError, match="does not support float32"):
        client.run_sequence(kernel, "none", t, attrs)
    assert client.check_cases(vectors("float32"), "float32", ["delta_rule"],
                              ["chunk_delta_rule"]) == []


@pytest.mark.slow
def test_float32_every_case(vectors):
    """Every kernel on every case it takes (1.5 min): all pass float32's tolerances."""
    got = reports(vectors("float32"), "float32", client.CASES, tuple(client.KERNELS))
    assert len(got) == 14 and all(r.passed for r in got.values()), \
        {n: str(r) for n, r in got.items() if not r.passed}


@triton.jit
def _sum_kernel(out, x, N: tl.constexpr):
    a = tl.load(x + tl.arange(0, N))
    tl.store(out, tl.sum(a * a, 0))
    tl.store(out + 1, tl.sum(tl.cumsum(a, 0), 0))


def test_bfloat16_reductions_emulated():
    """Finding (the interpreter's, not fla's): a ``tl.sum`` or ``tl.cumsum`` of bfloat16 data
    adds the uint16 bit patterns, which made ``dg`` of ``chunk_gated_delta_rule`` and
    ``chunk_kda`` in bfloat16 wrong by 1e23 to 1e32 tolerances; the GPU emulation sums the
    values in float32 and rounds once, and both pass (the slow sweep)."""
    x = torch.tensor([-3.0, 1.5, 2.0, -0.25], dtype=torch.bfloat16)
    out = torch.zeros(2, dtype=torch.bfloat16)
    _sum_kernel[(1,)](out, x, 4)
    assert abs(out[0].item()) > 1e6                     # not 15.3125
    with harness.gpu_bfloat16():
        _sum_kernel[(1,)](out, x, 4)
    assert out.tolist() == [15.3125, -3.75]     # 9 + 2.25 + 4 + 0.0625; -3 - 1.5 + 0.5 + 0.25


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_sweep(vectors, dtype):
    """float16 and bfloat16 (GPU bfloat16 emulated): every kernel is within the tolerance of every
    case it takes (chunk_delta_rule included: it runs in these dtypes); where the dtype's table
    is too weak for a case (bfloat16's long memory) the case is inconclusive, not passed."""
    got = reports(vectors(dtype), dtype, client.CASES, tuple(client.KERNELS),
                  gpu_bfloat16=True)
    assert len(got) == 16 and all(r.within_tolerance for r in got.values()), \
        {n: str(r) for n, r in got.items() if not r.within_tolerance}
    assert all(r.passed or r.inconclusive for r in got.values())


@pytest.mark.slow
def test_tf32_finding(vectors):
    """With TF32 dots (emulated), ``chunk_gated_delta_rule`` fails float32's tolerances from
    step 0 and passes float16's; the recurrent kernel has no ``tl.dot``."""
    vec = vectors("float32")
    tf32 = reports(vec, "float32", ["gated_delta_rule"],
                   ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"], gpu_tf32=True)
    assert tf32["chunk_gated_delta_rule/gated_delta_rule"].err_over_tol > 10
    assert tf32["fused_recurrent_gated_delta_rule/gated_delta_rule"].passed
    as_float16 = reports(vec, "float32", ["gated_delta_rule"], ["chunk_gated_delta_rule"],
                         gpu_tf32=True, tolerances="float16")
    assert as_float16["chunk_gated_delta_rule/gated_delta_rule"].passed
