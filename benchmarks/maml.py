"""Speed of MAML in ssmref: a navigation meta-iteration, and the sinusoid meta-gradient against
torch and JAX peers.

    python benchmarks/maml.py [--iterations 3] [--repeats 7] [--quick] [--skip-navigation]
                              [--blas-threads N] [--torch-threads 1]

1. Navigation (Finn et al. 2017, sec. 5.3): seconds per ``MetaMAML.meta_step`` of the default
   configuration, ``MetaMAML(Navigation2D(), *policy_init(2, 2, discrete=False, state_dim=8,
   ssm_output_dim=8, hidden_sizes=(64, 64), rng=0), MetaMAMLConfig())``: 20 tasks x 20 episodes
   x 100 steps, second-order meta-gradient, task-batched.  The breakdown comes from wrapping, in
   this process only, the pieces that ``meta_step`` calls (``MetaMAML._sample``,
   ``maml_rl.tasks_trajectory_data``, ``maml.adapt``, ``maml.value_and_grad_tree``, each counted
   without the pieces it calls: the post-update sampling and the inner steps run inside the
   traced meta-objective); the rest (task sampling, the Adam step, bookkeeping) is "other".  Against the PyTorch MAML-RL
   peer of ``benchmarks/torch_maml_rl.py`` (MLP 64-64 tanh, TRPO, float32, ``--torch-threads``,
   the same 20 x 20 x 100 sampled steps twice per iteration), per sampled environment step, and
   ssmref running the peer's algorithm (the MLP policy, 64-64 tanh, ``outer="trpo"``): one warm-up iteration each, then ``--iterations`` rounds that run each once, in a
   new random order per round; the ratio is the median over rounds of the ratio in the round.
2. Sinusoid (Finn et al. 2017, sec. 5.1): the meta-gradient of an MLP regressor [1, 40, 40, 1]
   with ReLU, MSE loss, 25 tasks x 10-shot support / 10-shot query, one inner step with
   alpha = 0.01: ssmref's ``maml.batched_meta_gradient`` (tasks on a leading axis, what
   ``ssmref.metarl.MetaRegression`` uses; the ratios are against it) and ``maml.meta_gradient``
   (a Python loop over tasks), second order and FOMAML, against the same computation (float64,
   CPU, the same weights) in torch when it is installed, written three ways: ``torch.func``
   (``grad`` of a ``vmap`` over tasks), a Python loop over tasks with
   ``torch.autograd.grad(create_graph=True)`` (the structure of ``ssmref.maml``), and all tasks
   batched in one ``baddbmm`` graph; and in JAX when it is installed, ``jax.jit`` of
   ``value_and_grad`` of a ``vmap`` over tasks.  Every implementation's value and gradient must
   agree with ``ssmref.maml.meta_gradient``'s to 1e-10 (relative, global norm) before it is
   timed; that first call is also the warm-up (and JAX's compilation).  Then ``--repeats``
   rounds run every implementation once each (a change of load on a shared machine reaches all
   of them alike), in a new random order each round, after a short pause; medians and minima
   are reported, and the ratios (the verdict) are medians over rounds of the ratio of two times
   in the same round (paired: the least sensitive to a load that changes from round to round).
   ssmref is in effect single-threaded at these sizes (autograd's Python overhead dominates), so
   torch and XLA get one thread too by default (``--torch-threads``); on a shared 2-core machine
   two torch threads were slower and much noisier (torch.func: 4 ms to 0.4 s per call).

BLAS threads.  NumPy's OpenBLAS uses one thread per core unless told otherwise, and on a shared
machine its threads spin waiting for each other on the small products of the policy: on a 2-core
machine running other jobs, a navigation meta-iteration took 10-17 s with the default and 2.6-3 s
with ``--blas-threads 1`` (``OPENBLAS_NUM_THREADS=1``).  The trainers now limit the BLAS threads
of their hot loops to one at run time (``ssmref.metarl.threads``), so the default environment
and ``--blas-threads 1`` should measure the same; compare both on your machine.

The summary compares with its targets: <= 3 s per navigation meta-iteration on 2 cores,
and the sinusoid second-order meta-gradient no slower than ``torch.func``.
Times depend on the machine and its load; nothing here asserts a time.
"""

