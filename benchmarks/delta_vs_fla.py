"""ssmref.delta against fla's own naive references, run in float64: a development check.

    PYTHONPATH=. python benchmarks/delta_vs_fla.py FLA_ROOT

``FLA_ROOT`` is a checkout of github.com/fla-org/flash-linear-attention (only its three
``naive.py`` files are read: ``fla/ops/delta_rule``, ``fla/ops/gated_delta_rule``, ``fla/ops/kda``).
They cast to float32 inside (``.float()``, ``torch.float32``, ``torch.float``); the script loads
their source with those casts turned into float64 and imports nothing else of fla, so it needs
torch and einops, never a GPU.  Nothing of fla is part of ssmref: this script is not a test and
the test suite never reads a fetched repository.

Compared, on random inputs of several shapes (unit keys as fla's tests use, ``g = logsigmoid``,
``β = sigmoid``), forward outputs, final states and the gradients of
``Σ W·o + Σ W_S·S_final`` w.r.t. every float argument (torch autograd through fla's references,
autograd through ssmref's chunked form):

- ``delta_rule_recurrence`` (fla's (B, H, T, K) layout; β per head and per value channel) and
  ``delta_rule_chunkwise`` (T a multiple of its chunk, no initial state);
- ``naive_recurrent_gated_delta_rule`` and ``naive_chunk_gated_delta_rule``;
- ``naive_recurrent_kda`` and ``naive_chunk_kda`` (GVA: HV = 2H).

Prints one line per comparison, the max relative difference (max |a − b| / max |b|) over outputs,
final states and gradients, and the largest at the end.
"""

import argparse
import os
import re
import sys
import types

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref.delta import delta_rule, gated_delta_rule, kda


def load_naive(root, sub):
    """fla's ``fla/ops/<sub>/naive.py`` with its float32 casts made float64, as a module."""
    path = os.path.join(root, "fla", "ops", sub, "naive.py")
    with open(path, encoding="utf-8") as f:
        src = f.read()
    src = re.sub(r"\.float\(\)", ".double()", src)
    src = re.sub(r"torch\.float32\b", "torch.float64", src)
    src = re.sub(r"torch\.float\b(?!\d)", "torch.float64", src)
    mod = types.ModuleType(f"fla_naive_{sub}")
    exec(compile(src, path, "exec"), mod.__dict__)                  # noqa: S102 (a dev check)
    return mod


def rel(a, b):
    a, b = onp.asarray(a), onp.asarray(b)
    return float(onp.max(onp.abs(a - b)) / max(onp.max(onp.abs(b)), 1e-300))


def draw(rng, B, T, H, HV, K, V, gate, beta_v=False):
    import torch.nn.functional as F
    import torch
    q = rng.standard_normal((B, T, H, K))
    k = rng.standard_normal((B, T, H, K))
    k = k / onp.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((B, T, HV, V))
    gshape = {"none": None, "head": (B, T, HV), "channel": (B, T, HV, K)}[gate]
    g = None if gshape is None else F.logsigmoid(torch.from_numpy(rng.standard_normal(gshape))).numpy()
    beta = 1 / (1 + onp.exp(-rng.standard_normal((B, T, HV, V) if beta_v else (B, T, HV))))
    return dict(q=q, k=k, v=v, g=g, beta=beta, S0=rng.standard_normal((B, HV, K, V)),
                W=rng.standard_normal((B, T, HV, V)), WS=rng.standard_normal((B, HV, K, V)))


def ours(fn, x, names, **kw):
    """``(o, S, grads)`` of ssmref: the gradients of ``Σ W·o + Σ W_S·S`` w.r.t. ``names``."""
    def loss(p):
        y = {**x, **p}
        o, S = fn(y, **kw)
        return np.sum(x["W"] * o) + np.sum(x["WS"] * S), (o, S)
    grads = autograd.grad(lambda p: loss(p)[0])({n: x[n] for n in names})
    o, S = loss({n: x[n] for n in names})[1]
    return o, S, grads


def theirs(fn, x, names):
    """``(o, S, grads)`` of an fla reference ``fn(t) -> (o, S)`` on torch float64 leaves."""
    import torch
    t = {n: torch.tensor(x[n], requires_grad=n in names) for n in x if x[n] is not None}
    o, S = fn(t)
    (torch.sum(t["W"] * o) + torch.sum(t["WS"] * S)).backward()
    return o.detach().numpy(), S.detach().numpy(), {n: t[n].grad.numpy() for n in names}


