"""The cross-check kit: float64 golden vectors any language can read, and a checker whose
tolerances have a reason.

Contract (``CONTRACT.md``, "Cross-check kit"; ``docs/crosscheck.md`` is the same spec in prose)::

    python -m ssmref vectors OUT_DIR [--dtype float64|float32|float16|bfloat16] [--cases NAME ...]
    python -m ssmref check VECTORS_DIR RESULTS_DIR [--dtype ...] [--mode table|baseline] [--k K]

* ``OUT_DIR/manifest.json``: ``{"spec_version": "1", "ssmref_version", "dtype", "cases": [{"name",
  "file", "kind", "inputs": [...], "outputs": [...], "attrs": {...}}]}``, written with sorted keys
  and a fixed indent.  ``OUT_DIR/<name>.npz``: the case's inputs and expected outputs, float64
  (integer actions and labels int64), no pickles, readable with ``numpy.load``.  Same version, same
  arguments: the same files byte for byte (zip entries carry a fixed timestamp; ``numpy.savez``
  stamps the current time, so it is not used).
* With ``dtype`` other than float64 every float *input* is first rounded to that dtype (bfloat16:
  float64 -> float32 -> round-to-nearest-even to 8 mantissa bits, as ``torch`` converts) and stored
  back as float64, and the expected outputs are computed in float64 from the rounded inputs: a
  candidate's error is its own, not input quantization.
* ``RESULTS_DIR/<name>.npz`` holds every key of the case's ``"outputs"``, each with the expected
  shape, any real dtype (cast to float64).
* ``check`` exits 0 when every output is within tolerance, 1 when any is not or is non-finite (the
  report names case, output, error, tolerance and the first diverging index: for sequences, the
  time step), 2 on unusable input (missing directory, file or key, wrong shape, bad manifest),
  with a one-line message on stderr and no traceback.

Error measures, per output, for the expected ``y`` (float64) and the candidate ``x``::

    s        = max_i |y_i|          (the output's scale; 1 if y is all zeros)
    max_abs  = max_i |x_i - y_i|
    max_rel  = max_abs / s          (normwise relative error)
    passes iff every x_i is finite and |x_i - y_i| <= tol_i, where
    tol_i    = rtol |y_i| + atol s g(L)              table mode
    tol_i    = k E_naive  + atol s                   baseline mode, E_naive = max_i |naive_i - y_i|

``(rtol, atol)`` come from :data:`VALUE_TOLERANCES` (torch.testing's defaults; Mamba's kernel tests
for the fp16 / bf16 atol), doubled for gradients (:data:`GRAD_FACTOR`).  ``atol`` is relative to
the output's scale ``s``: an SSM's rounding errors are proportional to the size of the signal, not
of each entry, which may pass through zero.  ``g(L) = max(1, sqrt(L / 64))`` grows the tolerance
with the effective memory ``L = min(T, 1 / (1 - rho(A)))`` of a recurrence: one rounding error
per step, damped by ``A^k``, accumulates like a random walk over the last ``L`` steps.  Measured
(float32: the naive recurrence, and a chunked torch scan): normwise errors 1e-7 to 3e-7 at
``L = 10``, 7e-7 at ``L = 1000``, 1.8e-6 for gradients: 11 to 130 times below the tolerance,
while the wrong convention (the output reads the old state) is 1e4 times above.  Baseline mode
runs the naive computation (:func:`naive_outputs`) in the target dtype, rounding after every
operation (bfloat16 emulated), for the SSM kinds and discretization; other kinds use the table.

Python API: :func:`write_vectors`, :func:`load_vectors`, :func:`load_case`, :func:`check`,
:func:`format_report`, :func:`assert_matches`, :func:`assert_case_matches`,
:func:`round_to_dtype`, :func:`tolerance`, :func:`naive_outputs`.  Command line:
:func:`add_vectors_arguments` / :func:`run_vectors`, :func:`add_check_arguments` /
:func:`run_check` (registered in :mod:`ssmref.cli`), or ``python -m ssmref.crosscheck``.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import types
import zipfile
import zlib

import autograd
import autograd.numpy as anp
import numpy as np
import scipy.linalg

from ssmref import __version__
from ssmref import params as P
from ssmref import ssm as S
from ssmref.adaptation import AdaptationConfig, create_adapter
from ssmref.maml import adapt, meta_gradient
from ssmref.nn import categorical_log_prob, mlp_apply, mlp_init
from ssmref.policy import PolicySpec, log_prob, policy_init, policy_sequence

__all__ = ["SPEC_VERSION", "DTYPES", "KINDS", "CASES", "VALUE_TOLERANCES", "GRAD_FACTOR",
           "DEFAULT_K", "VectorsError", "round_to_dtype", "tolerance", "length_factor",
           "effective_length", "write_vectors", "load_vectors", "load_case", "naive_outputs",
           "check", "check_case", "format_report", "assert_matches", "assert_case_matches",
           "add_vectors_arguments", "run_vectors", "add_check_arguments", "run_check", "main"]

SPEC_VERSION = "1"
DTYPES = ("float64", "float32", "float16", "bfloat16")
KINDS = ("ssm_scan", "ssm_step", "ssm_kernel", "ssm_scan_vjp", "discretize", "policy", "maml",
         "adapter")

#: ``(rtol, atol)`` for values; ``atol`` is multiplied by the output's scale ``s = max |y|``.
VALUE_TOLERANCES = {
    "float64": (1e-7, 1e-7),      # torch.testing.assert_close defaults for float64
    "float32": (1.3e-6, 1e-5),    # torch.testing.assert_close defaults for float32
    "float16": (1e-3, 5e-3),      # rtol: torch.testing (float16); atol: Mamba's fp16 kernel tests
    "bfloat16": (1.6e-2, 5e-2),   # rtol: torch.testing (bfloat16); atol: Mamba's bf16 kernel tests
}
#: Gradients (a second, reverse pass plus sums over time) get both tolerances multiplied by 2,
#: as Mamba's tests do for the input gradients (``rtol * 2, atol * 2``).
GRAD_FACTOR = 2.0
#: ``g(L) = max(1, sqrt(L / LENGTH_REF))``: the table applies as it is up to 64 effective steps.
LENGTH_REF = 64
#: Baseline mode: a candidate may be this many times less accurate than the naive computation.
DEFAULT_K = 4.0


class VectorsError(ValueError):
    """Unusable input for the checker (missing directory, file or key, wrong shape, bad manifest):
    ``python -m ssmref check`` exits 2 with this message on one line."""


# ---------------------------------------------------------------------------------------------
# Rounding to a dtype (bfloat16 emulated on the float32 bit pattern)
# ---------------------------------------------------------------------------------------------

def _check_dtype(dtype, name="dtype"):
    if dtype not in DTYPES:
        raise ValueError(f"{name} must be one of {list(DTYPES)}, got {dtype!r}")
    return dtype


def _bfloat16_round(x32):
    """float32 array -> float32 array holding the nearest bfloat16 (ties to even), as
    ``torch``'s float -> bfloat16 conversion: add ``0x7FFF + lsb`` to the bit pattern and clear
    the low 16 bits.  Infinities stay infinite, values beyond the largest bfloat16 round to inf,
    NaNs stay NaN (quiet)."""
    x32 = np.asarray(x32, dtype=np.float32)
    bits = np.array(x32, order="C").reshape(-1).view(np.uint32).astype(np.uint64)
    lsb = (bits >> np.uint64(16)) & np.uint64(1)
    rounded = (bits + np.uint64(0x7FFF) + lsb) & np.uint64(0xFFFF0000)
    quiet_nan = (bits | np.uint64(0x00400000)) & np.uint64(0xFFFF0000)
    out = np.where(np.isnan(x32).reshape(-1), quiet_nan, rounded).astype(np.uint32)
    return out.view(np.float32).reshape(x32.shape)


def _rounder(dtype):
    """``(work, r)``: the working dtype of the naive computation in ``dtype`` and the function
    that rounds an array of it to the nearest ``dtype`` value (returned in ``work``)."""
    if dtype == "float64":
        return np.float64, lambda x: np.asarray(x, dtype=np.float64)
    if dtype == "float32":
        return np.float32, lambda x: np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        return np.float32, lambda x: np.asarray(x, dtype=np.float16).astype(np.float32)
    return np.float32, _bfloat16_round


def round_to_dtype(x, dtype):
    """``x`` rounded to the nearest ``dtype`` value, returned as float64 (exactly representable).

    float32 and float16: NumPy's correctly rounded conversion from float64.  bfloat16: first to
    float32, then :func:`_bfloat16_round` (the double rounding ``torch`` does too).  Integer arrays
    are returned unchanged.
    """
    _check_dtype(dtype)
    a = np.asarray(x)
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "float64":
            return a.astype(np.float64)
        if dtype == "float32":
            return a.astype(np.float32).astype(np.float64)
        if dtype == "float16":
            return a.astype(np.float16).astype(np.float64)
        return _bfloat16_round(a.astype(np.float32)).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Deterministic, atomic files
# ---------------------------------------------------------------------------------------------

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path, arrays):
    """Write ``name -> array`` to ``path`` as an uncompressed ``.npz`` that ``numpy.load`` reads,
    byte for byte the same for the same arrays: entries in sorted order, each with a fixed
    timestamp and attributes (``numpy.savez`` stamps the current time).  Atomic; no pickles."""
    plain = {}
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype.kind not in "fiub":
            raise ValueError(f"write_npz: array {name!r} has dtype {a.dtype}; only numbers "
                             f"are stored")
        plain[name] = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")   # keeps 0-d

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, a in plain.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
                info.create_system = 3
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_STORED
                with zf.open(info, "w", force_zip64=True) as fid:
                    np.lib.format.write_array(fid, a, allow_pickle=False)

    P.atomic_write(path, write)


def read_npz(path, what="file"):
    """``name -> ndarray`` from an ``.npz`` (never unpickles); :class:`VectorsError` otherwise."""
    try:
        with open(path, "rb") as f:
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise VectorsError(f"{what} {path} holds a single array, not an .npz archive")
            with z:
                return {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise VectorsError(f"{what} {path} does not exist") from None
    except VectorsError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VectorsError(f"{what} {path} is not a readable .npz file ({msg})") from None


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

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


def _ssm(inputs):
    return {k: inputs[k] for k in S.PARAM_NAMES}


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


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _select(names, known, what):
    if names is None:
        return list(known)
    if isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{what}: unknown case(s) {unknown}; known: {list(known)}")
    return [n for n in known if n in names]


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


# ---------------------------------------------------------------------------------------------
# Reading and validating
# ---------------------------------------------------------------------------------------------

def _read_manifest(vectors_dir):
    if not os.path.isdir(vectors_dir):
        raise VectorsError(f"vectors directory {vectors_dir} does not exist")
    path = os.path.join(vectors_dir, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise VectorsError(f"{path} does not exist (write vectors with: python -m ssmref vectors "
                           f"{vectors_dir})") from None
    except (OSError, ValueError) as e:
        raise VectorsError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
    want = {"spec_version", "ssmref_version", "dtype", "cases"}
    if not isinstance(manifest, dict) or not want <= set(manifest):
        got = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise VectorsError(f"{path}: expected keys {sorted(want)}, got {got}")
    if manifest["spec_version"] != SPEC_VERSION:
        raise VectorsError(f"{path}: spec_version {manifest['spec_version']!r} is not supported "
                           f"(this checker reads {SPEC_VERSION!r})")
    if manifest["dtype"] not in DTYPES:
        raise VectorsError(f"{path}: dtype {manifest['dtype']!r} is not one of {list(DTYPES)}")
    if not isinstance(manifest["cases"], list) or not manifest["cases"]:
        raise VectorsError(f"{path}: 'cases' must be a non-empty list")
    seen = set()
    for i, c in enumerate(manifest["cases"]):
        keys = {"name", "file", "kind", "inputs", "outputs", "attrs"}
        if not isinstance(c, dict) or not keys <= set(c):
            raise VectorsError(f"{path}: cases[{i}] must have keys {sorted(keys)}")
        name, file = c["name"], c["file"]
        if not isinstance(name, str) or not name or name in seen:
            raise VectorsError(f"{path}: cases[{i}] has a missing or repeated name {name!r}")
        seen.add(name)
        if not isinstance(file, str) or os.path.basename(file) != file or not file.endswith(".npz"):
            raise VectorsError(f"{path}: case {name}: 'file' must be a plain .npz file name, "
                               f"got {file!r}")
        if c["kind"] not in KINDS:
            raise VectorsError(f"{path}: case {name}: unknown kind {c['kind']!r}; "
                               f"known {list(KINDS)}")
        for key in ("inputs", "outputs"):
            if not isinstance(c[key], list) or not all(isinstance(k, str) for k in c[key]) \
                    or (key == "outputs" and not c[key]):
                raise VectorsError(f"{path}: case {name}: {key!r} must be a list of names")
        if not isinstance(c["attrs"], dict):
            raise VectorsError(f"{path}: case {name}: 'attrs' must be an object")
    return manifest


def _load_case_arrays(vectors_dir, entry):
    path = os.path.join(vectors_dir, entry["file"])
    arrays = read_npz(path, what=f"case {entry['name']}:")
    missing = [k for k in entry["inputs"] + entry["outputs"] if k not in arrays]
    if missing:
        raise VectorsError(f"case {entry['name']}: {path} lacks {missing}")
    for k in entry["outputs"]:
        a = arrays[k]
        if a.dtype != np.float64:
            raise VectorsError(f"case {entry['name']}: expected output {k!r} has dtype {a.dtype}, "
                               f"not float64")
        if not np.all(np.isfinite(a)):
            raise VectorsError(f"case {entry['name']}: expected output {k!r} is not finite")
    inputs = {k: arrays[k] for k in entry["inputs"]}
    try:
        _validate_inputs(entry["kind"], inputs, entry["attrs"])
    except (KeyError, ValueError, TypeError) as e:
        raise VectorsError(f"case {entry['name']}: unusable inputs ({_one_line(e)})") from None
    return {"name": entry["name"], "kind": entry["kind"], "attrs": entry["attrs"],
            "inputs": inputs, "outputs": {k: arrays[k] for k in entry["outputs"]}}


#: The inputs the checker itself reads (tolerances, baselines), by kind.
REQUIRED_INPUTS = {"ssm_scan": ("A", "B", "C", "D", "u", "h0"),
                   "ssm_step": ("A", "B", "C", "D", "h", "u"),
                   "ssm_kernel": ("A", "B", "C"),
                   "ssm_scan_vjp": ("A", "B", "C", "D", "u", "h0", "gy", "gh"),
                   "discretize": ("A", "B", "dt"),
                   "policy": ("params.ssm.A", "obs"), "maml": (), "adapter": ()}


def _validate_inputs(kind, x, attrs):
    """``ValueError`` unless the inputs and attrs the checker reads have consistent shapes."""
    missing = [k for k in REQUIRED_INPUTS[kind] if k not in x]
    if missing:
        raise ValueError(f"kind {kind!r} needs inputs {missing}")
    for k in REQUIRED_INPUTS[kind]:
        if x[k].dtype.kind != "f":
            raise ValueError(f"input {k!r} has dtype {x[k].dtype}, expected float")
    if kind in ("ssm_scan", "ssm_step", "ssm_scan_vjp"):
        m, n, p = S.ssm_dims(_ssm(x))
        if kind == "ssm_step":
            b = x["h"].shape[0] if x["h"].ndim == 2 else None
            if x["h"].shape != (b, n) or x["u"].shape != (b, m):
                raise ValueError(f"h {x['h'].shape} and u {x['u'].shape} must be (batch, {n}) "
                                 f"and (batch, {m})")
            return
        u = x["u"]
        if u.ndim != 3 or u.shape[2] != m or u.shape[1] < 1:
            raise ValueError(f"u has shape {u.shape}, expected (batch, T, {m})")
        b, T = u.shape[:2]
        want = {"h0": (b, n), "gy": (b, T, p), "gh": (b, n)}
        for k in ("h0", "gy", "gh") if kind == "ssm_scan_vjp" else ("h0",):
            if x[k].shape != want[k]:
                raise ValueError(f"{k} has shape {x[k].shape}, expected {want[k]}")
    elif kind == "ssm_kernel":
        A, B, C = x["A"], x["B"], x["C"]
        if A.ndim != 2 or B.ndim != 2 or C.ndim != 2 or A.shape != (B.shape[0],) * 2 \
                or C.shape[1] != A.shape[0]:
            raise ValueError(f"A {A.shape}, B {B.shape}, C {C.shape} must be (n, n), (n, m), "
                             f"(p, n)")
        length = attrs.get("length")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"attrs.length must be a positive int, got {length!r}")
    elif kind == "discretize":
        A, B, dt = x["A"], x["B"], x["dt"]
        if A.ndim != 2 or A.shape[0] != A.shape[1] or B.ndim != 2 or B.shape[0] != A.shape[0] \
                or dt.shape != ():
            raise ValueError(f"A {A.shape}, B {B.shape}, dt {dt.shape} must be (n, n), (n, m), ()")
        if attrs.get("method") not in ("zoh", "bilinear"):
            raise ValueError(f"attrs.method must be 'zoh' or 'bilinear', "
                             f"got {attrs.get('method')!r}")
    elif kind == "policy":
        A, obs = x["params.ssm.A"], x["obs"]
        if A.ndim != 2 or A.shape[0] != A.shape[1] or obs.ndim != 3:
            raise ValueError(f"params.ssm.A {A.shape} must be square and obs {obs.shape} "
                             f"(N, T, obs_dim)")


def load_vectors(vectors_dir, cases=None):
    """The validated vectors: ``{"manifest": ..., "dtype": ..., "cases": {name: {"name", "kind",
    "attrs", "inputs", "outputs"}}}``; :class:`VectorsError` on anything unusable."""
    manifest = _read_manifest(vectors_dir)
    entries = {c["name"]: c for c in manifest["cases"]}
    try:
        names = _select(cases, entries, "cases")
    except ValueError as e:
        raise VectorsError(str(e)) from None
    return {"manifest": manifest, "dtype": manifest["dtype"],
            "cases": {n: _load_case_arrays(vectors_dir, entries[n]) for n in names}}


def load_case(vectors_dir, name):
    """``(inputs, expected_outputs, attrs)`` of one case, as dicts of arrays (inputs as stored:
    float64, rounded to the manifest's dtype)."""
    case = load_vectors(vectors_dir, [name])["cases"][name]
    return case["inputs"], case["outputs"], case["attrs"]


def _load_results(results_dir, case):
    path = os.path.join(results_dir, case["name"] + ".npz")
    arrays = read_npz(path, what=f"results of case {case['name']}:")
    out = {}
    for k, want in case["outputs"].items():
        if k not in arrays:
            raise VectorsError(f"results of case {case['name']}: {path} lacks output {k!r} "
                               f"(expected {sorted(case['outputs'])})")
        out[k] = _as_result(arrays[k], want.shape, f"results of case {case['name']}: output {k!r}")
    return out


def _as_result(a, shape, where):
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise VectorsError(f"{where} has dtype {a.dtype}, expected a real number type "
                           f"(store bfloat16 results as float32)")
    if a.shape != tuple(shape):
        raise VectorsError(f"{where} has shape {a.shape}, expected {tuple(shape)}")
    return a.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Tolerances
# ---------------------------------------------------------------------------------------------

def length_factor(length):
    """``g(L) = max(1, sqrt(L / 64))``: how the tolerance grows with the effective length ``L``."""
    return max(1.0, math.sqrt(max(float(length), 1.0) / LENGTH_REF))


def tolerance(dtype, cls="value", length=1, *, rtol=None, atol=None):
    """``(rtol, atol)`` of the table for ``dtype``, output class ``"value"`` or ``"grad"``, and
    effective length ``length``; ``atol`` (relative to the output's scale) includes ``g(L)``.
    ``rtol`` / ``atol`` replace the table's values (the class and length factors still apply)."""
    _check_dtype(dtype)
    if cls not in ("value", "grad"):
        raise ValueError(f"cls must be 'value' or 'grad', got {cls!r}")
    r, a = VALUE_TOLERANCES[dtype]
    r, a = (r if rtol is None else rtol), (a if atol is None else atol)
    f = GRAD_FACTOR if cls == "grad" else 1.0
    return r * f, a * f * length_factor(length)


def _spectral_radius(A):
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(A, dtype=np.float64)))))


