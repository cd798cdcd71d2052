"""Check mamba.py's selective scans (PyPI ``mambapy``) against ssmref's golden vectors.

mamba.py (github.com/alxndrTL/mamba.py) is Mamba in pure PyTorch.  Its ``MambaBlock`` has two
selective scans with the same arguments: ``selective_scan`` (the parallel Blelloch scan
``mambapy.pscan.pscan``, with its own hand-written backward) and ``selective_scan_seq`` (a loop
over time, differentiated by autograd).  This program runs both, unmodified, on every
selective-scan case they can express, forward and gradients, in each dtype, and checks them
in-process with ``ssmref.crosscheck.check_case``::

    pip install ssmref mambapy==1.2.0 torch
    python examples/kernels/mambapy_client.py                      # float64 and float32
    python examples/kernels/mambapy_client.py --dtype float16 bfloat16 --scans pscan

Exit status 0 when every check passes, 1 otherwise (the table says which and where).

How a case maps onto mamba.py's arguments (``x, delta: (b, L, ED)``, ``A: (ED, N)``,
``B, C: (b, L, N)``, ``D: (ED,)``; returns ``y: (b, L, ED)``):

- the vectors' ``(b, d, L)`` and ``(b, n, L)`` layouts are transposed to ``(b, L, ·)``;
- ``A`` and ``D`` are float32 in the half dtypes, as ``MambaBlock.ssm`` passes them (exact: the
  vectors' inputs are rounded to the dtype), everything else is in the dtype;
- ``Δ = softplus(delta + delta_bias)`` and ``out = y · silu(z)`` are computed outside the scan,
  by the same lines as ``MambaBlock.ssm`` and ``MambaBlock.forward``; a case without ``D`` gets
  ``D = 0``;
- mamba.py's ``B, C`` are shared by every channel (one group): grouped ``B, C`` (``(b, g, n, L)``)
  run the scan once per group of ``d / g`` channels, and fixed ``B, C`` (``(d, n)``, one per
  channel) once per channel with ``B[i]`` repeated over batch and time;
- the scans do not return the last state: it is read from the scan itself by a second call with
  ``D = 0`` and one-hot ``C`` (``C_t = e_n`` reads ``h_t[n]`` exactly: the other terms are exact
  zeros), the ``N`` one-hot rows stacked along the batch axis;
- gradients: ``torch.autograd.grad`` of ``Σ out·gout + Σ last_state·glast`` with respect to each
  input, through pscan's own backward or through the loop.

Not expressible: complex ``A`` (``selective_scan_complex*``, ``selective_scan_vjp_complex``):
mamba.py's ``A = −exp(A_log)`` is real; the decoding step (``selective_state_update*``,
``selective_decode_bf16_state``): ``MambaBlock.ssm_step`` computes ``Δ, B, C`` from its input
through the block's projections and cannot be given them; Mamba-2 (``ssd*``): mamba.py's
``mamba2.py`` calls mamba_ssm's Triton kernels.
"""

import argparse
import sys
import tempfile

import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock, MambaConfig

from ssmref import crosscheck

#: The selective-scan cases mamba.py can express (real ``A``).
CASES = ["selective_scan", "selective_scan_L1", "selective_scan_L2049",
         "selective_scan_long_memory", "selective_scan_softplus_threshold",
         "selective_scan_fixed_BC", "selective_scan_vjp", "selective_scan_vjp_long"]
SCANS = ("pscan", "sequential")
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}
INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def mambapy_scan(scan, channels, n):
    """mamba.py's scan ``(x, delta, A, B, C, D) -> y`` for ``channels`` channels and ``n`` states:
    the methods of a ``MambaBlock`` (the sequential one reads ``d_inner`` and ``d_state`` from the
    block's config; its weights are not used)."""
    block = MambaBlock(MambaConfig(d_model=channels, n_layers=1, d_state=n, expand_factor=1))
    return block.selective_scan if scan == "pscan" else block.selective_scan_seq


def scan_group(scan, x, dt, A, B, C, D):
    """``(y, last_state)`` of one group: ``x, dt: (b, L, c)``, ``A: (c, n)``, ``B, C: (b, L, n)``,
    ``D: (c,)``; the last state is read with one-hot ``C`` rows (stacked on the batch axis)."""
    b, L, c = x.shape
    n = A.shape[1]
    run = mambapy_scan(scan, c, n)
    y = run(x, dt, A, B, C, D)                                                  # (b, L, c)
    eye = torch.eye(n, dtype=x.dtype)
    C_hot = eye[:, None, None, :].expand(n, b, L, n).reshape(n * b, L, n)        # row k: e_k
    rep = lambda t: t.repeat(n, 1, 1)                                            # (n b, L, ·)
    h = run(rep(x), rep(dt), A, rep(B), C_hot, torch.zeros_like(D))[:, -1]       # (n b, c)
    return y, h.reshape(n, b, c).permute(1, 2, 0)                               # (b, c, n)


