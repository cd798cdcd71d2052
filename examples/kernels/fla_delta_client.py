"""fla's real delta-rule Triton kernels, run on a CPU by Triton's interpreter, checked with
ssmref's delta-rule vectors.

A complete client a kernel writer can copy: it reads ssmref's golden vectors of DeltaNet, Gated
DeltaNet and KDA (docs/delta.md), calls flash-linear-attention 0.6.0's kernels unmodified with
the same arrays (ssmref's delta rule takes fla's names, layouts and defaults, so there is no
mapping), runs their backward through ``torch.autograd`` for the ``_vjp`` cases, and prints
ssmref's verdict per case and output:

    python -m ssmref vectors /tmp/vec32 --dtype float32
    sh examples/kernels/install.sh
    python examples/kernels/fla_delta_client.py /tmp/vec32 --dtype float32
    python examples/kernels/fla_delta_client.py /tmp/vecbf --dtype bfloat16 --gpu-bfloat16

Exit status 0 when every case passes, 1 otherwise; ``--gpu-bfloat16``, ``--gpu-tf32`` and
``--tolerances`` as in mamba_ssm_client.py.  What is passed as the kit gives it: ``q, k, v,
beta`` in the run's dtype, ``scale``, ``use_qk_l2norm_in_kernel``, ``cu_seqlens`` (int64); the
log gate ``g`` and the states in float32, as fla's layers hold them (widening is exact: the
vectors were rounded to the dtype).  The decoding case is one ``fused_recurrent_*`` call with
``T = 1`` from the state.  Which kernel runs which case: :data:`KERNELS`
(``fused_recurrent_gated_delta_rule`` and ``fused_recurrent_kda`` have no backward: fla raises
``NotImplementedError``, it does not compute ``dg`` without storing every state).
"""

import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: it selects the interpreter before any kernel is decorated)

# kernel -> (fla module, gate it takes, the cases it runs)
KERNELS = {
    "chunk_delta_rule": ("fla.ops.delta_rule", "none", ("delta_rule", "delta_rule_vjp")),
    "fused_recurrent_delta_rule": ("fla.ops.delta_rule", "none",
                                   ("delta_rule", "delta_rule_vjp")),
    "chunk_gated_delta_rule": ("fla.ops.gated_delta_rule", "head",
                               ("gated_delta_rule", "gated_delta_rule_long_memory",
                                "gated_delta_rule_varlen", "gated_delta_rule_vjp")),
    "fused_recurrent_gated_delta_rule": ("fla.ops.gated_delta_rule", "head",
                                         ("gated_delta_rule", "gated_delta_rule_long_memory",
                                          "gated_delta_rule_varlen",
                                          "gated_delta_rule_beta_per_channel",
                                          "gated_delta_rule_step")),
    "chunk_kda": ("fla.ops.kda", "channel", ("kda", "kda_vjp")),
    "fused_recurrent_kda": ("fla.ops.kda", "channel", ("kda",)),
}
# what a kernel refuses to run: fla/ops/delta_rule/chunk.py asserts "ChunkDeltaRuleFunction does
# not support float32. Please use bfloat16."
REFUSED = {"chunk_delta_rule": ("float32",)}
CASES = tuple(dict.fromkeys(c for _, _, cases in KERNELS.values() for c in cases))
FLOAT32 = ("g", "initial_state", "state", "dht")        # held in float32 by fla's layers


def load_kernels(names=tuple(KERNELS)):
    """``{name: kernel}`` for fla's delta-rule kernels ``names``."""
    harness.install_shims()
    loaded = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # as fla_client.load_kernels
        for name in names:
            module = __import__(KERNELS[name][0], fromlist=[name])
            loaded[name] = getattr(module, name)
    harness.patch_loop_ranges("fla.ops")
    return loaded


