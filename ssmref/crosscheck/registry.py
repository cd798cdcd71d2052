"""Every case and every kind the kit knows, writing the vectors and reading them back.

The families (:mod:`ssmref.crosscheck.families`) define the cases and the checker's rules per
kind; this module gathers them, writes ``OUT_DIR/manifest.json`` and one ``.npz`` per case, and
loads and validates vectors and results.  With ``dtype`` other than float64 every float *input* is
first rounded to that dtype (and stored back as float64), and the expected outputs are computed
in float64 from the rounded inputs: a candidate's error is its own, not input quantization.

With ``certify=True`` each case whose kind has a 40-digit ``reference`` (the SSM kinds: dense,
structured, selective, Mamba-3 and delta rule) also gets ``ref_error``: per output, the normwise relative error
``||y − y_40||_F / ||y_40||_F`` of the expected output as stored, measured against an independent
40-digit recomputation from the same stored inputs (mpmath, an optional dependency).  It is a
separate, slower step (about 90 s for every case on two cores); without it nothing imports mpmath and
the files are the same bytes (the ``.npz`` files are the same bytes either way).
"""

import json
import os
import shutil

import numpy as onp

from ssmref import __version__
from ssmref.crosscheck import vectorset
from ssmref.crosscheck.families import delta, learning, mamba3, selective, ssm, structured
from ssmref.crosscheck.files import (SPEC_VERSION, UnknownNameError, VectorsError, as_result,
                                     one_line, read_manifest, read_npz, select_names, write_npz)
from ssmref.crosscheck.kinds import case_seed
from ssmref.crosscheck.precision import check_dtype, round_to_dtype, rounder
from ssmref.checks import check_array, check_flag
from ssmref.progress import Progress
from ssmref.storage import atomic_write, inside

_FAMILIES = (ssm, structured, learning, selective, mamba3, delta)

#: The checker's rules, by kind name.
KIND_RULES = {k.name: k for family in _FAMILIES for k in family.KINDS}
#: The kind names.
KINDS = tuple(KIND_RULES)
#: Every case, by name, in the order they are written.
CASES = {c.name: c for family in _FAMILIES for c in family.CASES}
#: The inputs the checker itself reads (tolerances, baselines), by kind.
REQUIRED_INPUTS = {name: k.required_inputs for name, k in KIND_RULES.items()}


# ---------------------------------------------------------------------------------------------
# The rules, by kind
# ---------------------------------------------------------------------------------------------

def effective_length(kind, inputs, attrs):
    """The effective length ``L`` of the tolerance's ``g(L)`` (1 for kinds without memory).

    For a recurrence whose errors decay like ``rho^k``, ``L = min(T, 1 / (1 - rho))``: the number
    of past steps whose rounding errors still reach an output (``T`` when ``rho >= 1``).
    """
    return KIND_RULES[kind].effective_length(inputs, attrs)


def output_class(kind, name):
    """``"grad"`` for gradients (and the adapter's trajectory, made of gradient steps), else
    ``"value"``."""
    return KIND_RULES[kind].output_class(name)


def sequence_axis(kind, name):
    """``(axis, label)`` of an output's sequence axis (time ``t``, lag ``k``, adapter ``step``),
    or ``None``; the checker reports the first diverging index along it."""
    return KIND_RULES[kind].sequence_axis(name)


def condition(kind, inputs, attrs):
    """``{output: κ}``: the cancellation factor ``κ = Σ|t_n| / |Σ t_n| >= 1`` of each output that
    sums terms larger than itself (outputs not listed: 1).  Rounding the terms in any order and
    precision leaves an error of ``u Σ|t_n| = u κ |Σ t_n|``, so the tolerance's ``atol`` is
    multiplied by ``κ`` in every dtype, as the float64 certification target is."""
    rules = KIND_RULES[kind]
    return {} if rules.condition is None else dict(rules.condition(inputs, attrs))


#: The forms of :func:`naive_outputs`.
NAIVE_FORMS = ("sequential", "log_depth")


