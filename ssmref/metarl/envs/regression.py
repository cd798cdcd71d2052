"""Supervised task families for few-shot regression: sinusoids and linear system identification.

    sinusoid:   y = amplitude * sin(x - phase),   amplitude ~ U[0.1, 5), phase ~ U[0, pi),
                x ~ U[-5, 5)                                   (Finn et al. 2017, sec. 5.1)
    LTI system: h_t = A h_{t-1} + B u_t,  y_t = C h_t + D u_t,  h_{-1} = 0,
                A = G rho / spectral_radius(G)  (so spectral_radius(A) = rho < 1),  u_t ~ N(0, I)

Both share ``sample(task, k, rng) -> (x, y)``, ``support_query(task, k_support, k_query=None,
rng=None) -> dict`` (support and query are independent draws from the same task) and
``target(task, x) -> y`` (the noiseless map).  Plain NumPy, float64, not differentiated.

References: C. Finn, P. Abbeel, S. Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of
Deep Networks", ICML 2017, and github.com/cbfinn/maml ``data_generator.py`` (sinusoid); L. Ljung,
"System Identification", 1999 (random stable systems).
"""

from dataclasses import dataclass

import numpy as onp

from ssmref.checks import check_int
from ssmref.metarl.envs.tasks import check_range, check_task
from ssmref.rng import as_rng
from ssmref.ssm import spectral_radius


def sinusoid(x, amplitude, phase):
    """Finn et al.'s sinusoid ``y = amplitude * sin(x - phase)`` (cbfinn/maml data_generator.py).

    Shapes: ``x`` any; ``amplitude``, ``phase`` scalars (or broadcastable); result like ``x``.
    """
    return amplitude * onp.sin(onp.asarray(x, dtype=onp.float64) - phase)


def lti_simulate(A, B, C, D, u, h0=None):
    """Simulate ``h_t = A h_{t-1} + B u_t``, ``y_t = C h_t + D u_t`` (output reads the NEW state).

    The same convention as :mod:`ssmref.ssm`; ``h_{-1} = h0`` (zeros by default). The other common
    convention (``scipy.signal.dlsim``: ``y_t = C' x_t + D' u_t``, ``x_{t+1} = A x_t + B u_t``)
    gives the same outputs with ``C' = C A``, ``D' = C B + D`` and ``x_0 = h0``.

    Shapes: ``A (n, n)``, ``B (n, m)``, ``C (p, n)``, ``D (p, m)``; ``u (T, m)`` -> ``y (T, p)``,
    or batched ``u (batch, T, m)`` -> ``y (batch, T, p)``; ``h0 (n,)`` or ``(batch, n)``.
    A plain loop over time: the readable reference, not a fast one.
    """
    A, B, C, D = (onp.asarray(M, dtype=onp.float64) for M in (A, B, C, D))
    n, m, p = A.shape[0], B.shape[1], C.shape[0]
    for name, M, shape in (("A", A, (n, n)), ("B", B, (n, m)), ("C", C, (p, n)), ("D", D, (p, m))):
        if M.shape != shape:
            raise ValueError(f"lti_simulate: {name}: expected shape {shape}, got {M.shape}")
    u = onp.asarray(u, dtype=onp.float64)
    if u.ndim not in (2, 3) or u.shape[-1] != m:
        raise ValueError(f"lti_simulate: u: expected shape (T, {m}) or (batch, T, {m}), "
                         f"got {u.shape}")
    batched = u.ndim == 3
    u3 = u if batched else u[None]                     # (batch, T, m)
    batch, T = u3.shape[0], u3.shape[1]
    if h0 is None:
        h = onp.zeros((batch, n))
    else:
        h0 = onp.asarray(h0, dtype=onp.float64)
        if h0.shape not in ((n,), (batch, n)):
            raise ValueError(f"lti_simulate: h0: expected shape ({n},) or ({batch}, {n}), "
                             f"got {h0.shape}")
        h = onp.broadcast_to(h0, (batch, n)).copy()
    y = onp.zeros((batch, T, p))
    for t in range(T):
        h = h @ A.T + u3[:, t] @ B.T                    # (batch, n)   h_t = A h_{t-1} + B u_t
        y[:, t] = h @ C.T + u3[:, t] @ D.T              # (batch, p)   y_t = C h_t + D u_t
    return y if batched else y[0]


