"""mamba_ssm's real Mamba-3 SISO Triton kernels, run on a CPU by Triton's interpreter, checked
with ssmref's Mamba-3 vectors.

A complete client a kernel writer can copy: it reads ssmref's golden vectors of Mamba-3 SISO
(docs/mamba3.md), calls mamba_ssm 2.3.2.post1's ``mamba3_siso_combined`` (forward, and its
Triton backward for ``mamba3_siso_vjp``) and ``mamba3_siso_step`` with the same arrays (ssmref
takes mamba's names, shapes and layouts), and prints ssmref's verdict per case and output:

    python -m ssmref vectors /tmp/vecbf --dtype bfloat16
    sh examples/kernels/install.sh
    python examples/kernels/mamba3_client.py /tmp/vecbf --dtype bfloat16 --gpu-bfloat16

Exit status 0 when every case passes, 1 otherwise; ``--gpu-bfloat16``, ``--gpu-tf32`` and
``--tolerances`` as in mamba_ssm_client.py.  ``mamba3_siso_combined`` casts ``Q, K, V, Z,
Angles, Trap`` to bfloat16 whatever the caller passes, so it is a bfloat16 kernel: run it on
bfloat16 vectors with ``--gpu-bfloat16`` (the kit's Mamba-3 inputs are the same numbers in every
dtype, so ``--tolerances float32`` on the same run measures what its bfloat16 arithmetic costs).
``ADT, DT, Q_bias, K_bias, D`` and the input states are passed in float32, as the wrapper asks.

Two things around the kernels, neither in a kernel file (docs/kernels.md):

    PTX approximations    the kernels' ``cos_approx``, ``sin_approx``, ``tanh_approx`` and
                          ``sech2_approx`` (mamba3/utils.py) are ``tl.inline_asm_elementwise``
                          of ``cos.approx.f32`` etc.; the interpreter stops with
                          ``NotImplementedError('inline_asm not supported in interpreter
                          mode')``.  The kernel modules' names are pointed at exact ``tl.cos``,
                          ``tl.sin``, ``2 σ(2x) − 1`` and ``1 − tanh²`` (:func:`exact_functions`).
    headdim_v padding     the forward and backward load ``V``, ``Z`` and the outputs through TMA
                          descriptors, whose last block dimension must hold 16 bytes (a GPU's
                          TMA rule, checked by the interpreter too): ``ValueError('Descriptor
                          block shape must have at least 16 bytes in the last dimension, but got
                          4 * 2 = 8 bytes')`` for the kit's ``headdim_v = 4``.  Value channels
                          are independent in SISO Mamba-3 (every sum runs over time or
                          ``headdim_qk``), so ``V``, ``Z`` and the V and SSM states are padded
                          with zeros to 8 channels and the outputs cut back.
    CUDA asserts          the backward's host code asserts ``is_cuda`` on its tensors;
                          :func:`cpu_tensors_pass_cuda_asserts` answers True while it runs.
"""

import contextlib
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: it selects the interpreter before any kernel is decorated)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ssmref import crosscheck  # noqa: E402

SEQUENCE = ("mamba3_siso", "mamba3_siso_no_states", "mamba3_siso_long_memory",
            "mamba3_siso_varlen")
CASES = SEQUENCE + ("mamba3_siso_step", "mamba3_siso_vjp")
ARGS = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")
STATES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
OUTPUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")
COTANGENTS = ("gout", "gangle", "gssm", "gk", "gv")
FLOAT32 = ("ADT", "DT", "Q_bias", "K_bias", "D") + STATES
TMA_BYTES = 16                                  # a TMA block's last dimension, at least
MODULES = ("mamba3_siso_fwd", "mamba3_siso_bwd", "mamba3_siso_step", "angle_dt")


@triton.jit
def _cos(x):
    return tl.cos(x)


@triton.jit
def _sin(x):
    return tl.sin(x)


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _sech2(x):
    t = 2.0 * tl.sigmoid(2.0 * x) - 1.0
    return 1.0 - t * t


EXACT = {"cos_approx": _cos, "sin_approx": _sin, "tanh_approx": _tanh, "sech2_approx": _sech2}


def exact_functions(modules):
    """Point each kernel module's PTX approximations at the exact functions of :data:`EXACT`
    (the kernels look the names up in their module's globals when they run)."""
    for module in modules:
        for name, fn in EXACT.items():
            if hasattr(module, name):
                setattr(module, name, fn)


def load_kernels():
    """``(mamba3_siso_combined, mamba3_siso_step)`` from the sdist's Triton files."""
    harness.install_shims()
    harness.import_mamba_ops()
    import importlib
    modules = [importlib.import_module(f"mamba_ssm.ops.triton.mamba3.{m}") for m in MODULES]
    from mamba_ssm.ops.triton.mamba3.mamba3_siso_combined import mamba3_siso_combined
    exact_functions(modules)
    harness.patch_loop_ranges("mamba_ssm.ops.triton.mamba3")
    return mamba3_siso_combined, modules[2].mamba3_siso_step


def inputs(vectors_dir, name, dtype):
    """The case's tensors (:data:`FLOAT32` widened, exactly) and attributes."""
    t, attrs = harness.case_inputs(vectors_dir, name, dtype)
    return {k: v.float() if k in FLOAT32 else v for k, v in t.items()}, attrs


