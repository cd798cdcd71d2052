"""The structured SSMs in the kit: complex diagonal (S4D, S5) and diagonal-plus-low-rank (S4).

    diag       Λ̄ = exp(ΔΛ) (zoh) or (1 + ΔΛ/2)/(1 − ΔΛ/2) (bilinear), per state
               B̄ = (Λ̄ − 1)/Λ ⊙ B (zoh; Δ B where Λ = 0) or Δ/(1 − ΔΛ/2) ⊙ B (bilinear)
               x_t = Λ̄ ⊙ x_{t-1} + B̄ u_t (x_{-1} = h0),   y_t = s·Re(C x_t) + D u_t
               K[k] = s·Re(C diag(Λ̄^k) B̄)                    s = 1 ("re") or 2 ("2re")
    S4D        K[c, h, k] = s·Re(Σ_i C[c,h,i] B̄[h,i] Λ̄[h,i]^k)  (one step Δ_h per channel h)
    S5         y_t = s·Re(C x^f_t) + s·Re(C_b x^b_t) + D u_t; x^b runs from t = T-1 down to 0 with
               the same Λ̄, B̄; both directions include u_t
    DPLR (S4)  A = diag(Λ) − P Q^*,  Ā = (I − Δ/2 A)^{-1}(I + Δ/2 A),  B̄ = (I − Δ/2 A)^{-1} Δ B
               C̃ = C (I − Ā^L) (no conjugation),  K[k] = Re(C Ā^k B̄) computed from C̃
    VJPs       gradients of Σ gy·y + Re Σ conj(gx)·x_last (scan), Σ gK·K (kernel) w.r.t. every
               input; of a complex z in autograd's and JAX's convention ∂L/∂Re z − i ∂L/∂Im z
               (PyTorch's ``.grad`` is the conjugate, ∂L/∂Re z + i ∂L/∂Im z)

Effective length ``L = min(T, 1 / (1 − max_n |Λ̄_n|))``: the slowest mode's memory, from the per
state ``|exp(ΔΛ)| = exp(Δ Re Λ)`` (zoh) or ``|(1 + ΔΛ/2)/(1 − ΔΛ/2)|`` (bilinear); for DPLR the
spectral radius of ``Ā``.  Expected outputs come from :mod:`ssmref.structured`; the scans' (and
the bidirectional layer's) from the FFT convolution with the accurate kernel (``diag_convolve``),
whose error does not grow like ``ε / (1 − |Λ̄|)`` as any float64 recurrence's does.  Baseline mode:
:mod:`.structured_naive`; the 40-digit references: :mod:`.structured_ref`.
"""

import autograd
import autograd.numpy as np
import numpy as onp

from ssmref.crosscheck.families import structured_naive
from ssmref.crosscheck.families import structured_ref
from ssmref.crosscheck.kinds import Case, Kind, memory_length
from ssmref.structured import (bidirectional, diag_convolve, diag_discretize, diag_kernel,
                               dplr_discretize, dplr_kernel, dplr_truncate, init_diag, init_dplr,
                               s4d_kernel, s4d_lin)
from ssmref.checks import check_choice
from ssmref.structured import validate as structured_validate
from ssmref.crosscheck.families import structured_bounds

DIAG = ("Lambda", "B", "C", "D", "dt")
DPLR = ("Lambda", "P", "Q", "B", "dt")


def diag_params(x):
    """The complex diagonal params of a case's inputs (``D = 0`` for the kernel kinds)."""
    out = {k: x[k] for k in DIAG if k in x}
    if "D" not in out:
        out["D"] = onp.zeros((x["C"].shape[0], x["B"].shape[1]))
    return out


def _cn(rng, shape, var=1.0):
    # complex normal with E|z|² = var
    return onp.sqrt(var / 2.0) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def _system(rng, n, m, p, init, dt, per_state):
    prm = init_diag(n, m, p, rng=rng, init=init, dt_min=dt[0], dt_max=dt[1],
                    dt_per_state=per_state)
    return {k: onp.asarray(v) for k, v in prm.items()}


