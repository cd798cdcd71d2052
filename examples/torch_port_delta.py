"""An independent PyTorch port of ssmref's delta rule family (DeltaNet, Gated DeltaNet, KDA),
checked with the kit.

The sibling of examples/torch_port_selective.py for the delta rule case kinds: written from
docs/delta.md and docs/crosscheck.md only, it never imports ssmref.  It reads the vectors with
numpy and json, computes every delta case in torch (a loop over time, or with ``--chunked`` the
WY/UT chunked form, one packed sequence after the other; the gradients by torch's autograd) and
writes the outputs back:

    python -m ssmref vectors /tmp/vec --dtype float32
    python examples/torch_port_delta.py /tmp/vec /tmp/res --dtype float32 [--device cuda]
    python -m ssmref check /tmp/vec /tmp/res --cases <the delta cases>   # exit 0: the port agrees

The equations (docs/delta.md), state ``S (K, V)`` per value head::

    q̂ = scale · n(q), k̂ = n(k)        n(x) = x / sqrt(Σx² + 1e-6) when use_qk_l2norm_in_kernel
    S = diag(exp(g_t)) S               the decay first (g: log gate per head, or per key channel)
    S = S + k̂ (β ⊙ (v − Sᵀ k̂))ᵀ        the delta update (β per head, or per value channel)
    o_t = Sᵀ q̂                         the output reads the new state
    value head i reads query/key head i // (HV / H);  cu_seqlens: each sequence from its own
    initial state

``--broken NAME`` injects one bug; the check must then fail exactly the cases the bug touches:

    beta-on-value   u = β v − Sᵀk̂: β scales the value only, not the whole delta (the erase term
                    escapes it)
    gate-after      the decay applied after the update, S = e^g (S + k̂ (β (v − Sᵀk̂))ᵀ)
    old-state       o_t read from the state before the update
    tile-heads      GVA's value head i reads query/key head i % H (torch's ``repeat``) instead
                    of i // (HV / H) (``repeat_interleave``)
    varlen-carry    the state carried across cu_seqlens boundaries instead of restarting
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

DTYPES = {"float64": torch.float64, "float32": torch.float32}
BROKEN = ("beta-on-value", "gate-after", "old-state", "tile-heads", "varlen-carry")
GRADS = ("q", "k", "v", "g", "beta", "initial_state")


def load_case(vectors_dir, case):
    """The case's inputs as numpy arrays (its expected outputs are not read)."""
    with np.load(os.path.join(vectors_dir, case["file"]), allow_pickle=False) as z:
        return {k: z[k] for k in case["inputs"]}


def to_torch(arrays, dtype, device):
    return {k: torch.from_numpy(np.ascontiguousarray(a)).to(
        device, dtype if a.dtype.kind == "f" else torch.int64) for k, a in arrays.items()}


def save_npz_atomic(path, arrays):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def prepare(x, attrs, broken, head_dim):
    """``q̂, k̂`` on the value heads, ``g`` as ``(…, HV, K or 1)``, ``β`` as ``(…, HV, V or 1)``."""
    q, k, v = x["q"], x["k"], x["v"]
    if attrs["use_qk_l2norm_in_kernel"]:
        q, k = (t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6) for t in (q, k))
    q = q * attrs["scale"]
    rep = v.shape[head_dim] // q.shape[head_dim]
    if rep > 1:
        expand = (lambda t: t.repeat_interleave(rep, dim=head_dim)) if broken != "tile-heads" \
            else (lambda t: t.repeat(*([1] * head_dim + [rep, 1])))
        q, k = expand(q), expand(k)
    g = x.get("g")
    g = torch.zeros(v.shape[:head_dim + 1] + (1,), dtype=v.dtype, device=v.device) if g is None \
        else (g.unsqueeze(-1) if g.dim() == head_dim + 1 else g)
    beta = x["beta"].unsqueeze(-1) if x["beta"].dim() == head_dim + 1 else x["beta"]
    return q, k, v, g, beta


