"""The golden vectors' bytes and every recorded ``ref_error`` are what tests/data/vector_digests.json
says: a change of one byte of one case file, or of one certified error, fails here.

The sets are regenerated in a pinned arithmetic (tests/vector_digests.py says why: OpenBLAS's
kernels and NumPy's AVX-512 code change the bytes from one CPU to another) and compared file by
file.  An environment other than the recorded one (other NumPy, SciPy, autograd or mpmath
versions, or a CPU that cannot compute the pinned arithmetic) is a skip naming the difference,
which CI's strict skips turn into a failure: refresh the digests there from a known-right tree.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vector_digests                                                  # noqa: E402


def recorded():
    with open(vector_digests.DIGESTS, encoding="utf-8") as f:
        rec = json.load(f)
    env, reason = vector_digests.pinned_env()
    if env is None:
        pytest.skip(reason)
    here = vector_digests.environment()
    if here != rec["environment"]:
        diff = {k: (rec["environment"].get(k), here.get(k)) for k in set(here) | set(rec["environment"])
                if rec["environment"].get(k) != here.get(k)}
        pytest.skip(f"the digests were recorded in another environment (recorded, here): {diff}; "
                    f"refresh them with python tests/vector_digests.py from a known-right tree")
    return rec


def test_the_comparison_names_every_changed_file_and_error():
    want = {"set_id": "a", "files": {"x.npz": "1", "y.npz": "2"}, "ref_error": {"x": {"y": 1e-17}}}
    assert vector_digests.differences(want, want) == []
    got = {"set_id": "b", "files": {"x.npz": "1", "y.npz": "3", "z.npz": "4"},
           "ref_error": {"x": {"y": 2e-17}}}
    lines = vector_digests.differences(want, got)
    assert [line.split(":")[0] for line in lines] == ["y.npz", "z.npz", "x"]


def test_default_vectors_are_byte_identical(tmp_path):
    rec = recorded()
    got = vector_digests.generate(str(tmp_path / "vectors"))
    lines = vector_digests.differences(rec["default"], got)
    assert not lines, "the vectors changed:\n" + "\n".join(lines)


@pytest.mark.slow
def test_certified_vectors_keep_their_bytes_and_every_ref_error(tmp_path):
    rec = recorded()
    got = vector_digests.generate(str(tmp_path / "vectors"), certify=True)
    want = dict(rec["certified"], files=rec["default"]["files"])
    lines = vector_digests.differences(want, got)
    assert not lines, "the certified vectors changed:\n" + "\n".join(lines)