@dataclass(frozen=True)
class Sinusoid:
    """Finn et al. 2017's sinusoid regression: ``y = amplitude * sin(x - phase)``.

    amplitude ``~ U[0.1, 5.0)``, phase ``~ U[0, pi)``, inputs ``x ~ U[-5, 5)``, noiseless.
    ``sample_tasks(n, rng)`` draws all amplitudes, then all phases (``data_generator.py`` order) and
    returns ``[{"amplitude": float, "phase": float}, ...]``.
    ``sample(task, k, rng) -> (x (k, 1), y (k, 1))``;
    ``support_query(task, k_support, k_query=None, rng)`` draws ``k_support + k_query`` inputs at
    once and splits them in that order (``inputa``/``inputb`` in cbfinn/maml; ``k_query``
    defaults to ``k_support``, the paper's K-shot setting); ``grid(task, num)`` is the fixed
    evaluation grid ``x = linspace(-5, 5, num)``.
    Source: cbfinn/maml ``data_generator.py``; MAML paper sec. 5.1.
    """

    amplitude_range: tuple = (0.1, 5.0)     # amplitude ~ U[low, high)
    phase_range: tuple = (0.0, onp.pi)      # phase ~ U[low, high)
    x_range: tuple = (-5.0, 5.0)            # inputs ~ U[low, high); the grid spans it

    input_dim = 1
    output_dim = 1

    def __post_init__(self):
        check_range("amplitude_range", self.amplitude_range)
        check_range("phase_range", self.phase_range)
        check_range("x_range", self.x_range)

    def sample_tasks(self, n, rng=None):
        """``n`` tasks ``{"amplitude": float, "phase": float}``."""
        n = check_int("n", n, minimum=1)
        rng = as_rng(rng)
        amplitudes = rng.uniform(*self.amplitude_range, size=n)             # (n,)
        phases = rng.uniform(*self.phase_range, size=n)                     # (n,)
        return [{"amplitude": float(a), "phase": float(p)} for a, p in zip(amplitudes, phases)]

    def target(self, task, x):
        """The noiseless map ``amplitude * sin(x - phase)``; ``x`` any shape, ``y`` the same."""
        check_task(task, ("amplitude", "phase"), "Sinusoid.target")
        return sinusoid(x, task["amplitude"], task["phase"])

    def sample(self, task, k, rng=None):
        """``k`` points: ``x (k, 1) ~ U[x_range)``, ``y = target(task, x) (k, 1)``."""
        k = check_int("k", k, minimum=1)
        x = as_rng(rng).uniform(*self.x_range, size=(k, 1))                 # (k, 1)
        return x, self.target(task, x)

    def support_query(self, task, k_support, k_query=None, rng=None):
        """``{"x_support": (k_support, 1), "y_support", "x_query": (k_query, 1), "y_query"}``."""
        k_support = check_int("k_support", k_support, minimum=1)
        k_query = k_support if k_query is None else check_int("k_query", k_query, minimum=1)
        x, y = self.sample(task, k_support + k_query, rng)
        return {"x_support": x[:k_support], "y_support": y[:k_support],
                "x_query": x[k_support:], "y_query": y[k_support:]}

    def grid(self, task, num=100):
        """Evaluation grid ``x = linspace(*x_range, num)[:, None]`` and ``y``, both ``(num, 1)``."""
        num = check_int("num", num, minimum=2)
        x = onp.linspace(*self.x_range, num)[:, None]                        # (num, 1)
        return x, self.target(task, x)


