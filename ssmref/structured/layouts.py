"""S4D's per-channel layout, and the real parametrisation S4D trains.

**Per-channel step (S4D).**  S4D runs ``H`` independent single-input single-output diagonal systems,
one per channel (feature) ``h``, each with its own copy of the eigenvalues ``Λ_h (N,)``, its own
``B_h (N,)``, ``C_{c,h} (N,)`` for ``c`` output channels, and its own step ``Δ_h``::

    x_{h,t} = Λ̄_h ⊙ x_{h,t-1} + B̄_h u_{h,t},    y_{c,h,t} = s·Re(C_{c,h} · x_{h,t}) + D_{c,h} u_{h,t}

As ONE multi-input system (what "a step per channel" means for a MIMO system here): ``n = H N``
states in channel-major order (state ``(h, i)`` at index ``h N + i``), ``m = H`` inputs, ``p = c H``
outputs (index ``c H + h``); ``B`` is block-diagonal (state ``(h, i)`` is fed by input ``h`` only),
``C`` reads channel ``h``'s states only, ``D`` is diagonal per output channel, and the step of
state ``(h, i)`` is ``Δ_h``: a per-state step that is constant on each channel's block.  A per-state
step inside a channel (S4's ``dt_tie=False``, ``dt: (H, N)``) is accepted too.  S4's ``n_ssm``
(``S`` trainable copies shared by ``H/S`` channels) is this layout with the copies repeated.

**S5** needs no layout: it is the general MIMO diagonal system (``Λ (P,)``, ``B̃ (P, H)``,
``C̃ (H, P)``, a step per state ``Δ (P,)``) with ``D = diag(D_S5)``.

**Real parametrisation (S4D).**  ``Λ = −exp(log_neg_re) + i·im`` keeps ``Re Λ < 0`` by
construction, ``Δ = exp(log_dt)``, and complex ``B, C`` are stored as real and imaginary parts.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.checks import check_shape, shape_of
from ssmref.structured import validate
from ssmref.structured.accurate import power
from ssmref.structured.diagonal import discrete_system, output_scale

S4D_KEYS = ("Lambda", "B", "C", "D", "dt")
REAL_KEYS = ("log_neg_re", "im", "B_re", "B_im", "C_re", "C_im", "D", "log_dt")


def _s4d_params(params):
    """Validate S4D layout params; returns ``(Lam (H,N), B (H,N), C (c,H,N), D (c,H), dt (H,N))``."""
    validate.params_dict(params, S4D_KEYS, "S4D channel layout")
    Lam = params["Lambda"]
    if len(shape_of(Lam)) != 2:
        raise ValueError(f"params['Lambda'] must have shape (H, N) (one copy per channel), got {shape_of(Lam)}")
    H, N = shape_of(Lam)
    Lam = validate.eigenvalues("params['Lambda']", Lam, (H, N))
    B = validate.complex_array("params['B']", params["B"], (H, N))
    C = params["C"]
    if shape_of(C) == (H, N):
        C = C[None]                                          # (1, H, N): one output channel
    C = validate.complex_array("params['C']", C, (None, H, N))
    c = shape_of(C)[0]
    D = params["D"]
    if shape_of(D) == (H,):
        D = D[None]                                          # (1, H)
    D = validate.real_array("params['D']", D, (c, H))
    dt = params["dt"]
    if shape_of(dt) not in ((H,), (H, N)):
        raise ValueError(f"params['dt'] must have shape ({H},) (per channel) or ({H}, {N}) (per state), "
                         f"got {shape_of(dt)}")
    dt = validate.real_array("params['dt']", dt, shape_of(dt))
    validate.step("params['dt']", np.reshape(dt, (-1,)), int(onp.size(getval(dt))))
    if shape_of(dt) == (H,):
        dt = dt[:, None] * np.ones((1, N))                   # (H, N): the channel's step for its N states
    return Lam, B, C, D, dt


def s4d_to_diag(params):
    """The MIMO complex diagonal params (for :mod:`ssmref.structured.diagonal`) of S4D's layout.

    ``params``: ``Lambda (H, N)``, ``B (H, N)``, ``C (H, N)`` or ``(c, H, N)`` complex, ``D (H,)`` or
    ``(c, H)`` real, ``dt (H,)`` (per channel) or ``(H, N)`` (per state).  Returns ``Lambda (HN,)``,
    ``B (HN, H)`` block-diagonal, ``C (cH, HN)``, ``D (cH, H)``, ``dt (HN,)``; state ``(h, i)`` is
    index ``hN + i``, output ``(c, h)`` is index ``cH + h``.
    """
    Lam, B, C, D, dt = _s4d_params(params)
    H, N = shape_of(Lam)
    c = shape_of(C)[0]
    eye = np.eye(H)
    B_full = np.reshape(B[:, :, None] * eye[:, None, :], (H * N, H))            # (H, N, H) -> (HN, H)
    C_full = np.reshape(C[:, :, None, :] * eye[None, :, :, None], (c * H, H * N))  # (c, H, H, N) -> (cH, HN)
    D_full = np.reshape(D[:, :, None] * eye[None], (c * H, H))                   # (c, H, H) -> (cH, H)
    return {"Lambda": np.reshape(Lam, (-1,)), "B": B_full, "C": C_full, "D": D_full,
            "dt": np.reshape(dt, (-1,))}


def s4d_kernel(params, length, *, method, output, allow_unstable=False):
    """S4D's kernel in its own layout: ``K: (c, H, length)`` (``(H, length)`` if ``C`` is ``(H, N)``),

        K[c, h, k] = s · Re( sum_i C[c,h,i] · B̄[h,i] · Λ̄[h,i]^k ),

    ``Λ̄^k`` directly from ``(Λ, Δ)`` as in :func:`ssmref.structured.diagonal.diag_kernel` (the
    same numbers as ``diag_kernel(s4d_to_diag(params))[:, cH + h, h]``).  S4D's own code computes
    ``K = 2·Re(sum_i C_i (exp(ΔΛ_i) − 1)/Λ_i exp(kΔΛ_i))`` with ``B = 1`` (``output="2re"``).
    """
    validate.options(method, output)
    validate.params_dict(params, S4D_KEYS, "S4D channel layout")
    single = shape_of(params["C"]) == shape_of(params["Lambda"])
    Lam, B, C, D, dt = _s4d_params(params)
    L = validate.length(length)
    validate.stability(Lam, dt, method, allow_unstable)
    H, N = shape_of(Lam)
    lam_bar, Bbar = discrete_system(np.reshape(Lam, (-1,)), np.reshape(B, (-1, 1)), np.reshape(dt, (-1,)), method)
    k = np.arange(L, dtype=float)[:, None, None]                                 # (L, 1, 1)
    W = power(k, dt, Lam, method)                                                 # (L, H, N)
    K = output_scale(output) * np.real(np.einsum("chi,hi,lhi->chl", C, np.reshape(Bbar, (H, N)), W))
    return K[0] if single else K


def from_real(raw):
    """Complex diagonal params from S4D's real parametrisation (differentiable):

        Lambda = −exp(log_neg_re) + i·im,   B = B_re + i B_im,   C = C_re + i C_im,   dt = exp(log_dt)

    ``raw``: ``{"log_neg_re": (n,), "im": (n,), "B_re", "B_im": (n, m), "C_re", "C_im": (p, n),
    "D": (p, m), "log_dt": () or (n,)}``, all real, with exactly these shapes (nothing is
    broadcast).  ``Re Λ < 0`` for every finite input.
    """
    validate.params_dict(raw, REAL_KEYS, "real parametrisation")
    for k in REAL_KEYS:
        validate.real_array(f"raw[{k!r}]", raw[k], shape_of(raw[k]))
    if len(shape_of(raw["log_neg_re"])) != 1 or len(shape_of(raw["B_re"])) != 2 \
            or len(shape_of(raw["C_re"])) != 2:
        raise ValueError(f"raw['log_neg_re'] must have shape (n,), raw['B_re'] (n, m) and "
                         f"raw['C_re'] (p, n), got {shape_of(raw['log_neg_re'])}, "
                         f"{shape_of(raw['B_re'])} and {shape_of(raw['C_re'])}")
    (n,), (p, m) = shape_of(raw["log_neg_re"]), (shape_of(raw["C_re"])[0], shape_of(raw["B_re"])[1])
    want = {"im": (n,), "B_re": (n, m), "B_im": (n, m), "C_re": (p, n), "C_im": (p, n),
            "D": (p, m)}
    for k, shape in want.items():               # exact shapes: nothing is broadcast
        check_shape(f"raw[{k!r}]", raw[k], shape)
    if shape_of(raw["log_dt"]) not in ((), (n,)):
        raise ValueError(f"raw['log_dt'] must be a scalar or have shape ({n},), got "
                         f"{shape_of(raw['log_dt'])}")
    return {"Lambda": -np.exp(raw["log_neg_re"]) + 1j * raw["im"],
            "B": raw["B_re"] + 1j * raw["B_im"], "C": raw["C_re"] + 1j * raw["C_im"],
            "D": raw["D"], "dt": np.exp(raw["log_dt"])}
