"""SHOT-IM, SAR, CoTTA, TTT, TTT++ and T3A against PyTorch float64 implementations of their updates.

Each test runs a few batches through ``create_adapter(model, cfg, name)`` and through a PyTorch
transcription of the method's official update (autograd's gradients against torch's), with
torch's ``clip_grad_norm_`` and ``torch.optim.Adam``; the step bound and the anchor are switched
off there and tested separately (``test_guarantees_hold_for_every_method``).
"""

import math

import autograd.numpy as np
import numpy as onp
import pytest

from ssmref.adaptation import (AdaptationConfig, CoTTAStrategy, SARStrategy, SkipStep,
                               T3AStrategy, TTTPlusPlusStrategy, available_strategies,
                               create_adapter)
from ssmref.adaptation.methods import gaussian_augment

torch = pytest.importorskip("torch")
F = torch.nn.functional

D, H, C, K, B, S = 3, 5, 3, 2, 12, 5


class Net:
    """z = tanh(x W1ᵀ + b1); logits = z Wᵀ + b; ssl_logits = z Vᵀ + c."""

    def __init__(self, rng):
        rng = onp.random.default_rng(rng)
        self.params = {"enc": {"W1": rng.standard_normal((H, D)), "b1": 0.1 * rng.standard_normal(H)},
                       "head": {"W": rng.standard_normal((C, H)), "b": 0.1 * rng.standard_normal(C)},
                       "ssl": {"W": rng.standard_normal((K, H)), "b": onp.zeros(K)}}

    def __call__(self, x, ssl_labels=None):
        p = self.params
        z = np.tanh(np.dot(x, p["enc"]["W1"].T) + p["enc"]["b1"])
        return {"logits": np.dot(z, p["head"]["W"].T) + p["head"]["b"], "features": z,
                "ssl_logits": np.dot(z, p["ssl"]["W"].T) + p["ssl"]["b"]}


NAMES = ["enc.W1", "enc.b1", "head.W", "head.b", "ssl.W", "ssl.b"]


def leaf(params, name):
    a, b = name.split(".")
    return params[a][b]


def torch_net(p, x):
    z = torch.tanh(x @ p["enc.W1"].T + p["enc.b1"])
    return z @ p["head.W"].T + p["head.b"], z @ p["ssl.W"].T + p["ssl.b"], z


def torch_params(model, names):
    return {n: torch.tensor(leaf(model.params, n), dtype=torch.float64, requires_grad=n in names)
            for n in NAMES}


def stream(seed=7):
    rng = onp.random.default_rng(seed)
    return [{"x": rng.standard_normal((B, D)) + 0.5, "ssl_labels": rng.integers(0, K, B)}
            for _ in range(S)]


def zero_loss(outputs, batch):
    return 0.0


def config(**kw):
    return AdaptationConfig(**dict(dict(lr=0.05, max_step_scale=0.0, grad_clip_norm=1.0,
                                        entropy_weight=1.0), **kw))


def torch_step(opt, params, names, grads):
    """Steps 3-4 in torch: clip_grad_norm_ (1.0) and Adam."""
    for n in names:
        params[n].grad = grads[n]
    torch.nn.utils.clip_grad_norm_([params[n] for n in names], 1.0)
    opt.step()
    opt.zero_grad()


def entropy(logits):
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def assert_same(model, params, names):
    for n in NAMES:
        onp.testing.assert_allclose(leaf(model.params, n), params[n].detach().numpy(),
                                    rtol=1e-10, atol=1e-12, err_msg=n)


def run_both(strategy, cfg, torch_update, names, *, data=None):
    """Run the adapter and ``torch_update(params, opt, batch)`` over the stream; compare."""
    model = Net(0)
    params = torch_params(model, names)
    opt = torch.optim.Adam([params[n] for n in names], lr=cfg.lr)
    adapter = create_adapter(model, cfg, strategy)
    assert adapter.trainable_names == names
    for batch in data or stream():
        adapter.adapt(zero_loss, batch)
        torch_update(params, opt, {k: torch.tensor(v) for k, v in batch.items()})
    assert_same(model, params, names)
    return adapter


def test_the_methods_are_registered():
    assert {"shot", "sar", "cotta", "ttt", "ttt++", "t3a"} <= set(available_strategies())


