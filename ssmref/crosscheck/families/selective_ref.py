"""40-digit references of the selective kinds: the certification hooks of :mod:`.selective`.

Each function recomputes a kind's expected outputs from the SAME float64 inputs (exact as rationals)
in 40-digit arithmetic (:mod:`ssmref.crosscheck.highprec`, mpmath imported lazily) by the plain
recurrence over time, one step after the other (the float64 side: the adjoint primitive, grouped
matrix products, SSD's chunked form, autograd), and returns ``{output: object array}``::

    v_t = δ_t + δ_bias,   Δ_t = clip(softplus(v_t), lo, hi),   softplus(v) = log1p(exp(v))
    a_t = exp(Δ_t A) · keep_t          (scan: per channel and state; SSD: per head; keep_t = 0
                                        where seq_idx changes, seq_idx[-1] = 0)
    x_t = a_t x_{t-1} + Δ_t u_t B_t    (SSD: s_t = a_t s_{t-1} + Δ_t x_t B_tᵀ)
    y_t = Σ_n C_t x_t (2 Re for complex A),  w_t = y_t + D u_t,  out_t = w_t silu(z_t),
    silu(z) = z σ(z),  σ(z) = 1 / (1 + exp(−z))

``selective_decode``: each step's ``out`` from the exact new state ``x_t``, then the cache
``S_t = Q(x_t)`` carried on, ``Q`` = rounding to ``state_dtype`` as the kit rounds: ``Q'`` =
``precision.round_to_dtype`` of the float64 nearest to the 40-digit ``x_t`` (40 digits -> float64
-> float32 -> bfloat16 for a bfloat16 cache; -> float64 -> float16 or float32 otherwise).  Why
``Q'(x_t)`` is the correct rounding of ``x_t`` and the stored state bit for bit: ``Q'`` is
monotone and fixes every ``state_dtype`` number, so between two neighbours it jumps once, within
``w |x_t|`` of their midpoint, where the direct rounding jumps (``w``: half an ulp of the widest
intermediate, ``2^-24`` through float32, ``2^-53`` through float64).  The reference checks in 40
digits that ``Q'`` has the same value at ``x_t ± μ T`` (``T = |a_t x_{t-1}| + |Δ u B| >= |x_t|``;
``μ`` = :data:`CACHE_MARGIN`, ``2^-20`` or ``2^-40``, above ``w`` and far above the float64
state's error, a few ``ε T``): no jump of ``Q'`` lies within ``μ T``, so no midpoint within
``w |x_t|``, so ``Q'(x_t)`` is the correctly rounded state, and the float64 state, within
``μ T`` of ``x_t``, rounds to it too.  The case's inputs keep ``2^-16 T``
(``selective_inputs.MARGIN``); where the check fails the reference raises instead of certifying.
A float64 cache is the correct rounding, not checked (it cannot be bit for bit).

The ``_vjp`` kinds: gradients of ``L = Σ gout·out + Σ Re(conj(g_state)·state)`` by the adjoint
(reverse) recurrence in 40 digits.  For a complex quantity ``q`` write ``∂q = ∂L/∂Re q −
i ∂L/∂Im q`` (ssmref's convention: for ``q = f(p)`` holomorphic ``∂p = ∂q f'(p)``, no conjugate;
a real ``r`` feeding ``q`` gets ``Re(∂q f'(r))``; ``C = C_re + i C_im`` interleaved gets
``(Re ∂C, −Im ∂C)``), so with ``s = 2`` for complex A (1 for real)::

    ∂w_t = gout_t silu(z_t),   ∂z_t = gout_t w_t σ(z_t)(1 + z_t(1 − σ(z_t))),   ∂D = Σ ∂w_t u_t
    λ_{T-1} = s ∂w_{T-1} C_{T-1} + conj(g_state),   λ_t = s ∂w_t C_t + a_{t+1} λ_{t+1}
    ∂C_t = s ∂w_t x_t,   ∂B_t = Δ_t u_t λ_t,   ∂u_t = D ∂w_t + Δ_t Re Σ_n λ_t B_t
    ∂a_t = λ_t x_{t-1},  ∂A = Σ_t ∂a_t a_t Δ_t,   ∂Δ_t = Re Σ_n (∂a_t a_t A + λ_t u_t B_t)
    ∂v_t = ∂Δ_t σ(v_t) [lo < softplus(v_t) < hi],   ∂δ_t = ∂v_t,   ∂δ_bias = Σ_t ∂v_t,
    ∂x_{-1} = a_0 λ_0 (SSD's initial_states)

summed over batch rows, and over the channels (heads) of a group for grouped B and C; SSD's
(p, n) states read ``Σ_p`` / ``Σ_{p,n}`` where a factor is shared.
"""

