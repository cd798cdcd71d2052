"""The cross-check kit (ssmref.crosscheck): vectors, checker, exit codes, tolerances, API."""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import ssmref
from ssmref import crosscheck as X
from ssmref.crosscheck.families.ssm import build_vjp, compute_vjp
from ssmref import ssm as S
from ssmref.metarl.policy import PolicySpec

# Cheap cases (well under a second together); the long ones are written by one test only.
SMALL = ["ssm_scan", "ssm_step", "ssm_kernel", "ssm_scan_vjp", "discretize_zoh",
         "discretize_bilinear", "policy_categorical", "maml_metasgd", "adapter_tent"]


def write_results(results_dir, outputs_by_case):
    os.makedirs(results_dir, exist_ok=True)
    for name, outputs in outputs_by_case.items():
        np.savez(os.path.join(results_dir, f"{name}.npz"), **outputs)


def expected_outputs(vectors_dir):
    return {n: c["outputs"] for n, c in X.load_vectors(vectors_dir)["cases"].items()}


def load_all(vectors_dir, name):
    """``(inputs, expected outputs, attrs)`` of one case."""
    inputs, attrs = X.load_case(vectors_dir, name)
    return inputs, X.load_expected(vectors_dir, name), attrs


def run_check(argv, capsys):
    parser = X.add_check_arguments(argparse.ArgumentParser())
    rc = X.run_check(parser.parse_args([os.fspath(a) for a in argv]))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def small_vectors(tmp_path_factory):
    path = tmp_path_factory.mktemp("vectors")
    X.write_vectors(path, cases=SMALL)
    return path


# ---------------------------------------------------------------------------------------------
# Vectors: format, determinism, rounding
# ---------------------------------------------------------------------------------------------

def test_writing_twice_gives_identical_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    X.write_vectors(a, cases=SMALL)
    time.sleep(1.1)                        # a zip timestamp of "now" would differ
    X.write_vectors(b, cases=SMALL)
    files = sorted(os.listdir(a))
    assert files == sorted(os.listdir(b)) == sorted([f"{n}.npz" for n in SMALL] + ["manifest.json"])
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_manifest_keys_versions_and_the_contract_case(small_vectors):
    manifest = json.loads((small_vectors / "manifest.json").read_text())
    assert set(manifest) == {"spec_version", "ssmref_version", "dtype", "cases", "set_id"}
    assert manifest["spec_version"] == X.SPEC_VERSION == "1"
    assert manifest["ssmref_version"] == ssmref.__version__
    assert manifest["dtype"] == "float64"
    assert [c["name"] for c in manifest["cases"]] == SMALL
    for c in manifest["cases"]:
        assert set(c) == {"name", "file", "kind", "inputs", "outputs", "attrs", "sha256"}
        assert c["file"] == c["name"] + ".npz" and c["kind"] in X.KINDS
        assert c["sha256"] == hashlib.sha256((small_vectors / c["file"]).read_bytes()).hexdigest()
        with np.load(small_vectors / c["file"], allow_pickle=False) as z:     # plain NumPy
            assert sorted(z.files) == sorted(c["inputs"] + c["outputs"])
            for k in c["outputs"]:
                assert z[k].dtype == np.float64 and np.all(np.isfinite(z[k]))
    scan = manifest["cases"][0]
    assert scan["inputs"] == ["A", "B", "C", "D", "h0", "u"] and scan["outputs"] == ["h_last", "y"]
    with np.load(small_vectors / "ssm_scan.npz") as z:
        assert z["u"].shape == (3, 64, 2) and z["h0"].shape == (3, 8) and z["y"].shape == (3, 64, 3)
        y, h_last = S.ssm_scan({k: z[k] for k in "ABCD"}, z["u"], z["h0"])
        np.testing.assert_array_equal(z["y"], y)
        np.testing.assert_array_equal(z["h_last"], h_last)


def test_every_case_has_the_names_of_the_format(small_vectors):
    spec = {"ssm_step": (["A", "B", "C", "D", "h", "u"], ["h_next", "y"]),
            "ssm_kernel": (["A", "B", "C"], ["K"]),
            "ssm_scan_vjp": (["A", "B", "C", "D", "gh", "gy", "h0", "u"],
                             ["dA", "dB", "dC", "dD", "dh0", "du", "h_last", "y"]),
            "discretize_zoh": (["A", "B", "dt"], ["Ad", "Bd"])}
    cases = X.load_vectors(small_vectors)["cases"]
    for name, (inputs, outputs) in spec.items():
        assert sorted(cases[name]["inputs"]) == inputs and sorted(cases[name]["outputs"]) == outputs
    assert cases["ssm_kernel"]["attrs"]["length"] == 1000
    assert cases["ssm_kernel"]["outputs"]["K"].shape == (1000, 3, 2)
    pol = cases["policy_categorical"]
    assert pol["inputs"]["actions"].dtype == np.int64
    assert {"logits", "value", "log_prob", "grad.ssm.A", "grad.pi.layer0.W"} <= set(pol["outputs"])
    assert np.all(pol["outputs"]["grad.v.layer0.W"] == 0)          # log-prob ignores the value head
    assert PolicySpec.from_json(json.dumps(pol["attrs"]["spec"])).use_prev_action_reward
    sgd = cases["maml_metasgd"]
    assert "inner_lr" not in sgd["inputs"] and "lr.layer0.W" in sgd["inputs"]
    assert {"meta_loss", "meta_grad.layer0.W", "meta_grad_lr.layer0.W"} <= set(sgd["outputs"])
    assert sgd["outputs"]["meta_loss"].shape == ()
    tent = cases["adapter_tent"]
    assert tent["inputs"]["params.W"].shape == (4, 8)                 # (K, d): x W^T + b
    traj = tent["outputs"]
    assert traj["traj.W"].shape == (6, 4, 8) and traj["traj.b"].shape == (6, 4)
    assert list(traj["updated"]) == list(traj["steps"]) == [1.0] * 5
    assert "steps_per_batch" not in tent["attrs"]                     # max_steps_per_call governs


