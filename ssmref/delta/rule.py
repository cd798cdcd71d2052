"""DeltaNet, Gated DeltaNet and KDA with fla's names, layouts and defaults.

For each batch row (or packed sequence) and value head, state ``S: (K, V)``,
``S_{-1}`` = ``initial_state`` or 0::

    q̂_t = scale · n(q_t),   k̂_t = n(k_t)        n = l2norm (x / sqrt(Σx² + 1e-6)) when
                                                 use_qk_l2norm_in_kernel, else the identity
    S_t = diag(e^{g_t}) S_{t-1}                  the decay first (g in log space)
    S_t = S_t + k̂_t (β_t ⊙ (v_t − S_tᵀ k̂_t))ᵀ    the delta update
    o_t = S_tᵀ q̂_t                               from the new state

``delta_rule``: no gate (``g = 0``).  ``gated_delta_rule``: ``g (B, T, HV)``, one per head.
``kda``: ``g (B, T, HV, K)``, one per key channel (Kimi Delta Attention).  ``scale`` defaults to
``K^-1/2``.  Shapes (fla's): ``q, k (B, T, H, K)``, ``v (B, T, HV, V)`` with ``HV % H == 0``
(value head ``i`` reads query/key head ``i // (HV/H)``, fla's GVA), ``beta (B, T, HV)`` or
``(B, T, HV, V)`` (one per value channel, as fla's fused recurrent kernels accept),
``initial_state (N, HV, K, V)``.  ``cu_seqlens (N+1,)`` int: batch 1, ``N`` sequences packed
along ``T``, each starting from its own ``initial_state[n]`` (or 0); empty sequences allowed
(their final state is their initial state).  Returns ``(o (B, T, HV, V), final_state (N, HV, K, V)
or None)``.

Keyword-only extras: ``use_qk_l2norm_in_kernel`` (fla's name), ``method`` (``"chunked"``, the
WY/UT form of :mod:`ssmref.delta.chunked`, or ``"recurrence"``, :mod:`ssmref.delta.recurrent`),
``chunk_size`` (any ``>= 1``; the result does not depend on it).  The one-step decode forms take
one token (no ``T`` axis) and a ``state``, and return ``(o, new_state)``.

Reference: fla's ``chunk_delta_rule`` / ``fused_recurrent_delta_rule``,
``chunk_gated_delta_rule`` / ``fused_recurrent_gated_delta_rule``, ``chunk_kda``
(github.com/fla-org/flash-linear-attention); equations and conventions: ``docs/delta.md``.
"""

import autograd.numpy as np

from ssmref.delta import args
from ssmref.delta.chunked import delta_chunked
from ssmref.delta.recurrent import core_layout, delta_recurrence, delta_step_core


def delta_sequence_core(a):
    """``(o, final)`` of checked :class:`~ssmref.delta.args.SequenceArgs` (final always)."""
    q, k, v, g, beta = core_layout(a.q, a.k, a.v, a.g, a.beta, a.scale, a.l2norm_qk)
    B, T, HV, V = np.shape(v)
    K = np.shape(q)[-1]
    S0 = np.zeros((B if a.segments is None else len(a.segments), HV, K, V)) \
        if a.initial_state is None else a.initial_state

    def run(sl, S):
        if a.method == "recurrence":
            return delta_recurrence(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl], S)
        return delta_chunked(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl], S, a.chunk_size)

    if a.segments is None:
        return run(slice(None), S0)
    outs, finals = [], []
    for n, (start, end) in enumerate(a.segments):               # each sequence on its own
        o, S = run(slice(start, end), S0[n:n + 1])
        outs.append(o)
        finals.append(S[0])
    return np.concatenate(outs, axis=1), np.stack(finals)


def _sequence(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
              use_qk_l2norm_in_kernel, method, chunk_size, gate):
    a = args.sequence_args(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
                           use_qk_l2norm_in_kernel, method, chunk_size, gate)
    o, final = delta_sequence_core(a)
    return o, (final if a.output_final_state else None)


def delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
               cu_seqlens=None, *, use_qk_l2norm_in_kernel=False, method="chunked", chunk_size=64):
    """DeltaNet: ``S_t = S_{t-1} + k_t (β_t ⊙ (v_t − S_{t-1}ᵀ k_t))ᵀ``, ``o_t = S_tᵀ (scale q_t)``.

    Shapes and options: module docstring.  Returns ``(o, final_state or None)``."""
    return _sequence(q, k, v, None, beta, scale, initial_state, output_final_state, cu_seqlens,
                     use_qk_l2norm_in_kernel, method, chunk_size, "none")


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                     cu_seqlens=None, *, use_qk_l2norm_in_kernel=False, method="chunked",
                     chunk_size=64):
    """Gated DeltaNet: ``S_{t-1}`` first decayed by ``exp(g_t)``, ``g (B, T, HV)`` in log space,
    then the delta rule.  Shapes and options: module docstring."""
    return _sequence(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
                     use_qk_l2norm_in_kernel, method, chunk_size, "head")


def kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
        cu_seqlens=None, *, use_qk_l2norm_in_kernel=False, method="chunked", chunk_size=64):
    """Kimi Delta Attention: as :func:`gated_delta_rule` with one log gate per key channel,
    ``g (B, T, HV, K)``: ``S_{t-1}`` first becomes ``diag(exp(g_t)) S_{t-1}``."""
    return _sequence(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
                     use_qk_l2norm_in_kernel, method, chunk_size, "channel")


def _step(q, k, v, g, beta, state, scale, use_qk_l2norm_in_kernel, gate):
    a = args.step_args(q, k, v, g, beta, state, scale, use_qk_l2norm_in_kernel, gate)
    q, k, v, g, beta = core_layout(*(None if x is None else x[:, None]
                                     for x in (a.q, a.k, a.v, a.g, a.beta)),
                                   a.scale, a.l2norm_qk)             # through a T = 1 axis
    return delta_step_core(a.state, q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0])


def delta_rule_step(q, k, v, beta, state, scale=None, *, use_qk_l2norm_in_kernel=False):
    """One decoding step of :func:`delta_rule`: ``q, k (B, H, K)``, ``v (B, HV, V)``,
    ``beta (B, HV)`` or ``(B, HV, V)``, ``state (B, HV, K, V)``; returns
    ``(o (B, HV, V), new_state (B, HV, K, V))``."""
    return _step(q, k, v, None, beta, state, scale, use_qk_l2norm_in_kernel, "none")


def gated_delta_rule_step(q, k, v, g, beta, state, scale=None, *, use_qk_l2norm_in_kernel=False):
    """One decoding step of :func:`gated_delta_rule` (``g (B, HV)``); returns ``(o, new_state)``."""
    return _step(q, k, v, g, beta, state, scale, use_qk_l2norm_in_kernel, "head")


def kda_step(q, k, v, g, beta, state, scale=None, *, use_qk_l2norm_in_kernel=False):
    """One decoding step of :func:`kda` (``g (B, HV, K)``); returns ``(o, new_state)``."""
    return _step(q, k, v, g, beta, state, scale, use_qk_l2norm_in_kernel, "channel")
