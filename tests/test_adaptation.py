"""Test-time adaptation: the 8-step update against a hand-written reference, its invariants under
hostile configurations, the guards, episodic contexts, the registry, selection, monitoring, hooks,
and one regression test per failure mode of docs/adaptation.md's table."""

import contextlib
import copy
import math
import re

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad
from autograd.tracer import getval
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ssmref import adaptation as AD
from ssmref.adaptation import monitor as MON
from ssmref.adaptation import (AdaptationConfig, AdaptationStrategy, MetaRLHook, SkipStep,
                               SSMHook, available_strategies, create_adapter,
                               register_adaptation_strategy, unregister_adaptation_strategy)
from ssmref.nn import log_softmax
from ssmref.metarl.policy import SSMMetaPolicy
from ssmref.metarl.rl import reinforce_surrogate
from ssmref.params import contains_box
from ssmref.ssm import StateSpaceModel

CLASSES, DIM = 3, 4


# ---------------------------------------------------------------------------------------------
# A small model, written once as a pure function so the reference can use it too
# ---------------------------------------------------------------------------------------------

def linear_forward(p, x):
    """logits = (x * emb.scale) W^T + b; a torch-style flat dict with dotted names."""
    h = x * p["emb.scale"]                                   # (B, DIM)
    return {"logits": np.dot(h, p["head.weight"].T) + p["head.bias"], "features": h}


class LinearModel:
    def __init__(self, rng, scale=1.0):
        self.params = {"emb.scale": 1.0 + 0.1 * rng.standard_normal(DIM),
                       "head.weight": scale * rng.standard_normal((CLASSES, DIM)),
                       "head.bias": 0.1 * rng.standard_normal(CLASSES)}

    def __call__(self, x, labels=None):
        return linear_forward(self.params, x)


def cross_entropy(outputs, batch):
    logits, y = outputs["logits"], batch["labels"]
    return -np.mean(np.sum(log_softmax(logits) * (y[:, None] == onp.arange(CLASSES)), axis=-1))


def entropy_rows(logits):
    """H(softmax) per row, written independently of ssmref (plain formula)."""
    z = logits - np.max(logits, axis=-1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    return -np.sum(np.exp(logp) * logp, axis=-1)


def make_batch(rng, n=8, shift=0.0):
    return {"x": rng.standard_normal((n, DIM)) + shift, "labels": rng.integers(0, CLASSES, n)}


def tree_equal(a, b):
    """Same keys, and every leaf bit-identical (values and dtype)."""
    if hasattr(a, "keys"):
        return hasattr(b, "keys") and sorted(a) == sorted(b) and all(tree_equal(a[k], b[k])
                                                                     for k in a)
    if isinstance(a, onp.ndarray) or isinstance(b, onp.ndarray):
        return (onp.asarray(a).dtype == onp.asarray(b).dtype and onp.shape(a) == onp.shape(b)
                and onp.array_equal(a, b, equal_nan=True))
    return a == b or (a != a and b != b)


def snapshot(adapter):
    """Copies of everything an adapter step may change."""
    tr = adapter.tracker
    return {"params": AD.copy_tree(adapter.model.params), "opt": adapter.optimizer_state,
            "anchor": adapter.anchor,
            "tracker": (tr.count, None if tr.mean is None else tr.mean.copy(),
                        None if tr.var is None else tr.var.copy()),
            "last": copy.deepcopy(adapter.last_features)}


def assert_same_state(a, b):
    assert tree_equal(a["params"], b["params"])
    assert a["opt"]["step"] == b["opt"]["step"]
    assert tree_equal(a["opt"]["m"], b["opt"]["m"]) and tree_equal(a["opt"]["v"], b["opt"]["v"])
    assert (a["anchor"] is None) == (b["anchor"] is None)
    if a["anchor"] is not None:
        assert tree_equal(a["anchor"], b["anchor"])
    assert a["tracker"][0] == b["tracker"][0]
    for x, y in zip(a["tracker"][1:], b["tracker"][1:]):
        assert (x is None and y is None) or onp.array_equal(x, y)
    assert a["last"] == b["last"]


# ---------------------------------------------------------------------------------------------
# The hand-written reference of the 8 steps (plain numpy, per tensor, the contract's order)
# ---------------------------------------------------------------------------------------------

def reference_objective(strategy, ew, margin=0.4):
    def objective(theta, frozen, batch):
        out = linear_forward(dict(frozen, **theta), batch["x"])
        loss = cross_entropy(out, batch)
        H = entropy_rows(out["logits"])
        if strategy == "tent":
            return loss + ew * np.mean(H)
        if strategy == "eata":
            Hv = onp.asarray(getval(H))
            E0 = margin * math.log(CLASSES)
            sel = Hv < E0
            w = onp.exp(E0 - Hv) * sel
            return loss + ew * np.sum(H * w) / sel.sum()
        return loss
    return objective


def reference_run(params, names, batches, cfg, strategy):
    """Apply the contract's steps 1-8 batch by batch; returns the list of parameter dicts."""
    theta = {n: onp.array(params[n], dtype=float) for n in names}
    frozen = {n: v for n, v in params.items() if n not in names}
    m = {n: onp.zeros_like(v) for n, v in theta.items()}
    v = {n: onp.zeros_like(x) for n, x in theta.items()}
    anchor = {n: x.copy() for n, x in theta.items()}
    objective = reference_objective(strategy, cfg.entropy_weight, cfg.eata_margin)
    g_fn = grad(objective)
    t, history = 0, []
    for batch in batches:
        for _ in range(cfg.max_steps_per_call):
            g = g_fn(theta, frozen, batch)
            if cfg.grad_clip_norm > 0:
                total = math.sqrt(sum(float(onp.sum(x ** 2)) for x in g.values()))
                coef = min(1.0, cfg.grad_clip_norm / (total + 1e-6))
                g = {n: coef * x for n, x in g.items()}
            t += 1
            new = {}
            for n in names:
                gn = g[n] + cfg.weight_decay * theta[n]
                m[n] = cfg.b1 * m[n] + (1 - cfg.b1) * gn
                v[n] = cfg.b2 * v[n] + (1 - cfg.b2) * gn * gn
                step = -(cfg.lr / (1 - cfg.b1 ** t)) * m[n] / (
                    onp.sqrt(v[n]) / math.sqrt(1 - cfg.b2 ** t) + cfg.adam_eps)
                if cfg.max_step_scale > 0:
                    lim = cfg.max_step_scale * max(onp.linalg.norm(theta[n]), 1.0)
                    nd = onp.linalg.norm(step)
                    if nd > lim:
                        step = step * (lim / nd)
                new[n] = theta[n] + step
                if cfg.trust_region_eps > 0 and cfg.ema_decay > 0:
                    r = onp.linalg.norm(new[n] - anchor[n])
                    if r > cfg.trust_region_eps:
                        new[n] = anchor[n] + (new[n] - anchor[n]) * (cfg.trust_region_eps / r)
                if cfg.ema_decay > 0:
                    anchor[n] = cfg.ema_decay * anchor[n] + (1 - cfg.ema_decay) * new[n]
            theta = new
        history.append({n: x.copy() for n, x in theta.items()})
    return history


hostile_configs = st.fixed_dictionaries({
    "lr": st.sampled_from([1e-4, 1e-2, 0.3, 10.0, 1e3]),
    "max_step_scale": st.sampled_from([0.0, 1e-6, 1e-2, 0.1, 5.0]),
    "weight_decay": st.sampled_from([0.0, 0.1]),
    "grad_clip_norm": st.sampled_from([0.0, 1e-4, 1.0]),
    "trust_region_eps": st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 0.5]),
    "ema_decay": st.sampled_from([0.0, 0.1, 0.9, 0.999]),
    "entropy_weight": st.sampled_from([0.0, 1.0, 10.0]),
    "max_steps_per_call": st.integers(1, 3),
    "adam_eps": st.sampled_from([1e-8, 1e-14]),
    "b1": st.sampled_from([0.0, 0.9]),
})


