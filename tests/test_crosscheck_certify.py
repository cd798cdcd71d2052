"""ref_error: the vectors' expected outputs certified against 40-digit recomputations.

``write_vectors(..., certify=True)`` (``python -m ssmref vectors OUT --certify``) measures, per
output of every SSM case (dense, structured, selective), ``||y − y_40||_F / ||y_40||_F`` and
records it in the manifest; the ``.npz`` files are the same bytes with or without it.  Every
recorded error is under 1e-14, or under the first-order bound stated for it (``BOUNDS``).
Certifying every case takes minutes: the default run certifies the cheap cases and every kind on
shortened inputs; ``-m slow`` every case at full size, one test per case.
"""

import argparse
import json
import sys

import numpy as onp
import pytest

mpmath = pytest.importorskip("mpmath")

from ssmref import crosscheck as X                                       # noqa: E402
from ssmref.crosscheck import highprec                                   # noqa: E402
from ssmref.crosscheck import registry                                   # noqa: E402
from ssmref.crosscheck.families import selective_ref                     # noqa: E402
from ssmref.crosscheck.families.structured_bounds import (               # noqa: E402
    diag_scan_vjp_dt_bound, dplr_kernel_error_bound)
from ssmref.selective import selective_scan                              # noqa: E402

#: Cheap cases (a few seconds together), certified as they are.
CHEAP = ["ssm_scan", "ssm_step", "ssm_scan_vjp", "discretize_zoh", "discretize_bilinear",
         "ssm_scan_n1", "selective_scan_L1", "selective_state_update",
         "selective_decode_bf16_state", "ssd_L1"]
#: Outputs whose error 1e-14 does not bound: (case, output) -> bound(inputs, attrs).  The DPLR
#: kernel: measured 1.7e-14; the Woodbury correction cancels most of the diagonal Cauchy sum
#: (docs/structured.md), so its first-order bound is ε times sums of moduli, about 1e-12 here.
TARGET = 1e-14
BOUNDS = {("dplr_kernel", "K"): lambda x, a: dplr_kernel_error_bound(x, a["length"]),
          ("diag_scan_vjp_bilinear", "ddt"): lambda x, a: diag_scan_vjp_dt_bound(x, a, TARGET),
          ("diag_scan_vjp_zoh", "ddt"): lambda x, a: diag_scan_vjp_dt_bound(x, a, TARGET)}


def certified_cases():
    return [n for n, c in X.CASES.items() if registry.certified(c.kind)]


def assert_certified(entry, inputs=None):
    errors = entry["ref_error"]
    assert sorted(errors) == entry["outputs"], entry["name"]
    for out, err in errors.items():
        bound = BOUNDS.get((entry["name"], out))
        limit = TARGET if bound is None else bound(inputs, entry["attrs"])
        assert 0 <= err <= limit, (entry["name"], out, err, limit)


def test_every_ssm_kind_has_a_reference_and_the_others_none():
    for name, rules in X.KIND_RULES.items():
        assert registry.certified(name) == (name not in ("policy", "maml", "adapter", "adapter_method")), name
    with pytest.raises(ValueError, match="no 40-digit reference"):
        registry.ref_errors("maml", {}, {}, {})


def test_certified_vectors_record_ref_error_and_keep_the_npz_bytes(tmp_path):
    plain, cert = tmp_path / "plain", tmp_path / "cert"
    X.write_vectors(plain, cases=CHEAP + ["maml_metasgd"])
    manifest = X.write_vectors(cert, cases=CHEAP + ["maml_metasgd"], certify=True)
    for name in CHEAP + ["maml_metasgd"]:
        assert (plain / f"{name}.npz").read_bytes() == (cert / f"{name}.npz").read_bytes()
    assert manifest["certificate"]["digits"] == 40
    on_disk = json.loads((cert / "manifest.json").read_text())
    assert on_disk == manifest
    for entry in on_disk["cases"]:
        if entry["name"] == "maml_metasgd":
            assert "ref_error" not in entry             # no reference for the learning kinds
        else:
            assert_certified(entry)
    # only the certificate and the ref_error entries differ
    stripped = dict(on_disk, cases=[{k: v for k, v in c.items() if k != "ref_error"}
                                    for c in on_disk["cases"]])
    del stripped["certificate"]
    assert stripped == json.loads((plain / "manifest.json").read_text())
    X.load_vectors(cert)                                # the checker reads certified vectors


