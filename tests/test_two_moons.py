"""The two-moons benchmark of TTT++ (``ssmref.experiments.two_moons``): its data, SHOT's
pseudo-labels and one short run."""

import numpy as onp
import pytest
from scipy.spatial.distance import cdist

from ssmref.experiments import two_moons as T


def test_target_is_the_source_rotated_and_translated():
    (xs, ys, a_s), (xt, yt, a_t) = T.sample(onp.random.RandomState(2021))
    assert xs.shape == xt.shape == (500, 2) and ys.sum() == 250
    assert onp.array_equal(ys, yt) and onp.array_equal(a_s, a_t)
    back = (xs - [1.0, -1.0]) @ T.rotation(-15.0)           # undo the source transform
    onp.testing.assert_allclose(xt, back @ T.rotation(35.0).T + [-1.0, 0.0], atol=1e-12)
    # the SSL label comes from a first draw of the same points (same order, other noise)
    assert 0.7 < onp.mean(a_s == ys) < 0.95


def test_shot_pseudo_labels_match_scipy_cosine_clustering():
    rng = onp.random.default_rng(0)
    f = onp.maximum(rng.standard_normal((50, 8)), 0.0)
    logits = T.two_class(rng.standard_normal((50, 1)))
    g = onp.concatenate([f, onp.ones((50, 1))], 1)
    g = g / onp.linalg.norm(g, axis=1, keepdims=True)
    aff = onp.exp(logits) / onp.exp(logits).sum(1, keepdims=True)
    for _ in range(2):
        c = aff.T @ g / (1e-8 + aff.sum(0)[:, None])
        labels = cdist(g, c, "cosine").argmin(1)
        aff = onp.eye(2)[labels]
    assert onp.array_equal(T.shot_pseudo_labels(f, logits), labels)


def test_every_method_adapts_without_the_main_head():
    source, target = T.sample(onp.random.RandomState(0), n=60)
    params = T.init_net(onp.random.default_rng(0))
    zs = T.net_forward(params, source[0])["features"]
    for m in T.METHODS:
        best, final, _, last = T.adapt_method(m, params, zs, target, steps=10)
        assert onp.array_equal(last["cls"]["W"], params["cls"]["W"])
        assert not onp.array_equal(last["enc1"]["W"], params["enc1"]["W"])
        assert best >= T.accuracy(params, target[0], target[1])


@pytest.mark.slow                                      # trains the network: about 15 s
def test_a_short_run_reproduces_the_source_only_accuracy():
    r = T.run_seed(2021, steps=10, methods=("ttt++", "shot"))
    assert r["source"] == T.PUBLISHED["source"] == 50.0
    assert r["iid"] > 80.0
    for m in ("ttt++", "shot"):
        assert r[m]["best"] >= r["source"]          # the best includes the start


def test_the_command_checks_its_options_before_any_work(capsys):
    from ssmref.cli import main
    assert main(["adapt", "--benchmark", "two-moons", "--steps", "2"]) == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.slow                                      # trains the network: about 15 s
def test_the_command_prints_the_table(capsys, tmp_path):
    from ssmref.cli import main
    assert main(["adapt", "--benchmark", "two-moons", "--smoke",
                 "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "published" in out and "ttt++" in out
