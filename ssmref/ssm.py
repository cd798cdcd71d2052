"""Linear state space model: one system, three equivalent ways to run it.

The model (discrete time, output reads the NEW state)::

    h_t = A h_{t-1} + B u_t          h_{-1} = h0 (zeros by default)
    y_t = C h_t + D u_t

with ``A: (n, n)``, ``B: (n, m)``, ``C: (p, n)``, ``D: (p, m)``, inputs ``u_t: (m,)``, states
``h_t: (n,)`` and outputs ``y_t: (p,)``.  Unrolling the recursion gives the convolution form

    h_t = A^{t+1} h0 + sum_{k=0}^{t} A^k B u_{t-k}
    y_t = C A^{t+1} h0 + sum_{k=0}^{t} K_k u_{t-k} + D u_t,        K_k = C A^k B,

so the same outputs can be computed by

- :func:`ssm_scan`, the recurrence, one step at a time (O(T n^2), depth T);
- :func:`ssm_convolve`, an FFT convolution with the kernel ``K`` (O(T log T) per channel pair);
- :func:`ssm_parallel_scan`, an associative (prefix) scan of the affine maps ``h -> A h + B u_t``
  (O(T) work in O(log T) vectorized rounds).

All functions are pure, float64, and differentiable with ``autograd`` with respect to the
parameters, ``u`` and ``h0`` to any order (no in-place writes; the FFT input is padded explicitly
because autograd 1.9's ``rfft(x, n=N)`` gradient is wrong when ``n`` pads).

The other common convention reads the OLD state, ``y_t = C' h_{t-1} + D' u_t``; it describes the same
input-output map when ``C' = C A`` and ``D' = C B + D`` (see ``docs/ssm.md``).

References: Gu, Goel, Re, "Efficiently Modeling Long Sequences with Structured State Spaces" (S4,
ICLR 2022); Gu et al., "HiPPO: Recurrent Memory with Optimal Polynomial Projections" (NeurIPS 2020);
Blelloch, "Prefix Sums and Their Applications" (1990); Smith et al., "Simplified State Space Layers
for Sequence Modeling" (S5, ICLR 2023) for the parallel scan of linear recurrences.

Run ``python -m ssmref.ssm`` for the self-test.
"""

import autograd.numpy as np
import numpy as onp
import scipy.linalg
from autograd.extend import defvjp, primitive

from ssmref import params as P
from ssmref.rng import as_rng

PARAM_NAMES = ("A", "B", "C", "D")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def ssm_dims(params):
    """``(m, n, p)`` = (input, state, output) dims of ``params``, after checking every shape.

    Raises ``ValueError`` naming the offending matrix and its expected vs received shape.
    """
    if not P.is_node(params):
        raise ValueError(f"params must be a dict with keys {PARAM_NAMES}, got {type(params).__name__}")
    missing = [k for k in PARAM_NAMES if k not in params.keys()]
    if missing:
        raise ValueError(f"params is missing {missing}; expected keys {list(PARAM_NAMES)}")
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    for k, x in zip(PARAM_NAMES, (A, B, C, D)):
        if np.ndim(x) != 2:
            raise ValueError(f"params[{k!r}] must be a matrix (2-d), got shape {np.shape(x)}")
    n = np.shape(A)[0]
    m = np.shape(B)[1]
    p = np.shape(C)[0]
    for k, x, want in (("A", A, (n, n)), ("B", B, (n, m)), ("C", C, (p, n)), ("D", D, (p, m))):
        if np.shape(x) != want:
            raise ValueError(f"params[{k!r}] has shape {np.shape(x)}, expected {want} "
                             f"(A is (n, n), B (n, m), C (p, n), D (p, m); here n={n}, m={m}, p={p})")
    return m, n, p


def _check_inputs(params, u, h0):
    """Validate ``u: (T, m) | (batch, T, m)`` and ``h0: None | (n,) | (batch, n)``."""
    m, n, p = ssm_dims(params)
    if np.ndim(u) not in (2, 3) or np.shape(u)[-1] != m:
        raise ValueError(f"u must have shape (T, {m}) or (batch, T, {m}), got {np.shape(u)}")
    if np.shape(u)[-2] < 1:
        raise ValueError(f"u must have at least one time step, got shape {np.shape(u)}")
    batch = np.shape(u)[:-2]
    if h0 is None:
        return m, n, p, batch
    ok = np.shape(h0) == (n,) or (np.ndim(h0) == 2 and np.shape(h0) == batch + (n,))
    if not ok:
        want = f"({n},)" + (f" or {batch + (n,)}" if batch else "")
        raise ValueError(f"h0 must have shape {want} for u of shape {np.shape(u)}, got {np.shape(h0)}")
    return m, n, p, batch