def test_shot_im_matches_torch():
    names = ["enc.W1", "enc.b1"]
    cfg = config(allow_layers=r"^enc\.")

    def update(p, opt, batch):
        logits, _, _ = torch_net(p, batch["x"])
        q = logits.softmax(1)
        mean_q = q.mean(0)
        loss = entropy(logits).mean() + (mean_q * torch.log(mean_q)).sum()
        torch_step(opt, p, names, dict(zip(names, torch.autograd.grad(loss, [p[n] for n in names]))))
    run_both("shot", cfg, update, names)


def sar_torch(margin, rho, reset_constant, state, names, source):
    """SAR's forward_and_adapt_sar and model recovery (sar.py), with Adam instead of SGD."""
    def update(p, opt, batch):
        logits, _, _ = torch_net(p, batch["x"])
        E0 = margin * math.log(C)
        ent = entropy(logits)
        ids1 = torch.where(ent < E0)
        g1 = torch.autograd.grad(ent[ids1].mean(0), [p[n] for n in names])
        norm = torch.norm(torch.stack([g.norm(p=2) for g in g1]), p=2)
        old = {n: p[n].detach().clone() for n in names}
        with torch.no_grad():
            for n, g in zip(names, g1):
                p[n].add_(g * (rho / (norm + 1e-12)))
        ent2 = entropy(torch_net(p, batch["x"])[0])[ids1]
        loss2 = ent2[torch.where(ent2 < E0)].mean(0)
        state["ema"] = loss2.item() if state["ema"] is None else 0.9 * state["ema"] + 0.1 * loss2.item()
        g2 = torch.autograd.grad(loss2, [p[n] for n in names])
        with torch.no_grad():
            for n in names:
                p[n].copy_(old[n])
        torch_step(opt, p, names, dict(zip(names, g2)))
        if state["ema"] < reset_constant:
            state["resets"] += 1
            with torch.no_grad():
                for n in names:
                    p[n].copy_(source[n])
            opt.state.clear()
    return update


def test_sar_matches_torch_with_recovery():
    names = NAMES[:4]
    state = {"ema": None, "resets": 0}
    model = Net(0)
    source = {n: torch.tensor(leaf(model.params, n)) for n in names}
    strategy = SARStrategy(config(), margin=0.8, reset_constant=0.82)
    cfg = config(allow_layers=r"^(enc|head)\.")
    adapter = run_both(strategy, cfg, sar_torch(0.8, 0.05, 0.82, state, names, source), names)
    assert 0 < state["resets"] == adapter.strategy.resets < S
    assert math.isclose(adapter.strategy.ema, state["ema"], rel_tol=1e-10)


def test_sar_skips_without_reliable_rows():
    sar = SARStrategy(config())
    with pytest.raises(SkipStep):
        sar.post_loss(0.0, onp.zeros((4, 3)), None)


def test_cotta_matches_torch():
    names = NAMES[:4]
    cfg = config(allow_layers=r"^(enc|head)\.")
    model = Net(0)
    source = {n: torch.tensor(leaf(model.params, n)) for n in NAMES}
    teacher = {n: v.clone() for n, v in source.items()}
    rng = onp.random.default_rng(3)
    augmented = []

    def update(p, opt, batch):
        x = batch["x"].numpy()
        anchor_prob = torch_net(source, batch["x"])[0].softmax(1).max(1)[0]
        if anchor_prob.mean(0) < 0.92:
            outs = [torch_net(teacher, torch.tensor(gaussian_augment({"x": x}, rng, 0.05)["x"]))[0]
                    for _ in range(32)]
            target = torch.stack(outs).mean(0)
            augmented.append(True)
        else:
            target = torch_net(teacher, batch["x"])[0]
        logits = torch_net(p, batch["x"])[0]
        loss = (-(target.softmax(1) * logits.log_softmax(1)).sum(1)).mean(0)
        torch_step(opt, p, names, dict(zip(names, torch.autograd.grad(loss, [p[n] for n in names]))))
        with torch.no_grad():
            for n in names:                                      # teacher after the student
                teacher[n] = 0.999 * teacher[n] + 0.001 * p[n].detach()
            for n in sorted(names, key=lambda n: NAMES.index(n)):
                mask = torch.tensor(rng.random(p[n].shape) < 0.01)
                p[n].copy_(torch.where(mask, source[n], p[n]))

    data = [dict(b, x=b["x"] * 0.3) for b in stream()]
    adapter = run_both(CoTTAStrategy(cfg, restore_prob=0.01, seed=3), cfg, update, names, data=data)
    assert augmented and len(augmented) == S
    for i, n in enumerate(names):
        onp.testing.assert_allclose(adapter.strategy.teacher[f"t{i:05d}"], teacher[n].numpy(),
                                    rtol=1e-10, atol=1e-12)