def naive_outputs(kind, inputs, attrs, dtype, form="sequential"):
    """A naive computation carried out in ``dtype``, rounding to ``dtype`` after every operation
    (bfloat16 emulated; matrix products accumulate in float32 for float16 / bfloat16, in ``dtype``
    otherwise); returned as float64 arrays.

    ``form="sequential"``: the step loop (the plain recurrence, the powers ``A^k B`` one by one,
    the reverse recurrence of the VJP, the direct discretization formulas); ``None`` for the kinds
    without a naive baseline (policy, maml, adapter).  ``form="log_depth"``: the associative scan
    of the affine maps (forward, and backward for the VJP) and the kernel's powers by doubling
    (:mod:`ssmref.crosscheck.families.ssm_log_depth`); ``None`` for the kinds without one.
    """
    if form not in NAIVE_FORMS:
        raise ValueError(f"form must be one of {list(NAIVE_FORMS)}, got {form!r}")
    work, R = rounder(dtype)
    naive = getattr(KIND_RULES[kind], "naive" if form == "sequential" else form)
    if naive is None:
        return None
    with onp.errstate(all="ignore"):
        out = naive(inputs, attrs, R, work)
    return {k: _as_stored(v) for k, v in out.items()}


def validate_inputs(kind, inputs, attrs, outputs=None):
    """``ValueError`` unless the inputs and attrs the checker reads have consistent shapes (with
    the expected ``outputs``, when given) and finite values.  Other inputs may hold anything the
    case needs (``adapter_guard`` feeds a NaN batch on purpose)."""
    rules = KIND_RULES[kind]
    missing = [k for k in rules.required_inputs if k not in inputs]
    if missing:
        raise ValueError(f"kind {kind!r} needs inputs {missing}")
    for k in rules.required_inputs:
        want = "c" if k in rules.complex_inputs else "f"
        if inputs[k].dtype.kind != want:
            raise ValueError(f"input {k!r} has dtype {inputs[k].dtype}, expected "
                             f"{'complex' if want == 'c' else 'float'}")
        check_array(f"input {k!r}", inputs[k], complex_ok=True)
    if rules.validate is not None:
        rules.validate(inputs, attrs)
    if outputs is not None and rules.validate_outputs is not None:
        rules.validate_outputs(outputs, inputs, attrs)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _as_stored(value):
    """An expected output as stored: complex128 if complex, else float64."""
    a = onp.asarray(value)
    return a.astype(onp.complex128 if onp.iscomplexobj(a) else onp.float64)


def build_case(name, dtype="float64"):
    """``(inputs, outputs, attrs)`` of case ``name`` with inputs rounded to ``dtype``."""
    check_dtype(dtype)
    case = CASES[name]
    raw, attrs = case.build(onp.random.default_rng(case_seed(name)))
    inputs = {k: round_to_dtype(v, dtype) for k, v in raw.items()}
    outputs = {k: _as_stored(v) for k, v in case.compute(inputs, attrs).items()}
    clash = sorted(set(inputs) & set(outputs))
    if clash:
        raise RuntimeError(f"case {name}: names {clash} are both inputs and outputs")
    return inputs, outputs, attrs


def certified(kind):
    """Whether ``kind`` has a 40-digit reference (then its cases get ``ref_error``)."""
    return KIND_RULES[kind].reference is not None


def ref_errors(kind, inputs, attrs, outputs):
    """``{output: ||y − y_40||_F / ||y_40||_F}`` of the expected ``outputs`` against the kind's
    40-digit recomputation from ``inputs`` (:func:`ssmref.crosscheck.highprec.ref_error`; needs
    mpmath)."""
    rules = KIND_RULES[kind]
    if rules.reference is None:
        raise ValueError(f"kind {kind!r} has no 40-digit reference")
    from ssmref.crosscheck import highprec               # mpmath only on this path
    ref = rules.reference(inputs, attrs)
    if set(ref) != set(outputs):
        raise RuntimeError(f"kind {kind}: the reference has outputs {sorted(ref)}, the case "
                           f"{sorted(outputs)}")
    for k in outputs:
        if onp.shape(ref[k]) != onp.shape(outputs[k]):
            raise RuntimeError(f"kind {kind}: reference {k!r} has shape {onp.shape(ref[k])}, "
                               f"the case {onp.shape(outputs[k])}")
    # flattened: the Frobenius norm does not see the shape, and 0-d arrays become (1,)
    return {k: highprec.ref_error(onp.reshape(outputs[k], -1),
                                  onp.reshape(onp.asarray(ref[k], dtype=object), -1))
            for k in sorted(outputs)}