# ---------------------------------------------------------------------------------------------
# The update equals the reference; invariants hold after every step
# ---------------------------------------------------------------------------------------------

@settings(max_examples=100)
@given(seed=st.integers(0, 2 ** 31), kw=hostile_configs,
       strategy=st.sampled_from(["none", "tent", "eata"]), allow=st.sampled_from([None, "^head"]))
def test_adapter_equals_hand_written_steps(seed, kw, strategy, allow):
    rng = onp.random.default_rng(seed)
    model = LinearModel(rng, scale=3.0)                     # confident: eata selects samples
    cfg = AdaptationConfig(allow_layers=allow, **kw)
    adapter = create_adapter(model, cfg, strategy)
    params0 = AD.copy_tree(model.params)
    batches = [make_batch(rng) for _ in range(3)]
    infos = [adapter.adapt(cross_entropy, b) for b in batches]
    assume(all(i["updated"] and i["steps"] == cfg.max_steps_per_call for i in infos))
    ref = reference_run(params0, adapter.trainable_names, batches, cfg, strategy)
    for name in adapter.trainable_names:
        # hostile configs (lr up to 1e3) amplify rounding differences between the two
        # implementations' operation orders; entries that nearly cancel cannot meet an
        # elementwise rtol, so the check is 1e-9 relative to the tensor's largest entry
        scale = max(onp.max(onp.abs(ref[-1][name])), 1.0)
        onp.testing.assert_allclose(model.params[name], ref[-1][name], rtol=1e-9,
                                    atol=1e-9 * scale, err_msg=name)
    for name in adapter.frozen_names:
        assert model.params[name] is params0[name] or onp.array_equal(model.params[name],
                                                                       params0[name])


def _tol(*arrays):
    """Rounding allowance for a norm of a difference of arrays of this size and magnitude."""
    big = max(float(onp.max(onp.abs(a))) if onp.size(a) else 0.0 for a in arrays)
    n = max(onp.size(a) for a in arrays)
    return 8 * onp.finfo(float).eps * (big + 1.0) * math.sqrt(n)


@settings(max_examples=100)
@given(seed=st.integers(0, 2 ** 31), kw=hostile_configs,
       strategy=st.sampled_from(["none", "tent", "eata"]))
def test_trust_region_and_step_bound_after_every_step(seed, kw, strategy):
    rng = onp.random.default_rng(seed)
    model = LinearModel(rng, scale=float(rng.choice([0.0, 1.0, 30.0])))
    cfg = AdaptationConfig(**dict(kw, max_steps_per_call=1))
    adapter = create_adapter(model, cfg, strategy)
    s, eps, d = cfg.max_step_scale, cfg.trust_region_eps, cfg.ema_decay
    anchor = None
    for _ in range(4):
        before = adapter.trainable_params()
        info = adapter.adapt(cross_entropy, make_batch(rng, shift=float(rng.normal(0, 3))))
        after = adapter.trainable_params()
        if not info["updated"]:
            assert tree_equal(before, after)
            continue
        a_old = anchor if anchor is not None else before          # a starts at theta_0
        anchor = adapter.anchor
        for n in adapter.trainable_names:
            step = onp.linalg.norm(after[n] - before[n])
            if s > 0:                                              # step 5 (7 cannot undo it)
                assert step <= s * max(onp.linalg.norm(before[n]), 1.0) * (1 + 1e-12) \
                    + _tol(before[n], after[n]), n
            if eps > 0 and d > 0:                                  # step 7, both anchors
                assert onp.linalg.norm(after[n] - a_old[n]) <= eps + _tol(after[n], a_old[n]), n
                assert onp.linalg.norm(after[n] - anchor[n]) <= eps + _tol(after[n], anchor[n]), n
        if cfg.grad_clip_norm > 0:
            assert info["clip_coef"] == min(1.0, cfg.grad_clip_norm / (info["grad_norm"] + 1e-6))


