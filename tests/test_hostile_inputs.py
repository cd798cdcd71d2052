"""Hostile inputs: every loader, the checker and the command line refuse cleanly.

Each test generates one class of hostile input and asserts the outcome: a ``ValueError`` (or an
``OSError``) naming the problem, or exit status 2 with one line on stderr and no traceback; never
code execution, never a read outside the given directories, never a hang (subprocesses run with a
timeout), nothing lost.  ``docs/trust.md`` states the guarantees.

Attacks, by category (each parametrized case counts once; see ``ATTACKS`` at the bottom, which a
test checks against the collected cases):

- files (``.npz`` archives fed to ``storage.load_npz``, ``StateSpaceModel.load``,
  ``SSMMetaPolicy.load``, the checker's results and vectors): 16 malformed archives x 4 loaders,
  each a file the loader accepts with one thing damaged, refused for that damage (the checker
  reads integer and NaN results and fails them instead); 2 malformed models (a 0 x 0 ``A``, a
  policy spec nested 10 000 levels deep)
- JSON (manifests): 6
- paths (names and links leading outside, non-regular files): 7
- interrupted writes (SIGKILL at random moments): 12 kills
- arguments of public functions: 68 (wrong types, shapes and values; finite inputs whose result
  would not be finite; masked arrays)
- finite inputs at the edges of the documented domains, which give finite results: 6
- the cross-check command line: 8
- the ``adapt`` command line: 4

The meta-RL run directories (``train`` / ``evaluate``) are attacked in
``tests/test_train_hostile.py``.
"""

import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as onp
import pytest

from ssmref import crosscheck, maml, optim, ssm, storage
from ssmref.crosscheck.files import VectorsError
from ssmref.metarl.policy import SSMMetaPolicy, policy_init
from ssmref.selective import selective_scan, selective_state_update, ssd
from ssmref.structured import (complex_to_real_system, diag_convolve, diag_discretize,
                               diag_kernel, diag_scan, dplr_discretize, dplr_kernel, dplr_to_dense,
                               dplr_truncate, from_real, init_diag, init_dplr, s4d_kernel)

MARKER = "ssmref_pickle_ran"


# ---------------------------------------------------------------------------------------------
# Files: malformed .npz archives, against every loader
# ---------------------------------------------------------------------------------------------

def npy(array=None, header=None, extra=b""):
    buf = io.BytesIO()
    if header is None:
        onp.lib.format.write_array(buf, array, allow_pickle=True)
    else:
        onp.lib.format.write_array_header_1_0(buf, header)
        buf.write(extra)
    return buf.getvalue()


class Bomb:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def zip_of(path, members):
    import warnings
    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, data in members:
            z.writestr(name, data)
    return path


def good_ssm_arrays():
    p = ssm.init_ssm(2, 3, 1, rng=0)
    return {k: onp.asarray(v) for k, v in p.items()} | {"mode": onp.array(0)}


def good_policy_arrays(tmp_path):
    params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                               hidden_sizes=(3,), rng=0)
    SSMMetaPolicy.from_params(params, spec).save(tmp_path / "policy-good.npz")
    return storage.read_npz(tmp_path / "policy-good.npz")


def vectors_of(tmp_path):
    vectors = tmp_path / "vec"
    if not vectors.exists():
        crosscheck.write_vectors(vectors, cases=["ssm_step"])
    return vectors


def good_arrays(loader, tmp_path):
    """``(arrays, victim)``: a file the loader accepts, and the array each attack damages."""
    if loader == "SSMMetaPolicy.load":
        return good_policy_arrays(tmp_path), "ssm.A"
    if loader == "check results":           # the exact expected outputs: a passing results file
        outputs = crosscheck.load_vectors(vectors_of(tmp_path))["cases"]["ssm_step"]["outputs"]
        return dict(outputs), "h_next"
    return good_ssm_arrays(), "A"


