"""Does test-time adaptation help an SSM classifier under a shift in the dynamics?  A measurement.

The task.  A sequence ``x_0..x_{T-1}`` comes from one of ``C`` stochastic damped oscillators,
AR(2) processes with poles at ``ρ e^{±iω_k}``::

    x_t = 2 ρ cos(ω_k) x_{t-1} − ρ² x_{t-2} + ε_t,    ε_t ~ N(0, 1)

(started after a burn-in, scaled to unit standard deviation per sequence), observed with additive
white noise ``σ_obs ξ_t``.  The label is ``k``.  Source: ``ρ = 0.95, σ_obs = 0``.  Shifted targets
(:data:`SHIFTS`): ``damping`` (``ρ = 0.8``: broader spectral peaks), ``noise`` (``σ_obs = 0.8``: a
flat noise floor), ``both`` (``ρ = 0.8, σ_obs = 0.6``).

The model (a filter bank and an energy detector, the classic spectral classifier)::

    y = SSM(u)                                          (B, T, p)   ssmref.ssm.ssm_convolve
    f = log(mean_t y_t² + 1e-3)                         (B, p)      log energy per channel
    z = γ ⊙ (f − μ) / sqrt(σ² + 1e-5) + β               (B, p)      a batch norm over the batch axis
    logits = z W^T + b                                  (B, C)

``params = {"ssm": {A, B, C, D}, "norm": {"gamma", "beta"}, "head": {"W", "b"}}``.  The norm
uses the statistics of the current batch (``stats="batch"``, as a batch-norm layer in training
mode) or fixed source statistics ``(μ, σ²)`` measured on the training set after training
(``stats="source"``, a batch norm in eval mode).

Evaluation: a stream of batches per shift, arriving one after another; as in Tent's code, a batch
is predicted by the forward pass made *before* that batch's update, and the adapter persists
across the stream (online).  Labels are never used at test time.  The variants
(:data:`VARIANTS`, declared before any run):

- ``source``: source statistics, no update (the usual "no adaptation" baseline);
- ``norm``: test-batch statistics, no update (test-time batch norm; Schneider et al. 2020,
  Nado et al. 2020);
- ``tent`` / ``eata``: test-batch statistics and one adapter step per batch on ``norm.gamma``,
  ``norm.beta`` with Adam lr 1e-3, minimising the prediction entropy (Wang et al. 2021) or EATA's
  reliable, re-weighted entropy (Niu et al. 2022); ``-lr1e-2``: the same at lr 1e-2;
- ``-all``: every parameter adapts (lr 1e-3); ``-all-lr1e-2``: at lr 1e-2; ``-all-lr1e-2-anchor``:
  at lr 1e-2 with the EMA anchor and trust region (``ema_decay=0.99, trust_region_eps=0.1``).

:func:`run` returns the accuracies per seed and their mean and std; ``examples/tta_shift.py``
prints them (``docs/adaptation.md`` has the numbers).
"""

import argparse
import json
import os
import sys
import time

import autograd.numpy as np
import numpy as onp
from autograd import grad

from ssmref.adaptation import AdaptationConfig, SSMHook, TTTPlusPlusStrategy, create_adapter
from ssmref.checks import check_int
from ssmref.nn import log_softmax
from ssmref.optim import adam
from ssmref.progress import Progress
from ssmref.rng import as_rng
from ssmref.ssm import init_ssm, ssm_convolve
from ssmref.storage import write_json

OMEGAS = (0.5, 0.8, 1.1, 1.4)   # class frequencies (radians per step)
NORM_EPS = 1e-5
ENERGY_FLOOR = 1e-3


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def oscillator_sequences(n, *, rng, omegas=OMEGAS, rho=0.95, obs_noise=0.0, length=64, burn_in=64):
    """``(u, labels)``: ``u (n, length, 1)`` float64, ``labels (n,)`` int64 uniform over classes."""
    rng = as_rng(rng)
    omegas = onp.asarray(omegas, dtype=float)
    labels = rng.integers(0, len(omegas), size=n)
    a1, a2 = 2.0 * rho * onp.cos(omegas[labels]), -rho ** 2            # (n,), scalar
    x1 = x2 = onp.zeros(n)
    xs = []
    for t in range(burn_in + length):
        x = a1 * x1 + a2 * x2 + rng.standard_normal(n)
        x1, x2 = x, x1
        if t >= burn_in:
            xs.append(x)
    x = onp.stack(xs, axis=1)                                           # (n, length)
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    x = x + obs_noise * rng.standard_normal(x.shape)
    return x[..., None], labels


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

