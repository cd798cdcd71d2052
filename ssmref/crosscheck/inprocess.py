"""Checking in-process: a kernel's own test suite compares its outputs with one case of the
vectors, with the checker's tolerances, without writing results files.

    inputs, attrs = load_case(vectors_dir, name)           # the case's inputs (float64 arrays)
    outputs = {"out": my_kernel(...), ...}                  # NumPy arrays or torch tensors
    report = check_case(vectors_dir, name, outputs)         # report.passed; str(report): a table
    assert_case(vectors_dir, name, outputs)                 # CaseAssertionError unless it passes

``outputs`` holds every output the case lists, each with the expected shape, as a NumPy array or
a torch tensor (detached and moved to the CPU first, so a tensor that requires grad is fine;
bfloat16 widened to float32; complex outputs compared as complex numbers).  ``dtype=None`` picks
the tolerances of the vectors' own dtype (the manifest's).  The comparison is the checker's
(:func:`ssmref.crosscheck.report_case`): the same numbers as ``python -m ssmref check``.

Unusable input raises before anything is compared: an unknown case, or a missing or unknown
output name, :class:`UnknownNameError` (a ``ValueError`` and a ``KeyError``); a wrong shape, a
real result for a complex output (or the reverse), outputs that are not a dict,
:class:`VectorsError` (a ``ValueError``); each message names the case and the output.
"""

import collections.abc
import dataclasses
import os
import warnings
from typing import Optional

from ssmref.crosscheck.checker import check_mode, dtype_notes, report_case
from ssmref.crosscheck.files import UnknownNameError, VectorsError, as_result, to_numpy
from ssmref.crosscheck.precision import DEFAULT_K, check_dtype, check_power_limit
from ssmref.crosscheck.registry import load_results, load_vectors
from ssmref.crosscheck.report import format_report


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output of a case, as the checker judged it (``s = max |y|``, see
    :mod:`ssmref.crosscheck`)."""
    name: str
    passed: bool
    max_abs: float                      # max_i |x_i - y_i| (finite entries)
    max_rel: float                      # max_abs / s
    rtol: Optional[float]               # tol_i = rtol |y_i| + tol_abs (None in baseline mode)
    tol_abs: float                      # atol s g(L), or k E_base + atol s in baseline mode
    err_over_tol: float                 # max_i |x_i - y_i| / tol_i; at most 1 passes
    first_bad: Optional[tuple]          # the first failing index (earliest step first), or None
    first_bad_step: Optional[int]       # its position along the sequence axis, if there is one
    n_bad: int                          # entries out of tolerance or not finite
    shape: tuple
    detectable: float = float("nan")    # the smallest relative error the tolerance detects
    within_tolerance: bool = True       # every entry finite and within tolerance
    inconclusive: bool = False          # within tolerance, but detectable > the power limit
    kappa: float = 1.0                  # the output's cancellation factor (scales tol_abs)


@dataclasses.dataclass(frozen=True)
class CaseReport:
    """The checker's verdict on one case: ``passed`` (every output within tolerance *and*
    conclusive), ``inconclusive`` (nothing out of tolerance, but some output's tolerance cannot
    detect a relative error of the power limit: not a pass), ``within_tolerance``, the worst
    ``err_over_tol`` and, by output name, an :class:`OutputCheck`.  ``str(report)`` is the checker's table; ``as_dict()`` the
    report in :func:`ssmref.crosscheck.check`'s format (for ``format_report`` or JSON)."""
    name: str
    passed: bool
    err_over_tol: float
    dtype: str                          # the tolerances' dtype
    outputs: dict                       # output name -> OutputCheck
    notes: tuple
    report: dict = dataclasses.field(repr=False, compare=False)
    inconclusive: bool = False
    within_tolerance: bool = True

    @property
    def failed(self):
        """The names of the outputs that did not pass: out of tolerance, not finite, or
        inconclusive (:attr:`out_of_tolerance` and :attr:`inconclusive_outputs` tell them apart)."""
        return [n for n, o in self.outputs.items() if not o.passed]

    @property
    def out_of_tolerance(self):
        """The names of the outputs out of tolerance or not finite."""
        return [n for n, o in self.outputs.items() if not o.within_tolerance]

    @property
    def inconclusive_outputs(self):
        """The names of the outputs within tolerances too loose to detect the power limit."""
        return [n for n, o in self.outputs.items() if o.inconclusive]

    def as_dict(self):
        return self.report

    def __str__(self):
        return format_report(self.report)


class CaseAssertionError(AssertionError):
    """Raised by :func:`assert_case`: its message is the checker's table, ``.report`` the
    :class:`CaseReport`."""

    def __init__(self, report):
        super().__init__("\n" + str(report))
        self.report = report


def _output_check(row):
    first = tuple(row["first_bad"]) if row["first_bad"] is not None else None
    return OutputCheck(name=row["name"], passed=row["passed"], max_abs=row["max_abs"],
                       max_rel=row["max_rel"], rtol=row["rtol"], tol_abs=row["tol_abs"],
                       err_over_tol=row["err_over_tol"], first_bad=first,
                       first_bad_step=row["first_bad_step"], n_bad=row["n_bad"],
                       shape=tuple(row["shape"]), detectable=row["detectable"],
                       within_tolerance=row["within_tolerance"],
                       inconclusive=row["inconclusive"], kappa=row["kappa"])