def test_every_attr_of_every_case_is_documented():
    """docs/crosscheck.md has a row for each (kind, attr) of the ssm, learning and mamba3
    families."""
    import re
    from ssmref.crosscheck.families import learning, mamba3, ssm
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "crosscheck.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("### Attributes of each kind")[1].split("\n## ")[0]
    documented = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and cells[2].strip().startswith("`"):
            kinds, attr = re.findall(r"`(\w+)`", cells[1]), cells[2].strip().strip("`")
            documented |= {(kind, attr) for kind in kinds}
    kinds = {k.name for k in ssm.KINDS + learning.KINDS + mamba3.KINDS}
    used = set()
    for case in X.CASES.values():
        if case.kind in kinds:
            _, attrs = case.build(np.random.default_rng(0))
            used |= {(case.kind, a) for a in attrs}
    assert used == documented


def test_maml_mlp_case_has_fast_weights_per_task(tmp_path):
    X.write_vectors(tmp_path, cases=["maml_mlp"])
    inputs, outputs, attrs = load_all(tmp_path, "maml_mlp")
    assert attrs["steps"] == 2 and inputs["inner_lr"].shape == ()
    assert outputs["fast.layer0.W"].shape == (4,) + inputs["params.layer0.W"].shape
    for k in ("meta_grad", "meta_grad_fo"):
        assert outputs[f"{k}.layer2.b"].shape == (1,)
    # second and first order differ (the Hessian terms are there)
    assert not np.allclose(outputs["meta_grad.layer0.W"], outputs["meta_grad_fo.layer0.W"])


@pytest.fixture(scope="module")
def maml_vectors(tmp_path_factory):
    path = tmp_path_factory.mktemp("maml_vectors")
    X.write_vectors(path, cases=["maml_scalar_lr", "maml_metasgd_broadcast", "maml_metasgd_steps3"])
    return path


def _maml_pieces(inputs):
    """``(params, rates, tasks, mse)`` of a maml case, with an MSE written here."""
    from ssmref.nn import mlp_apply
    from ssmref.params import unflatten_dict

    def mse(p, data):
        return anp.mean((mlp_apply(p, data[0], activation="tanh") - data[1]) ** 2)
    params = unflatten_dict({k[7:]: v for k, v in inputs.items() if k.startswith("params.")})
    rates = (float(inputs["inner_lr"]) if "inner_lr" in inputs else
             unflatten_dict({k[3:]: v for k, v in inputs.items() if k.startswith("lr.")}))
    tasks = [((inputs["support_x"][i], inputs["support_y"][i]),
              (inputs["query_x"][i], inputs["query_y"][i])) for i in range(4)]
    return params, rates, tasks, mse


def _first_order_rate_gradient(params, rates, tasks, mse, steps):
    """``−mean_i Σ_k ∇L_s(θ_k^i) ⊙ ∇L_q(θ_K^i)`` at full shape, by explicit loops."""
    from ssmref.params import flatten_dict, unflatten_dict
    flat_rates = flatten_dict(rates) if isinstance(rates, dict) else None
    total = {k: 0.0 for k in flatten_dict(params)}
    for support, query in tasks:
        theta, inner = flatten_dict(params), []
        for _ in range(steps):
            inner.append(flatten_dict(autograd.grad(mse)(unflatten_dict(theta), support)))
            theta = {k: v - (rates if flat_rates is None else flat_rates[k]) * inner[-1][k]
                     for k, v in theta.items()}
        gq = flatten_dict(autograd.grad(mse)(unflatten_dict(theta), query))
        for k in total:
            total[k] = total[k] - sum(g[k] for g in inner) * gq[k] / len(tasks)
    return total


def test_maml_scalar_rate_gradients_against_differences_and_the_fomaml_formula(maml_vectors):
    from ssmref.maml import meta_loss
    inputs, outputs, attrs = load_all(maml_vectors, "maml_scalar_lr")
    params, alpha, tasks, mse = _maml_pieces(inputs)
    assert attrs["steps"] == 2 and outputs["meta_grad_lr"].shape == ()
    h = 1e-6
    diff = (meta_loss(params, mse, tasks, inner_lr=alpha + h, steps=2)
            - meta_loss(params, mse, tasks, inner_lr=alpha - h, steps=2)) / (2 * h)
    assert abs(outputs["meta_grad_lr"] - diff) <= 1e-6 * abs(diff)
    fo = _first_order_rate_gradient(params, alpha, tasks, mse, 2)
    want = sum(np.sum(v) for v in fo.values())                  # a scalar rate: summed
    assert abs(outputs["meta_grad_fo_lr"] - want) <= 1e-12 * abs(want)
    assert abs(outputs["meta_grad_fo_lr"] - outputs["meta_grad_lr"]) > 1e-3 * abs(want)


