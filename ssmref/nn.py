"""Small neural-network pieces as pure functions: dense layers, MLPs, softmax and two policies'
distributions (categorical and diagonal Gaussian).

Conventions:

- Parameters are dicts of float64 arrays (:mod:`ssmref.params`).  A dense layer is
  ``{"W": (out, in), "b": (out,)}`` and computes ``y = x W^T + b``: the layout of
  ``torch.nn.Linear`` (``weight``, ``bias``), so weights copy across without a transpose.
- An MLP is ``{"layer0": dense, "layer1": dense, ...}``; layers run in numeric order.
- Leading dimensions ``...`` are batch dimensions and broadcast through every function.
- Every function is twice differentiable with ``autograd`` in its float arguments (``relu`` and
  ``max``-type operations only almost everywhere; noted where they occur).  No array is written in
  place, so higher-order derivatives are exact.
- Log-probabilities of vector actions are **summed** over the action dimension (the log-density
  of the joint), as ``torch.distributions.Independent(Normal, 1)``; some code bases average
  instead, which silently rescales policy gradients and KL terms in a port.
- Wrong shapes raise ``ValueError`` naming the argument, the expected and the received shape.
- Functions that draw take ``rng`` (``None | int | numpy.random.Generator``, see
  :func:`ssmref.rng.as_rng`); there is no global random state.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.nn_args import check_axis, check_dim, check_ndim_at_least
from ssmref.rng import as_rng

LOG_2PI = float(onp.log(2.0 * onp.pi))


# ---------------------------------------------------------------------------------------------
# Dense layers and MLPs
# ---------------------------------------------------------------------------------------------

def dense_init(in_dim, out_dim, *, rng, scale=1.0):
    """A dense layer ``{"W": (out_dim, in_dim), "b": (out_dim,)}``, fan-in scaled.

    ``W_ij ~ Normal(0, scale^2 / in_dim)`` i.i.d. (LeCun normal for ``scale = 1``; use
    ``scale = sqrt(2)`` for He initialisation before ReLU), drawn as
    ``scale / sqrt(in_dim) * rng.standard_normal((out_dim, in_dim))``; ``b = 0``.
    (``torch.nn.Linear`` draws ``Uniform(-1/sqrt(in), 1/sqrt(in))`` for both instead; the values
    never need to agree, since weights are copied, not re-drawn, in cross-checks.)
    """
    in_dim, out_dim = check_dim("in_dim", in_dim), check_dim("out_dim", out_dim)
    if not onp.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be finite and >= 0, got {scale!r}")
    rng = as_rng(rng)
    W = (scale / onp.sqrt(in_dim)) * rng.standard_normal((out_dim, in_dim))
    return {"W": W, "b": onp.zeros(out_dim)}


def dense_apply(params, x):
    """``y = x W^T + b``; ``x: (..., in)`` -> ``y: (..., out)``."""
    W, b = params["W"], params["b"]
    if np.ndim(W) != 2:
        raise ValueError(f"params['W'] must be (out, in), got shape {np.shape(W)}")
    out_dim, in_dim = np.shape(W)
    if np.shape(b) != (out_dim,):
        raise ValueError(f"params['b'] must have shape ({out_dim},), got {np.shape(b)}")
    check_ndim_at_least("x", x, 1)
    if np.shape(x)[-1] != in_dim:
        raise ValueError(f"x must have shape (..., {in_dim}), got {np.shape(x)}")
    return np.dot(x, W.T) + b  # (..., out)


def identity(x):
    """``x``."""
    return x


def relu(x):
    """``max(x, 0)``, with derivative 0 at ``x = 0`` (as torch); second derivative 0 a.e."""
    return np.where(x > 0, x, 0.0)


ACTIVATIONS = {"tanh": np.tanh, "relu": relu, "identity": identity}


def get_activation(name):
    """The function registered as ``name`` in :data:`ACTIVATIONS` (``None`` means identity)."""
    if name is None:
        return identity
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp_init(sizes, *, rng, scale=1.0):
    """An MLP with layer widths ``sizes = [d_0, d_1, ..., d_L]`` (``L >= 1`` layers).

    Returns ``{"layer0": dense_init(d_0, d_1), ..., f"layer{L-1}": dense_init(d_{L-1}, d_L)}``,
    the layers drawn in order from one generator (so an int seed fixes all of them).
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least 2 widths (input and output), got {sizes}")
    rng = as_rng(rng)
    return {f"layer{i}": dense_init(sizes[i], sizes[i + 1], rng=rng, scale=scale)
            for i in range(len(sizes) - 1)}


