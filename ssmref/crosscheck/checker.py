"""Comparing a candidate's outputs with the vectors: the error measures of one output, the
report of a case and of a results directory, and array assertions for other projects' tests
(:func:`assert_close`)."""

import math
import os
import warnings

import numpy as onp

from ssmref.checks import check_flag
from ssmref.crosscheck.files import VectorsError, as_result, to_numpy
from ssmref.crosscheck.precision import (DEFAULT_K, POWER_LIMIT, check_dtype, check_power_limit,
                                         detectable, length_factor, tolerance)
from ssmref.crosscheck.registry import (KINDS, condition, effective_length, load_vectors,
                                        naive_outputs, output_class, read_results, sequence_axis)
from ssmref.crosscheck.report import format_report


def compare(expected, actual, *, rtol, atol, seq_axis=None, err_base=None, k=DEFAULT_K,
            power_limit=POWER_LIMIT):
    """The error measures of one output (see :mod:`ssmref.crosscheck`) as a dict.

    ``atol`` is relative to the output's scale (it is multiplied by ``s``).  With ``err_base``
    (baseline mode) ``tol_i = k err_base + atol s``; otherwise ``tol_i = rtol |y_i| + atol s``.
    ``detectable`` is the smallest relative error the tolerance detects (``rtol + tol_abs / s``);
    an output within tolerance is ``inconclusive`` (and not ``passed``) when it exceeds
    ``power_limit``.
    """
    y, x = onp.asarray(expected), onp.asarray(actual)
    if onp.iscomplexobj(x) and not onp.iscomplexobj(y):
        raise VectorsError(f"the result is complex ({x.dtype}) but the expected output is real")
    if onp.iscomplexobj(y) and not onp.iscomplexobj(x):
        raise VectorsError(f"the result is real ({x.dtype}) but the expected output is complex")
    work = onp.complex128 if onp.iscomplexobj(y) else onp.float64
    y, x = y.astype(work), x.astype(work)        # |x - y| is the modulus for complex outputs
    if x.shape != y.shape:
        raise VectorsError(f"shape {x.shape} does not match the expected {y.shape}")
    s = float(onp.max(onp.abs(y))) if y.size else 0.0
    s = s if s > 0 else 1.0
    with onp.errstate(all="ignore"):
        err = onp.abs(x - y)
        if err_base is None:
            tol = rtol * onp.abs(y) + atol * s
        else:
            tol = onp.full(y.shape, k * err_base + atol * s)
        finite = onp.isfinite(x)
        bad = ~finite | ~(err <= tol)
        finite_err = onp.where(finite, err, 0.0)
        max_abs = float(onp.max(finite_err)) if y.size else 0.0
        ratio = onp.where(err == 0, 0.0, err / tol)              # 0 / 0: an exact entry
        ratio = float(onp.max(onp.where(finite, ratio, 0.0))) if y.size else 0.0
    floor = (k * err_base + atol * s) if err_base is not None else atol * s
    within = not bool(onp.any(bad))
    power = detectable(rtol if err_base is None else None, floor, s)
    inconclusive = within and power > power_limit
    result = {"shape": list(y.shape), "scale": s, "max_abs": max_abs, "max_rel": max_abs / s,
              "rtol": None if err_base is not None else rtol, "tol_abs": floor,
              "err_over_tol": ratio,
              "n_bad": int(onp.sum(bad)), "nan": int(onp.sum(onp.isnan(x))),
              "inf": int(onp.sum(onp.isinf(x))), "first_bad": None, "first_bad_step": None,
              "seq_label": None, "bad_value": None, "bad_expected": None, "bad_tol": None,
              "err_naive": None, "err_log_depth": None, "err_base": err_base,
              "detectable": power, "within_tolerance": within, "inconclusive": inconclusive,
              "passed": within and not inconclusive}
    if onp.any(bad):
        if seq_axis is not None:
            axis, label = seq_axis
            first = onp.argwhere(onp.moveaxis(bad, axis, 0))[0]       # earliest step first
            index = tuple(onp.insert(onp.delete(first, 0), axis, first[0]))
            result["first_bad_step"], result["seq_label"] = int(first[0]), label
        else:
            index = tuple(onp.argwhere(bad)[0])
        result["first_bad"] = [int(i) for i in index]
        result["bad_value"] = _scalar(x[index])
        result["bad_expected"] = _scalar(y[index])
        result["bad_tol"] = float(tol[index])
    return result