def archive(kind, tmp_path, loader):
    """A hostile archive of one kind, for ``loader``, as a path: the loader's good file with one
    array (``victim``) damaged, or bytes that are no archive at all."""
    path = tmp_path / f"{kind}.npz"
    good, victim = good_arrays(loader, tmp_path)
    bad = good[victim]
    members = [(f"{k}.npy", npy(v)) for k, v in good.items()]
    index = [name for name, _ in members].index(f"{victim}.npy")

    def replace(data):
        members[index] = (f"{victim}.npy", data)

    if kind == "not_npy_member":
        replace(b"plain bytes, not an array")
    elif kind == "member_without_suffix":
        members.append(("extra", npy(onp.ones(2))))
    elif kind == "duplicate_member":
        members.append((f"{victim}.npy", npy(bad)))
    elif kind == "huge_header":
        replace(npy(header={"descr": "<f8", "fortran_order": False, "shape": (10 ** 7, 10 ** 7)},
                    extra=b"\0" * 64))
    elif kind == "header_larger_than_data":
        replace(npy(header={"descr": "<f8", "fortran_order": False, "shape": bad.shape},
                    extra=b"\0" * 16))
    elif kind == "object_pickle_bomb":
        bomb = onp.empty(1, dtype=object)
        bomb[0] = Bomb(tmp_path / MARKER)
        replace(npy(bomb))
    elif kind == "wrong_shape":
        replace(npy(onp.ones((bad.shape[0], bad.shape[1] + 1))))
    elif kind == "integer_matrix":
        replace(npy(onp.ones(bad.shape, dtype=onp.int64)))
    elif kind == "complex_matrix":
        replace(npy(bad + 1j))
    elif kind == "nan_weights":
        replace(npy(onp.full(bad.shape, onp.nan)))
    elif kind == "missing_array":
        del members[index]
    elif kind not in ("zero_bytes", "random_bytes", "truncated", "single_npy", "directory"):
        raise AssertionError(kind)
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(onp.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        zip_of(path, members)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "single_npy":
        path.write_bytes(npy(onp.eye(3)))
    elif kind == "directory":
        path.mkdir()
    else:
        zip_of(path, members)
    return path


ARCHIVES = ["not_npy_member", "member_without_suffix", "duplicate_member", "huge_header",
            "header_larger_than_data", "object_pickle_bomb", "wrong_shape", "integer_matrix",
            "complex_matrix", "nan_weights", "missing_array", "zero_bytes", "random_bytes",
            "truncated", "single_npy", "directory"]


def load_model(path):
    return ssm.StateSpaceModel.load(path)


def load_policy(path):
    return SSMMetaPolicy.load(path)


def load_plain(path):
    return storage.load_npz(path, {"A": (3, 3), "B": (3, 2), "C": (1, 3), "D": (1, 2),
                                   "mode": ((), "i")}, finite=True)


def load_as_results(path):
    """The archive as a results file of the checker (through its Python API)."""
    vectors = vectors_of(path.parent)
    results = path.parent / f"res-{path.stem}"
    results.mkdir(exist_ok=True)
    target = results / "ssm_step.npz"
    if path.is_dir():
        target.mkdir()
    else:
        target.write_bytes(path.read_bytes())
    return crosscheck.check(vectors, results, cases=["ssm_step"])


LOADERS = {"load_npz": load_plain, "StateSpaceModel.load": load_model,
           "SSMMetaPolicy.load": load_policy, "check results": load_as_results}

# What each attack is refused for (a regular expression on the message).
REFUSALS = {
    "not_npy_member": "unreadable array header",
    "member_without_suffix": "member 'extra' is not an .npy array",
    "duplicate_member": "appears twice",
    "huge_header": r"\(10000000, 10000000\)",
    "header_larger_than_data": "but holds 16 bytes of data",
    "object_pickle_bomb": "needs pickle, which is never used",
    "wrong_shape": r"\(3, 4\)|\(4, 17\)",
    "integer_matrix": "int64",
    "complex_matrix": "complex",
    "nan_weights": "non-finite",
    "missing_array": r"missing arrays \['(A|ssm\.A)'\]|lacks output 'h_next'",
    "zero_bytes": "not a readable .npz file",
    "random_bytes": "not a readable .npz file",
    "truncated": "not a readable .npz file",
    "single_npy": "not a readable .npz file",
    "directory": "is a directory",
}
# The checker compares results of any real number type, and reports NaN as a failed output
# (exit status 1), not as unusable input.
FAILS_THE_CHECK = {("check results", "integer_matrix"), ("check results", "nan_weights")}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_the_undamaged_archives_load(tmp_path, loader):
    """The file every attack starts from is accepted: the attacks below damage one thing."""
    good, victim = good_arrays(loader, tmp_path)
    path = tmp_path / "good.npz"
    zip_of(path, [(f"{k}.npy", npy(v)) for k, v in good.items()])
    result = LOADERS[loader](path)
    assert result["passed"] if loader == "check results" else result is not None


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", ARCHIVES)
def test_malformed_archives_are_refused(tmp_path, loader, kind):
    """Refused with a ValueError naming the file (the checker's: naming the case) and the damage;
    for the checker, an integer or NaN result is read and fails the check instead."""
    path = archive(kind, tmp_path, loader)
    if (loader, kind) in FAILS_THE_CHECK:
        report = LOADERS[loader](path)
        out = {o["name"]: o for o in report["cases"][0]["outputs"]}["h_next"]
        assert not report["passed"] and not out["passed"] and out["n_bad"] > 0
        assert out["nan"] > 0 if kind == "nan_weights" else out["nan"] == 0
        return
    with pytest.raises(ValueError, match=REFUSALS[kind]) as info:
        LOADERS[loader](path)
    assert str(path.name) in str(info.value) or "ssm_step" in str(info.value)
    assert not (tmp_path / MARKER).exists(), "unpickling ran code"


def empty_model(path):
    onp.savez(path, A=onp.zeros((0, 0)), B=onp.zeros((0, 1)), C=onp.zeros((1, 0)),
              D=onp.zeros((1, 1)), mode=onp.array(0))
    return ssm.StateSpaceModel.load(path)


def deep_spec(path):
    arrays = good_policy_arrays(path.parent)
    text = '{"a": ' * 10000 + "1" + "}" * 10000
    arrays["spec_json"] = onp.frombuffer(text.encode(), dtype=onp.uint8)
    storage.save_npz(path, arrays)
    return SSMMetaPolicy.load(path)


MODELS = {"StateSpaceModel.load 0x0 A": (empty_model, "at least one state"),
          "SSMMetaPolicy.load deep spec": (deep_spec, "nested deeper than 64")}


@pytest.mark.parametrize("name", list(MODELS))
def test_malformed_models_are_refused(tmp_path, name):
    """A ValueError naming the file and the problem (not a RecursionError)."""
    path = tmp_path / "model.npz"
    load, match = MODELS[name]
    with pytest.raises(ValueError, match=match) as info:
        load(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# JSON manifests
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, match", [
    ("[" * 5000 + "]" * 5000, "nested deeper"),
    ('{"spec_version": NaN}', "not valid JSON"),
    ("[]", "expected keys"),
    ("{}", "expected keys"),
    ('{"a": "' + "x" * (17 * 2 ** 20) + '"}', "larger than"),
    ("\xff\xfe not utf-8", "not UTF-8"),
])
def test_hostile_manifests(tmp_path, content, match):
    vec = tmp_path / "vec"
    vec.mkdir()
    (vec / "manifest.json").write_bytes(content.encode("latin-1") if "\xff" in content
                                        else content.encode())
    with pytest.raises(VectorsError, match=match):
        crosscheck.load_vectors(vec)


