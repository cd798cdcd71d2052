"""The golden-vector cases: each draws float64 inputs from a generator seeded by its name and
computes the expected outputs with ssmref's own functions; :func:`write_vectors` writes them."""

import dataclasses
import json
import os
import types
import zlib

import autograd
import autograd.numpy as anp
import numpy as np

from ssmref import __version__
from ssmref import params as P
from ssmref import ssm as S
from ssmref.adaptation import AdaptationConfig, create_adapter
from ssmref.crosscheck.dtypes import _check_dtype, round_to_dtype
from ssmref.crosscheck.files import SPEC_VERSION, _select, _ssm, write_npz
from ssmref.maml import adapt, meta_gradient
from ssmref.nn import categorical_log_prob, mlp_apply, mlp_init
from ssmref.metarl.policy import PolicySpec, log_prob, policy_init, policy_sequence


@dataclasses.dataclass(frozen=True)
class Case:
    """One golden-vector case: ``build(rng) -> (inputs, attrs)`` draws raw float64 inputs,
    ``compute(inputs, attrs) -> outputs`` is the float64 reference (from ssmref's functions)."""
    name: str
    kind: str
    build: object
    compute: object
    doc: str = ""


def _seed(name):
    return zlib.crc32(name.encode("utf-8"))


def _params_in(inputs, prefix):
    """``{"params.ssm.A": x} -> {"ssm": {"A": x}}`` for ``prefix = "params."``."""
    return P.unflatten_dict({k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)})


def _prefixed(prefix, tree):
    return {prefix + k: np.asarray(v, dtype=np.float64) for k, v in P.flatten_dict(tree).items()}


# --- the SSM ---------------------------------------------------------------------------------

def _build_scan(batch, T, n, m, p, rho):
    def build(rng):
        params = S.init_ssm(m, n, p, rng=rng, scale=rho)    # rho(A) = rho; B, C, D fan-in scaled
        u = rng.standard_normal((batch, T, m))                # (batch, T, m)
        h0 = rng.standard_normal((batch, n))                  # (batch, n)
        return dict(params, u=u, h0=h0), {"spectral_radius": rho}
    return build


def _compute_scan(x, attrs):
    y, h_last = S.ssm_scan(_ssm(x), x["u"], x["h0"])
    return {"y": y, "h_last": h_last}


def _build_step(rng):
    params = S.init_ssm(3, 16, 2, rng=rng, scale=0.95)
    h = 2.0 * rng.standard_normal((4, 16))                        # a state of realistic size
    u = rng.standard_normal((4, 3))
    return dict(params, h=h, u=u), {"spectral_radius": 0.95}


def _compute_step(x, attrs):
    y, h_next = S.ssm_step(_ssm(x), x["h"], x["u"])
    return {"h_next": h_next, "y": y}


def _build_kernel(rng):
    params = S.init_ssm(2, 16, 3, rng=rng, scale=0.99)
    return {k: params[k] for k in ("A", "B", "C")}, {"length": 1000, "spectral_radius": 0.99}


def _compute_kernel(x, attrs):
    p, m = x["C"].shape[0], x["B"].shape[1]
    return {"K": S.ssm_kernel(dict(x, D=np.zeros((p, m))), int(attrs["length"]))}


def _build_vjp(batch, T, n, m, p, rho):
    def build(rng):
        inputs, attrs = _build_scan(batch, T, n, m, p, rho)(rng)
        inputs["gy"] = rng.standard_normal((batch, T, p))        # cotangent of y
        inputs["gh"] = rng.standard_normal((batch, n))           # cotangent of h_last
        return inputs, attrs
    return build


def _compute_vjp(x, attrs):
    # The FFT form's gradients equal the recurrence's to ~1e-15 relative (docs/ssm.md) and are
    # much faster under autograd for long sequences.
    run = S.ssm_scan if x["u"].shape[1] <= 256 else S.ssm_convolve

    def total(args):
        y, h_last = run({k: args[k] for k in S.PARAM_NAMES}, args["u"], args["h0"])
        return anp.sum(x["gy"] * y) + anp.sum(x["gh"] * h_last)

    g = autograd.grad(total)({k: x[k] for k in (*S.PARAM_NAMES, "u", "h0")})
    out = _compute_scan(x, attrs)
    out.update({"d" + k: g[k] for k in (*S.PARAM_NAMES, "u", "h0")})
    return out


def _build_discretize(method):
    def build(rng):
        if method == "zoh":      # a random, non-normal Hurwitz matrix (eigenvalues Re < -0.5)
            n, m = 6, 2
            G = rng.standard_normal((n, n)) / np.sqrt(n)
            A = G - (np.max(np.linalg.eigvals(G).real) + 0.5) * np.eye(n)
        else:                    # HiPPO-LegS, the S4 matrix that is discretized with bilinear
            n, m = 8, 2
            A, b = S.hippo_legs(n)
            A = A.copy()
        B = rng.standard_normal((n, m)) / np.sqrt(m)
        return {"A": A, "B": B, "dt": np.array(0.1)}, {"method": method}
    return build