# ---------------------------------------------------------------------------------------------
# The cases: inputs and the float64 reference
# ---------------------------------------------------------------------------------------------

def _build_discretize(method):
    def build(rng):
        if method == "zoh":            # random Λ, one Λ = 0 state, Δ from 1e-6 to 1e-1
            prm = _system(rng, 8, 2, 1, "random", (1e-6, 1e-1), True)
            prm["Lambda"][0] = 0.0
        else:                          # S4D-LegS, |ΔΛ| across the series, atanh, reflection branches
            prm = _system(rng, 8, 2, 1, "legs", (1e-3, 1.0), True)
        return {k: prm[k] for k in ("Lambda", "B", "dt")}, {"method": method}
    return build


def _compute_discretize(x, a):
    lam_bar, B_bar = diag_discretize(x["Lambda"], x["B"], x["dt"], a["method"])
    return {"Lambda_bar": lam_bar, "B_bar": B_bar}


def _build_scan(*, n, init, dt, per_state, batch, T, method, output, vjp=False, m=2, p=3):
    def build(rng):
        x = _system(rng, n, m, p, init, dt, per_state)
        x["u"] = rng.standard_normal((batch, T, m))             # (batch, T, m) real
        x["h0"] = _cn(rng, (batch, n))                          # (batch, n) complex
        if vjp:
            x["gy"] = rng.standard_normal((batch, T, p))        # cotangent of y
            x["gx"] = _cn(rng, (batch, n))                      # cotangent of x_last
        return x, {"method": method, "output": output}
    return build


def _compute_scan(x, a):
    y, x_last = diag_convolve(diag_params(x), x["u"], x["h0"], method=a["method"],
                              output=a["output"])
    return {"y": y, "x_last": x_last}


def _compute_scan_vjp(x, a):
    def total(args):
        prm = {k: args[k] for k in DIAG}
        y, x_last = diag_convolve(prm, args["u"], args["h0"], method=a["method"],
                                  output=a["output"])
        return np.sum(x["gy"] * y) + np.sum(np.real(np.conj(x["gx"]) * x_last))

    g = autograd.grad(total)({k: x[k] for k in (*DIAG, "u", "h0")})
    return dict(_compute_scan(x, a), **{"d" + k: v for k, v in g.items()})


def _build_kernel(*, n, init, dt, per_state, length, method, output, m=2, p=2, vjp=False):
    def build(rng):
        x = _system(rng, n, m, p, init, dt, per_state)
        del x["D"]
        if vjp:
            x["gK"] = rng.standard_normal((length, p, m))       # cotangent of K
        return x, {"length": length, "method": method, "output": output}
    return build


def _compute_kernel(x, a):
    return {"K": diag_kernel(diag_params(x), a["length"], method=a["method"], output=a["output"])}


def _compute_kernel_vjp(x, a):
    def total(args):
        K = diag_kernel(dict(diag_params(x), **args), a["length"], method=a["method"],
                        output=a["output"])
        return np.sum(x["gK"] * K)

    g = autograd.grad(total)({k: x[k] for k in ("Lambda", "B", "C", "dt")})
    return dict(_compute_kernel(x, a), **{"d" + k: v for k, v in g.items()})


def _build_s4d(H, N, c, length):
    def build(rng):                    # S4D-Lin copies per channel, log-uniform step per channel
        return {"Lambda": onp.tile(s4d_lin(N), (H, 1)), "B": _cn(rng, (H, N)),
                "C": _cn(rng, (c, H, N), 1.0 / N),
                "dt": onp.exp(rng.uniform(onp.log(1e-3), onp.log(1e-1), H))}, \
            {"length": length, "method": "zoh", "output": "2re"}
    return build


def _compute_s4d(x, a):
    prm = dict(x, D=onp.zeros(x["C"].shape[:2]))
    return {"K": s4d_kernel(prm, a["length"], method=a["method"], output=a["output"])}