def test_maml_broadcast_rates_give_the_full_shape_gradient_summed_over_broadcast_axes(
        maml_vectors):
    from ssmref.maml import meta_gradient
    from ssmref.params import flatten_dict, unflatten_dict
    inputs, outputs, _ = load_all(maml_vectors, "maml_metasgd_broadcast")
    params, rates, tasks, mse = _maml_pieces(inputs)
    flat_p, flat_r = flatten_dict(params), flatten_dict(rates)
    assert {k: np.shape(v) for k, v in flat_r.items() if np.shape(v) != flat_p[k].shape} == {
        "layer0.W": (), "layer1.W": (40, 1), "layer1.b": (1,), "layer2.W": (40,), "layer2.b": ()}
    full = unflatten_dict({k: np.broadcast_to(flat_r[k], flat_p[k].shape).copy() for k in flat_p})
    loss, (g_theta, g_lr) = meta_gradient(params, mse, tasks, inner_lr=full, wrt_inner_lr=True)
    assert outputs["meta_loss"] == pytest.approx(loss, rel=1e-14)
    for k, g in flatten_dict(g_lr).items():
        shape = np.shape(flat_r[k])
        axes = tuple(range(g.ndim - len(shape))) + tuple(
            g.ndim - len(shape) + i for i, n in enumerate(shape) if n == 1)
        want = np.sum(g, axis=axes).reshape(shape)
        np.testing.assert_allclose(outputs["meta_grad_lr." + k], want, rtol=1e-12,
                                   atol=1e-14 * np.max(np.abs(want)))


def test_metasgd_three_steps_first_order_gradients_by_explicit_loops(maml_vectors):
    from ssmref.maml import adapt
    from ssmref.params import flatten_dict
    inputs, outputs, attrs = load_all(maml_vectors, "maml_metasgd_steps3")
    params, rates, tasks, mse = _maml_pieces(inputs)
    assert attrs["steps"] == 3
    fo = _first_order_rate_gradient(params, rates, tasks, mse, 3)
    for k, want in fo.items():
        got = outputs["meta_grad_fo_lr." + k]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13 * np.max(np.abs(want)))
        assert not np.allclose(got, outputs["meta_grad_lr." + k])      # second order differs
    query_grads = [flatten_dict(autograd.grad(mse)(adapt(params, mse, s, inner_lr=rates, steps=3),
                                                   q)) for s, q in tasks]
    for k in fo:
        want = sum(g[k] for g in query_grads) / len(tasks)               # FOMAML: mean query grad
        np.testing.assert_allclose(outputs["meta_grad_fo." + k], want, rtol=1e-10,
                                   atol=1e-13 * np.max(np.abs(want)))


def test_adapter_case_engages_clipping_step_bound_trust_region_and_ema(small_vectors):
    inputs, outputs, attrs = load_all(small_vectors, "adapter_tent")
    out, infos = X.run_adapter_case(inputs, attrs)
    assert attrs["config"]["ema_decay"] > 0 and attrs["strategy"] == "tent"
    assert all(i["clip_coef"] < 1 for i in infos)
    assert any(min(i["bound_scale"].values()) < 1 for i in infos)
    assert any(min(i["trust_scale"].values()) < 1 for i in infos)
    np.testing.assert_array_equal(out["traj.W"], outputs["traj.W"])


def test_adapter_eata_case_selects_some_rows_runs_two_steps_per_call_and_skips_one_call(tmp_path):
    from ssmref.adaptation import AdaptationConfig, EATAStrategy
    X.write_vectors(tmp_path, cases=["adapter_eata"])
    inputs, outputs, attrs = load_all(tmp_path, "adapter_eata")
    assert attrs["strategy"] == "eata" and attrs["config"]["max_steps_per_call"] == 2
    _, infos = X.run_adapter_case(inputs, attrs)
    assert list(outputs["steps"]) == [2, 2, 2, 0, 2] and list(outputs["updated"]) == [1, 1, 1, 0, 1]
    assert infos[3]["reason"].startswith("skipped: eata: no reliable sample")
    traj = outputs["traj.W"]
    assert traj.shape == (6, 4, 8)                                       # per call, not per step
    np.testing.assert_array_equal(traj[4], traj[3])                      # the skipped call
    eata = EATAStrategy(AdaptationConfig(**attrs["config"]))
    for s in (0, 1, 2, 4):           # a mix of reliable and unreliable rows: the filter matters
        logits = inputs["x"][s] @ traj[s].T + outputs["traj.b"][s]
        mask, _, _ = eata.selection(logits)
        assert 0 < mask.sum() < mask.size, s


def test_adapter_guard_case_refuses_the_nan_batch_and_changes_nothing(tmp_path):
    X.write_vectors(tmp_path, cases=["adapter_guard"])
    inputs, outputs, attrs = load_all(tmp_path, "adapter_guard")
    assert np.isnan(inputs["x"][2]).sum() == 1 and np.isfinite(np.delete(inputs["x"], 2, 0)).all()
    _, infos = X.run_adapter_case(inputs, attrs)
    assert list(outputs["updated"]) == [1, 1, 0, 1, 1]
    assert infos[2]["reason"].startswith("refused: non-finite loss")
    for k in ("traj.W", "traj.b"):
        np.testing.assert_array_equal(outputs[k][3], outputs[k][2])      # nothing changed
        assert not np.array_equal(outputs[k][4], outputs[k][3])          # and it goes on
    assert any(min(i["trust_scale"].values()) < 1 for i in infos if i["updated"])


