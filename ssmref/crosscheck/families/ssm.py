"""The dense linear SSM in the kit: scan, step, kernel, gradients and discretization.

    h_t = A h_{t-1} + B u_t,    y_t = C h_t + D u_t    (from h0; the output reads the NEW state)
    K[k] = C A^k B                                     (ssm_kernel)
    λ_t = Cᵀ gy_t + Aᵀ λ_{t+1},  λ_{T-1} = Cᵀ gy_{T-1} + gh      (the VJP of ssm_scan_vjp)

Effective length: ``L = min(T, 1 / (1 − ρ(A)))``, ``ρ`` the spectral radius (errors decay like
``ρ^k``).  Baseline mode's naive computations, rounded after every operation: the plain
recurrence (and the reverse recurrence, the powers ``A^k B``, the direct discretization formulas),
and for the scan, its gradients and the kernel also the log-depth forms
(:mod:`.ssm_log_depth`: associative scan, doubling).  Certification (``ref_error``): the 40-digit
recomputations of :mod:`.ssm_ref`.
"""

import autograd
import autograd.numpy as np
import numpy as onp
import scipy.linalg

from ssmref import ssm
from ssmref.crosscheck.families import ssm_ref
from ssmref.crosscheck.families.ssm_log_depth import (log_depth_kernel, log_depth_scan,
                                                      log_depth_vjp, vjp_outputs)
from ssmref.crosscheck.kinds import Case, Kind, memory_length
from ssmref.ssm.recurrent import ssm_loop, ssm_step_core

PARAMS = ssm.PARAM_NAMES


def _params(inputs):
    return {k: inputs[k] for k in PARAMS}


# ---------------------------------------------------------------------------------------------
# The cases: inputs and the float64 reference
# ---------------------------------------------------------------------------------------------

def _build_scan(*, batch, T, n, m, p, rho):
    def build(rng):
        params = ssm.init_ssm(m, n, p, rng=rng, scale=rho)  # rho(A) = rho; B, C, D fan-in scaled
        u = rng.standard_normal((batch, T, m))                # (batch, T, m)
        h0 = rng.standard_normal((batch, n))                  # (batch, n)
        return dict(params, u=u, h0=h0), {"spectral_radius": rho}
    return build


def _compute_scan(x, attrs):
    y, h_last = ssm.ssm_scan(_params(x), x["u"], x["h0"])
    return {"y": y, "h_last": h_last}


def _build_step(rng):
    params = ssm.init_ssm(3, 16, 2, rng=rng, scale=0.95)
    h = 2.0 * rng.standard_normal((4, 16))                        # a state of realistic size
    u = rng.standard_normal((4, 3))
    return dict(params, h=h, u=u), {"spectral_radius": 0.95}


def _compute_step(x, attrs):
    y, h_next = ssm.ssm_step(_params(x), x["h"], x["u"])
    return {"h_next": h_next, "y": y}


def _build_kernel(rng):
    params = ssm.init_ssm(2, 16, 3, rng=rng, scale=0.99)
    return {k: params[k] for k in ("A", "B", "C")}, {"length": 1000, "spectral_radius": 0.99}


def _compute_kernel(x, attrs):
    p, m = x["C"].shape[0], x["B"].shape[1]
    return {"K": ssm.ssm_kernel(dict(x, D=onp.zeros((p, m))), int(attrs["length"]))}


def build_vjp(*, batch, T, n, m, p, rho):
    """The builder of an ``ssm_scan_vjp`` case (public for the tests)."""
    def build(rng):
        inputs, attrs = _build_scan(batch=batch, T=T, n=n, m=m, p=p, rho=rho)(rng)
        inputs["gy"] = rng.standard_normal((batch, T, p))        # cotangent of y
        inputs["gh"] = rng.standard_normal((batch, n))           # cotangent of h_last
        return inputs, attrs
    return build