def _scalar(v):
    """A float, or ``[re, im]`` for a complex value (JSON has no complex numbers)."""
    return [float(v.real), float(v.imag)] if onp.iscomplexobj(v) else float(v)


def dtype_notes(dtype, vectors_dtype):
    """The report's notes when the candidate's ``dtype`` is not the vectors' own."""
    if dtype == vectors_dtype:
        return []
    if vectors_dtype == "float64":
        return [f"the vectors' inputs are float64, not rounded to {dtype}: the errors include "
                f"the rounding of the inputs (write them with --dtype {dtype})"]
    return [f"the vectors were written for {vectors_dtype}; checking with {dtype} tolerances"]


def check_mode(mode, k):
    if mode not in ("table", "baseline"):
        raise ValueError(f"mode must be 'table' or 'baseline', got {mode!r}")
    if isinstance(k, bool) or not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
        raise ValueError(f"k must be a positive finite number, got {k!r}")


def report_case(case, actual, dtype=None, *, mode="table", k=DEFAULT_K, rtol=None, atol=None,
                vectors_dtype=None, power_limit=None):
    """The report of one case (a dict from :func:`load_vectors`'s ``"cases"``) for the outputs
    ``actual`` (``name -> array``), as a dict; see :func:`check`.  (In-process checking from a
    vectors directory and a case name: :func:`ssmref.crosscheck.check_case`.)"""
    dtype = check_dtype(dtype or vectors_dtype or "float64")
    check_mode(mode, k)
    kind, attrs = case["kind"], case["attrs"]
    L = effective_length(kind, case["inputs"], attrs)
    kappas = condition(kind, case["inputs"], attrs)
    power_limit = check_power_limit(power_limit, dtype)
    notes = []
    naive = {}
    if mode == "baseline":
        for form in ("sequential", "log_depth"):
            out = naive_outputs(kind, case["inputs"], attrs, dtype, form=form)
            if out is not None:
                naive[form] = out
        if not naive:
            notes.append(f"no naive baseline for kind {kind!r}: table tolerances used")
    outputs = []
    for name, expected in case["outputs"].items():
        if name not in actual:
            raise VectorsError(f"results of case {case['name']}: output {name!r} is missing")
        got = as_result(actual[name], expected,
                         f"results of case {case['name']}: output {name!r}")
        cls, kappa = output_class(kind, name), kappas.get(name, 1.0)
        errs = {}                            # baseline: E of each naive form, if finite
        for form, out in naive.items():
            e = onp.abs(out[name] - expected)
            if onp.all(onp.isfinite(e)):
                errs[form] = float(onp.max(e)) if e.size else 0.0
            else:
                notes.append(f"{name}: the {form.replace('_', '-')} naive {dtype} computation is "
                             f"not finite" + ("; table used" if len(naive) == 1 else ""))
        if errs:                             # no length factor: the naive errors grow with L
            _, a = tolerance(dtype, cls, 1, rtol=rtol, atol=atol, kappa=kappa)
            res = compare(expected, got, rtol=None, atol=a, err_base=max(errs.values()), k=k,
                          seq_axis=sequence_axis(kind, name), power_limit=power_limit)
            res.update(err_naive=errs.get("sequential"), err_log_depth=errs.get("log_depth"))
        else:
            r, a = tolerance(dtype, cls, L, rtol=rtol, atol=atol, kappa=kappa)
            res = compare(expected, got, rtol=r, atol=a, seq_axis=sequence_axis(kind, name),
                          power_limit=power_limit)
        res.update(name=name, cls=cls, kappa=kappa)
        outputs.append(res)
    return _case_row(case["name"], kind, L, notes, outputs)


def _case_row(name, kind, length, notes, outputs):
    """A case's report from its outputs' rows: ``passed`` when every output passed (within its
    tolerance, conclusively); ``inconclusive`` when none failed but some are inconclusive."""
    within = all(o["within_tolerance"] for o in outputs)
    return {"name": name, "kind": kind, "length": length, "length_factor": length_factor(length),
            "passed": all(o["passed"] for o in outputs), "within_tolerance": within,
            "inconclusive": within and any(o["inconclusive"] for o in outputs),
            "notes": notes, "outputs": outputs,
            "err_over_tol": max((o["err_over_tol"] for o in outputs), default=0.0),
            "detectable": max((o["detectable"] for o in outputs), default=0.0)}


def summary(cases):
    """``(passed, within_tolerance, inconclusive)`` of a list of case reports."""
    within = all(c["within_tolerance"] for c in cases)
    return (all(c["passed"] for c in cases), within,
            within and any(c["inconclusive"] for c in cases))