def test_float32_vectors_hold_rounded_inputs_and_outputs_computed_from_them(tmp_path):
    X.write_vectors(tmp_path, dtype="float32", cases=["ssm_scan"])
    assert json.loads((tmp_path / "manifest.json").read_text())["dtype"] == "float32"
    inputs, outputs, _ = load_all(tmp_path, "ssm_scan")
    for k, v in inputs.items():
        assert v.dtype == np.float64
        np.testing.assert_array_equal(v, v.astype(np.float32).astype(np.float64))
    y, _ = S.ssm_scan({k: inputs[k] for k in "ABCD"}, inputs["u"], inputs["h0"])
    np.testing.assert_array_equal(outputs["y"], y)
    raw, _, _ = X.build_case("ssm_scan", "float64")
    assert not np.array_equal(raw["A"], inputs["A"])                  # they were rounded


def test_round_to_dtype(rng):
    x = rng.standard_normal(1000) * 10.0 ** rng.integers(-4, 4, 1000)      # inside float16's range
    np.testing.assert_array_equal(X.round_to_dtype(x, "float32"), x.astype(np.float32))
    np.testing.assert_array_equal(X.round_to_dtype(x, "float16"), x.astype(np.float16))
    np.testing.assert_array_equal(X.round_to_dtype(x, "float64"), x)
    b = X.round_to_dtype(x, "bfloat16")
    np.testing.assert_array_equal(X.round_to_dtype(b, "bfloat16"), b)          # idempotent
    bits = b.astype(np.float32).view(np.uint32)
    assert np.all(bits & 0xFFFF == 0)                                         # 8 mantissa bits
    assert np.all(np.abs(b - x) <= 2.0 ** -8 * np.abs(x))                     # nearest: <= u |x|
    # ties to even, and the specials
    one = np.float32(1.0).view(np.uint32)
    tie_down = np.array([one + 0x8000], dtype=np.uint32).view(np.float32)     # 1 + 2^-8: to 1
    tie_up = np.array([one + 0x18000], dtype=np.uint32).view(np.float32)      # to 1 + 2^-6
    assert X.round_to_dtype(tie_down.astype(np.float64), "bfloat16")[0] == 1.0
    assert X.round_to_dtype(tie_up.astype(np.float64), "bfloat16")[0] == 1.0 + 2.0 ** -6
    special = X.round_to_dtype(np.array([np.inf, -np.inf, np.nan, 3.4e38, -0.0]), "bfloat16")
    assert special[0] == np.inf and special[1] == -np.inf and np.isnan(special[2])
    assert special[3] == np.inf and special[4] == 0.0                         # beyond max: inf
    np.testing.assert_array_equal(X.round_to_dtype(np.arange(5), "bfloat16"), np.arange(5))


def test_bfloat16_emulation_equals_torch(rng):
    torch = pytest.importorskip("torch")
    x32 = (rng.standard_normal(20000) * 10.0 ** rng.integers(-30, 30, 20000)).astype(np.float32)
    ties = (rng.integers(0, 2 ** 16, 2000, dtype=np.uint32) << 16 | 0x8000).astype(np.uint32)
    x32 = np.concatenate([x32, ties.view(np.float32), np.float32([np.inf, -np.inf, 3.4e38, 1e-40])])
    x32 = x32[~np.isnan(x32)]
    want = torch.from_numpy(x32).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(X.round_to_dtype(x32.astype(np.float64), "bfloat16"),
                                  want.astype(np.float64))
    x64 = rng.standard_normal(5000)                                   # float64 goes via float32
    want64 = torch.from_numpy(x64).to(torch.bfloat16).to(torch.float64).numpy()
    np.testing.assert_array_equal(X.round_to_dtype(x64, "bfloat16"), want64)


# ---------------------------------------------------------------------------------------------
# The references themselves
# ---------------------------------------------------------------------------------------------

def test_vjp_reference_via_convolution_equals_the_scan(rng):
    """Long VJP cases differentiate ssm_convolve; it must equal autograd through the recurrence."""
    inputs, _ = build_vjp(batch=2, T=300, n=6, m=2, p=3, rho=0.95)(rng)
    out = compute_vjp(inputs, {})                                  # T > 256: convolution

    def total(args):
        y, h = S.ssm_scan({k: args[k] for k in "ABCD"}, args["u"], args["h0"])
        return anp.sum(inputs["gy"] * y) + anp.sum(inputs["gh"] * h)

    g = autograd.grad(total)({k: inputs[k] for k in ("A", "B", "C", "D", "u", "h0")})
    for k in ("A", "B", "C", "D", "u", "h0"):
        scale = np.max(np.abs(g[k]))
        assert np.max(np.abs(out["d" + k] - g[k])) <= 1e-12 * scale, k


