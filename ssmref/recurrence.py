"""Linear recurrences along time: the diagonal recurrence as one autograd primitive with an adjoint
VJP, and the generic log-depth associative scan.

    h_t = a_t * h_{t-1} + b_t,        t = 0, ..., T-1,        h_{-1} = h0 (zeros by default)

elementwise (``*`` is the Hadamard product), along axis 0 (time).  It is the core of every diagonal
SSM: S4D and S5 (``a_t = exp(Δ Λ)`` constant in time) and Mamba's selective scan
(``a_t = exp(Δ_t A)``).  Real and complex values are both allowed.

Why a primitive: written as a Python loop of autograd operations, the recurrence puts ``T`` nodes on
autograd's tape, and reverse mode replays them one by one.  Here the forward pass is a plain NumPy
loop and the backward pass is the *adjoint recurrence*, run backwards in time,

    λ_t = g_t + a_{t+1} * λ_{t+1}        (λ_{T-1} = g_{T-1})
    ∂L/∂b_t = λ_t,    ∂L/∂a_t = λ_t * h_{t-1},    ∂L/∂h0 = a_0 * λ_0,

which is again a diagonal linear recurrence (on time-reversed arrays), computed by this same
primitive.  The VJP is therefore built from differentiable operations only, so gradients of every
order are exact (MAML differentiates twice).

Complex values follow autograd's convention: for holomorphic maps the VJP multiplies by the
derivative without conjugation, so ``autograd.grad`` of a real loss ``L`` w.r.t. ``z = x + iy`` is
``∂L/∂x − i ∂L/∂y`` (as in JAX; PyTorch's ``.grad`` is its conjugate).  See ``docs/ssm.md``.

The dense counterpart, for a full matrix ``A`` constant in time (the dense SSM of
:mod:`ssmref.ssm`), with states as rows ``H_t: (..., n)``::

    H_t = H_{t-1} Aᵀ + V_t                         (h_t = A h_{t-1} + v_t for every row)
    λ_t = G_t + λ_{t+1} A,   ∂L/∂V_t = λ_t,   ∂L/∂A = Σ_t λ_tᵀ H_{t-1},   ∂L/∂h0 = λ_0 A

is :func:`dense_recurrence`, again one primitive whose VJP is the adjoint recurrence computed by the
primitive itself; its forward pass is a NumPy loop, or (``parallel=True``) the log-depth scan below
specialised to a constant ``A``, whose VJP then stays log-depth too.

The associative scan computes every prefix ``s_t = e_0 ∘ e_1 ∘ ... ∘ e_t`` of an associative
operation ``∘`` in O(log T) vectorized rounds (Blelloch 1990); with ``∘`` the composition of affine
maps ``h -> M h + v`` it is the log-depth form of every linear recurrence (the parallel modes).
"""

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp_argnums, primitive


@primitive
def _recurrence(a, b, h0):
    # plain NumPy: a (T or 1, ...) broadcastable to b (T, ...), h0 broadcastable to b[0]
    T = b.shape[0]
    dtype = onp.result_type(a, b, h0)
    h = onp.empty(b.shape, dtype=dtype)
    prev = onp.broadcast_to(h0, b.shape[1:])
    a_const = a.shape[0] == 1
    for t in range(T):
        prev = (a[0] if a_const else a[t]) * prev + b[t]
        h[t] = prev
    return h