def step(S, q, k, v, g, beta, broken):
    """One token: ``S (B, HV, K, V)``, ``q, k (B, HV, K)``, ``v (B, HV, V)``; ``(o, S_new)``."""
    decay = torch.exp(g).unsqueeze(-1)                                   # (B, HV, K or 1, 1)
    P = S if broken == "gate-after" else decay * S
    read = torch.einsum("bhkv,bhk->bhv", P, k)                           # Pᵀ k
    u = beta * v - read if broken == "beta-on-value" else beta * (v - read)
    S_new = P + k.unsqueeze(-1) * u.unsqueeze(-2)
    if broken == "gate-after":
        S_new = decay * S_new
    o = torch.einsum("bhkv,bhk->bhv", S if broken == "old-state" else S_new, q)
    return o, S_new


def chunks(q, k, v, g, beta, S, C):
    """The WY/UT chunked form (docs/delta.md) of one run: ``q, k (B, T, HV, K)``, ``v (B, T, HV,
    V)``, ``g (B, T, HV, Kg)``, ``beta (B, T, HV, Vb)``, ``S (B, HV, K, V)``; ``(o, S_T)``."""
    B, T, HV, V = v.shape
    c = -(-T // C)

    def split(t):                                                        # (B, HV, c, C, X)
        t = torch.cat([t, t.new_zeros((B, c * C - T) + t.shape[2:])], dim=1)
        return t.reshape(B, c, C, HV, t.shape[-1]).permute(0, 3, 1, 2, 4)
    q, k, v, g, beta = (split(t) for t in (q, k, v, g, beta))
    ones = torch.ones(C, C, dtype=v.dtype, device=v.device)
    ell = g.transpose(-1, -2)                                            # (B, HV, c, Kg, C)
    seg = torch.cumsum(ell.unsqueeze(-1) * torch.tril(ones, -1), dim=-2)  # Σ_{m<l<=i} g_l
    gamma = torch.cumsum(ell, dim=-1).transpose(-1, -2)                  # (B, HV, c, C, Kg)
    tail = seg[..., C - 1, :].transpose(-1, -2)                          # (B, HV, c, C, Kg)
    decay = torch.exp(seg) * torch.tril(ones)                            # (B, HV, c, Kg, C, C)
    if decay.shape[-3] == 1:
        KK, QK = (a @ k.transpose(-1, -2) * decay[..., 0, :, :] for a in (k, q))
    else:
        KK, QK = (torch.einsum("bhcid,bhcmd,bhcdim->bhcim", a, k, decay) for a in (k, q))
    betaT = beta.transpose(-1, -2)                                       # (B, HV, c, Vb, C)
    IA = torch.eye(C, dtype=v.dtype, device=v.device) + betaT.unsqueeze(-1) * \
        (KK * torch.tril(ones, -1)).unsqueeze(3)                         # (B, HV, c, Vb, C, C)
    solve = lambda rhs: torch.linalg.solve_triangular(IA, rhs, upper=False, unitriangular=True)  # noqa: E731
    W = solve(betaT.unsqueeze(-1) * (k * torch.exp(gamma)).unsqueeze(3))  # (B, HV, c, Vb, C, K)
    if betaT.shape[3] == 1:
        U = solve((beta * v).unsqueeze(3))[:, :, :, 0]                    # (B, HV, c, C, V)
    else:
        U = solve((beta * v).transpose(-1, -2).unsqueeze(-1))[..., 0].transpose(-1, -2)
    outs = []
    for n in range(c):
        WS = W[:, :, n, 0] @ S if W.shape[3] == 1 else torch.einsum("bhjik,bhkj->bhij", W[:, :, n], S)
        u = U[:, :, n] - WS
        outs.append((q[:, :, n] * torch.exp(gamma[:, :, n])) @ S + QK[:, :, n] @ u)
        S = torch.exp(gamma[:, :, n, C - 1]).unsqueeze(-1) * S + \
            (k[:, :, n] * torch.exp(tail[:, :, n])).transpose(-1, -2) @ u
    o = torch.stack(outs, dim=2).permute(0, 2, 3, 1, 4).reshape(B, c * C, HV, V)
    return o[:, :T], S


def sequence(x, attrs, broken, chunked=False):
    """``(o (B, T, HV, V), final_state (N, HV, K, V))``: the loop over time, or with
    ``chunked`` the WY/UT form by chunks of ``attrs.chunk_size``."""
    q, k, v, g, beta = prepare(x, attrs, broken, head_dim=2)
    B, T, HV, V = v.shape
    cu = x.get("cu_seqlens")
    bounds = [(0, T)] if cu is None else list(zip(cu[:-1].tolist(), cu[1:].tolist()))
    N = B if cu is None else len(bounds)
    S0 = x.get("initial_state")
    S0 = torch.zeros(N, HV, q.shape[-1], V, dtype=v.dtype, device=v.device) if S0 is None else S0
    outs, finals, S = [], [], None
    for n, (a, b) in enumerate(bounds):
        if S is None or broken != "varlen-carry":
            S = S0 if cu is None else S0[n:n + 1]
        if chunked:
            if b > a:
                o, S = chunks(q[:, a:b], k[:, a:b], v[:, a:b], g[:, a:b], beta[:, a:b], S,
                              int(attrs["chunk_size"]))
                outs.extend(o.unbind(1))
            finals.append(S)
            continue
        for t in range(a, b):
            o, S = step(S, q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], broken)
            outs.append(o)
        finals.append(S)
    return torch.stack(outs, dim=1), torch.cat(finals, dim=0)


