"""The selective family of the cross-check kit (ssmref.crosscheck.families.selective): what the
cases cover, the naive baselines, the gradient convention, the effective length from the actual
decay, and the decode case with a bfloat16 state cache (the rounding order, baseline mode)."""

import json
import os

import numpy as np
import pytest

from ssmref import crosscheck as X
from ssmref.crosscheck.families import selective as S
from ssmref.crosscheck.families.selective_inputs import (MARGIN, _boundary_distance,
                                                         decode_step_reference)
from ssmref.selective import selective_scan, selective_state_update, ssd

SELECTIVE = [c.name for c in S.CASES]
DECODE = "selective_decode_bf16_state"


@pytest.fixture(scope="module")
def vec64(tmp_path_factory):
    path = tmp_path_factory.mktemp("selective64")
    X.write_vectors(path, cases=SELECTIVE)
    return path


@pytest.fixture(scope="module")
def cases64(vec64):
    return X.load_vectors(vec64)["cases"]


def write_results(path, outputs_by_case):
    os.makedirs(path, exist_ok=True)
    for name, outputs in outputs_by_case.items():
        np.savez(os.path.join(path, f"{name}.npz"), **outputs)


# ---------------------------------------------------------------------------------------------
# The cases: what breaks kernels is there
# ---------------------------------------------------------------------------------------------

def test_the_cases_hit_what_breaks_kernels(cases64):
    def where(kind, pred):
        return [n for n, c in cases64.items()
                if c["kind"] == kind and pred(c["inputs"], c["attrs"])]

    scans = ("selective_scan", "selective_scan_vjp")
    length = {n: X.effective_length(c["kind"], c["inputs"], c["attrs"]) for n, c in cases64.items()}
    # L = 1, L past 2048 and not a multiple of it, L not a multiple of the SSD chunk
    assert where("selective_scan", lambda x, a: x["u"].shape[2] == 1)
    assert where("ssd", lambda x, a: x["x"].shape[1] == 1)
    assert where("selective_scan", lambda x, a: x["u"].shape[2] > 2048 and x["u"].shape[2] % 2048)
    assert all(c["inputs"]["x"].shape[1] % c["attrs"]["chunk_size"] for c in cases64.values()
               if c["kind"].startswith("ssd") and c["inputs"]["x"].shape[1] > 1)
    # small Δ: memories of thousands of steps, in the scan, its gradients and SSD
    assert max(length[n] for n in cases64 if cases64[n]["kind"] == "selective_scan") > 2000
    assert max(length[n] for n in cases64 if cases64[n]["kind"] == "selective_scan_vjp") > 1000
    assert max(length[n] for n in cases64 if cases64[n]["kind"] == "ssd") > 1000
    # grouped B / C, complex A with complex and interleaved B / C, z gating, softplus near 20
    for kind in scans:
        assert where(kind, lambda x, a: x["B"].ndim == 4 or x["C"].ndim == 4)
    assert where("selective_scan", lambda x, a: np.iscomplexobj(x["A"]) and np.iscomplexobj(x["B"]))
    assert where("selective_scan", lambda x, a: np.iscomplexobj(x["A"])
                 and not np.iscomplexobj(x["C"]) and x["C"].shape[-1] == 2 * x["u"].shape[2])
    assert where("selective_scan_vjp",
                 lambda x, a: np.iscomplexobj(x["A"]) and np.iscomplexobj(x["B"]))
    assert where("selective_scan", lambda x, a: "z" in x and "D" in x)
    near = where("selective_scan", lambda x, a: a["delta_softplus"] and np.all(
        np.abs(x["delta"] + x["delta_bias"][:, None] - 20) < 6))
    assert near and length[near[0]] < 1.001                 # Δ ≈ 20: every step forgets
    # seq_idx changing inside a chunk, initial states, ngroups > 1, heads in decoding
    def inside_chunk(x, a):
        idx = x.get("seq_idx")
        if idx is None:
            return False
        t = np.nonzero(np.diff(idx, axis=1))[1] + 1
        return bool(np.any(t % a["chunk_size"]))
    assert where("ssd", inside_chunk) and where("ssd_vjp", inside_chunk)
    assert where("ssd", lambda x, a: "initial_states" in x and x["B"].shape[2] > 1)
    assert where("selective_state_update",
                 lambda x, a: x["state"].ndim == 4 and x["B"].shape[1] > 1)
    assert where("selective_decode",
                 lambda x, a: x["state"].ndim == 4 and a["state_dtype"] == "bfloat16")