def init_classifier(num_classes, *, state_dim=16, channels=8, rng):
    rng = as_rng(rng)
    return {"ssm": init_ssm(1, state_dim, channels, rng=rng, scale=0.9),
            "norm": {"gamma": onp.ones(channels), "beta": onp.zeros(channels)},
            "head": {"W": rng.standard_normal((num_classes, channels)) / onp.sqrt(channels),
                     "b": onp.zeros(num_classes)}}


def energy_features(params, u):
    """``f = log(mean_t y_t² + 1e-3)``, ``u (B, T, 1) -> (B, p)``."""
    y, _ = ssm_convolve(params["ssm"], u)                               # (B, T, p)
    return np.log(np.mean(y * y, axis=1) + ENERGY_FLOOR)


def classify(params, u, stats=None):
    """``(logits, f, z)``: logits, log energies, the head's input; ``stats=None`` normalises with
    the batch's statistics, else with ``stats = (mu, var)``."""
    f = energy_features(params, u)                                      # (B, p)
    if stats is None:
        mu, var = np.mean(f, axis=0), np.var(f, axis=0)
    else:
        mu, var = stats
    z = params["norm"]["gamma"] * (f - mu) / np.sqrt(var + NORM_EPS) + params["norm"]["beta"]
    logits = np.dot(z, params["head"]["W"].T) + params["head"]["b"]     # (B, C)
    return logits, f, z


class SequenceClassifier:
    """The model object the adapter works on: ``params`` read at call time, ``__call__(u)`` returns
    ``{"logits", "features"}`` (features: the log energies; with ``features="head"``, the head's
    input, as T3A needs), ``extract_features(u)`` the log energies (for ``SSMHook``)."""

    def __init__(self, params, source_stats, stats="batch", features="energy"):
        self.params, self.source_stats, self.stats = params, source_stats, stats
        self.features = features

    def __call__(self, u, labels=None):
        logits, f, z = classify(self.params, u,
                                None if self.stats == "batch" else self.source_stats)
        return {"logits": logits, "features": z if self.features == "head" else f}

    def extract_features(self, u, labels=None):
        return energy_features(self.params, u)


def cross_entropy(logits, labels):
    return -np.mean(np.sum(log_softmax(logits) * (labels[:, None] == onp.arange(
        np.shape(logits)[-1])), axis=-1))


def train_classifier(u, labels, num_classes, *, rng, steps=400, batch_size=64, lr=1e-2):
    """Adam on the cross-entropy with batch statistics; returns ``(params, source_stats)``."""
    rng = as_rng(rng)
    params = init_classifier(num_classes, rng=rng)
    init, update = adam(lr=lr)
    state = init(params)
    g = grad(lambda p, x, y: cross_entropy(classify(p, x)[0], y))
    for _ in range(steps):
        idx = rng.choice(len(u), size=batch_size, replace=False)
        params, state = update(g(params, u[idx], labels[idx]), state, params)
    f = energy_features(params, u)
    return params, (onp.mean(f, axis=0), onp.var(f, axis=0))


# ---------------------------------------------------------------------------------------------
# Evaluation on a stream
# ---------------------------------------------------------------------------------------------

def no_supervised_loss(outputs, batch):
    """The supervised part of the test-time loss: none (labels are never used at test time)."""
    return 0.0


