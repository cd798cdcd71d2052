"""What the task families share: validating task lists and ranges, stacking tasks into rows.

A task is a dict of plain float64 arrays and floats (``{"goal": (2,)}``, ``{"p": (K,)}``, ...).
An RL family runs each of ``n`` tasks ``episodes_per_task`` times in one vectorized environment,
*task-major*: row ``r`` runs task ``r // episodes_per_task``.
"""

import numpy as onp

from ssmref.checks import check_int, check_scalar


def check_range(name, interval, *, low=None, high=None, high_open=False):
    """``interval = (lo, hi)``: two finite reals with ``low <= lo <= hi <= high`` (``< high`` if
    ``high_open``; either bound optional); returns ``(lo, hi)`` as floats."""
    try:
        lo, hi = interval
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {interval!r}") from None
    lo = float(check_scalar(f"{name}[0]", lo, low=low, high=high, high_open=high_open))
    hi = float(check_scalar(f"{name}[1]", hi, low=low, high=high, high_open=high_open))
    if lo > hi:
        raise ValueError(f"{name} must satisfy low <= high, got {interval!r}")
    return lo, hi


def stack_field(tasks, key, shape, where):
    """``tasks[i][key]`` for all i as one float64 array of shape ``(len(tasks),) + shape``."""
    if hasattr(tasks, "keys") or isinstance(tasks, (str, bytes)):
        raise ValueError(f"{where}: tasks must be a list of task dicts, got {type(tasks).__name__}")
    tasks = list(tasks)
    if not tasks:
        raise ValueError(f"{where}: tasks is empty")
    rows = []
    for i, task in enumerate(tasks):
        if not hasattr(task, "keys") or key not in task:
            raise ValueError(f"{where}: tasks[{i}] must be a dict with key {key!r}")
        value = onp.asarray(task[key], dtype=onp.float64)
        if value.shape != shape:
            raise ValueError(f"{where}: tasks[{i}][{key!r}]: expected shape {shape}, "
                             f"got {value.shape}")
        rows.append(value)
    return onp.stack(rows)


def check_task(task, keys, where):
    """``ValueError`` unless ``task`` is a dict holding every key in ``keys``."""
    if not hasattr(task, "keys") or any(k not in task for k in keys):
        raise ValueError(f"{where}: task must be a dict with keys {list(keys)}, got {task!r}")


def repeat_rows(array, episodes_per_task):
    """``array (n, ...)`` repeated task-major -> ``(n * e, ...)``, and ``task_index (n * e,)``."""
    episodes_per_task = check_int("episodes_per_task", episodes_per_task, minimum=1)
    n = array.shape[0]
    task_index = onp.repeat(onp.arange(n), episodes_per_task)              # (N,) task-major
    return onp.repeat(array, episodes_per_task, axis=0), task_index

