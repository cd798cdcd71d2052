"""The raw inputs of the selective cases: Mamba's initialisations, at realistic scales.

    A (Mamba, S4D-real):   A[i, j] = −(j + 1) · e^{0.1 ε}                      (d, n)
    A (complex, S4D-Lin):  A[i, j] = −½ e^{0.1 ε} + iπ (j + 0.1 ε)             (d, n)
    A (Mamba-2):           A_h = −U[1, 16]                                       (h,)
    Δ (dt_init):           Δ = softplus(δ + δ_bias),  δ_bias = softplus⁻¹(Δ₀),  Δ₀ ~ logU[lo, hi],
                           δ ~ σ N(0, 1)  (the input-dependent part of the step)

``u, x, z, B, C`` and cotangents are standard normal (complex: ``(N + iN)/√2``), ``D = 1 + 0.1 N``
(Mamba initialises it to ones), states ``0.5 N``.  Each builder takes the case's generator and
returns ``(inputs, attrs)``.

The multi-step decode case (:func:`decode_inputs`) is built so that a state cache narrower than
the arithmetic is reproducible: every input is a bfloat16 number that float16 also represents
(so the vectors are the same for every ``--dtype``), and the inputs of each step are redrawn until
no entry of the new state lies within ``MARGIN`` (relative to its two terms) of a point where
rounding to the state's dtype changes: any float32-or-better port that keeps the right order then
carries *bit-identical* states, and its output error is its arithmetic's alone.
"""

import numpy as onp

from ssmref.crosscheck.precision import round_to_dtype

#: Distance, relative to ``|e^{ΔA} s| + |Δ B x|``, kept between each decode state entry and the
#: nearest rounding boundary of the state dtype: ~256 float32 ulps, far beyond the few ulps by
#: which float32 ports differ (operation order, fma, a fast exp).
MARGIN = 2.0 ** -16


def inv_softplus(v):
    """``softplus⁻¹(v) = v + log(1 − e^{−v})``: the bias Mamba initialises so that ``Δ = v``."""
    return v + onp.log(-onp.expm1(-v))


def log_uniform(rng, shape, lo, hi):
    """Mamba's ``dt_init``: ``exp(U[log lo, log hi])``."""
    return onp.exp(rng.uniform(onp.log(lo), onp.log(hi), shape))


def _normal(rng, shape, complex_=False):
    if not complex_:
        return rng.standard_normal(shape)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / onp.sqrt(2.0)


def _interleave(X):
    """complex ``(..., L)`` -> real ``(..., 2L)``, ``[re_0, im_0, re_1, ...]`` (mamba's layout)."""
    return onp.stack([X.real, X.imag], axis=-1).reshape(X.shape[:-1] + (2 * X.shape[-1],))


def _scan_bc(rng, layout, b, d, n, L, g, complex_A, interleaved):
    """``B`` or ``C``: fixed ``(d, n)``, varying ``(b, n, L)`` or grouped ``(b, g, n, L)``; for
    complex ``A`` complex, or real interleaved ``(..., 2L)``."""
    if layout == "fixed":
        return _normal(rng, (d, n), complex_A)
    shape = (b, n, L) if layout == "varying" else (b, g, n, L)
    X = _normal(rng, shape, complex_A)
    return _interleave(X) if interleaved else X


def scan_inputs(*, b, d, n, L, B="varying", C="varying", g=2, complex_A=False, interleave=(),
                dt=(1e-3, 1e-1), center=None, noise=0.5, softplus=True, D=True, z=True,
                cotangents=False):
    """A builder of ``selective_scan`` (``cotangents``: ``_vjp``) inputs.  ``B``, ``C``: layouts
    ``"fixed" | "varying" | "grouped"`` (``g`` groups); ``interleave``: which of ``"B"``, ``"C"``
    are given interleaved (complex ``A``).  With ``softplus``, ``δ_bias`` makes ``Δ ~ logU(dt)``
    (or ``δ + δ_bias ≈ center`` when given); without, ``delta`` is the step itself."""
    def build(rng):
        k = onp.arange(1, n + 1)
        jitter = onp.exp(0.1 * rng.standard_normal((d, n)))
        if complex_A:
            A = -0.5 * jitter + 1j * onp.pi * (k - 1 + 0.1 * rng.standard_normal((d, n)))
        else:
            A = -k * jitter                                        # (d, n)
        x = {"u": rng.standard_normal((b, d, L)), "A": A}
        if softplus:
            bias = inv_softplus(log_uniform(rng, d, *dt)) if center is None else \
                center + rng.standard_normal(d)
            x["delta"] = noise * rng.standard_normal((b, d, L))
            x["delta_bias"] = bias
        else:
            x["delta"] = log_uniform(rng, (b, d, L), *dt)
        x["B"] = _scan_bc(rng, B, b, d, n, L, g, complex_A, "B" in interleave)
        x["C"] = _scan_bc(rng, C, b, d, n, L, g, complex_A, "C" in interleave)
        if D:
            x["D"] = 1.0 + 0.1 * rng.standard_normal(d)
        if z:
            x["z"] = rng.standard_normal((b, d, L))
        if cotangents:
            x["gout"] = rng.standard_normal((b, d, L))
            x["glast"] = _normal(rng, (b, d, n), complex_A)
        return x, {"delta_softplus": softplus}
    return build