def _build_bidirectional(rng):         # S5: P 16 (S4D-LegS halves), H 3, a step per state
    x = _system(rng, 16, 3, 3, "legs", (1e-3, 1e-1), True)
    x["Cb"] = _cn(rng, (3, 16), 1.0 / 16)                       # C2 of S5's C̃ = [C1, C2]
    x["u"] = rng.standard_normal((2, 512, 3))
    return x, {"method": "zoh", "output": "2re"}


def _compute_bidirectional(x, a):
    y = bidirectional(diag_params(x), {"C": x["Cb"]}, x["u"], method=a["method"],
                      output=a["output"], mode="convolve")
    return {"y": y}


def _build_dplr(kind, N=16, m=1, p=2, dt=0.01, length=1024):
    def build(rng):                    # HiPPO-LegS, all N states (conjugate-closed), Q = P
        prm = init_dplr(N, m, p, rng=rng, dt=dt)
        x = {k: onp.asarray(prm[k]) for k in DPLR}
        if kind == "dplr_truncate":
            x["C"] = prm["C"]
        elif kind == "dplr_kernel":
            x["Ct"] = _cn(rng, (p, N), 1.0 / N)                 # C̃ is what S4 trains
        return x, ({} if kind == "dplr_discretize" else {"length": length})
    return build


def _compute_dplr(kind):
    def compute(x, a):
        if kind == "dplr_discretize":
            A_bar, B_bar = dplr_discretize(x)
            return {"A_bar": A_bar, "B_bar": B_bar}
        if kind == "dplr_truncate":
            return {"Ct": dplr_truncate(x, a["length"])}
        return {"K": dplr_kernel(x, a["length"])}
    return compute


_SCAN = "x_t = Λ̄ x_{t-1} + B̄ u_t, y_t = s Re(C x_t) + D u_t from h0"
_LEGS, _LIN, _RND = "S4D-LegS halves", "S4D-Lin halves", "random Λ (no conjugate pairs)"

