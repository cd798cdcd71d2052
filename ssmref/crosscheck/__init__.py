"""The cross-check kit: float64 golden vectors any language can read, and a checker whose
tolerances have a reason.

Contract (``CONTRACT.md``, "Cross-check kit"; ``docs/crosscheck.md`` is the same spec in prose)::

    python -m ssmref vectors OUT_DIR [--dtype float64|float32|float16|bfloat16] [--cases NAME ...]
    python -m ssmref check VECTORS_DIR RESULTS_DIR [--dtype ...] [--mode table|baseline] [--k K]

* ``OUT_DIR/manifest.json``: ``{"spec_version": "1", "ssmref_version", "dtype", "cases": [{"name",
  "file", "kind", "inputs": [...], "outputs": [...], "attrs": {...}}]}``, written with sorted keys
  and a fixed indent.  ``OUT_DIR/<name>.npz``: the case's inputs and expected outputs, float64
  (integer actions and labels int64), no pickles, readable with ``numpy.load``.  Same version, same
  arguments: the same files byte for byte (zip entries carry a fixed timestamp; ``numpy.savez``
  stamps the current time, so it is not used).
* With ``dtype`` other than float64 every float *input* is first rounded to that dtype (bfloat16:
  float64 -> float32 -> round-to-nearest-even to 8 mantissa bits, as ``torch`` converts) and stored
  back as float64, and the expected outputs are computed in float64 from the rounded inputs: a
  candidate's error is its own, not input quantization.
* ``RESULTS_DIR/<name>.npz`` holds every key of the case's ``"outputs"``, each with the expected
  shape, any real dtype (cast to float64).
* ``check`` exits 0 when every output is within tolerance, 1 when any is not or is non-finite (the
  report names case, output, error, tolerance and the first diverging index: for sequences, the
  time step), 2 on unusable input (missing directory, file or key, wrong shape, bad manifest, a
  file whose hash does not match, results of another set), with a one-line message on stderr and
  no traceback, and 3 when nothing failed but some output is within a tolerance that cannot
  detect a relative error of its dtype's :data:`POWER_LIMITS` (inconclusive: never a pass).
* The manifest also holds ``"set_id"`` and each entry the ``"sha256"`` of its file
  (:mod:`.vectorset`); a results file records the set id it was computed for as ``_set_id``.

Error measures, per output, for the expected ``y`` (float64) and the candidate ``x``::

    s        = max_i |y_i|          (the output's scale; 1 if y is all zeros)
    max_abs  = max_i |x_i - y_i|
    max_rel  = max_abs / s          (normwise relative error)
    passes iff every x_i is finite and |x_i - y_i| <= tol_i, where
    tol_i    = rtol |y_i| + atol s g(L)              table mode
    tol_i    = k E_base   + atol s                   baseline mode, E_base = max(E_naive, E_log_depth)

``(rtol, atol)`` come from :data:`VALUE_TOLERANCES` (torch.testing's defaults; Mamba's kernel tests
for the fp16 / bf16 atol), doubled for gradients (:data:`GRAD_FACTOR`).  ``atol`` is relative to
the output's scale ``s``: an SSM's rounding errors are proportional to the size of the signal, not
of each entry, which may pass through zero.  ``g(L) = max(1, sqrt(L / 64))`` grows the tolerance
with the effective memory ``L = min(T, 1 / (1 - rho(A)))`` of a recurrence: one rounding error
per step, damped by ``A^k``, accumulates like a random walk over the last ``L`` steps.  Measured
(float32: the naive recurrence, and a chunked torch scan): normwise errors 1e-7 to 3e-7 at
``L = 10``, 7e-7 at ``L = 1000``, 1.8e-6 for gradients: 11 to 130 times below the tolerance,
while the wrong convention (the output reads the old state) is 1e4 times above.  Baseline mode
runs the naive computations (:func:`naive_outputs`) in the target dtype, rounding after every
operation (bfloat16 emulated), for the SSM kinds (dense, structured, selective) and
discretization: the step loop and, for the dense scan, its gradients and the kernel, the log-depth
form (associative scan, doubling), whose
errors grow faster with ``L`` (up to 24 times the step loop's at ``rho = 0.999`` in float32);
``E_base`` is the larger.  The policy, MAML and adapter kinds use the table.  Complex outputs
(structured, complex selective) are compared as complex numbers; the effective length of the
structured and selective kinds comes from their own decays (``|exp(ΔΛ)|``, ``exp(Δ_t A)``).

Python API: :func:`write_vectors`, :func:`load_vectors`, :func:`check`, :func:`format_report`,
:func:`round_to_dtype`, :func:`tolerance`, :func:`naive_outputs`.  In-process checking, for a
kernel's own test suite (:mod:`.inprocess`): :func:`load_case` (``(inputs, attrs)``),
:func:`load_expected`, :func:`check_case` (a :class:`CaseReport`), :func:`assert_case`; arrays
with :func:`assert_close` (``(actual, expected)``, numpy's and torch's order; the older
``assert_matches(expected, actual)`` and ``assert_case_matches`` still work, with a
``DeprecationWarning``).  Command line:
:func:`add_vectors_arguments` / :func:`run_vectors`, :func:`add_check_arguments` /
:func:`run_check` (registered in :mod:`ssmref.cli`), or ``python -m ssmref.crosscheck``.

Layout, in dependency order: :mod:`.precision` (rounding to a dtype, naive arithmetic in it,
the tolerance table), :mod:`.files` (deterministic ``.npz`` files, the manifest's structure,
results), :mod:`.kinds` (what a case and a kind are), :mod:`.families` (the cases and the
checker's rules of each family of models: :mod:`.families.ssm`, :mod:`.families.learning`
(the policy; with :mod:`.families.maml` and :mod:`.families.adapter`)),
:mod:`.vectorset` (hashes, the set id, replacing a set whole), :mod:`.registry` (every case
and kind; writing and loading vectors), :mod:`.report`
(:func:`format_report`), :mod:`.checker` (comparing, :func:`check`, :func:`assert_close`),
:mod:`.inprocess` (:func:`check_case`, :func:`assert_case`), :mod:`.cli` (the command line).
"""