def _initial_state(h0, n, batch):
    # (..., n): zeros by default, broadcast over the batch
    if h0 is None:
        return np.zeros(batch + (n,))
    return h0


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------

def hippo_legs(n):
    """The (time-invariant) HiPPO-LegS matrices ``(A, b)`` of Gu et al. 2020, as used by S4.

        A_{ij} = -sqrt(2i+1) sqrt(2j+1)   if i > j
                 -(i + 1)                 if i = j
                 0                        if i < j
        b_i    = sqrt(2i+1)

    ``A`` is lower triangular with eigenvalues ``-1, ..., -n``, so ``exp(dt A)`` is stable.
    """
    q = onp.sqrt(2.0 * onp.arange(n) + 1.0)
    A = -onp.tril(onp.outer(q, q), -1) - onp.diag(onp.arange(1.0, n + 1.0))
    return A, q.copy()


def init_ssm(input_dim, state_dim, output_dim, *, rng=None, scale=0.1, method="random", dt=0.1):
    """Parameters ``{"A": (n,n), "B": (n,m), "C": (p,n), "D": (p,m)}``.

    ``method="random"`` (default): ``A = scale * G / rho(G)`` with ``G`` standard normal, so the
    spectral radius of ``A`` is exactly ``scale`` (stable for ``scale < 1``); ``B, C, D`` have entries
    ``N(0, 1/fan_in)`` (``fan_in`` = m for B and D, n for C).

    ``method="hippo"``: HiPPO-LegS (:func:`hippo_legs`) discretized with zero-order hold at step
    ``dt``: ``(A, B) = discretize(A_c, B_c, dt)``, where ``B_c = b w^T`` mixes the ``m`` inputs with
    ``w ~ N(0, 1/m)``; the eigenvalues of ``A`` are ``exp(-k dt)``, ``k = 1..n``.  ``C`` and ``D`` as
    above; ``scale`` is unused.
    """
    for name, v in (("input_dim", input_dim), ("state_dim", state_dim), ("output_dim", output_dim)):
        if not isinstance(v, (int, onp.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    m, n, p = int(input_dim), int(state_dim), int(output_dim)
    rng = as_rng(rng)
    if method == "random":
        if not (scale >= 0 and onp.isfinite(scale)):
            raise ValueError(f"scale must be finite and >= 0, got {scale!r}")
        G = rng.standard_normal((n, n))
        A = G * (scale / onp.max(onp.abs(onp.linalg.eigvals(G))))
        B = rng.standard_normal((n, m)) / onp.sqrt(m)
    elif method == "hippo":
        if not (dt > 0 and onp.isfinite(dt)):
            raise ValueError(f"dt must be finite and > 0, got {dt!r}")
        Ac, b = hippo_legs(n)
        w = rng.standard_normal(m) / onp.sqrt(m)
        A, B = discretize(Ac, onp.outer(b, w), dt, method="zoh")
    else:
        raise ValueError(f"method must be 'random' or 'hippo', got {method!r}")
    C = rng.standard_normal((p, n)) / onp.sqrt(n)
    D = rng.standard_normal((p, m)) / onp.sqrt(m)
    return {"A": onp.asarray(A), "B": onp.asarray(B), "C": C, "D": D}


def spectral_radius(A):
    """``max |eig(A)|`` (a plain float; not differentiated)."""
    return float(onp.max(onp.abs(onp.linalg.eigvals(onp.asarray(getattr(A, "_value", A))))))


# ---------------------------------------------------------------------------------------------
# Recurrent mode
# ---------------------------------------------------------------------------------------------

def ssm_step(params, h, u):
    """One step: ``h' = A h + B u``, ``y = C h' + D u``; returns ``(y, h')``.

    Shapes: ``h: (..., n)``, ``u: (..., m)`` with broadcastable leading dims; ``y: (..., p)``.
    """
    m, n, p = ssm_dims(params)
    if np.ndim(h) < 1 or np.shape(h)[-1] != n:
        raise ValueError(f"h must have shape (..., {n}), got {np.shape(h)}")
    if np.ndim(u) < 1 or np.shape(u)[-1] != m:
        raise ValueError(f"u must have shape (..., {m}), got {np.shape(u)}")
    h_next = np.dot(h, params["A"].T) + np.dot(u, params["B"].T)      # (..., n)
    y = np.dot(h_next, params["C"].T) + np.dot(u, params["D"].T)       # (..., p)
    return y, h_next


def ssm_scan(params, u, h0=None):
    """The recurrence over a sequence: ``(y, h_last)``.

    ``u: (T, m)`` or ``(batch, T, m)``; ``h0: (n,)`` or ``(batch, n)``; ``y: (..., T, p)``;
    ``h_last: (..., n)`` is ``h_{T-1}``.  Cost O(T n (n + m + p)), sequential depth T.
    """
    m, n, p, batch = _check_inputs(params, u, h0)
    h = _initial_state(h0, n, batch)
    ys = []
    for t in range(np.shape(u)[-2]):
        y, h = ssm_step(params, h, u[..., t, :])
        ys.append(y)
    return np.stack(ys, axis=-2), h


# ---------------------------------------------------------------------------------------------
# Convolution mode
# ---------------------------------------------------------------------------------------------

def _matrix_power(A, k):
    """``A^k`` by repeated squaring (differentiable; ``k`` a non-negative int)."""
    result, base = np.eye(np.shape(A)[0]), A
    while k:
        if k & 1:
            result = np.dot(result, base)
        k >>= 1
        if k:
            base = np.dot(base, base)
    return result


def _powers_times(A, X, length):
    """``[A^0 X, A^1 X, ..., A^{length-1} X]`` stacked: ``(length, n, k)`` for ``X: (n, k)``.

    Doubling: given the first ``L`` terms ``S`` and ``P = A^L``, the next ``L`` are ``P S``; so
    ``ceil(log2 length)`` rounds, each one batched matrix product.
    """
    S = X[None]                                           # (1, n, k)
    P_ = A
    while np.shape(S)[0] < length:
        S = np.concatenate([S, np.einsum("ij,ljk->lik", P_, S)], axis=0)
        P_ = np.dot(P_, P_)
    return S[:length]


def ssm_kernel(params, length):
    """The convolution kernel ``K: (length, p, m)``, ``K[k] = C A^k B``.

    Computed by doubling (:func:`_powers_times`) in ``ceil(log2 length)`` batched products.
    """
    ssm_dims(params)
    if not isinstance(length, (int, onp.integer)) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    AkB = _powers_times(params["A"], params["B"], int(length))    # (L, n, m)
    return np.einsum("pn,lnm->lpm", params["C"], AkB)


def _next_pow2(x):
    return 1 << (int(x) - 1).bit_length()


def causal_fft_conv(K, u):
    """``z_t = sum_{k=0}^{t} K[k] u_{t-k}`` for ``K: (T, p, m)``, ``u: (..., T, m)`` -> ``(..., T, p)``.

    Both are zero-padded EXPLICITLY (``np.concatenate``) to ``N = next_pow2(2T)`` so that the
    circular convolution of length ``N`` equals the linear one on ``[0, T)``; ``np.fft.rfft`` is
    then called without ``n=`` (autograd 1.9's gradient of ``rfft(x, n=N)`` is wrong when ``n`` pads).
    """
    T = np.shape(u)[-2]
    N = _next_pow2(2 * T)
    Kp = np.concatenate([K, np.zeros((N - T,) + np.shape(K)[1:])], axis=0)            # (N, p, m)
    up = np.concatenate([u, np.zeros(np.shape(u)[:-2] + (N - T, np.shape(u)[-1]))], axis=-2)
    Kf = np.fft.rfft(Kp, axis=0)                                                    # (N/2+1, p, m)
    uf = np.fft.rfft(up, axis=-2)                                                   # (..., N/2+1, m)
    zf = np.einsum("fpm,...fm->...fp", Kf, uf)                                      # (..., N/2+1, p)
    z = np.fft.irfft(zf, axis=-2)                                                   # (..., N, p)
    return z[..., :T, :]


def ssm_convolve(params, u, h0=None):
    """Same values as :func:`ssm_scan`, computed as an FFT convolution plus the ``h0`` term.

        y_t = (K * u)_t + D u_t + C A^{t+1} h0
        h_{T-1} = sum_{k=0}^{T-1} A^k B u_{T-1-k} + A^T h0

    Cost O(T log T p m) for the convolution plus O(T n^2 (m + p)) for the powers (by doubling).
    """
    m, n, p, batch = _check_inputs(params, u, h0)
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    T = np.shape(u)[-2]
    AkB = _powers_times(A, B, T)                                   # (T, n, m)
    K = np.einsum("pn,lnm->lpm", C, AkB)                           # (T, p, m)
    y = causal_fft_conv(K, u) + np.dot(u, D.T)                     # (..., T, p)
    h_last = np.einsum("knm,...km->...n", AkB, u[..., ::-1, :])    # (..., n)
    if h0 is not None:
        CAt = np.transpose(_powers_times(A.T, np.dot(A.T, C.T), T), (0, 2, 1))  # (T, p, n): C A^{t+1}
        y = y + np.einsum("tpn,...n->...tp", CAt, h0)
        h_last = h_last + np.dot(h0, _matrix_power(A, T).T)
    return y, h_last


# ---------------------------------------------------------------------------------------------
# Parallel (associative) scan mode
# ---------------------------------------------------------------------------------------------

def _interleave(even, odd):
    """``[e0, o0, e1, o1, ...]`` along axis 0; ``len(even)`` is ``len(odd)`` or one more."""
    ne, no = np.shape(even)[0], np.shape(odd)[0]
    if ne > no:
        odd = np.concatenate([odd, np.zeros((1,) + np.shape(odd)[1:])], axis=0)
    both = np.stack([even, odd], axis=1)                       # (ne, 2, ...)
    return np.reshape(both, (2 * ne,) + np.shape(even)[1:])[:ne + no]


def associative_scan(combine, elems):
    """Inclusive prefix scan ``s_t = e_0 . e_1 . ... . e_t`` of an associative ``combine(a, b)``.

    ``elems`` is a tuple of arrays scanned along their first axis; ``combine(a, b)`` takes two such
    tuples (``a`` earlier, ``b`` later) of equal length and returns one.  The work-efficient odd/even
    recursion of Blelloch (1990), as in ``jax.lax.associative_scan``: combine neighbours pairwise,
    scan the half-length sequence recursively, then fill in the even positions; O(T) combines in
    O(log T) vectorized rounds.
    """
    T = np.shape(elems[0])[0]
    if T < 2:
        return elems
    # pairs (e_0 . e_1), (e_2 . e_3), ...
    reduced = combine(tuple(e[0:T - 1:2] for e in elems), tuple(e[1::2] for e in elems))
    odd = associative_scan(combine, reduced)           # prefixes ending at t = 1, 3, 5, ...
    # prefixes ending at t = 2, 4, ...: (prefix ending at t-1) . e_t
    n_even = (T + 1) // 2 - 1
    even_rest = combine(tuple(o[:n_even] for o in odd), tuple(e[2::2] for e in elems))
    even = tuple(np.concatenate([e[:1], r], axis=0) for e, r in zip(elems, even_rest))
    return tuple(_interleave(e, o) for e, o in zip(even, odd))


def affine_combine(a, b):
    """Compose affine maps, earlier ``a = (M1, v1)`` then later ``b = (M2, v2)``:
    ``x -> M2 (M1 x + v1) + v2 = (M2 M1) x + (M2 v1 + v2)``.

    ``M: (T, n, n)``, ``v: (T, batch, n)``: both scanned along their first (time) axis.
    """
    M1, v1 = a
    M2, v2 = b
    M2_T = np.swapaxes(M2, -1, -2)
    return np.matmul(M2, M1), np.matmul(v1, M2_T) + v2       # (T, n, n), (T, batch, n)


def ssm_parallel_scan(params, u, h0=None):
    """Same values as :func:`ssm_scan`, by an associative scan over the affine maps
    ``h -> A h + B u_t`` (:func:`associative_scan` with :func:`affine_combine`).

    The state ``h0`` enters through the first element: ``v_0 = A h0 + B u_0``.  The scan is the
    general one for time-varying ``A_t`` (as in S5 or Mamba); here ``A_t = A`` for every ``t``.
    Cost O(T n^2 (n + batch)) work (the products of ``A`` are formed too, as they would be for a
    time-varying system) in O(log T) rounds.
    """
    m, n, p, batch = _check_inputs(params, u, h0)
    A, B, C, D = (params[k] for k in PARAM_NAMES)
    T = np.shape(u)[-2]
    ut = np.reshape(np.moveaxis(u, -2, 0), (T, -1, m))          # (T, batch or 1, m)
    v = np.dot(ut, B.T)                                          # (T, batch or 1, n)
    if h0 is not None:
        first = v[:1] + np.reshape(np.dot(h0, A.T), (1, -1, n))
        v = np.concatenate([first, v[1:]], axis=0)
    M = np.broadcast_to(A[None], (T, n, n))                      # A_t = A for every t
    _, h = associative_scan(affine_combine, (M, v))             # (T, batch or 1, n)
    h = np.reshape(np.moveaxis(h, 0, -2), batch + (T, n))        # (..., T, n)
    y = np.dot(h, C.T) + np.dot(u, D.T)
    return y, h[..., -1, :]


# ---------------------------------------------------------------------------------------------
# Discretization
# ---------------------------------------------------------------------------------------------

@primitive
def expm(X):
    """Matrix exponential (``scipy.linalg.expm``), differentiable to any order.

    VJP via the Frechet derivative and the block identity (Najfeld & Havel 1995; Higham 2008):
        expm([[X, E], [0, X]]) = [[e^X, L(X, E)], [0, e^X]]
    and ``<G, L(X, E)> = <L(X^T, G), E>``, so the VJP of ``G`` is the upper-right block of
    ``expm([[X^T, G], [0, X^T]])``, itself computed with this primitive (hence higher orders).
    """
    return scipy.linalg.expm(X)


def _expm_vjp(ans, X):
    n = np.shape(X)[0]

    def vjp(G):
        top = np.concatenate([X.T, G], axis=1)
        bottom = np.concatenate([np.zeros((n, n)), X.T], axis=1)
        return expm(np.concatenate([top, bottom], axis=0))[:n, n:]

    return vjp


defvjp(expm, _expm_vjp)


def discretize(A, B, dt, method="zoh"):
    """Continuous ``(A, B)`` -> discrete ``(Ad, Bd)`` for step ``dt``.

    ``zoh`` (zero-order hold, input constant over each step):
        Ad = e^{dt A},   Bd = (int_0^dt e^{s A} ds) B  (= A^{-1}(Ad - I) B when A is invertible),
    computed exactly, also for singular ``A``, as blocks of
    ``expm(dt [[A, B], [0, 0]]) = [[Ad, Bd], [0, I]]``.

    ``bilinear`` (Tustin / trapezoid; the S4 convention):
        Ad = (I - dt/2 A)^{-1} (I + dt/2 A),   Bd = (I - dt/2 A)^{-1} dt B.
    ``C`` and ``D`` are left unchanged.  (``scipy.signal.cont2discrete(..., "bilinear")`` gives the
    same ``Ad, Bd`` but also transforms ``C, D``; see ``docs/ssm.md``.)
    """
    if np.ndim(A) != 2 or np.shape(A)[0] != np.shape(A)[1]:
        raise ValueError(f"A must be square (n, n), got shape {np.shape(A)}")
    n = np.shape(A)[0]
    if np.ndim(B) != 2 or np.shape(B)[0] != n:
        raise ValueError(f"B must have shape ({n}, m) for A of shape {np.shape(A)}, got {np.shape(B)}")
    if np.ndim(dt) != 0 or not onp.isfinite(getattr(dt, "_value", dt)) or not getattr(dt, "_value", dt) > 0:
        raise ValueError(f"dt must be a positive finite scalar, got {dt!r}")
    m = np.shape(B)[1]
    if method == "zoh":
        top = np.concatenate([A, B], axis=1)                         # (n, n+m)
        block = np.concatenate([top, np.zeros((m, n + m))], axis=0)   # (n+m, n+m)
        E = expm(dt * block)
        return E[:n, :n], E[:n, n:]
    if method == "bilinear":
        I = np.eye(n)
        left = I - (dt / 2.0) * A
        return np.linalg.solve(left, I + (dt / 2.0) * A), np.linalg.solve(left, dt * B)
    raise ValueError(f"method must be 'zoh' or 'bilinear', got {method!r}")


def undiscretize(Ad, Bd, dt, method="zoh"):
    """Inverse of :func:`discretize`, for round-trip checks (plain NumPy/SciPy, not differentiated).

    ``zoh``: ``A = logm(Ad) / dt`` (principal logarithm; valid when ``dt * eig(A)`` has imaginary
    parts in ``(-pi, pi)``), ``B = (int_0^dt e^{sA} ds)^{-1} Bd``.
    ``bilinear``: ``A = (2/dt) (Ad + I)^{-1} (Ad - I)``, ``B = (I - dt/2 A) Bd / dt``.
    """
    Ad, Bd = onp.asarray(Ad, dtype=float), onp.asarray(Bd, dtype=float)
    n = Ad.shape[0]
    I = onp.eye(n)
    if method == "zoh":
        A = onp.real(scipy.linalg.logm(Ad)) / dt
        E = scipy.linalg.expm(dt * onp.block([[A, I], [onp.zeros((n, 2 * n))]]))
        return A, onp.linalg.solve(E[:n, n:], Bd)
    if method == "bilinear":
        A = (2.0 / dt) * onp.linalg.solve(Ad + I, Ad - I)
        return A, (I - (dt / 2.0) * A) @ Bd / dt
    raise ValueError(f"method must be 'zoh' or 'bilinear', got {method!r}")


MODES = {"scan": ssm_scan, "convolve": ssm_convolve, "parallel": ssm_parallel_scan}


def run_ssm(params, u, h0=None, mode="scan"):
    """Dispatch to one of :data:`MODES` (``"scan"``, ``"convolve"``, ``"parallel"``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    return MODES[mode](params, u, h0)


def ssm_states(params, u, h0=None, mode="scan"):
    """The state sequence ``h_t`` of ``h_t = A h_{t-1} + B u_t``: ``u (..., T, m) -> (..., T, n)``.

    The SSM with ``C = I`` and ``D = 0`` (its outputs are its states), run in ``mode``; only
    ``params["A"]`` and ``params["B"]`` are read.
    """
    n, m = np.shape(params["B"])
    return run_ssm({"A": params["A"], "B": params["B"], "C": onp.eye(n), "D": onp.zeros((n, m))},
                   u, h0, mode)[0]


# ---------------------------------------------------------------------------------------------
# The stateful wrapper
# ---------------------------------------------------------------------------------------------

class StateSpaceModel:
    """A linear SSM that keeps its hidden state across calls (the prototype's ``core/ssm.py``).

    ``params`` is the parameter dict, read at call time by :meth:`forward` and
    :meth:`forward_sequence` (so the test-time adapter can swap traced parameters in).
    ``hidden_state`` is ``None`` before the first call and after :meth:`reset_state`, otherwise
    the state ``h_t`` after the last input, shape ``(n,)`` or ``(batch, n)``.
    """

    def __init__(self, input_dim, state_dim, output_dim, *, rng=None, scale=0.1, method="random",
                 dt=0.1, mode="scan"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        self.params = init_ssm(input_dim, state_dim, output_dim, rng=rng, scale=scale,
                               method=method, dt=dt)
        self.input_dim, self.state_dim, self.output_dim = int(input_dim), int(state_dim), int(output_dim)
        self.mode = mode
        self.hidden_state = None

    def _state_for(self, batch):
        n = self.state_dim
        if self.hidden_state is None:
            return np.zeros(batch + (n,))
        if np.shape(self.hidden_state) != batch + (n,):
            raise ValueError(f"hidden_state has shape {np.shape(self.hidden_state)} but the input needs "
                             f"{batch + (n,)}; call reset_state() to change the batch size")
        return self.hidden_state

    def forward(self, u):
        """One step from the stored state: ``u: (m,)`` or ``(batch, m)`` -> ``y: (p,)`` or ``(batch, p)``."""
        m = self.input_dim
        if np.ndim(u) not in (1, 2) or np.shape(u)[-1] != m:
            raise ValueError(f"u must have shape ({m},) or (batch, {m}), got {np.shape(u)}")
        y, self.hidden_state = ssm_step(self.params, self._state_for(np.shape(u)[:-1]), u)
        return y

    __call__ = forward

    def forward_sequence(self, us, reset=True):
        """Run a sequence ``us: (T, m)`` or ``(batch, T, m)`` -> ``y: (..., T, p)``.

        ``reset=True`` starts from the zero state; ``reset=False`` continues from the stored state.
        The state after the last step is stored either way.
        """
        m = self.input_dim
        if np.ndim(us) not in (2, 3) or np.shape(us)[-1] != m:
            raise ValueError(f"us must have shape (T, {m}) or (batch, T, {m}), got {np.shape(us)}")
        if reset:
            self.hidden_state = None
        h0 = None if self.hidden_state is None else self._state_for(np.shape(us)[:-2])
        y, self.hidden_state = run_ssm(self.params, us, h0, self.mode)
        return y

    def reset_state(self):
        """Forget the hidden state (the next call starts from zeros)."""
        self.hidden_state = None

    def get_parameters(self):
        """A copy of the parameters (changing it does not change the model)."""
        return P.tree_copy(self.params)

    def set_parameters(self, params):
        """Replace the parameters by a validated copy of ``params`` (dims must match the model)."""
        m, n, p = ssm_dims(params)
        if (m, n, p) != (self.input_dim, self.state_dim, self.output_dim):
            raise ValueError(f"params have (input, state, output) dims {(m, n, p)}, the model has "
                             f"{(self.input_dim, self.state_dim, self.output_dim)}")
        new = P.tree_copy({k: params[k] for k in PARAM_NAMES})
        for k, v in new.items():
            if not onp.all(onp.isfinite(v)):
                raise ValueError(f"params[{k!r}] has non-finite entries")
        self.params = new

    def save(self, path):
        """Write parameters, hidden state and mode to ``path`` (``.npz``, atomic, no pickle)."""
        arrays = {k: onp.asarray(self.params[k], dtype=onp.float64) for k in PARAM_NAMES}
        if self.hidden_state is not None:
            arrays["hidden_state"] = onp.asarray(self.hidden_state, dtype=onp.float64)
        arrays["mode"] = onp.array(list(MODES).index(self.mode))
        P.save_npz(path, arrays)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; ``ValueError`` on any malformed file."""
        raw = P.load_npz(path, {"A": None, "B": None, "C": None, "D": None, "mode": ((), "i")},
                         allow_extra=True)
        extra = [k for k in raw if k not in PARAM_NAMES + ("mode", "hidden_state")]
        if extra:
            raise ValueError(f"{path}: unexpected arrays {extra}")
        params = {k: raw[k] for k in PARAM_NAMES}
        try:
            m, n, p = ssm_dims(params)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        mode_index = int(raw["mode"])
        if not 0 <= mode_index < len(MODES):
            raise ValueError(f"{path}: mode index {mode_index} out of range")
        model = cls.__new__(cls)
        model.input_dim, model.state_dim, model.output_dim = m, n, p
        model.mode = list(MODES)[mode_index]
        model.hidden_state = None
        model.set_parameters(params)
        if "hidden_state" in raw:
            h = raw["hidden_state"]
            if h.dtype.kind != "f" or h.ndim not in (1, 2) or h.shape[-1] != n:
                raise ValueError(f"{path}: hidden_state has shape {h.shape} and dtype {h.dtype}, "
                                 f"expected float ({n},) or (batch, {n})")
            model.hidden_state = h.astype(onp.float64)
        return model

    def __repr__(self):
        state = "None" if self.hidden_state is None else str(tuple(onp.shape(self.hidden_state)))
        return (f"StateSpaceModel(input_dim={self.input_dim}, state_dim={self.state_dim}, "
                f"output_dim={self.output_dim}, mode={self.mode!r}, hidden_state={state}, "
                f"spectral_radius={spectral_radius(self.params['A']):.4g})")


if __name__ == "__main__":
    import sys

    from ssmref.selftest import ssm_selftest
    sys.exit(ssm_selftest())
