"""The checker's report as text: a table per case, one row per output, and a summary line."""

import numpy as onp


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
    if o["passed"]:
        return "ok"
    flags = [f"{o['nan']} NaN" if o["nan"] else "", f"{o['inf']} inf" if o["inf"] else ""]
    return "FAIL" + "".join(f" ({f})" for f in flags if f)


def format_report(report):
    """A table per case (one row per output) and a summary line."""
    mode = report["mode"]
    lines = [f"ssmref check: {report['dtype']} tolerances, {mode} mode"
             + (f" (k = {report['k']:g})" if mode == "baseline" else "")
             + f", vectors {report['vectors_dir']} ({report['vectors_dtype']})"]
    lines += [f"note: {n}" for n in report.get("notes", [])]
    head = ("output", "shape", "scale", "max_abs", "max_rel",
            "base_abs" if mode == "baseline" else "rtol", "tol_abs", "err_over_tol", "first bad", "")
    failures = []
    for c in report["cases"]:
        lines.append("")
        factor = (f", length factor {c['length_factor']:.2f}" if mode == "table" or c["notes"]
                  else "")
        lines.append(f"{c['name']} [{c['kind']}]  {'PASS' if c['passed'] else 'FAIL'}"
                     f"  (effective length {c['length']:.0f}{factor})")
        lines += [f"  note: {n}" for n in c["notes"]]
        rows = [head]
        for o in c["outputs"]:
            if mode == "baseline":       # E_base, or the table's rtol where there is none
                third = (f"{o['err_base']:.2e}" if o.get("err_base") is not None
                         else f"rtol {o['rtol']:.1e}")
            else:
                third = f"{o['rtol']:.2e}"
            rows.append((o["name"] + (" (grad)" if o["cls"] == "grad" else ""),
                         "(" + ", ".join(map(str, o["shape"])) + ")", f"{o['scale']:.2e}",
                         f"{o['max_abs']:.2e}", f"{o['max_rel']:.2e}", third, f"{o['tol_abs']:.2e}",
                         f"{o['err_over_tol']:.3g}", _where(o), _status(o)))
            if not o["passed"]:
                got, want = _number(o["bad_value"]), _number(o["bad_expected"])
                first = (f"first at {_where(o)}: got {got!r}, expected {want!r}, |error| "
                         f"{abs(got - want):.3e} > tolerance {o['bad_tol']:.3e}")
                failures.append(f"{c['name']}/{o['name']}: max_abs {o['max_abs']:.3e} "
                                f"(max_rel {o['max_rel']:.3e}), {o['n_bad']} of "
                                f"{int(onp.prod(o['shape']))} entries out of tolerance"
                                + (f" ({o['nan']} NaN)" if o["nan"] else "")
                                + (f" ({o['inf']} inf)" if o["inf"] else "") + f"; {first}")
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.append(f"  worst err_over_tol {c['err_over_tol']:.3g} (at most 1 passes)")
    n_out = sum(len(c["outputs"]) for c in report["cases"])
    lines.append("")
    lines += [f"FAIL {f}" for f in failures]
    if report["passed"]:
        lines.append(f"passed: {n_out} outputs in {len(report['cases'])} cases")
    else:
        n_cases = sum(not c["passed"] for c in report["cases"])
        lines.append(f"FAILED: {len(failures)} of {n_out} outputs in {n_cases} of "
                     f"{len(report['cases'])} cases out of tolerance or not finite")
    return "\n".join(lines)