def effective_length(kind, inputs, attrs):
    """``L = min(T, 1 / (1 - rho(A)))`` for the recurrences (``T`` for ``rho >= 1``), else 1.

    ``T`` is the sequence length (the kernel's length for ``ssm_kernel``); ``1 / (1 - rho)`` is
    the number of past steps whose rounding errors still reach an output (``rho^k`` decays).
    """
    if kind in ("ssm_scan", "ssm_scan_vjp", "ssm_kernel", "policy"):
        A = inputs["params.ssm.A"] if kind == "policy" else inputs["A"]
        T = int(attrs["length"]) if kind == "ssm_kernel" else int(np.shape(inputs[
            "obs" if kind == "policy" else "u"])[1])
        rho = _spectral_radius(A)
        return float(T) if rho >= 1.0 else min(float(T), 1.0 / (1.0 - rho))
    return 1.0


def output_class(kind, name):
    """``"grad"`` for gradients (and the adapter's trajectory, made of gradient steps), else
    ``"value"``."""
    if kind == "ssm_scan_vjp" and name in ("dA", "dB", "dC", "dD", "du", "dh0"):
        return "grad"
    if name.startswith(("grad.", "meta_grad")) or kind == "adapter":
        return "grad"
    return "value"


def sequence_axis(kind, name):
    """``(axis, label)`` of an output's sequence axis (time ``t``, lag ``k``, adapter ``step``),
    or ``None``; the checker reports the first diverging index along it."""
    if kind in ("ssm_scan", "ssm_scan_vjp") and name in ("y", "du"):
        return 1, "t"
    if kind == "ssm_kernel" and name == "K":
        return 0, "k"
    if kind == "policy" and name in ("mean", "logits", "value", "log_prob"):
        return 1, "t"
    if kind == "adapter" and name.startswith("traj."):
        return 0, "step"
    return None