def _compute_discretize(x, attrs):
    Ad, Bd = S.discretize(x["A"], x["B"], float(x["dt"]), method=attrs["method"])
    return {"Ad": Ad, "Bd": Bd}


# --- the policy ------------------------------------------------------------------------------

def _build_policy(discrete):
    def build(rng):
        obs_dim, action_dim = (1, 5) if discrete else (2, 2)
        params, spec = policy_init(obs_dim, action_dim, discrete=discrete, state_dim=8,
                                   ssm_output_dim=8, hidden_sizes=(32, 32),
                                   use_prev_action_reward=True, init_log_std=-0.5,
                                   ssm_scale=0.9, mode="scan", rng=rng)
        flat = P.flatten_dict(params)
        for name in sorted(flat):                  # trained nets do not have zero biases
            if name.endswith(".b"):
                flat[name] = 0.1 * rng.standard_normal(flat[name].shape)
        N, T = 4, 50
        obs = rng.standard_normal((N, T, obs_dim))
        if discrete:                               # a K-armed bandit: Bernoulli rewards
            actions = rng.integers(0, action_dim, (N, T)).astype(np.int64)
            rewards = (rng.random((N, T)) < 0.5).astype(np.float64)
        else:                                      # a point robot: actions ~ N(mean, 0.6^2)
            actions = 0.6 * rng.standard_normal((N, T, action_dim))
            rewards = -np.abs(rng.standard_normal((N, T)))
        inputs = _prefixed("params.", P.unflatten_dict(flat))
        inputs.update(obs=obs, actions=actions, rewards=rewards)
        return inputs, {"spec": json.loads(spec.to_json())}
    return build


def _compute_policy(x, attrs):
    spec = PolicySpec.from_json(json.dumps(attrs["spec"]))
    params = _params_in(x, "params.")
    obs, actions, rewards = x["obs"], x["actions"], x["rewards"]

    def forward(p):
        return policy_sequence(p, spec, obs, actions, rewards, mode="scan")

    out = forward(params)
    head = "logits" if spec.discrete else "mean"
    result = {head: out[head], "value": out["values"], "log_prob": log_prob(spec, out, actions)}
    grads = autograd.grad(lambda p: anp.sum(log_prob(spec, forward(p), actions)))(params)
    result.update(_prefixed("grad.", grads))
    return result


# --- MAML ------------------------------------------------------------------------------------

def _mse(params, data):
    """The MAML regression loss: ``mean((mlp(x) - y)^2)`` over all elements (tanh MLP)."""
    x, y = data
    return anp.mean((mlp_apply(params, x, activation="tanh") - y) ** 2)


def _build_maml(metasgd):
    def build(rng):
        hidden = [40, 40]                           # Finn et al.'s sinusoid regressor
        params = mlp_init([1, *hidden, 1], rng=rng)
        for layer in params.values():
            layer["b"] = 0.1 * rng.standard_normal(layer["b"].shape)
        M, K, Q = 4, 10, 15
        amp = rng.uniform(0.1, 5.0, (M, 1, 1))
        phase = rng.uniform(0.0, np.pi, (M, 1, 1))
        sx, qx = rng.uniform(-5.0, 5.0, (M, K, 1)), rng.uniform(-5.0, 5.0, (M, Q, 1))
        inputs = _prefixed("params.", params)
        inputs.update(support_x=sx, support_y=amp * np.sin(sx - phase),
                      query_x=qx, query_y=amp * np.sin(qx - phase))
        attrs = {"steps": 1 if metasgd else 2, "hidden": hidden, "activation": "tanh",
                 "loss": "mean squared error", "tasks": M}
        if metasgd:
            lr = P.tree_map(lambda a: 0.01 * rng.uniform(0.5, 1.5, a.shape), params)
            inputs.update(_prefixed("lr.", lr))
        else:
            inputs["inner_lr"] = np.array(0.01)
        return inputs, attrs
    return build


def _tasks(x):
    M = x["support_x"].shape[0]
    return [((x["support_x"][i], x["support_y"][i]), (x["query_x"][i], x["query_y"][i]))
            for i in range(M)]


