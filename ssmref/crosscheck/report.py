"""The checker's report as text: one line per case that passed or is inconclusive (``verbose``:
a table for every case), a table per case that failed (one row per output), each failure in
full, the remedy for inconclusive outputs, and a summary line."""

import numpy as onp

#: What to do about an inconclusive output, in one line.
REMEDY = ("keep the state and the outputs in float32 and check them with --dtype float32, or "
          "check a case with a shorter memory")


def _where(o):
    if o["first_bad"] is None:
        return "-"
    index = str(tuple(o["first_bad"]))
    if o["first_bad_step"] is not None:
        return f"{o['seq_label']}={o['first_bad_step']} {index}"
    return index


def _number(v):
    """A float, or a complex from ``[re, im]``; printed with ``repr`` (17 significant digits), so a
    difference in the last digits shows."""
    return complex(*v) if isinstance(v, list) else float(v)


def _status(o):
    if o.get("inconclusive"):
        return "INCONCLUSIVE"
    if o["passed"]:
        return "ok"
    flags = [f"{o['nan']} NaN" if o["nan"] else "", f"{o['inf']} inf" if o["inf"] else ""]
    return "FAIL" + "".join(f" ({f})" for f in flags if f)


def _names(names, most=4):
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _verdict(c):
    return "PASS" if c["passed"] else ("INCONCLUSIVE" if c.get("inconclusive") else "FAIL")


def _failure(c, o):
    got, want = _number(o["bad_value"]), _number(o["bad_expected"])
    first = (f"first at {_where(o)}: got {got!r}, expected {want!r}, |error| "
             f"{abs(got - want):.3e} > tolerance {o['bad_tol']:.3e}")
    return (f"FAIL {c['name']}/{o['name']}: max_abs {o['max_abs']:.3e} (max_rel "
            f"{o['max_rel']:.3e}), {o['n_bad']} of {int(onp.prod(o['shape']))} entries out of "
            f"tolerance" + (f" ({o['nan']} NaN)" if o["nan"] else "")
            + (f" ({o['inf']} inf)" if o["inf"] else "") + f"; {first}")


def _inconclusive(c, o, dtype, limit):
    return (f"INCONCLUSIVE {c['name']}/{o['name']}: within the {dtype} tolerance, which cannot "
            f"detect relative errors below {o['detectable']:.2g} (limit {limit:.2g})")


def _table(c, mode):
    head = ("output", "shape", "scale", "max_abs", "max_rel",
            "base_abs" if mode == "baseline" else "rtol", "tol_abs", "detects", "err_over_tol",
            "first bad", "")
    rows = [head]
    for o in c["outputs"]:
        if mode == "baseline":           # E_base, or the table's rtol where there is none
            third = (f"{o['err_base']:.2e}" if o.get("err_base") is not None
                     else f"rtol {o['rtol']:.1e}")
        else:
            third = f"{o['rtol']:.2e}"
        kappa = o.get("kappa", 1.0)
        rows.append((o["name"] + (" (grad)" if o["cls"] == "grad" else "")
                     + (f" (κ {kappa:.3g})" if kappa > 1 else ""),
                     "(" + ", ".join(map(str, o["shape"])) + ")", f"{o['scale']:.2e}",
                     f"{o['max_abs']:.2e}", f"{o['max_rel']:.2e}", third, f"{o['tol_abs']:.2e}",
                     f"{o.get('detectable', float('nan')):.1e}", f"{o['err_over_tol']:.3g}",
                     _where(o), _status(o)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def format_report(report, verbose=True):
    """The report as text.  ``verbose``: a table for every case and a line for every
    inconclusive output; otherwise one line per case that passed or is inconclusive (its worst
    ``err_over_tol`` and the smallest relative error its tolerance detects) and the table only
    for the cases that failed.  Every failure gets its line, and an inconclusive run its remedy."""
    mode, dtype = report["mode"], report["dtype"]
    limit = report.get("power_limit", float("inf"))
    lines = [f"ssmref check: {dtype} tolerances, {mode} mode"
             + (f" (k = {report['k']:g})" if mode == "baseline" else "")
             + f", vectors {report['vectors_dir']} ({report['vectors_dtype']})"]
    lines += [f"note: {n}" for n in report.get("notes", [])]
    failures, inconclusive = [], []
    for c in report["cases"]:
        full = verbose or not c.get("within_tolerance", c["passed"]) or c["notes"]
        if full:
            lines.append("")
        factor = (f", length factor {c['length_factor']:.2f}" if mode == "table" or c["notes"]
                  else "")
        weak = [o["name"] for o in c["outputs"] if o.get("inconclusive")]
        detects = max((o.get("detectable", 0.0) for o in c["outputs"]), default=0.0)
        lines.append(f"{c['name']} [{c['kind']}]  {_verdict(c)}  (effective length "
                     f"{c['length']:.0f}{factor}" + ("" if full else
                     f"; worst err_over_tol {c['err_over_tol']:.3g}, detects {detects:.1e}")
                     + ")" + (f"  inconclusive: {_names(weak)}" if weak and not full else ""))
        for o in c["outputs"]:
            if o.get("inconclusive"):
                inconclusive.append(_inconclusive(c, o, dtype, limit))
            elif not o["passed"]:
                failures.append(_failure(c, o))
        if not full:
            continue
        lines += [f"  note: {n}" for n in c["notes"]]
        lines += _table(c, mode)
        lines.append(f"  worst err_over_tol {c['err_over_tol']:.3g} (at most 1 passes)")
    n_out = sum(len(c["outputs"]) for c in report["cases"])
    n_cases = len(report["cases"])
    lines.append("")
    lines += failures
    if verbose:
        lines += inconclusive
    if inconclusive:
        n_inc = len(inconclusive)
        lines.append(f"{'' if failures else 'INCONCLUSIVE: '}{n_inc} of {n_out} outputs in "
                     f"{sum(bool(c.get('inconclusive')) for c in report['cases'])} of {n_cases} "
                     f"cases are within tolerances that cannot detect a {limit:.2g} relative "
                     f"error (column 'detects'), not a pass; remedy: {REMEDY}")
    if report["passed"]:
        lines.append(f"passed: {n_out} outputs in {n_cases} cases")
    elif failures:
        lines.append(f"FAILED: {len(failures)} of {n_out} outputs in "
                     f"{sum(not c.get('within_tolerance', c['passed']) for c in report['cases'])}"
                     f" of {n_cases} cases out of tolerance or not finite")
    return "\n".join(lines)