def test_certifying_is_deterministic(tmp_path):
    a = X.write_vectors(tmp_path / "a", cases=["ssm_step", "discretize_zoh"], certify=True)
    b = X.write_vectors(tmp_path / "b", cases=["ssm_step", "discretize_zoh"], certify=True)
    assert a == b
    assert (tmp_path / "a" / "manifest.json").read_bytes() == \
        (tmp_path / "b" / "manifest.json").read_bytes()


SHORT = 64


def _cut(kind, k, v, T):
    """Input ``k`` of a case of ``kind`` (``T`` steps) cut to at most ``SHORT`` steps or lags."""
    if kind in ("selective_scan", "selective_scan_vjp"):
        if k in ("u", "delta", "z", "gout") or (k in ("B", "C") and v.ndim >= 3):
            return v[..., :2 * SHORT] if v.shape[-1] == 2 * T else v[..., :SHORT]   # interleaved
        return v
    if kind in ("ssd", "ssd_vjp"):
        return v[:, :SHORT] if k in ("x", "dt", "B", "C", "z", "gout", "seq_idx") else v
    if kind in ("selective_state_update", "selective_decode"):
        return v                                              # one step, or 8: cheap as they are
    return v[:, :SHORT] if k in ("u", "gy") else v[:SHORT] if k == "gK" else v


def shortened(name):
    """``(inputs, outputs, attrs)`` of case ``name`` with its length cut to at most 64 steps or
    lags (outputs recomputed by the case's own function): every kind's reference, quickly."""
    inputs, _, attrs = X.build_case(name)
    kind = X.CASES[name].kind
    attrs = dict(attrs)
    if "length" in attrs:
        attrs["length"] = min(attrs["length"], SHORT)
    T = inputs["u"].shape[-1] if kind.startswith("selective_scan") else None
    inputs = {k: _cut(kind, k, v, T) for k, v in inputs.items()}
    outputs = {k: registry._as_stored(v) for k, v in X.CASES[name].compute(inputs, attrs).items()}
    return inputs, outputs, attrs


#: Cases certified on shortened inputs besides the first of each kind: complex A (interleaved B
#: and C, the complex gradients), seq_idx restarts and dt_limit clamps.
SHORT_EXTRA = ["selective_scan_complex_interleaved", "selective_scan_vjp_complex", "ssd_seq_idx"]


def first_case_of_each_kind():
    seen = {}
    for name in certified_cases():
        seen.setdefault(X.CASES[name].kind, name)
    return sorted(seen.values())


@pytest.mark.parametrize("name", first_case_of_each_kind() + SHORT_EXTRA)
def test_every_kind_certified_on_shortened_inputs(name):
    inputs, outputs, attrs = shortened(name)
    errors = registry.ref_errors(X.CASES[name].kind, inputs, attrs, outputs)
    assert sorted(errors) == sorted(outputs)
    assert max(errors.values()) < TARGET, errors


def test_a_wrong_expected_output_is_measured_as_wrong():
    inputs, outputs, attrs = X.build_case("ssm_step")
    bad = dict(outputs, y=outputs["y"] * (1 + 1e-12))
    errors = registry.ref_errors("ssm_step", inputs, attrs, bad)
    assert errors["h_next"] < 1e-15 and errors["y"] == pytest.approx(1e-12, rel=1e-2)