# ---------------------------------------------------------------------------------------------
# The naive computation in the target dtype (baseline mode)
# ---------------------------------------------------------------------------------------------

def _naive_ssm(x, R, work):
    """States and outputs of the recurrence, every operation rounded by ``R``; matrix products
    accumulate in the working precision (float32 for the low-precision dtypes, as GPUs do)."""
    A, B, C, D = (R(np.asarray(x[k], dtype=work)) for k in S.PARAM_NAMES)
    u, h = R(np.asarray(x["u"], dtype=work)), R(np.asarray(x["h0"], dtype=work))
    Bu = R(u @ B.T)                                       # (b, T, n)
    hs = []
    for t in range(u.shape[1]):
        h = R(R(h @ A.T) + Bu[:, t])                      # h_t = A h_{t-1} + B u_t
        hs.append(h)
    H = np.stack(hs, axis=1)                              # (b, T, n)
    y = R(R(H @ C.T) + R(u @ D.T))                        # y_t = C h_t + D u_t
    return (A, B, C, D, u), H, y


def _naive_vjp(x, R, work):
    (A, B, C, D, u), H, y = _naive_ssm(x, R, work)
    gy, gh = R(np.asarray(x["gy"], dtype=work)), R(np.asarray(x["gh"], dtype=work))
    h0 = R(np.asarray(x["h0"], dtype=work))
    Cg = R(gy @ C)                                        # (b, T, n): C^T gy_t
    T = u.shape[1]
    lam = R(Cg[:, T - 1] + gh)                            # lambda_{T-1} = C^T gy + gh
    lams = [lam]
    for t in range(T - 2, -1, -1):
        lam = R(Cg[:, t] + R(lam @ A))                    # lambda_t = C^T gy_t + A^T lambda_{t+1}
        lams.append(lam)
    L = np.stack(lams[::-1], axis=1)                      # (b, T, n)
    H_prev = np.concatenate([h0[:, None], H[:, :-1]], axis=1)
    flat = lambda a: a.reshape(-1, a.shape[-1])           # (b*T, .)
    return {"y": y, "h_last": H[:, -1],
            "dA": R(flat(L).T @ flat(H_prev)), "dB": R(flat(L).T @ flat(u)),
            "dC": R(flat(gy).T @ flat(H)), "dD": R(flat(gy).T @ flat(u)),
            "du": R(R(L @ B) + R(gy @ D)), "dh0": R(L[:, 0] @ A)}


