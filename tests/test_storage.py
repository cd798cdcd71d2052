"""ssmref.storage: atomic writes, .npz read header-first, bounded JSON, confined paths."""

import io
import os
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as onp
import pytest

from ssmref import storage


def npy_bytes(array=None, header=None):
    """An .npy member: a real array, or a bare header declaring ``header`` plus 64 zero bytes."""
    buf = io.BytesIO()
    if header is None:
        onp.lib.format.write_array(buf, array, allow_pickle=False)
    else:
        onp.lib.format.write_array_header_1_0(buf, header)
        buf.write(b"\0" * 64)
    return buf.getvalue()


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # zipfile warns of duplicate names
        for name, data in members:
            z.writestr(name, data)
    return path


def test_round_trip_and_expected_shapes(tmp_path):
    path = tmp_path / "a.npz"
    storage.save_npz(path, {"A": onp.eye(3), "step": onp.array(3), "F": onp.asfortranarray(
        onp.arange(6.0).reshape(2, 3))})
    out = storage.load_npz(path, {"A": (3, 3), "step": ((), "i"), "F": (2, 3)})
    assert onp.array_equal(out["A"], onp.eye(3)) and int(out["step"]) == 3
    assert onp.array_equal(out["F"], onp.arange(6.0).reshape(2, 3))
    with pytest.raises(ValueError, match=r"array 'A' has shape \(3, 3\), expected \(4, 4\)"):
        storage.load_npz(path, {"A": (4, 4), "step": ((), "i"), "F": None})
    with pytest.raises(ValueError, match="unexpected array"):
        storage.load_npz(path, {"A": (3, 3)})
    with pytest.raises(ValueError, match="missing arrays"):
        storage.load_npz(path, {"A": (3, 3), "B": None}, allow_extra=True)


@pytest.mark.parametrize("members, match", [
    ([("A.npy", b"hello")], "unreadable array header"),
    ([("A", npy_bytes(onp.eye(2)))], "not an .npy array"),
    ([("A.npy", npy_bytes(onp.eye(2))), ("A.npy", npy_bytes(onp.eye(2)))], "appears twice"),
    ([("A.npy", npy_bytes(header={"descr": "<f8", "fortran_order": False, "shape": (3, 3)}))],
     "declares shape"),
    ([("A.npy", npy_bytes(header={"descr": "|O", "fortran_order": False, "shape": (2,)}))],
     "object"),
])
def test_malformed_members_are_refused(tmp_path, members, match):
    path = write_zip(tmp_path / "bad.npz", members)
    with pytest.raises(ValueError, match=match):
        storage.load_npz(path)


def test_a_huge_declared_shape_allocates_nothing(tmp_path):
    header = {"descr": "<f8", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)}
    path = write_zip(tmp_path / "bomb.npz", [("A.npy", npy_bytes(header=header))])
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"has shape \(1000000, 1000000\), expected \(3, 3\)"):
        storage.load_npz(path, {"A": (3, 3)})
    with pytest.raises(ValueError, match="more than the limit"):
        storage.load_npz(path)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_not_a_zip(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable .npz"):
        storage.load_npz(path)


def test_non_finite_refused_on_request(tmp_path):
    path = tmp_path / "n.npz"
    storage.save_npz(path, {"A": onp.array([1.0, onp.inf])})
    storage.load_npz(path)
    with pytest.raises(ValueError, match="non-finite"):
        storage.load_npz(path, finite=True)


def test_json_bounds(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested deeper than 64"):
        storage.read_json(deep)
    nan = tmp_path / "nan.json"
    nan.write_text('{"a": NaN}')
    with pytest.raises(ValueError, match="not valid JSON"):
        storage.read_json(nan)
    big = tmp_path / "big.json"
    big.write_text("[" + "1," * 100 + "1]")
    with pytest.raises(ValueError, match="larger than"):
        storage.read_json(big, max_bytes=50)
    brackets_in_strings = tmp_path / "s.json"
    brackets_in_strings.write_text('{"a": "' + "[" * 1000 + '\\"{"}')
    assert storage.read_json(brackets_in_strings) == {"a": "[" * 1000 + '"{'}
    with pytest.raises(ValueError, match="is a directory"):
        storage.read_json(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "results.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        storage.load_npz(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        storage.read_json(fifo)


def test_names_stay_inside_their_directory(tmp_path):
    (tmp_path / "ok.npz").write_bytes(b"")
    assert storage.inside(tmp_path, "ok.npz") == os.path.join(tmp_path, "ok.npz")
    for name in ("../x", "/etc/passwd", "a/b", "..", "", "a\\b"):
        with pytest.raises(ValueError, match="not a plain file name"):
            storage.inside(tmp_path, name)
    os.symlink("/etc", tmp_path / "link")
    with pytest.raises(ValueError, match="leads outside"):
        storage.inside(tmp_path, "link")


def test_checkpoint_header_read_first(tmp_path):
    path = tmp_path / "ck.npz"
    storage.save_checkpoint(path, {"params": {"a": onp.ones(2)}}, {"it": 3})
    meta, trees = storage.load_checkpoint(path, ("params",), lambda m: {"a": (2,)})
    assert meta == {"it": 3} and onp.array_equal(trees["params"]["a"], onp.ones(2))
    with pytest.raises(ValueError, match="expected"):
        storage.load_checkpoint(path, ("params",), lambda m: {"a": (10 ** 9,)})
    with pytest.raises(ValueError):
        storage.save_checkpoint(path, {"params": {"a": onp.ones(2)}}, {"it": float("nan")})
    assert storage.load_checkpoint(path, ("params",), lambda m: {"a": (2,)})[0] == {"it": 3}


def test_atomic_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "f.bin"
    storage.atomic_write(path, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        storage.atomic_write(path, fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    with pytest.raises(ValueError, match="is a directory"):
        storage.atomic_write(tmp_path, lambda f: f.write(b"x"))


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    """A writer killed (SIGKILL) mid-write leaves the old file and one temporary; the next write
    removes that temporary."""
    path = tmp_path / "f.bin"
    storage.atomic_write(path, lambda f: f.write(b"old"))
    code = ("import sys, time; from ssmref import storage\n"
            "def w(f):\n    f.write(b'partial'); f.flush(); print('writing', flush=True); "
            "time.sleep(60)\n"
            f"storage.atomic_write({str(path)!r}, w)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    left = sorted(os.listdir(tmp_path))
    assert path.read_bytes() == b"old" and len(left) == 2 and ".ssmref-tmp-" in left[0]
    storage.atomic_write(path, lambda f: f.write(b"new"))
    assert os.listdir(tmp_path) == ["f.bin"] and path.read_bytes() == b"new"