CASES = [
    Case("diag_discretize_zoh", kind="diag_discretize", build=_build_discretize("zoh"),
         compute=_compute_discretize,
         doc="Λ̄ = exp(ΔΛ), B̄ = expm1(ΔΛ)/Λ B; n 8, m 2, Δ per state 1e-6..1e-1, one Λ = 0"),
    Case("diag_discretize_bilinear", kind="diag_discretize", build=_build_discretize("bilinear"),
         compute=_compute_discretize, doc=f"bilinear; {_LEGS} n 8, Δ per state 1e-3..1"),
    Case("diag_scan_zoh_2re", kind="diag_scan",
         build=_build_scan(n=16, init="legs", dt=(1e-3, 1e-1), per_state=True, batch=2, T=1000,
                           method="zoh", output="2re"),
         compute=_compute_scan,
         doc=f"{_SCAN}; {_LEGS} n 16, Δ per state, batch 2, T 1000"),
    Case("diag_scan_zoh_re", kind="diag_scan",
         build=_build_scan(n=16, init="random", dt=(0.05, 0.05), per_state=False, batch=2, T=512,
                           method="zoh", output="re"),
         compute=_compute_scan,
         doc=f"{_RND} n 16, scalar Δ 0.05, T 512"),
    Case("diag_scan_bilinear_2re", kind="diag_scan",
         build=_build_scan(n=16, init="lin", dt=(1e-3, 1e-1), per_state=True, batch=2, T=512,
                           method="bilinear", output="2re"),
         compute=_compute_scan,
         doc=f"bilinear; {_LIN} n 16, Δ per state, T 512"),
    Case("diag_scan_bilinear_re", kind="diag_scan",
         build=_build_scan(n=8, init="random", dt=(0.1, 0.1), per_state=False, batch=3, T=256,
                           method="bilinear", output="re"),
         compute=_compute_scan,
         doc=f"bilinear; {_RND} n 8, scalar Δ 0.1, T 256"),
    Case("diag_scan_slow", kind="diag_scan",
         build=_build_scan(n=8, init="lin", dt=(5e-4, 1e-3), per_state=True, batch=1, T=4096,
                           method="zoh", output="2re"),
         compute=_compute_scan,
         doc=f"a slow system: {_LIN} n 8, Δ 5e-4..1e-3 (memory 2000-4000 steps), T 4096"),
    Case("diag_scan_vjp_zoh", kind="diag_scan_vjp",
         build=_build_scan(n=8, init="legs", dt=(1e-3, 1e-1), per_state=True, batch=2, T=256,
                           method="zoh", output="2re", vjp=True),
         compute=_compute_scan_vjp,
         doc=f"gradients of Σ gy·y + Re Σ conj(gx)·x_last; {_LEGS} n 8, Δ per state, T 256"),
    Case("diag_scan_vjp_bilinear", kind="diag_scan_vjp",
         build=_build_scan(n=8, init="random", dt=(0.05, 0.05), per_state=False, batch=2, T=128,
                           method="bilinear", output="re", vjp=True),
         compute=_compute_scan_vjp, doc=f"the same, bilinear; {_RND} n 8, scalar Δ 0.05, T 128"),
    Case("diag_kernel_L4096", kind="diag_kernel",
         build=_build_kernel(n=32, init="lin", dt=(1e-3, 1e-1), per_state=True, length=4096,
                             method="zoh", output="2re"),
         compute=_compute_kernel,
         doc=f"K[k] = s Re(C Λ̄^k B̄), 4096 lags; {_LIN} n 32, Δ per state, m 2, p 2"),
    Case("diag_kernel_bilinear", kind="diag_kernel",
         build=_build_kernel(n=16, init="legs", dt=(0.05, 0.05), per_state=False, length=1024,
                             method="bilinear", output="2re"),
         compute=_compute_kernel,
         doc=f"bilinear, 1024 lags; {_LEGS} n 16, scalar Δ 0.05"),
    Case("diag_kernel_vjp", kind="diag_kernel_vjp",
         build=_build_kernel(n=8, init="legs", dt=(1e-3, 1e-1), per_state=True, length=512,
                             method="zoh", output="2re", m=1, vjp=True),
         compute=_compute_kernel_vjp,
         doc=f"gradients of Σ gK·K w.r.t. Λ, B, C, Δ; {_LEGS} n 8, Δ per state, 512 lags"),
    Case("s4d_kernel", kind="s4d_kernel", build=_build_s4d(4, 16, 2, 2048), compute=_compute_s4d,
         doc="S4D's (c, H, L) kernel: H 4 channels of S4D-Lin N 16, c 2, Δ per channel, L 2048"),
    Case("s5_bidirectional", kind="bidirectional", build=_build_bidirectional,
         compute=_compute_bidirectional,
         doc="S5's bidirectional layer (shared Λ̄, B̄; C1, C2): P 16, H 3, Δ per state, T 512"),
    Case("dplr_discretize", kind="dplr_discretize", build=_build_dplr("dplr_discretize", m=2),
         compute=_compute_dplr("dplr_discretize"),
         doc="S4's bilinear Ā, B̄; HiPPO-LegS N 16, m 2, Δ 0.01"),
    Case("dplr_truncate", kind="dplr_truncate", build=_build_dplr("dplr_truncate"),
         compute=_compute_dplr("dplr_truncate"),
         doc="C̃ = C (I − Ā^L); HiPPO-LegS N 16, p 2, L 1024"),
    Case("dplr_kernel", kind="dplr_kernel", build=_build_dplr("dplr_kernel"),
         compute=_compute_dplr("dplr_kernel"),
         doc="K[k] = Re(C Ā^k B̄) from a random C̃; HiPPO-LegS N 16, m 1, p 2, Δ 0.01, L 1024"),
]


# ---------------------------------------------------------------------------------------------
# The checker's rules: validation, effective length, output classes, sequence axes
# ---------------------------------------------------------------------------------------------

