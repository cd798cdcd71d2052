"""Random number generators: every function that draws takes ``rng``, never global state.

``rng`` is ``None`` (fresh OS entropy), an ``int`` seed, or a ``numpy.random.Generator`` (used as
is, so successive calls advance it).
"""

import numpy as onp


def as_rng(rng=None):
    """A ``numpy.random.Generator`` from ``None``, an int seed or a Generator."""
    if isinstance(rng, onp.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, onp.integer)) and not isinstance(rng, bool):
        return onp.random.default_rng(rng)
    raise ValueError(f"rng must be None, an int or a numpy.random.Generator, got {type(rng).__name__}")