def _as_arrays(name, outputs, expected):
    """``outputs`` as checked NumPy arrays, every expected output present, no other."""
    if not isinstance(outputs, collections.abc.Mapping):
        raise VectorsError(f"case {name}: outputs must be a dict output name -> array, got "
                           f"{type(outputs).__name__}")
    missing = [k for k in expected if k not in outputs]
    unknown = sorted(str(k) for k in outputs if k not in expected)
    if missing or unknown:
        raise UnknownNameError(
            f"case {name}: " + "; ".join(
                ([f"output(s) {missing} missing"] if missing else [])
                + ([f"unknown output(s) {unknown}"] if unknown else []))
            + f" (the case's outputs are {sorted(expected)})")
    arrays = {}
    for k, want in expected.items():
        where = f"case {name}: output {k!r}"
        try:
            a = to_numpy(outputs[k])
        except (TypeError, ValueError, RuntimeError) as e:
            raise VectorsError(f"{where}: cannot be read as an array ({e})") from None
        arrays[k] = as_result(a, want, where)
    return arrays


def check_case(vectors_dir, name, outputs, dtype=None, mode="table", *, k=DEFAULT_K, rtol=None,
               atol=None, power_limit=None):
    """Check a port's ``outputs`` (``output name -> array or tensor``) of case ``name`` against
    the vectors in ``vectors_dir``; returns a :class:`CaseReport`.

    ``dtype``: the port's precision, which picks the tolerances (default: the manifest's);
    ``mode``: ``"table"`` or ``"baseline"`` (``k`` its factor); ``rtol`` / ``atol`` replace the
    table's values.  Unusable input raises (see the module's docstring); a failing output does
    not: ``report.passed`` is ``False``.  ``power_limit``: an output within a tolerance that
    cannot detect a relative error of this size is inconclusive (``report.inconclusive``), and
    ``report.passed`` is ``False`` then too (default: the dtype's limit,
    :data:`~ssmref.crosscheck.precision.POWER_LIMITS`: 1 %, float16 2.5 %, bfloat16 15 %).
    """
    if dtype is not None:
        check_dtype(dtype)
    check_mode(mode, k)
    if not isinstance(name, str):
        raise VectorsError(f"a case name must be a str, got {type(name).__name__}")
    vectors = load_vectors(vectors_dir, [name])
    case, vdtype = vectors["cases"][name], vectors["dtype"]
    arrays = _as_arrays(name, outputs, case["outputs"])
    dtype = dtype or vdtype
    power_limit = check_power_limit(power_limit, dtype)
    row = report_case(case, arrays, dtype, mode=mode, k=k, rtol=rtol, atol=atol,
                      power_limit=power_limit)
    notes = dtype_notes(dtype, vdtype)
    report = {"passed": row["passed"], "within_tolerance": row["within_tolerance"],
              "inconclusive": row["inconclusive"], "power_limit": power_limit, "dtype": dtype,
              "vectors_dtype": vdtype, "mode": mode,
              "k": k if mode == "baseline" else None, "vectors_dir": os.fspath(vectors_dir),
              "results_dir": "<in-process>", "notes": notes, "skipped": [], "cases": [row]}
    return CaseReport(name=name, passed=row["passed"], err_over_tol=row["err_over_tol"],
                      dtype=dtype, outputs={o["name"]: _output_check(o) for o in row["outputs"]},
                      notes=tuple(notes + row["notes"]), report=report,
                      inconclusive=row["inconclusive"], within_tolerance=row["within_tolerance"])


def assert_case(vectors_dir, name, outputs, dtype=None, mode="table", **options):
    """:func:`check_case`, raising :class:`CaseAssertionError` (an ``AssertionError`` whose
    message is the checker's table and whose ``.report`` is the :class:`CaseReport`) unless the
    case passes (an inconclusive case raises too: pass ``power_limit=float("inf")`` to accept
    a check that cannot detect small errors); returns the report.  Unusable input raises ``ValueError`` / ``KeyError``."""
    report = check_case(vectors_dir, name, outputs, dtype, mode, **options)
    if not report.passed:
        raise CaseAssertionError(report)
    return report


def assert_case_matches(vectors_dir, results, case, dtype=None, *, mode="table", k=DEFAULT_K):
    """Deprecated: ``assert_case(vectors_dir, case, outputs, dtype, mode)``.  ``results``: a dict
    of outputs or a results directory; unusable input raises ``AssertionError`` here.  Returns the
    case report as a dict."""
    warnings.warn("ssmref.crosscheck.assert_case_matches(vectors_dir, results, case) is "
                  "deprecated; use assert_case(vectors_dir, case, outputs)", DeprecationWarning,
                  stacklevel=2)
    try:
        if isinstance(results, (str, os.PathLike)):
            entry = load_vectors(vectors_dir, [case])["cases"][case]
            results = load_results(results, entry)
        report = assert_case(vectors_dir, case, results, dtype, mode, k=k)
    except VectorsError as e:
        raise AssertionError(str(e)) from None
    return report.report["cases"][0]
