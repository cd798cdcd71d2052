"""An independent PyTorch port of ssmref's selective SSMs (Mamba, Mamba-2), checked with the kit.

The sibling of examples/torch_port.py for the selective case kinds: written from docs/selective.md
and docs/crosscheck.md only, it never imports ssmref.  It reads the vectors with numpy and json,
computes every selective case naively in torch (loops over time; SSD by chunks of the case's
``chunk_size``) and writes the outputs back:

    python -m ssmref vectors /tmp/vec --dtype float32
    python examples/torch_port_selective.py /tmp/vec /tmp/res --dtype float32 [--device cuda]
    python -m ssmref check /tmp/vec /tmp/res --skip-missing      # exit 0: the port agrees

The equations (docs/selective.md)::

    Δ_t = softplus(δ_t + δ_bias)  [SSD: then clamp to dt_limit, default (0, inf)]
    x_t = exp(Δ_t A) x_{t-1} + Δ_t B_t u_t            exp for A, Euler (Δ B) for B
    y_t = Σ_n C_t x_t (2 Re(...) for complex A) + D u_t,   out_t = y_t silu(z_t)
    decode with a state cache: out from the new state, THEN the state rounded to state_dtype

``--broken NAME`` injects one bug that real ports have had; the check must then fail exactly the
cases the bug touches:

    zoh               B̄ = (exp(ΔA) − 1)/A · B (the Mamba paper's ZOH) instead of Euler's Δ B
    no-softplus       Δ = δ + δ_bias without the softplus
    no-chunk-carry    SSD: each chunk after the first starts from zero, not the carried state
    torch-grad        complex gradients as torch's .grad (∂/∂Re + i ∂/∂Im), not conjugated to the
                      vectors' autograd/JAX convention (∂/∂Re − i ∂/∂Im)
    round-before-out  decode: out read from the state after rounding it to the cache's dtype
                      (the rounding-order bug of vLLM's selective_state_update_ref, PR 48578)

Shapes in comments: b batch, d channels, n state, L time, g groups, h heads, p head dim,
c chunks, Q chunk size, S decode steps.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"float64": torch.float64, "float32": torch.float32}
COMPLEX = {torch.float64: torch.complex128, torch.float32: torch.complex64}
CACHE = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
         "bfloat16": torch.bfloat16}
BROKEN = ("zoh", "no-softplus", "no-chunk-carry", "torch-grad", "round-before-out")


# ---------------------------------------------------------------------------------------------
# Reading vectors, writing results
# ---------------------------------------------------------------------------------------------

def load_case(vectors_dir, case):
    """The case's inputs as numpy arrays (its expected outputs are not read)."""
    with np.load(os.path.join(vectors_dir, case["file"]), allow_pickle=False) as z:
        return {k: z[k] for k in case["inputs"]}


def to_torch(arrays, dtype, device):
    """Real arrays -> ``dtype``, complex -> its complex counterpart, integers -> int64."""
    out = {}
    for k, a in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(a))
        want = {"f": dtype, "c": COMPLEX[dtype]}.get(a.dtype.kind, torch.int64)
        out[k] = t.to(device, want)
    return out


def save_npz_atomic(path, arrays):
    """``np.savez`` into a temporary file in the same folder, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Pieces shared by every kind
# ---------------------------------------------------------------------------------------------

def step_size(dt, bias, softplus, broken, limit=None):
    """``Δ = clamp(softplus(dt + bias), *limit)``; softplus is torch's (linear above 20, as
    mamba's kernels; 2e-9 from the exact one the vectors use)."""
    if bias is not None:
        dt = dt + bias
    if softplus and broken != "no-softplus":
        dt = F.softplus(dt)
    if limit is not None:
        dt = dt.clamp(limit[0], limit[1])
    return dt


def input_factor(dt, dA, A, broken):
    """The factor of ``B u``: Euler's ``Δ`` (right), or ZOH's ``(exp(ΔA) − 1) / A`` (broken)."""
    return torch.expm1(dA) / A if broken == "zoh" else dt


def gate(y, D, u, z):
    if D is not None:
        y = y + D * u
    return y if z is None else y * F.silu(z)


def gradients(loss, leaves, broken):
    """``{name: dL/dname}``; complex leaves conjugated to the vectors' convention unless
    ``broken == "torch-grad"``."""
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {"d" + k: (g.conj() if g.is_complex() and broken != "torch-grad" else g)
            for k, g in zip(leaves, grads)}