def selective_scan(scan, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False):
    """mamba_ssm's ``selective_scan_fn(..., return_last_state=True)`` computed by mamba.py's
    ``scan`` (``"pscan"`` or ``"sequential"``); layouts of mamba_ssm (``u: (b, d, L)``)."""
    b, d, L = u.shape
    x = u.transpose(1, 2)                                                       # (b, L, d)
    dt = delta if delta_bias is None else delta + delta_bias[:, None]
    dt = (F.softplus(dt) if delta_softplus else dt).transpose(1, 2)             # (b, L, d)
    D = torch.zeros(d, dtype=u.dtype) if D is None else D
    if B.dim() == 2:                             # fixed (d, n): one scan per channel
        groups = [(slice(i, i + 1), B[i].expand(b, L, -1), C[i].expand(b, L, -1))
                  for i in range(d)]
    else:                                        # varying (b, n, L) or grouped (b, g, n, L)
        Bg, Cg = (M[:, None] if M.dim() == 3 else M for M in (B, C))
        g = max(Bg.shape[1], Cg.shape[1])
        Bg, Cg = (M.expand(b, g, *M.shape[2:]).transpose(2, 3) for M in (Bg, Cg))  # (b, g, L, n)
        c = d // g
        groups = [(slice(k * c, (k + 1) * c), Bg[:, k], Cg[:, k]) for k in range(g)]
    ys, hs = zip(*(scan_group(scan, x[..., ch], dt[..., ch], A[ch], Bk, Ck, D[ch])
                   for ch, Bk, Ck in groups))
    y = torch.cat(ys, dim=-1).transpose(1, 2)                                   # (b, d, L)
    out = y if z is None else y * F.silu(z)
    return out, torch.cat(hs, dim=1)                                            # (b, d, n)


def param_dtype(dtype):
    """The dtype of ``A`` and ``D``: at least float32, as ``MambaBlock.ssm`` passes them
    (``-torch.exp(self.A_log.float())``, ``self.D.float()``), so that in a half-precision model
    the decay ``exp(ΔA)`` is computed in float32 by type promotion."""
    return torch.promote_types(TORCH_DTYPES[dtype], torch.float32)


def run_case(scan, vectors_dir, name, dtype, params_in_dtype=False):
    """The outputs of case ``name`` computed by mamba.py's ``scan`` in ``dtype`` (gradients too
    for the VJP cases), as torch tensors.  ``params_in_dtype``: ``A`` and ``D`` in ``dtype`` too
    (not as ``MambaBlock`` passes them)."""
    inputs, attrs = crosscheck.load_case(vectors_dir, name)
    wide = param_dtype(dtype) if not params_in_dtype else TORCH_DTYPES[dtype]
    t = {k: torch.tensor(v).to(wide if k in ("A", "D") else TORCH_DTYPES[dtype])
         .requires_grad_() for k, v in inputs.items()}
    args = {k: t[k] for k in INPUTS if k in t}
    out, last_state = selective_scan(scan, **args, delta_softplus=attrs["delta_softplus"])
    outputs = {"out": out, "last_state": last_state}
    if "gout" in t:                              # a VJP case: the cotangents' pullback
        loss = (out * t["gout"]).sum() + (last_state * t["glast"]).sum()
        grads = torch.autograd.grad(loss, list(args.values()))
        outputs.update({"d" + k: g for k, g in zip(args, grads)})
    return outputs


def check_one(scan, vectors_dir, name, dtype, params_in_dtype=False, mode="table"):
    """``(CaseReport, None)``, or ``(None, message)`` when mamba.py raises (its sequential scan
    cannot run in float16 / bfloat16: its state starts as ``torch.zeros`` in the default
    float32, so ``hs @ C`` mixes float32 and the half type)."""
    try:
        outputs = run_case(scan, vectors_dir, name, dtype, params_in_dtype)
    except RuntimeError as e:
        return None, " ".join(str(e).split())
    return crosscheck.check_case(vectors_dir, name, outputs, mode=mode), None


def check_all(vectors_dir, dtype, cases=CASES, scans=SCANS, params_in_dtype=False,
              mode="table"):
    """``[(scan, case, CaseReport or None, error or None)]`` for every scan and case, with the
    tolerances of the vectors' dtype (``mode``: the checker's ``"table"`` or ``"baseline"``)."""
    return [(scan, name, *check_one(scan, vectors_dir, name, dtype, params_in_dtype, mode))
            for name in cases for scan in scans]


