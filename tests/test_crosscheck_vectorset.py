"""A vectors directory is one unit: hashes, the set id, whole-set replacement, results that belong
to another set refused, ``--json`` never inside an input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ssmref import crosscheck as X
from ssmref.crosscheck import vectorset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["ssm_scan", "ssm_step"]


@pytest.fixture
def cli(capsys):
    """``python -m ssmref.crosscheck ARGS`` in-process: ``(exit status, stdout, stderr)``."""
    def run(*args):
        rc = X.main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err
    return run


def write_results(res, vec, set_id=True):
    vectors = X.load_vectors(vec)
    os.makedirs(res, exist_ok=True)
    for name, case in vectors["cases"].items():
        extra = {"_set_id": vectors["set_id"]} if set_id else {}
        np.savez(os.path.join(res, name + ".npz"), **case["outputs"], **extra)


def test_manifest_hashes_and_set_id(tmp_path):
    m = X.write_vectors(tmp_path / "v", cases=SMALL)
    for c in m["cases"]:
        assert c["sha256"] == vectorset.file_hash(tmp_path / "v" / c["file"])
    assert m["set_id"] == vectorset.set_id("float64", m["cases"]) and len(m["set_id"]) == 16
    again = X.write_vectors(tmp_path / "w", cases=SMALL)
    assert again["set_id"] == m["set_id"]                              # content, not time
    assert X.write_vectors(tmp_path / "f32", "float32", cases=SMALL)["set_id"] != m["set_id"]
    assert X.load_vectors(tmp_path / "v")["set_id"] == m["set_id"]


def test_a_changed_file_or_an_edited_manifest_is_refused(tmp_path):
    vec = tmp_path / "v"
    X.write_vectors(vec, cases=SMALL)
    X.write_vectors(tmp_path / "f32", "float32", cases=SMALL)
    os.replace(tmp_path / "f32" / "ssm_step.npz", vec / "ssm_step.npz")      # a mixed set
    with pytest.raises(X.VectorsError, match="ssm_step.*does not match the manifest's sha256"):
        X.load_vectors(vec)
    X.write_vectors(tmp_path / "w", cases=SMALL)
    path = tmp_path / "w" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["cases"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(X.VectorsError, match="set_id.*does not match"):
        X.load_vectors(tmp_path / "w")


def test_results_of_another_set_are_refused_and_unrecorded_ones_noted(tmp_path, cli):
    vec, res = tmp_path / "v", tmp_path / "r"
    X.write_vectors(vec, cases=SMALL)
    write_results(res, vec)
    report = X.check(vec, res)
    assert report["passed"] and report["set_id"] and not report["notes"]
    shutil.rmtree(vec)
    X.write_vectors(vec, "float32", cases=SMALL)                          # regenerated, float32
    with pytest.raises(X.VectorsError, match="written for vectors .*run the port again"):
        X.check(vec, res)
    rc, out, err = cli("check", vec, res)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    write_results(res, vec, set_id=False)                                 # a port that does not
    report = X.check(vec, res)                                           # record it: still works
    assert report["passed"] and any("do not record the set id" in n for n in report["notes"])


def test_json_inside_an_input_is_refused_and_changes_nothing(tmp_path, cli):
    vec, res = tmp_path / "v", tmp_path / "r"
    X.write_vectors(vec, cases=SMALL)
    write_results(res, vec)
    before = {p: p.read_bytes() for d in (vec, res) for p in d.iterdir()}
    for target in (vec / "manifest.json", res / "ssm_scan.npz", vec / "new.json",
                   res / ".." / "v" / "x.json"):
        rc, out, err = cli("check", vec, res, "--json", target)
        assert rc == 2 and "inside" in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for d in (vec, res) for p in d.iterdir()} == before
    assert cli("check", vec, res, "--json", tmp_path / "report.json")[0] == 0
    assert json.loads((tmp_path / "report.json").read_text())["passed"]


def test_cases_add_to_a_set_of_the_same_dtype_or_are_refused(tmp_path, cli):
    vec = tmp_path / "v"
    X.write_vectors(vec, cases=SMALL)
    step = (vec / "ssm_step.npz").read_bytes()
    m = X.write_vectors(vec, cases=["ssm_kernel", "ssm_scan"])            # add one, refresh one
    assert [c["name"] for c in m["cases"]] == ["ssm_scan", "ssm_step", "ssm_kernel"]
    assert (vec / "ssm_step.npz").read_bytes() == step
    assert X.load_vectors(vec)["set_id"] == m["set_id"]
    assert X.write_vectors(tmp_path / "all3", cases=["ssm_scan", "ssm_step", "ssm_kernel"]
                           )["set_id"] == m["set_id"]                     # the same set
    rc, out, err = cli("vectors", vec, "--cases", "ssm_kernel", "--dtype", "float32")
    assert rc == 2 and "would mix two sets" in err and len(err.strip().splitlines()) == 1
    assert X.load_vectors(vec)["set_id"] == m["set_id"]                   # unchanged
    assert cli("vectors", vec, "--cases", "ssm_step")[0] == 0             # and refreshable


def test_a_directory_with_other_files_is_not_replaced(tmp_path, cli):
    vec = tmp_path / "v"
    X.write_vectors(vec, cases=SMALL)
    (vec / "notes.txt").write_text("mine")
    rc, out, err = cli("vectors", vec, "--cases", "ssm_step")
    assert rc == 2 and "notes.txt" in err and (vec / "notes.txt").read_text() == "mine"


def test_a_write_that_fails_part_way_leaves_the_old_set(tmp_path, monkeypatch):
    """A failure after the build began (here: ``--certify`` without mpmath, at the first
    certified case) leaves the old set, complete, and no build behind."""
    vec = tmp_path / "v"
    X.write_vectors(vec, "float32", cases=SMALL)
    old = X.load_vectors(vec)["set_id"]

    def no_mpmath(*args):
        raise ImportError("No module named 'mpmath'")
    monkeypatch.setattr("ssmref.crosscheck.registry.ref_errors", no_mpmath)
    with pytest.raises(ImportError):
        X.write_vectors(vec, "float64", certify=True)
    assert X.load_vectors(vec)["set_id"] == old
    assert sorted(os.listdir(tmp_path)) == ["v"]


def test_the_current_directory_is_not_replaced(tmp_path, monkeypatch, cli):
    vec = tmp_path / "v"
    X.write_vectors(vec, cases=SMALL)
    monkeypatch.chdir(vec)
    rc, out, err = cli("vectors", ".", "--cases", "ssm_step")
    assert rc == 2 and "current directory" in err
    assert X.load_vectors(vec)["set_id"]


def _kill_during_vectors(vec, delay, dtype):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "ssmref", "vectors", str(vec), "--dtype", dtype],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()


def sigkill_rewrites(tmp_path, delays, old_cases):
    """Kill ``vectors V --dtype float64`` (every case) after each of ``delays`` seconds, over a
    float32 set of ``old_cases``; after each kill the directory must hold the old set or the new
    one, each complete and verified, never a mix.  Returns the set ids seen and the old one."""
    vec = tmp_path / "v"
    X.write_vectors(vec, "float32", cases=old_cases)
    old = X.load_vectors(vec)["set_id"]
    seen = []
    for delay in delays:
        _kill_during_vectors(vec, delay, "float64")
        loaded = X.load_vectors(vec)                                      # every hash verified
        if loaded["set_id"] != old:                                       # the complete new set
            X.write_vectors(tmp_path / "new", "float64")
            assert loaded["set_id"] == X.load_vectors(tmp_path / "new")["set_id"], delay
            assert len(loaded["cases"]) == len(X.CASES)
            shutil.rmtree(vec)                  # back to the old set (a subset may not be added
            X.write_vectors(vec, "float32", cases=old_cases)    # to a set of another dtype)
        else:
            assert len(loaded["cases"]) == len(old_cases or X.CASES)
        seen.append(loaded["set_id"])
    X.write_vectors(vec, "float32", cases=old_cases)                      # cleans up the builds
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".v.vectors-")]
    return seen, old


def test_sigkill_during_a_rewrite_leaves_one_whole_set(tmp_path):
    seen, old = sigkill_rewrites(tmp_path, (0.5, 2.0), SMALL)     # start-up, building
    assert old in seen


@pytest.mark.slow
def test_sigkill_at_many_points_leaves_one_whole_set(tmp_path):
    t0 = time.perf_counter()
    X.write_vectors(tmp_path / "timing", "float64")
    duration = time.perf_counter() - t0 + 1.5                             # and the start-up
    seen, old = sigkill_rewrites(tmp_path, [f * duration for f in
                                            (0.1, 0.3, 0.5, 0.7, 0.9, 1.0, 1.1, 1.3)], None)
    assert old in seen