def inner(g, v):
    """``Σ Re(conj(g) v)``: the loss whose gradients the ``_vjp`` cases hold."""
    return (g.conj() * v).real.sum() if v.is_complex() else (g * v).sum()


# ---------------------------------------------------------------------------------------------
# Mamba's selective scan: u, delta, z (b, d, L); A (d, n); B, C fixed / varying / grouped
# ---------------------------------------------------------------------------------------------

def per_step(X, d, L, complex_A):
    """B or C as ``(b, d, L, n)``, or ``(1, d, 1, n)`` when fixed ``(d, n)``."""
    if X.dim() == 2:
        return X[None, :, None, :]
    if X.dim() == 3:
        X = X[:, None]                                            # (b, 1, n, L)
    if complex_A and not X.is_complex():                          # [re_0, im_0, re_1, ...]
        X = torch.view_as_complex(X.reshape(*X.shape[:-1], L, 2).contiguous())
    X = X.repeat_interleave(d // X.shape[1], dim=1)               # channel i -> group i // (d/g)
    return X.transpose(2, 3)                                      # (b, d, L, n)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False,
                   broken=None):
    """``(out (b, d, L), last_state (b, d, n))``, one step of the recurrence per iteration."""
    b, d, L = u.shape
    complex_A = A.is_complex()
    dt = step_size(delta, None if delta_bias is None else delta_bias[:, None], softplus, broken)
    dA = dt[..., None] * A[:, None, :]                            # (b, d, L, n)
    drive = (input_factor(dt[..., None], dA, A[:, None, :], broken)
             * per_step(B, d, L, complex_A) * u[..., None])       # (b, d, L, n)
    decay, Cs = torch.exp(dA), per_step(C, d, L, complex_A)
    x = torch.zeros(b, d, A.shape[1], dtype=drive.dtype, device=u.device)
    ys = []
    for t in range(L):
        x = decay[:, :, t] * x + drive[:, :, t]                   # x_t = e^{ΔA} x_{t-1} + Δ B u
        ys.append((x * Cs[:, :, min(t, Cs.shape[2] - 1)]).sum(-1))   # y_t = Σ_n C_t x_t
    y = torch.stack(ys, dim=-1)                                   # (b, d, L)
    if complex_A:
        y = 2 * y.real
    return gate(y, None if D is None else D[:, None], u, z), x


SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan_call(x, attrs, broken):
    return selective_scan(*(x.get(k) for k in SCAN_ARGS), softplus=attrs["delta_softplus"],
                          broken=broken)


def case_selective_scan(x, attrs, broken):
    out, last = scan_call(x, attrs, broken)
    return {"out": out, "last_state": last}


def case_selective_scan_vjp(x, attrs, broken):
    leaves = {k: x[k].clone().requires_grad_(True) for k in SCAN_ARGS if k in x}
    out, last = scan_call({**x, **leaves}, attrs, broken)
    loss = inner(x["gout"], out) + inner(x["glast"], last)
    return dict(gradients(loss, leaves, broken), out=out, last_state=last)


# ---------------------------------------------------------------------------------------------
# Decoding: one step (selective_state_update), and S steps with the state in a cache dtype
# ---------------------------------------------------------------------------------------------