def mlp_apply(params, x, activation="tanh", final_activation=None):
    """``h_0 = x``; ``h_{i+1} = act(dense_i(h_i))`` for ``i < L-1``; ``y = final(dense_{L-1}(h))``.

    ``x: (..., d_0)`` -> ``(..., d_L)``.  ``activation`` and ``final_activation`` are names in
    :data:`ACTIVATIONS` (``final_activation=None``: identity, i.e. a linear output layer).
    """
    act, final = get_activation(activation), get_activation(final_activation)
    n = len(params)
    expected = [f"layer{i}" for i in range(n)]
    if n == 0 or sorted(params.keys()) != sorted(expected):
        raise ValueError(f"params must have keys {expected or ['layer0', '...']}, "
                         f"got {sorted(params.keys())}")
    h = x
    for i in range(n):
        h = dense_apply(params[f"layer{i}"], h)  # (..., d_{i+1})
        h = final(h) if i == n - 1 else act(h)
    return h


# ---------------------------------------------------------------------------------------------
# Softmax family
# ---------------------------------------------------------------------------------------------

def _max_shift(x, axis, name="x"):
    """``(x - c, c)`` with ``c = max(x)`` along ``axis`` (keepdims) taken as a constant.

    Only the value of ``c`` is used (``getval``): the softmax family does not depend on ``c``
    mathematically, so treating it as a constant keeps every derivative exact and smooth.
    """
    check_axis(name, x, axis)
    c = onp.max(getval(x), axis=axis, keepdims=True)
    c = onp.where(onp.isfinite(c), c, 0.0)  # an all -inf (or +inf) slice: no shift
    return x - c, c


def logsumexp(x, axis=-1, keepdims=False):
    """``log sum_k exp(x_k)`` along ``axis``, computed stably as ``c + log sum_k exp(x_k - c)``
    with ``c = max_k x_k`` (a constant, see :func:`_max_shift`); ``d/dx = softmax(x)``.

    Entries of ``-inf`` contribute 0.  Shape: ``x`` without ``axis`` (kept as 1 if ``keepdims``).
    """
    shifted, c = _max_shift(x, axis)
    out = c + np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(logits, axis=-1):
    """``log softmax(x)_k = x_k - logsumexp(x)``, same shape as ``logits``.

    Computed as ``(x_k - c) - log sum_j exp(x_j - c)``, ``c = max_j x_j`` (as torch and scipy),
    which is exact to rounding for huge ``|x|`` and keeps ``-inf`` entries at ``-inf``.
    """
    shifted, _ = _max_shift(logits, axis, "logits")
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits, axis=-1):
    """``softmax(x)_k = exp(x_k) / sum_j exp(x_j) = exp(log_softmax(x)_k)``; same shape as input."""
    return np.exp(log_softmax(logits, axis=axis))


# ---------------------------------------------------------------------------------------------
# Categorical distribution over K classes, parameterised by logits (..., K)
# ---------------------------------------------------------------------------------------------

def _check_logits(logits):
    """``logits: (..., K)`` with at least one dimension.

    Values are not inspected: ``nan``/``+inf`` logits give ``nan`` log-probabilities and entropies
    (so a caller such as the test-time adapter's non-finite guard sees them), and only sampling,
    which cannot return ``nan``, refuses them (:func:`categorical_sample`).
    """
    check_ndim_at_least("logits", logits, 1)


