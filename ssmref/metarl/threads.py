"""BLAS threads in the meta-RL hot loops.

The policies' products are small (``(2000, 10) x (10, 64)``-sized, thousands per meta-iteration).
With more than one BLAS thread, OpenBLAS hands each one to its worker threads, and on a machine
where another process keeps a core busy those threads spin waiting for each other: a navigation
meta-iteration measured 4-5x slower with NumPy's default (one thread per core) than with one
thread (``docs/train.md``).  The trainers therefore run their hot loops inside
:func:`blas_threads`, which limits the BLAS libraries loaded in the process at run time with
``threadpoolctl`` and restores them on leaving the block, so the default is fast without the user
setting ``OPENBLAS_NUM_THREADS`` before NumPy is imported.

The libraries are found once per process (``threadpoolctl.ThreadpoolController``, about 1 ms) and
kept: entering a block then costs about 10 us, so it can wrap every meta-iteration, even the
sinusoid's 4 ms ones.  A BLAS loaded after the first call (another framework's) is not limited.
"""

import contextlib
import functools

from threadpoolctl import ThreadpoolController

from ssmref.checks import check_int

DEFAULT_BLAS_THREADS = 1        # the hot loops' products are too small for more


def blas_threads(limit=DEFAULT_BLAS_THREADS):
    """A context manager: inside the block the BLAS libraries of this process use at most
    ``limit`` threads; on leaving it they are restored to what they were.  ``limit=None`` changes
    nothing (the BLAS defaults, or what ``OPENBLAS_NUM_THREADS`` set)."""
    if limit is None:
        return contextlib.nullcontext()
    limit = check_int("blas threads", limit, minimum=1)
    return _controller().limit(limits=limit, user_api="blas")


@functools.lru_cache(maxsize=None)
def _controller():
    """The thread pools of the libraries loaded in this process, found on the first call."""
    return ThreadpoolController()