def new_state(state, x, dt, A, B, dt_bias, softplus, broken):
    """Head form: ``state (b, h, p, n)``, ``x, dt (b, h, p)``, ``A (h, p, n)``, ``B (b, g, n)``."""
    h, g = state.shape[1], B.shape[1]
    delta = step_size(dt, dt_bias, softplus, broken)              # (b, h, p)
    dA = delta[..., None] * A                                     # (b, h, p, n)
    Bh = B.repeat_interleave(h // g, dim=1)[:, :, None]           # (b, h, 1, n)
    return torch.exp(dA) * state + input_factor(delta[..., None], dA, A, broken) * Bh * x[..., None]


def read_out(s, x, C, D, z):
    h, g = s.shape[1], C.shape[1]
    Ch = C.repeat_interleave(h // g, dim=1)[:, :, None]           # (b, h, 1, n)
    return gate((s * Ch).sum(-1), D, x, z)                        # (b, h, p)


def head_form(x):
    """mamba's rule: without heads (3-d state) every argument gains a head axis of size 1."""
    if x["state"].dim() == 4:
        return dict(x), True
    lifted = {}
    for k, v in x.items():
        if k in ("A", "D", "dt_bias"):
            lifted[k] = v[None]
        elif k in ("B", "C") and v.dim() == 3:
            lifted[k] = v                                         # already (b, 1, n)
        else:
            lifted[k] = v[:, None]
    return lifted, False


def case_selective_state_update(x, attrs, broken):
    v, heads = head_form(x)
    new = new_state(v["state"], v["x"], v["dt"], v["A"], v["B"], v.get("dt_bias"),
                    attrs["dt_softplus"], broken)
    out = read_out(new, v["x"], v["C"], v.get("D"), v.get("z"))
    return {"out": out, "new_state": new} if heads else {"out": out[:, 0], "new_state": new[:, 0]}


def case_selective_decode(x, attrs, broken):
    cache = CACHE[attrs["state_dtype"]]
    s, outs, states = x["state"], [], []
    for t in range(x["x"].shape[0]):
        new = new_state(s, x["x"][t], x["dt"][t], x["A"], x["B"][t], x.get("dt_bias"),
                        attrs["dt_softplus"], broken)
        stored = new.to(cache).to(new.dtype)                      # the cache holds state_dtype
        read = stored if broken == "round-before-out" else new    # right: out before rounding
        outs.append(read_out(read, x["x"][t], x["C"][t], x.get("D"),
                             x["z"][t] if "z" in x else None))
        states.append(stored)
        s = stored
    return {"out": torch.stack(outs), "states": torch.stack(states)}


# ---------------------------------------------------------------------------------------------
# Mamba-2's SSD by chunks: x (b, L, h, p), dt (b, L, h), A (h,), B, C (b, L, g, n)
# ---------------------------------------------------------------------------------------------

def segsum(v):
    """``v (..., Q) -> (..., Q, Q)``: ``Σ_{j<m<=i} v_m`` on and below the diagonal, -inf above."""
    Q = v.shape[-1]
    below = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=v.device), -1)
    rows = v[..., :, None].expand(*v.shape, Q).masked_fill(~below, 0)   # [m, j] = v_m if m > j
    seg = torch.cumsum(rows, dim=-2)                                     # [i, j] = Σ_{j<m<=i} v_m
    return seg.masked_fill(~torch.tril(torch.ones_like(below), 0), float("-inf"))


def pad_time(v, pad):
    """``v (b, L, ...)`` with ``pad`` zero steps appended (zero steps are identity steps)."""
    return torch.cat([v, v.new_zeros(v.shape[0], pad, *v.shape[2:])], dim=1) if pad else v