#: What ``ref_error`` means, recorded in a certified manifest.
CERTIFICATE = {"digits": 40, "error": "||y - y_40||_F / ||y_40||_F per expected output y, "
                                      "y_40 recomputed in 40-digit arithmetic (mpmath) from the "
                                      "stored inputs by an independent algorithm"}


def write_vectors(out_dir, dtype="float64", cases=None, certify=False):
    """Write ``manifest.json`` and one ``.npz`` per case to ``out_dir`` as one set; returns the
    manifest.  ``cases``: names to write (default all of :data:`CASES`).  ``certify``: also
    measure each certified case's ``ref_error`` (:func:`ref_errors`; slow, needs mpmath) and
    record it in its manifest entry.

    The set is built aside and swapped in whole (:mod:`ssmref.crosscheck.vectorset`): a crash
    leaves the old set or the new one.  ``out_dir`` may be missing, empty, or hold one set of
    vectors and nothing else.  With ``cases`` over an existing set of the same dtype and
    version, those cases are added or refreshed and the others kept, listed and unchanged;
    over a set of another dtype or version it is refused.  Each entry records its file's
    ``sha256``, the manifest the set's ``set_id``.  Deterministic: the same ssmref version writes
    the same bytes.
    """
    check_dtype(dtype)
    check_flag("certify", certify)
    names = select_names(cases, CASES, "cases")
    old = vectorset.existing_set(out_dir, lambda d: read_manifest(d, KINDS))
    kept = []
    if old is not None and cases is not None:
        if (old["dtype"], old["ssmref_version"]) != (dtype, __version__):
            raise ValueError(f"{out_dir} holds {old['dtype']} vectors of ssmref "
                             f"{old['ssmref_version']}; adding {dtype} cases of ssmref "
                             f"{__version__} would mix two sets: write every case, or use "
                             f"another directory")
        kept = [c for c in old["cases"] if c["name"] not in names]
    staging = vectorset.staging_dir(out_dir)
    try:
        entries = {}
        for c in kept:                        # the other cases of the set, verified, unchanged
            src = os.path.join(out_dir, c["file"])
            vectorset.verify_file(c, src)
            shutil.copyfile(src, os.path.join(staging, c["file"]))
            entries[c["name"]] = dict(c, sha256=vectorset.file_hash(src))
        progress = Progress("vectors" + (" --certify" if certify else ""), len(names))
        for done, name in enumerate(names):
            progress.update(done, note=name)
            inputs, outputs, attrs = build_case(name, dtype)
            path = os.path.join(staging, f"{name}.npz")
            write_npz(path, {**inputs, **outputs})
            entries[name] = {"name": name, "file": f"{name}.npz", "kind": CASES[name].kind,
                             "inputs": sorted(inputs), "outputs": sorted(outputs),
                             "attrs": attrs, "sha256": vectorset.file_hash(path)}
            if certify and certified(CASES[name].kind):
                entries[name]["ref_error"] = ref_errors(CASES[name].kind, inputs, attrs, outputs)
        order = [n for n in CASES if n in entries] + [n for n in entries if n not in CASES]
        manifest = {"spec_version": SPEC_VERSION, "ssmref_version": __version__, "dtype": dtype,
                    "cases": [entries[n] for n in order]}
        manifest["set_id"] = vectorset.set_id(dtype, manifest["cases"])
        if certify or (kept and "certificate" in old):
            manifest["certificate"] = CERTIFICATE
        text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
        atomic_write(os.path.join(staging, "manifest.json"),
                     lambda f: f.write(text.encode("utf-8")))
        vectorset.swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def _load_case_arrays(vectors_dir, entry):
    try:
        path = inside(vectors_dir, entry["file"], what=f"case {entry['name']}: file")
    except ValueError as e:
        raise VectorsError(str(e)) from None
    arrays = read_npz(path, what=f"case {entry['name']}:")
    missing = [k for k in entry["inputs"] + entry["outputs"] if k not in arrays]
    if missing:
        raise VectorsError(f"case {entry['name']}: {path} lacks {missing}")
    for k in entry["outputs"]:
        a = arrays[k]
        if a.dtype not in (onp.float64, onp.complex128):
            raise VectorsError(f"case {entry['name']}: expected output {k!r} has dtype {a.dtype}, "
                               f"not float64 or complex128")
        if not onp.all(onp.isfinite(a)):
            raise VectorsError(f"case {entry['name']}: expected output {k!r} is not finite")
    inputs = {k: arrays[k] for k in entry["inputs"]}
    try:
        validate_inputs(entry["kind"], inputs, entry["attrs"],
                        {k: arrays[k] for k in entry["outputs"]})
    except (KeyError, ValueError, TypeError) as e:
        raise VectorsError(f"case {entry['name']}: unusable inputs ({one_line(e)})") from None
    vectorset.verify_file(entry, path)
    return {"name": entry["name"], "kind": entry["kind"], "attrs": entry["attrs"],
            "inputs": inputs, "outputs": {k: arrays[k] for k in entry["outputs"]}}