def _naive_kernel(x, attrs, R, work):
    A, B, C = (R(np.asarray(x[k], dtype=work)) for k in ("A", "B", "C"))
    X, Ks = B, []
    for _ in range(int(attrs["length"])):
        Ks.append(R(C @ X))                               # K[k] = C (A^k B)
        X = R(A @ X)
    return {"K": np.stack(Ks)}


def _naive_discretize(x, attrs, R, work):
    A, B = R(np.asarray(x["A"], dtype=work)), R(np.asarray(x["B"], dtype=work))
    dt = R(np.asarray(x["dt"], dtype=work))
    n, m = B.shape
    if attrs["method"] == "zoh":
        block = R(dt * np.block([[A, B], [np.zeros((m, n + m), dtype=work)]]))
        E = R(scipy.linalg.expm(block))                   # expm in the working precision
        return {"Ad": E[:n, :n], "Bd": E[:n, n:]}
    I = np.eye(n, dtype=work)
    half = R(R(dt / 2) * A)
    left, right = R(I - half), R(I + half)
    return {"Ad": R(np.linalg.solve(left, right)), "Bd": R(np.linalg.solve(left, R(dt * B)))}


def naive_outputs(kind, inputs, attrs, dtype):
    """The naive computation carried out in ``dtype`` (the plain recurrence, the powers
    ``A^k B``, the reverse recurrence of the VJP, the direct discretization formulas), rounding
    to ``dtype`` after every operation (bfloat16 emulated; matrix products accumulate in float32
    for float16 / bfloat16, in ``dtype`` otherwise); returned as float64 arrays.  ``None`` for the
    kinds without a naive baseline (policy, maml, adapter)."""
    work, R = _rounder(_check_dtype(dtype))
    with np.errstate(all="ignore"):
        if kind == "ssm_scan":
            _, H, y = _naive_ssm(inputs, R, work)
            out = {"y": y, "h_last": H[:, -1]}
        elif kind == "ssm_step":
            A, B, C, D = (R(np.asarray(inputs[k], dtype=work)) for k in S.PARAM_NAMES)
            h, u = R(np.asarray(inputs["h"], dtype=work)), R(np.asarray(inputs["u"], dtype=work))
            h_next = R(R(h @ A.T) + R(u @ B.T))
            out = {"h_next": h_next, "y": R(R(h_next @ C.T) + R(u @ D.T))}
        elif kind == "ssm_kernel":
            out = _naive_kernel(inputs, attrs, R, work)
        elif kind == "ssm_scan_vjp":
            out = _naive_vjp(inputs, R, work)
        elif kind == "discretize":
            out = _naive_discretize(inputs, attrs, R, work)
        else:
            return None
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------

