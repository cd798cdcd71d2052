"""An independent PyTorch port of the ssmref specification, checked with the cross-check kit.

This file is the kit's client: it reimplements, in plain torch and from the documents only
(docs/ssm.md, docs/policy.md, docs/maml.md, docs/optim.md, docs/adaptation.md), every case kind
of the cross-check vectors: the SSM scan, step, kernel and gradients, discretization, the SSM
policy, MAML / Meta-SGD and the test-time adapter.  It never imports ssmref: it reads the
vectors with numpy and json, computes the outputs in torch and writes them back.

The three steps (float64 must pass the float64 table, float32 the float32 table)::

    python -m ssmref vectors /tmp/vec                                # 1. reference vectors
    python examples/torch_port.py /tmp/vec /tmp/res --dtype float64  # 2. this port's results
    python -m ssmref check /tmp/vec /tmp/res --dtype float64         # 3. compare: exit 0 = agree

    python -m ssmref vectors /tmp/vec32 --dtype float32              # inputs rounded to float32
    python examples/torch_port.py /tmp/vec32 /tmp/res32 --dtype float32 [--device cuda]
    python -m ssmref check /tmp/vec32 /tmp/res32                     # the float32 table

(``python -m ssmref.crosscheck vectors|check`` is the same command line.)

``--broken NAME ...`` flips conventions (:data:`BROKEN`): ``old-state`` (the SSM output reads the
OLD state, ``y_t = C h_{t-1} + D u_t``) in the scan, step, gradient and policy cases;
``fo-detached-lr`` (first-order MAML without the rate gradient); ``eata-grad-weights`` (eata's
weights differentiated); ``adam-counts-refused`` (Adam's step count advances on a refused or
skipped adapter step).  The check must then fail exactly the cases each one touches.
``--cases NAME ...`` runs only the named cases.

Shapes in comments: b batch, T time, n state, m input, p output, N episodes, M tasks, S steps.
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

DTYPES = {"float64": torch.float64, "float32": torch.float32}
CHUNKED_FROM = 256          # ssm_scan uses the chunked form above this length


# ---------------------------------------------------------------------------------------------
# Reading vectors, writing results
# ---------------------------------------------------------------------------------------------

def load_case(vectors_dir, case):
    """The case's inputs as numpy arrays (its expected outputs are not read)."""
    with np.load(os.path.join(vectors_dir, case["file"]), allow_pickle=False) as z:
        return {k: z[k] for k in case["inputs"]}


def to_torch(arrays, dtype, device):
    """Float arrays -> ``dtype``, integer arrays (actions, labels) -> int64, on ``device``."""
    out = {}
    for k, a in arrays.items():
        t = torch.from_numpy(np.array(a, order="C"))    # not ascontiguousarray: it makes 0-d 1-d
        out[k] = t.to(device, dtype if a.dtype.kind == "f" else torch.int64)
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


def sub(flat, prefix):
    """``{"params.pi.layer0.W": x} -> {"pi.layer0.W": x}`` for ``prefix="params."``."""
    return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# The linear SSM:  h_t = A h_{t-1} + B u_t,  y_t = C h_t + D u_t  (the NEW state)
# ---------------------------------------------------------------------------------------------

def ssm_states(A, B, u, h0):
    """States ``H: (b, T, n)`` of the recurrence from ``h0: (b, n)``; ``u: (b, T, m)``."""
    Bu = u @ B.T                                   # (b, T, n), every input term at once
    h, hs = h0, []
    for t in range(u.shape[1]):                    # sequential: one addmm per step
        h = torch.addmm(Bu[:, t], h, A.T)          # (b, n)
        hs.append(h)
    return torch.stack(hs, dim=1)


