"""fla's real Triton kernels for simple GLA, run on a CPU by Triton's interpreter, checked with
ssmref's SSD vectors.

A complete client a kernel writer can copy: it reads ssmref's golden vectors of Mamba-2's SSD,
maps them onto flash-linear-attention 0.6.0's ``chunk_simple_gla`` and
``fused_recurrent_simple_gla`` (unmodified), and prints ssmref's verdict per case and output:

    python -m ssmref vectors /tmp/vec32 --dtype float32
    sh examples/kernels/install.sh
    python examples/kernels/fla_client.py /tmp/vec32 --dtype float32
    python examples/kernels/fla_client.py /tmp/vecbf --dtype bfloat16 --gpu-bfloat16

Exit status 0 when every case passes, 1 otherwise; ``--gpu-bfloat16``, ``--gpu-tf32`` and
``--tolerances`` as in mamba_ssm_client.py.  SSD is simple GLA with a scalar gate per
head and step (docs/kernels.md checks the mapping):

    SSD (docs/selective.md)                         simple GLA (fla)
    s_t = exp(Δ_t A) s_{t-1} + Δ_t x_t B_tᵀ         S_t = exp(g_t) S_{t-1} + k_t v_tᵀ
    y_t = s_t C_t + D x_t,  out = y · silu(z)       o_t = S_tᵀ (scale · q_t)

    q = C, k = B (groups repeated to heads), v = Δ·x, g = Δ·A, scale = 1;
    fla's state S (K, V) = (n, p) is SSD's state transposed;  D and z are applied outside;
    Δ = clamp(softplus(dt + dt_bias), dt_limit) is computed outside (in float32);
    seq_idx -> cu_seqlens over the flattened batch, with per-segment initial states: a row's
    first segment reads the row's initial state if its id is 0; every other starts from zero.

The cases: ssd, ssd_seq_idx, ssd_long, ssd_L1 (forward; fla's backward gives gradients w.r.t.
q, k, v, g, not SSD's inputs).
"""

import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: it selects the interpreter before any kernel is decorated)

CASES = ("ssd", "ssd_seq_idx", "ssd_long", "ssd_L1")
KERNELS = ("chunk_simple_gla", "fused_recurrent_simple_gla")


def load_kernels():
    """``{name: kernel}`` for fla's two simple-GLA kernels."""
    harness.install_shims()
    with warnings.catch_warnings():
        # importing fla.ops warns that it found no GPU driver ("Triton is not supported on
        # current platform, roll back to CPU": the interpreter runs on the CPU, as intended),
        # and fla.modules' @torch.compile decorators trip torch's own deprecation warnings
        warnings.simplefilter("ignore")
        from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
    harness.patch_loop_ranges("fla.ops")
    return {"chunk_simple_gla": chunk_simple_gla,
            "fused_recurrent_simple_gla": fused_recurrent_simple_gla}