def test_k_steps_equal_torch_adam_with_clipping():
    torch = pytest.importorskip("torch")
    rng = onp.random.default_rng(0)
    model = LinearModel(rng)
    cfg = AdaptationConfig(lr=0.05, max_step_scale=0.0, weight_decay=0.01, grad_clip_norm=0.3,
                           ema_decay=0.0, max_steps_per_call=5)
    params0 = AD.copy_tree(model.params)
    batch = make_batch(rng)
    adapter = create_adapter(model, cfg)
    assert adapter.adapt(cross_entropy, batch)["steps"] == 5

    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params0.items()}
    opt = torch.optim.Adam(list(tp.values()), lr=0.05, weight_decay=0.01)
    x, y = torch.tensor(batch["x"]), torch.tensor(batch["labels"])
    for _ in range(5):
        opt.zero_grad()
        logits = (x * tp["emb.scale"]) @ tp["head.weight"].T + tp["head.bias"]
        torch.nn.functional.cross_entropy(logits, y).backward()
        torch.nn.utils.clip_grad_norm_(list(tp.values()), 0.3)
        opt.step()
    for k in tp:
        onp.testing.assert_allclose(model.params[k], tp[k].detach().numpy(), rtol=1e-12,
                                    atol=1e-14, err_msg=k)


# ---------------------------------------------------------------------------------------------
# The non-finite guard
# ---------------------------------------------------------------------------------------------

@settings(max_examples=40)
@given(seed=st.integers(0, 2 ** 31), kw=hostile_configs,
       strategy=st.sampled_from(["none", "tent", "eata"]),
       poison=st.sampled_from(["nan", "inf", "row"]))
def test_nan_batch_changes_nothing_and_leaks_nothing(seed, kw, strategy, poison):
    rng = onp.random.default_rng(seed)
    cfg = AdaptationConfig(**kw)
    twin_rng = onp.random.default_rng(seed)
    model, twin = LinearModel(rng, scale=3.0), LinearModel(twin_rng, scale=3.0)
    a, b = create_adapter(model, cfg, strategy), create_adapter(twin, cfg, strategy)
    batches = [make_batch(rng) for _ in range(4)]
    for ad in (a, b):
        ad.adapt(cross_entropy, batches[0])
        ad.observe(ad.model(**batches[0]), batches[0], batches[0]["x"])
    bad = make_batch(rng)
    if poison == "row":
        bad["x"][1, 2] = onp.nan
    else:
        bad["x"] = bad["x"] * (onp.nan if poison == "nan" else onp.inf)
    before = snapshot(a)
    info = a.adapt(cross_entropy, bad)
    assert not info["updated"] and info["steps"] == 0
    assert "refused" in info["reason"] or "skipped" in info["reason"]
    assert_same_state(before, snapshot(a))
    assert not contains_box(model.params)
    # the monitor refuses non-finite features too
    with onp.errstate(invalid="ignore"):
        bad_outputs = model(**bad)
    mf = a.observe(bad_outputs, bad, bad["x"])
    assert math.isnan(mf.feature_shift)
    after_observe = snapshot(a)
    assert after_observe["tracker"][0] == before["tracker"][0]
    # later steps are those of a twin that never saw the bad batch, bit for bit
    for batch in batches[1:]:
        ia, ib = a.adapt(cross_entropy, batch), b.adapt(cross_entropy, batch)
        assert ia["updated"] == ib["updated"]
    assert tree_equal(model.params, twin.params)
    assert tree_equal(a.optimizer_state, b.optimizer_state)


def test_non_finite_gradient_with_finite_loss_is_refused():
    class Root:
        params = {"z": onp.zeros(3), "w": onp.ones(2)}

        def __call__(self, x):
            return {"mean": x * self.params["w"][0]}

    model = Root()
    adapter = create_adapter(model, AdaptationConfig(lr=0.1))
    loss = lambda out, batch: np.sum(np.sqrt(np.abs(model.params["z"])))  # noqa: E731
    before = snapshot(adapter)
    info = adapter.adapt(loss, onp.ones(2))
    assert not info["updated"] and info["loss"] == 0.0
    assert "non-finite gradient in ['z']" in info["reason"]
    assert_same_state(before, snapshot(adapter))


def test_non_finite_step_is_refused_by_the_second_guard():
    # adam_eps = 0 and a parameter with zero gradient: the Adam step is 0/0 = nan (as in torch)
    class Half:
        def __init__(self):
            self.params = {"used": onp.ones(2), "unused": onp.ones(2)}

        def __call__(self, x):
            return {"mean": x * self.params["used"]}

    model = Half()
    adapter = create_adapter(model, AdaptationConfig(lr=0.1, adam_eps=0.0, max_step_scale=0.0))
    before = snapshot(adapter)
    info = adapter.adapt(lambda out, b: np.sum(out["mean"] ** 2), onp.ones(2))
    assert not info["updated"] and "non-finite parameters" in info["reason"]
    assert_same_state(before, snapshot(adapter))
    assert adapter.stats["steps_refused"] == 1


# ---------------------------------------------------------------------------------------------
# Contexts
# ---------------------------------------------------------------------------------------------

@settings(max_examples=40)
@given(seed=st.integers(0, 2 ** 31), kw=hostile_configs, raise_inside=st.booleans(),
       strategy=st.sampled_from(["none", "tent", "eata"]))
def test_episodic_context_restores_bit_exactly(seed, kw, raise_inside, strategy):
    rng = onp.random.default_rng(seed)
    model = LinearModel(rng, scale=3.0)
    adapter = create_adapter(model, AdaptationConfig(episodic=True, **kw), strategy)
    warm = make_batch(rng)
    adapter.adapt(cross_entropy, warm)                       # a non-trivial state on entry
    adapter.observe(model(**warm), warm, warm["x"])
    before, stats = snapshot(adapter), adapter.stats
    params_obj = model.params

    class Boom(Exception):
        pass

    with pytest.raises(Boom) if raise_inside else contextlib.nullcontext():
        with adapter.context(model) as ad:
            assert ad is adapter
            for _ in range(3):
                b = make_batch(rng, shift=2.0)
                adapter.observe(model(**b), b, b["x"])
                adapter.adapt(cross_entropy, b)
            if raise_inside:
                raise Boom()
    assert_same_state(before, snapshot(adapter))
    assert adapter.stats == stats
    assert tree_equal(model.params, params_obj) and model.params is not params_obj