def table(dtype, rows):
    """One line per scan and case: passed, the worst err_over_tol, where it first fails."""
    lines = [f"{'scan':<11}{'dtype':<10}{'case':<35}{'':<7}{'err_over_tol':>12}  first failure"]
    for scan, name, rep, error in rows:
        if rep is None:
            lines.append(f"{scan:<11}{dtype:<10}{name:<35}{'ERROR':<7}{'-':>12}  {error}")
            continue
        where = "-"
        if not rep.passed:
            out = rep.outputs[rep.failed[0]]
            where = f"{out.name} at {out.first_bad}" + (f" ({len(rep.failed)} outputs)"
                                                         if len(rep.failed) > 1 else "")
        lines.append(f"{scan:<11}{dtype:<10}{name:<35}{'ok' if rep.passed else 'FAIL':<7}"
                     f"{rep.err_over_tol:>12.3g}  {where}")
    return "\n".join(lines)


def scan_disagreement(seeds=range(5), stable=False):
    """The two scans on the inputs of mamba.py's issue 26 ("scan output is different between
    sequential and parallel versions"): the maintainer's script, on the CPU, ``Bs, L, D, N =
    2, 64, 32, 16``, every input ``torch.randn`` in float32 (so ``exp(ΔA)`` reaches ``e^12`` and
    the state grows like a product of such factors), or with ``stable=True`` mamba's own
    parametrization (``A = −exp(randn)``, ``Δ = softplus(randn)``).  Each scan is checked against
    ssmref's float64 ``selective_scan`` of the same float32 inputs with the float32 tolerance
    (``crosscheck.assert_close``, effective length ``L``), and the two are compared with each
    other (normwise, and by ``torch.allclose``'s defaults).  One line per seed."""
    from ssmref.selective import selective_scan as reference
    b, L, d, n = 2, 64, 64, 16
    run = {s: mambapy_scan(s, d, n) for s in SCANS}
    lines = [f"{'seed':<6}{'max |y|':>10}{'pscan':>10}{'sequential':>12}{'|p - s| / max|y|':>18}"
             f"  torch.allclose(p, s)"]
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        x, delta = torch.randn(b, L, d, generator=g), torch.randn(b, L, d, generator=g)
        A, B, C = (torch.randn(*shape, generator=g) for shape in ((d, n), (b, L, n), (b, L, n)))
        D = torch.randn(d, generator=g)
        if stable:
            A, delta = -torch.exp(A), F.softplus(delta)
        y = {s: run[s](x, delta, A, B, C, D) for s in SCANS}
        f64 = lambda t: t.double().transpose(1, 2).numpy() if t.dim() == 3 else t.double().numpy()
        want = reference(f64(x), f64(delta), f64(A), f64(B), f64(C), f64(D))      # (b, d, L)
        ratio = {}
        for s in SCANS:
            try:
                case = crosscheck.assert_close(f64(y[s]), want, dtype="float32", length=L)
                ratio[s] = f"{case['err_over_tol']:.3g}"
            except AssertionError:
                ratio[s] = "FAIL"
        scale = float(abs(want).max())
        diff = float((y["pscan"] - y["sequential"]).abs().max()) / scale
        lines.append(f"{seed:<6}{scale:>10.3g}{ratio['pscan']:>10}{ratio['sequential']:>12}"
                     f"{diff:>18.2g}  {torch.allclose(y['pscan'], y['sequential'])}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"],
                        choices=list(TORCH_DTYPES))
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES, metavar="CASE")
    parser.add_argument("--scans", nargs="+", default=list(SCANS), choices=SCANS)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (small tensors: one is fastest on a busy machine)")
    parser.add_argument("--mode", default="table", choices=("table", "baseline"),
                        help="the checker's tolerances: the table, or k x a naive computation "
                             "in the dtype")
    parser.add_argument("--params-in-dtype", action="store_true",
                        help="pass A and D in the dtype too (MambaBlock passes them in float32)")
    parser.add_argument("--scan-disagreement", action="store_true",
                        help="instead: mamba.py issue 26's inputs (and mamba's parametrization), "
                             "each scan against the float64 reference (err_over_tol per seed)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.scan_disagreement:
        for stable in (False, True):
            print("A, delta = randn" if not stable else "A = -exp(randn), delta = softplus(randn)")
            print(scan_disagreement(stable=stable), end="\n\n")
        return 0
    passed = True
    for dtype in args.dtype:
        with tempfile.TemporaryDirectory() as vectors_dir:
            crosscheck.write_vectors(vectors_dir, dtype=dtype, cases=args.cases)
            rows = check_all(vectors_dir, dtype, args.cases, args.scans, args.params_in_dtype,
                             args.mode)
        print(table(dtype, rows), end="\n\n")
        passed &= all(rep is not None and rep.passed for _, _, rep, _ in rows)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