import numpy as onp

from ssmref.crosscheck import highprec
from ssmref.crosscheck.families import selective_naive
from ssmref.crosscheck.precision import round_to_dtype
from ssmref.selective.scan import time_first_bc

#: Distance, relative to a decode state's terms ``T``, within which its rounding to
#: ``state_dtype`` must not change (checked in 40 digits): above the double rounding's window
#: (``2^-24`` through float32 for bfloat16, ``2^-53`` through float64) and the float64 error.
CACHE_MARGIN = {"bfloat16": 2.0 ** -20, "float16": 2.0 ** -40, "float32": 2.0 ** -40}


def _mp(v):
    return highprec.to_mp(onp.asarray(v))


def _zeros(shape):
    return onp.full(shape, highprec.mpmath().mpf(0), dtype=object)


def _map(f, X):
    return onp.asarray(onp.frompyfunc(f, 1, 1)(X), dtype=object)


def _sigma(X):
    mp = highprec.mpmath()
    return _map(lambda v: 1 / (1 + mp.exp(-v)), X)


def _silu(z):
    return z * _sigma(z)


def _gate(y, D, u, z):
    """``(out, w)``: ``w = y + D u`` and ``out = w silu(z)`` (each part when given)."""
    w = y if D is None else y + D * u
    return (w if z is None else w * _silu(z)), w


def _gate_vjp(gout, w, z):
    """``(∂w, ∂z)`` of ``out = w silu(z)``."""
    if z is None:
        return gout, None
    sig = _sigma(z)
    return gout * z * sig, gout * w * sig * (1 + z * (1 - sig))


def _step_size(v, bias, softplus, limit=None):
    """``(Δ, dΔ/dv)`` of ``Δ = clip(softplus(v + bias), *limit)``."""
    mp = highprec.mpmath()
    if bias is not None:
        v = v + bias
    if softplus:
        delta, slope = _map(lambda t: mp.log1p(mp.exp(t)), v), _sigma(v)
    else:
        delta, slope = v, onp.full(v.shape, mp.mpf(1), dtype=object)
    if limit is not None:
        lo, hi = (mp.mpf(b) for b in limit)
        inside = (delta > lo) & (delta < hi)
        delta = onp.where(delta < lo, lo, onp.where(delta > hi, hi, delta))
        slope = onp.where(inside, slope, mp.mpf(0))
    return delta, slope


def _as_input(G, like, interleaved):
    """A gradient ``∂q`` of the complex or real quantity in the layout and kind of the input."""
    if interleaved:
        out = onp.empty(G.shape[:-1] + (2 * G.shape[-1],), dtype=object)
        out[..., 0::2], out[..., 1::2] = highprec.re(G), -_map(highprec.mpmath().im, G)
        return out
    return G if onp.asarray(like).dtype.kind == "c" else highprec.re(G)


# ---------------------------------------------------------------------------------------------
# selective_scan and its gradients
# ---------------------------------------------------------------------------------------------