def case_delta_rule(x, attrs, broken, chunked):
    o, final = sequence(x, attrs, broken, chunked)
    return {"o": o, "final_state": final}


def case_delta_rule_vjp(x, attrs, broken, chunked):
    leaves = {k: x[k].clone().requires_grad_(True) for k in GRADS if k in x}
    o, final = sequence({**x, **leaves}, attrs, broken, chunked)
    loss = (x["do"] * o).sum() + (x["dht"] * final).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict({"d" + k: gr for k, gr in zip(leaves, grads)}, o=o, final_state=final)


def case_delta_rule_step(x, attrs, broken, chunked):
    q, k, v, g, beta = prepare(x, attrs, broken, head_dim=1)
    o, new = step(x["state"], q, k, v, g, beta, broken)
    return {"o": o, "new_state": new}


KINDS = {"delta_rule": case_delta_rule, "delta_rule_vjp": case_delta_rule_vjp,
         "delta_rule_step": case_delta_rule_step}


def run(vectors_dir, results_dir, device="cpu", dtype="float64", broken=None, cases=None,
        chunked=False):
    """Compute every delta case of the vectors (the other kinds are skipped); returns
    ``{name: seconds}``.  ``chunked``: sequences by the WY/UT chunked form."""
    if broken is not None and broken not in BROKEN:
        raise ValueError(f"unknown broken variant {broken!r}; known {list(BROKEN)}")
    if broken is not None and chunked:
        raise ValueError("--broken variants are bugs of the loop over time: not with --chunked")
    with open(os.path.join(vectors_dir, "manifest.json")) as f:
        manifest = json.load(f)
    known = [c["name"] for c in manifest["cases"]]
    unknown = sorted(set(cases or []) - set(known))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; the vectors have {known}")
    os.makedirs(results_dir, exist_ok=True)
    times, skipped = {}, 0
    for case in manifest["cases"]:
        fn = KINDS.get(case.get("kind"))
        if (cases and case["name"] not in cases) or fn is None:
            skipped += fn is None
            continue
        x = to_torch(load_case(vectors_dir, case), DTYPES[dtype], torch.device(device))
        t0 = time.perf_counter()
        out = fn(x, case.get("attrs", {}), broken, chunked)
        arrays = {k: out[k].detach().cpu().numpy() for k in case["outputs"]}
        times[case["name"]] = time.perf_counter() - t0
        if "set_id" in manifest:       # the vectors these results were computed from
            arrays["_set_id"] = np.array(manifest["set_id"])
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"), arrays)
        print(f"{case['name']:36s} {times[case['name']]:8.3f} s")
    print(f"{len(times)} cases in {sum(times.values()):.2f} s ({dtype}, {device}"
          f"{', chunked' if chunked else ''}{', broken: ' + broken if broken else ''}; "
          f"{skipped} cases of other kinds skipped)")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors_dir")
    ap.add_argument("results_dir")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    ap.add_argument("--broken", choices=BROKEN, default=None, help="inject one known bug")
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    ap.add_argument("--chunked", action="store_true",
                    help="the WY/UT chunked form (chunks of the case's chunk_size), not the loop")
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(1)
    try:
        run(a.vectors_dir, a.results_dir, a.device, a.dtype, a.broken, a.cases, a.chunked)
    except (ValueError, OSError) as e:                  # unusable vectors: one line, exit 2
        print(f"torch_port_delta: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