def state_update_inputs(*, b, n, d=None, h=None, p=None, g=1):
    """A builder of ``selective_state_update`` inputs: without heads (``d`` channels, mamba's
    ``(b, d, n)`` state) or with heads (``h`` heads of ``p`` channels, ``g`` groups, Mamba-2's
    tied values: ``A``, ``Δ``, ``dt_bias``, ``D`` per head, broadcast as a serving engine does)."""
    def build(rng):
        if h is None:
            A = -onp.arange(1, n + 1) * onp.exp(0.1 * rng.standard_normal((d, n)))
            x = {"state": 0.5 * rng.standard_normal((b, d, n)), "x": rng.standard_normal((b, d)),
                 "dt": 0.5 * rng.standard_normal((b, d)), "A": A,
                 "B": rng.standard_normal((b, n)), "C": rng.standard_normal((b, n)),
                 "D": 1.0 + 0.1 * rng.standard_normal(d), "z": rng.standard_normal((b, d)),
                 "dt_bias": inv_softplus(log_uniform(rng, d, 1e-3, 1e-1))}
            return x, {"dt_softplus": True}
        A = onp.broadcast_to(-rng.uniform(1.0, 16.0, h)[:, None, None], (h, p, n))
        x = {"state": 0.5 * rng.standard_normal((b, h, p, n)), "x": rng.standard_normal((b, h, p)),
             "dt": onp.broadcast_to(0.5 * rng.standard_normal((b, h, 1)), (b, h, p)), "A": A,
             "B": rng.standard_normal((b, g, n)), "C": rng.standard_normal((b, g, n)),
             "D": onp.broadcast_to(1.0 + 0.1 * rng.standard_normal((h, 1)), (h, p)),
             "z": rng.standard_normal((b, h, p)),
             "dt_bias": onp.broadcast_to(inv_softplus(log_uniform(rng, (h, 1), 1e-3, 1e-1)),
                                         (h, p))}
        return {k: onp.array(v) for k, v in x.items()}, {"dt_softplus": True}
    return build


def ssd_inputs(*, b, L, h, p, g, n, chunk, dt=(1e-3, 1e-1), D="h", z=True, init=True,
               seq_idx=None, dt_limit=None, cotangents=False):
    """A builder of ``ssd`` (``cotangents``: ``_vjp``) inputs: ``D`` per head (``"h"``), per
    channel (``"hp"``) or absent; ``seq_idx``: a ``(b, L)`` list of segment lengths per row, as
    ``[(id, length), ...]``; ``dt_limit``: ``(lo, hi)`` or ``None`` (the default ``(0, inf)``)."""
    def build(rng):
        x = {"x": rng.standard_normal((b, L, h, p)), "dt": 0.5 * rng.standard_normal((b, L, h)),
             "A": -rng.uniform(1.0, 16.0, h),                     # Mamba-2's A_init_range
             "B": rng.standard_normal((b, L, g, n)), "C": rng.standard_normal((b, L, g, n)),
             "dt_bias": inv_softplus(log_uniform(rng, h, *dt))}
        if D == "h":
            x["D"] = 1.0 + 0.1 * rng.standard_normal(h)
        elif D == "hp":
            x["D"] = 1.0 + 0.1 * rng.standard_normal((h, p))
        if z:
            x["z"] = rng.standard_normal((b, L, h, p))
        if init:
            x["initial_states"] = 0.5 * rng.standard_normal((b, h, p, n))
        if seq_idx is not None:
            x["seq_idx"] = onp.array([sum(([i] * m for i, m in row), []) for row in seq_idx],
                                     dtype=onp.int64)
        if cotangents:
            x["gout"] = rng.standard_normal((b, L, h, p))
            x["gfinal"] = rng.standard_normal((b, h, p, n))
        attrs = {"chunk_size": chunk, "dt_softplus": True}
        if dt_limit is not None:
            attrs["dt_limit"] = list(dt_limit)
        return x, attrs
    return build