class _BC:
    """B or C of the scan as ``values (L', b', G, n)``: fixed ``(1, 1, d, n)``, varying
    ``(L, b, 1, n)``, grouped ``(L, b, g, n)`` (interleaved made complex); channel ``i`` reads
    ``G``-index ``i // (d/G)``."""

    def __init__(self, X, d, complex_A):
        X = onp.asarray(X)
        self.raw, self.fixed, self.grouped = X, X.ndim == 2, X.ndim == 4
        self.interleaved = complex_A and X.dtype.kind != "c" and not self.fixed
        self.values = _mp(time_first_bc(X, complex_A))               # exact: pairs made complex
        self.d = d

    def at(self, t):
        V = self.values[t if self.values.shape[0] > 1 else 0]        # (b', G, n)
        return onp.repeat(V, self.d // V.shape[1], axis=1)           # (b', d, n)

    def gradient(self, G):
        """``G (L, b, d, n)`` summed to the input's layout and kind."""
        L, b, d, n = G.shape
        if self.fixed:
            return _as_input(onp.sum(G, axis=(0, 1)), self.raw, False)
        g = self.values.shape[2]
        G = onp.sum(G.reshape(L, b, g, d // g, n), axis=3)             # (L, b, g, n)
        G = onp.transpose(G, (1, 2, 3, 0))                               # (b, g, n, L)
        return _as_input(G if self.grouped else G[:, 0], self.raw, self.interleaved)


def _scan_setup(x, attrs):
    tf = lambda k: _mp(onp.transpose(x[k], (2, 0, 1))) if k in x else None   # noqa: E731
    u, v, z = tf("u"), tf("delta"), tf("z")                                # (L, b, d)
    bias = _mp(x["delta_bias"]) if "delta_bias" in x else None
    delta, slope = _step_size(v, bias, attrs["delta_softplus"])
    A = _mp(x["A"])
    complex_A = onp.asarray(x["A"]).dtype.kind == "c"
    d = A.shape[0]
    return {"u": u, "z": z, "delta": delta, "slope": slope, "A": A, "complex": complex_A,
            "B": _BC(x["B"], d, complex_A), "C": _BC(x["C"], d, complex_A),
            "D": _mp(x["D"]) if "D" in x else None}


def _scan_forward(m, keep=False):
    """``(y (L, b, d), last, a, X)``: the recurrence, one step at a time (``a``, ``X``: every
    step's decay and state, when ``keep``)."""
    exp = highprec.elementwise("exp")
    L, b, d = m["u"].shape
    xs = _zeros((b, d, m["A"].shape[1]))
    y = onp.empty((L, b, d), dtype=object)
    a_all, X_all = [], []
    for t in range(L):
        a = exp(m["delta"][t][..., None] * m["A"])                       # (b, d, n)
        xs = a * xs + (m["delta"][t] * m["u"][t])[..., None] * m["B"].at(t)
        S = onp.sum(m["C"].at(t) * xs, axis=-1)
        y[t] = 2 * highprec.re(S) if m["complex"] else S
        if keep:
            a_all.append(a)
            X_all.append(xs)
    return y, xs, a_all, X_all


def _scan_out(m, y):
    out, w = _gate(y, m["D"], m["u"], m["z"])
    return onp.transpose(out, (1, 2, 0)), w


@highprec.high_precision
def scan(x, attrs):
    """``{"out", "last_state"}`` of ``selective_scan`` in 40 digits."""
    m = _scan_setup(x, attrs)
    y, last, _, _ = _scan_forward(m)
    return {"out": _scan_out(m, y)[0], "last_state": last}


@highprec.high_precision
def scan_vjp(x, attrs):
    """The scan's outputs and gradients by the adjoint recurrence in 40 digits."""
    m = _scan_setup(x, attrs)
    y, last, a, X = _scan_forward(m, keep=True)
    out, w = _scan_out(m, y)
    gw, dz = _gate_vjp(_mp(onp.transpose(x["gout"], (2, 0, 1))), w, m["z"])    # (L, b, d)
    s = 2 if m["complex"] else 1
    L, b, d = m["u"].shape
    n = m["A"].shape[1]
    u, delta, A = m["u"], m["delta"], m["A"]
    lam = highprec.conj(_mp(x["glast"]))
    dB, dC = onp.empty((L, b, d, n), dtype=object), onp.empty((L, b, d, n), dtype=object)
    du, ddelta = onp.empty((L, b, d), dtype=object), onp.empty((L, b, d), dtype=object)
    dA = _zeros(A.shape)
    for t in range(L - 1, -1, -1):
        Ct = m["C"].at(t)
        lam = s * gw[t][..., None] * Ct + lam                           # λ_t
        dC[t] = s * gw[t][..., None] * X[t]
        dB[t] = (delta[t] * u[t])[..., None] * lam
        q = highprec.re(onp.sum(lam * m["B"].at(t), axis=-1))           # Re Σ_n λ_t B_t
        ga = lam * (X[t - 1] if t else _zeros(lam.shape)) * a[t]        # ∂a_t a_t
        dA = dA + onp.sum(ga * delta[t][..., None], axis=0)
        du[t] = delta[t] * q + (0 if m["D"] is None else m["D"] * gw[t])
        ddelta[t] = highprec.re(onp.sum(ga * A, axis=-1)) + u[t] * q
        lam = a[t] * lam                                                # a_t λ_t, for t − 1
    dv = ddelta * m["slope"]
    tb = lambda v: onp.transpose(v, (1, 2, 0))                          # noqa: E731  (b, d, L)
    grads = {"u": tb(du), "delta": tb(dv), "A": dA if m["complex"] else highprec.re(dA),
             "B": m["B"].gradient(dB), "C": m["C"].gradient(dC),
             "D": onp.sum(gw * u, axis=(0, 1)), "z": None if dz is None else tb(dz),
             "delta_bias": onp.sum(dv, axis=(0, 1))}
    return dict({"out": out, "last_state": last},
                **{"d" + k: grads[k] for k in selective_naive.SCAN_GRADS if k in x})


# ---------------------------------------------------------------------------------------------
# selective_state_update and the multi-step decode
# ---------------------------------------------------------------------------------------------

def _head_form(step):
    """One step's arrays in head form (one head when ``state`` is 3-d), as object arrays:
    ``state (b, h, d, n)``, ``x, dt, z (b, h, d)``, ``A (h, d, n)``, ``B, C (b, g, n)``,
    ``D, dt_bias (h, d)``."""
    heads = onp.ndim(step["state"]) == 4
    out = {}
    for k, v in step.items():
        v = onp.asarray(v)
        if not heads and not (k in ("B", "C") and v.ndim == 3):
            v = onp.expand_dims(v, 0 if k in ("A", "D", "dt_bias") else 1)
        out[k] = _mp(v)
    return out, heads


def _decode_step(s, v, softplus):
    """``(out, new_state, T)`` of one step on head-form arrays; ``T = |a s| + |Δ x B|``."""
    exp = highprec.elementwise("exp")
    h, g = s.shape[1], v["B"].shape[1]
    delta, _ = _step_size(v["dt"], v.get("dt_bias"), softplus)              # (b, h, d)
    Bh, Ch = (onp.repeat(v[k], h // g, axis=1)[:, :, None, :] for k in ("B", "C"))
    kept = exp(delta[..., None] * v["A"]) * s
    fed = (delta * v["x"])[..., None] * Bh
    new = kept + fed
    S = onp.sum(new * Ch, axis=-1)
    y = 2 * highprec.re(S) if isinstance(v["A"].flat[0], highprec.mpmath().mpc) else S
    out, _ = _gate(y, v.get("D"), v["x"], v.get("z"))
    return out, new, onp.abs(kept) + onp.abs(fed)


@highprec.high_precision
def state_update(x, attrs):
    """``{"out", "new_state"}`` of ``selective_state_update`` in 40 digits."""
    v, heads = _head_form(x)
    out, new, _ = _decode_step(v["state"], v, attrs["dt_softplus"])
    return {"out": out, "new_state": new} if heads else {"out": out[:, 0], "new_state": new[:, 0]}


def cache_rounding(new, terms, state_dtype):
    """``Q(new)``: the 40-digit states rounded to ``state_dtype`` as the kit rounds (via the
    nearest float64), as mpmath numbers; ``ValueError`` unless the rounding is the same at
    ``new ± μ terms``, ``μ = CACHE_MARGIN[state_dtype]`` (then it is the correct rounding of
    ``new``, and the float64 computation's: see the module docs)."""
    q = round_to_dtype(highprec.to_float(new), state_dtype)
    if state_dtype != "float64":
        mu = CACHE_MARGIN[state_dtype]
        unit = 1 + 1j if onp.iscomplexobj(q) else 1                  # both parts of a complex state
        for sign in (-1, 1):
            moved = highprec.to_float(new + sign * unit * mu * terms, complex_=unit != 1)
            if not onp.array_equal(round_to_dtype(moved, state_dtype), q):
                raise ValueError(f"a state lies within {mu:.1e} (relative to its terms) of a "
                                 f"{state_dtype} rounding boundary: its cache is not certified")
    return _mp(q)


@highprec.high_precision
def decode(x, attrs):
    """``{"out", "states"}`` of ``selective_decode``: each step in 40 digits, ``out`` from the
    new state, then the state rounded to ``attrs["state_dtype"]`` (:func:`cache_rounding`)."""
    per_step = ("x", "dt", "B", "C", "z")
    s, outs, states = None, [], []
    for t in range(onp.shape(x["x"])[0]):
        v, heads = _head_form({**x, **{k: x[k][t] for k in per_step if k in x}})
        out, new, terms = _decode_step(v["state"] if s is None else s, v, attrs["dt_softplus"])
        s = cache_rounding(new, terms, attrs["state_dtype"])        # the cache, after out
        outs.append(out if heads else out[:, 0])
        states.append(s if heads else s[:, 0])
    return {"out": onp.stack(outs), "states": onp.stack(states)}


# ---------------------------------------------------------------------------------------------
# ssd and its gradients
# ---------------------------------------------------------------------------------------------

def _ssd_setup(x, attrs):
    X = _mp(onp.transpose(x["x"], (1, 0, 2, 3)))                           # (L, b, h, p)
    L, b, h, p = X.shape
    g = x["B"].shape[2]
    Bh, Ch = (_mp(onp.repeat(onp.transpose(x[k], (1, 0, 2, 3)), h // g, axis=2))
              for k in ("B", "C"))                                           # (L, b, h, n)
    delta, slope = _step_size(_mp(onp.transpose(x["dt"], (1, 0, 2))),
                              _mp(x["dt_bias"]) if "dt_bias" in x else None,
                              attrs["dt_softplus"], selective_naive.limit_of(attrs))
    keep = onp.ones((L, b), dtype=bool)
    if "seq_idx" in x:
        idx = onp.asarray(x["seq_idx"])
        keep = (idx == onp.concatenate([onp.zeros_like(idx[:, :1]), idx[:, :-1]], axis=1)).T
    D = _mp(x["D"]) if "D" in x else None
    return {"X": X, "B": Bh, "C": Ch, "delta": delta, "slope": slope, "keep": keep,
            "A": _mp(x["A"]), "D": None if D is None else (D[:, None] if D.ndim == 1 else D),
            "z": _mp(onp.transpose(x["z"], (1, 0, 2, 3))) if "z" in x else None,
            "s0": _mp(x["initial_states"]) if "initial_states" in x else _zeros((b, h, p, Bh.shape[3]))}


def _ssd_forward(m, keep=False):
    """``(y (L, b, h, p), final, a, S)``: SSD's recurrence one step at a time."""
    exp = highprec.elementwise("exp")
    X, Bh, Ch, delta = m["X"], m["B"], m["C"], m["delta"]
    y = onp.empty(X.shape, dtype=object)
    s, a_all, S_all = m["s0"], [], []
    for t in range(X.shape[0]):
        a = exp(delta[t] * m["A"]) * m["keep"][t][:, None]                  # (b, h)
        s = a[..., None, None] * s + (delta[t][..., None] * X[t])[..., None] * Bh[t][:, :, None]
        y[t] = onp.sum(s * Ch[t][:, :, None], axis=-1)
        if keep:
            a_all.append(a)
            S_all.append(s)
    return y, s, a_all, S_all


def _ssd_out(m, y):
    out, w = _gate(y, m["D"], m["X"], m["z"])
    return onp.transpose(out, (1, 0, 2, 3)), w


@highprec.high_precision
def ssd(x, attrs):
    """``{"out", "final_states"}`` of ``ssd`` by its recurrence (not the chunked form)."""
    m = _ssd_setup(x, attrs)
    y, final, _, _ = _ssd_forward(m)
    return {"out": _ssd_out(m, y)[0], "final_states": final}


def _group_sum(G, g):
    """``(L, b, h, n)`` -> ``(b, L, g, n)``: summed over the heads of each group."""
    L, b, h, n = G.shape
    return onp.transpose(onp.sum(G.reshape(L, b, g, h // g, n), axis=3), (1, 0, 2, 3))


@highprec.high_precision
def ssd_vjp(x, attrs):
    """SSD's outputs and gradients by the adjoint recurrence in 40 digits."""
    m = _ssd_setup(x, attrs)
    y, final, a, S = _ssd_forward(m, keep=True)
    out, w = _ssd_out(m, y)
    gw, dz = _gate_vjp(_mp(onp.transpose(x["gout"], (1, 0, 2, 3))), w, m["z"])   # (L, b, h, p)
    X, Bh, Ch, delta, A = m["X"], m["B"], m["C"], m["delta"], m["A"]
    L, b, h, p = X.shape
    lam = _mp(x["gfinal"])                                                   # (b, h, p, n)
    dX, dB, dC = (onp.empty(v.shape, dtype=object) for v in (X, Bh, Ch))
    ddelta, dA = onp.empty(delta.shape, dtype=object), _zeros(A.shape)
    for t in range(L - 1, -1, -1):
        lam = gw[t][..., None] * Ch[t][:, :, None] + lam                     # λ_t
        dC[t] = onp.sum(gw[t][..., None] * S[t], axis=2)                      # (b, h, n)
        dB[t] = onp.sum((delta[t][..., None] * X[t])[..., None] * lam, axis=2)
        lb = onp.sum(lam * Bh[t][:, :, None], axis=-1)                       # Σ_n λ B, (b, h, p)
        ga = onp.sum(lam * (S[t - 1] if t else m["s0"]), axis=(2, 3)) * a[t]   # ∂a_t a_t, (b, h)
        dA = dA + onp.sum(ga * delta[t], axis=0)
        ddelta[t] = ga * A + onp.sum(lb * X[t], axis=-1)
        dX[t] = delta[t][..., None] * lb + (0 if m["D"] is None else m["D"] * gw[t])
        lam = a[t][..., None, None] * lam                                     # a_t λ_t, for t − 1
    dv = ddelta * m["slope"]
    D = x.get("D")
    grads = {"x": onp.transpose(dX, (1, 0, 2, 3)), "dt": onp.transpose(dv, (1, 0, 2)), "A": dA,
             "B": _group_sum(dB, x["B"].shape[2]), "C": _group_sum(dC, x["C"].shape[2]),
             "D": None if D is None else onp.sum(gw * X, axis=(0, 1) if onp.ndim(D) == 2
                                                 else (0, 1, 3)),
             "z": None if dz is None else onp.transpose(dz, (1, 0, 2, 3)),
             "dt_bias": onp.sum(dv, axis=(0, 1)), "initial_states": lam}
    return dict({"out": out, "final_states": final},
                **{"d" + k: grads[k] for k in selective_naive.SSD_GRADS if k in x})