import argparse
import contextlib
import os
import random
import statistics
import sys
import time

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _blas_threads_argument(argv):
    """The value of ``--blas-threads N`` / ``--blas-threads=N`` in ``argv``, or None."""
    for i, arg in enumerate(argv):
        if arg == "--blas-threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--blas-threads="):
            return arg.split("=", 1)[1]
    return None


# BLAS reads its thread count when NumPy is imported, so --blas-threads must act before that.
if __name__ == "__main__" and _blas_threads_argument(sys.argv[1:]) is not None:
    for _name in BLAS_ENV:
        os.environ[_name] = _blas_threads_argument(sys.argv[1:])
# The ssmref timed is the one in this checkout (the parent of benchmarks/), not an installed copy.
if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import autograd.numpy as np  # noqa: E402
import numpy as onp  # noqa: E402

from ssmref import maml, metarl  # noqa: E402
from ssmref.metarl import maml_rl  # noqa: E402
from ssmref import params as P  # noqa: E402
from ssmref.metarl.envs import Navigation2D, Sinusoid  # noqa: E402
from ssmref.metarl.fewshot import batched_mse_loss  # noqa: E402
from ssmref.nn import ACTIVATIONS, mlp_apply, mlp_init  # noqa: E402
from ssmref.metarl.policy import policy_init  # noqa: E402
from ssmref.metarl.policy.mlp import mlp_policy_init  # noqa: E402

NAV_TARGET_S = 3.0          # seconds per navigation meta-iteration, on 2 cores
PAUSE = 0.02                # seconds before each timed sinusoid call
NAV_TORCH_RATIO = 0.5       # ssmref default / torch MAML-TRPO peer, per sampled step (a measured ratio)
TORCH_TARGET_RATIO = 1.0    # ssmref / torch.func, sinusoid second-order meta-gradient


def timed_runs(fn, repeats):
    """``(median, min, result)``: wall-clock seconds of ``fn()`` over ``repeats`` calls after one
    untimed warm-up call, and the last result.  On a loaded machine the minimum is the better
    guess of the unloaded time."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), out


# ---------------------------------------------------------------------------------------------
# 1. Navigation meta-iteration
# ---------------------------------------------------------------------------------------------

class PhaseTimer:
    """Seconds spent in each wrapped piece of ``meta_step``, summed per iteration; a piece called
    inside another (the post-update sampling and the inner steps run inside the traced
    meta-objective) counts for itself only, not for its caller."""

    def __init__(self):
        self.totals = {}
        self.samples_this_iteration = 0
        self._inner = []                    # per open piece: seconds spent in pieces it called

    def wrap(self, fn, label):
        def timed(*args, **kwargs):
            name = label(*args, **kwargs) if callable(label) else label
            self._inner.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                inner = self._inner.pop()
                if self._inner:
                    self._inner[-1] += elapsed
                self.totals[name] = self.totals.get(name, 0.0) + elapsed - inner
        return timed


@contextlib.contextmanager
def instrumented(meta, timer):
    """Wrap the pieces of ``meta.meta_step`` for timing; restore them afterwards."""
    def sample_label(*args, **kwargs):
        timer.samples_this_iteration += 1
        first = timer.samples_this_iteration == 1
        return "sampling, pre-update" if first else "sampling, post-update"

    saved = (maml_rl.tasks_trajectory_data, maml.adapt, maml.value_and_grad_tree)
    meta._sample = timer.wrap(meta._sample, sample_label)          # an instance attribute
    maml_rl.tasks_trajectory_data = timer.wrap(saved[0], "returns, baseline, advantages")
    maml.adapt = timer.wrap(saved[1], "inner adaptation (all tasks, traced)")
    maml.value_and_grad_tree = timer.wrap(saved[2], "meta-gradient (losses, backward pass)")
    try:
        yield
    finally:
        del meta._sample
        maml_rl.tasks_trajectory_data, maml.adapt, maml.value_and_grad_tree = saved


def navigation_trainers():
    """``{name: (meta_step, sampled steps per iteration)}``: ssmref's default, ssmref with the
    torch peer's algorithm, and the torch peer when torch is installed."""
    def ssmref(policy, config):
        params, spec = policy
        meta = metarl.MetaMAML(Navigation2D(), params, spec, config)
        rng = onp.random.default_rng(0)
        steps = 2 * config.meta_batch_size * config.episodes_per_task * Navigation2D().horizon
        return meta, (lambda: meta.meta_step(rng)), steps
    default = ssmref(policy_init(2, 2, discrete=False, state_dim=8, ssm_output_dim=8,
                                 hidden_sizes=(64, 64), rng=0), metarl.MetaMAMLConfig())
    out = {"ssmref default": default[1:],
           "ssmref MLP+TRPO": ssmref(mlp_policy_init(2, 2, hidden_sizes=(64, 64),
                                                     activation="tanh", rng=0),
                                     metarl.MetaMAMLConfig(outer="trpo"))[1:]}
    try:
        from torch_maml_rl import TorchMAMLTRPO
    except ImportError:
        return default[0], out
    peer = TorchMAMLTRPO()
    out["torch MAML-TRPO"] = (peer.meta_iteration, peer.steps_per_iteration())
    return default[0], out