from ssmref.crosscheck.checker import assert_close, assert_matches, check, compare, report_case
from ssmref.crosscheck.cli import (add_check_arguments, add_vectors_arguments, main, run_check,
                                   run_vectors)
from ssmref.crosscheck.families.adapter import run_adapter_case
from ssmref.crosscheck.files import (SPEC_VERSION, UnknownNameError, VectorsError, read_npz,
                                     to_numpy, write_npz)
from ssmref.crosscheck.inprocess import (CaseAssertionError, CaseReport, OutputCheck, assert_case,
                                         assert_case_matches, check_case)
from ssmref.crosscheck.kinds import Case, Kind
from ssmref.crosscheck.precision import (DEFAULT_K, DTYPES, GRAD_FACTOR, LENGTH_REF, POWER_LIMIT,
                                         POWER_LIMITS, detectable, VALUE_TOLERANCES, length_factor, round_to_dtype,
                                         tolerance)
from ssmref.crosscheck.registry import (CASES, KIND_RULES, KINDS, REQUIRED_INPUTS, build_case, condition,
                                        effective_length, load_case, load_expected, load_results,
                                        load_vectors, naive_outputs, output_class, sequence_axis,
                                        write_vectors)
from ssmref.crosscheck.report import format_report

__all__ = ["SPEC_VERSION", "DTYPES", "KINDS", "CASES", "VALUE_TOLERANCES", "GRAD_FACTOR",
           "DEFAULT_K", "POWER_LIMIT", "POWER_LIMITS", "detectable", "condition", "VectorsError",
           "UnknownNameError", "round_to_dtype", "tolerance",
           "length_factor", "effective_length", "write_vectors", "load_vectors", "load_case",
           "load_expected", "naive_outputs", "check", "report_case", "format_report",
           "check_case", "assert_case", "CaseReport", "OutputCheck", "CaseAssertionError",
           "assert_close", "assert_matches", "assert_case_matches", "to_numpy",
           "add_vectors_arguments", "run_vectors", "add_check_arguments", "run_check", "main"]