def _options(a, method=True, output=True, length=False):
    if method:
        check_choice("attrs.method", a.get("method"), structured_validate.METHODS)
    if output:
        check_choice("attrs.output", a.get("output"), structured_validate.OUTPUTS)
    if length:
        L = a.get("length")
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ValueError(f"attrs.length must be a positive int, got {L!r}")


def _shape(x, name, want):
    if x[name].shape != tuple(want):
        raise ValueError(f"{name} has shape {x[name].shape}, expected {tuple(want)}")


def _validate_discretize(x, a):
    _options(a, output=False)
    diag_discretize(x["Lambda"], x["B"], x["dt"], a["method"])        # shapes, Δ > 0, the pole


def _validate_diag(x, a, sequence=True, vjp=False, kernel=False):
    _options(a, length=kernel)
    _, (m, n, p) = structured_validate.diag_params(diag_params(x))
    if sequence:
        if x["u"].ndim != 3 or x["u"].shape[2] != m or x["u"].shape[1] < 1:
            raise ValueError(f"u has shape {x['u'].shape}, expected (batch, T, {m})")
        b, T = x["u"].shape[:2]
        for k, want in (("h0", (b, n)), ("gy", (b, T, p)), ("gx", (b, n)), ("Cb", (p, n))):
            if k in x:
                _shape(x, k, want)
    if vjp and kernel:
        _shape(x, "gK", (a["length"], p, m))


def _validate_s4d(x, a):
    _options(a, length=True)
    if x["Lambda"].ndim != 2:
        raise ValueError(f"Lambda has shape {x['Lambda'].shape}, expected (H, N)")
    H, N = x["Lambda"].shape
    structured_validate.complex_array("Lambda", x["Lambda"], (H, N))                     # finite, not bool
    structured_validate.complex_array("B", x["B"], (H, N))
    structured_validate.complex_array("C", x["C"], (None, H, N))
    if x["dt"].shape != (H,):
        raise ValueError(f"dt has shape {x['dt'].shape}, expected ({H},): one step per channel")
    structured_validate.step("dt", x["dt"], H)


def _validate_dplr(kind):
    def validate(x, a):
        _options(a, method=False, output=False, length=kind != "dplr_discretize")
        Lam, P, Q, B, dt = structured_validate.dplr_args(x)
        if kind != "dplr_discretize":
            structured_validate.output_matrix(x, "C" if kind == "dplr_truncate" else "Ct", Lam.shape[0])
    return validate


def _max_modulus(Lam, dt, method):
    # max_n |Λ̄_n|, per state, without forming Λ̄
    z = onp.asarray(dt) * onp.asarray(Lam)
    with onp.errstate(all="ignore"):
        rho = onp.exp(z.real) if method == "zoh" else onp.abs((1 + z / 2) / (1 - z / 2))
    return float(onp.max(rho))


def _diag_length(x, a):
    T = x["u"].shape[1] if "u" in x else a["length"]
    return memory_length(T, _max_modulus(x["Lambda"], x["dt"], a["method"]))


def _s4d_length(x, a):
    return memory_length(a["length"], _max_modulus(x["Lambda"], x["dt"][:, None], a["method"]))


def _dplr_length(x, a):
    if "length" not in a:
        return 1.0
    A = onp.diag(x["Lambda"]) - x["P"] @ x["Q"].conj().T
    half = float(x["dt"]) / 2 * A
    eye = onp.eye(A.shape[0])
    A_bar = onp.linalg.solve(eye - half, eye + half)
    return memory_length(a["length"], float(onp.max(onp.abs(onp.linalg.eigvals(A_bar)))))


def _scan_vjp_condition(x, a):
    """``ddt``'s cancellation with one ``Δ`` for every state (a sum over the states' terms)."""
    if onp.shape(x["dt"]) != ():
        return {}
    return {"ddt": structured_bounds.diag_scan_vjp_dt_bound(x, a, 1.0)}