def bench_navigation(iterations, torch_threads=1):
    try:
        import torch
        torch.set_num_threads(torch_threads)
    except ImportError:
        pass
    meta, trainers = navigation_trainers()
    c = meta.config
    print(f"navigation: {c.meta_batch_size} tasks x {c.episodes_per_task} episodes x "
          f"{Navigation2D().horizon} steps, first_order={c.first_order}, "
          f"{sum(a.size for a in P.tree_leaves(meta.params))} parameters; peers: "
          + ", ".join(trainers))
    for name, (step, _) in trainers.items():
        t0 = time.perf_counter()
        step()
        print(f"  warm-up iteration, {name}: {time.perf_counter() - t0:.2f} s")
    timer, order_rng = PhaseTimer(), random.Random(0)
    times = {name: [] for name in trainers}
    for _ in range(iterations):
        names = list(trainers)
        order_rng.shuffle(names)
        for name in names:
            step = trainers[name][0]
            t0 = time.perf_counter()
            if name == "ssmref default":
                timer.samples_this_iteration = 0
                with instrumented(meta, timer):
                    metrics = step()
            else:
                step()
            times[name].append(time.perf_counter() - t0)
    total = sum(times["ssmref default"])
    print(f"  ssmref default, {'phase':<34}{'s / iteration':>14}{'share':>8}")
    for name, t in list(timer.totals.items()) + [("other", total - sum(timer.totals.values()))]:
        print(f"  {'':<16}{name:<34}{t / iterations:>14.3f}{t / total:>8.0%}")
    print(f"  last iteration: pre-update return {metrics['pre_return']:.2f}, "
          f"post-update {metrics['post_return']:.2f}")
    print(f"  {'implementation':<20}{'median s':>10}{'min s':>9}{'us / step':>11}"
          f"{'ssmref default / it, per step':>31}")
    ratios = {}
    for name, ts in times.items():
        per_step = [t / trainers[name][1] * 1e6 for t in ts]
        paired = [a / trainers["ssmref default"][1] / (b / trainers[name][1])
                  for a, b in zip(times["ssmref default"], ts)]
        ratios[name] = statistics.median(paired)
        print(f"  {name:<20}{statistics.median(ts):>10.2f}{min(ts):>9.2f}"
              f"{statistics.median(per_step):>11.1f}{ratios[name]:>30.2f}x")
    return statistics.median(times["ssmref default"]), ratios


# ---------------------------------------------------------------------------------------------
# 2. Sinusoid meta-gradient, ssmref vs torch
# ---------------------------------------------------------------------------------------------

SIZES, ALPHA, TASKS, SHOTS = [1, 40, 40, 1], 0.01, 25, 10


ACTIVATION = "relu"         # Finn et al.'s; ssmref.nn.relu has derivative 0 at 0, as torch.relu
assert ACTIVATION in ACTIVATIONS, sorted(ACTIVATIONS)


def mse(params, data):
    """The regression loss of every task: ``mean((mlp(x) - y)^2)`` over the K points."""
    x, y = data                                                # (K, 1), (K, 1)
    return np.mean((mlp_apply(params, x, activation=ACTIVATION) - y) ** 2)


def sinusoid_tasks(rng):
    family = Sinusoid()
    tasks = []
    for task in family.sample_tasks(TASKS, rng):
        d = family.support_query(task, SHOTS, rng=rng)
        tasks.append(((d["x_support"], d["y_support"]), (d["x_query"], d["y_query"])))
    return tasks                                               # [((x (10, 1), y (10, 1)), ...)]