# name -> (method, adapter config); "source" and "norm" never update.  Declared before any run:
# the first four are Tent's published choices (normalisation affine parameters, Adam lr 1e-3);
# the rest probe which parameters adapt, a larger lr, and the EMA anchor with a trust region.
NORM_ONLY = r"^norm\."
VARIANTS = {
    "source": ("source", None),
    "norm": ("norm", None),
    "tent": ("tent", dict(lr=1e-3, allow_layers=NORM_ONLY)),
    "eata": ("eata", dict(lr=1e-3, allow_layers=NORM_ONLY)),
    "tent-lr1e-2": ("tent", dict(lr=1e-2, allow_layers=NORM_ONLY)),
    "eata-lr1e-2": ("eata", dict(lr=1e-2, allow_layers=NORM_ONLY)),
    "tent-all": ("tent", dict(lr=1e-3)),
    "eata-all": ("eata", dict(lr=1e-3)),
    "tent-all-lr1e-2": ("tent", dict(lr=1e-2)),
    "eata-all-lr1e-2": ("eata", dict(lr=1e-2)),
    "tent-all-lr1e-2-anchor": ("tent", dict(lr=1e-2, ema_decay=0.99, trust_region_eps=0.1)),
    "eata-all-lr1e-2-anchor": ("eata", dict(lr=1e-2, ema_decay=0.99, trust_region_eps=0.1)),
    # the methods of ssmref.adaptation.methods / .t3a, each with the parameters its paper adapts
    "shot": ("shot", dict(lr=1e-3, deny_layers=r"^head\.")),       # encoder, head frozen
    "sar": ("sar", dict(lr=1e-3, allow_layers=NORM_ONLY)),          # normalisation layers
    "cotta": ("cotta", dict(lr=1e-3)),                              # every parameter
    "ttt++-align": ("ttt++", dict(lr=1e-3, deny_layers=r"^head\.")),   # no SSL head: alignment
    "t3a": ("t3a", dict(allow_layers=r"^head\.")),                 # the head, no gradient
}
# common to every adapting variant; the rest are the AdaptationConfig defaults
BASE_CONFIG = dict(entropy_weight=1.0)

# name -> (rho, obs_noise) of the target stream
SHIFTS = {"damping": (0.8, 0.0), "noise": (0.95, 0.8), "both": (0.8, 0.6)}


def evaluate_stream(params, source_stats, stream, method, adapt_config=None,
                    source_features=None):
    """Accuracy (%) on ``stream`` (a list of ``(u, labels)`` batches) and the adapter's counters.
    ``source_features``: log energies of source sequences (``ttt++``'s statistics)."""
    stats = "source" if method == "source" else "batch"
    model = SequenceClassifier({k: dict(v) for k, v in params.items()}, source_stats, stats,
                               features="head" if method == "t3a" else "energy")
    adapter = None
    if method not in ("source", "norm"):
        cfg = AdaptationConfig(**dict(BASE_CONFIG, **adapt_config))
        strategy = method
        if method == "ttt++":                  # the SSM classifier has no self-supervised head
            strategy = TTTPlusPlusStrategy(cfg, ssl_weight=0.0, source_features=source_features)
        adapter = create_adapter(model, cfg, strategy=strategy)
    correct = total = 0
    for u, y in stream:
        outputs = model(u)                     # the prediction for this batch (before its update)
        correct += int(onp.sum(onp.argmax(outputs["logits"], axis=-1) == y))
        total += len(y)
        if adapter is not None:
            adapter.adapt(no_supervised_loss, u)
    out = {"accuracy": 100.0 * correct / total}
    if adapter is not None:
        out.update(adapter.stats)
    return out


def measured_shift(params, source_stats, source_batches, target_batch):
    """The monitor's feature shift of ``target_batch`` after the tracker has seen
    ``source_batches`` (the last source batch is held out and measured too, as a reference).

    Returns ``(shift of a held-out source batch, shift of the target batch)``."""
    model = SequenceClassifier(params, source_stats, "source")
    adapter = create_adapter(model, AdaptationConfig(enabled=False, episodic=True))
    hook = SSMHook(adapter).attach(model)
    for u in source_batches[:-1]:
        adapter.observe(model(u), u, hook.features(u))
    with adapter.context():                    # episodic: the tracker forgets the held-out batch
        u = source_batches[-1]
        held_out = adapter.observe(model(u), u, hook.features(u)).feature_shift
    target = adapter.observe(model(target_batch), target_batch,
                             hook.features(target_batch)).feature_shift
    return held_out, target


