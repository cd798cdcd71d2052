"""Parameter-tree utilities and safe persistence."""

import autograd
import autograd.numpy as np
import numpy as onp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssmref import params as P
from ssmref import storage
from ssmref.rng import as_rng


def tree(rng):
    return {"ssm": {"A": rng.standard_normal((3, 3)), "B": rng.standard_normal((3, 2))},
            "head": {"W": rng.standard_normal((2, 4)), "b": rng.standard_normal(2)},
            "log_std": rng.standard_normal(())}


def test_tree_map_and_structure_errors(rng):
    t = tree(rng)
    doubled = P.tree_map(lambda x, y: x + y, t, t)
    assert onp.array_equal(doubled["ssm"]["A"], 2 * t["ssm"]["A"])
    with pytest.raises(ValueError, match="structures differ at ssm"):
        P.tree_map(lambda x, y: x, t, {**t, "ssm": {"A": t["ssm"]["A"]}})
    with pytest.raises(ValueError, match="leaf vs dict"):
        P.tree_map(lambda x, y: x, t["ssm"]["A"], t)
    with pytest.raises(ValueError, match="without"):
        P.tree_map(lambda x: x, {"a.b": onp.zeros(1)})


def test_flatten_unflatten_round_trip(rng):
    t = tree(rng)
    flat = P.flatten_dict(t)
    assert list(flat) == ["head.W", "head.b", "log_std", "ssm.A", "ssm.B"]
    assert P.tree_allclose(P.unflatten_dict(flat), t, rtol=0)
    with pytest.raises(ValueError, match="leaf"):
        P.unflatten_dict({"a": 1.0, "a.b": 2.0})


def test_ravel_round_trip_and_gradient(rng):
    t = tree(rng)
    vec, unravel = P.ravel(t)
    assert vec.shape == (9 + 6 + 8 + 2 + 1,)
    assert P.tree_allclose(unravel(vec), t, rtol=0)
    # differentiable both ways: d/dv sum(unravel(v)^2) = 2 v
    g = autograd.grad(lambda v: P.global_norm(unravel(v)) ** 2)(vec)
    onp.testing.assert_allclose(g, 2 * vec, rtol=1e-14)


def test_works_on_autograd_dictboxes(rng):
    t = tree(rng)

    def f(params):
        assert not isinstance(params, dict)          # a DictBox while tracing
        return P.tree_vdot(params, params) + np.sum(P.ravel(params)[0])
    g = autograd.grad(f)(t)
    want = P.tree_map(lambda x: 2 * x + 1, t)
    assert P.tree_allclose(g, want, rtol=1e-14)


def test_global_norm_and_vdot(rng):
    t = tree(rng)
    vec, _ = P.ravel(t)
    assert onp.isclose(P.global_norm(t), onp.linalg.norm(vec), rtol=1e-14)
    assert onp.isclose(P.tree_vdot(t, t), vec @ vec, rtol=1e-14)


def test_tree_allclose(rng):
    t = tree(rng)
    assert P.tree_allclose(t, P.tree_copy(t), rtol=0)
    assert not P.tree_allclose(t, {"ssm": t["ssm"]})
    flat = P.flatten_dict(t)
    for name in flat:                              # any one leaf, one entry changed, is seen
        for delta, close in ((1e-3, False), (1e-12, True)):
            leaf = onp.array(flat[name], dtype=float)
            leaf.flat[-1] += delta * max(1.0, abs(leaf.flat[-1]))
            other = P.unflatten_dict({**flat, name: leaf})
            assert P.tree_allclose(t, other) is close, (name, delta)
            assert P.tree_allclose(other, t) is close, (name, delta)
        wrong_shape = P.unflatten_dict({**flat, name: onp.append(flat[name], 0.0)})
        assert not P.tree_allclose(t, wrong_shape), name


def test_tree_copy_does_not_alias(rng):
    t = tree(rng)
    c = P.tree_copy(t)
    assert all(not onp.shares_memory(a, b) for a, b in zip(P.tree_leaves(c), P.tree_leaves(t)))


@given(seed=st.integers(0, 2 ** 32 - 1))
def test_save_load_round_trip_bit_exact(seed, tmp_path_factory):
    rng = onp.random.default_rng(seed)
    t = tree(rng)
    path = tmp_path_factory.mktemp("npz") / "t.npz"
    storage.save_npz(path, t)
    flat = storage.load_npz(path, {k: v.shape for k, v in P.flatten_dict(t).items()})
    assert P.tree_allclose(P.unflatten_dict(flat), t, rtol=0, atol=0)