def torch_peers(params, tasks, first_order):
    """The same meta-gradient in torch, three ways: ``{name: run}``, ``run() -> (value, grads)``
    with ``grads`` a tree like ``params`` (numpy).  float64, CPU, the weights of ``params``.

    - ``torch.func vmap``: ``grad`` of the mean over a ``vmap`` over tasks of the query loss at
      ``theta - alpha * grad(support loss)`` (functional, as in the torch.func MAML tutorial);
    - ``torch loop``: a Python loop over tasks with ``torch.autograd.grad(create_graph=True)``,
      the structure of ``ssmref.maml`` (which loops over tasks too);
    - ``torch batched``: the parameters expanded to one copy per task and every task's MLP run
      at once with ``baddbmm``, so one inner ``autograd.grad`` gives all 25 inner gradients.
    """
    import torch
    from torch.func import grad, grad_and_value, vmap

    names = list(P.flatten_dict(params))                       # layer0.W, layer0.b, ...
    n_layers = len(SIZES) - 1
    leaves = [torch.tensor(P.flatten_dict(params)[k], dtype=torch.float64) for k in names]
    stack = lambda i, j: torch.tensor(onp.stack([t[i][j] for t in tasks]),   # noqa: E731
                                      dtype=torch.float64)
    xs, ys, xq, yq = stack(0, 0), stack(0, 1), stack(1, 0), stack(1, 1)     # (25, 10, 1) each

    def forward(p, x):                  # p: [W0, b0, W1, b1, ...]; x (..., K, 1)
        h = x
        for i in range(n_layers):
            h = h @ p[2 * i].transpose(-1, -2) + p[2 * i + 1].unsqueeze(-2)
            h = torch.relu(h) if i < n_layers - 1 else h
        return h

    def loss(p, x, y):                  # mean over the last two axes, per task
        return ((forward(p, x) - y) ** 2).mean(dim=(-2, -1))

    def as_tree(grads):
        return P.unflatten_dict({k: g.detach().numpy() for k, g in zip(names, grads)})

    def task_loss(p, x_s, y_s, x_q, y_q):
        g = grad(loss)(p, x_s, y_s)
        if first_order:
            g = [gi.detach() for gi in g]
        return loss([pi - ALPHA * gi for pi, gi in zip(p, g)], x_q, y_q)

    func_grad = grad_and_value(
        lambda p: vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq).mean())

    def run_func():
        g, value = func_grad(leaves)
        return float(value), as_tree(g)

    tp = [leaf.clone().requires_grad_(True) for leaf in leaves]

    def run_loop():
        total = 0.0
        for i in range(len(tasks)):
            g = torch.autograd.grad(loss(tp, xs[i], ys[i]), tp, create_graph=not first_order)
            total = total + loss([p - ALPHA * gi for p, gi in zip(tp, g)], xq[i], yq[i])
        total = total / len(tasks)
        return float(total.detach()), as_tree(torch.autograd.grad(total, tp))

    def run_batched():
        rep = [p.expand(len(tasks), *p.shape) for p in tp]    # one copy per task, (25, ...)
        g = torch.autograd.grad(loss(rep, xs, ys).sum(), rep, create_graph=not first_order)
        total = loss([r - ALPHA * gi for r, gi in zip(rep, g)], xq, yq).mean()
        return float(total.detach()), as_tree(torch.autograd.grad(total, tp))

    return {"torch.func vmap": run_func, "torch loop": run_loop, "torch batched": run_batched}


def jax_peer(params, tasks, first_order, threads):
    """``{"jax jit grad(vmap)": run}``: ``jax.jit(jax.value_and_grad(...))`` of the mean over a
    ``vmap`` over tasks, float64 on the CPU (one XLA thread when ``threads`` is 1, as torch gets);
    ``None`` when JAX is not installed."""
    if threads == 1:                       # read when XLA's CPU backend starts, so set first
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1").strip()
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    n_layers = len(SIZES) - 1
    stack = lambda i, j: jnp.asarray(onp.stack([t[i][j] for t in tasks]))   # noqa: E731
    xs, ys, xq, yq = stack(0, 0), stack(0, 1), stack(1, 0), stack(1, 1)     # (25, 10, 1) each
    jp = {k: jnp.asarray(v) for k, v in P.flatten_dict(params).items()}

    def loss(p, x, y):
        h = x
        for i in range(n_layers):
            h = h @ p[f"layer{i}.W"].T + p[f"layer{i}.b"]
            h = jnp.maximum(h, 0.0) if i < n_layers - 1 else h
        return jnp.mean((h - y) ** 2)

    def task_loss(p, x_s, y_s, x_q, y_q):
        g = jax.grad(loss)(p, x_s, y_s)
        if first_order:
            g = jax.lax.stop_gradient(g)
        return loss({k: p[k] - ALPHA * g[k] for k in p}, x_q, y_q)

    f = jax.jit(jax.value_and_grad(
        lambda p: jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq))))

    def run():
        value, g = f(jp)
        return float(value), P.unflatten_dict({k: onp.asarray(v) for k, v in g.items()})
    return {"jax jit grad(vmap)": run}