def ssd_to_gla(t, attrs):
    """SSD's inputs -> ``(q, k, v, g)`` in fla's layout ``(b, L, h, ·)`` and the step ``Δ``."""
    dt = t["dt"].float() + (t["dt_bias"].float() if "dt_bias" in t else 0.0)
    if attrs["dt_softplus"]:
        dt = F.softplus(dt)
    lo, hi = attrs.get("dt_limit", (0.0, float("inf")))
    dt = dt.clamp(lo, hi)                                           # (b, L, h)
    heads, groups = t["x"].shape[2], t["B"].shape[2]
    k = t["B"].repeat_interleave(heads // groups, dim=2)            # (b, L, h, n)
    q = t["C"].repeat_interleave(heads // groups, dim=2)
    v = (t["x"].float() * dt[..., None]).to(t["x"].dtype)           # (b, L, h, p)
    g = dt * t["A"].float()                                         # (b, L, h), log decay
    return q, k, v, g, dt


def segments(seq_idx):
    """``(cu_seqlens, rows, starts)`` of the runs of equal ``seq_idx`` in each row, over the
    flattened ``(1, b·L)`` batch: the segment ``i`` covers ``cu_seqlens[i]:cu_seqlens[i+1]``,
    lies in row ``rows[i]`` and reads the row's initial state when ``starts[i]``: the row's first
    segment, if its id is 0 (docs/selective.md: ``initial_states`` is the state of id 0)."""
    b, length = seq_idx.shape
    bounds, rows, starts = [0], [], []
    for r in range(b):
        change = (seq_idx[r, 1:] != seq_idx[r, :-1]).nonzero().flatten() + 1
        edges = [0] + change.tolist() + [length]
        for i in range(len(edges) - 1):
            bounds.append(r * length + edges[i + 1])
            rows.append(r)
            starts.append(i == 0 and int(seq_idx[r, 0]) == 0)
    return torch.tensor(bounds, dtype=torch.long), rows, starts


def run_gla(kernel, t, attrs):
    """SSD's ``(out, final_states)`` computed with an fla simple-GLA kernel."""
    q, k, v, g, _ = ssd_to_gla(t, attrs)
    b, length, h, p = t["x"].shape
    n = t["B"].shape[-1]
    h0 = t.get("initial_states")
    h0 = (torch.zeros(b, h, p, n, dtype=t["x"].dtype) if h0 is None else h0).float()
    kw = dict(scale=1.0, output_final_state=True)
    if "seq_idx" in t:
        cu, rows, starts = segments(t["seq_idx"])
        init = torch.stack([h0[r] if s else torch.zeros_like(h0[r])
                            for r, s in zip(rows, starts)])     # (N, h, p, n)
        flat = [a.reshape(1, b * length, *a.shape[2:]) for a in (q, k, v, g)]
        o, ht = kernel(*flat[:3], g=flat[3], initial_state=init.transpose(-1, -2).contiguous(),
                       cu_seqlens=cu, **kw)
        o = o.reshape(b, length, h, p)
        last = [max(i for i, r in enumerate(rows) if r == row) for row in range(b)]
        ht = ht[last]                                           # each row's last segment
    else:
        o, ht = kernel(q, k, v, g=g, initial_state=h0.transpose(-1, -2).contiguous(), **kw)
    y = o.float()
    if "D" in t:                                                # D outside: y += D x
        D = t["D"].float()
        y = y + t["x"].float() * (D[:, None] if D.dim() == 1 else D)
    if "z" in t:                                                # z outside: y · silu(z)
        y = y * F.silu(t["z"].float())
    return {"out": y.to(t["x"].dtype), "final_states": ht.transpose(-1, -2)}


def check_cases(vectors_dir, dtype, cases=CASES, kernels=KERNELS, gpu_bfloat16=False,
                gpu_tf32=False, tolerances=None):
    """``[(f"{kernel}/{case}", case report)]`` for the cases present in the vectors, judged
    with the tolerances of ``tolerances`` (default ``dtype``)."""
    loaded = load_kernels()
    present = {c["name"] for c in harness.read_manifest(vectors_dir)["cases"]}
    rows = []
    with harness.gpu_numerics(gpu_bfloat16, gpu_tf32):
        for kernel in kernels:
            for name in cases:
                if name in present:
                    t, attrs = harness.case_inputs(vectors_dir, name, dtype)
                    outputs = run_gla(loaded[kernel], t, attrs)
                    report = harness.verdict(vectors_dir, name, outputs,
                                             tolerances or dtype)
                    rows.append((f"{kernel.replace('_simple_gla', '')}/{name}", report))
    return rows


def main(argv=None):
    parser = harness.client_parser(__doc__, CASES)
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=KERNELS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = check_cases(args.vectors, args.dtype, args.cases, args.kernels, args.gpu_bfloat16,
                       args.gpu_tf32, args.tolerances)
    return harness.report(rows, args)


if __name__ == "__main__":
    sys.exit(main())