def check(vectors_dir, results_dir, dtype=None, mode="table", k=DEFAULT_K, cases=None,
          rtol=None, atol=None, skip_missing=False, power_limit=None):
    """Compare ``results_dir/<case>.npz`` with the vectors in ``vectors_dir``; returns the report.

    ``dtype``: the candidate's precision, which picks the tolerances (default: the manifest's).
    ``mode``: ``"table"`` (``tol_i = rtol |y_i| + atol s g(L)``) or ``"baseline"``
    (``tol_i = k E_base + atol s``, ``E_base = max(E_naive, E_log_depth)``: the errors of the
    naive step loop and, where the kind has one, of the naive log-depth form, both in ``dtype``).  ``cases``: names to check (default all in the manifest;
    each must have a results file, unless ``skip_missing``: then the cases without a results file
    are skipped and listed in ``"skipped"`` and the notes; at least one must be present).
    ``rtol`` / ``atol`` replace the table's values (before the gradient, length and κ factors).
    ``power_limit``: an output within tolerance whose tolerance cannot detect a relative error
    of this size (``detectable > power_limit``) is inconclusive, not passed (default: the
    dtype's limit, :data:`~ssmref.crosscheck.precision.POWER_LIMITS`).
    Complex expected outputs are compared with complex results (the error is the modulus
    ``|x_i - y_i|``); a real result for a complex output, or the reverse, is unusable input.
    Raises :class:`VectorsError` on unusable input.

    The report: ``{"passed", "within_tolerance", "inconclusive", "power_limit", "dtype",
    "vectors_dtype", "mode", "k", "vectors_dir", "results_dir", "set_id", "notes", "skipped",
    "cases": [{"name", "kind", "length", "length_factor", "passed", "within_tolerance",
    "inconclusive", "notes", "err_over_tol", "detectable", "outputs": [{"name", "cls", "kappa",
    "shape", "scale", "max_abs", "max_rel", "rtol", "tol_abs", "detectable", "err_over_tol",
    "n_bad", "nan", "inf", "first_bad", "first_bad_step", "seq_label", "bad_value",
    "bad_expected", "bad_tol", "err_naive", "err_log_depth", "err_base", "within_tolerance",
    "inconclusive", "passed"}]}]}``: ``passed`` means within tolerance *and* conclusive;
    ``inconclusive`` that nothing failed but some output's ``detectable`` (the smallest relative
    error its tolerance detects) exceeds ``power_limit``; ``kappa`` is the output's cancellation
    factor; ``tol_abs`` is the absolute part of the tolerance (``atol s g(L)``, or
    ``k E_base + atol s``; ``err_*`` are ``None`` in table mode), ``err_over_tol``
    the largest ``|x_i - y_i| / tol_i`` (of the output; of its outputs for a case), ``first_bad``
    the first failing index (earliest along the sequence axis ``seq_label``); ``bad_value`` and
    ``bad_expected`` are ``[re, im]`` for complex outputs.
    """
    if dtype is not None:
        check_dtype(dtype)
    check_mode(mode, k)
    if not os.path.isdir(results_dir):
        raise VectorsError(f"results directory {results_dir} does not exist")
    vectors = load_vectors(vectors_dir, cases)
    vdtype = vectors["dtype"]
    dtype = dtype or vdtype
    power_limit = check_power_limit(power_limit, dtype)
    notes = dtype_notes(dtype, vdtype)
    check_flag("skip_missing", skip_missing)
    have = {name for name in vectors["cases"]
            if os.path.lexists(os.path.join(results_dir, name + ".npz"))}
    missing = [name for name in vectors["cases"] if name not in have]
    if missing and not skip_missing:
        raise VectorsError(f"{results_dir} has no results for {len(missing)} of "
                           f"{len(vectors['cases'])} cases ({_listed(missing)}): check only the "
                           f"cases present with --skip-missing, or name them with --cases")
    present = {name: case for name, case in vectors["cases"].items() if name in have}
    skipped = missing
    if not present:
        raise VectorsError(f"results directory {results_dir} holds no results for any case of "
                           f"the vectors")
    if skipped:
        notes.append(f"skipped {len(skipped)} case(s) without results: {', '.join(skipped)}")
    results, unrecorded = [], []
    for case in present.values():
        outputs, recorded = read_results(results_dir, case, vectors["set_id"])
        if recorded is None and vectors["set_id"] is not None:
            unrecorded.append(case["name"])
        results.append(report_case(case, outputs, dtype, mode=mode, k=k, rtol=rtol, atol=atol,
                                   power_limit=power_limit))
    if unrecorded:
        notes.append(f"{len(unrecorded)} of {len(results)} results files do not record the set "
                     f"id of the vectors they were computed from (_set_id, these are "
                     f"{vectors['set_id']}): they cannot be told from results of other vectors")
    passed, within, inconclusive = summary(results)
    return {"passed": passed, "within_tolerance": within, "inconclusive": inconclusive,
            "power_limit": power_limit, "dtype": dtype, "vectors_dtype": vdtype,
            "mode": mode, "k": k if mode == "baseline" else None,
            "vectors_dir": os.fspath(vectors_dir), "results_dir": os.fspath(results_dir),
            "set_id": vectors["set_id"], "notes": notes, "skipped": skipped, "cases": results}