def compute_vjp(x, attrs):
    """The expected outputs of an ``ssm_scan_vjp`` case (public for the tests)."""
    # The FFT form's gradients equal the recurrence's to ~1e-15 relative (docs/ssm.md) and are
    # much faster under autograd for long sequences.
    run = ssm.ssm_scan if x["u"].shape[1] <= 256 else ssm.ssm_convolve

    def total(args):
        y, h_last = run({k: args[k] for k in PARAMS}, args["u"], args["h0"])
        return np.sum(x["gy"] * y) + np.sum(x["gh"] * h_last)

    g = autograd.grad(total)({k: x[k] for k in (*PARAMS, "u", "h0")})
    out = _compute_scan(x, attrs)
    out.update({"d" + k: g[k] for k in (*PARAMS, "u", "h0")})
    return out


def _build_discretize(method):
    def build(rng):
        if method == "zoh":      # a random, non-normal Hurwitz matrix (eigenvalues Re < -0.5)
            n, m = 6, 2
            G = rng.standard_normal((n, n)) / onp.sqrt(n)
            A = G - (onp.max(onp.linalg.eigvals(G).real) + 0.5) * onp.eye(n)
        else:                    # HiPPO-LegS, the S4 matrix that is discretized with bilinear
            n, m = 8, 2
            A, b = ssm.hippo_legs(n)
            A = A.copy()
        B = rng.standard_normal((n, m)) / onp.sqrt(m)
        return {"A": A, "B": B, "dt": onp.array(0.1)}, {"method": method}
    return build


def _compute_discretize(x, attrs):
    Ad, Bd = ssm.discretize(x["A"], x["B"], float(x["dt"]), method=attrs["method"])
    return {"Ad": Ad, "Bd": Bd}


_SCAN = "h_t = A h_{t-1} + B u_t, y_t = C h_t + D u_t from h0"

CASES = [
    Case("ssm_scan", kind="ssm_scan",
         build=_build_scan(batch=3, T=64, n=8, m=2, p=3, rho=0.9), compute=_compute_scan,
         doc=f"{_SCAN}; batch 3, T 64, n 8, m 2, p 3, rho 0.9 (the contract's case)"),
    Case("ssm_scan_T1000", kind="ssm_scan",
         build=_build_scan(batch=2, T=1000, n=16, m=2, p=3, rho=0.9), compute=_compute_scan,
         doc="T 1000 (not a power of two), n 16, rho 0.9"),
    Case("ssm_scan_T2049", kind="ssm_scan",
         build=_build_scan(batch=2, T=2049, n=16, m=2, p=3, rho=0.95), compute=_compute_scan,
         doc="T 2049 (crosses 2048), n 16, rho 0.95"),
    Case("ssm_scan_long", kind="ssm_scan",
         build=_build_scan(batch=1, T=16384, n=16, m=2, p=3, rho=0.99), compute=_compute_scan,
         doc="one long sequence, T 16384, n 16, rho 0.99"),
    Case("ssm_scan_rho0999", kind="ssm_scan",
         build=_build_scan(batch=2, T=4096, n=16, m=2, p=3, rho=0.999), compute=_compute_scan,
         doc="spectral radius 0.999 (memory ~1000 steps), T 4096, n 16"),
    Case("ssm_scan_n1", kind="ssm_scan",
         build=_build_scan(batch=3, T=256, n=1, m=2, p=3, rho=0.9), compute=_compute_scan,
         doc="state size 1, T 256"),
    Case("ssm_scan_n64", kind="ssm_scan",
         build=_build_scan(batch=2, T=512, n=64, m=2, p=3, rho=0.95), compute=_compute_scan,
         doc="state size 64, T 512, rho 0.95"),
    Case("ssm_step", kind="ssm_step", build=_build_step, compute=_compute_step,
         doc="h_next = A h + B u, y = C h_next + D u; batch 4, n 16, m 3, p 2"),
    Case("ssm_kernel", kind="ssm_kernel", build=_build_kernel, compute=_compute_kernel,
         doc="K[k] = C A^k B, k < 1000; n 16, m 2, p 3, rho 0.99"),
    Case("ssm_scan_vjp", kind="ssm_scan_vjp",
         build=build_vjp(batch=3, T=64, n=8, m=2, p=3, rho=0.9), compute=compute_vjp,
         doc="gradients of sum(gy*y) + sum(gh*h_last) w.r.t. A, B, C, D, u, h0; T 64"),
    Case("ssm_scan_vjp_T2049", kind="ssm_scan_vjp",
         build=build_vjp(batch=2, T=2049, n=16, m=2, p=3, rho=0.95), compute=compute_vjp,
         doc="the same for T 2049, n 16, rho 0.95"),
    Case("discretize_zoh", kind="discretize",
         build=_build_discretize("zoh"), compute=_compute_discretize,
         doc="zero-order hold of a non-normal Hurwitz A (n 6), dt 0.1"),
    Case("discretize_bilinear", kind="discretize",
         build=_build_discretize("bilinear"), compute=_compute_discretize,
         doc="bilinear (S4) of HiPPO-LegS (n 8), dt 0.1"),
]