def test_the_decode_reference_carries_the_stored_cache_bit_for_bit():
    inputs, outputs, attrs = X.build_case("selective_decode_bf16_state")
    ref = selective_ref.decode(inputs, attrs)
    assert onp.array_equal(highprec.to_float(ref["states"]), outputs["states"])
    with mpmath.workdps(40):
        one, ulp = mpmath.mpf(1), mpmath.mpf(2) ** -7                    # bfloat16's spacing at 1
        near = onp.array([one + ulp / 2 + ulp * 2 ** -16], dtype=object)  # just above a midpoint
        with pytest.raises(ValueError, match="not certified"):
            selective_ref.cache_rounding(near, near, "bfloat16")
        clear = onp.array([one + ulp / 4, -one - 3 * ulp / 4], dtype=object)
        got = highprec.to_float(selective_ref.cache_rounding(clear, onp.abs(clear), "bfloat16"))
    assert list(got) == [1.0, -1.0 - 2.0 ** -7]
    with mpmath.workdps(40):                                           # a float32 cache: 2^-40
        mid = one + mpmath.mpf(2) ** -24                                 # a float32 midpoint
        for offset, certified in ((2 ** -45, False), (2 ** -35, True)):
            v = onp.array([mid + offset], dtype=object)
            if certified:
                assert float(selective_ref.cache_rounding(v, v, "float32")[0]) == 1 + 2.0 ** -23
            else:
                with pytest.raises(ValueError, match="not certified"):
                    selective_ref.cache_rounding(v, v, "float32")


def _out_from_the_rounded_cache(x):
    """The decode's ``out`` read from the cache after rounding (vLLM's reference before PR 48578)."""
    out = []
    for t in range(x["x"].shape[0]):
        S = X.build_case("selective_decode_bf16_state")[1]["states"][t]          # (b, h, p, n)
        C = onp.repeat(x["C"][t], S.shape[1] // x["C"].shape[2], axis=1)[:, :, None]
        y = onp.sum(S * C, axis=-1) + x["D"] * x["x"][t]
        out.append(y * x["z"][t] / (1 + onp.exp(-x["z"][t])))
    return onp.stack(out)


def test_the_selective_references_see_the_ports_bugs():
    """A port's known mistakes, taken as the expected outputs, are measured as wrong."""
    x, outputs, a = X.build_case("selective_decode_bf16_state")
    err = registry.ref_errors("selective_decode", x, a, dict(outputs, out=_out_from_the_rounded_cache(x)))
    assert err["states"] == 0 and err["out"] > 1e-4
    x, outputs, a = X.build_case("selective_scan_vjp_complex")
    err = registry.ref_errors("selective_scan_vjp", x, a, dict(outputs, dA=onp.conj(outputs["dA"])))
    assert err["dA"] > 0.1 and err["dB"] < TARGET                          # torch's conjugate
    x, outputs, a = X.build_case("selective_scan_softplus_threshold")
    v = x["delta"] + x["delta_bias"][:, None]
    dt = onp.where(v > 20, v, onp.logaddexp(0.0, v))                       # F.softplus' threshold
    out, last = selective_scan(x["u"], dt, x["A"], x["B"], x["C"], x["D"], x["z"], None, False, True)
    err = registry.ref_errors("selective_scan", x, a, {"out": out, "last_state": last})
    assert err["out"] > 1e-11 and max(registry.ref_errors("selective_scan", x, a, outputs).values()) < TARGET


def test_vectors_certify_on_the_command_line(tmp_path, capsys, monkeypatch):
    parser = X.add_vectors_arguments(argparse.ArgumentParser())
    assert X.run_vectors(parser.parse_args([str(tmp_path), "--cases", "ssm_step",
                                            "--certify"])) == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["cases"][0]
    assert_certified(entry)
    monkeypatch.setitem(sys.modules, "mpmath", None)            # mpmath not installed
    capsys.readouterr()
    assert X.run_vectors(parser.parse_args([str(tmp_path / "b"), "--cases", "ssm_step",
                                            "--certify"])) == 2
    err = capsys.readouterr().err
    assert "mpmath" in err and "Traceback" not in err
    assert X.run_vectors(parser.parse_args([str(tmp_path / "c")])) == 0     # every case, no mpmath


@pytest.mark.slow
@pytest.mark.parametrize("name", certified_cases())
def test_every_case_certified(tmp_path, name):
    """Minutes for all: every SSM case at full size, ref_error under 1e-14 or its stated bound."""
    manifest = X.write_vectors(tmp_path, cases=[name], certify=True)
    entry, = manifest["cases"]
    assert_certified(entry, X.load_vectors(tmp_path)["cases"][name]["inputs"])
    print(name, entry["ref_error"])