def test_context_leaves_model_usable_after_an_exception_in_the_forward():
    rng = onp.random.default_rng(1)
    model = LinearModel(rng)
    adapter = create_adapter(model, AdaptationConfig(lr=0.1))   # not episodic
    batch = make_batch(rng)
    adapter.adapt(cross_entropy, batch)
    before = snapshot(adapter)

    def exploding_forward(b):
        model(**b)
        raise RuntimeError("forward failed")

    with pytest.raises(RuntimeError, match="forward failed"):
        with adapter.context(model):
            adapter.adapt(cross_entropy, batch, fwd_fn=exploding_forward)
    assert not contains_box(model.params)
    assert_same_state(before, snapshot(adapter))
    model(**batch)                                              # still usable
    assert adapter.adapt(cross_entropy, batch)["updated"]


def test_context_refuses_another_model():
    rng = onp.random.default_rng(0)
    adapter = create_adapter(LinearModel(rng))
    with pytest.raises(ValueError, match="not the model"):
        with adapter.context(LinearModel(rng)):
            pass


def test_forward_side_effects_are_undone():
    # StateSpaceModel.forward rebinds hidden_state: a step must not leave a traced state behind
    model = StateSpaceModel(1, 3, 1, rng=0)
    u0 = onp.ones((2, 1))
    model.forward(u0)
    h_before = model.hidden_state
    adapter = create_adapter(model, AdaptationConfig(lr=1e-2))
    info = adapter.adapt(lambda y, u: np.sum(y ** 2), u0, fwd_fn=model.forward)
    assert info["updated"] and model.hidden_state is h_before

    class Adds:
        params = {"w": onp.ones(2)}

        def __call__(self, x):
            self.cache = self.params["w"] * x
            return {"mean": self.cache}

    m = Adds()
    create_adapter(m).adapt(lambda o, b: np.sum(o["mean"] ** 2), onp.ones(2))
    assert not hasattr(m, "cache")


# ---------------------------------------------------------------------------------------------
# Registry, strategies and configuration
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_names():
    names = []
    yield names
    for n in names:
        if n in available_strategies():
            unregister_adaptation_strategy(n)


def test_registry_forms(fresh_names):
    fresh_names += ["t_decorated", "t_direct"]

    @register_adaptation_strategy("t_decorated")
    class Doubled(AdaptationStrategy):
        def post_loss(self, loss, outputs, batch):
            return 2.0 * loss

    assert Doubled.name == "t_decorated" and isinstance(Doubled, type)

    def builder(cfg):
        s = AdaptationStrategy(cfg)
        s.post_loss = lambda loss, outputs, batch: loss + 1.0
        return s

    assert register_adaptation_strategy("t_direct", builder) is builder
    assert {"none", "tent", "eata", "t_decorated", "t_direct"} <= set(available_strategies())
    rng = onp.random.default_rng(0)
    batch = make_batch(rng)
    base = cross_entropy(LinearModel(onp.random.default_rng(0))(**batch), batch)
    for name, expected in (("t_decorated", 2 * base), ("t_direct", base + 1.0)):
        adapter = create_adapter(LinearModel(onp.random.default_rng(0)), None, name)
        assert adapter.adapt(cross_entropy, batch)["loss"] == pytest.approx(expected, rel=1e-12)
    # a taken name is an error unless overwrite=True; re-registering the same builder is a no-op
    with pytest.raises(ValueError, match="already registered"):
        register_adaptation_strategy("tent", builder)
    register_adaptation_strategy("t_direct", builder)
    register_adaptation_strategy("t_direct", Doubled, overwrite=True)
    with pytest.raises(ValueError, match="non-empty string"):
        register_adaptation_strategy("", builder)
    with pytest.raises(ValueError, match="callable"):
        register_adaptation_strategy("t_bad", 3)


def test_unknown_strategy_raises_and_lists_names():
    # failure mode: an unknown name silently becoming "none"
    with pytest.raises(ValueError) as e:
        create_adapter(LinearModel(onp.random.default_rng(0)), None, "tnet")
    for name in ("none", "tent", "eata"):
        assert repr(name) in str(e.value)


def test_builder_must_return_a_strategy(fresh_names):
    fresh_names.append("t_broken")
    register_adaptation_strategy("t_broken", lambda cfg: 42)
    with pytest.raises(ValueError, match="post_loss"):
        create_adapter(LinearModel(onp.random.default_rng(0)), None, "t_broken")


