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


#: The one line a command prints instead of its pictures when matplotlib is missing.
NO_MATPLOTLIB = ("pictures skipped: matplotlib is not installed (pip install 'ssmref[plot]', or "
                 "pip install matplotlib)")


def pyplot():
    """``matplotlib.pyplot`` with the file-only Agg backend, or ``None`` when matplotlib is not
    installed (the pictures are optional; the core never needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path):
    """Write ``fig`` as a PNG to ``path`` atomically and close it; returns ``Path(path)``."""
    plt = pyplot()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight",
                                                 pad_inches=0.1))
    finally:
        plt.close(fig)
    return Path(path)


def curve_label(result, finn_goals=False):
    """``"finn protocol, α 0.1 then 0.05, 40 episodes/step, 40 held-out goals"``."""
    n = result["num_tasks"]
    if "inner_lr_by_step" not in result:                    # sinusoid: α and K at every step
        if "k_shot" not in result:
            return f"{n} held-out tasks"
        return f"α {result['inner_lr']:g} at every step on {result['k_shot']} points, {n} tasks"
    lrs = result["inner_lr_by_step"]
    steps = ("no step" if not lrs else f"α {lrs[0]:g}" if len(set(lrs)) == 1
             else f"α {lrs[0]:g} then {lrs[1]:g}")
    where = "Finn's 40 goals" if finn_goals else f"{n} held-out goals"
    return (f"{result.get('protocol', 'ssmref')} protocol, {steps}, "
            f"{result['episodes_per_step']} episodes/step, {where}")


def plot_results(results, path):
    """The adaptation curves of one or more evaluation results of a run (e.g. both protocols) on
    one axes, as a PNG: value after ``k`` inner steps with ± 1 standard error over tasks; Finn
    et al.'s goals when a result has them, Finn et al.'s reported row (navigation2d), the
    random-arm and best-arm lines (bandit).  ``None`` when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return None
    first = results[0]
    key = "mse_by_step" if "mse_by_step" in first else "returns_by_step"
    err_key = key.replace("_by_step", "_stderr_by_step")
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    markers = iter("os^vD<>")
    for result in results:
        ax.errorbar(result["steps"], result[key], yerr=result[err_key], marker=next(markers),
                    capsize=3, label=curve_label(result))
        finn = result.get("finn_goals")
        if finn:
            ax.errorbar(result["steps"], finn[key], yerr=finn[err_key], marker=next(markers),
                        capsize=3, label=curve_label(result, finn_goals=True))
    ref = first.get("reference_finn2017")
    if ref:
        ks = sorted(int(k) for k in ref)
        ax.plot(ks, [ref[str(k)] for k in ks], "s--", color="gray",
                label="Finn et al. 2017, reported (their protocol and goals)")
    if "oracle_return" in first:
        ax.axhline(first["oracle_return"], color="green", ls=":", label="best arm (oracle)")
    if "random_arm_return" in first:
        ax.axhline(first["random_arm_return"], color="red", ls=":", label="uniformly random arm")
    ax.set_xlabel("inner gradient steps at test time")
    what = "grid MSE (100 points)" if key == "mse_by_step" else "mean return per episode"
    ax.set_ylabel(what)
    ax.set_title(f"{first['env']}, meta-iteration {first['iteration']}: {what} after k steps\n"
                 f"error bars: ± 1 standard error over the "
                 f"{'goals' if first['env'] == 'navigation2d' else 'tasks'}", fontsize=10)
    ax.set_xticks(first["steps"])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
