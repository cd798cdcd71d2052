"""How a run reports: the progress line, the before/after-adaptation table and the plot.

``result`` is the content of ``evaluation.json`` (:func:`ssmref.metarl.train.evaluate`): the mean
over held-out tasks after ``0..steps`` inner steps, ``returns_by_step`` (RL envs) or
``mse_by_step`` (``sinusoid``), each with its standard error over tasks.
"""

from pathlib import Path

from ssmref.storage import atomic_write


def progress_line(rec, total, rate):
    """One line for the metrics ``rec`` of a meta-iteration out of ``total``, ``rate`` seconds
    each (query MSE for regression, returns for RL)."""
    if "pre_loss" in rec:
        body = f"query mse before {rec['pre_loss']:8.3f}  after {rec['post_loss']:8.3f}"
    else:
        body = f"return before {rec['pre_return']:8.2f}  after {rec['post_return']:8.2f}"
    eta = (total - rec["iteration"]) * rate
    return (f"iter {rec['iteration']:5d}/{total}  {body}  |g| {rec['grad_norm']:.3g}  "
            f"{rate:.2f} s/it  eta {eta / 60:.1f} min")


def format_table(result):
    """The before/after-adaptation table of an evaluation result (with a column for Finn et
    al.'s goals when the result has them, ``--protocol finn``)."""
    key = "mse_by_step" if "mse_by_step" in result else "returns_by_step"
    err_key = key.replace("_by_step", "_stderr_by_step")
    what = "grid MSE" if key == "mse_by_step" else "return"
    ref, finn = result.get("reference_finn2017"), result.get("finn_goals")
    head = f"{'steps':>5}  {what + ' (mean ± s.e.)':>24}"
    if finn:
        head += "  " + "on Finn's 40 goals".rjust(24)
    if ref:
        head += f"  {'Finn et al. 2017':>16}"
    protocol = result.get("protocol", "ssmref")
    lines = [f"{result['env']}: {result['num_tasks']} held-out tasks, iteration "
             f"{result['iteration']}" + (f", protocol {protocol}" if protocol != "ssmref" else ""),
             head]
    for k, (v, e) in enumerate(zip(result[key], result[err_key])):
        line = f"{k:>5}  {v:>14.3f} ± {e:<7.3f}"
        if finn:
            line += f"  {finn[key][k]:>14.3f} ± {finn[err_key][k]:<7.3f}"
        if ref:
            line += f"  {ref[str(k)] if str(k) in ref else '':>16}"
        lines.append(line)
    if result.get("inner_lr_by_step"):
        lines.append("inner step sizes: " + ", ".join(f"{a:g}" for a in result["inner_lr_by_step"])
                     + f"; {result['episodes_per_step']} episodes per step")
    elif "inner_lr_by_step" in result:
        lines.append(f"no inner step; {result['episodes_per_step']} episodes")
    if "oracle_return" in result:
        lines.append(f"best-arm oracle: {result['oracle_return']:.3f}")
    return "\n".join(lines)


def plot_adaptation(result, path):
    """The adaptation curve as a PNG (``None`` when matplotlib is not installed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    key = "mse_by_step" if "mse_by_step" in result else "returns_by_step"
    err = result[key.replace("_by_step", "_stderr_by_step")]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.errorbar(result["steps"], result[key], yerr=err, marker="o", capsize=3, label="ssmref")
    ref = result.get("reference_finn2017")
    if ref:
        ks = sorted(int(k) for k in ref)
        ax.plot(ks, [ref[str(k)] for k in ks], "s--", color="gray", label="Finn et al. 2017")
    ax.set_xlabel("inner gradient steps")
    ax.set_ylabel("grid MSE" if key == "mse_by_step" else "mean return")
    ax.set_title(f"{result['env']}: {result['num_tasks']} held-out tasks")
    ax.set_xticks(result["steps"])
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return Path(path)