def compare(expected, actual, *, rtol, atol, seq_axis=None, err_naive=None, k=DEFAULT_K):
    """The error measures of one output (see the module docstring) as a dict.

    ``atol`` is relative to the output's scale (it is multiplied by ``s``).  With ``err_naive``
    (baseline mode) ``tol_i = k err_naive + atol s``; otherwise ``tol_i = rtol |y_i| + atol s``.
    """
    y = np.asarray(expected, dtype=np.float64)
    x = np.asarray(actual, dtype=np.float64)
    if x.shape != y.shape:
        raise VectorsError(f"shape {x.shape} does not match the expected {y.shape}")
    s = float(np.max(np.abs(y))) if y.size else 0.0
    s = s if s > 0 else 1.0
    with np.errstate(all="ignore"):
        err = np.abs(x - y)
        if err_naive is None:
            tol = rtol * np.abs(y) + atol * s
        else:
            tol = np.full(y.shape, k * err_naive + atol * s)
        finite = np.isfinite(x)
        bad = ~finite | ~(err <= tol)
        finite_err = np.where(finite, err, 0.0)
        max_abs = float(np.max(finite_err)) if y.size else 0.0
        worst = float(np.max(np.where(finite, err / tol, 0.0))) if y.size else 0.0
    floor = (k * err_naive + atol * s) if err_naive is not None else atol * s
    result = {"shape": list(y.shape), "scale": s, "max_abs": max_abs, "max_rel": max_abs / s,
              "rtol": None if err_naive is not None else rtol, "tol_abs": floor, "worst": worst,
              "n_bad": int(np.sum(bad)), "nan": int(np.sum(np.isnan(x))),
              "inf": int(np.sum(np.isinf(x))), "first_bad": None, "first_bad_step": None,
              "seq_label": None, "bad_value": None, "bad_expected": None, "bad_tol": None,
              "err_naive": err_naive, "passed": not bool(np.any(bad))}
    if np.any(bad):
        if seq_axis is not None:
            axis, label = seq_axis
            first = np.argwhere(np.moveaxis(bad, axis, 0))[0]       # earliest step first
            index = tuple(np.insert(np.delete(first, 0), axis, first[0]))
            result["first_bad_step"], result["seq_label"] = int(first[0]), label
        else:
            index = tuple(np.argwhere(bad)[0])
        result["first_bad"] = [int(i) for i in index]
        result["bad_value"] = float(x[index])
        result["bad_expected"] = float(y[index])
        result["bad_tol"] = float(tol[index])
    return result