@pytest.mark.parametrize("field,value", [
    ("lr", -1e-3), ("lr", float("nan")), ("max_step_scale", -0.1), ("weight_decay", -1.0),
    ("grad_clip_norm", float("inf")), ("trust_region_eps", -1e-3), ("ema_decay", 1.0),
    ("ema_decay", -0.1), ("entropy_weight", float("nan")), ("max_steps_per_call", 0),
    ("max_steps_per_call", 1.5), ("max_steps_per_call", True), ("allow_layers", "(unclosed"),
    ("deny_layers", [3]), ("episodic", "yes"), ("enabled", 1), ("b2", 1.0), ("adam_eps", -1.0),
    ("monitor_momentum", 1.0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=re.escape(f"AdaptationConfig.{field}")):
        AdaptationConfig(**{field: value})
    cfg = AdaptationConfig()
    setattr(cfg, field, value)                                # mutated after construction
    with pytest.raises(ValueError, match=re.escape(f"AdaptationConfig.{field}")):
        create_adapter(LinearModel(onp.random.default_rng(0)), cfg)


def test_defaults_are_the_contract():
    cfg = AdaptationConfig()
    assert (cfg.enabled, cfg.lr, cfg.max_step_scale, cfg.weight_decay, cfg.grad_clip_norm,
            cfg.trust_region_eps, cfg.ema_decay, cfg.entropy_weight, cfg.max_steps_per_call,
            cfg.allow_layers, cfg.deny_layers, cfg.episodic) == \
        (True, 1e-4, 0.1, 0.0, 1.0, 1e-3, 0.0, 0.0, 1, None, None, False)


def test_disabled_adapter_does_nothing():
    rng = onp.random.default_rng(0)
    model = LinearModel(rng)
    adapter = create_adapter(model, AdaptationConfig(enabled=False))
    before = snapshot(adapter)
    info = adapter.adapt(cross_entropy, make_batch(rng))
    assert info["updated"] is False and info["steps"] == 0 and "disabled" in info["reason"]
    assert_same_state(before, snapshot(adapter))


# ---------------------------------------------------------------------------------------------
# Selection by name
# ---------------------------------------------------------------------------------------------

NAME_PARTS = ["ssm", "head", "norm", "A", "weight", "bias"]
PATTERNS = [None, "^head", r"\.A$", "norm|bias", "weight", "^x", "ssm\\."]


@settings(max_examples=60)
@given(data=st.data(), nested=st.booleans())
def test_allow_deny_select_by_regex_search(data, nested):
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(NAME_PARTS), st.sampled_from(NAME_PARTS)),
                               min_size=1, max_size=6, unique=True))
    allow = data.draw(st.sampled_from(PATTERNS))
    deny = data.draw(st.sampled_from(PATTERNS))
    rng = onp.random.default_rng(0)
    if nested:                                             # {"ssm": {"A": ...}}: name "ssm.A"
        params = {}
        for a, b in pairs:
            if a in params and not isinstance(params[a], dict):
                continue
            params.setdefault(a, {})[b] = rng.standard_normal(2)
        names = sorted(f"{a}.{b}" for a in params for b in params[a])
    else:                                                  # {"ssm.A": ...}
        params = {f"{a}.{b}": rng.standard_normal(2) for a, b in pairs}
        names = sorted(params)
    expected = [n for n in names if (allow is None or re.search(allow, n))
                and not (deny is not None and re.search(deny, n))]

    class Sum:
        def __init__(self, p):
            self.params = p

        def __call__(self, x):
            return {"mean": sum(np.sum(v[2]) for v in AD.param_leaves(self.params)) * x}

    model = Sum(params)
    cfg = AdaptationConfig(allow_layers=allow, deny_layers=deny, lr=0.1)
    if not expected:
        with pytest.raises(ValueError, match="no trainable parameters"):
            create_adapter(model, cfg)
        return
    adapter = create_adapter(model, cfg)
    assert sorted(adapter.trainable_names) == expected
    before = {n: v for _, n, v in AD.param_leaves(model.params)}
    assert adapter.adapt(lambda o, b: np.sum(o["mean"]), onp.ones(1))["updated"]
    after = {n: v for _, n, v in AD.param_leaves(model.params)}
    for n in names:
        if n in expected:
            assert not onp.array_equal(before[n], after[n]), n
        else:
            assert after[n] is before[n], n
    # the container keeps its shape: nested stays nested, dotted keys stay dotted
    assert sorted(model.params) == sorted(params)


def test_list_of_patterns_and_non_float_leaves():
    class M:
        params = {"a": onp.ones(2), "b": onp.ones(2), "c": onp.ones(2), "n": onp.arange(3)}

        def __call__(self, x):
            return {"mean": x * (self.params["a"] + self.params["b"] + self.params["c"])}

    adapter = create_adapter(M(), AdaptationConfig(allow_layers=["^a$", "^c$"]))
    assert adapter.trainable_names == ["a", "c"] and "n" in adapter.frozen_names


def test_nested_params_keep_structure():
    class Nested:
        def __init__(self):
            self.params = {"ssm": {"A": onp.eye(2), "B": onp.ones((2, 1))},
                           "pi": {"W": onp.ones((3, 2))}}

        def __call__(self, x):
            h = np.dot(self.params["ssm"]["A"], np.dot(self.params["ssm"]["B"], x))
            return {"logits": np.dot(self.params["pi"]["W"], h)}

    model = Nested()
    adapter = create_adapter(model, AdaptationConfig(lr=0.1, deny_layers=r"^pi\."), "tent")
    assert adapter.trainable_names == ["ssm.A", "ssm.B"]
    W = model.params["pi"]["W"]
    adapter.adapt(lambda o, b: np.sum(o["logits"] ** 2), onp.ones(1))
    assert set(model.params) == {"ssm", "pi"} and set(model.params["ssm"]) == {"A", "B"}
    assert model.params["pi"]["W"] is W


def test_structure_change_is_an_error():
    rng = onp.random.default_rng(0)
    model = LinearModel(rng)
    adapter = create_adapter(model)
    model.params = dict(model.params, extra=onp.ones(1))
    with pytest.raises(ValueError, match="changed structure"):
        adapter.adapt(cross_entropy, make_batch(rng))


# ---------------------------------------------------------------------------------------------
# Strategies lower what they minimise
# ---------------------------------------------------------------------------------------------

@settings(max_examples=20)
@given(seed=st.integers(0, 2 ** 31), strategy=st.sampled_from(["tent", "eata"]))
def test_tent_and_eata_lower_their_entropy(seed, strategy):
    rng = onp.random.default_rng(seed)
    model = LinearModel(rng, scale=2.0)
    batch = make_batch(rng, n=16)
    cfg = AdaptationConfig(lr=1e-6, entropy_weight=1.0, max_step_scale=0.0)
    adapter = create_adapter(model, cfg, strategy)
    H0 = entropy_rows(model(**batch)["logits"])
    if strategy == "eata":
        E0 = 0.4 * math.log(CLASSES)
        sel = H0 < E0
        assume(sel.any())
        w = onp.exp(E0 - H0) * sel
        objective = lambda H: float(onp.sum(w * H) / sel.sum())  # noqa: E731  fixed S and w
    else:
        objective = lambda H: float(onp.mean(H))  # noqa: E731
    info = adapter.adapt(lambda o, b: 0.0, batch)
    assert info["updated"] and info["loss"] == pytest.approx(objective(H0), rel=1e-12)
    assume(info["grad_norm"] > 1e-3)
    H1 = entropy_rows(model(**batch)["logits"])
    assert objective(H1) < objective(H0)