def test_load_validation(tmp_path):
    path = tmp_path / "x.npz"
    storage.save_npz(path, {"a": onp.zeros((2, 3)), "step": onp.array(3)})
    assert storage.load_npz(path, {"a": (2, 3), "step": ((), "i")})["step"] == 3
    with pytest.raises(ValueError, match=r"'a' has shape \(2, 3\), expected \(3, 2\)"):
        storage.load_npz(path, {"a": (3, 2), "step": ((), "i")})
    with pytest.raises(ValueError, match="missing arrays"):
        storage.load_npz(path, {"a": None, "b": None, "step": ((), "i")})
    with pytest.raises(ValueError, match="unexpected arrays"):
        storage.load_npz(path, {"a": None})
    assert set(storage.load_npz(path, {"a": None}, allow_extra=True)) == {"a", "step"}
    with pytest.raises(ValueError, match="dtype"):
        storage.load_npz(path, {"a": None, "step": None})
    with pytest.raises(ValueError, match="no such file"):
        storage.load_npz(tmp_path / "nope.npz")


def test_save_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="dtype object"):
        storage.save_npz(tmp_path / "x.npz", {"a": onp.array([None, 1], dtype=object)})
    assert not list(tmp_path.iterdir())


def test_as_rng():
    g = onp.random.default_rng(0)
    assert as_rng(g) is g
    assert as_rng(3).random() == onp.random.default_rng(3).random()
    for bad in ("3", 1.5, True):
        with pytest.raises(ValueError, match="rng"):
            as_rng(bad)


def test_checkpoint_round_trip_and_malformed_files(tmp_path):
    import json
    import pytest
    tree = {"a": onp.ones((2, 3)), "b": {"c": onp.zeros(4)}}
    shapes = lambda meta: {"a": (2, 3), "b.c": (meta["n"],)}  # noqa: E731
    storage.save_checkpoint(tmp_path / "ck.npz", {"params": tree, "m": tree}, {"n": 4, "note": "x"})
    meta, trees = storage.load_checkpoint(tmp_path / "ck.npz", ("params", "m"), shapes)
    assert meta == {"n": 4, "note": "x"} and P.tree_allclose(trees["m"], tree, rtol=0)
    with pytest.raises(ValueError, match="missing arrays"):
        storage.load_checkpoint(tmp_path / "ck.npz", ("params", "m", "v"), shapes)
    with pytest.raises(ValueError, match="unexpected arrays"):
        storage.load_checkpoint(tmp_path / "ck.npz", ("params",), shapes)
    with pytest.raises(ValueError, match="shape"):
        storage.load_checkpoint(tmp_path / "ck.npz", ("params", "m"),
                          lambda meta: {"a": (2, 3), "b.c": (5,)})
    with pytest.raises(ValueError, match="malformed metadata"):
        storage.load_checkpoint(tmp_path / "ck.npz", ("params", "m"), lambda meta: meta["missing"])
    storage.save_npz(tmp_path / "bad.npz", {"params.a": onp.ones((2, 3)),
                                      "meta_json": onp.frombuffer(b"{not json", dtype=onp.uint8)})
    with pytest.raises(ValueError, match="malformed metadata"):
        storage.load_checkpoint(tmp_path / "bad.npz", ("params",), shapes)
    storage.save_npz(tmp_path / "nometa.npz", {"params.a": onp.ones((2, 3))})
    with pytest.raises(ValueError, match="meta_json"):
        storage.load_checkpoint(tmp_path / "nometa.npz", ("params",), shapes)
    assert json.loads(json.dumps(meta)) == meta


def test_path_addressed_trees_allow_dotted_keys():
    W, b, A = onp.ones((2, 2)), onp.zeros(2), onp.eye(3)
    t = {"head.weight": W, "ssm": {"A": A}, "head.bias": b}
    leaves = P.tree_leaves_with_path(t, where="model.params")
    assert [q for q, _ in leaves] == [("head.bias",), ("head.weight",), ("ssm", "A")]
    assert leaves[1][1] is W
    out = P.tree_map_with_path(lambda q, v: q, t)
    assert out == {"head.weight": ("head.weight",), "ssm": {"A": ("ssm", "A")},
                   "head.bias": ("head.bias",)}
    assert list(out) == list(t) and out is not t and out["ssm"] is not t["ssm"]
    assert P.tree_map_with_path(lambda q, v: (q, v), 3.0) == ((), 3.0)
    with pytest.raises(ValueError, match=r"model.params keys must be non-empty strings, got 3 "
                                         r"under ssm"):
        P.tree_leaves_with_path({"ssm": {3: A}}, where="model.params")
    with pytest.raises(ValueError, match="must be a dict"):
        P.tree_leaves_with_path(A)
    seen = []
    autograd.grad(lambda x: seen.append(P.contains_box({"a": {"b.c": x}})) or x)(1.0)
    assert seen == [True] and not P.contains_box(t) and not P.contains_box(2.0)