@dataclass(frozen=True)
class LTISystemID:
    """System identification of a random stable discrete-time linear system.

        h_t = A h_{t-1} + B u_t,   y_t = C h_t + D u_t,   h_{-1} = 0   (output reads the NEW state)

    Each task draws, in this order: ``rho ~ U[rho_range)``; ``G (n, n)`` standard normal and
    ``A = G * rho / spectral_radius(G)`` (so ``spectral_radius(A) = rho < 1``); fan-in scaled
    ``B ~ N(0, 1/m) (n, m)``, ``C ~ N(0, 1/n) (p, n)``, ``D ~ N(0, 1/m) (p, m)`` (``D = 0`` when
    ``feedthrough`` is False; the draw still happens, so the stream does not depend on it).
    Task dict: ``{"A", "B", "C", "D": arrays, "rho": float}``.

    Data: ``sample(task, k, rng) -> (u (k, T, m), y (k, T, p))`` with inputs ``u ~ N(0, 1)`` i.i.d.
    and ``y`` simulated by :func:`lti_simulate`; ``support_query`` draws ``k_support + k_query``
    sequences at once and splits them (different input sequences of the same system).
    Dimensions: ``input_dim = m``, ``state_dim = n``, ``output_dim = p``, ``seq_len = T``.
    Reference: the random-stable-system construction is the standard one used for SSM
    initialisation and system-identification benchmarks (e.g. Ljung, "System Identification", 1999).
    """

    input_dim: int = 1              # m
    state_dim: int = 4              # n
    output_dim: int = 1             # p
    seq_len: int = 50               # T
    rho_range: tuple = (0.5, 0.95)  # spectral radius of A ~ U[low, high), high < 1
    feedthrough: bool = True        # D drawn (True) or zero (False)

    def __post_init__(self):
        for name in ("input_dim", "state_dim", "output_dim", "seq_len"):
            check_int(name, getattr(self, name), minimum=1)
        check_range("rho_range", self.rho_range, low=0.0, high=1.0, high_open=True)

    def sample_tasks(self, n, rng=None):
        """``n`` systems ``{"A": (n, n), "B": (n, m), "C": (p, n), "D": (p, m), "rho": float}``."""
        n_tasks = check_int("n", n, minimum=1)
        rng = as_rng(rng)
        m, n, p = self.input_dim, self.state_dim, self.output_dim
        tasks = []
        for _ in range(n_tasks):
            rho = float(rng.uniform(*self.rho_range))
            G = rng.standard_normal((n, n))
            A = G * (rho / spectral_radius(G))
            B = rng.standard_normal((n, m)) / onp.sqrt(m)
            C = rng.standard_normal((p, n)) / onp.sqrt(n)
            D = rng.standard_normal((p, m)) / onp.sqrt(m)
            if not self.feedthrough:
                D = onp.zeros((p, m))
            tasks.append({"A": A, "B": B, "C": C, "D": D, "rho": rho})
        return tasks

    def target(self, task, u):
        """``y`` for inputs ``u (T, m)`` or ``(batch, T, m)``; :func:`lti_simulate` from 0."""
        check_task(task, ("A", "B", "C", "D"), "LTISystemID.target")
        return lti_simulate(task["A"], task["B"], task["C"], task["D"], u)

    def sample(self, task, k, rng=None):
        """``k`` sequences: ``u (k, T, m) ~ N(0, 1)``, ``y (k, T, p)``."""
        k = check_int("k", k, minimum=1)
        u = as_rng(rng).standard_normal((k, self.seq_len, self.input_dim))  # (k, T, m)
        return u, self.target(task, u)

    def support_query(self, task, k_support, k_query=None, rng=None):
        """``{"x_support": (k_support, T, m), "y_support": (k_support, T, p),
        "x_query": (k_query, T, m), "y_query": (k_query, T, p)}``."""
        k_support = check_int("k_support", k_support, minimum=1)
        k_query = k_support if k_query is None else check_int("k_query", k_query, minimum=1)
        u, y = self.sample(task, k_support + k_query, rng)
        return {"x_support": u[:k_support], "y_support": y[:k_support],
                "x_query": u[k_support:], "y_query": y[k_support:]}
