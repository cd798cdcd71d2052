"""Development check: ssmref's Mamba-3 SISO against mamba_ssm's own test references, in float64.

    PYTHONPATH=. python benchmarks/mamba3_vs_mamba.py PATH/TO/mamba/tests/ops/triton/test_mamba3_siso.py

mamba_ssm's ``mamba3_siso_fwd_ref`` and ``mamba3_siso_step_ref`` (PyTorch) are read from the given
file of a mamba checkout (not part of ssmref, never imported by its tests).  They force float32
in places (``.to(torch.float32)``, ``.float()``, float32 zeros); this script loads them with those
casts turned into float64, stubs the kernel imports they do not use, and runs them on float64
inputs.  It prints, for several shapes, the normwise relative difference ``max|a − b| / max|b|``
of every output (``out`` and the four final states) between mamba's references and
``ssmref.selective.mamba3_siso`` / ``mamba3_siso_step`` (target <= 1e-12).

``--float32``: then measures the original float32 forward reference (inputs as mamba's test draws
them, rounded to bfloat16 where the test does) against ssmref in float64 with mamba's own error
metric (``relative_error``: the 95th percentile of ``|a − b| / (|b| + 1e-6)`` over ``|b| >= 1e-2``;
angles: circular absolute error), and the effect of the kernel's bfloat16 rounding of ``Angles``.
``--issue-1017``: the same in mamba issue 1017's configuration, with the kernel's bfloat16 cast of
``Q, K, V, Z, Angles, Trap`` (``mamba3_siso_combined`` casts them) applied to ssmref's inputs.
Needs torch and einops.
"""

import argparse
import math
import sys
import time
import types

import numpy as onp
import torch

from ssmref.selective.mamba3 import mamba3_siso, mamba3_siso_step


def load_refs(path, float64=True):
    """mamba's test module, with its float32 casts made float64 (``float64=True``)."""
    text = open(path, encoding="utf-8").read()
    if float64:
        text = text.replace("torch.float32", "torch.float64").replace(".float()", ".double()")
    for name in ("triton", "mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton",
                 "mamba_ssm.ops.triton.mamba3",
                 "mamba_ssm.ops.triton.mamba3.mamba3_siso_combined",
                 "mamba_ssm.ops.triton.mamba3.mamba3_siso_step"):
        stub = sys.modules.setdefault(name, types.ModuleType(name))
        stub.mamba3_siso_combined = stub.mamba3_siso_step = None
    module = types.ModuleType("mamba_test_refs")
    exec(compile(text, path, "exec"), module.__dict__)
    return module


def draw(rng, b, L, h, hqk, n, p, r, states=True, N=None):
    N = b if N is None else N
    x = {"Q": rng.standard_normal((b, L, hqk, n)), "K": rng.standard_normal((b, L, hqk, n)),
         "V": rng.standard_normal((b, L, h, p))}
    DT = onp.exp(rng.uniform(math.log(1e-3), math.log(0.5), (b, h, L)))
    x.update(ADT=-rng.uniform(1.0, 16.0, (b, h, L)) * DT, DT=DT,
             Trap=rng.standard_normal((b, h, L)), Q_bias=rng.standard_normal((h, n)),
             K_bias=rng.standard_normal((h, n)), Angles=3 * rng.standard_normal((b, L, h, r)),
             D=rng.standard_normal(h), Z=rng.standard_normal((b, L, h, p)))
    x["states"] = (tuple(rng.standard_normal(s) for s in ((N, h, r), (N, h, p, n), (N, h, n), (N, h, p)))
                   if states else None)
    return x


def rel(a, b):
    a, b = onp.asarray(a, dtype=onp.float64), onp.asarray(b, dtype=onp.float64)
    return float(onp.max(onp.abs(a - b)) / max(float(onp.max(onp.abs(b))), 1e-300))


def angle_rel(a, b):
    """Circular difference of two angle states, relative to 2π."""
    d = onp.remainder(onp.asarray(a) - onp.asarray(b) + onp.pi, 2 * onp.pi) - onp.pi
    return float(onp.max(onp.abs(d)) / (2 * onp.pi))


def torch_args(x):
    t = lambda v: None if v is None else torch.from_numpy(onp.ascontiguousarray(v))  # noqa: E731
    st = None if x["states"] is None else tuple(t(s) for s in x["states"])
    return [t(x[k]) for k in ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles",
                               "D", "Z")], st