def test_naive_float64_baselines_reproduce_the_references(cases64):
    for name, case in cases64.items():
        naive = X.naive_outputs(case["kind"], case["inputs"], case["attrs"], "float64")
        assert sorted(naive) == sorted(case["outputs"]), name
        for k, y in case["outputs"].items():
            assert naive[k].dtype == y.dtype, (name, k)
            assert np.max(np.abs(naive[k] - y)) <= 1e-13 * np.max(np.abs(y)), (name, k)


def test_vjp_outputs_follow_the_autograd_convention_by_central_differences(cases64):
    """``dA`` of a complex A is ``∂L/∂Re − i ∂L/∂Im`` of
    ``L = Σ gout·out + Σ Re(conj(glast) last)``; real ones (SSD's ``ddt_bias``) plain derivatives."""
    case = cases64["selective_scan_vjp_complex"]
    x, att = case["inputs"], case["attrs"]

    def loss(A):
        out, last = selective_scan(x["u"], x["delta"], A, x["B"], x["C"], x["D"], x["z"],
                                   x["delta_bias"], att["delta_softplus"], True)
        return np.sum(x["gout"] * out) + np.sum(np.real(np.conj(x["glast"]) * last))

    e, h = np.zeros(x["A"].shape), 1e-6
    e[3, 2] = h
    d_re = (loss(x["A"] + e) - loss(x["A"] - e)) / (2 * h)
    d_im = (loss(x["A"] + 1j * e) - loss(x["A"] - 1j * e)) / (2 * h)
    assert np.isclose(case["outputs"]["dA"][3, 2], d_re - 1j * d_im, rtol=1e-6)

    case = cases64["ssd_vjp"]
    x, att = case["inputs"], case["attrs"]

    def loss_ssd(bias):
        out, final = ssd(x["x"], x["dt"], x["A"], x["B"], x["C"], att["chunk_size"], x["D"],
                         x["z"], bias, x["initial_states"], x["seq_idx"], True,
                         return_final_states=True)
        return np.sum(x["gout"] * out) + np.sum(x["gfinal"] * final)

    e = np.zeros(x["dt_bias"].shape)
    e[1] = 1e-6
    fd = (loss_ssd(x["dt_bias"] + e) - loss_ssd(x["dt_bias"] - e)) / 2e-6
    assert np.isclose(case["outputs"]["ddt_bias"][1], fd, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Effective length: from the decay of the case
# ---------------------------------------------------------------------------------------------

def test_memory_is_the_sum_of_the_decay_products():
    rho, T = 0.999, 5000
    log_a = np.full((T, 1), np.log(rho))
    assert np.isclose(S.memory(log_a), (1 - rho ** T) / (1 - rho), rtol=1e-9)
    assert S.memory(np.zeros((T, 3))) == T                          # no decay: every step counts
    assert S.memory(np.full((T, 1), 0.01)) == T                     # growth: capped at T
    keep = np.ones((T, 1))
    keep[::100] = 0                                                 # a restart every 100 steps
    assert np.isclose(S.memory(log_a, keep), (1 - rho ** 100) / (1 - rho), rtol=1e-9)
    # one skipped token (Δ = 0, decay 1) in a fast-forgetting sequence: the bound from the largest
    # one-step decay says T, the actual decay says ~2 more steps
    log_a = np.full((T, 1), np.log(0.5))
    log_a[2500] = 0.0
    assert np.exp(log_a.max()) == 1.0 and S.memory(log_a) < 4


def test_effective_length_of_a_scan_uses_delta_and_the_real_part_of_A(cases64):
    case = cases64["selective_scan_complex"]
    x = case["inputs"]
    dt = np.logaddexp(0, x["delta"] + x["delta_bias"][:, None])            # (b, d, L)
    log_a = np.moveaxis(dt, 2, 0)[..., None] * x["A"].real                 # (L, b, d, n)
    assert X.effective_length("selective_scan", x, case["attrs"]) == S.memory(log_a)
    # a step ten times smaller: about ten times the memory (capped at T)
    slow = dict(x, delta_bias=x["delta_bias"] - np.log(10.0), delta=0 * x["delta"])
    L_slow = X.effective_length("selective_scan", slow, case["attrs"])
    assert X.effective_length("selective_scan", x, case["attrs"]) < L_slow <= x["u"].shape[2]


# ---------------------------------------------------------------------------------------------
# The decode case: a bfloat16 state cache, out read before the rounding
# ---------------------------------------------------------------------------------------------

def decode_float32(x, attrs, round_first):
    """The decode case in float32 NumPy, the state cache in bfloat16; ``round_first``: the bug,
    ``out`` read from the state after rounding it."""
    f = np.float32
    v = {k: a.astype(f) for k, a in x.items()}
    s, h, g = v["state"], v["state"].shape[1], v["B"].shape[2]
    outs, states = [], []
    for t in range(v["x"].shape[0]):
        delta = np.logaddexp(f(0), v["dt"][t] + v["dt_bias"])               # (b, h, p)
        Bh, Ch = (np.repeat(v[k][t], h // g, axis=1)[:, :, None] for k in ("B", "C"))
        new = np.exp(delta[..., None] * v["A"]) * s + (delta * v["x"][t])[..., None] * Bh
        stored = X.round_to_dtype(new, "bfloat16").astype(f)
        read = stored if round_first else new
        z = v["z"][t]
        outs.append(((read * Ch).sum(-1) + v["D"] * v["x"][t]) * z / (1 + np.exp(-z)))
        states.append(stored)
        s = stored
    return {"out": np.stack(outs), "states": np.stack(states)}


def test_decode_inputs_are_the_same_in_every_dtype_with_margins(tmp_path):
    built = [X.build_case(DECODE, dt) for dt in X.DTYPES]
    for inputs, outputs, attrs in built[1:]:
        for k in inputs:
            assert np.array_equal(inputs[k], built[0][0][k]), k
        for k in outputs:
            assert np.array_equal(outputs[k], built[0][1][k]), k
    inputs, outputs, attrs = built[0]
    # every stored state is a bfloat16 number, and its unrounded value was far from a rounding jump
    assert np.array_equal(X.round_to_dtype(outputs["states"], "bfloat16"), outputs["states"])
    before = [inputs["state"]] + list(outputs["states"][:-1])
    for t, state in enumerate(before):
        x = {k: (v[t] if k in ("x", "dt", "B", "C", "z") else v) for k, v in inputs.items()}
        _, new, terms = decode_step_reference(state, x["x"], x["dt"], x["A"], x["B"], x["C"],
                                              x["D"], x["z"], x["dt_bias"])
        _, ref = selective_state_update(state, x["x"], x["dt"], x["A"], x["B"], x["C"], x["D"],
                                        x["z"], x["dt_bias"], True)
        assert np.allclose(new, ref, rtol=1e-14, atol=1e-14)
        assert np.all(_boundary_distance(new, "bfloat16") > MARGIN * terms)


def test_rounding_order_bug_fails_float32_and_hides_in_bfloat16(cases64, vec64, tmp_path):
    case = cases64[DECODE]
    x, att, want = case["inputs"], case["attrs"], case["outputs"]
    right, wrong = decode_float32(x, att, False), decode_float32(x, att, True)
    assert np.array_equal(right["states"], want["states"])     # bit-identical bfloat16 states
    scale = np.max(np.abs(want["out"]))
    assert np.max(np.abs(right["out"] - want["out"])) < 1e-6 * scale
    assert np.max(np.abs(wrong["out"] - want["out"])) > 2e-4 * scale
    write_results(tmp_path / "right", {DECODE: right})
    write_results(tmp_path / "wrong", {DECODE: wrong})
    reports = {(r, dt, m): X.check(vec64, tmp_path / r, dtype=dt, mode=m, cases=[DECODE])
               for r in ("right", "wrong") for dt in ("float32", "bfloat16")
               for m in ("table", "baseline")}
    verdict = {key: rep["within_tolerance"] for key, rep in reports.items()}
    # held to 1 %, bfloat16's tolerances are too weak: never a pass, inconclusive
    strict = X.check(vec64, tmp_path / "wrong", dtype="bfloat16", cases=[DECODE], power_limit=0.01)
    assert strict["within_tolerance"] and strict["inconclusive"] and not strict["passed"]
    assert all(verdict[("right", dt, m)]
               for dt in ("float32", "bfloat16") for m in ("table", "baseline"))
    assert not verdict[("wrong", "float32", "table")] and not verdict[("wrong", "float32", "baseline")]
    assert verdict[("wrong", "bfloat16", "table")]              # bfloat16 tolerances cannot see it


def test_baseline_mode_needs_the_state_dtype(cases64):
    """The naive float32 decode keeps the case's bfloat16 cache; without it, its error would be
    the cache's rounding and would let the wrong order through."""
    case = cases64[DECODE]
    x, att, want = case["inputs"], case["attrs"], case["outputs"]
    emulated = X.naive_outputs("selective_decode", x, att, "float32")
    plain = X.naive_outputs("selective_decode", x, dict(att, state_dtype="float32"), "float32")
    err = {k: np.max(np.abs(v["out"] - want["out"])) for k, v in (("emulated", emulated),
                                                                   ("plain", plain))}
    wrong = np.max(np.abs(decode_float32(x, att, True)["out"] - want["out"]))
    assert np.array_equal(emulated["states"], want["states"])
    assert X.DEFAULT_K * err["emulated"] < wrong < X.DEFAULT_K * err["plain"]


# ---------------------------------------------------------------------------------------------
# Float32: the naive computation is well inside the table; unusable vectors exit 2
# ---------------------------------------------------------------------------------------------

def test_float32_naive_is_well_inside_the_float32_table(tmp_path):
    fast = [n for n in SELECTIVE if n != "selective_scan_vjp_long"]     # 2 s of taped loop
    X.write_vectors(tmp_path / "v", dtype="float32", cases=fast)
    cases = X.load_vectors(tmp_path / "v")["cases"]
    write_results(tmp_path / "r", {n: X.naive_outputs(c["kind"], c["inputs"], c["attrs"], "float32")
                                   for n, c in cases.items()})
    report = X.check(tmp_path / "v", tmp_path / "r")
    assert report["passed"] and max(c["err_over_tol"] for c in report["cases"]) < 0.1


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["attrs"].update(state_dtype="float8"), "state_dtype"),
    (lambda c: c["attrs"].update(chunk_size=0), "chunk_size"),
    (lambda c: c["attrs"].update(delta_softplus="yes"), "delta_softplus"),
])
def test_bad_attrs_are_unusable_input(tmp_path, edit, message):
    names = [DECODE, "ssd_L1", "selective_scan_L1"]
    X.write_vectors(tmp_path, cases=names)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    for c in manifest["cases"]:
        edit(c) if message in json.dumps(c["attrs"]) else None
    path.write_text(json.dumps(manifest))
    with pytest.raises(X.VectorsError, match=message):
        X.load_vectors(tmp_path)


def test_a_real_A_where_ssd_needs_one_is_unusable(tmp_path):
    X.write_vectors(tmp_path, cases=["ssd_L1"])
    arrays = dict(X.read_npz(tmp_path / "ssd_L1.npz"))
    arrays["A"] = arrays["A"] + 1j
    X.write_npz(tmp_path / "ssd_L1.npz", arrays)
    with pytest.raises(X.VectorsError, match="unusable inputs"):
        X.load_vectors(tmp_path)