def padded(t, width):
    """``V``, ``Z`` and the V and SSM states with ``headdim_v`` zero-padded to ``width``."""
    extra = width - t["V"].shape[-1]
    if extra <= 0:
        return t
    pads = {"V": (0, extra), "Z": (0, extra), "Input_V_State": (0, extra),
            "Input_SSM_State": (0, 0, 0, extra)}
    return dict(t, **{k: F.pad(t[k], pad) for k, pad in pads.items() if k in t})


@contextlib.contextmanager
def cpu_tensors_pass_cuda_asserts():
    """Inside: ``Tensor.is_cuda`` is True, for the backward's host asserts (mamba3_siso_bwd.py:
    ``assert z.is_cuda and o.is_cuda and do.is_cuda, "All tensors must be on CUDA"``); the
    interpreter runs the kernels on the CPU tensors as they are."""
    torch.Tensor.is_cuda = property(lambda self: True)
    try:
        yield
    finally:
        del torch.Tensor.is_cuda                # back to torch's own property


def run_combined(kernel, t, attrs):
    """The five outputs of ``mamba3_siso_combined`` (``headdim_v`` cut back to the case's)."""
    p = t["V"].shape[-1]
    x = padded(t, max(p, TMA_BYTES // 2))       # the kernel holds V in bfloat16: 2 bytes
    states = [x[k] for k in STATES] if STATES[0] in x else None
    cu = t["cu_seqlens"].int() if "cu_seqlens" in t else None
    got = kernel(*[x.get(k) for k in ARGS], Input_States=states, chunk_size=attrs["chunk_size"],
                 return_final_states=True, cu_seqlens=cu)
    out, angle, ssm, k_state, v_state = got
    return dict(zip(OUTPUTS, (out[..., :p], angle, ssm[..., :p, :], k_state, v_state[..., :p])))


def run_vjp(kernel, t, attrs):
    """mamba's Triton backward of ``Σ gout·out + Σ gangle·angle_state + … + Σ gv·v_state``."""
    leaves = {k: t[k].requires_grad_() for k in ARGS + STATES if k in t}
    got = run_combined(kernel, t, attrs)
    loss = sum((got[o].float() * t[g].float()).sum() for o, g in zip(OUTPUTS, COTANGENTS))
    with cpu_tensors_pass_cuda_asserts():
        loss.backward()
    return dict({k: v.detach() for k, v in got.items()},
                **{f"d{k}": v.grad for k, v in leaves.items()})


def run_step(kernel, t, attrs):
    out, states = kernel(*[t.get(k) for k in ARGS], [t[k] for k in STATES])
    return dict(zip(OUTPUTS, (out,) + tuple(states)))


def run_case(kernels, vectors_dir, name, dtype):
    combined, step = kernels
    t, attrs = inputs(vectors_dir, name, dtype)
    if name == "mamba3_siso_step":
        return run_step(step, t, attrs)
    if name == "mamba3_siso_vjp":
        return run_vjp(combined, t, attrs)
    return run_combined(combined, t, attrs)


def mamba_metric(vectors_dir, name, outputs):
    """``{output: error}`` in the metric of mamba's Mamba-3 tests and of mamba issue 1017:
    the 95th percentile of ``|a − b| / (|b| + 1e-6)`` over ``|b| >= 1e-2`` (``b`` ssmref's
    float64 output), and for the angle the largest circular error in radians."""
    expected = crosscheck.load_expected(vectors_dir, name)
    errors = {}
    for key in ("out", "angle_state", "ssm_state", "k_state"):
        a = outputs[key].detach().double().numpy()
        b = np.asarray(expected[key])
        if key == "angle_state":
            errors[key] = float(np.max(np.abs(np.angle(np.exp(1j * (a - b))))))
            continue
        big = np.abs(b) >= 1e-2
        rel = np.abs(a - b)[big] / (np.abs(b)[big] + 1e-6)
        errors[key] = float(np.percentile(rel, 95)) if rel.size else 0.0
    return errors


def check_cases(vectors_dir, dtype, cases=CASES, gpu_bfloat16=False, gpu_tf32=False,
                tolerances=None, metrics=None):
    """``[(name, case report)]`` for ``cases`` present in the vectors, judged with the
    tolerances of ``tolerances`` (default ``dtype``); ``metrics``, a dict, receives each case's
    :func:`mamba_metric`."""
    kernels = load_kernels()
    present = {c["name"] for c in harness.read_manifest(vectors_dir)["cases"]}
    rows = []
    with harness.gpu_numerics(gpu_bfloat16, gpu_tf32):
        for name in cases:
            if name in present:
                outputs = run_case(kernels, vectors_dir, name, dtype)
                if metrics is not None:
                    metrics[name] = mamba_metric(vectors_dir, name, outputs)
                rows.append((name, harness.verdict(vectors_dir, name, outputs,
                                                   tolerances or dtype)))
    return rows


def main(argv=None):
    parser = harness.client_parser(__doc__, CASES, dtype="bfloat16")
    parser.add_argument("--mamba-metric", action="store_true",
                        help="also print the error in the metric of mamba's tests")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    metrics = {} if args.mamba_metric else None
    rows = check_cases(args.vectors, args.dtype, args.cases, args.gpu_bfloat16, args.gpu_tf32,
                       args.tolerances, metrics)
    return harness.report(rows, args, [
        f"{name:<26} mamba's metric: " + ", ".join(f"{k} {v:.2g}" for k, v in errors.items())
        for name, errors in (metrics or {}).items()])


if __name__ == "__main__":
    sys.exit(main())