def bench_sinusoid(repeats, torch_threads):
    """Every implementation's meta-gradient is checked against ssmref's loop form first (that call
    is the warm-up, and JAX's compilation); then ``repeats`` rounds run each once, so that a change
    of load on a shared machine reaches all of them alike, in a new random order each round and
    after a short pause, so that none always runs just after the same peer (whose worker threads
    may still be spinning)."""
    rng = onp.random.default_rng(0)
    params = mlp_init(SIZES, rng=rng)
    tasks = sinusoid_tasks(rng)
    support = tuple(onp.stack([t[0][j] for t in tasks]) for j in (0, 1))   # (25, 10, 1) each
    query = tuple(onp.stack([t[1][j] for t in tasks]) for j in (0, 1))
    try:
        import torch
        torch.set_num_threads(torch_threads)
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"\nsinusoid: MLP {SIZES} (ReLU), MSE, {TASKS} tasks x {SHOTS}-shot support/query, "
          f"one inner step, alpha {ALPHA}; median and min of {repeats} rounds"
          + (f", torch threads {torch_threads}" if have_torch else
             " (torch not installed: no torch peer)"))
    print(f"  {'meta-gradient':<14}{'implementation':<20}{'median s':>10}{'min s':>9}"
          f"{'ssmref batched / it':>21}{'rel. diff':>11}")
    print(f"  {'':<34}{'':>19}{'(paired median)':>21}")
    ratios = {}
    for first_order in (False, True):
        kind = "FOMAML" if first_order else "second order"
        runs = {
            "ssmref batched": lambda: maml.batched_meta_gradient(
                params, batched_mse_loss, support, query, num_tasks=TASKS, inner_lr=ALPHA,
                first_order=first_order),
            "ssmref loop": lambda: maml.meta_gradient(params, mse, tasks, inner_lr=ALPHA,
                                                      first_order=first_order),
        }
        if have_torch:
            runs.update(torch_peers(params, tasks, first_order))
        runs.update(jax_peer(params, tasks, first_order, torch_threads) or {})
        value, g = runs["ssmref loop"]()                      # the reference
        diffs = {}
        for name, run in runs.items():
            r_value, r_g = run()
            diffs[name] = float(P.global_norm(P.tree_map(lambda a, b: a - b, g, r_g))
                                / P.global_norm(g))
            assert abs(value - r_value) <= 1e-10 * abs(value), (kind, name, value, r_value)
            assert diffs[name] <= 1e-10, f"{kind}, {name}: the meta-gradients differ by " \
                                         f"{diffs[name]:.1e}"
        times = {name: [] for name in runs}
        order = onp.random.default_rng(int(first_order))
        for _ in range(repeats):
            for name in order.permutation(list(runs)):     # a new order each round, after a
                time.sleep(PAUSE)                            # pause (see bench_sinusoid)
                t0 = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - t0)
        ours = times["ssmref batched"]
        for name in runs:
            med, low = statistics.median(times[name]), min(times[name])
            # the median over rounds of the ratio within a round (paired: the least sensitive to
            # a load that changes from round to round), and the ratio of the minima
            paired = statistics.median(a / b for a, b in zip(ours, times[name]))
            ratios[kind, name] = (paired, min(ours) / low)
            print(f"  {kind:<14}{name:<20}{med:>10.4f}{low:>9.4f}{paired:>12.2f}x"
                  f"{diffs[name]:>11.1e}")
    return {key: r for key, r in ratios.items() if not key[1].startswith("ssmref")}


