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

The associative scan computes every prefix ``s_t = e_0 ∘ e_1 ∘ ... ∘ e_t`` of an associative
operation ``∘`` in O(log T) vectorized rounds (Blelloch 1990); with ``∘`` the composition of affine
maps ``h -> M h + v`` it is the log-depth form of every linear recurrence (the parallel modes).
"""

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp, primitive


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


def _unbroadcast(x, shape, like):
    """Sum ``x`` down to ``shape`` (NumPy broadcasting in reverse); real part if ``like`` is real."""
    while np.ndim(x) > len(shape):
        x = np.sum(x, axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and np.shape(x)[axis] != 1:
            x = np.sum(x, axis=axis, keepdims=True)
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


def _vjp_a(h, a, b, h0):
    def vjp(g):
        h_init = h0 + np.zeros(np.shape(b)[1:], dtype=h.dtype)             # h_{-1}, (...)
        h_prev = np.concatenate([h_init[None], h[:-1]], axis=0)          # h_{t-1}, (T, ...)
        return _unbroadcast(_adjoint(a, g) * h_prev, np.shape(a), a)
    return vjp


def _vjp_b(h, a, b, h0):
    return lambda g: _unbroadcast(_adjoint(a, g), np.shape(b), b)


def _vjp_h0(h, a, b, h0):
    return lambda g: _unbroadcast(a[0] * _adjoint(a, g)[0], np.shape(h0), h0)


defvjp(_recurrence, _vjp_a, _vjp_b, _vjp_h0)


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
# The associative (prefix) scan, for any associative combine
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