def test_eata_selection_weights_and_skip():
    strat = AD.EATAStrategy(AdaptationConfig(entropy_weight=1.0))
    logits = onp.array([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    H = entropy_rows(logits)
    E0 = 0.4 * math.log(3)
    mask, w, e0 = strat.selection(logits)
    assert e0 == E0 and list(mask) == list(H < E0) and not mask[1]     # uniform row excluded
    onp.testing.assert_allclose(w[mask], onp.exp(E0 - H[mask]), rtol=1e-15)
    val = strat.post_loss(0.5, {"logits": logits}, None)
    assert val == pytest.approx(0.5 + onp.sum(w * H * mask) / mask.sum(), rel=1e-14)
    # weights are constants: the gradient is sum_n w_n dH_n / |S|
    g = grad(lambda L: strat.post_loss(0.0, {"logits": L}, None))(logits)
    g_ref = grad(lambda L: np.sum(entropy_rows(L) * w * mask) / mask.sum())(logits)
    onp.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-15)
    with pytest.raises(SkipStep, match="no reliable sample"):
        strat.post_loss(0.0, {"logits": onp.zeros((4, 3))}, None)


def test_empty_eata_selection_skips_the_step_and_stops():
    rng = onp.random.default_rng(0)
    model = LinearModel(rng, scale=0.0)                  # uniform predictions: H = ln C >= E0
    model.params["head.bias"] = onp.zeros(CLASSES)
    adapter = create_adapter(model, AdaptationConfig(entropy_weight=1.0, max_steps_per_call=3),
                             "eata")
    before = snapshot(adapter)
    info = adapter.adapt(lambda o, b: 0.0, make_batch(rng))
    assert not info["updated"] and info["steps"] == 0 and info["reason"].startswith("skipped")
    assert_same_state(before, snapshot(adapter)) and adapter.stats["steps_skipped"] == 1


def test_tent_needs_logits():
    class Reg:
        params = {"w": onp.ones(2)}

        def __call__(self, x):
            return {"mean": self.params["w"] * x}

    with pytest.raises(ValueError, match="tent needs logits"):
        create_adapter(Reg(), None, "tent").adapt(lambda o, b: 0.0, onp.ones(2))


def test_max_steps_per_call_and_report():
    rng = onp.random.default_rng(0)
    model = LinearModel(rng)
    adapter = create_adapter(model, AdaptationConfig(lr=1e-2, max_steps_per_call=4))
    batch = make_batch(rng)
    info = adapter.adapt(cross_entropy, batch)
    assert info["steps"] == 4 and len(info["losses"]) == 4 and info["loss"] == info["losses"][0]
    assert info["losses"][-1] < info["losses"][0]
    assert set(info["bound_scale"]) == set(adapter.trainable_names)
    assert "reason" not in info and adapter.optimizer_state["step"] == 4


# ---------------------------------------------------------------------------------------------
# Models from ssmref
# ---------------------------------------------------------------------------------------------

def test_state_space_model_adapts_to_reduce_a_regression_loss():
    rng = onp.random.default_rng(0)
    target = StateSpaceModel(2, 4, 1, rng=1)
    model = StateSpaceModel(2, 4, 1, rng=2)
    u = rng.standard_normal((8, 20, 2))
    y_target = target.forward_sequence(u)
    mse = lambda y, u: np.mean((y - y_target) ** 2)  # noqa: E731
    adapter = create_adapter(model, AdaptationConfig(lr=3e-2, max_steps_per_call=25,
                                                     allow_layers="^[BCD]$"))
    A = model.params["A"]
    info = adapter.adapt(mse, u, fwd_fn=model.forward_sequence)
    assert info["steps"] == 25 and info["losses"][-1] < 0.5 * info["losses"][0]
    assert model.params["A"] is A
    assert mse(model.forward_sequence(u), u) < 0.5 * info["losses"][0]


def test_ssm_hook_features():
    model = StateSpaceModel(2, 3, 1, rng=0)
    adapter = create_adapter(model)
    u = onp.random.default_rng(0).standard_normal((2, 5, 2))
    with pytest.raises(ValueError, match="attach"):
        SSMHook(adapter).features(u)
    feats = SSMHook(adapter).attach(model).features(u)
    A, B = model.params["A"], model.params["B"]
    h = onp.zeros((2, 3))
    for t in range(5):
        h = h @ A.T + u[:, t] @ B.T
        onp.testing.assert_allclose(feats[:, t], h, rtol=1e-12)
    assert onp.array_equal(SSMHook(adapter).attach(model).features({"u": u}), feats)

    class WithExtract(LinearModel):
        def extract_features(self, x, labels=None):
            return self(x)["features"]

    m = WithExtract(onp.random.default_rng(0))
    batch = make_batch(onp.random.default_rng(1))
    f = SSMHook(create_adapter(m)).attach().features(batch)
    onp.testing.assert_allclose(f, batch["x"] * m.params["emb.scale"])


# ---------------------------------------------------------------------------------------------
# Monitoring against direct formulas
# ---------------------------------------------------------------------------------------------

@settings(max_examples=40)
@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 6), c=st.integers(2, 5),
       seq=st.booleans())
def test_observe_matches_direct_formulas(seed, n, c, seq):
    rng = onp.random.default_rng(seed)
    adapter = create_adapter(LinearModel(rng))
    shape = (n, 3, c) if seq else (n, c)
    logits = 3 * rng.standard_normal(shape)
    mf = adapter.observe({"logits": logits}, None)
    rows = logits.reshape(-1, c)
    P = [onp.exp(r - r.max()) / onp.sum(onp.exp(r - r.max())) for r in rows]
    H = [-sum(p_k * math.log(p_k) for p_k in p if p_k > 0) for p in P]
    assert mf.batch_size == len(rows)
    assert mf.entropy == pytest.approx(sum(H) / len(H), rel=1e-12)
    assert mf.mean_confidence == pytest.approx(sum(max(p) for p in P) / len(P), rel=1e-12)
    var = [sum((p[k] - sum(q[k] for q in P) / len(P)) ** 2 for p in P) / len(P) for k in range(c)]
    assert mf.prediction_var == pytest.approx(sum(var) / c, rel=1e-10, abs=1e-15)
    assert mf.feature_shift is None and mf.notes["num_classes"] == c
    # a bare array is logits
    assert adapter.observe(logits, None).entropy == pytest.approx(mf.entropy, rel=1e-15)
    # regression outputs, with a Gaussian entropy when log_std is given
    mean, log_std = rng.standard_normal((n, 2)), rng.standard_normal(2)
    mg = adapter.observe({"mean": mean, "log_std": log_std}, None)
    assert mg.mean_confidence is None
    assert mg.entropy == pytest.approx(float(onp.sum(log_std + 0.5 * (1 + math.log(2 * math.pi)))),
                                       rel=1e-12)
    assert mg.prediction_var == pytest.approx(float(onp.mean(onp.var(mean, axis=0))), rel=1e-12,
                                              abs=1e-300)
    assert adapter.observe({"mean": mean}, None).entropy is None