def _check_mode(mode, k):
    if mode not in ("table", "baseline"):
        raise ValueError(f"mode must be 'table' or 'baseline', got {mode!r}")
    if isinstance(k, bool) or not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
        raise ValueError(f"k must be a positive finite number, got {k!r}")


def check_case(case, actual, dtype=None, *, mode="table", k=DEFAULT_K, rtol=None, atol=None,
               vectors_dtype=None):
    """The report of one case (a dict from :func:`load_vectors`'s ``"cases"``) for the outputs
    ``actual`` (``name -> array``); see :func:`check`."""
    dtype = _check_dtype(dtype or vectors_dtype or "float64")
    _check_mode(mode, k)
    kind, attrs = case["kind"], case["attrs"]
    L = effective_length(kind, case["inputs"], attrs)
    notes = []
    naive = None
    if mode == "baseline":
        naive = naive_outputs(kind, case["inputs"], attrs, dtype)
        if naive is None:
            notes.append(f"no naive baseline for kind {kind!r}: table tolerances used")
    outputs = []
    for name, expected in case["outputs"].items():
        if name not in actual:
            raise VectorsError(f"results of case {case['name']}: output {name!r} is missing")
        got = _as_result(actual[name], expected.shape,
                         f"results of case {case['name']}: output {name!r}")
        cls = output_class(kind, name)
        err_naive = None
        if naive is not None:
            e = np.abs(naive[name] - expected)
            if np.all(np.isfinite(e)):
                err_naive = float(np.max(e)) if e.size else 0.0
            else:
                notes.append(f"{name}: the naive {dtype} computation is not finite; table used")
        if err_naive is not None:            # baseline: no length factor, E_naive has it
            _, a = tolerance(dtype, cls, 1, rtol=rtol, atol=atol)
            res = compare(expected, got, rtol=None, atol=a, err_naive=err_naive, k=k,
                          seq_axis=sequence_axis(kind, name))
        else:
            r, a = tolerance(dtype, cls, L, rtol=rtol, atol=atol)
            res = compare(expected, got, rtol=r, atol=a, seq_axis=sequence_axis(kind, name))
        res.update(name=name, cls=cls)
        outputs.append(res)
    return {"name": case["name"], "kind": kind, "length": L, "length_factor": length_factor(L),
            "passed": all(o["passed"] for o in outputs), "notes": notes, "outputs": outputs}


def check(vectors_dir, results_dir, dtype=None, mode="table", k=DEFAULT_K, cases=None,
          rtol=None, atol=None):
    """Compare ``results_dir/<case>.npz`` with the vectors in ``vectors_dir``; returns the report.

    ``dtype``: the candidate's precision, which picks the tolerances (default: the manifest's).
    ``mode``: ``"table"`` (``tol_i = rtol |y_i| + atol s g(L)``) or ``"baseline"``
    (``tol_i = k E_naive + atol s``).  ``cases``: names to check (default all in the manifest;
    each must have a results file).  ``rtol`` / ``atol`` replace the table's values (before the
    gradient and length factors).  Raises :class:`VectorsError` on unusable input.

    The report: ``{"passed", "dtype", "vectors_dtype", "mode", "k", "vectors_dir", "results_dir",
    "notes", "cases": [{"name", "kind", "length", "length_factor", "passed", "notes", "outputs":
    [{"name", "cls", "shape", "scale", "max_abs", "max_rel", "rtol", "tol_abs", "worst", "n_bad",
    "nan", "inf", "first_bad", "first_bad_step", "seq_label", "bad_value", "bad_expected",
    "bad_tol", "err_naive", "passed"}]}]}``: ``tol_abs`` is the absolute part of the tolerance
    (``atol s g(L)``, or ``k E_naive + atol s``), ``worst`` the largest ``|x_i - y_i| / tol_i``,
    ``first_bad`` the first failing index (earliest along the sequence axis ``seq_label``).
    """
    if dtype is not None:
        _check_dtype(dtype)
    _check_mode(mode, k)
    if not os.path.isdir(results_dir):
        raise VectorsError(f"results directory {results_dir} does not exist")
    vectors = load_vectors(vectors_dir, cases)
    vdtype = vectors["dtype"]
    dtype = dtype or vdtype
    notes = []
    if dtype != vdtype and vdtype == "float64":
        notes.append(f"the vectors' inputs are float64, not rounded to {dtype}: the errors "
                     f"include the rounding of the inputs (write them with --dtype {dtype})")
    elif dtype != vdtype:
        notes.append(f"the vectors were written for {vdtype}; checking with {dtype} tolerances")
    results = []
    for name, case in vectors["cases"].items():
        actual = _load_results(results_dir, case)
        results.append(check_case(case, actual, dtype, mode=mode, k=k, rtol=rtol, atol=atol))
    return {"passed": all(c["passed"] for c in results), "dtype": dtype, "vectors_dtype": vdtype,
            "mode": mode, "k": k if mode == "baseline" else None,
            "vectors_dir": os.fspath(vectors_dir), "results_dir": os.fspath(results_dir),
            "notes": notes, "cases": results}


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def _where(o):
    if o["first_bad"] is None:
        return "-"
    index = str(tuple(o["first_bad"]))
    if o["first_bad_step"] is not None:
        return f"{o['seq_label']}={o['first_bad_step']} {index}"
    return index