def sum_to(x, shape):
    """``x`` summed over the axes that NumPy broadcasting added or stretched to reach its shape
    from ``shape`` (broadcasting in reverse: the VJP of a broadcast; differentiable)."""
    while np.ndim(x) > len(shape):
        x = np.sum(x, axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and np.shape(x)[axis] != 1:
            x = np.sum(x, axis=axis, keepdims=True)
    return x


def _unbroadcast(x, shape, like):
    """:func:`sum_to` ``shape``, then the real part if ``like`` is real."""
    x = sum_to(x, shape)
    if not onp.iscomplexobj(like) and onp.iscomplexobj(x):
        x = np.real(x)
    return x


def _adjoint(a, g):
    """``λ_t = g_t + a_{t+1} λ_{t+1}``: the recurrence run backwards in time (differentiable)."""
    T = np.shape(g)[0]
    if np.shape(a)[0] == 1:
        a_next = a                                             # constant in time
    else:
        a_next = np.concatenate([a[1:], np.zeros((1,) + np.shape(a)[1:], dtype=a.dtype)], axis=0)
    return linear_recurrence(a_next[::-1] if np.shape(a_next)[0] == T else a_next, g[::-1])[::-1]


def _recurrence_vjp(argnums, h, args, kwargs):
    """The VJPs w.r.t. ``argnums`` of ``(a, b, h0)``, from one adjoint recurrence ``λ``."""
    a, b, h0 = args

    def vjp(g):
        lam = _adjoint(a, g)
        grads = []
        for argnum in argnums:
            if argnum == 0:
                h_init = h0 + np.zeros(np.shape(b)[1:], dtype=h.dtype)         # h_{-1}, (...)
                h_prev = np.concatenate([h_init[None], h[:-1]], axis=0)      # h_{t-1}, (T, ...)
                grads.append(_unbroadcast(lam * h_prev, np.shape(a), a))
            elif argnum == 1:
                grads.append(_unbroadcast(lam, np.shape(b), b))
            else:
                grads.append(_unbroadcast(a[0] * lam[0], np.shape(h0), h0))
        return tuple(grads)
    return vjp


defvjp_argnums(_recurrence, _recurrence_vjp)


def linear_recurrence(a, b, h0=None):
    """All states ``h: (T, ...)`` of ``h_t = a_t * h_{t-1} + b_t`` (elementwise, time on axis 0).

    ``b: (T, ...)``; ``a``: the same shape, or ``(1, ...)`` / broadcastable to ``b`` with a leading
    time axis of 1 (constant in time); ``h0``: broadcastable to ``b.shape[1:]`` (zeros if ``None``).
    Real or complex; differentiable to any order w.r.t. ``a``, ``b`` and ``h0`` (adjoint VJP).
    The math below the public boundaries that call it is unchecked: callers validate shapes.
    """
    if h0 is None:
        h0 = np.zeros((), dtype=onp.result_type(a, b))
    if np.shape(a)[0] not in (1, np.shape(b)[0]):
        raise ValueError(f"a must have {np.shape(b)[0]} or 1 time steps on axis 0, got shape {np.shape(a)}")
    return _recurrence(a, b, h0)


# ---------------------------------------------------------------------------------------------
# The dense (matrix) recurrence, h_t = A h_{t-1} + v_t, as one primitive with an adjoint VJP
# ---------------------------------------------------------------------------------------------

def matmul_last(X, M):
    """``X M`` on the last axis as one BLAS product: ``X: (..., k)``, ``M: (k, j)`` -> ``(..., j)``."""
    shape = np.shape(X)
    return np.reshape(np.dot(np.reshape(X, (-1, shape[-1])), M), shape[:-1] + (np.shape(M)[1],))


def _rows(A, V, h0):
    """Plain NumPy set-up of both forms: ``H`` (uninitialised, ``(T, rows, n)``), ``V`` and ``h0``
    as ``(T, rows, n)`` and ``(rows, n)`` (``h0`` broadcast; ``None`` stays ``None``)."""
    n = V.shape[-1]
    dtype = onp.result_type(A, V, *(() if h0 is None else (h0,)))
    V3 = onp.reshape(V, (V.shape[0], -1, n))
    h0 = None if h0 is None else onp.reshape(onp.broadcast_to(h0, V.shape[1:]), (-1, n))
    return onp.empty(V3.shape, dtype=dtype), V3, h0


# H_t = H_{t-1} Aᵀ + V_t, t = 0..T-1 (reverse: H_t = H_{t+1} Aᵀ + V_t, t = T-1..0), from h0.
@primitive
def _dense_loop(A, V, h0, reverse):
    """Plain NumPy, sequential: one ``(rows, n) @ (n, n)`` product per time step."""
    H, V3, h0 = _rows(A, V, h0)
    T, AT = V.shape[0], A.T
    steps = range(T - 1, -1, -1) if reverse else range(T)
    first, step = steps[0], (1 if reverse else -1)                # H_t reads H_{t+step}
    H[first] = V3[first] if h0 is None else onp.dot(h0, AT) + V3[first]
    for t in steps[1:]:
        onp.dot(H[t + step], AT, out=H[t])
        H[t] += V3[t]
    return onp.reshape(H, V.shape)


def _scan_in_place(A, H):
    """The log-depth scan on ``H: (T, rows, n)`` holding ``V`` (overwritten by the states): the
    odd/even recursion of :func:`associative_scan` for the maps ``h -> A h + v_t``.  With ``A``
    constant, all elements of recursion level ``k`` carry the matrix ``A^(2^k)``, so only the
    vectors are combined: O(T rows n²) work, O(n³ log T) for the squarings."""
    T = H.shape[0]
    if T < 2:
        return
    AT = A.T
    # pairs: (A, v_{2i}) then (A, v_{2i+1}) is (A², v_{2i} Aᵀ + v_{2i+1})
    H[1::2] += onp.matmul(H[0:T - 1:2], AT)
    _scan_in_place(onp.dot(A, A), H[1::2])        # H_1, H_3, ... (a strided view, in place)
    H[2::2] += onp.matmul(H[1:T - 1:2], AT)        # H_{2i} = H_{2i-1} Aᵀ + v_{2i}


@primitive
def _dense_doubling(A, V, h0, reverse):
    """Plain NumPy, log depth: :func:`_scan_in_place` (on the time-reversed view for ``reverse``)."""
    H, V3, h0 = _rows(A, V, h0)
    H[...] = V3
    first = -1 if reverse else 0
    if h0 is not None:
        H[first] += onp.dot(h0, A.T)                # the state enters through the first map
    _scan_in_place(A, H[::-1] if reverse else H)
    return onp.reshape(H, V.shape)


# The adjoint of  H_t = H_{t-1} Aᵀ + V_t  (rows; G = ∂L/∂H) runs backwards in time,
#     λ_t = G_t + λ_{t+1} A,   λ_{T-1} = G_{T-1}     (the same recurrence with Aᵀ, reversed)
#     ∂L/∂V_t = λ_t,    ∂L/∂A = Σ_t λ_tᵀ H_{t-1},    ∂L/∂h0 = λ_0 A
# (mirrored for ``reverse``), computed with the primitive itself: differentiable again, any order.
def _dense_vjp(recurrence):
    def vjp_argnums(argnums, H, args, kwargs):
        A, V, h0, reverse = args
        n = np.shape(A)[0]
        first = -1 if reverse else 0

        def vjp(G):
            lam = recurrence(np.transpose(A), G, None, not reverse)            # (T, ..., n)
            grads = []
            for argnum in argnums:
                if argnum == 0:
                    # pairs (λ_t, H_{t-1}), t >= 1 (reverse: (λ_t, H_{t+1}), t <= T-2), plus h0's
                    L, H_prev = (lam[:-1], H[1:]) if reverse else (lam[1:], H[:-1])
                    dA = np.dot(np.transpose(np.reshape(L, (-1, n))), np.reshape(H_prev, (-1, n)))
                    if h0 is not None:
                        h_init = h0 + np.zeros(np.shape(H)[1:], dtype=H.dtype)
                        dA = dA + np.dot(np.transpose(np.reshape(lam[first], (-1, n))),
                                         np.reshape(h_init, (-1, n)))
                    grads.append(_unbroadcast(dA, np.shape(A), A))
                elif argnum == 1:
                    grads.append(_unbroadcast(lam, np.shape(V), V))
                else:
                    grads.append(_unbroadcast(np.dot(lam[first], A), np.shape(h0), h0))
            return tuple(grads)
        return vjp
    return vjp_argnums


defvjp_argnums(_dense_loop, _dense_vjp(_dense_loop))
defvjp_argnums(_dense_doubling, _dense_vjp(_dense_doubling))


def dense_recurrence(A, V, h0=None, *, parallel=False, reverse=False):
    """All states ``H: (T, ..., n)`` of ``h_t = A h_{t-1} + v_t`` (rows: ``H_t = H_{t-1} Aᵀ + V_t``),
    ``t = 0..T-1`` from ``h_{-1} = h0``; ``reverse=True``: ``H_t = H_{t+1} Aᵀ + V_t``, ``t = T-1..0``
    from ``h_T = h0``.

    ``A: (n, n)`` (constant in time), ``V: (T, ..., n)`` (time on axis 0, any batch dims after),
    ``h0``: broadcastable to ``V.shape[1:]`` (zeros if ``None``).  ``parallel=False``: a NumPy loop
    over time; ``parallel=True``: the log-depth associative scan of the maps ``h -> A h + v_t``
    (same values up to rounding).  Either way autograd records one node, whose VJP is the adjoint
    recurrence above, computed by the same form (the parallel one stays log-depth).  Real or
    complex; differentiable to any order w.r.t. ``A``, ``V`` and ``h0``.  The shapes are checked
    here; the values are not (the callers' public functions check them).
    """
    A_shape, V_shape = np.shape(A), np.shape(V)
    n = A_shape[0] if len(A_shape) == 2 else None
    if A_shape != (n, n) or len(V_shape) < 2 or V_shape[-1] != n:
        raise ValueError(f"A must be (n, n) and V (T, ..., n), got shapes {A_shape} and {V_shape}")
    if V_shape[0] < 1:
        raise ValueError(f"V must have at least one time step, got shape {V_shape}")
    if h0 is not None:
        try:
            ok = onp.broadcast_shapes(np.shape(h0), V_shape[1:]) == V_shape[1:]
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"h0 must broadcast to {V_shape[1:]}, got shape {np.shape(h0)}")
    return (_dense_doubling if parallel else _dense_loop)(A, V, h0, bool(reverse))


# ---------------------------------------------------------------------------------------------
# The associative (prefix) scan, for any associative combine
# ---------------------------------------------------------------------------------------------

def _interleave(even, odd):
    """``[e0, o0, e1, o1, ...]`` along axis 0; ``len(even)`` is ``len(odd)`` or one more."""
    ne, no = np.shape(even)[0], np.shape(odd)[0]
    if ne > no:
        odd = np.concatenate([odd, np.zeros((1,) + np.shape(odd)[1:])], axis=0)
    both = np.stack([even, odd], axis=1)                       # (ne, 2, ...)
    return np.reshape(both, (2 * ne,) + np.shape(even)[1:])[:ne + no]


def diagonal_combine(earlier, later):
    """Compose two diagonal affine maps, ``(a1, b1)`` then ``(a2, b2)``:
    ``x -> a2 (a1 x + b1) + b2 = (a2 a1) x + (a2 b1 + b2)`` (elementwise), the operation whose
    :func:`associative_scan` over ``(a_t, b_t)`` gives every state of ``h_t = a_t h_{t-1} + b_t``."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


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