def ssm_states_chunked(A, B, u, h0, L):
    """The same states in ``~2 sqrt(T)`` sequential steps instead of ``T``: chunks of length ``L``.

    Within chunk ``k`` (start ``s = kL``), ``h_{s+j} = local_{k,j} + A^{j+1} h_{s-1}``, where
    ``local`` is the recurrence from a zero state, run for every chunk at once; the carries
    ``h_{s-1}`` then follow chunk by chunk.
    """
    b, T, n = u.shape[0], u.shape[1], A.shape[0]
    nc = -(-T // L)                                                  # number of chunks
    Bu = F.pad(u @ B.T, (0, 0, 0, nc * L - T))                       # (b, nc*L, n), zeros after T
    V = Bu.reshape(b, nc, L, n)
    h, local = torch.zeros_like(V[:, :, 0]), []
    for j in range(L):                                               # all chunks in parallel
        h = h @ A.T + V[:, :, j]                                     # (b, nc, n)
        local.append(h)
    local = torch.stack(local, dim=2)                                # (b, nc, L, n)
    P = [A]
    for _ in range(L - 1):
        P.append(A @ P[-1])
    P = torch.stack(P)                                               # (L, n, n): A^{j+1}
    starts, c = [], h0
    for k in range(nc):                                              # carry from chunk to chunk
        starts.append(c)
        c = local[:, k, -1] + c @ P[-1].T
    starts = torch.stack(starts, dim=1)                              # (b, nc, n): h_{s-1}
    H = local + torch.einsum("bkm,jnm->bkjn", starts, P)             # (b, nc, L, n)
    return H.reshape(b, nc * L, n)[:, :T]


def ssm_readout(C, D, H, u, h0, old_state=False):
    """``y = C h_t + D u_t: (b, T, p)``; ``old_state`` (the broken port) reads ``h_{t-1}``."""
    if old_state:
        H = torch.cat([h0[:, None], H[:, :-1]], dim=1)   # (b, T, n): h_{t-1}
    return H @ C.T + u @ D.T


def ssm_scan(A, B, C, D, u, h0, old_state=False):
    """``(y: (b, T, p), h_last: (b, n))``; chunked for ``T > CHUNKED_FROM``."""
    T = u.shape[1]
    if T > CHUNKED_FROM:
        H = ssm_states_chunked(A, B, u, h0, L=math.isqrt(T - 1) + 1)
    else:
        H = ssm_states(A, B, u, h0)
    return ssm_readout(C, D, H, u, h0, old_state), H[:, -1]


def ssm_kernel(A, B, C, length):
    """``K: (L, p, m)``, ``K[k] = C A^k B``."""
    X, ks = B, []                                  # X = A^k B: (n, m)
    for _ in range(length):
        ks.append(C @ X)
        X = A @ X
    return torch.stack(ks)


def discretize(A, B, dt, method):
    """``(Ad, Bd)``: ZOH by one exponential of ``dt [[A, B], [0, 0]]``, or bilinear (S4)."""
    n, m = B.shape
    if method == "zoh":
        top = torch.cat([A, B], dim=1)                                    # (n, n+m)
        M = torch.cat([top, torch.zeros(m, n + m, dtype=A.dtype, device=A.device)])
        E = torch.linalg.matrix_exp(dt * M)                               # [[Ad, Bd], [0, I]]
        return E[:n, :n], E[:n, n:]
    if method == "bilinear":
        eye = torch.eye(n, dtype=A.dtype, device=A.device)
        lhs = eye - dt / 2 * A
        return torch.linalg.solve(lhs, eye + dt / 2 * A), torch.linalg.solve(lhs, dt * B)
    raise ValueError(f"unknown discretization method {method!r}")


# ---------------------------------------------------------------------------------------------
# Case kinds: the SSM
# ---------------------------------------------------------------------------------------------

def case_ssm_scan(x, attrs, broken):
    y, h_last = ssm_scan(x["A"], x["B"], x["C"], x["D"], x["u"], x["h0"], "old-state" in broken)
    return {"y": y, "h_last": h_last}


def case_ssm_step(x, attrs, broken):
    h, u = x["h"], x["u"]                                  # (b, n), (b, m)
    h_next = h @ x["A"].T + u @ x["B"].T
    read = h if "old-state" in broken else h_next
    return {"h_next": h_next, "y": read @ x["C"].T + u @ x["D"].T}


def case_ssm_kernel(x, attrs, broken):
    return {"K": ssm_kernel(x["A"], x["B"], x["C"], int(attrs["length"]))}


def case_ssm_scan_vjp(x, attrs, broken):
    names = ["A", "B", "C", "D", "u", "h0"]
    args = [x[k].clone().requires_grad_(True) for k in names]
    y, h_last = ssm_scan(*args, old_state="old-state" in broken)
    total = torch.sum(x["gy"] * y) + torch.sum(x["gh"] * h_last)
    grads = torch.autograd.grad(total, args)
    out = {"d" + k: g for k, g in zip(names, grads)}
    return dict(out, y=y, h_last=h_last)


def case_discretize(x, attrs, broken):
    Ad, Bd = discretize(x["A"], x["B"], x["dt"], attrs["method"])
    return {"Ad": Ad, "Bd": Bd}


# ---------------------------------------------------------------------------------------------
# The SSM policy (docs/policy.md)
# ---------------------------------------------------------------------------------------------

def mlp(params, prefix, x):
    """``tanh`` MLP, layers ``{prefix}layer{i}.W: (out, in)``, ``y = x W^T + b``, linear output."""
    n = sum(1 for k in params if k.startswith(prefix) and k.endswith(".W"))
    for i in range(n):
        x = x @ params[f"{prefix}layer{i}.W"].T + params[f"{prefix}layer{i}.b"]
        if i < n - 1:
            x = torch.tanh(x)
    return x


def policy_inputs(spec, obs, actions, rewards):
    """``x_t = [o_t, e(a_{t-1}), r_{t-1}]: (N, T, in_dim)``, zeros at ``t = 0``."""
    if not spec["use_prev_action_reward"]:
        return obs
    if spec["discrete"]:
        e = F.one_hot(actions, spec["action_dim"]).to(obs.dtype)    # (N, T, K)
    else:
        e = actions                                                  # (N, T, d), unclipped
    ar = torch.cat([e, rewards[..., None]], dim=-1)                  # (N, T, K+1)
    shifted = torch.cat([torch.zeros_like(ar[:, :1]), ar[:, :-1]], dim=1)
    return torch.cat([obs, shifted], dim=-1)


def policy_forward(params, spec, obs, actions, rewards, old_state=False):
    """The heads on ``z_t = [y_t, o_t]``: ``logits`` or ``mean``, ``value``, ``log_prob``."""
    u = policy_inputs(spec, obs, actions, rewards)                   # (N, T, in_dim)
    h0 = torch.zeros(u.shape[0], params["ssm.A"].shape[0], dtype=u.dtype, device=u.device)
    y, _ = ssm_scan(params["ssm.A"], params["ssm.B"], params["ssm.C"], params["ssm.D"],
                    u, h0, old_state)                                # (N, T, p), from h = 0
    z = torch.cat([y, obs], dim=-1)                                  # (N, T, p + obs_dim)
    head = mlp(params, "pi.", z)                                     # (N, T, K) or (N, T, d)
    out = {"value": mlp(params, "v.", z)[..., 0]}                    # (N, T)
    if spec["discrete"]:
        logp = torch.log_softmax(head, dim=-1)
        out["logits"] = head
        out["log_prob"] = logp.gather(-1, actions[..., None])[..., 0]
    else:
        log_std = params["log_std"]                                  # (d,), state independent
        a = (actions - head) / torch.exp(log_std)
        per_dim = -0.5 * a ** 2 - log_std - 0.5 * np.log(2 * np.pi)
        out["mean"] = head
        out["log_prob"] = per_dim.sum(-1)                            # summed over action dims
    return out


def case_policy(x, attrs, broken):
    spec = attrs["spec"]
    params = {k: v.clone().requires_grad_(True) for k, v in sub(x, "params.").items()}
    out = policy_forward(params, spec, x["obs"], x["actions"], x["rewards"],
                         "old-state" in broken)
    names = sorted(params)
    grads = torch.autograd.grad(out["log_prob"].sum(), [params[k] for k in names],
                                materialize_grads=True)      # the value head's are zeros
    out.update({"grad." + k: g for k, g in zip(names, grads)})
    return out


# ---------------------------------------------------------------------------------------------
# MAML and Meta-SGD (docs/maml.md), with torch.func
# ---------------------------------------------------------------------------------------------

def mse(params, x, y):
    """Mean squared error of the tanh MLP regressor; ``x, y: (K, 1)``."""
    return torch.mean((mlp(params, "", x) - y) ** 2)


def inner_adapt(params, lr, x, y, steps, first_order, detach_update=False):
    """``θ_{k+1} = θ_k − α ⊙ ∇L_s(θ_k)``; ``lr``: a dict like ``params`` (Meta-SGD) or 0-d.
    ``detach_update`` (the broken port ``fo-detached-lr``): first order detaches ``α ⊙ g``, not
    only ``g``, so no gradient reaches ``α``."""
    for _ in range(steps):
        g = grad(mse)(params, x, y)
        if first_order:                                  # FOMAML: inner gradients are constants
            g = {k: v.detach() for k, v in g.items()}
        step = {k: (lr[k] if isinstance(lr, dict) else lr) * g[k] for k in params}
        if first_order and detach_update:
            step = {k: v.detach() for k, v in step.items()}
        params = {k: params[k] - step[k] for k in params}
    return params


def meta_loss(params, lr, data, steps, first_order, detach_update=False):
    """Mean over the M tasks of the query loss after adapting on the support set."""
    def one_task(sx, sy, qx, qy):
        return mse(inner_adapt(params, lr, sx, sy, steps, first_order, detach_update), qx, qy)
    return vmap(one_task)(*data).mean()                  # vmap over the task axis


def case_maml(x, attrs, broken):
    """Every output group a ``maml`` case may list (``run`` keeps the ones its manifest names):
    fast weights, meta-loss, second- and first-order gradients w.r.t. ``θ`` and ``α``."""
    steps = int(attrs["steps"])
    params = sub(x, "params.")
    lr = x["inner_lr"] if "inner_lr" in x else sub(x, "lr.")    # 0-d, or a dict (Meta-SGD)
    data = (x["support_x"], x["support_y"], x["query_x"], x["query_y"])   # (M, K|Q, 1) each
    fast = vmap(inner_adapt, in_dims=(None, None, 0, 0, None, None))(
        params, lr, data[0], data[1], steps, False)      # leaves (M, ...)
    out = {"fast." + k: v for k, v in fast.items()}
    for first_order, suffix in ((False, ""), (True, "_fo")):
        (g_theta, g_lr), loss = torch.func.grad_and_value(meta_loss, argnums=(0, 1))(
            params, lr, data, steps, first_order, "fo-detached-lr" in broken)
        if not first_order:
            out["meta_loss"] = loss
        out.update({f"meta_grad{suffix}.{k}": v for k, v in g_theta.items()})
        if isinstance(lr, dict):                         # shaped like the rates (broadcast summed)
            out.update({f"meta_grad{suffix}_lr.{k}": v for k, v in g_lr.items()})
        else:
            out[f"meta_grad{suffix}_lr"] = g_lr          # a scalar rate: a 0-d gradient
    return out


# ---------------------------------------------------------------------------------------------
# The test-time adapter (CONTRACT.md "ssmref.adaptation" steps 1-8)
# ---------------------------------------------------------------------------------------------

def logits_of(params, x):
    """The linear classifier: ``x W^T + b: (B, K)``, ``W: (K, d)`` as torch.nn.Linear."""
    return x @ params["W"].T + params["b"]


def row_entropy(logits):
    """``H_n = −Σ_c q_nc log q_nc``, ``q_n = softmax(logits_n)``: ``(B,)``."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def eata_selection(logits, margin):
    """EATA's reliable rows and weights, as constants: ``S = {n : H_n < E0}``,
    ``w_n = exp(E0 − H_n)``, ``E0 = margin · ln C``."""
    H = row_entropy(logits.detach())
    E0 = margin * math.log(logits.shape[-1])
    mask = H < E0
    return mask, torch.where(mask, torch.exp(E0 - H), torch.zeros_like(H))


def adapter_objective(params, x, labels, strategy, cfg, selection=None, attached=False):
    """Cross-entropy (mean over the batch) plus the strategy's entropy term: tent
    ``entropy_weight · mean_b H_b``; eata ``entropy_weight · (1/|S|) Σ_{n∈S} w_n H_n``.
    ``attached`` (the broken port ``eata-grad-weights``): eata's ``w_n`` are differentiated."""
    logits = logits_of(params, x)
    loss = F.cross_entropy(logits, labels)
    if strategy == "tent":
        loss = loss + cfg["entropy_weight"] * row_entropy(logits).mean()
    elif strategy == "eata":
        mask, w = selection
        H = row_entropy(logits)
        if attached:
            w = torch.exp(cfg["eata_margin"] * math.log(logits.shape[-1]) - H)
        loss = loss + cfg["entropy_weight"] * (w * H)[mask].sum() / mask.sum()
    elif strategy != "none":
        raise ValueError(f"adapter strategy {strategy!r} not ported")
    return loss


def trainable(names, allow, deny):
    """Names matched (``re.search``) by ``allow`` (all if None) and by no ``deny`` pattern."""
    as_list = lambda p: [] if p is None else [p] if isinstance(p, str) else list(p)
    ok = lambda n: ((allow is None or any(re.search(a, n) for a in as_list(allow)))
                    and not any(re.search(d, n) for d in as_list(deny)))
    return [n for n in names if ok(n)]


def adam_step(g, adam, theta, cfg):
    """The torch.optim.Adam step ``Δ`` (not applied; ``weight_decay`` as L2); updates ``adam``."""
    adam["step"] += 1
    t, b1, b2 = adam["step"], cfg["b1"], cfg["b2"]
    delta = {}
    for k in g:
        gk = g[k] + cfg["weight_decay"] * theta[k]
        adam["m"][k] = b1 * adam["m"][k] + (1 - b1) * gk
        adam["v"][k] = b2 * adam["v"][k] + (1 - b2) * gk * gk
        denom = adam["v"][k].sqrt() / math.sqrt(1 - b2 ** t) + cfg["adam_eps"]   # eps outside
        delta[k] = -(cfg["lr"] / (1 - b1 ** t)) * adam["m"][k] / denom
    return delta


def fro(t):
    """The Frobenius norm of one tensor, as a float."""
    return float(torch.linalg.vector_norm(t))


def adapter_update(theta, g, adam, anchor, cfg):
    """Steps 3-8 for finite gradients ``g``: the new ``(theta, anchor)``; ``adam`` is updated."""
    if cfg["grad_clip_norm"] > 0:                    # 3. clip by global norm (clip_grad_norm_)
        total = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
        coef = torch.clamp(cfg["grad_clip_norm"] / (total + 1e-6), max=1.0)
        g = {k: v * coef for k, v in g.items()}
    delta = adam_step(g, adam, theta, cfg)           # 4. the Adam step
    s = cfg["max_step_scale"]
    if s > 0:                                        # 5. ||Δ_p|| <= s max(||θ_p||, 1)
        for k in delta:
            limit = s * max(fro(theta[k]), 1.0)
            if fro(delta[k]) > limit:
                delta[k] = delta[k] * (limit / fro(delta[k]))
    theta = {k: theta[k] + delta.get(k, 0.0) for k in theta}     # 6. apply
    eps, d = cfg["trust_region_eps"], cfg["ema_decay"]
    if eps > 0 and d > 0:                            # 7. ||θ_p − a_p|| <= ε, radially
        for k in anchor:
            r = fro(theta[k] - anchor[k])
            if r > eps:
                theta[k] = anchor[k] + (theta[k] - anchor[k]) * (eps / r)
    if d > 0:                                        # 8. a ← d a + (1 − d) θ
        anchor = {k: d * anchor[k] + (1 - d) * theta[k] for k in anchor}
    return theta, anchor


def case_adapter(x, attrs, broken):
    cfg, strategy = attrs["config"], attrs["strategy"]
    theta = sub(x, "params.")                                        # W (K, d), b (K,)
    names = trainable(sorted(theta), cfg.get("allow_layers"), cfg.get("deny_layers"))
    adam = {"step": 0, "m": {k: torch.zeros_like(theta[k]) for k in names},
            "v": {k: torch.zeros_like(theta[k]) for k in names}}
    anchor = {k: theta[k].clone() for k in names}                    # θ before the first step
    traj, steps = [theta], []
    for xs, labels in zip(x["x"], x["labels"]):                      # one adapt call per batch
        done = 0
        for _ in range(cfg["max_steps_per_call"]):                   # stop at a refused/skipped step
            selection = None
            if strategy == "eata":
                selection = eata_selection(logits_of(theta, xs), cfg["eata_margin"])
                if not selection[0].any():
                    if "adam-counts-refused" in broken:
                        adam["step"] += 1
                    break                                            # SkipStep: nothing changes

            def objective(p):                                        # 1. only p is differentiated
                return adapter_objective({**theta, **p}, xs, labels, strategy, cfg, selection,
                                         "eata-grad-weights" in broken)
            g, loss = torch.func.grad_and_value(objective)({k: theta[k] for k in names})
            if not (torch.isfinite(loss) and all(torch.isfinite(v).all() for v in g.values())):
                if "adam-counts-refused" in broken:
                    adam["step"] += 1
                break                                                # 2. the guard: no change
            theta, anchor = adapter_update(theta, g, adam, anchor, cfg)
            done += 1
        traj.append(theta)
        steps.append(done)
    out = {"traj." + k: torch.stack([p[k] for p in traj]) for k in theta}   # (S+1, ...) per call
    steps = torch.tensor(steps, dtype=x["x"].dtype)
    return dict(out, steps=steps, updated=(steps > 0).to(steps.dtype))


KINDS = {"ssm_scan": case_ssm_scan, "ssm_step": case_ssm_step, "ssm_kernel": case_ssm_kernel,
         "ssm_scan_vjp": case_ssm_scan_vjp, "discretize": case_discretize,
         "policy": case_policy, "maml": case_maml, "adapter": case_adapter}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

#: ``--broken NAME``: one convention flipped, and the cases whose check must then fail.
BROKEN = {
    "old-state": "the SSM output reads the old state, y_t = C h_{t-1} + D u_t "
                 "(ssm_scan*, ssm_step, ssm_scan_vjp*, policy_*)",
    "fo-detached-lr": "first-order MAML detaches the whole inner update alpha * g, so no gradient "
                      "reaches alpha (the cases with meta_grad_fo_lr)",
    "eata-grad-weights": "eata's weights exp(E0 - H_n) are differentiated, not constants "
                         "(adapter_eata)",
    "adam-counts-refused": "a refused or skipped adapter step still advances Adam's step count "
                           "(adapter_guard, adapter_eata)",
}


def run(vectors_dir, results_dir, device="cpu", dtype="float64", broken=(), cases=None):
    """Compute every supported case; returns ``{name: seconds}``.  ``broken``: names of
    :data:`BROKEN` (a string is one name)."""
    broken = frozenset([broken] if isinstance(broken, str) else broken or ())
    unknown_broken = sorted(broken - set(BROKEN))
    if unknown_broken:
        raise ValueError(f"unknown --broken {unknown_broken}; known: {sorted(BROKEN)}")
    with open(os.path.join(vectors_dir, "manifest.json")) as f:
        manifest = json.load(f)
    known = [c["name"] for c in manifest["cases"]]
    unknown = sorted(set(cases or []) - set(known))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; the vectors have {known}")
    os.makedirs(results_dir, exist_ok=True)
    times = {}
    for case in manifest["cases"]:
        if cases and case["name"] not in cases:
            continue
        fn = KINDS.get(case.get("kind"))
        if fn is None:
            print(f"skip {case['name']}: kind {case.get('kind')!r} not ported")
            continue
        x = to_torch(load_case(vectors_dir, case), DTYPES[dtype], torch.device(device))
        t0 = time.perf_counter()
        out = fn(x, case.get("attrs", {}), broken)
        arrays = {k: out[k].detach().cpu().numpy() for k in case["outputs"]}   # waits for cuda
        times[case["name"]] = time.perf_counter() - t0
        if "set_id" in manifest:       # the vectors these results were computed from
            arrays["_set_id"] = np.array(manifest["set_id"])
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"), arrays)
        print(f"{case['name']:24s} {times[case['name']]:8.3f} s")
    print(f"{len(times)} cases in {sum(times.values()):.2f} s ({dtype}, {device}"
          f"{', broken: ' + ' '.join(sorted(broken)) if broken else ''})")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors_dir")
    ap.add_argument("results_dir")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    ap.add_argument("--broken", nargs="+", choices=sorted(BROKEN), default=(), metavar="NAME",
                    help="flip conventions: " + "; ".join(f"{k}: {v}" for k, v in BROKEN.items()))
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(1)     # small tensors: faster on a busy machine, fixed reduction order
    try:
        run(a.vectors_dir, a.results_dir, a.device, a.dtype, a.broken, a.cases)
    except (ValueError, OSError) as e:                  # unusable vectors: one line, exit 2
        print(f"torch_port: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