@pytest.mark.parametrize("form", ["sequential", "log_depth"])
def test_naive_float64_baselines_reproduce_the_reference(form, small_vectors):
    """The baseline computations are right: in float64 they agree with the reference."""
    with_form = {"sequential": ("ssm_scan", "ssm_step", "ssm_kernel", "ssm_scan_vjp", "discretize"),
                 "log_depth": ("ssm_scan", "ssm_kernel", "ssm_scan_vjp")}[form]
    for name, case in X.load_vectors(small_vectors)["cases"].items():
        naive = X.naive_outputs(case["kind"], case["inputs"], case["attrs"], "float64", form=form)
        if case["kind"] not in with_form:
            assert naive is None
            continue
        assert sorted(naive) == sorted(case["outputs"]), name
        for k, y in case["outputs"].items():
            assert np.max(np.abs(naive[k] - y)) <= 1e-12 * np.max(np.abs(y)), (name, k)
    with pytest.raises(ValueError, match="form"):
        X.naive_outputs("ssm_scan", {}, {}, "float64", form="parallel")


# ---------------------------------------------------------------------------------------------
# The checker: exit codes and diagnostics
# ---------------------------------------------------------------------------------------------

def test_the_reference_passes_its_own_check(small_vectors, tmp_path, capsys):
    write_results(tmp_path, expected_outputs(small_vectors))
    rc, out, err = run_check([small_vectors, tmp_path], capsys)
    assert rc == 0 and err == ""
    assert out.strip().splitlines()[-1].startswith("passed:")
    for name in SMALL:
        assert f"{name} [" in out
    rc, out, _ = run_check([small_vectors, tmp_path, "--mode", "baseline", "--dtype", "float32"],
                           capsys)
    assert rc == 0 and "no naive baseline for kind 'policy'" in out


def test_a_perturbed_output_fails_naming_case_output_and_timestep(small_vectors, tmp_path, capsys):
    outputs = expected_outputs(small_vectors)
    y = outputs["ssm_scan"]["y"].copy()
    y[1, 17, 2] += 1e-3 * np.max(np.abs(y))
    outputs["ssm_scan"] = dict(outputs["ssm_scan"], y=y)
    write_results(tmp_path, outputs)
    rc, out, err = run_check([small_vectors, tmp_path], capsys)
    assert rc == 1 and err == ""
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 1 and fails[0].startswith("FAIL ssm_scan/y:")
    assert "t=17 (1, 17, 2)" in fails[0] and "> tolerance" in fails[0]
    assert out.strip().splitlines()[-1].startswith("FAILED: 1 of")
    report = X.check(small_vectors, tmp_path, cases=["ssm_scan"])
    y_report = [o for o in report["cases"][0]["outputs"] if o["name"] == "y"][0]
    assert y_report["first_bad_step"] == 17 and y_report["first_bad"] == [1, 17, 2]
    assert y_report["max_rel"] == pytest.approx(1e-3)


def test_nan_and_inf_fail(small_vectors, tmp_path, capsys):
    outputs = expected_outputs(small_vectors)
    h = outputs["ssm_scan"]["h_last"].copy()
    h[0, 3] = np.nan
    K = outputs["ssm_kernel"]["K"].copy()
    K[5, 0, 0] = np.inf
    outputs["ssm_scan"] = dict(outputs["ssm_scan"], h_last=h)
    outputs["ssm_kernel"] = dict(K=K)
    write_results(tmp_path, outputs)
    rc, out, _ = run_check([small_vectors, tmp_path], capsys)
    assert rc == 1
    assert "FAIL ssm_scan/h_last" in out and "(1 NaN)" in out
    assert "FAIL ssm_kernel/K" in out and "k=5 (5, 0, 0)" in out and "(1 inf)" in out


def _copy_vectors(src, dst, edit=None):
    dst.mkdir()
    for f in os.listdir(src):
        (dst / f).write_bytes((src / f).read_bytes())
    if edit is not None:
        edit(dst / "manifest.json")
    return dst


def _break(kind, vectors, tmp_path):
    """``(vectors_dir, results_dir)`` made unusable in one way."""
    results = tmp_path / "results"
    if kind == "missing results dir":
        return vectors, tmp_path / "nope"
    write_results(results, expected_outputs(vectors))
    step = expected_outputs(vectors)["ssm_step"]
    if kind == "missing results file":
        os.remove(results / "ssm_step.npz")
    elif kind == "missing key":
        write_results(results, {"ssm_step": {"y": step["y"]}})
    elif kind == "wrong shape":
        write_results(results, {"ssm_step": {"y": step["y"][:, :1], "h_next": step["h_next"]}})
    elif kind == "not an npz":
        (results / "ssm_step.npz").write_text("hello")
    elif kind == "string array":
        write_results(results, {"ssm_step": {"y": np.array(["a"]), "h_next": step["h_next"]}})
    elif kind == "missing vectors dir":
        return tmp_path / "nope", results
    elif kind == "bad spec_version":
        def edit(path):
            m = json.loads(path.read_text())
            path.write_text(json.dumps(dict(m, spec_version="99")))
        return _copy_vectors(vectors, tmp_path / "v", edit), results
    elif kind == "manifest not JSON":
        return _copy_vectors(vectors, tmp_path / "v", lambda path: path.write_text("{no")), results
    elif kind == "vectors lack an output":
        v = _copy_vectors(vectors, tmp_path / "v")
        inputs, outputs, _ = load_all(vectors, "ssm_step")
        np.savez(v / "ssm_step.npz", **inputs, y=outputs["y"])
        return v, results
    return vectors, results