def inputs(vectors_dir, name, dtype):
    """The case's tensors (``g`` and the states widened to float32) and attributes."""
    t, attrs = harness.case_inputs(vectors_dir, name, dtype)
    t = {k: v.float() if k in FLOAT32 else v for k, v in t.items()}
    if "cu_seqlens" in t:
        t["cu_seqlens"] = t["cu_seqlens"].long()
    return t, attrs


def call(kernel, gate, t, attrs, state_key="initial_state"):
    """``(o, final_state)`` of one kernel call on the case's arrays."""
    kw = dict(scale=attrs["scale"], initial_state=t.get(state_key), output_final_state=True,
              use_qk_l2norm_in_kernel=attrs["use_qk_l2norm_in_kernel"])
    if "cu_seqlens" in t:
        kw["cu_seqlens"] = t["cu_seqlens"]
    if gate == "none":
        return kernel(t["q"], t["k"], t["v"], t["beta"], **kw)
    return kernel(t["q"], t["k"], t["v"], g=t["g"], beta=t["beta"], **kw)


def run_sequence(kernel, gate, t, attrs):
    o, final = call(kernel, gate, t, attrs)
    return {"o": o, "final_state": final}


def run_vjp(kernel, gate, t, attrs):
    """fla's backward of ``sum(do·o) + sum(dht·final_state)``."""
    leaves = {k: t[k].requires_grad_() for k in ("q", "k", "v", "g", "beta", "initial_state")
              if k in t}
    o, final = call(kernel, gate, t, attrs)
    ((o.float() * t["do"].float()).sum() + (final * t["dht"]).sum()).backward()
    grads = {f"d{k}": v.grad for k, v in leaves.items()}
    return {"o": o.detach(), "final_state": final.detach(), **grads}


def run_step(kernel, gate, t, attrs):
    """One decoding step: a ``T = 1`` call from ``state``."""
    seq = {k: v if k == "state" else v.unsqueeze(1) for k, v in t.items()}
    o, new = call(kernel, gate, seq, attrs, state_key="state")
    return {"o": o[:, 0], "new_state": new}


def run_case(kernel, gate, vectors_dir, name, dtype):
    t, attrs = inputs(vectors_dir, name, dtype)
    if name.endswith("_vjp"):
        return run_vjp(kernel, gate, t, attrs)
    if name.endswith("_step"):
        return run_step(kernel, gate, t, attrs)
    return run_sequence(kernel, gate, t, attrs)


def check_cases(vectors_dir, dtype, cases=CASES, kernels=tuple(KERNELS), gpu_bfloat16=False,
                gpu_tf32=False, tolerances=None):
    """``[(f"{kernel}/{case}", case report)]`` for each kernel's cases among ``cases`` present
    in the vectors, judged with the tolerances of ``tolerances`` (default ``dtype``); the kernels
    :data:`REFUSED` in ``dtype`` are left out."""
    kernels = [k for k in kernels if dtype not in REFUSED.get(k, ())]
    loaded = load_kernels(kernels)
    present = {c["name"] for c in harness.read_manifest(vectors_dir)["cases"]}
    rows = []
    with harness.gpu_numerics(gpu_bfloat16, gpu_tf32):
        for kernel in kernels:
            _, gate, runs = KERNELS[kernel]
            for name in runs:
                if name in cases and name in present:
                    outputs = run_case(loaded[kernel], gate, vectors_dir, name, dtype)
                    report = harness.verdict(vectors_dir, name, outputs, tolerances or dtype)
                    rows.append((f"{kernel}/{name}", report))
    return rows


def main(argv=None):
    parser = harness.client_parser(__doc__, CASES)
    parser.add_argument("--kernels", nargs="+", choices=tuple(KERNELS), default=tuple(KERNELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = check_cases(args.vectors, args.dtype, args.cases, args.kernels, args.gpu_bfloat16,
                       args.gpu_tf32, args.tolerances)
    return harness.report(rows, args)


if __name__ == "__main__":
    sys.exit(main())