def _listed(names, most=3):
    """``a, b, c and 4 more``."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


# --- array assertions for other projects' tests ------------------------------------------------

def assert_close(actual, expected, *, dtype="float64", kind=None, name="output", length=1,
                 rtol=None, atol=None, power_limit=None):
    """Raise ``AssertionError`` (with the checker's table) unless ``actual`` matches ``expected``
    within the tolerance for ``dtype``; returns the case report (a dict) otherwise.  The order is
    numpy's and torch's (``assert_allclose(actual, desired)``, ``assert_close(actual, expected)``).

    ``actual`` / ``expected``: arrays (NumPy, or torch tensors: detached, bfloat16 widened), or
    dicts ``name -> array`` (every expected key must be in ``actual``).  ``kind``: ``"value"``
    (default) or ``"grad"`` picks the table's row; a case kind (``"ssm_scan"``, ``"policy"``, ...)
    picks the row and the sequence axis from each output's name.  ``length``: the effective
    length ``L`` of :func:`length_factor`.  ``rtol`` / ``atol`` replace the table's values.
    Arrays of another shape raise ``AssertionError`` too, and so does an inconclusive output
    (its tolerance cannot detect a relative error of ``power_limit``).
    """
    check_dtype(dtype)
    power_limit = check_power_limit(power_limit, dtype)
    single = not isinstance(expected, dict)
    if single:
        expected, actual = {name: expected}, {name: actual}
    elif not hasattr(actual, "keys"):
        raise ValueError(f"actual must be a dict like expected, got {type(actual).__name__}")
    if kind not in (None, "value", "grad") + KINDS:
        raise ValueError(f"kind must be 'value', 'grad' or one of {list(KINDS)}, got {kind!r}")
    rows = []
    for key, y in expected.items():
        y = to_numpy(y)
        if key not in actual:
            raise AssertionError(f"{key}: missing from actual (has {sorted(actual)})")
        x = to_numpy(actual[key])
        if x.shape != y.shape:
            raise AssertionError(f"{key}: shape {x.shape}, expected {y.shape}")
        if kind in KINDS:
            cls, seq = output_class(kind, key), sequence_axis(kind, key)
        else:
            cls, seq = (kind or "value"), None
        r, a = tolerance(dtype, cls, length, rtol=rtol, atol=atol)
        try:
            res = compare(y, x, rtol=r, atol=a, seq_axis=seq, power_limit=power_limit)
        except VectorsError as e:                  # complex against real, either way round
            raise AssertionError(f"{key}: {e}") from None
        res.update(name=key, cls=cls, kappa=1.0)
        rows.append(res)
    case = _case_row(name if single else (name if name != "output" else "arrays"),
                     kind or "value", float(length), [], rows)
    if not case["passed"]:
        report = {"passed": False, "within_tolerance": case["within_tolerance"],
                  "inconclusive": case["inconclusive"], "power_limit": power_limit,
                  "dtype": dtype, "vectors_dtype": dtype, "mode": "table", "k": None,
                  "vectors_dir": "<arrays>", "results_dir": "<arrays>", "notes": [],
                  "cases": [case]}
        raise AssertionError("\n" + format_report(report))
    return case


def assert_matches(expected, actual, **options):
    """Deprecated: ``assert_close(actual, expected, **options)`` (this one takes ``expected``
    first, the reverse of numpy's and torch's order)."""
    warnings.warn("ssmref.crosscheck.assert_matches(expected, actual) is deprecated; use "
                  "assert_close(actual, expected), numpy's and torch's order", DeprecationWarning,
                  stacklevel=2)
    return assert_close(actual, expected, **options)