def _status(o):
    if o["passed"]:
        return "ok"
    flags = [f"{o['nan']} NaN" if o["nan"] else "", f"{o['inf']} inf" if o["inf"] else ""]
    return "FAIL" + "".join(f" ({f})" for f in flags if f)


def format_report(report):
    """A table per case (one row per output) and a summary line."""
    mode = report["mode"]
    lines = [f"ssmref check: {report['dtype']} candidate, {mode} mode"
             + (f" (k = {report['k']:g})" if mode == "baseline" else "")
             + f", vectors {report['vectors_dir']} ({report['vectors_dtype']})"]
    lines += [f"note: {n}" for n in report.get("notes", [])]
    head = ("output", "shape", "scale", "max_abs", "max_rel",
            "naive_abs" if mode == "baseline" else "rtol", "tol_abs", "err/tol", "first bad", "")
    failures = []
    for c in report["cases"]:
        lines.append("")
        factor = (f", length factor {c['length_factor']:.2f}" if mode == "table" or c["notes"]
                  else "")
        lines.append(f"{c['name']} [{c['kind']}]  {'PASS' if c['passed'] else 'FAIL'}"
                     f"  (effective length {c['length']:.0f}{factor})")
        lines += [f"  note: {n}" for n in c["notes"]]
        rows = [head]
        for o in c["outputs"]:
            if mode == "baseline":       # E_naive, or the table's rtol where there is none
                third = (f"{o['err_naive']:.2e}" if o["err_naive"] is not None
                         else f"rtol {o['rtol']:.1e}")
            else:
                third = f"{o['rtol']:.2e}"
            rows.append((o["name"] + (" (grad)" if o["cls"] == "grad" else ""),
                         "(" + ", ".join(map(str, o["shape"])) + ")", f"{o['scale']:.2e}",
                         f"{o['max_abs']:.2e}", f"{o['max_rel']:.2e}", third, f"{o['tol_abs']:.2e}",
                         f"{o['worst']:.3g}", _where(o), _status(o)))
            if not o["passed"]:
                first = (f"first at {_where(o)}: got {o['bad_value']:.6g}, expected "
                         f"{o['bad_expected']:.6g}, |error| "
                         f"{abs(o['bad_value'] - o['bad_expected']):.3e} > tolerance "
                         f"{o['bad_tol']:.3e}")
                failures.append(f"{c['name']}/{o['name']}: max_abs {o['max_abs']:.3e} "
                                f"(max_rel {o['max_rel']:.3e}), {o['n_bad']} of "
                                f"{int(np.prod(o['shape']))} entries out of tolerance"
                                + (f" ({o['nan']} NaN)" if o["nan"] else "")
                                + (f" ({o['inf']} inf)" if o["inf"] else "") + f"; {first}")
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    n_out = sum(len(c["outputs"]) for c in report["cases"])
    lines.append("")
    lines += [f"FAIL {f}" for f in failures]
    if report["passed"]:
        lines.append(f"passed: {n_out} outputs in {len(report['cases'])} cases")
    else:
        n_cases = sum(not c["passed"] for c in report["cases"])
        lines.append(f"FAILED: {len(failures)} of {n_out} outputs in {n_cases} of "
                     f"{len(report['cases'])} cases out of tolerance or not finite")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Python API for other projects' tests
# ---------------------------------------------------------------------------------------------

def assert_matches(expected, actual, *, dtype="float64", kind=None, name="output", length=1,
                   rtol=None, atol=None):
    """Raise ``AssertionError`` (with the checker's table) unless ``actual`` matches ``expected``
    within the tolerance for ``dtype``.

    ``expected`` / ``actual``: arrays, or dicts ``name -> array`` (every expected key must be in
    ``actual``).  ``kind``: ``"value"`` (default) or ``"grad"`` picks the table's row; a case
    kind (``"ssm_scan"``, ``"policy"``, ...) picks the row and the sequence axis from each
    output's name.  ``length``: the effective length ``L`` of :func:`length_factor`.
    ``rtol`` / ``atol`` replace the table's values.  Arrays of another shape raise
    ``AssertionError`` too.
    """
    _check_dtype(dtype)
    single = not isinstance(expected, dict)
    if single:
        expected, actual = {name: expected}, {name: actual}
    elif not hasattr(actual, "keys"):
        raise ValueError(f"actual must be a dict like expected, got {type(actual).__name__}")
    if kind not in (None, "value", "grad") + KINDS:
        raise ValueError(f"kind must be 'value', 'grad' or one of {list(KINDS)}, got {kind!r}")
    rows = []
    for key, y in expected.items():
        y = np.asarray(y, dtype=np.float64)
        if key not in actual:
            raise AssertionError(f"{key}: missing from actual (has {sorted(actual)})")
        x = np.asarray(actual[key])
        if x.shape != y.shape:
            raise AssertionError(f"{key}: shape {x.shape}, expected {y.shape}")
        if kind in KINDS:
            cls, seq = output_class(kind, key), sequence_axis(kind, key)
        else:
            cls, seq = (kind or "value"), None
        r, a = tolerance(dtype, cls, length, rtol=rtol, atol=atol)
        res = compare(y, x, rtol=r, atol=a, seq_axis=seq)
        res.update(name=key, cls=cls)
        rows.append(res)
    case = {"name": name if single else (name if name != "output" else "arrays"),
            "kind": kind or "value", "length": float(length),
            "length_factor": length_factor(length), "passed": all(o["passed"] for o in rows),
            "notes": [], "outputs": rows}
    if not case["passed"]:
        report = {"passed": False, "dtype": dtype, "vectors_dtype": dtype, "mode": "table",
                  "k": None, "vectors_dir": "<arrays>", "results_dir": "<arrays>", "notes": [],
                  "cases": [case]}
        raise AssertionError("\n" + format_report(report))
    return case