# ---------------------------------------------------------------------------------------------
# The checker's rules: validation, effective length, output classes, sequence axes
# ---------------------------------------------------------------------------------------------

def _validate_sequence(x, attrs, with_cotangents):
    m, n, p = ssm.ssm_dims(_params(x))
    u = x["u"]
    if u.ndim != 3 or u.shape[2] != m or u.shape[1] < 1:
        raise ValueError(f"u has shape {u.shape}, expected (batch, T, {m})")
    b, T = u.shape[:2]
    want = {"h0": (b, n), "gy": (b, T, p), "gh": (b, n)}
    for k in ("h0", "gy", "gh") if with_cotangents else ("h0",):
        if x[k].shape != want[k]:
            raise ValueError(f"{k} has shape {x[k].shape}, expected {want[k]}")


def _validate_step(x, attrs):
    m, n, p = ssm.ssm_dims(_params(x))
    b = x["h"].shape[0] if x["h"].ndim == 2 else None
    if x["h"].shape != (b, n) or x["u"].shape != (b, m):
        raise ValueError(f"h {x['h'].shape} and u {x['u'].shape} must be (batch, {n}) "
                         f"and (batch, {m})")


def _validate_kernel(x, attrs):
    A, B, C = x["A"], x["B"], x["C"]
    if A.ndim != 2 or B.ndim != 2 or C.ndim != 2 or A.shape != (B.shape[0],) * 2 \
            or C.shape[1] != A.shape[0]:
        raise ValueError(f"A {A.shape}, B {B.shape}, C {C.shape} must be (n, n), (n, m), (p, n)")
    length = attrs.get("length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"attrs.length must be a positive int, got {length!r}")


def _validate_discretize(x, attrs):
    A, B, dt = x["A"], x["B"], x["dt"]
    if A.ndim != 2 or A.shape[0] != A.shape[1] or B.ndim != 2 or B.shape[0] != A.shape[0] \
            or dt.shape != ():
        raise ValueError(f"A {A.shape}, B {B.shape}, dt {dt.shape} must be (n, n), (n, m), ()")
    if attrs.get("method") not in ("zoh", "bilinear"):
        raise ValueError(f"attrs.method must be 'zoh' or 'bilinear', got {attrs.get('method')!r}")


def _validate_kernel_outputs(outputs, x, attrs):
    p, m = x["C"].shape[0], x["B"].shape[1]
    if outputs["K"].shape != (attrs["length"], p, m):
        raise ValueError(f"expected output K has shape {outputs['K'].shape}, but attrs.length "
                         f"{attrs['length']} with C {x['C'].shape} and B {x['B'].shape} means "
                         f"{(attrs['length'], p, m)}")


def _sequence_length(x, attrs):
    return memory_length(x["u"].shape[1], ssm.spectral_radius(x["A"]))


def _kernel_length(x, attrs):
    return memory_length(int(attrs["length"]), ssm.spectral_radius(x["A"]))


def _vjp_class(name):
    return "grad" if name in ("dA", "dB", "dC", "dD", "du", "dh0") else "value"


def _time_axis_of(*names):
    return lambda name: (1, "t") if name in names else None


# ---------------------------------------------------------------------------------------------
# Baseline mode: the naive computation, every operation rounded by R (products accumulate in
# the working dtype `work`)
# ---------------------------------------------------------------------------------------------

def _naive_recurrence(x, R, work):
    A, B, C, D = (R(onp.asarray(x[k], dtype=work)) for k in PARAMS)
    u, h0 = R(onp.asarray(x["u"], dtype=work)), R(onp.asarray(x["h0"], dtype=work))
    y, H = ssm_loop({"A": A, "B": B, "C": C, "D": D}, u, h0, R)     # the definition, rounded by R
    return (A, B, C, D, u), H, y


def _naive_scan(x, attrs, R, work):
    _, H, y = _naive_recurrence(x, R, work)
    return {"y": y, "h_last": H[:, -1]}


def _naive_step(x, attrs, R, work):
    params = {k: R(onp.asarray(x[k], dtype=work)) for k in PARAMS}
    h, u = R(onp.asarray(x["h"], dtype=work)), R(onp.asarray(x["u"], dtype=work))
    y, h_next = ssm_step_core(params, h, u, R)                     # the definition, rounded by R
    return {"h_next": h_next, "y": y}


def _naive_vjp(x, attrs, R, work):
    (A, B, C, D, u), H, y = _naive_recurrence(x, R, work)
    gy, gh = R(onp.asarray(x["gy"], dtype=work)), R(onp.asarray(x["gh"], dtype=work))
    h0 = R(onp.asarray(x["h0"], dtype=work))
    Cg = R(gy @ C)                                        # (b, T, n): C^T gy_t
    T = u.shape[1]
    lam = R(Cg[:, T - 1] + gh)                            # lambda_{T-1} = C^T gy + gh
    lams = [lam]
    for t in range(T - 2, -1, -1):
        lam = R(Cg[:, t] + R(lam @ A))                    # lambda_t = C^T gy_t + A^T lambda_{t+1}
        lams.append(lam)
    L = onp.stack(lams[::-1], axis=1)                     # (b, T, n)
    return vjp_outputs(A, B, C, D, u, h0, gy, H, L, R)


def _naive_kernel(x, attrs, R, work):
    A, B, C = (R(onp.asarray(x[k], dtype=work)) for k in ("A", "B", "C"))
    X, Ks = B, []
    for _ in range(int(attrs["length"])):
        Ks.append(R(C @ X))                               # K[k] = C (A^k B)
        X = R(A @ X)
    return {"K": onp.stack(Ks)}


def _naive_discretize(x, attrs, R, work):
    A, B = R(onp.asarray(x["A"], dtype=work)), R(onp.asarray(x["B"], dtype=work))
    dt = R(onp.asarray(x["dt"], dtype=work))
    n, m = B.shape
    if attrs["method"] == "zoh":
        block = R(dt * onp.block([[A, B], [onp.zeros((m, n + m), dtype=work)]]))
        E = R(scipy.linalg.expm(block))                   # expm in the working precision
        return {"Ad": E[:n, :n], "Bd": E[:n, n:]}
    I = onp.eye(n, dtype=work)
    half = R(R(dt / 2) * A)
    left, right = R(I - half), R(I + half)
    return {"Ad": R(onp.linalg.solve(left, right)), "Bd": R(onp.linalg.solve(left, R(dt * B)))}


KINDS = [
    Kind("ssm_scan", required_inputs=("A", "B", "C", "D", "u", "h0"),
         validate=lambda x, a: _validate_sequence(x, a, False), effective_length=_sequence_length,
         sequence_axis=_time_axis_of("y"), naive=_naive_scan, log_depth=log_depth_scan,
         reference=ssm_ref.scan),
    Kind("ssm_step", required_inputs=("A", "B", "C", "D", "h", "u"),
         validate=_validate_step, naive=_naive_step,
         reference=ssm_ref.step),
    Kind("ssm_kernel", required_inputs=("A", "B", "C"), validate=_validate_kernel,
         effective_length=_kernel_length,
         sequence_axis=lambda name: (0, "k") if name == "K" else None, naive=_naive_kernel,
         log_depth=log_depth_kernel, validate_outputs=_validate_kernel_outputs,
         reference=ssm_ref.kernel),
    Kind("ssm_scan_vjp", required_inputs=("A", "B", "C", "D", "u", "h0", "gy", "gh"),
         validate=lambda x, a: _validate_sequence(x, a, True), effective_length=_sequence_length,
         output_class=_vjp_class,
         sequence_axis=_time_axis_of("y", "du"), naive=_naive_vjp,
         log_depth=log_depth_vjp, reference=ssm_ref.scan_vjp),
    Kind("discretize", required_inputs=("A", "B", "dt"),
         validate=_validate_discretize, naive=_naive_discretize,
         reference=ssm_ref.discretize),
]
