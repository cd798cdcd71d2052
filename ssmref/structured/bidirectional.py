"""Bidirectional diagonal SSM (S5's ``bidirectional=True``): a forward and a time-reversed scan.

    x^f_t = Λ̄ ⊙ x^f_{t-1} + B̄ u_t          (t = 0 .. T-1, x^f_{-1} = 0)
    x^b_t = Λ̄_b ⊙ x^b_{t+1} + B̄_b u_t      (t = T-1 .. 0, x^b_T = 0)
    y_t   = s·Re(C x^f_t) + s·Re(C_b x^b_t) + D u_t

Both scans include ``u_t`` (each reads its NEW state), so as a two-sided convolution

    y_t = sum_{k=0}^{t} K_f[k] u_{t-k} + sum_{k=0}^{T-1-t} K_b[k] u_{t+k} + D u_t,

with ``K_f[k] = s·Re(C Λ̄^k B̄)`` and ``K_b[k] = s·Re(C_b Λ̄_b^k B̄_b)``: lag 0 appears in both.

S5 (``s5/ssm.py``, ``apply_ssm``) SHARES ``Λ̄`` and ``B̄`` (one discretization, one ``Δ``) between
the directions and learns two output matrices, concatenated as ``C̃ = [C1, C2]`` of shape
``(H, 2P)``: ``C = C1``, ``C_b = C2``; ``D`` is applied once.  Here ``backward`` holds ``C_b`` and,
optionally, separate ``Lambda``, ``B``, ``dt`` for the backward direction (absent: shared).
"""

import autograd.numpy as np

from ssmref.checks import check_choice, shape_of
from ssmref.params import is_node
from ssmref.structured import validate
from ssmref.structured.diagonal import diag_convolve, diag_kernel, diag_parallel_scan, diag_scan

MODES = {"scan": diag_scan, "parallel": diag_parallel_scan, "convolve": diag_convolve}
SHARED = ("Lambda", "B", "dt")


def _backward_params(params, backward):
    # the backward system: C from `backward`, Λ, B, Δ from `backward` if given, else shared; D = 0
    _, (m, n, p) = validate.diag_params(params)
    if not is_node(backward) or "C" not in backward.keys():
        raise ValueError("backward must be a dict with key 'C' (and optionally 'Lambda', 'B', 'dt'), "
                         f"got {type(backward).__name__}")
    extra = [k for k in backward.keys() if k not in SHARED + ("C",)]
    if extra:
        raise ValueError(f"backward has unexpected keys {extra}; allowed: ['C', 'Lambda', 'B', 'dt']")
    if len(shape_of(backward["C"])) != 2 or shape_of(backward["C"])[0] != p:
        raise ValueError(f"backward['C'] must have shape ({p}, n_b) (the forward output dim {p}), "
                         f"got {shape_of(backward['C'])}")
    out = {k: backward[k] if k in backward.keys() else params[k] for k in SHARED + ("C",)}
    out["D"] = np.zeros((p, m))
    return out


def bidirectional(params, backward, u, *, method, output, mode="scan", allow_unstable=False):
    """``y: (..., T, p)`` of the bidirectional system above.

    ``params``: the forward system (``Lambda, B, C, D, dt`` as in :func:`diag_scan`);
    ``backward``: ``{"C": (p, n_b)}`` plus optional ``"Lambda"``, ``"B"``, ``"dt"`` (S5: only ``C``).
    ``mode``: ``"scan"`` (:func:`diag_scan`), ``"parallel"`` (S5's associative scan) or
    ``"convolve"`` (FFT); the backward direction runs the same mode on the time-reversed input.
    ``u: (T, m)`` or ``(batch, T, m)``; no initial state (the layer is not causal).
    ``allow_unstable`` is passed to :func:`diag_convolve` (the scans accept ``Re Λ > 0``).
    """
    check_choice("mode", mode, tuple(MODES))
    validate.options(method, output)
    back = _backward_params(params, backward)
    run = MODES[mode]
    extra = {"allow_unstable": allow_unstable} if mode == "convolve" else {}
    y_f, _ = run(params, u, method=method, output=output, **extra)
    y_b, _ = run(back, u[..., ::-1, :], method=method, output=output, **extra)
    return y_f + y_b[..., ::-1, :]


def bidirectional_kernels(params, backward, length, *, method, output, allow_unstable=False):
    """``(K_f, K_b)``, each ``(length, p, m)``: the causal and anti-causal kernels above."""
    back = _backward_params(params, backward)
    K_f = diag_kernel(params, length, method=method, output=output, allow_unstable=allow_unstable)
    K_b = diag_kernel(back, length, method=method, output=output, allow_unstable=allow_unstable)
    return K_f, K_b