def ours(x, chunk=64, cu=None):
    args = [x[k] for k in ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")]
    return mamba3_siso(*args, x["states"], chunk, True, cu)


def compare(refs, name, x, cu=None):
    args, st = torch_args(x)
    cu_t = None if cu is None else torch.tensor(cu, dtype=torch.int32)
    out, fin = refs.mamba3_siso_fwd_ref(*args, st, 64, torch.float64, cu_t)
    got = ours(x, 16, None if cu is None else onp.asarray(cu))
    errs = [rel(got[0], out.numpy())] + [
        angle_rel(got[1], fin[0].numpy())] + [rel(g, f.numpy()) for g, f in zip(got[2:], fin[1:])]
    line = f"{name:38s} fwd_ref : " + " ".join(f"{e:.1e}" for e in errs)
    if cu is None:
        sout, sfin = refs.mamba3_siso_step_ref(*args, Input_States=st)
        serr = [rel(got[0], sout.numpy()), angle_rel(got[1], sfin[0].numpy())] + [
            rel(g, f.numpy()) for g, f in zip(got[2:], sfin[1:])]
        line += "   step_ref: " + " ".join(f"{e:.1e}" for e in serr)
        errs += serr
    print(line + "   (out, angle, ssm, k, v)")
    return max(errs)


def compare_step(refs, x):
    """ssmref's one-step form against step_ref on a sequence of length 1."""
    args, st = torch_args(x)
    sout, sfin = refs.mamba3_siso_step_ref(*args, Input_States=st)
    one = lambda v: v[:, 0]                                                  # noqa: E731
    o, fin = mamba3_siso_step(one(x["Q"]), one(x["K"]), one(x["V"]), x["ADT"][..., 0],
                              x["DT"][..., 0], x["Trap"][..., 0], x["Q_bias"], x["K_bias"],
                              one(x["Angles"]), x["D"], one(x["Z"]), x["states"])
    errs = [rel(o, sout[:, 0].numpy()), angle_rel(fin[0], sfin[0].numpy())] + [
        rel(g, f.numpy()) for g, f in zip(fin[1:], sfin[1:])]
    print(f"{'mamba3_siso_step, one step':38s} step_ref: " + " ".join(f"{e:.1e}" for e in errs))
    return max(errs)


def float64_check(path):
    refs = load_refs(path)
    rng = onp.random.default_rng(0)
    worst = 0.0
    shapes = [("b2 L100 h4 hqk4 n16 p8 r8", dict(b=2, L=100, h=4, hqk=4, n=16, p=8, r=8)),
              ("b3 L77 h8 hqk2 n8 p4 r2 (GQA)", dict(b=3, L=77, h=8, hqk=2, n=8, p=4, r=2)),
              ("b1 L300 h2 hqk1 n32 p16 r8", dict(b=1, L=300, h=2, hqk=1, n=32, p=16, r=8)),
              ("b2 L64 h4 hqk2 n16 p8 r4, no states", dict(b=2, L=64, h=4, hqk=2, n=16, p=8, r=4,
                                                         states=False))]
    for name, kw in shapes:
        worst = max(worst, compare(refs, name, draw(rng, **kw)))
    cu = [0, 40, 41, 130, 200]
    x = draw(rng, b=1, L=200, h=4, hqk=2, n=16, p=8, r=4, N=4)
    worst = max(worst, compare(refs, "varlen [40, 1, 89, 70] h4 hqk2", x, cu))
    worst = max(worst, compare_step(refs, draw(rng, b=3, L=1, h=4, hqk=2, n=8, p=4, r=4)))
    print(f"largest difference: {worst:.1e}")
    return worst


def mamba_error(ker, ref, angle=False, mask=1e-2, p=0.95, eps=1e-6):
    """mamba's ``relative_error`` of its test (95th percentile), on NumPy arrays."""
    ker, ref = onp.asarray(ker, onp.float64), onp.asarray(ref, onp.float64)
    diff = ker - ref
    if angle:
        diff = onp.remainder(diff + onp.pi, 2 * onp.pi) - onp.pi
    keep = onp.abs(ref) >= mask
    vals = onp.abs(diff)[keep] if angle else (onp.abs(diff) / (onp.abs(ref) + eps))[keep]
    return float(onp.sort(vals)[max(1, min(vals.size, math.ceil(p * vals.size))) - 1])


def float32_check(path, batch, nheads, seqlen):
    """mamba's test inputs (create_mamba3_siso_inputs, bfloat16, its headdims), float32 reference
    vs float64, with mamba's metric."""
    refs32 = load_refs(path, float64=False)
    refs32.F.rms_norm = torch.nn.functional.rms_norm
    torch.manual_seed(42)
    inp = refs32.create_mamba3_siso_inputs(batch, seqlen, nheads, 4, 128, 64, torch.bfloat16, "cpu",
                                            True, True, True)
    x = {k: (v.double().numpy() if torch.is_tensor(v) else v) for k, v in inp.items()}
    x["states"] = tuple(s.double().numpy() for s in inp["Input_States"])
    t0 = time.time()
    out32, fin32 = refs32.mamba3_siso_fwd_ref(*[inp[k] for k in ("Q", "K", "V", "ADT", "DT", "Trap",
                                                               "Q_bias", "K_bias", "Angles", "D", "Z")],
                                              inp["Input_States"])
    got = ours(x)
    names = ("out", "angle_state", "ssm_state", "k_state", "v_state")
    print(f"mamba's test inputs, b {batch}, h {nheads}, L {seqlen}, headdims 128/64 "
          f"({time.time() - t0:.0f} s): float32 fwd_ref vs ssmref float64")
    print("  mamba's metric (p95 rel; angle: p95 abs rad) / normwise max|a-b|/max|b|:")
    for i, nm in enumerate(names):
        ref32 = (out32 if i == 0 else fin32[i - 1]).double().numpy()
        print(f"  {nm:12s} {mamba_error(ref32, got[i], angle=(i == 1)):.1e} / "
              f"{(angle_rel(ref32, got[i]) if i == 1 else rel(ref32, got[i])):.1e}")
    xb = dict(x, Angles=inp["Angles"].to(torch.bfloat16).double().numpy())
    gotb = ours(xb)
    print("  ssmref float64 with Angles rounded to bfloat16 (as mamba3_siso_combined does) vs "
          "float64 with float32 Angles (mamba's metric):")
    for i, nm in enumerate(names):
        print(f"  {nm:12s} {mamba_error(gotb[i], got[i], angle=(i == 1)):.1e}")
    inc = math.pi * onp.abs(onp.tanh(x["Angles"])) * onp.moveaxis(x["DT"], 2, 1)[..., None]
    bound = 2.0 ** -10.987 * onp.sum(inc, axis=1)                          # (b, h, r)
    print(f"  a tanh with relative error 2^-10.987 (PTX tanh.approx.f32) moves the final angle by "
          f"at most {bound.max():.1e} rad (95th percentile of the bound {onp.quantile(bound, 0.95):.1e})")


BF16_CAST = ("Q", "K", "V", "Z", "Angles", "Trap")     # what mamba3_siso_combined casts to bfloat16


def issue_1017(path):
    """mamba issue 1017's configuration (b 4, L 256, 1 head, headdims 64, float32 inputs): the
    float32 reference and the kernel's bfloat16 cast of Q, K, V, Z, Angles, Trap, each against
    ssmref in float64 on the float32 inputs."""
    refs32 = load_refs(path, float64=False)
    print("mamba issue 1017's configuration, float32 inputs: mamba's metric (p95 rel) / mean|diff| / "
          "max|diff| of out")
    print(f"  {'case':16s} {'float32 fwd_ref':32s} {'float64, six inputs in bf16':32s} "
          f"{'... and out rounded to bf16':32s}")
    for name, D, Z, states in (("D+Z+states", 1, 1, 1), ("D+Z no-states", 1, 1, 0),
                               ("D only", 1, 0, 0), ("Z only", 0, 1, 0), ("plain", 0, 0, 0)):
        torch.manual_seed(0)
        inp = refs32.create_mamba3_siso_inputs(4, 256, 1, 1, 64, 64, torch.float32, "cpu",
                                                bool(D), bool(Z), bool(states))
        x = {k: (v.double().numpy() if torch.is_tensor(v) else v) for k, v in inp.items()}
        x["states"] = None if not states else tuple(s.double().numpy() for s in inp["Input_States"])
        exact = ours(x)[0]
        out32, _ = refs32.mamba3_siso_fwd_ref(*[inp[k] for k in ("Q", "K", "V", "ADT", "DT", "Trap",
                                                                "Q_bias", "K_bias", "Angles", "D",
                                                                "Z")], inp["Input_States"])
        xb = dict(x, **{k: inp[k].to(torch.bfloat16).double().numpy()
                        for k in BF16_CAST if inp[k] is not None})
        cast = ours(xb)[0]
        cast_out = torch.from_numpy(cast).to(torch.bfloat16).double().numpy()
        row = []
        for got in (out32.double().numpy(), cast, cast_out):
            d = onp.abs(got - exact)
            row.append(f"{mamba_error(got, exact):.1e} / {d.mean():.1e} / {d.max():.1e}")
        print(f"  {name:16s} {row[0]:32s} {row[1]:32s} {row[2]:32s}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("test_file", help="mamba's tests/ops/triton/test_mamba3_siso.py")
    ap.add_argument("--float32", action="store_true", help="measure the float32 reference too")
    ap.add_argument("--issue-1017", action="store_true", help="mamba issue 1017's configuration")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--nheads", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2345)
    a = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    worst = float64_check(a.test_file)
    if a.float32:
        torch.set_default_dtype(torch.float32)
        float32_check(a.test_file, a.batch, a.nheads, a.seqlen)
    if a.issue_1017:
        torch.set_default_dtype(torch.float32)
        issue_1017(a.test_file)
    return 0 if worst <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