def _compute_maml(x, attrs):
    params, tasks, steps = _params_in(x, "params."), _tasks(x), int(attrs["steps"])
    if "inner_lr" not in x:                          # Meta-SGD: per-parameter rates, learned too
        lr = _params_in(x, "lr.")
        loss, (g_theta, g_lr) = meta_gradient(params, _mse, tasks, inner_lr=lr, steps=steps,
                                              wrt_inner_lr=True)
        out = {"meta_loss": np.asarray(loss)}
        out.update(_prefixed("meta_grad.", g_theta))
        out.update(_prefixed("meta_grad_lr.", g_lr))
        return out
    lr = float(x["inner_lr"])
    fast = [P.flatten_dict(adapt(params, _mse, support, inner_lr=lr, steps=steps))
            for support, _ in tasks]
    out = {f"fast.{k}": np.stack([f[k] for f in fast]) for k in fast[0]}   # (M, ...)
    loss, g2 = meta_gradient(params, _mse, tasks, inner_lr=lr, steps=steps)
    _, g1 = meta_gradient(params, _mse, tasks, inner_lr=lr, steps=steps, first_order=True)
    out["meta_loss"] = np.asarray(loss)
    out.update(_prefixed("meta_grad.", g2))
    out.update(_prefixed("meta_grad_fo.", g1))
    return out


# --- the test-time adapter -------------------------------------------------------------------

_ADAPTER_CONFIG = AdaptationConfig(
    lr=0.02,                # Adam steps of ~0.02 per entry ...
    max_step_scale=0.05,    # ... bounded to 0.05 max(|theta_p|, 1) per tensor (W, step 1)
    weight_decay=0.01,      # L2 inside Adam (AdamW's decoupled decay would fail)
    grad_clip_norm=0.5,     # the global gradient norm is ~1.5: clipped at every step
    trust_region_eps=0.08,  # |theta_p - a_p| <= 0.08 (W, every step)
    ema_decay=0.5,          # the EMA anchor, which also switches the trust region on
    entropy_weight=0.5,     # tent's entropy term
    max_steps_per_call=1,
    adam_eps=1e-5)          # large enough that where eps goes (outside the sqrt) shows in float32


def _build_adapter(rng):
    d, K, S_, B = 8, 4, 5, 16
    W = rng.standard_normal((d, K)) / np.sqrt(d)            # logits = x W + b
    b = 0.1 * rng.standard_normal(K)
    means = rng.standard_normal((K, d))
    labels = rng.integers(0, K, (S_, B)).astype(np.int64)
    x = means[labels] + 0.5 * rng.standard_normal((S_, B, d)) + 0.3   # shifted test inputs
    attrs = {"config": dataclasses.asdict(_ADAPTER_CONFIG), "strategy": "tent",
             "loss": "mean cross-entropy over the batch", "steps_per_batch": 1}
    return {"params.W": W, "params.b": b, "x": x, "labels": labels}, attrs


def run_adapter_case(x, attrs):
    """``(trajectory, infos)``: the adapter of the ``adapter`` case on batches ``x[s]``, one
    ``Adapter.adapt`` call per batch; ``infos`` are the dicts ``adapt`` returned."""
    cfg = AdaptationConfig(**attrs["config"])
    params = {"W": np.array(x["params.W"]), "b": np.array(x["params.b"])}
    model = types.SimpleNamespace(params=params)               # any object with a params dict
    adapter = create_adapter(model, cfg, attrs["strategy"])

    def forward(batch):
        return anp.dot(batch["x"], model.params["W"]) + model.params["b"]     # (B, K)

    def cross_entropy(logits, batch):
        return -anp.mean(categorical_log_prob(logits, batch["labels"]))

    traj, infos = [P.tree_copy(model.params)], []
    for s in range(x["x"].shape[0]):
        info = adapter.adapt(cross_entropy, {"x": x["x"][s], "labels": x["labels"][s]},
                             fwd_fn=forward)
        if not info["updated"]:
            raise RuntimeError(f"adapter case: step {s} was not applied ({info.get('reason')})")
        traj.append(P.tree_copy(model.params))
        infos.append(info)
    return {f"traj.{k}": np.stack([t[k] for t in traj]) for k in ("W", "b")}, infos


def _compute_adapter(x, attrs):
    return run_adapter_case(x, attrs)[0]


# --- every case, and writing them ------------------------------------------------------------