def compare(label, a, b, report):
    errs = [rel(a[0], b[0]), rel(a[1], b[1])] + [rel(a[2][n], b[2][n]) for n in a[2]]
    report.append((label, max(errs)))
    print(f"{label:64s} out {errs[0]:.1e}  state {errs[1]:.1e}  grads {max(errs[2:]):.1e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fla_root")
    a = p.parse_args(argv)
    import torch
    torch.set_default_dtype(torch.float64)
    dr = load_naive(a.fla_root, "delta_rule")
    gdr = load_naive(a.fla_root, "gated_delta_rule")
    kd = load_naive(a.fla_root, "kda")
    rng = onp.random.default_rng(0)
    hf = lambda z: z.transpose(1, 2)                                 # noqa: E731  (B,T,H,.) <-> (B,H,T,.)
    report = []
    for B, T, H, K, V in ((2, 37, 3, 8, 5), (1, 64, 2, 16, 16), (3, 100, 1, 4, 7)):
        shape = f"B {B} T {T} H {H} K {K} V {V}"
        for beta_v in (False, True):
            x = draw(rng, B, T, H, H, K, V, "none", beta_v)
            names = ["q", "k", "v", "beta", "S0"]
            mine = ours(lambda y, **kw: delta_rule(y["q"], y["k"], y["v"], y["beta"], None, y["S0"],
                                                  True, **kw), x, names, chunk_size=1)
            ref = theirs(lambda t: (lambda o, S: (hf(o), S))(*dr.delta_rule_recurrence(
                hf(t["q"]), hf(t["k"]), hf(t["v"]), t["beta"].transpose(1, 2),
                t["S0"], True)), x, names)
            compare(f"delta_rule_recurrence, β {'(B,T,H,V)' if beta_v else '(B,T,H)'}, {shape}",
                    mine, ref, report)
        C = 16
        Tc = (T // C) * C
        x = draw(rng, B, Tc, H, H, K, V, "none")
        names = ["q", "k", "v", "beta"]
        x["S0"] = onp.zeros((B, H, K, V))
        mine = ours(lambda y: delta_rule(y["q"], y["k"], y["v"], y["beta"], None, None, True), x, names)
        ref = theirs(lambda t: (lambda o, S: (hf(o), S))(*dr.delta_rule_chunkwise(
            hf(t["q"]), hf(t["k"]), hf(t["v"]), hf(t["beta"]), C)), x, names)
        compare(f"delta_rule_chunkwise (chunk {C}), B {B} T {Tc} H {H} K {K} V {V}", mine, ref, report)

        x = draw(rng, B, T, H, H, K, V, "head")
        names = ["q", "k", "v", "g", "beta", "S0"]
        run = lambda y, **kw: gated_delta_rule(y["q"], y["k"], y["v"], y["g"], y["beta"], 0.3,  # noqa: E731
                                                y["S0"], True, **kw)
        mine = ours(run, x, names, chunk_size=8)
        ref = theirs(lambda t: gdr.naive_recurrent_gated_delta_rule(
            t["q"], t["k"], t["v"], t["beta"], t["g"], 0.3, t["S0"], True), x, names)
        compare(f"naive_recurrent_gated_delta_rule, {shape}", mine, ref, report)
        ref = theirs(lambda t: gdr.naive_chunk_gated_delta_rule(
            t["q"], t["k"], t["v"], t["g"], t["beta"], 16, 0.3, t["S0"], True), x, names)
        compare(f"naive_chunk_gated_delta_rule (chunk 16), {shape}", mine, ref, report)

        x = draw(rng, B, T, H, 2 * H, K, V, "channel")
        run = lambda y, **kw: kda(y["q"], y["k"], y["v"], y["g"], y["beta"], None,  # noqa: E731
                                   y["S0"], True, **kw)
        mine = ours(run, x, names, chunk_size=8)
        ref = theirs(lambda t: kd.naive_recurrent_kda(t["q"], t["k"], t["v"], t["g"], t["beta"],
                                                      None, t["S0"], True), x, names)
        compare(f"naive_recurrent_kda (HV = 2H), {shape}", mine, ref, report)
        x = draw(rng, B, Tc, H, 2 * H, K, V, "channel")
        mine = ours(run, x, names, chunk_size=8)
        ref = theirs(lambda t: kd.naive_chunk_kda(t["q"], t["k"], t["v"], t["g"], t["beta"],
                                                  None, t["S0"], True, C), x, names)
        compare(f"naive_chunk_kda (chunk {C}, HV = 2H), B {B} T {Tc} H {H} K {K} V {V}",
                mine, ref, report)
    worst = max(report, key=lambda r: r[1])
    print(f"largest relative difference: {worst[1]:.1e} ({worst[0]})")
    return 0 if worst[1] <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