# ---------------------------------------------------------------------------------------------
# The multi-step decode with a narrow state cache
# ---------------------------------------------------------------------------------------------

def exact_in_narrow_dtypes(v):
    """``v`` rounded to bfloat16, with magnitudes below ``2^-14`` set to 0: a value float16,
    float32 and bfloat16 all represent exactly (rounding it to any of them is the identity)."""
    r = round_to_dtype(onp.asarray(v, dtype=onp.float64), "bfloat16")
    return onp.where(onp.abs(r) < 2.0 ** -14, 0.0, r)


def _boundary_distance(v, state_dtype):
    """Distance from ``v`` to the nearest point where rounding to ``state_dtype`` jumps: halfway
    to the neighbouring ``state_dtype`` values of ``r = round(v)`` (the spacing below a power of
    two is half the spacing above it)."""
    r = round_to_dtype(v, state_dtype)
    bits = {"bfloat16": 8, "float16": 11, "float32": 24, "float64": 53}[state_dtype]  # significand
    mag = onp.maximum(onp.abs(r), 2.0 ** -100)
    e = onp.floor(onp.log2(mag))
    up = 2.0 ** (e - bits + 1)                                   # spacing above |r|
    down = onp.where(mag == 2.0 ** e, up / 2, up)                # spacing below |r|
    off = onp.abs(v) - onp.abs(r)                                # signed, in magnitude
    return onp.minimum(up / 2 - off, down / 2 + off)


def decode_step_reference(s, x, dt, A, B, C, D, z, dt_bias):
    """One decode step in float64 on head-form arrays: ``(out, new_state, |e^{ΔA} s| + |Δ B x|)``;
    ``s (b, h, p, n)``, ``x, dt, z (b, h, p)``, ``A (h, p, n)``, ``B, C (b, g, n)``,
    ``D, dt_bias (h, p)``; Δ = softplus(dt + dt_bias)."""
    h, g = s.shape[1], B.shape[1]
    delta = onp.logaddexp(0.0, dt + dt_bias)                          # (b, h, p)
    Bh, Ch = (onp.repeat(X, h // g, axis=1)[:, :, None, :] for X in (B, C))   # (b, h, 1, n)
    kept = onp.exp(delta[..., None] * A) * s                          # (b, h, p, n)
    fed = (delta * x)[..., None] * Bh
    new = kept + fed
    y = onp.sum(new * Ch, axis=-1) + D * x                            # (b, h, p)
    return y * z / (1.0 + onp.exp(-z)), new, onp.abs(kept) + onp.abs(fed)


def decode_inputs(*, b, h, p, n, g, steps, state_dtype="bfloat16", max_tries=2000):
    """A builder of the multi-step decode case (kind ``selective_decode``): Mamba-2 shapes with
    heads, ``steps`` tokens, the state carried in ``state_dtype`` between steps."""
    def build(rng):
        q = exact_in_narrow_dtypes
        A = onp.broadcast_to(q(-rng.uniform(1.0, 16.0, h))[:, None, None], (h, p, n))
        dt_bias = onp.broadcast_to(q(inv_softplus(log_uniform(rng, h, 1e-3, 1e-1)))[:, None],
                                   (h, p))
        D = onp.broadcast_to(q(1.0 + 0.1 * rng.standard_normal(h))[:, None], (h, p))
        state = q(0.5 * rng.standard_normal((b, h, p, n)))
        s, per_step = state, {k: [] for k in ("x", "dt", "B", "C", "z")}
        for _ in range(steps):
            for _ in range(max_tries):
                step = {"x": q(rng.standard_normal((b, h, p))),
                        "dt": onp.broadcast_to(q(0.5 * rng.standard_normal((b, h, 1))), (b, h, p)),
                        "B": q(rng.standard_normal((b, g, n))),
                        "C": q(rng.standard_normal((b, g, n))),
                        "z": q(rng.standard_normal((b, h, p)))}
                _, new, terms = decode_step_reference(s, step["x"], step["dt"], A, step["B"],
                                                      step["C"], D, step["z"], dt_bias)
                if onp.all(_boundary_distance(new, state_dtype) > MARGIN * terms):
                    break
            else:
                raise RuntimeError(f"no decode step with a rounding margin in {max_tries} draws")
            for k, v in step.items():
                per_step[k].append(onp.array(v))
            s = round_to_dtype(new, state_dtype)
        x = {k: onp.stack(v) for k, v in per_step.items()}               # (steps, ...)
        x.update(state=state, A=onp.array(A), D=onp.array(D), dt_bias=onp.array(dt_bias))
        return x, {"state_dtype": state_dtype, "dt_softplus": True}
    return build