def test_cotta_restore_returns_elements_to_the_source():
    cfg = config(lr=0.5)
    model = Net(0)
    ad = create_adapter(model, cfg, CoTTAStrategy(cfg, restore_prob=0.5, seed=0))
    before = leaf(model.params, "enc.W1").copy()
    ad.adapt(zero_loss, stream()[0])
    after = leaf(model.params, "enc.W1")
    same = after == before
    assert 0 < same.sum() < same.size                 # about half restored exactly, half moved


@pytest.mark.parametrize("plus", [False, True])
def test_ttt_and_ttt_plus_plus_match_torch(plus):
    names = ["enc.W1", "enc.b1"]
    cfg = config(allow_layers=r"^enc\.")
    src = onp.random.default_rng(5).standard_normal((40, H)) * 0.5
    mu, cov = torch.tensor(src.mean(0)), torch.tensor(onp.cov(src.T))
    queue = []

    def update(p, opt, batch):
        _, ssl, z = torch_net(p, batch["x"])
        loss = F.cross_entropy(ssl, batch["ssl_labels"])
        if plus:
            feats = torch.cat([z] + queue[-2:][::-1]) if len(queue) >= 2 else z
            n, d = feats.shape
            tmp = torch.ones((1, n), dtype=torch.float64) @ feats
            c = (feats.t() @ feats - (tmp.t() @ tmp) / n) / (n - 1)
            loss = loss + 0.1 * (feats.mean(0) - mu).pow(2).mean() + (c - cov).pow(2).sum() / (4 * d * d)
            queue.append(z.detach())
        torch_step(opt, p, names, dict(zip(names, torch.autograd.grad(loss, [p[n] for n in names]))))

    strategy = TTTPlusPlusStrategy(cfg, queue_size=2 * B, source_features=src) if plus else "ttt"
    run_both(strategy, cfg, update, names)


def test_t3a_matches_torch_and_filters_by_entropy():
    cfg = AdaptationConfig(allow_layers=r"^head\.")
    M = 4
    model = Net(0)
    W0 = torch.tensor(leaf(model.params, "head.W"))
    b0 = torch.tensor(leaf(model.params, "head.b"))
    warm = W0 @ W0.T + b0
    supports, labels, ent = W0.clone(), F.one_hot(warm.argmax(1), C).double(), entropy(warm)
    adapter = create_adapter(model, cfg, T3AStrategy(cfg, filter_k=M))
    for batch in stream():
        info = adapter.adapt(None, batch)
        _, _, z = torch_net({n: torch.tensor(leaf(Net(0).params, n)) for n in NAMES},
                            torch.tensor(batch["x"]))
        p = z @ W0.T + b0
        supports = torch.cat([supports, z])
        labels = torch.cat([labels, F.one_hot(p.argmax(1), C).double()])
        ent = torch.cat([ent, entropy(p)])
        y_hat, idx_all = labels.argmax(1), torch.arange(len(ent))
        keep = torch.cat([idx_all[y_hat == c][torch.sort(ent[y_hat == c], stable=True)[1]][:M]
                          for c in range(C)])
        supports, labels, ent = supports[keep], labels[keep], ent[keep]
        weights = F.normalize(supports, dim=1).T @ labels
        expected = z @ F.normalize(weights, dim=0)
        onp.testing.assert_allclose(info["logits"], expected.numpy(), rtol=1e-10, atol=1e-12)
        onp.testing.assert_allclose(leaf(model.params, "head.W"),
                                    F.normalize(weights, dim=0).T.numpy(), rtol=1e-10, atol=1e-12)
        assert info["num_supports"] <= C * M
    assert onp.all(leaf(model.params, "head.b") == 0.0)
    assert onp.all(leaf(model.params, "enc.W1") == leaf(Net(0).params, "enc.W1"))