def test_feature_shift_uses_the_statistics_before_the_batch():
    # failure mode: the batch compared with statistics that already contain it
    adapter = create_adapter(LinearModel(onp.random.default_rng(0)),
                             AdaptationConfig(monitor_momentum=0.9))
    logits = onp.zeros((4, CLASSES))
    x1 = onp.array([[-1.0, 0.0], [1.0, 2.0]])                # mean (0, 1), var (1, 1)
    assert adapter.observe(logits, None, x1).feature_shift is None
    x2 = x1 + onp.array([3.0, -4.0])                          # mean (3, -3)
    mf = adapter.observe(logits, None, x2)
    assert mf.feature_shift == pytest.approx(math.sqrt((9 / (1 + 1e-8) + 16 / (1 + 1e-8)) / 2),
                                             rel=1e-14)
    tr = adapter.tracker
    onp.testing.assert_allclose(tr.mean, 0.9 * onp.array([0.0, 1.0]) + 0.1 * onp.array([3.0, -3.0]))
    onp.testing.assert_allclose(tr.var, 0.9 * 1 + 0.1 * 1 + 0.09 * onp.array([9.0, 16.0]))
    assert tr.count == 2 and mf.notes["tracker_count"] == 2


@settings(max_examples=20)
@given(seed=st.integers(0, 2 ** 31), n1=st.integers(1, 8), n2=st.integers(1, 8))
def test_tracker_variance_is_the_pooled_variance(seed, n1, n2):
    # with momentum n1 / (n1 + n2) the update is the exact mean and variance of both batches
    rng = onp.random.default_rng(seed)
    x1, x2 = rng.standard_normal((n1, 3)), 5 + 2 * rng.standard_normal((n2, 3))
    tr = MON.FeatureTracker(momentum=n1 / (n1 + n2))
    tr.observe(x1)
    tr.observe(x2)
    both = onp.concatenate([x1, x2])
    onp.testing.assert_allclose(tr.mean, both.mean(0), rtol=1e-12)
    onp.testing.assert_allclose(tr.var, both.var(0), rtol=1e-10)


def test_tracker_refuses_bad_features():
    tr = MON.FeatureTracker()
    tr.observe(onp.ones((2, 3)))
    with pytest.raises(ValueError, match="columns"):
        tr.observe(onp.ones((2, 4)))
    with pytest.raises(ValueError, match="momentum"):
        MON.FeatureTracker(1.0)
    with pytest.raises(ValueError, match="'logits' or 'mean'"):
        MON.prediction_stats({"values": onp.ones(2)})


# ---------------------------------------------------------------------------------------------
# MetaRLHook
# ---------------------------------------------------------------------------------------------

class TinyPolicy:
    """A stand-in with SSMMetaPolicy's outputs: {"logits" | "mean", "log_std"}, "values",
    "features"."""

    def __init__(self, rng, discrete=True, obs_dim=3, act=2):
        self.discrete = discrete
        self.params = {"pi": {"W": rng.standard_normal((act, obs_dim))},
                       "vf": {"w": rng.standard_normal(obs_dim)}, "log_std": onp.zeros(act)}

    def __call__(self, obs, **unused):
        p = self.params
        out = {"values": np.dot(obs, p["vf"]["w"]), "features": obs}
        if self.discrete:
            out["logits"] = np.dot(obs, p["pi"]["W"].T)
        else:
            out["mean"], out["log_std"] = np.dot(obs, p["pi"]["W"].T), p["log_std"]
        return out


def rl_batch(rng, discrete, N=4, T=5, act=2):
    obs = rng.standard_normal((N, T, 3))
    actions = rng.integers(0, act, (N, T)) if discrete else rng.standard_normal((N, T, act))
    mask = onp.ones((N, T))
    mask[0, 3:] = 0.0
    return {"obs": obs, "actions": actions, "advantages": rng.standard_normal((N, T)),
            "returns": rng.standard_normal((N, T)), "mask": mask}


@pytest.mark.parametrize("discrete", [True, False])
def test_meta_rl_hook_loss_matches_rl_formulas(discrete):
    rng = onp.random.default_rng(0)
    policy = TinyPolicy(rng, discrete)
    adapter = create_adapter(policy, AdaptationConfig(lr=1e-2))
    hook = MetaRLHook(adapter, value_coef=0.5, entropy_coef=0.01)
    batch = rl_batch(rng, discrete)
    out = policy(**batch)
    if discrete:
        logp_all = log_softmax(out["logits"])
        logp = onp.take_along_axis(logp_all, batch["actions"][..., None], -1)[..., 0]
        ent = -onp.sum(onp.exp(logp_all) * logp_all, -1)
    else:
        z = batch["actions"] - out["mean"]
        logp = onp.sum(-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi), -1)
        ent = onp.full(logp.shape, 2 * 0.5 * (1 + math.log(2 * math.pi)))
    m = batch["mask"]
    pg = reinforce_surrogate(logp, batch["advantages"], m)
    vf = onp.sum(m * (out["values"] - batch["returns"]) ** 2) / m.sum()
    expected = pg + 0.5 * vf - 0.01 * onp.sum(m * ent) / m.sum()
    assert hook.policy_loss(out, batch) == pytest.approx(expected, rel=1e-12)
    # masked steps are ignored even when they hold nan
    poisoned = dict(batch, advantages=onp.where(m > 0, batch["advantages"], onp.nan),
                    returns=onp.where(m > 0, batch["returns"], onp.nan))
    assert hook.policy_loss(out, poisoned) == pytest.approx(expected, rel=1e-12)
    # adapting on it: the policy loss goes down, the features feed the monitor
    mf = hook.observe(out, batch)
    assert mf.batch_size == 20 and adapter.tracker.count == 1
    adapter.cfg.max_steps_per_call = 10
    info = adapter.adapt(hook.policy_loss, batch)
    assert info["steps"] == 10 and info["losses"][-1] < info["losses"][0]