def tape_overhead(repeats):
    """What bounds ssmref: ``(full, overhead)`` minima of the second-order batched meta-gradient,
    and of the same computation on width-1 arrays (MLP [1, 1, 1, 1], one task, one shot: the same
    tape, negligible arithmetic), alternating.  The second is autograd's tracing and replay, the
    difference NumPy's kernels."""
    runs = {}
    for name, sizes, tasks, shots in (("full", SIZES, TASKS, SHOTS), ("overhead", [1, 1, 1, 1], 1, 1)):
        rng = onp.random.default_rng(0)
        params = mlp_init(sizes, rng=rng)
        support = (rng.standard_normal((tasks, shots, 1)), rng.standard_normal((tasks, shots, 1)))
        query = (rng.standard_normal((tasks, shots, 1)), rng.standard_normal((tasks, shots, 1)))
        runs[name] = (lambda p=params, s=support, q=query, n=tasks:
                      maml.batched_meta_gradient(p, batched_mse_loss, s, q, num_tasks=n,
                                                 inner_lr=ALPHA))
    times = {name: [] for name in runs}
    for name in runs:
        runs[name]()
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return min(times["full"]), min(times["overhead"])


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3,
                    help="timed navigation meta-iterations after one warm-up (default 3)")
    ap.add_argument("--repeats", type=int, default=7,
                    help="runs per sinusoid timing; median and min are reported (default 7)")
    ap.add_argument("--quick", action="store_true",
                    help="one timed navigation iteration and 3 sinusoid repeats (overrides "
                         "--iterations and --repeats)")
    ap.add_argument("--skip-navigation", action="store_true", help="only the sinusoid part")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="set OPENBLAS/OMP/MKL_NUM_THREADS before NumPy loads (default: leave "
                         "them as they are; see the docstring)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch.set_num_threads for the peers, and one XLA thread for the JAX "
                         "peer when 1 (default 1, see the docstring)")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1 or args.torch_threads < 1:
        ap.error("--iterations, --repeats and --torch-threads must be >= 1")
    iterations, repeats = (1, 3) if args.quick else (args.iterations, args.repeats)

    blas = {name: os.environ[name] for name in BLAS_ENV if name in os.environ}
    print("BLAS threads: " + (", ".join(f"{k}={v}" for k, v in blas.items()) if blas else
                              "not set (OpenBLAS then uses one thread per core)"))
    nav = None if args.skip_navigation else bench_navigation(iterations, args.torch_threads)
    ratios = bench_sinusoid(repeats, args.torch_threads)
    full, overhead = tape_overhead(repeats)
    print(f"  ssmref batched second order: {1e3 * full:.2f} ms, of which autograd's tape about "
          f"{1e3 * overhead:.2f} ms ({overhead / full:.0%}; the same tape on width-1 arrays, "
          f"minima of {repeats})")

    print("\nsummary (targets from the issue; times depend on the machine and its load)")
    if nav is not None:
        seconds, nav_ratios = nav
        verdict = "meets" if seconds <= NAV_TARGET_S else "misses"
        print(f"  navigation meta-iteration: {seconds:.2f} s (median of {iterations}); "
              f"target <= {NAV_TARGET_S:.0f} s on 2 cores: {verdict}")
        if "torch MAML-TRPO" in nav_ratios:
            r = nav_ratios["torch MAML-TRPO"]
            verdict = "meets" if r <= NAV_TORCH_RATIO else "misses"
            print(f"  per sampled step, ssmref default / torch MAML-TRPO: {r:.2f}x (median of "
                  f"paired rounds); target <= {NAV_TORCH_RATIO}x: {verdict}")
    if ratios:
        for kind in ("second order", "FOMAML"):
            peers = {name: r for (k, name), r in ratios.items() if k == kind}
            line = ", ".join(f"{name} {paired:.2f}x (minima {low:.2f}x)"
                             for name, (paired, low) in peers.items())
            print(f"  sinusoid {kind}, ssmref batched time / peer time, paired medians: {line}")
            target_peer = "torch.func vmap"                           # the peer
            if kind == "second order" and target_peer in peers:
                paired, low = peers[target_peer]
                verdict = "meets" if paired <= TORCH_TARGET_RATIO else "misses"
                print(f"    target <= {TORCH_TARGET_RATIO:.0f}x of torch.func: {verdict} "
                      f"({paired:.2f}x, the median of the per-round ratios; {low:.2f}x by minima)")
                fastest = max(peers, key=lambda name: peers[name][0])
                paired, low = peers[fastest]
                print(f"    against the fastest peer, {fastest}: {paired:.2f}x ({low:.2f}x by "
                      f"minima)")
    else:
        print("  sinusoid: no torch or jax peer installed, ratio not measured")

if __name__ == "__main__":
    main()