def _grads(*names):
    return lambda name: "grad" if name in names else "value"


def _axis(axis, label, *names):
    return lambda name: (axis, label) if name in names else None


_SCAN_GRADS = ("dLambda", "dB", "dC", "dD", "ddt", "du", "dh0")
_DIAG_C = ("Lambda", "B", "C")
_DPLR_C = ("Lambda", "P", "Q", "B")

KINDS = [
    Kind("diag_discretize", required_inputs=("Lambda", "B", "dt"), validate=_validate_discretize,
         naive=structured_naive.discretize, complex_inputs=("Lambda", "B"), reference=structured_ref.discretize),
    Kind("diag_scan", required_inputs=(*DIAG, "u", "h0"), validate=_validate_diag,
         effective_length=_diag_length,
         sequence_axis=_axis(1, "t", "y"), naive=structured_naive.scan,
         complex_inputs=(*_DIAG_C, "h0"), reference=structured_ref.scan),
    Kind("diag_scan_vjp", required_inputs=(*DIAG, "u", "h0", "gy", "gx"),
         validate=lambda x, a: _validate_diag(x, a, vjp=True), effective_length=_diag_length,
         output_class=_grads(*_SCAN_GRADS),
         sequence_axis=_axis(1, "t", "y", "du"),
         naive=structured_naive.scan_vjp, complex_inputs=(*_DIAG_C, "h0", "gx"),
         reference=structured_ref.scan_vjp, condition=_scan_vjp_condition),
    Kind("diag_kernel", required_inputs=("Lambda", "B", "C", "dt"),
         validate=lambda x, a: _validate_diag(x, a, sequence=False, kernel=True),
         effective_length=_diag_length,
         sequence_axis=_axis(0, "k", "K"), naive=structured_naive.kernel, complex_inputs=_DIAG_C,
         reference=structured_ref.kernel),
    Kind("diag_kernel_vjp", required_inputs=("Lambda", "B", "C", "dt", "gK"),
         validate=lambda x, a: _validate_diag(x, a, sequence=False, vjp=True, kernel=True),
         effective_length=_diag_length,
         output_class=_grads("dLambda", "dB", "dC", "ddt"), sequence_axis=_axis(0, "k", "K"),
         naive=structured_naive.kernel_vjp,
         complex_inputs=_DIAG_C, reference=structured_ref.kernel_vjp),
    Kind("s4d_kernel", required_inputs=("Lambda", "B", "C", "dt"), validate=_validate_s4d,
         effective_length=_s4d_length,
         sequence_axis=_axis(2, "k", "K"), naive=structured_naive.s4d_kernel, complex_inputs=_DIAG_C,
         reference=structured_ref.s4d_kernel),
    Kind("bidirectional", required_inputs=(*DIAG, "Cb", "u"), validate=_validate_diag,
         effective_length=_diag_length,
         sequence_axis=_axis(1, "t", "y"), naive=structured_naive.bidirectional,
         complex_inputs=(*_DIAG_C, "Cb"), reference=structured_ref.bidirectional),
    Kind("dplr_discretize", required_inputs=DPLR,
         validate=_validate_dplr("dplr_discretize"), naive=structured_naive.dplr_discretize,
         complex_inputs=_DPLR_C, reference=structured_ref.dplr_discretize),
    Kind("dplr_truncate", required_inputs=(*DPLR, "C"), validate=_validate_dplr("dplr_truncate"),
         effective_length=_dplr_length,
         naive=structured_naive.dplr_truncate, complex_inputs=(*_DPLR_C, "C"), reference=structured_ref.dplr_truncate),
    Kind("dplr_kernel", required_inputs=(*DPLR, "Ct"), validate=_validate_dplr("dplr_kernel"),
         effective_length=_dplr_length,
         sequence_axis=_axis(0, "k", "K"), naive=structured_naive.dplr_kernel,
         complex_inputs=(*_DPLR_C, "Ct"), reference=structured_ref.dplr_kernel),
]