def test_meta_rl_hook_nan_logits_reach_the_guard():
    rng = onp.random.default_rng(0)
    policy = TinyPolicy(rng)
    adapter = create_adapter(policy, AdaptationConfig(lr=1e-2))
    batch = rl_batch(rng, True)
    batch["obs"] = batch["obs"] * onp.nan
    before = snapshot(adapter)
    info = adapter.adapt(MetaRLHook(adapter).policy_loss, batch)
    assert not info["updated"] and "refused" in info["reason"]
    assert_same_state(before, snapshot(adapter))


@pytest.mark.parametrize("discrete", [True, False])
def test_meta_rl_hook_with_ssm_meta_policy(discrete):
    rng = onp.random.default_rng(0)
    policy = SSMMetaPolicy(2, 3 if discrete else 2, discrete=discrete, state_dim=4,
                                      ssm_output_dim=3, hidden_sizes=(8,), rng=0)
    N, T = 3, 6
    batch = {"obs": rng.standard_normal((N, T, 2)),
             "actions": rng.integers(0, 3, (N, T)) if discrete else rng.standard_normal((N, T, 2)),
             "advantages": rng.standard_normal((N, T)), "returns": rng.standard_normal((N, T)),
             "mask": onp.ones((N, T))}
    cfg = AdaptationConfig(lr=1e-2, max_steps_per_call=5, allow_layers=r"^ssm\.", episodic=True)
    adapter = create_adapter(policy, cfg)
    assert adapter.trainable_names == ["ssm.A", "ssm.B", "ssm.C", "ssm.D"]
    hook = MetaRLHook(adapter)
    before = AD.copy_tree(policy.params)
    with adapter.context(policy):
        mf = hook.observe(policy(**batch), batch)
        assert mf.batch_size == N * T and adapter.tracker.count == 1
        info = adapter.adapt(hook.policy_loss, batch)
        assert info["steps"] == 5 and info["losses"][-1] < info["losses"][0]
        assert not tree_equal(policy.params["ssm"], before["ssm"])
        assert policy.params["pi"] is not None and tree_equal(policy.params["pi"], before["pi"])
        assert SSMHook(adapter).attach(policy).features(batch).shape == (N, T, 3)
    assert tree_equal(policy.params, before) and adapter.tracker.count == 0


# ---------------------------------------------------------------------------------------------
# The failure modes of docs/adaptation.md's table, one regression test each (the rest are above)
# ---------------------------------------------------------------------------------------------

def test_first_step_is_already_inside_the_trust_region():
    # failure mode: an anchor started after the first step leaves the first step unconstrained
    rng = onp.random.default_rng(0)
    model = LinearModel(rng)
    theta0 = AD.copy_tree(model.params)
    adapter = create_adapter(model, AdaptationConfig(lr=1.0, max_step_scale=0.0, ema_decay=0.5,
                                                     trust_region_eps=1e-3))
    assert adapter.anchor is None
    info = adapter.adapt(cross_entropy, make_batch(rng))
    assert info["updated"]
    for n in adapter.trainable_names:
        assert onp.linalg.norm(model.params[n] - theta0[n]) <= 1e-3 * (1 + 1e-12)
        assert info["trust_scale"][n] < 1.0


def test_step_bound_acts_on_the_adam_step_and_zero_tensors_move():
    # failure mode: a bound on the gradient (Adam undoes it), zero tensors that never move
    class Z:
        def __init__(self):
            self.params = {"zero": onp.zeros(4), "big": onp.full(4, 2.5)}

        def __call__(self, x):
            return {"mean": np.dot(x, self.params["zero"]) + np.dot(x, self.params["big"])}

    model = Z()
    s = 0.01
    adapter = create_adapter(model, AdaptationConfig(lr=10.0, max_step_scale=s))
    x = onp.array([1.0, -2.0, 3.0, 0.5])
    info = adapter.adapt(lambda o, b: (o["mean"] - 100.0) ** 2, x)
    assert info["updated"]
    dz = onp.linalg.norm(model.params["zero"])
    db = onp.linalg.norm(model.params["big"] - 2.5)
    assert dz > 0 and dz == pytest.approx(s * 1.0, rel=1e-12)          # max(||0||, 1) = 1
    assert db == pytest.approx(s * 5.0, rel=1e-12)                       # ||big|| = 5
    assert info["bound_scale"]["zero"] < 1 and info["bound_scale"]["big"] < 1


# ---------------------------------------------------------------------------------------------
# The example, at tiny sizes
# ---------------------------------------------------------------------------------------------

def test_tta_shift_example_smoke(capsys):
    from ssmref.experiments import tta_shift as demo
    variants = ["source", "norm", "tent", "eata", "tent-all-lr1e-2-anchor", "shot", "sar",
                "cotta", "ttt++-align", "t3a"]
    result = demo.run(seeds=(0,), shifts=["noise"], variants=variants,
                      n_train=96, train_steps=5, n_batches=2, batch_size=12, length=16)
    assert set(result["mean"]["noise"]) == set(variants)
    for v in ("shot", "cotta", "ttt++-align", "t3a"):
        assert result["per_seed"][0]["noise"][v]["steps_taken"] == 2, v
    for v, acc in result["mean"]["noise"].items():
        assert 0.0 <= acc <= 100.0, v
    assert result["per_seed"][0]["noise"]["tent"]["steps_taken"] == 2
    held_out, shifted = result["feature_shift"]["noise"]
    assert math.isfinite(held_out) and math.isfinite(shifted)
    assert "tent" in demo.format_table(result)

    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "tta_shift.py"
    spec = importlib.util.spec_from_file_location("tta_shift", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke"]) == 0
    assert "variant" in capsys.readouterr().out


@pytest.mark.parametrize("logits", [[[onp.inf, 1.0], [2.0, -onp.inf]], [[onp.nan, 1.0]],
                                    [[-onp.inf, -onp.inf]], [[onp.inf, onp.inf]]])
def test_monitor_statistics_of_non_finite_logits_are_nan_without_warnings(logits):
    """Found by the hypothesis test above (seed 26798974, poison inf): the statistics of
    non-finite outputs are nan, and computing them raises no floating-point warning."""
    entropy, confidence, variance, n, _ = MON.prediction_stats(onp.array(logits))
    assert math.isnan(entropy) and math.isnan(confidence) and math.isnan(variance)