# ---------------------------------------------------------------------------------------------
# Paths: names and links that lead outside, non-regular files
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def small_vectors(tmp_path):
    vec = tmp_path / "vec"
    crosscheck.write_vectors(vec, cases=["ssm_step"])
    return vec


def edit_manifest(vec, **changes):
    text = (vec / "manifest.json").read_text()
    for old, new in changes.items():
        text = text.replace(old, new)
    (vec / "manifest.json").write_text(text)


@pytest.mark.parametrize("name", ["../outside/x", "/etc/passwd", "a/b", "..", ".hidden/../x"])
def test_case_names_cannot_leave_the_directories(small_vectors, tmp_path, name):
    edit_manifest(small_vectors, **{'"name": "ssm_step"': f'"name": "{name}"'})
    with pytest.raises(VectorsError, match="name"):
        crosscheck.load_vectors(small_vectors)


def test_symlinked_results_leading_outside_are_refused(small_vectors, tmp_path):
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"secret")
    res = tmp_path / "res"
    res.mkdir()
    os.symlink(outside, res / "ssm_step.npz")
    with pytest.raises(VectorsError, match="leads outside"):
        crosscheck.check(small_vectors, res)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_results_never_blocks(small_vectors, tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    os.mkfifo(res / "ssm_step.npz")
    proc = subprocess.run([sys.executable, "-m", "ssmref", "check", str(small_vectors), str(res)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Interrupted writes: SIGKILL at random moments never leaves a half-written file
# ---------------------------------------------------------------------------------------------

WRITER = """
import sys, numpy as onp
from ssmref.ssm import StateSpaceModel
path = sys.argv[1]
for i in range(10 ** 6):
    m = StateSpaceModel(4, 64, 4, rng=i)
    m.save(path)
    print(i, flush=True)
"""


def test_kills_during_saves_lose_nothing(tmp_path):
    path = tmp_path / "model.npz"
    ssm.StateSpaceModel(4, 64, 4, rng=0).save(path)
    rng = onp.random.default_rng(0)
    for kill in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                                text=True)
        try:
            proc.stdout.readline()                         # at least one save completed
            for _ in range(int(rng.integers(0, 20))):
                proc.stdout.readline()
        finally:
            proc.kill()
            proc.wait(timeout=60)
            proc.stdout.close()
        model = ssm.StateSpaceModel.load(path)             # a complete model, never a torn one
        assert model.params["A"].shape == (64, 64)
    temporaries = [n for n in os.listdir(tmp_path) if ".ssmref-tmp-" in n]
    assert len(temporaries) <= 12
    ssm.StateSpaceModel(4, 64, 4, rng=1).save(path)       # the next save cleans up after them
    assert os.listdir(tmp_path) == ["model.npz"]


# ---------------------------------------------------------------------------------------------
# Arguments of public functions
# ---------------------------------------------------------------------------------------------

P = ssm.init_ssm(2, 3, 1, rng=0)
U = onp.ones((5, 2))
PC = {k: v + 0j for k, v in P.items()}
S4D = init_diag(4, 2, 1, rng=0)
SEL = dict(u=onp.ones((1, 2, 4)), delta=onp.ones((1, 2, 4)), A=-onp.ones((2, 3)),
           B=onp.ones((2, 3)), C=onp.ones((2, 3)))

DPLR = init_dplr(4, 1, 1, rng=0)
DPLR_ZERO = {**DPLR, "Lambda": onp.concatenate([[0.0], DPLR["Lambda"][1:]])}
DPLR_ZERO["Ct"] = dplr_truncate(DPLR_ZERO, 8)
DPLR_POLE = {**DPLR, "Lambda": onp.concatenate([[2.0 / DPLR["dt"]], DPLR["Lambda"][1:]])}
FAR = {**S4D, "Lambda": onp.concatenate([[-1e301 + 1j], S4D["Lambda"][1:]])}
RAW = dict(log_neg_re=onp.zeros(3), im=onp.zeros(3), B_re=onp.zeros((3, 2)),
           B_im=onp.zeros((3, 2)), C_re=onp.zeros((1, 3)), C_im=onp.zeros((1, 3)),
           D=onp.zeros((1, 2)), log_dt=onp.zeros(()))
S4D_LAYOUT = dict(Lambda=onp.array([[-0.5 + 1j, -0.5 + 2j]]), B=onp.ones((1, 2)),
                  C=onp.ones((1, 2)), D=onp.ones(1), dt=onp.array([0.1]))


def masked(x):
    """``x`` as a masked array hiding a NaN at its first entry."""
    data = onp.array(x, dtype=float)
    data.flat[0] = onp.nan
    mask = onp.zeros(data.shape, dtype=bool)
    mask.flat[0] = True
    return onp.ma.masked_array(data, mask=mask)


ARGUMENTS = {
    "hippo_legs(0)": (lambda: ssm.hippo_legs(0), "n must be an int >= 1"),
    "hippo_legs(-2)": (lambda: ssm.hippo_legs(-2), "n must be an int >= 1"),
    "hippo_legs(2.5)": (lambda: ssm.hippo_legs(2.5), "n must be an int"),
    "hippo_legs(True)": (lambda: ssm.hippo_legs(True), "n must be an int"),
    "ssm_kernel length True": (lambda: ssm.ssm_kernel(P, True), "length must be an int"),
    "ssm_kernel length 0": (lambda: ssm.ssm_kernel(P, 0), "length must be an int >= 1"),
    "discretize dt True": (lambda: ssm.discretize(P["A"], P["B"], True), "dt must be a real scalar"),
    "discretize dt 0": (lambda: ssm.discretize(P["A"], P["B"], 0.0), "dt must be > 0"),
    "discretize dt nan": (lambda: ssm.discretize(P["A"], P["B"], float("nan")), "dt must be finite"),
    "discretize method": (lambda: ssm.discretize(P["A"], P["B"], 0.1, "euler"), "method must be"),
    "undiscretize dt 0": (lambda: ssm.undiscretize(P["A"], P["B"], 0.0), "dt must be > 0"),
    "undiscretize dt -1": (lambda: ssm.undiscretize(P["A"], P["B"], -1.0), "dt must be > 0"),
    "ssm_step batch mismatch": (lambda: ssm.ssm_step(P, onp.zeros((3, 3)), onp.zeros((2, 2))),
                                r"leading \(batch\) dims of h .* do not broadcast"),
    "ssm_step wrong h": (lambda: ssm.ssm_step(P, onp.zeros(4), onp.zeros(2)), "h must have shape"),
    "causal_fft_conv K longer": (lambda: ssm.causal_fft_conv(onp.ones((9, 1, 2)), U),
                                 "K must have shape"),
    "causal_fft_conv K wrong m": (lambda: ssm.causal_fft_conv(onp.ones((5, 1, 3)), U),
                                  "K must have shape"),
    "ssm_scan complex params": (lambda: ssm.ssm_scan(PC, U), "must be real"),
    "ssm_scan complex u": (lambda: ssm.ssm_scan(P, U + 0j), "u must be real"),
    "ssm_parallel_scan complex u": (lambda: ssm.ssm_parallel_scan(P, U + 0j), "u must be real"),
    "ssm_convolve complex u": (lambda: ssm.ssm_convolve(P, U + 0j), "u must be real"),
    "ssm_scan u wrong m": (lambda: ssm.ssm_scan(P, onp.ones((5, 3))), "u must have shape"),
    "ssm_scan empty T": (lambda: ssm.ssm_scan(P, onp.ones((0, 2))), "at least one time step"),
    "ssm_scan h0 wrong": (lambda: ssm.ssm_scan(P, U, onp.zeros(4)), "h0 must have shape"),
    "ssm_scan params list": (lambda: ssm.ssm_scan([1, 2], U), "params must be a dict"),
    "ssm_scan missing D": (lambda: ssm.ssm_scan({k: P[k] for k in "ABC"}, U), r"missing \['D'\]"),
    "init_ssm state_dim 0": (lambda: ssm.init_ssm(2, 0, 1), "state_dim must be an int >= 1"),
    "init_ssm scale nan": (lambda: ssm.init_ssm(2, 3, 1, scale=float("nan")),
                           "scale must be finite"),
    "init_ssm method": (lambda: ssm.init_ssm(2, 3, 1, method="magic"), "method must be one of"),
    "set_parameters complex": (lambda: ssm.StateSpaceModel(2, 3, 1).set_parameters(PC),
                               "must be real"),
    "set_parameters nan": (lambda: ssm.StateSpaceModel(2, 3, 1).set_parameters(
        {**P, "A": onp.full((3, 3), onp.nan)}), "non-finite"),
    "adam_init(None)": (lambda: optim.adam_init(None), "must be a dict"),
    "adam_init(ndarray)": (lambda: optim.adam_init(onp.ones(3)), "must be a dict"),
    "adam_init complex": (lambda: optim.adam_init({"a": onp.ones(2) + 1j}), "must be real"),
    "adam state negative v": (lambda: optim.adam_step(
        {"a": onp.ones(2)}, {"step": 1, "m": {"a": onp.zeros(2)}, "v": {"a": -onp.ones(2)}},
        {"a": onp.ones(2)}), "has negative entries"),
    "adam complex grads": (lambda: optim.adam_step(
        {"a": onp.ones(2) + 1j}, optim.adam_init({"a": onp.ones(2)}), {"a": onp.ones(2)}),
        "must be real"),
    "sgd state step -5": (lambda: optim.sgd(0.1)[1]({"a": onp.ones(2)}, {"step": -5},
                                                  {"a": onp.ones(2)}),
                           r"state\['step'\] must be an int >= 0"),
    "sgd state step 2.5": (lambda: optim.sgd(0.1)[1]({"a": onp.ones(2)}, {"step": 2.5},
                                                   {"a": onp.ones(2)}),
                           r"state\['step'\] must be an int >= 0"),
    "clip complex": (lambda: optim.clip_by_global_norm({"a": onp.ones(2) + 1j}, 1.0),
                     "must be real"),
    "clip max_norm True": (lambda: optim.clip_by_global_norm({"a": onp.ones(2)}, True),
                           "max_norm must be a real scalar"),
    "maml steps True": (lambda: maml.adapt({"a": onp.ones(2)}, lambda p, d: 0.0 * p["a"].sum(),
                                           None, inner_lr=0.1, steps=True),
                        "steps must be an int >= 0, got True"),
    "maml inner_lr nan": (lambda: maml.adapt({"a": onp.ones(2)}, lambda p, d: p["a"].sum(), None,
                                             inner_lr=float("nan")),
                          "inner_lr: expected a finite"),
    "maml tasks empty": (lambda: maml.meta_loss({"a": onp.ones(2)}, lambda p, d: p["a"].sum(),
                                                [], inner_lr=0.1),
                          "tasks: expected at least one"),
    "maml num_tasks 0": (lambda: maml.tile_params({"a": onp.ones(2)}, 0),
                         "num_tasks must be an int >= 1"),
    "diag_kernel length 0": (lambda: diag_kernel(S4D, 0, method="zoh", output="re"),
                             "length must be an int >= 1"),
    "diag_kernel output": (lambda: diag_kernel(S4D, 4, method="zoh", output="abs"),
                           "output must be one of"),
    "diag_scan complex u": (lambda: diag_scan(S4D, onp.ones((3, 2)) + 0j, method="zoh",
                                              output="re"), "u must be real"),
    "diag_scan dt negative": (lambda: diag_scan({**S4D, "dt": -1.0}, onp.ones((3, 2)),
                                                method="zoh", output="re"),
                               r"params\['dt'\] must be > 0"),
    "selective_scan complex u": (lambda: selective_scan(**{**SEL, "u": SEL["u"] + 0j}),
                                 "u must be real"),
    "selective_scan bad groups": (lambda: selective_scan(**{**SEL, "B": onp.ones((1, 3, 3, 4))}),
                                  "B has ngroups=3, which must divide"),
    "selective_scan delta_softplus 1": (lambda: selective_scan(**SEL, delta_softplus=1),
                                        "delta_softplus"),
    "selective_state_update wrong x": (lambda: selective_state_update(
        onp.zeros((1, 2, 3)), onp.zeros((1, 5)), onp.zeros((1, 2)), -onp.ones((2, 3)),
        onp.zeros((1, 3)), onp.zeros((1, 3))), r"x must have shape \(batch=1, dim=2\)"),
    "ssd chunk_size 0": (lambda: ssd(onp.ones((1, 4, 2, 2)), onp.ones((1, 4, 2)), -onp.ones(2),
                                     onp.ones((1, 4, 1, 3)), onp.ones((1, 4, 1, 3)), 0),
                         "chunk_size must be an int >= 1"),
    # finite inputs whose result would not be finite: refused, naming the argument and the limit
    "dplr_kernel Lambda 0": (lambda: dplr_kernel(DPLR_ZERO, 8), r"Lambda'\]\[0\].*pole of the "
                             r"Cauchy kernel"),
    "dplr_discretize Lambda 2/dt": (lambda: dplr_discretize(DPLR_POLE), r"Lambda'\]\[0\].*of "
                                    r"2/dt = 200, the pole"),
    "diag_scan dt 1e301": (lambda: diag_scan({**S4D, "dt": 1e301}, onp.ones((3, 2)), method="zoh",
                                             output="re"), r"params\['dt'\].*at most 1e\+100"),
    "diag_kernel Re Lambda -1e301": (lambda: diag_kernel(FAR, 4, method="zoh", output="re"),
                                     r"params\['Lambda'\].*at most 1e\+100"),
    "diag_discretize dt 1e200": (lambda: diag_discretize(S4D["Lambda"], S4D["B"], 1e200, "zoh"),
                                 r"dt must have entries of magnitude at most 1e\+100"),
    "discretize zoh dt 1e100": (lambda: ssm.discretize(P["A"], P["B"], 1e100),
                                r"dt \* \|\|\[A B\]\|\|_1 = .* is more than 1e\+08"),
    "selective_scan masked u": (lambda: selective_scan(**{**SEL, "u": masked(SEL["u"])}),
                                "u is a numpy.ma masked array"),
    "ssm_scan masked u": (lambda: ssm.ssm_scan(P, masked(U)), "u is a numpy.ma masked array"),
    "diag_scan masked u": (lambda: diag_scan(S4D, masked(onp.ones((3, 2))), method="zoh",
                                             output="re"), "u is a numpy.ma masked array"),
    "ssd masked x": (lambda: ssd(masked(onp.ones((1, 4, 2, 2))), onp.ones((1, 4, 2)), -onp.ones(2),
                                 onp.ones((1, 4, 1, 3)), onp.ones((1, 4, 1, 3)), 2),
                     "x is a numpy.ma masked array"),
    "maml.adapt masked params": (lambda: maml.adapt({"a": masked(onp.ones(2))},
                                                    lambda p, d: p["a"].sum(), None, inner_lr=0.1),
                                 "masked array"),
    # shapes that mean nothing
    "from_real im (1,)": (lambda: from_real({**RAW, "im": onp.zeros(1)}),
                          r"raw\['im'\] must have shape \(3,\)"),
    "from_real B_im (1, m)": (lambda: from_real({**RAW, "B_im": onp.zeros((1, 2))}),
                              r"raw\['B_im'\] must have shape \(3, 2\)"),
    "complex_to_real_system 2x3 A": (lambda: complex_to_real_system(
        onp.ones((2, 3)), onp.ones((2, 1)), onp.ones((1, 2)), onp.ones((1, 1))),
        r"A must have shape \(2, 2\)"),
    # wrong types: a ValueError, not a TypeError or a KeyError
    "s4d_kernel [params]": (lambda: s4d_kernel([S4D_LAYOUT], 4, method="zoh", output="re"),
                            "params must be a dict"),
    "s4d_kernel missing C": (lambda: s4d_kernel({k: v for k, v in S4D_LAYOUT.items() if k != "C"},
                                                4, method="zoh", output="re"),
                             r"missing \['C'\]"),
}


@pytest.mark.parametrize("name", list(ARGUMENTS))
def test_bad_arguments_raise_value_error_naming_them(name):
    call, match = ARGUMENTS[name]
    with pytest.raises(ValueError, match=match):
        call()


# Finite inputs at the edges of the documented domains (docs/trust.md): finite results.
EDGE = {**S4D, "Lambda": onp.concatenate([[-1e100 + 1e100j], S4D["Lambda"][1:]])}
DPLR_NEAR = {**DPLR, "Lambda": onp.concatenate([[-1e-6], DPLR["Lambda"][1:]])}
DPLR_NEAR["Ct"] = dplr_truncate(DPLR_NEAR, 8)
EDGES = {
    "diag_kernel Lambda -1e100+1e100j": lambda: diag_kernel(EDGE, 6, method="zoh", output="re"),
    "diag_kernel dt 1e100": lambda: diag_kernel({**S4D, "dt": 1e100}, 6, method="zoh",
                                                output="re"),
    "diag_scan Lambda -1e100+1e100j": lambda: diag_scan(EDGE, onp.ones((3, 2)), method="zoh",
                                                        output="re"),
    "diag_convolve dt 1e100 bilinear": lambda: diag_convolve({**S4D, "dt": 1e100},
                                                             onp.ones((3, 2)), method="bilinear",
                                                             output="re"),
    "dplr_kernel Lambda -1e-6": lambda: dplr_kernel(DPLR_NEAR, 8),
    "discretize zoh dt ||[A B]|| 9e7": lambda: ssm.discretize(-onp.eye(3), onp.ones((3, 1)), 3e7),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_finite_inputs_in_the_domain_give_finite_results(name):
    out = EDGES[name]()
    for a in out if isinstance(out, tuple) else (out,):
        assert onp.all(onp.isfinite(a))


def test_a_dplr_kernel_next_to_a_pole_matches_the_dense_kernel():
    """Just outside the refused neighbourhood of a Cauchy pole the kernel is still accurate."""
    dense = ssm.ssm_kernel(dplr_to_dense(DPLR_NEAR), 8)
    onp.testing.assert_allclose(dplr_kernel(DPLR_NEAR, 8), dense, rtol=0,
                                atol=1e-7 * abs(dense).max())


def test_ssd_chunk_size_beyond_the_length_allocates_nothing_more():
    """chunk_size 32768 on 5 steps: the result of chunk_size 5, without a 32768² matrix."""
    import tracemalloc
    rng = onp.random.default_rng(0)
    args = (rng.normal(size=(1, 5, 2, 2)), rng.uniform(0.1, 1, (1, 5, 2)), -onp.ones(2),
            rng.normal(size=(1, 5, 1, 3)), rng.normal(size=(1, 5, 1, 3)))
    tracemalloc.start()
    try:
        big = ssd(*args, 32768)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20
    onp.testing.assert_allclose(big, ssd(*args, 5), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------
# The cross-check command line
# ---------------------------------------------------------------------------------------------

def run_cli(*args, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "ssmref", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(rc, err):
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_cli_vectors_into_a_directory_with_a_foreign_file(tmp_path):
    (tmp_path / "ssm_step.npz").write_bytes(b"my own file")
    rc, out, err = run_cli("vectors", tmp_path, "--cases", "ssm_step")
    assert_one_line_error(rc, err)
    assert (tmp_path / "ssm_step.npz").read_bytes() == b"my own file"


def test_cli_vectors_over_earlier_vectors_is_allowed(tmp_path):
    assert run_cli("vectors", tmp_path, "--cases", "ssm_step")[0] == 0
    assert run_cli("vectors", tmp_path, "--cases", "ssm_step")[0] == 0


def test_cli_vectors_into_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    assert_one_line_error(*run_cli("vectors", tmp_path / "f", "--cases", "ssm_step")[::2])


def test_cli_check_nan_input_names_the_case(small_vectors, tmp_path):
    arrays = storage.read_npz(small_vectors / "ssm_step.npz")
    arrays["A"] = onp.full_like(arrays["A"], onp.nan)
    crosscheck.write_npz(small_vectors / "ssm_step.npz", arrays)
    res = tmp_path / "res"
    res.mkdir()
    rc, out, err = run_cli("check", small_vectors, res)
    assert_one_line_error(rc, err)
    assert "ssm_step" in err and "non-finite" in err


def test_cli_check_complex_result_for_a_real_output(small_vectors, tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    want = crosscheck.load_vectors(small_vectors)["cases"]["ssm_step"]["outputs"]
    onp.savez(res / "ssm_step.npz", **{k: v + 1e-3j for k, v in want.items()})
    rc, out, err = run_cli("check", small_vectors, res)
    assert_one_line_error(rc, err)
    assert "complex" in err


def test_cli_check_kernel_length_runaway_is_refused(tmp_path):
    vec = tmp_path / "vec"
    crosscheck.write_vectors(vec, cases=["ssm_kernel"])
    edit_manifest(vec, **{'"length": 1000': '"length": 1000000000'})
    res = tmp_path / "res"
    res.mkdir()
    rc, out, err = run_cli("check", vec, res, "--mode", "baseline", timeout=60)
    assert_one_line_error(rc, err)
    assert "attrs.length" in err


@pytest.mark.parametrize("argv, match", [(["check", "nope", "nope"], "does not exist"),
                                         (["check"], "the following arguments are required")])
def test_cli_check_misuse(argv, match):
    rc, out, err = run_cli(*argv)
    assert_one_line_error(rc, err)
    assert match in err


# ---------------------------------------------------------------------------------------------
# The adapt command line: every option checked before any work
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--batches", "0"], ["--smoke", "--json", "{tmp}/afile/x"],
                                  ["--smoke", "--json", "{tmp}"], ["--seeds", "-1"]])
def test_cli_adapt_misuse(tmp_path, argv):
    (tmp_path / "afile").write_text("a file, not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, out, err = run_cli("adapt", *argv, timeout=60)
    assert_one_line_error(rc, err)
    assert out == ""                                         # refused before any work


# ---------------------------------------------------------------------------------------------
# The counts in the module docstring
# ---------------------------------------------------------------------------------------------

ATTACKS = {"files": len(ARCHIVES) * len(LOADERS) + len(MODELS), "json": 6, "paths": 7,
           "kills": 12, "arguments": len(ARGUMENTS), "edges": len(EDGES), "crosscheck cli": 8,
           "adapt cli": 4}


def test_the_docstring_counts_the_attacks():
    doc = " ".join(__doc__.split())
    assert f"{len(ARCHIVES)} malformed archives x {len(LOADERS)} loaders" in doc
    assert f"{len(MODELS)} malformed models" in doc
    assert f"arguments of public functions: {len(ARGUMENTS)}" in doc
    assert f"which give finite results: {len(EDGES)}" in doc
