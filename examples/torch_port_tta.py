"""An independent PyTorch port of ssmref's test-time adaptation methods, checked with the kit.

The sibling of examples/torch_port.py (which ports the ``adapter`` kind: none, tent, eata) for the
``adapter_method`` kind: SHOT-IM, SAR, CoTTA, TTT, TTT++ and T3A, written from
docs/adaptation.md ("One step, in order" and "More methods") and docs/crosscheck.md only; it
never imports ssmref.  It reads the vectors with numpy and json, runs each case's adaptation in
torch (gradients by torch's autograd) and writes the trajectories back::

    python -m ssmref vectors /tmp/vec
    python examples/torch_port_tta.py /tmp/vec /tmp/res --dtype float64
    python -m ssmref check /tmp/vec /tmp/res --cases adapter_shot adapter_sar adapter_cotta \\
        adapter_ttt adapter_tttpp adapter_t3a                      # exit 0: the port agrees

The network: ``z = tanh(x W1ᵀ + b1)``, ``logits = z Wᵀ + b``, ``ssl_logits = z Vᵀ + c``.

``--broken NAME`` injects one bug; the check must then fail exactly the case it touches:

    t3a-no-filter        T3A keeps every support (no entropy filter)            (adapter_t3a)
    sar-no-mask          SAR minimises the entropy of every row, reliable or not (adapter_sar)
    cotta-teacher-first  CoTTA's teacher follows the student *before* its step  (adapter_cotta)
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

DTYPES = {"float64": torch.float64, "float32": torch.float32}
LEAVES = ["enc.W1", "enc.b1", "head.W", "head.b", "ssl.W", "ssl.b"]   # tree order

BROKEN = {
    "t3a-no-filter": "T3A keeps every support, no entropy filter (adapter_t3a)",
    "sar-no-mask": "SAR uses every row, reliable or not (adapter_sar)",
    "cotta-teacher-first": "CoTTA's teacher is updated before the student's step (adapter_cotta)",
}


def load_case(vectors_dir, case):
    with np.load(os.path.join(vectors_dir, case["file"]), allow_pickle=False) as z:
        return {k: z[k] for k in case["inputs"]}


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


def net(p, x):
    z = torch.tanh(x @ p["enc.W1"].T + p["enc.b1"])
    return z @ p["head.W"].T + p["head.b"], z @ p["ssl.W"].T + p["ssl.b"], z


def entropy(logits):
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def covariance(f):
    n = f.shape[0]
    s = f.sum(0, keepdim=True)
    return (f.T @ f - s.T @ s / n) / (n - 1)


# ---------------------------------------------------------------------------------------------
# Steps 3-8 (docs/adaptation.md "One step, in order")
# ---------------------------------------------------------------------------------------------

def steps_3_to_8(theta, g, adam, anchor, cfg):
    fro = lambda t: float(torch.linalg.vector_norm(t))
    if cfg["grad_clip_norm"] > 0:
        total = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
        g = {k: v * min(1.0, cfg["grad_clip_norm"] / (total + 1e-6)) for k, v in g.items()}
    adam["step"] += 1
    t, b1, b2 = adam["step"], cfg["b1"], cfg["b2"]
    new = dict(theta)
    for k in g:
        gk = g[k] + cfg["weight_decay"] * theta[k]
        adam["m"][k] = b1 * adam["m"][k] + (1 - b1) * gk
        adam["v"][k] = b2 * adam["v"][k] + (1 - b2) * gk * gk
        delta = -(cfg["lr"] / (1 - b1 ** t)) * adam["m"][k] / (
            adam["v"][k].sqrt() / math.sqrt(1 - b2 ** t) + cfg["adam_eps"])
        s = cfg["max_step_scale"]
        if s > 0 and fro(delta) > s * max(fro(theta[k]), 1.0):
            delta = delta * (s * max(fro(theta[k]), 1.0) / fro(delta))
        new[k] = theta[k] + delta
        eps, d = cfg["trust_region_eps"], cfg["ema_decay"]
        if eps > 0 and d > 0 and fro(new[k] - anchor[k]) > eps:
            new[k] = anchor[k] + (new[k] - anchor[k]) * (eps / fro(new[k] - anchor[k]))
        if d > 0:
            anchor[k] = d * anchor[k] + (1 - d) * new[k]
    return new


# ---------------------------------------------------------------------------------------------
# The methods' objectives (docs/adaptation.md "More methods"); λ = entropy_weight
# ---------------------------------------------------------------------------------------------

def grad_at(theta, names, objective):
    p = {k: v.detach().clone().requires_grad_(k in names) for k, v in theta.items()}
    loss = objective(p)
    grads = torch.autograd.grad(loss, [p[k] for k in names])
    return float(loss.detach()), dict(zip(names, grads))


def case_adapter_method(x, attrs, broken):
    cfg, kw, strategy = attrs["config"], attrs["strategy_kwargs"], attrs["strategy"]
    dtype = x["x"].dtype
    theta = {k: x["params." + k] for k in LEAVES}
    source = {k: v.clone() for k, v in theta.items()}
    as_list = lambda p: [] if p is None else [p] if isinstance(p, str) else list(p)
    names = [n for n in LEAVES
             if (cfg["allow_layers"] is None or any(re.search(a, n) for a in as_list(cfg["allow_layers"])))
             and not any(re.search(d, n) for d in as_list(cfg["deny_layers"]))]
    fresh_adam = lambda: {"step": 0, "m": {k: torch.zeros_like(theta[k]) for k in names},
                          "v": {k: torch.zeros_like(theta[k]) for k in names}}
    adam, anchor = fresh_adam(), None
    lam = cfg["entropy_weight"]
    rng = np.random.default_rng(kw.get("seed", 0))
    teacher = {k: v.clone() for k, v in theta.items()}
    sar_ema, queue = None, None
    t3a = None
    if strategy == "t3a":
        W0, b0 = theta["head.W"], theta["head.b"]
        warm = W0 @ W0.T + b0
        t3a = [W0.clone(), warm.argmax(1), entropy(warm)]
    traj, steps = [theta], []
    for xs, ssl_y in zip(x["x"], x["ssl_labels"]):
        if strategy == "t3a":                                  # no gradient: the supports
            _, _, z = net(source, xs)
            p = z @ source["head.W"].T + source["head.b"]
            S = torch.cat([t3a[0], z])
            y = torch.cat([t3a[1], p.argmax(1)])
            h = torch.cat([t3a[2], entropy(p)])
            M = None if "t3a-no-filter" in broken else kw.get("filter_k", 100)
            keep = torch.cat([torch.nonzero(y == c).flatten()[torch.sort(h[y == c], stable=True)[1]][:M]
                              for c in range(W0.shape[0])])
            t3a = [S[keep], y[keep], h[keep]]
            w = F.normalize(F.normalize(t3a[0], dim=1).T @ F.one_hot(t3a[1], W0.shape[0]).to(dtype),
                            dim=0)
            theta = dict(theta, **{"head.W": w.T.contiguous(), "head.b": torch.zeros_like(b0)})
            traj.append(theta)
            steps.append(1)
            continue
        if anchor is None:
            anchor = {k: theta[k].clone() for k in names}
        if strategy == "shot":
            def objective(p):
                logits = net(p, xs)[0]
                q = logits.softmax(1).mean(0)
                return lam * (entropy(logits).mean() + kw.get("diversity_weight", 1.0) * (q * q.log()).sum())
            _, g = grad_at(theta, names, objective)
        elif strategy in ("ttt", "ttt++"):
            full = queue is not None and queue.shape[0] >= kw.get("queue_size", 0) > 0

            def objective(p):
                _, ssl, z = net(p, xs)
                loss = kw.get("ssl_weight", 1.0) * F.cross_entropy(ssl, ssl_y)
                if strategy == "ttt++":
                    f = torch.cat([z, queue]) if full else z
                    src = x["source_features"]
                    d = f.shape[1]
                    loss = loss + kw.get("mean_weight", 0.1) * ((f.mean(0) - src.mean(0)) ** 2).mean()
                    loss = loss + kw.get("cov_weight", 1.0) * ((covariance(f) - covariance(src)) ** 2).sum() / (4 * d * d)
                return loss
            _, g = grad_at(theta, names, objective)
        elif strategy == "sar":
            E0 = kw.get("margin", 0.4) * math.log(theta["head.W"].shape[0])
            mask = lambda H: torch.ones_like(H, dtype=torch.bool) if "sar-no-mask" in broken else H < E0
            m1 = mask(entropy(net(theta, xs)[0]))
            _, g1 = grad_at(theta, names, lambda p: lam * entropy(net(p, xs)[0])[m1].mean())
            norm = math.sqrt(sum(float((v ** 2).sum()) for v in g1.values()))
            pert = dict(theta, **{k: theta[k] + kw.get("rho", 0.05) / (norm + 1e-12) * g1[k] for k in names})
            m2 = m1 & mask(entropy(net(pert, xs)[0]))
            second = float(entropy(net(pert, xs)[0])[m2].mean())
            sar_ema = second if sar_ema is None else 0.9 * sar_ema + 0.1 * second
            _, g = grad_at(pert, names, lambda p: lam * entropy(net(p, xs)[0])[m2].mean())
        elif strategy == "cotta":
            if "cotta-teacher-first" in broken:
                a = kw.get("teacher_decay", 0.999)
                teacher = {k: a * teacher[k] + (1 - a) * theta[k] if k in names else teacher[k]
                           for k in teacher}
            conf = net(source, xs)[0].softmax(1).max(1)[0].mean()
            if conf < kw.get("confidence_threshold", 0.92):
                x_np = xs.cpu().double().numpy()
                outs = [net(teacher, torch.tensor(x_np + kw.get("augment_std", 0.05) * rng.standard_normal(x_np.shape), dtype=dtype))[0]
                        for _ in range(kw.get("n_augment", 32))]
                target = torch.stack(outs).mean(0)
            else:
                target = net(teacher, xs)[0]
            p_t = target.softmax(1).detach()
            _, g = grad_at(theta, names, lambda p: lam * (-(p_t * net(p, xs)[0].log_softmax(1)).sum(1)).mean())
        else:
            raise ValueError(f"strategy {strategy!r} not ported")
        _, _, z_now = net(theta, xs)
        theta = steps_3_to_8(theta, g, adam, anchor, cfg)
        if strategy == "sar" and sar_ema < kw.get("reset_constant", 0.2):
            theta, adam, anchor = dict(source), fresh_adam(), None     # model recovery
        if strategy == "cotta":
            a = kw.get("teacher_decay", 0.999)
            if "cotta-teacher-first" not in broken:
                teacher = {k: a * teacher[k] + (1 - a) * theta[k] if k in names else teacher[k]
                           for k in teacher}
            for k in names:                                           # stochastic restore
                keep_src = torch.tensor(rng.random(tuple(theta[k].shape)) < kw.get("restore_prob", 0.01))
                theta[k] = torch.where(keep_src, source[k], theta[k])
        if strategy == "ttt++" and kw.get("queue_size", 0) > 0:
            rows = z_now.detach() if queue is None else torch.cat([z_now.detach(), queue])
            queue = rows[:kw["queue_size"]]
        traj.append(theta)
        steps.append(1)
    out = {"traj." + k: torch.stack([t[k] for t in traj]) for k in LEAVES}
    steps = torch.tensor(steps, dtype=dtype)
    return dict(out, steps=steps, updated=(steps > 0).to(dtype))


def run(vectors_dir, results_dir, device="cpu", dtype="float64", broken=(), cases=None):
    broken = frozenset([broken] if isinstance(broken, str) else broken or ())
    if broken - set(BROKEN):
        raise ValueError(f"unknown --broken {sorted(broken - set(BROKEN))}; known: {sorted(BROKEN)}")
    with open(os.path.join(vectors_dir, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(results_dir, exist_ok=True)
    times = {}
    for case in manifest["cases"]:
        if case.get("kind") != "adapter_method" or (cases and case["name"] not in cases):
            continue
        raw = load_case(vectors_dir, case)
        x = {k: torch.from_numpy(np.array(a)).to(device, DTYPES[dtype] if a.dtype.kind == "f"
                                                 else torch.int64) for k, a in raw.items()}
        t0 = time.perf_counter()
        out = case_adapter_method(x, case["attrs"], broken)
        save_npz_atomic(os.path.join(results_dir, case["name"] + ".npz"),
                        {k: out[k].detach().cpu().numpy() for k in case["outputs"]})
        times[case["name"]] = time.perf_counter() - t0
        print(f"{case['name']:24s} {times[case['name']]:8.3f} s")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors_dir")
    ap.add_argument("results_dir")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    ap.add_argument("--broken", nargs="+", choices=sorted(BROKEN), default=(), metavar="NAME")
    ap.add_argument("--cases", nargs="+", metavar="NAME")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        run(a.vectors_dir, a.results_dir, a.device, a.dtype, a.broken, a.cases)
    except (ValueError, OSError) as e:
        print(f"torch_port_tta: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