def assert_case_matches(vectors_dir, results, case, dtype=None, *, mode="table", k=DEFAULT_K):
    """Raise ``AssertionError`` unless the outputs ``results`` of case ``case`` match the vectors.

    ``results``: a dict ``output name -> array`` (computed by the implementation under test, any
    float dtype or framework tensor converted with ``numpy()``), or a results directory holding
    ``<case>.npz``.  ``dtype`` defaults to the manifest's.  Returns the case report.
    """
    vectors = load_vectors(vectors_dir, [case])
    entry = vectors["cases"][case]
    actual = _load_results(results, entry) if isinstance(results, (str, os.PathLike)) else results
    try:
        rep = check_case(entry, actual, dtype, mode=mode, k=k, vectors_dtype=vectors["dtype"])
    except VectorsError as e:
        raise AssertionError(str(e)) from None
    if not rep["passed"]:
        report = {"passed": False, "dtype": dtype or vectors["dtype"],
                  "vectors_dtype": vectors["dtype"], "mode": mode,
                  "k": k if mode == "baseline" else None, "vectors_dir": os.fspath(vectors_dir),
                  "results_dir": "<arrays>", "notes": [], "cases": [rep]}
        raise AssertionError("\n" + format_report(report))
    return rep


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def add_vectors_arguments(parser):
    """Arguments of ``python -m ssmref vectors OUT_DIR [--dtype D] [--cases NAME ...]``."""
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write manifest.json "
                        "and one .npz per case to (created if needed)")
    parser.add_argument("--dtype", default="float64", choices=DTYPES,
                        help="round every float input to this dtype first (default float64)")
    parser.add_argument("--cases", nargs="+", metavar="NAME", default=None,
                        help=f"write only these cases (default all: {', '.join(CASES)})")
    return parser


def run_vectors(args):
    """Write the vectors; exit status 0, or 2 with a one-line message on stderr."""
    t0 = time.perf_counter()
    try:
        manifest = write_vectors(args.out_dir, args.dtype, args.cases)
    except (ValueError, OSError) as e:
        print(f"ssmref vectors: error: {_one_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {len(manifest['cases'])} cases ({args.dtype}) to {args.out_dir} in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def add_check_arguments(parser):
    """Arguments of ``python -m ssmref check VECTORS_DIR RESULTS_DIR [...]``."""
    parser.add_argument("vectors_dir", metavar="VECTORS_DIR", help="written by 'vectors'")
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="one <case>.npz per case: the outputs of the code under test")
    parser.add_argument("--dtype", default=None, choices=DTYPES,
                        help="the candidate's precision, which picks the tolerances "
                             "(default: the dtype the vectors were written for)")
    parser.add_argument("--mode", default="table", choices=("table", "baseline"),
                        help="table: per-dtype tolerances grown with sequence length; baseline: "
                             "error <= k x the naive computation's error in dtype + atol")
    parser.add_argument("--k", type=float, default=DEFAULT_K,
                        help=f"baseline mode's factor (default {DEFAULT_K:g})")
    parser.add_argument("--cases", nargs="+", metavar="NAME", default=None,
                        help="check only these cases (default: every case in the manifest)")
    parser.add_argument("--rtol", type=float, default=None, help="replace the table's rtol")
    parser.add_argument("--atol", type=float, default=None,
                        help="replace the table's atol (relative to each output's max |y|)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the report as JSON")
    return parser


def run_check(args):
    """Check; exit status 0 (all pass), 1 (some output out of tolerance or not finite), or 2
    (unusable input: a one-line message on stderr, no traceback)."""
    try:
        for flag in ("rtol", "atol"):
            v = getattr(args, flag, None)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{flag} must be a finite number >= 0, got {v}")
        report = check(args.vectors_dir, args.results_dir, dtype=args.dtype, mode=args.mode,
                       k=args.k, cases=args.cases, rtol=getattr(args, "rtol", None),
                       atol=getattr(args, "atol", None))
        if getattr(args, "json", None):
            text = json.dumps(report, indent=2, sort_keys=True) + "\n"
            P.atomic_write(args.json, lambda f: f.write(text.encode("utf-8")))
    except (ValueError, OSError) as e:
        print(f"ssmref check: error: {_one_line(e)}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report["passed"] else 1


def main(argv=None):
    """``python -m ssmref.crosscheck vectors|check ...`` (the same as ``python -m ssmref``)."""
    parser = argparse.ArgumentParser(prog="python -m ssmref.crosscheck",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    add_vectors_arguments(sub.add_parser("vectors", help="write the golden vectors"))
    add_check_arguments(sub.add_parser("check", help="check results against the vectors"))
    args = parser.parse_args(argv)
    return run_vectors(args) if args.command == "vectors" else run_check(args)


if __name__ == "__main__":
    sys.exit(main())
