"""An independent PyTorch port of Mamba-3 SISO, checked with the kit.

Written from docs/mamba3.md and docs/crosscheck.md only, it never imports ssmref.  It reads the
vectors with numpy and json, computes every Mamba-3 case with a plain loop over time in torch
(gradients by torch.autograd) and writes the outputs back:

    python -m ssmref vectors /tmp/vec --dtype float32
    python examples/torch_port_mamba3.py /tmp/vec /tmp/res --dtype float32
    python -m ssmref check /tmp/vec /tmp/res --skip-missing      # exit 0: the port agrees

The equations (docs/mamba3.md), per sequence and head::

    θ_t = (θ_{t-1} + π tanh(Angles_t) DT_t) mod 2π          wrapped every step
    q_t = R(θ_t)(Q_t + Q_bias),  k_t = R(θ_t)(K_t + K_bias)   R rotates pairs (2i, 2i+1), i < r
    λ_t = σ(Trap_t),  α_t = exp(ADT_t)
    S_t = α_t S_{t-1} + (1 − λ_t) DT_t α_t v_{t-1} k_{t-1}ᵀ + λ_t DT_t v_t k_tᵀ
    out_t = (S_t q_t + D v_t) · silu(Z_t)

``--broken NAME`` injects one bug; the check must then fail exactly the cases it touches:

    no-sigmoid    λ_t = Trap_t: the raw trapezoid input used as the factor (σ forgotten)
    no-wrap       θ_t not reduced mod 2π: the same rotations, a final angle state off by 2πk
    mamba2        λ_t = 1: the previous v kᵀ never enters (Mamba-2's update, exp-Euler)

Shapes in comments: b batch, L time, h heads, n Q/K head dim, p V head dim, r angles.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"float64": torch.float64, "float32": torch.float32}
BROKEN = ("no-sigmoid", "no-wrap", "mamba2")
ARGS = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")
STATES = ("Input_Angle_State", "Input_SSM_State", "Input_K_State", "Input_V_State")
OUTPUTS = ("out", "angle_state", "ssm_state", "k_state", "v_state")
COTANGENTS = ("gout", "gangle", "gssm", "gk", "gv")


def load_case(vectors_dir, case):
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


def rotate(x, theta):
    """Pairs ``(x[2i], x[2i+1])`` rotated by ``theta[i]`` for ``i < r``; ``x (..., n)``."""
    r = theta.shape[-1]
    x0, x1 = x[..., 0::2], x[..., 1::2]                        # (..., n/2)
    cos = F.pad(torch.cos(theta), (0, x0.shape[-1] - r), value=1.0)
    sin = F.pad(torch.sin(theta), (0, x0.shape[-1] - r), value=0.0)
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def sequences(x, states, broken):
    """``(out (b, L, h, p), (θ, S, k, v))`` for ``b`` sequences of one length."""
    Q, K, V = x["Q"], x["K"], x["V"]
    b, L, h, p = V.shape
    rep = h // Q.shape[2]
    theta, S, k_prev, v_prev = states
    outs = []
    for t in range(L):
        theta = theta + math.pi * torch.tanh(x["Angles"][:, t]) * x["DT"][:, :, t, None]
        if broken != "no-wrap":
            theta = theta - 2 * math.pi * torch.floor(theta / (2 * math.pi))
        q = rotate(Q[:, t].repeat_interleave(rep, dim=1) + x["Q_bias"], theta)      # (b, h, n)
        k = rotate(K[:, t].repeat_interleave(rep, dim=1) + x["K_bias"], theta)
        trap = x["Trap"][:, :, t]
        lam = {"no-sigmoid": trap, "mamba2": torch.ones_like(trap)}.get(broken, torch.sigmoid(trap))
        dt, alpha = x["DT"][:, :, t], torch.exp(x["ADT"][:, :, t])                   # (b, h)
        v = V[:, t]                                                                   # (b, h, p)
        S = (alpha[..., None, None] * S
             + ((1 - lam) * dt * alpha)[..., None, None] * v_prev[..., :, None] * k_prev[..., None, :]
             + (lam * dt)[..., None, None] * v[..., :, None] * k[..., None, :])       # (b, h, p, n)
        y = torch.einsum("bhpn,bhn->bhp", S, q)
        if "D" in x:
            y = y + x["D"][:, None] * v
        if "Z" in x:
            y = y * F.silu(x["Z"][:, t])
        outs.append(y)
        k_prev, v_prev = k, v
    return torch.stack(outs, dim=1), (theta, S, k_prev, v_prev)


def forward(x, attrs, broken):
    """Every output of a ``mamba3_siso`` or (``attrs.step``) ``mamba3_siso_step`` case."""
    if attrs.get("step"):                                      # add the seqlen axis of length 1
        x = {k: (v[:, None] if k in ("Q", "K", "V", "Angles", "Z") else
                 v[..., None] if k in ("ADT", "DT", "Trap") else v) for k, v in x.items()}
    V, Q, A = x["V"], x["Q"], x["Angles"]
    b, L, h, p = V.shape
    n, r = Q.shape[3], A.shape[3]
    zeros = lambda N: (V.new_zeros(N, h, r), V.new_zeros(N, h, p, n),     # noqa: E731
                       V.new_zeros(N, h, n), V.new_zeros(N, h, p))
    cu = x.get("cu_seqlens")
    if cu is None:
        states = tuple(x[k] for k in STATES) if STATES[0] in x else zeros(b)
        out, final = sequences(x, states, broken)
    else:
        outs, finals = [], []
        for i in range(len(cu) - 1):
            lo, hi = int(cu[i]), int(cu[i + 1])
            states = tuple(x[k][i:i + 1] for k in STATES) if STATES[0] in x else zeros(1)
            if hi == lo:                                       # an empty segment: its input states
                finals.append(states)
                continue
            seg = {k: (v[:, :, lo:hi] if k in ("ADT", "DT", "Trap") else
                       v[:, lo:hi] if k in ("Q", "K", "V", "Angles", "Z") else v)
                   for k, v in x.items()}
            o, f = sequences(seg, states, broken)
            outs.append(o)
            finals.append(f)
        out = torch.cat(outs, dim=1)
        final = tuple(torch.cat([f[j] for f in finals]) for j in range(4))
    if attrs.get("step"):
        out = out[:, 0]
    return dict(zip(OUTPUTS, (out,) + tuple(final)))


def case_vjp(x, attrs, broken):
    """The outputs and the gradients of ``Σ g·output`` w.r.t. every float input."""
    leaves = {k: x[k].clone().requires_grad_(True) for k in ARGS + STATES if k in x}
    outs = forward({**x, **leaves}, attrs, broken)
    total = sum((x[g] * outs[k]).sum() for k, g in zip(OUTPUTS, COTANGENTS))
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return dict({k: v.detach() for k, v in outs.items()},         # unused (mamba2: Trap): zero
                **{"d" + k: torch.zeros_like(leaves[k]) if g is None else g
                   for k, g in zip(leaves, grads)})


KINDS = {"mamba3_siso": forward, "mamba3_siso_step": forward, "mamba3_siso_vjp": case_vjp}


def run(vectors_dir, results_dir, device="cpu", dtype="float64", broken=None, cases=None):
    """Compute every Mamba-3 case of the vectors (other kinds skipped); ``{name: seconds}``."""
    if broken is not None and broken not in BROKEN:
        raise ValueError(f"unknown broken variant {broken!r}; known {list(BROKEN)}")
    with open(os.path.join(vectors_dir, "manifest.json")) as f:
        manifest = json.load(f)
    known = [c["name"] for c in manifest["cases"]]
    unknown = sorted(set(cases or []) - set(known))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; the vectors have {known}")
    os.makedirs(results_dir, exist_ok=True)
    times = {}
    for case in manifest["cases"]:
        fn = KINDS.get(case.get("kind"))
        if fn is None or (cases and case["name"] not in cases):
            continue
        x = to_torch(load_case(vectors_dir, case), DTYPES[dtype], torch.device(device))
        t0 = time.perf_counter()
        out = fn(x, case.get("attrs", {}), broken)
        arrays = {k: out[k].detach().cpu().numpy() for k in case["outputs"]}
        times[case["name"]] = time.perf_counter() - t0
        if "set_id" in manifest:       # the vectors these results were computed from
            arrays["_set_id"] = np.array(manifest["set_id"])
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"), arrays)
        print(f"{case['name']:32s} {times[case['name']]:8.3f} s")
    print(f"{len(times)} cases in {sum(times.values()):.2f} s ({dtype}, {device}"
          f"{', broken: ' + broken if broken else ''})")
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
    torch.set_num_threads(1)
    try:
        run(a.vectors_dir, a.results_dir, a.device, a.dtype, a.broken, a.cases)
    except (ValueError, OSError) as e:
        print(f"torch_port_mamba3: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
