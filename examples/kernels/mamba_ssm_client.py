"""mamba_ssm's real Triton kernels, run on a CPU by Triton's interpreter, checked with ssmref.

A complete client a kernel writer can copy: it reads ssmref's golden vectors, calls mamba_ssm
2.3.2.post1's Triton kernels unmodified (``selective_state_update``, and
``mamba_chunk_scan_combined`` forward and its Triton backward), and prints ssmref's verdict per
case and output:

    python -m ssmref vectors /tmp/vec32 --dtype float32
    sh examples/kernels/install.sh             # triton, fla-core, the mamba_ssm sdist (pinned)
    python examples/kernels/mamba_ssm_client.py /tmp/vec32 --dtype float32
    python examples/kernels/mamba_ssm_client.py /tmp/vec32 --dtype float32 --fix-softplus
    python examples/kernels/mamba_ssm_client.py /tmp/vecbf --dtype bfloat16 --gpu-bfloat16

Exit status 0 when every case passes, 1 otherwise.  ``--fix-softplus`` replaces the kernels'
``softplus`` (``log(exp(x) + 1)``, mamba_ssm/ops/triton/softplus.py) by an accurate one, from
outside the kernel files; ``--gpu-bfloat16`` makes the interpreter's bfloat16 behave as a GPU's
(harness.gpu_bfloat16); ``--gpu-tf32`` reads float32 ``tl.dot`` operands as TF32, as an NVIDIA
GPU does by default (harness.gpu_tf32), and ``--tolerances float16`` judges with float16's
tolerances.  The cases (docs/crosscheck.md):

    selective_state_update, selective_state_update_heads   one decoding step, in place on state
    selective_decode_bf16_state   8 steps with a bfloat16 state cache (the kernel stores the
                                  state in the cache's dtype after reading out from it)
    ssd, ssd_seq_idx, ssd_long, ssd_L1                     mamba_chunk_scan_combined forward
    ssd_vjp                       its Triton backward: the gradients of sum(gout * out) +
                                  sum(gfinal * final_states)
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: it selects the interpreter before any kernel is decorated)

DECODE = ("selective_state_update", "selective_state_update_heads",
          "selective_decode_bf16_state")
SSD = ("ssd", "ssd_seq_idx", "ssd_long", "ssd_L1")
CASES = DECODE + SSD + ("ssd_vjp",)
SOFTPLUS_USERS = ("selective_state_update", "ssd_chunk_state")


def load_kernels():
    """``(selective_state_update, mamba_chunk_scan_combined)`` from the sdist's Triton files."""
    harness.install_shims()
    harness.import_mamba_ops()
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    return selective_state_update, mamba_chunk_scan_combined


def set_softplus(fixed):
    """Point the kernels' global ``softplus`` at mamba's (``fixed=False``) or the accurate
    ``log1p`` form of examples/kernels/mamba_softplus_repro.py.

    The kernels look the name up in their module's globals when they run, so this switches
    without touching a kernel file; returns the previous function.
    """
    import importlib
    from mamba_softplus_repro import softplus_log1p as softplus_accurate
    original = importlib.import_module("mamba_ssm.ops.triton.softplus").softplus
    replacement = softplus_accurate if fixed else original
    previous = None
    for name in SOFTPLUS_USERS:
        module = importlib.import_module(f"mamba_ssm.ops.triton.{name}")
        previous, module.softplus = module.softplus, replacement
    return previous


def run_decode(kernel, t, attrs):
    """One ``selective_state_update`` per step; ``state`` is updated in place by the kernel."""
    kw = dict(D=t["D"], z=t["z"], dt_bias=t["dt_bias"], dt_softplus=attrs["dt_softplus"])
    if "state_dtype" not in attrs:                        # one step
        state = t["state"].clone()
        out = kernel(state, t["x"], t["dt"], t["A"], t["B"], t["C"], **kw)
        return {"out": out, "new_state": state}
    state = t["state"].to(harness.TORCH_DTYPES[attrs["state_dtype"]])   # the serving cache
    outs, states = [], []
    for s in range(t["x"].shape[0]):
        step = dict(kw, z=t["z"][s])
        outs.append(kernel(state, t["x"][s], t["dt"][s], t["A"], t["B"][s], t["C"][s], **step))
        states.append(state.clone())
    return {"out": torch.stack(outs), "states": torch.stack(states)}


def _ssd_call(kernel, t, attrs):
    limit = tuple(attrs.get("dt_limit", (0.0, float("inf"))))
    return kernel(t["x"], t["dt"], t["A"], t["B"], t["C"], attrs["chunk_size"], D=t.get("D"),
                  z=t.get("z"), dt_bias=t.get("dt_bias"),
                  initial_states=t.get("initial_states"), seq_idx=t.get("seq_idx"),
                  dt_softplus=attrs["dt_softplus"], dt_limit=limit, return_final_states=True)


def run_ssd(kernel, t, attrs):
    out, final = _ssd_call(kernel, t, attrs)
    return {"out": out, "final_states": final}


def run_ssd_vjp(kernel, t, attrs):
    """The Triton backward of ``sum(gout·out) + sum(gfinal·final_states)``."""
    leaves = {k: v.requires_grad_() for k, v in t.items()
              if v.is_floating_point() and k not in ("gout", "gfinal")}
    out, final = _ssd_call(kernel, t, attrs)
    ((out * t["gout"]).sum() + (final * t["gfinal"]).sum()).backward()
    grads = {f"d{k}": v.grad for k, v in leaves.items()}
    return {"out": out, "final_states": final, **grads}


def run_case(kernels, vectors_dir, name, dtype):
    """The kernels' outputs for case ``name``, as torch tensors of the run's dtype."""
    selective_state_update, mamba_chunk_scan_combined = kernels
    t, attrs = harness.case_inputs(vectors_dir, name, dtype)
    if name in DECODE:
        return run_decode(selective_state_update, t, attrs)
    if name == "ssd_vjp":
        return run_ssd_vjp(mamba_chunk_scan_combined, t, attrs)
    return run_ssd(mamba_chunk_scan_combined, t, attrs)


def check_cases(vectors_dir, dtype, cases=CASES, fix_softplus=False, gpu_bfloat16=False,
                gpu_tf32=False, tolerances=None):
    """``[(name, case report)]`` for ``cases`` (those present in the vectors), judged with the
    tolerances of ``tolerances`` (default ``dtype``)."""
    kernels = load_kernels()
    present = {c["name"] for c in harness.read_manifest(vectors_dir)["cases"]}
    set_softplus(fix_softplus)
    rows = []
    try:
        with harness.gpu_numerics(gpu_bfloat16, gpu_tf32):
            for name in cases:
                if name in present:
                    outputs = run_case(kernels, vectors_dir, name, dtype)
                    report = harness.verdict(vectors_dir, name, outputs, tolerances or dtype)
                    rows.append((name, report))
    finally:
        set_softplus(False)
    return rows


def main(argv=None):
    parser = harness.client_parser(__doc__, CASES)
    parser.add_argument("--fix-softplus", action="store_true",
                        help="the kernels' softplus replaced by an accurate one")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = check_cases(args.vectors, args.dtype, args.cases, args.fix_softplus,
                       args.gpu_bfloat16, args.gpu_tf32,
                       args.tolerances)
    return harness.report(rows, args)


if __name__ == "__main__":
    sys.exit(main())