def run(seeds=(0, 1, 2, 3, 4), *, shifts=None, variants=None, n_train=2048, train_steps=400,
        n_batches=50, batch_size=64, length=64, source_rho=0.95, verbose=False):
    """Train on the source dynamics once per seed; evaluate every variant on every shift.

    ``shifts``: names from :data:`SHIFTS` (default all) or a dict ``name -> (rho, obs_noise)``;
    ``variants``: names from :data:`VARIANTS` (default all) or a dict like it.

    Returns ``{"config", "per_seed": {seed: {"iid": acc, shift: {variant: {...}}}},
    "mean": {shift: {variant: acc}}, "std": {...}, "iid": (mean, std),
    "feature_shift": {shift: (mean held-out source shift, mean target shift)}, "seconds"}``
    with accuracies in percent; ``iid`` is the source model on unshifted data.
    """
    t0 = time.time()
    shifts = {k: SHIFTS[k] for k in SHIFTS} if shifts is None else (
        shifts if isinstance(shifts, dict) else {k: SHIFTS[k] for k in shifts})
    variants = dict(VARIANTS) if variants is None else (
        variants if isinstance(variants, dict) else {k: VARIANTS[k] for k in variants})
    per_seed, fshift = {}, {k: [] for k in shifts}
    progress = Progress("adapt", len(seeds) * (1 + len(shifts)))
    for seed in seeds:
        rng = onp.random.default_rng(seed)
        u, y = oscillator_sequences(n_train, rng=rng, rho=source_rho, length=length)
        params, stats = train_classifier(u, y, len(OMEGAS), rng=rng, steps=train_steps)
        source_f = energy_features(params, u[:512])                     # ttt++'s statistics
        source_batches = [oscillator_sequences(batch_size, rng=rng, rho=source_rho,
                                               length=length) for _ in range(n_batches)]
        iid_correct = sum(int(onp.sum(onp.argmax(classify(params, ub, stats)[0], -1) == yb))
                          for ub, yb in source_batches)
        res = {"iid": 100.0 * iid_correct / (n_batches * batch_size)}
        progress.update(len(per_seed) * (1 + len(shifts)) + 1, note=f"seed {seed} trained")
        for shift, (rho, noise) in shifts.items():
            stream = [oscillator_sequences(batch_size, rng=rng, rho=rho, obs_noise=noise,
                                           length=length) for _ in range(n_batches)]
            res[shift] = {name: evaluate_stream(params, stats, stream, method, cfg, source_f)
                          for name, (method, cfg) in variants.items()}
            fshift[shift].append(measured_shift(params, stats, [b[0] for b in source_batches[:11]],
                                                stream[0][0]))
            progress.update(len(per_seed) * (1 + len(shifts)) + 2 + list(shifts).index(shift),
                            note=f"seed {seed} {shift}")
            if verbose:
                print(f"seed {seed} {shift:>8}: " + "  ".join(
                    f"{n} {r['accuracy']:.1f}" for n, r in res[shift].items()), flush=True)
        per_seed[seed] = res
    mean = {s: {v: float(onp.mean([per_seed[k][s][v]["accuracy"] for k in seeds]))
                for v in variants} for s in shifts}
    std = {s: {v: float(onp.std([per_seed[k][s][v]["accuracy"] for k in seeds]))
               for v in variants} for s in shifts}
    iid = [per_seed[k]["iid"] for k in seeds]
    return {"config": dict(seeds=list(seeds), shifts=shifts,
                           variants={n: (m, None if c is None else dict(BASE_CONFIG, **c))
                                     for n, (m, c) in variants.items()},
                           n_train=n_train, train_steps=train_steps, n_batches=n_batches,
                           batch_size=batch_size, length=length, source_rho=source_rho),
            "per_seed": per_seed, "mean": mean, "std": std,
            "iid": (float(onp.mean(iid)), float(onp.std(iid))),
            "feature_shift": {s: tuple(float(x) for x in onp.mean(v, axis=0))
                              for s, v in fshift.items()},
            "seconds": time.time() - t0}