@pytest.mark.parametrize("kind", ["missing results dir", "missing results file", "missing key",
                                  "wrong shape", "not an npz", "string array",
                                  "missing vectors dir", "bad spec_version", "manifest not JSON",
                                  "vectors lack an output", "unknown case"])
def test_unusable_input_exits_2_with_one_line(kind, small_vectors, tmp_path, capsys):
    vectors, results = _break(kind, small_vectors, tmp_path)
    extra = ["--cases", "no_such_case"] if kind == "unknown case" else []
    rc, out, err = run_check([vectors, results, *extra], capsys)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ssmref check: error: ")
    if kind in ("missing key", "wrong shape", "missing results file"):
        assert "ssm_step" in err
    if kind == "wrong shape":
        assert "(4, 1)" in err and "(4, 2)" in err


def test_command_line_entry_point_exits_2_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ssmref.crosscheck", "check",
                          os.fspath(tmp_path / "a"), os.fspath(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "does not exist" in out.stderr


def test_vectors_command_refuses_unknown_cases(tmp_path, capsys):
    parser = X.add_vectors_arguments(argparse.ArgumentParser())
    assert X.run_vectors(parser.parse_args([os.fspath(tmp_path), "--cases", "nope"])) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope" in err
    assert X.run_vectors(parser.parse_args([os.fspath(tmp_path), "--cases", "ssm_step",
                                            "--dtype", "bfloat16"])) == 0
    assert "wrote 1 cases (bfloat16)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Tolerances: a correct float32 implementation passes, a wrong convention fails
# ---------------------------------------------------------------------------------------------

def numpy_float32_scan(x, old_state=False):
    """An independent float32 scan; ``old_state``: the wrong convention y_t = C h_{t-1} + D u_t."""
    A, B, C, D, u, h = (x[k].astype(np.float32) for k in ("A", "B", "C", "D", "u", "h0"))
    ys = []
    for t in range(u.shape[1]):
        h_prev, h = h, h @ A.T + u[:, t] @ B.T
        ys.append((h_prev if old_state else h) @ C.T + u[:, t] @ D.T)
    return {"y": np.stack(ys, axis=1), "h_last": h}


HARD = ["ssm_scan", "ssm_scan_T2049", "ssm_scan_rho0999", "ssm_scan_n64"]


@pytest.fixture(scope="module")
def float32_vectors(tmp_path_factory):
    path = tmp_path_factory.mktemp("vectors32")
    X.write_vectors(path, dtype="float32", cases=HARD)
    return path


@pytest.mark.parametrize("mode", ["table", "baseline"])
def test_a_correct_float32_scan_passes_and_the_old_state_convention_fails(
        mode, float32_vectors, tmp_path, capsys):
    cases = X.load_vectors(float32_vectors)["cases"]
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_results(good, {n: numpy_float32_scan(c["inputs"]) for n, c in cases.items()})
    write_results(bad, {n: numpy_float32_scan(c["inputs"], old_state=True)
                        for n, c in cases.items()})
    rc, out, _ = run_check([float32_vectors, good, "--mode", mode], capsys)
    assert rc == 0, out
    report = X.check(float32_vectors, good, mode=mode)
    worst = max(o["err_over_tol"] for c in report["cases"] for o in c["outputs"])
    assert worst < 0.2                                     # passes with a margin of 5 or more
    rc, out, _ = run_check([float32_vectors, bad, "--mode", mode], capsys)
    assert rc == 1
    for name in HARD:
        assert f"FAIL {name}/y:" in out and f"FAIL {name}/h_last" not in out
    assert "first at t=0 " in out


def numpy_float32_parallel_scan(x):
    """An associative scan in float32 (Hillis and Steele: ``s_t <- s_{t-d} . s_t`` for
    ``d = 1, 2, 4, ...``) of the affine maps ``h -> A h + B u_t``."""
    A, B, C, D, u, h0 = (x[k].astype(np.float32) for k in ("A", "B", "C", "D", "u", "h0"))
    T, n = u.shape[1], A.shape[0]
    v = np.moveaxis(u @ B.T, 1, 0)                               # (T, b, n)
    v = np.concatenate([(v[0] + h0 @ A.T)[None], v[1:]])
    M, d = np.broadcast_to(A, (T, n, n)), 1
    while d < T:
        M, v = (np.concatenate([M[:d], M[d:] @ M[:-d]]),
                np.concatenate([v[:d], v[:-d] @ np.swapaxes(M[d:], 1, 2) + v[d:]]))
        d *= 2
    H = np.moveaxis(v, 0, 1)                                      # (b, T, n)
    return {"y": H @ C.T + u @ D.T, "h_last": H[:, -1]}


def numpy_float32_fft_convolution(x):
    """``y = K * u + D u + C A^{t+1} h0`` in float32: ``K[k] = C A^k B`` by doubling, an FFT."""
    A, B, C, D, u, h0 = (x[k].astype(np.float32) for k in ("A", "B", "C", "D", "u", "h0"))
    T = u.shape[1]

    def powers(M, X0, length):                                  # [M^0 X0, M^1 X0, ...]
        S, P = X0[None], M
        while len(S) < length:
            S, P = np.concatenate([S, P @ S]), P @ P
        return S[:length]
    AkB = powers(A, B, T + 1)                                     # (T+1, n, m)
    N = 2 ** int(np.ceil(np.log2(2 * T)))
    K = C @ AkB[:T]                                               # (T, p, m)
    zf = np.einsum("fpm,bfm->bfp", np.fft.rfft(K, n=N, axis=0), np.fft.rfft(u, n=N, axis=1))
    CA = np.swapaxes(powers(A.T, A.T @ C.T, T), 1, 2)             # (T, p, n): C A^{t+1}
    y = np.fft.irfft(zf, n=N, axis=1)[:, :T] + u @ D.T + np.einsum("tpn,bn->btp", CA, h0)
    AT = powers(A, np.eye(len(A), dtype=np.float32), T + 1)[T]
    h_last = np.einsum("knm,bkm->bn", AkB[:T], u[:, ::-1]) + h0 @ AT.T
    return {"y": y.astype(np.float32), "h_last": h_last}


def test_baseline_mode_passes_log_depth_algorithms_at_rho_0999_with_margin(float32_vectors,
                                                                           tmp_path):
    """A correct float32 parallel scan and FFT convolution are ~10-25 times less accurate than
    the step loop at rho = 0.999 (their rounded powers of A are reused: errors add coherently);
    baseline mode's E_base, the larger of the step loop's and the log-depth scan's errors, lets
    them pass with a margin of 3 or more, and the old-state convention still fails."""
    name = "ssm_scan_rho0999"
    inputs = X.load_vectors(float32_vectors, [name])["cases"][name]["inputs"]
    for algorithm in (numpy_float32_parallel_scan, numpy_float32_fft_convolution):
        out = algorithm(inputs)
        assert out["y"].dtype == np.float32
        write_results(tmp_path / algorithm.__name__, {name: out})
        report = X.check(float32_vectors, tmp_path / algorithm.__name__, cases=[name],
                         mode="baseline")
        assert report["passed"] and report["cases"][0]["err_over_tol"] < 1 / 3, algorithm
        rows = {o["name"]: o for o in report["cases"][0]["outputs"]}
        assert rows["h_last"]["max_abs"] > 10 * rows["h_last"]["err_naive"]      # not the loop's
        assert rows["h_last"]["err_log_depth"] > 10 * rows["h_last"]["err_naive"]
        assert rows["h_last"]["err_base"] == rows["h_last"]["err_log_depth"]
    write_results(tmp_path / "old", {name: numpy_float32_scan(inputs, old_state=True)})
    report = X.check(float32_vectors, tmp_path / "old", cases=[name], mode="baseline")
    assert not report["passed"] and report["cases"][0]["err_over_tol"] > 1000


def test_tolerance_table_and_length_factor():
    assert X.tolerance("float32") == (1.3e-6, 1e-5)
    assert X.tolerance("float64", "grad") == (2e-7, 2e-7)
    assert X.length_factor(1) == X.length_factor(64) == 1.0
    assert X.length_factor(6400) == pytest.approx(10.0)
    assert X.tolerance("bfloat16", length=256)[1] == pytest.approx(0.1)
    A = np.diag([0.999, 0.5])
    assert X.effective_length("ssm_scan", {"A": A, "u": np.zeros((1, 64, 1))}, {}) == 64
    assert X.effective_length("ssm_scan", {"A": A, "u": np.zeros((1, 4096, 1))}, {}) \
        == pytest.approx(1000.0)
    assert X.effective_length("ssm_step", {"A": A}, {}) == 1.0
    with pytest.raises(ValueError, match="dtype"):
        X.tolerance("int8")


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------

def test_assert_close(rng):
    y = rng.standard_normal((2, 50, 3))
    X.assert_close(y.astype(np.float32), y, dtype="float32")
    X.assert_close(y + 5e-6 * np.max(np.abs(y)), y, dtype="float32")        # atol 1e-5 s
    with pytest.raises(AssertionError) as info:
        X.assert_close(y + 5e-5 * np.max(np.abs(y)), y, dtype="float32", name="my_y")
    assert "my_y" in str(info.value) and "FAIL" in str(info.value)
    X.assert_close(y + 5e-5 * np.max(np.abs(y)), y, dtype="float32", length=64 * 36)  # g = 6
    X.assert_close(y + 1.5e-5 * np.max(np.abs(y)), y, dtype="float32", kind="grad")
    bad = y.copy()
    bad[1, 30, 0] = np.nan
    with pytest.raises(AssertionError, match=r"t=30 \(1, 30, 0\)"):
        X.assert_close({"y": bad, "h_last": y[:, -1]}, {"y": y, "h_last": y[:, -1]},
                       dtype="float32", kind="ssm_scan")
    with pytest.raises(AssertionError, match="shape"):
        X.assert_close(y[0], y)
    with pytest.raises(ValueError, match="kind"):
        X.assert_close(y, y, kind="nonsense")


def test_assert_close_is_actual_first_and_assert_matches_is_deprecated():
    expected, actual = np.array([0.0, 1.0]), np.array([0.0, 1.5])
    # tol_i = rtol |expected_i|: 0.4 at index 1, below the error 0.5 (0.6 the other way round)
    with pytest.raises(AssertionError, match=r"got 1\.5, expected 1\.0"):
        X.assert_close(actual, expected, rtol=0.4, atol=0.0, power_limit=np.inf)
    X.assert_close(expected, actual, rtol=0.4, atol=0.0, power_limit=np.inf)
    # a tolerance of 40 % cannot detect a 1 % error: inconclusive, never a pass
    with pytest.raises(AssertionError, match=r"INCONCLUSIVE output/output.*below 0\.4"):
        X.assert_close(expected, actual, rtol=0.4, atol=0.0)
    with pytest.warns(DeprecationWarning, match=r"assert_close\(actual, expected\)"):
        with pytest.raises(AssertionError, match=r"got 1\.5, expected 1\.0"):
            X.assert_matches(expected, actual, rtol=0.4, atol=0.0)


def test_assert_case_matches_is_deprecated_but_works(small_vectors, tmp_path):
    inputs, expected, _ = load_all(small_vectors, "ssm_step")
    h_next = inputs["h"] @ inputs["A"].T + inputs["u"] @ inputs["B"].T
    mine = {"h_next": h_next, "y": h_next @ inputs["C"].T + inputs["u"] @ inputs["D"].T}
    with pytest.warns(DeprecationWarning, match="assert_case"):
        rep = X.assert_case_matches(small_vectors, mine, "ssm_step")
    assert rep["passed"] and rep["kind"] == "ssm_step"
    wrong = dict(mine, y=inputs["h"] @ inputs["C"].T + inputs["u"] @ inputs["D"].T)
    with pytest.warns(DeprecationWarning):
        with pytest.raises(AssertionError, match="ssm_step/y"):
            X.assert_case_matches(small_vectors, wrong, "ssm_step", "float32")
        with pytest.raises(AssertionError, match="missing"):
            X.assert_case_matches(small_vectors, {"y": mine["y"]}, "ssm_step")
        write_results(tmp_path, {"ssm_step": mine})
        assert X.assert_case_matches(small_vectors, tmp_path, "ssm_step")["passed"]


# ---------------------------------------------------------------------------------------------
# All cases: the performance targets
# ---------------------------------------------------------------------------------------------

def test_write_all_vectors_and_check_them_in_time(tmp_path):
    t0 = time.perf_counter()
    manifest = X.write_vectors(tmp_path / "v")
    t_write = time.perf_counter() - t0
    assert [c["name"] for c in manifest["cases"]] == list(X.CASES)
    write_results(tmp_path / "r", expected_outputs(tmp_path / "v"))
    t0 = time.perf_counter()
    report = X.check(tmp_path / "v", tmp_path / "r")
    t_check = time.perf_counter() - t0
    assert report["passed"]
    assert t_write < 30 and t_check < 5, (t_write, t_check)


# ---------------------------------------------------------------------------------------------
# Complex outputs: never cut to their real part
# ---------------------------------------------------------------------------------------------

def test_a_complex_result_for_a_real_output_is_unusable(small_vectors, tmp_path, capsys):
    expected = expected_outputs(small_vectors)
    write_results(tmp_path, {"ssm_step": {k: v + 0j for k, v in expected["ssm_step"].items()}})
    rc, out, err = run_check([small_vectors, tmp_path, "--cases", "ssm_step"], capsys)
    assert rc == 2 and "is complex" in err and "Traceback" not in err
    with pytest.raises(AssertionError, match="complex"):
        X.assert_close(expected["ssm_step"]["y"] + 0j, expected["ssm_step"]["y"])


def test_complex_outputs_compare_as_complex(rng):
    y = rng.standard_normal(50) + 1j * rng.standard_normal(50)
    X.assert_close(y + 1e-12, y)
    with pytest.raises(AssertionError, match="FAIL"):
        X.assert_close(y.real + 1j * (y.imag + 1e-3), y)          # a wrong imaginary part
    with pytest.raises(AssertionError, match="real"):
        X.assert_close(y.real, y)
    assert np.allclose(X.round_to_dtype(y, "float32"), y.astype(np.complex64), rtol=0, atol=0)


def test_skip_missing_checks_only_the_cases_with_results(small_vectors, tmp_path, capsys):
    expected = expected_outputs(small_vectors)
    write_results(tmp_path, {"ssm_step": expected["ssm_step"]})
    rc, out, err = run_check([small_vectors, tmp_path], capsys)
    assert rc == 2 and "has no results for 8 of 9 cases" in err and "--skip-missing" in err
    rc, out, err = run_check([small_vectors, tmp_path, "--skip-missing"], capsys)
    assert rc == 0 and "skipped 8 case(s) without results" in out
    report = X.check(small_vectors, tmp_path, skip_missing=True)
    assert [c["name"] for c in report["cases"]] == ["ssm_step"] and len(report["skipped"]) == 8


def test_a_failure_prints_enough_digits_to_see_it(small_vectors, tmp_path, capsys):
    expected = expected_outputs(small_vectors)
    bad = dict(expected["ssm_step"])
    bad["y"] = bad["y"] * (1 + 1e-6)
    write_results(tmp_path, {"ssm_step": bad})
    rc, out, err = run_check([small_vectors, tmp_path, "--cases", "ssm_step"], capsys)
    assert rc == 1
    line = next(l for l in out.splitlines() if l.startswith("FAIL ssm_step/y"))
    got, want = line.split("got ")[1].split(", expected ")
    assert got != want.split(",")[0]                     # the two numbers differ as printed
    assert "worst err_over_tol" in out