def load_vectors(vectors_dir, cases=None):
    """The validated vectors: ``{"manifest": ..., "dtype": ..., "set_id": ..., "cases": {name:
    {"name", "kind", "attrs", "inputs", "outputs"}}}``; :class:`VectorsError` on anything
    unusable, a file whose hash does not match the manifest's included (``set_id`` is ``None``
    for a manifest written before hashes were recorded)."""
    manifest = read_manifest(vectors_dir, KINDS)
    sid = vectorset.check_hashes(manifest, os.path.join(vectors_dir, "manifest.json"))
    entries = {c["name"]: c for c in manifest["cases"]}
    try:
        names = select_names(cases, entries, "cases")
    except ValueError as e:
        raise UnknownNameError(f"{vectors_dir}: {e}") from None
    return {"manifest": manifest, "dtype": manifest["dtype"], "set_id": sid,
            "cases": {n: _load_case_arrays(vectors_dir, entries[n]) for n in names}}


def load_case(vectors_dir, name):
    """``(inputs, attrs)`` of one case: its inputs as stored (float64 or complex128, rounded to
    the manifest's dtype) and its attributes; :class:`UnknownNameError` (a ``ValueError`` and a
    ``KeyError``) for a case the vectors do not hold, :class:`VectorsError` if unusable."""
    case = load_vectors(vectors_dir, [_case_name(name)])["cases"][name]
    return case["inputs"], case["attrs"]


def load_expected(vectors_dir, name):
    """The expected outputs of one case, ``output name -> float64 or complex128 array``."""
    return load_vectors(vectors_dir, [_case_name(name)])["cases"][name]["outputs"]


def _case_name(name):
    if not isinstance(name, str):
        raise VectorsError(f"a case name must be a str, got {type(name).__name__}")
    return name


#: The results file's entry that records the set id of the vectors a port read.
SET_ID_KEY = "_set_id"


def results_set_id(arrays, where):
    """The set id a results file records (its ``_set_id``: a string, or a 0-d or 1-element
    string array), or ``None``; :class:`VectorsError` if it is not a string."""
    if SET_ID_KEY not in arrays:
        return None
    a = arrays[SET_ID_KEY]
    if a.dtype.kind != "U" or a.size != 1:
        raise VectorsError(f"{where}: {SET_ID_KEY} must be the vectors' set id as a string, got "
                           f"dtype {a.dtype} and shape {a.shape}")
    return str(a.reshape(-1)[0])


def load_results(results_dir, case, set_id=None):
    """``output name -> float64 array`` from ``results_dir/<case>.npz``, every expected output
    present with the expected shape; :class:`VectorsError` otherwise, or if the file records
    (``_set_id``) a set id other than ``set_id`` (when given)."""
    return read_results(results_dir, case, set_id)[0]


def read_results(results_dir, case, set_id=None):
    """``(outputs, recorded set id or None)``: :func:`load_results` and the ``_set_id`` the
    results file records."""
    try:
        path = inside(results_dir, case["name"] + ".npz", what=f"results of case {case['name']}:")
    except ValueError as e:
        raise VectorsError(str(e)) from None
    arrays = read_npz(path, what=f"results of case {case['name']}:")
    recorded = results_set_id(arrays, f"results of case {case['name']}: {path}")
    if set_id is not None and recorded is not None and recorded != set_id:
        raise VectorsError(f"results of case {case['name']}: {path} was written for vectors "
                           f"{recorded}, these are {set_id}: run the port again on these vectors")
    out = {}
    for k, want in case["outputs"].items():
        if k not in arrays:
            raise VectorsError(f"results of case {case['name']}: {path} lacks output {k!r} "
                               f"(expected {sorted(case['outputs'])})")
        out[k] = as_result(arrays[k], want, f"results of case {case['name']}: output {k!r}")
    return out, recorded