def ssd(x, dt, A, B, C, Q, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
        softplus=False, limit=(0.0, float("inf")), broken=None):
    """``(out (b, L, h, p), final_states (b, h, p, n))`` in chunks of ``Q`` steps."""
    b, L, h, p = x.shape
    g, n = B.shape[2:]
    delta = step_size(dt, dt_bias, softplus, broken, limit)              # (b, L, h)
    # segments: r_t counts the changes of seq_idx up to t (seq_idx_{-1} = 0)
    if seq_idx is None:
        r = torch.zeros(b, L, dtype=torch.int64, device=x.device)
    else:
        r = torch.cumsum(seq_idx != F.pad(seq_idx, (1, 0))[:, :-1], dim=1)
    c = -(-L // Q)
    pad = c * Q - L
    r = torch.cat([r, r[:, -1:].expand(b, pad)], dim=1).reshape(b, c, Q)
    Bh, Ch = (pad_time(V, pad).repeat_interleave(h // g, dim=2).reshape(b, c, Q, h, n)
              for V in (B, C))                                           # head i -> group i // (h/g)
    X = pad_time(x, pad).reshape(b, c, Q, h, p)
    dtc = pad_time(delta, pad).reshape(b, c, Q, h)
    ell = (dtc * A).permute(0, 3, 1, 2)                                  # (b, h, c, Q): Δ A
    w = input_factor(dtc, dtc * A, A, broken)                            # (b, c, Q, h)
    Xw = X * w[..., None]                                                # (b, c, Q, h, p)
    cum = torch.cumsum(ell, dim=-1)                                      # (b, h, c, Q)
    # 1. within a chunk: y_i = Σ_{j<=i, same segment} (C_i·B_j) exp(Σ_{j<m<=i} ΔA) Δ_j x_j
    same = (r[..., :, None] == r[..., None, :]).to(ell.dtype)            # (b, c, Q, Q)
    decay = torch.exp(segsum(ell)) * same[:, None]                       # (b, h, c, Q, Q)
    Y = torch.einsum("bcihn,bcjhn,bhcij,bcjhp->bcihp", Ch, Bh, decay, Xw)
    # 2. each chunk's own state at its end (steps in the segment of the chunk's last step)
    last = (r == r[..., -1:]).to(ell.dtype)                              # (b, c, Q)
    to_end = torch.exp(cum[..., -1:] - cum) * last[:, None]              # (b, h, c, Q)
    S = torch.einsum("bcjhn,bhcj,bcjhp->bchpn", Bh, to_end, Xw)          # (b, c, h, p, n)
    # 3. pass the states from chunk to chunk; a restart inside chunk k cuts the carry
    r_prev = torch.cat([torch.zeros_like(r[:, :1, -1]), r[:, :-1, -1]], dim=1)   # (b, c)
    carry = (r[:, :, -1] == r_prev).to(ell.dtype)                        # (b, c)
    H = x.new_zeros(b, h, p, n) if initial_states is None else initial_states
    entering = []
    for k in range(c):
        if k > 0 and broken == "no-chunk-carry":
            H = torch.zeros_like(H)                                      # the bug: state dropped
        entering.append(H)
        H = (torch.exp(cum[:, :, k, -1]) * carry[:, k, None])[..., None, None] * H + S[:, k]
    entering = torch.stack(entering, dim=1)                              # (b, c, h, p, n)
    # 4. the entering state's contribution, up to the first restart in the chunk
    enter = (r == r_prev[..., None]).to(ell.dtype)                       # (b, c, Q)
    Y = Y + torch.einsum("bcihn,bchpn,bhci->bcihp", Ch, entering, torch.exp(cum) * enter[:, None])
    y = Y.reshape(b, c * Q, h, p)[:, :L]
    if D is not None:
        D = D[:, None] if D.dim() == 1 else D
    return gate(y, D, x, z), H


SSD_ARGS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def ssd_call(v, attrs, broken):
    lo, hi = attrs.get("dt_limit", (0.0, None))
    return ssd(v["x"], v["dt"], v["A"], v["B"], v["C"], int(attrs["chunk_size"]), v.get("D"),
               v.get("z"), v.get("dt_bias"), v.get("initial_states"), v.get("seq_idx"),
               attrs["dt_softplus"], (lo, float("inf") if hi is None else hi), broken)


def case_ssd(x, attrs, broken):
    out, final = ssd_call(x, attrs, broken)
    return {"out": out, "final_states": final}


def case_ssd_vjp(x, attrs, broken):
    leaves = {k: x[k].clone().requires_grad_(True) for k in SSD_ARGS if k in x}
    out, final = ssd_call({**x, **leaves}, attrs, broken)
    loss = inner(x["gout"], out) + inner(x["gfinal"], final)
    return dict(gradients(loss, leaves, broken), out=out, final_states=final)


KINDS = {"selective_scan": case_selective_scan, "selective_scan_vjp": case_selective_scan_vjp,
         "selective_state_update": case_selective_state_update,
         "selective_decode": case_selective_decode, "ssd": case_ssd, "ssd_vjp": case_ssd_vjp}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def run(vectors_dir, results_dir, device="cpu", dtype="float64", broken=None, cases=None):
    """Compute every selective case of the vectors (the other kinds are skipped); returns
    ``{name: seconds}``."""
    if broken is not None and broken not in BROKEN:
        raise ValueError(f"unknown broken variant {broken!r}; known {list(BROKEN)}")
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
        out = fn(x, case.get("attrs", {}), broken)
        arrays = {k: out[k].detach().resolve_conj().cpu().numpy()       # waits for cuda
                  for k in case["outputs"]}
        times[case["name"]] = time.perf_counter() - t0
        if "set_id" in manifest:       # the vectors these results were computed from
            arrays["_set_id"] = np.array(manifest["set_id"])
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"), arrays)
        print(f"{case['name']:36s} {times[case['name']]:8.3f} s")
    print(f"{len(times)} cases in {sum(times.values()):.2f} s ({dtype}, {device}"
          f"{', broken: ' + broken if broken else ''}; {skipped} cases of other kinds skipped)")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors_dir")
    ap.add_argument("results_dir")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    ap.add_argument("--broken", choices=BROKEN, default=None, help="inject one known bug")
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(1)     # small tensors: faster on a busy machine, fixed reduction order
    try:
        run(a.vectors_dir, a.results_dir, a.device, a.dtype, a.broken, a.cases)
    except (ValueError, OSError) as e:                  # unusable vectors: one line, exit 2
        print(f"torch_port_selective: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