def categorical_log_prob(logits, actions):
    """``log p(a) = log_softmax(logits)[..., a]``; ``logits: (..., K)``, ``actions: (...)`` ints
    in ``[0, K)`` -> ``(...)``.  As ``torch.distributions.Categorical(logits=...).log_prob``."""
    _check_logits(logits)
    a = onp.asarray(getval(actions))
    K = np.shape(logits)[-1]
    if a.dtype.kind not in "iu":
        raise ValueError(f"actions must be an integer array, got dtype {a.dtype}")
    if a.shape != np.shape(logits)[:-1]:
        raise ValueError(f"actions must have shape {np.shape(logits)[:-1]} (logits.shape[:-1]), "
                         f"got {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= K):
        raise ValueError(f"actions must lie in [0, {K}), got values in [{a.min()}, {a.max()}]")
    one_hot = a[..., None] == onp.arange(K)  # (..., K) bool
    # where, not multiply: a -inf log-prob of an unchosen class must not become 0 * -inf = nan
    return np.sum(np.where(one_hot, log_softmax(logits), 0.0), axis=-1)


def categorical_entropy(logits):
    """``H = -sum_k p_k log p_k`` with ``p = softmax(logits)``; ``(..., K)`` -> ``(...)``.

    Classes with ``-inf`` logits have ``p_k = 0`` and contribute ``0`` (``0 log 0 = 0``), also to
    the gradient.
    """
    _check_logits(logits)
    logp = log_softmax(logits)  # (..., K)
    p = np.exp(logp)
    safe_logp = np.where(p > 0, logp, 0.0)  # avoids 0 * -inf in the value and in the gradient
    return -np.sum(p * safe_logp, axis=-1)


def categorical_sample(logits, rng):
    """Draws ``a ~ Categorical(softmax(logits))``; ``(..., K)`` -> int64 ``(...)``.

    Gumbel-max: ``a = argmax_k (logits_k + G_k)`` with ``G_k = rng.gumbel()`` i.i.d. standard
    Gumbel, one per logit.  Not differentiable (the result is an integer).
    """
    _check_logits(logits)
    raw = onp.asarray(getval(logits), dtype=onp.float64)
    if onp.isnan(raw).any() or onp.isposinf(raw).any():
        raise ValueError("logits must not contain nan or +inf")
    if raw.size and onp.isneginf(raw).all(axis=-1).any():
        raise ValueError("logits: every class in some row is -inf (no possible action)")
    gumbel = as_rng(rng).gumbel(size=raw.shape)  # (..., K)
    return onp.argmax(raw + gumbel, axis=-1).astype(onp.int64)


# ---------------------------------------------------------------------------------------------
# Diagonal Gaussian N(mean, diag(exp(log_std))^2) over d-dimensional actions
# ---------------------------------------------------------------------------------------------

def _gaussian_shape(mean, log_std):
    """``mean: (..., d)``; ``log_std`` must broadcast to ``mean.shape`` (e.g. ``(d,)``)."""
    check_ndim_at_least("mean", mean, 1)
    try:
        shape = onp.broadcast_shapes(np.shape(mean), np.shape(log_std))
    except ValueError:
        shape = None
    if shape != np.shape(mean):
        raise ValueError(f"log_std of shape {np.shape(log_std)} must broadcast to mean's shape "
                         f"{np.shape(mean)}")
    return shape


def gaussian_log_prob(mean, log_std, actions):
    """Log-density of ``actions`` under ``N(mean, diag(sigma^2))``, ``sigma = exp(log_std)``,
    **summed** over the action dimension::

        log p(a) = sum_i [ -(a_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi) / 2 ]

    ``mean: (..., d)``, ``log_std`` broadcastable to it, ``actions: (..., d)`` -> ``(...)``.
    Equals ``Independent(Normal(mean, exp(log_std)), 1).log_prob(actions)`` in torch.
    """
    shape = _gaussian_shape(mean, log_std)
    if np.shape(actions) != shape:
        raise ValueError(f"actions must have mean's shape {shape}, got {np.shape(actions)}")
    z = (actions - mean) * np.exp(-log_std)  # (..., d) standardised actions
    return np.sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI, axis=-1)


def gaussian_entropy(log_std, mean=None):
    """Differential entropy of ``N(mean, diag(exp(log_std))^2)``, summed over the action dimension::

        H = sum_i [ log sigma_i + (1 + log(2 pi)) / 2 ]

    ``log_std: (..., d)`` -> ``(...)``.  The entropy does not depend on the mean; pass ``mean``
    ``(..., d)`` only to broadcast a shared ``log_std: (d,)`` to the batch shape ``(...)`` of the
    means.
    """
    check_ndim_at_least("log_std", log_std, 1)
    if mean is not None:
        log_std = log_std + onp.zeros(_gaussian_shape(mean, log_std))  # (..., d)
    return np.sum(log_std + 0.5 * (1.0 + LOG_2PI), axis=-1)


def gaussian_sample(mean, log_std, rng):
    """Reparameterised draw ``a = mean + exp(log_std) * xi``, ``xi = rng.standard_normal(shape)``.

    ``mean: (..., d)``, ``log_std`` broadcastable to it -> ``(..., d)``.  For a fixed ``rng`` state
    this is a smooth function of ``mean`` and ``log_std`` (the reparameterisation trick).
    """
    shape = _gaussian_shape(mean, log_std)
    xi = as_rng(rng).standard_normal(shape)  # (..., d)
    return mean + np.exp(log_std) * xi