def test_t3a_refuses_non_finite_features_and_restores_episodically():
    model = Net(0)
    ad = create_adapter(model, AdaptationConfig(allow_layers=r"^head\.", episodic=True), "t3a")
    W = leaf(model.params, "head.W").copy()
    with ad.context():
        ad.adapt(None, stream()[0])
        n = len(ad.strategy.labels)
        bad = ad.adapt(None, {"x": onp.full((B, D), onp.nan)})
        assert not bad["updated"] and len(ad.strategy.labels) == n
    assert onp.array_equal(leaf(model.params, "head.W"), W) and len(ad.strategy.labels) == C
    with pytest.raises(ValueError, match="t3a"):
        create_adapter(Net(0), AdaptationConfig(), "t3a")


@pytest.mark.parametrize("name", ["shot", "sar", "cotta", "ttt"])
def test_guarantees_hold_for_every_method(name):
    """Steps 5 and 7 bound every accepted gradient step (resets and restores are not steps: the
    test uses settings without them), and a nan batch changes nothing."""
    cfg = AdaptationConfig(lr=0.5, max_step_scale=0.02, ema_decay=0.5, trust_region_eps=0.05,
                           entropy_weight=1.0)
    strategy = {"sar": lambda: SARStrategy(cfg, margin=1.0, reset_constant=-1.0),
                "cotta": lambda: CoTTAStrategy(cfg, restore_prob=0.0)}.get(name, lambda: name)()
    model = Net(1)
    ad = create_adapter(model, cfg, strategy)
    for batch in stream():
        before = ad.trainable_params()
        info = ad.adapt(zero_loss, batch)
        after = ad.trainable_params()
        anchor = ad.anchor
        for n in before:
            if info["updated"]:
                assert onp.linalg.norm(after[n] - before[n]) <= 0.02 * max(
                    onp.linalg.norm(before[n]), 1) + 1e-12
                assert onp.linalg.norm(after[n] - anchor[n]) <= 0.05 + 1e-12
    before = ad.trainable_params()
    info = ad.adapt(zero_loss, dict(stream()[0], x=onp.full((B, D), onp.nan)))
    assert not info["updated"]
    assert all(onp.array_equal(before[n], v) for n, v in ad.trainable_params().items())


def test_episodic_contexts_restore_the_strategies_state():
    """SAR's entropy average, CoTTA's teacher and generator, TTT++'s queue come back on exit."""
    src = onp.random.default_rng(5).standard_normal((40, H))
    for make in (lambda c: SARStrategy(c, margin=1.0), lambda c: CoTTAStrategy(c),
                 lambda c: TTTPlusPlusStrategy(c, queue_size=B, source_features=src)):
        cfg = config(episodic=True)
        ad = create_adapter(Net(0), cfg, make(cfg))
        ad.adapt(zero_loss, stream()[0])
        before = {k: v for k, v in vars(ad.strategy).items() if k != "rng"}
        draw = ad.strategy.rng.random() if hasattr(ad.strategy, "rng") else None
        with ad.context():
            ad.adapt(zero_loss, stream()[1])
            ad.adapt(zero_loss, stream()[2])
        after = vars(ad.strategy)
        assert ad.strategy.cfg is cfg
        for k, v in before.items():
            if isinstance(v, dict):
                assert all(onp.array_equal(v[j], after[k][j]) for j in v), k
            elif isinstance(v, onp.ndarray):
                assert onp.array_equal(v, after[k]), k
            elif k != "cfg":
                assert v == after[k] or (v is None and after[k] is None), k
        if draw is not None:                       # the generator was restored too
            ad2 = create_adapter(Net(0), cfg, make(cfg))
            ad2.adapt(zero_loss, stream()[0])
            ad2.strategy.rng.random()
            assert ad.strategy.rng.random() == ad2.strategy.rng.random()


def test_a_strategy_with_post_loss_only_still_works():
    """The registry accepts any builder whose result has post_loss; the hooks are optional."""
    class Bare:
        def post_loss(self, loss, outputs, batch):
            return loss + np.mean(outputs["logits"] ** 2)

    from ssmref.adaptation import register_adaptation_strategy, unregister_adaptation_strategy
    register_adaptation_strategy("bare-test", lambda cfg: Bare())
    try:
        ad = create_adapter(Net(0), AdaptationConfig(lr=1e-2, episodic=True), "bare-test")
        with ad.context():
            assert ad.adapt(zero_loss, stream()[0])["updated"]
    finally:
        unregister_adaptation_strategy("bare-test")