def format_table(result):
    """Plain-text tables: accuracy (%) per variant and shift, mean ± std over the seeds."""
    shifts = list(result["mean"])
    variants = list(next(iter(result["mean"].values())))
    width = max(len(v) for v in variants) + 2
    lines = [f"accuracy (%), mean ± std over seeds {result['config']['seeds']}; "
             f"unshifted source accuracy {result['iid'][0]:.1f} ± {result['iid'][1]:.1f}",
             f"{'variant':<{width}}" + "".join(f"{s:>16}" for s in shifts)]
    lines.append("-" * len(lines[-1]))
    for v in variants:
        lines.append(f"{v:<{width}}" + "".join(
            f"{result['mean'][s][v]:>9.1f} ± {result['std'][s][v]:<4.1f}" for s in shifts))
    lines.append("")
    lines.append("monitor: feature shift of one batch against a tracker fed 10 source batches")
    lines.append(f"{'':<{width}}" + "".join(f"{s:>16}" for s in shifts))
    lines.append(f"{'held-out source':<{width}}" + "".join(
        f"{result['feature_shift'][s][0]:>16.2f}" for s in shifts))
    lines.append(f"{'shifted':<{width}}" + "".join(
        f"{result['feature_shift'][s][1]:>16.2f}" for s in shifts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line (examples/tta_shift.py; meant for ``python -m ssmref adapt``)
# ---------------------------------------------------------------------------------------------

def add_arguments(parser):
    """The options of :func:`main`, added to an ``argparse`` parser (or subparser)."""
    parser.add_argument("--benchmark", choices=["ssm-shift", "two-moons"], default="ssm-shift",
                        help="ssm-shift: this experiment; two-moons: TTT++'s synthetic table "
                        "(ssmref.experiments.two_moons)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default 0 1 2 3 4 (two-moons: 2021 0 1 2 3)")
    parser.add_argument("--steps", type=int, default=2000,
                        help="two-moons: adaptation steps per method (the official 50000 takes "
                        "about half an hour per seed)")
    parser.add_argument("--figure", metavar="PNG", help="two-moons: decision boundaries (default: none)")
    parser.add_argument("--shifts", nargs="+", choices=list(SHIFTS), default=None,
                        help="shifted target dynamics to adapt to (default: all)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="adaptation variants to compare (default: all)")
    parser.add_argument("--batches", type=int, default=50, help="test batches per stream")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the full result as JSON (default: none)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    return parser


def _check_options(args):
    """Every option checked before any work: ``ValueError`` naming the first bad one."""
    check_int("--batches", args.batches, minimum=1)
    if not args.seeds:
        raise ValueError("--seeds needs at least one seed")
    for seed in args.seeds:
        check_int("--seeds", seed, minimum=0)
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json):
            raise ValueError(f"--json {args.json} is a directory")
        if not os.path.isdir(directory):
            raise ValueError(f"--json {args.json}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            raise ValueError(f"--json {args.json}: directory {directory} is not writable")


def run_from_args(args):
    """Run with parsed options, print the tables; exit status 0, or 2 with one line on stderr for
    a bad option (checked before any work)."""
    args.seeds_given = args.seeds is not None
    if args.seeds is None:
        args.seeds = [0, 1, 2, 3, 4]
    try:
        _check_options(args)
        check_int("--steps", args.steps, minimum=5)
    except ValueError as e:
        print(f"ssmref adapt: error: {e}", file=sys.stderr)
        return 2
    if args.benchmark == "two-moons":
        from ssmref.experiments import two_moons
        return two_moons.run_from_args(args)
    kwargs = dict(seeds=tuple(args.seeds), shifts=args.shifts, variants=args.variants,
                  n_batches=args.batches)
    if args.smoke:
        kwargs.update(seeds=(0,), n_train=96, train_steps=5, n_batches=2, batch_size=12,
                      length=16)
    result = run(**kwargs)
    print(format_table(result))
    print(f"\n{result['seconds']:.1f} s")
    if args.json:
        try:
            write_json(args.json, json.loads(json.dumps(result, default=str)))
        except (ValueError, OSError) as e:
            print(f"ssmref adapt: error: {e}", file=sys.stderr)
            return 2
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="tta_shift", description="Test-time adaptation of an SSM classifier under shifted "
        "dynamics: accuracy of source, norm, tent and eata variants over seeds.")
    return run_from_args(add_arguments(parser).parse_args(argv))