def _cases():
    scan = "h_t = A h_{t-1} + B u_t, y_t = C h_t + D u_t from h0"
    cases = [
        Case("ssm_scan", "ssm_scan", _build_scan(3, 64, 8, 2, 3, 0.9), _compute_scan,
             f"{scan}; batch 3, T 64, n 8, m 2, p 3, rho 0.9 (the contract's case)"),
        Case("ssm_scan_T1000", "ssm_scan", _build_scan(2, 1000, 16, 2, 3, 0.9), _compute_scan,
             "T 1000 (not a power of two), n 16, rho 0.9"),
        Case("ssm_scan_T2049", "ssm_scan", _build_scan(2, 2049, 16, 2, 3, 0.95), _compute_scan,
             "T 2049 (crosses 2048), n 16, rho 0.95"),
        Case("ssm_scan_long", "ssm_scan", _build_scan(1, 16384, 16, 2, 3, 0.99), _compute_scan,
             "one long sequence, T 16384, n 16, rho 0.99"),
        Case("ssm_scan_rho0999", "ssm_scan", _build_scan(2, 4096, 16, 2, 3, 0.999),
             _compute_scan, "spectral radius 0.999 (memory ~1000 steps), T 4096, n 16"),
        Case("ssm_scan_n1", "ssm_scan", _build_scan(3, 256, 1, 2, 3, 0.9), _compute_scan,
             "state size 1, T 256"),
        Case("ssm_scan_n64", "ssm_scan", _build_scan(2, 512, 64, 2, 3, 0.95), _compute_scan,
             "state size 64, T 512, rho 0.95"),
        Case("ssm_step", "ssm_step", _build_step, _compute_step,
             "h_next = A h + B u, y = C h_next + D u; batch 4, n 16, m 3, p 2"),
        Case("ssm_kernel", "ssm_kernel", _build_kernel, _compute_kernel,
             "K[k] = C A^k B, k < 1000; n 16, m 2, p 3, rho 0.99"),
        Case("ssm_scan_vjp", "ssm_scan_vjp", _build_vjp(3, 64, 8, 2, 3, 0.9), _compute_vjp,
             "gradients of sum(gy*y) + sum(gh*h_last) w.r.t. A, B, C, D, u, h0; T 64"),
        Case("ssm_scan_vjp_T2049", "ssm_scan_vjp", _build_vjp(2, 2049, 16, 2, 3, 0.95),
             _compute_vjp, "the same for T 2049, n 16, rho 0.95"),
        Case("discretize_zoh", "discretize", _build_discretize("zoh"), _compute_discretize,
             "zero-order hold of a non-normal Hurwitz A (n 6), dt 0.1"),
        Case("discretize_bilinear", "discretize", _build_discretize("bilinear"),
             _compute_discretize, "bilinear (S4) of HiPPO-LegS (n 8), dt 0.1"),
        Case("policy_gaussian", "policy", _build_policy(False), _compute_policy,
             "continuous SSM policy: mean, value, log-prob (summed over dims) and its gradient"),
        Case("policy_categorical", "policy", _build_policy(True), _compute_policy,
             "discrete SSM policy (K 5, previous action and reward as input)"),
        Case("maml_mlp", "maml", _build_maml(False), _compute_maml,
             "sinusoid MAML: fast weights after 2 steps, meta-loss, 2nd and 1st order meta-grads"),
        Case("maml_metasgd", "maml", _build_maml(True), _compute_maml,
             "Meta-SGD: meta-gradients w.r.t. the parameters and the per-parameter rates"),
        Case("adapter_tent", "adapter", _build_adapter, _compute_adapter,
             "tent on a linear classifier: 5 steps, clipping, step bound, trust region, EMA"),
    ]
    return {c.name: c for c in cases}


#: Every case, by name, in the order they are written.
CASES = _cases()


def build_case(name, dtype="float64"):
    """``(inputs, outputs, attrs)`` of case ``name`` with inputs rounded to ``dtype``."""
    _check_dtype(dtype)
    case = CASES[name]
    raw, attrs = case.build(np.random.default_rng(_seed(name)))
    inputs = {k: round_to_dtype(v, dtype) for k, v in raw.items()}
    outputs = {k: np.asarray(v, dtype=np.float64) for k, v in case.compute(inputs, attrs).items()}
    clash = sorted(set(inputs) & set(outputs))
    if clash:
        raise RuntimeError(f"case {name}: names {clash} are both inputs and outputs")
    return inputs, outputs, attrs


def write_vectors(out_dir, dtype="float64", cases=None):
    """Write ``manifest.json`` and one ``.npz`` per case to ``out_dir`` (created if needed);
    returns the manifest.  ``cases``: names to write (default all of :data:`CASES`).

    Deterministic: the same ssmref version writes the same bytes.  Each file is written
    atomically, the manifest last.
    """
    _check_dtype(dtype)
    names = _select(cases, CASES, "cases")
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for name in names:
        inputs, outputs, attrs = build_case(name, dtype)
        write_npz(os.path.join(out_dir, f"{name}.npz"), {**inputs, **outputs})
        entries.append({"name": name, "file": f"{name}.npz", "kind": CASES[name].kind,
                        "inputs": sorted(inputs), "outputs": sorted(outputs), "attrs": attrs})
    manifest = {"spec_version": SPEC_VERSION, "ssmref_version": __version__, "dtype": dtype,
                "cases": entries}
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    P.atomic_write(os.path.join(out_dir, "manifest.json"), lambda f: f.write(text.encode("utf-8")))
    return manifest
