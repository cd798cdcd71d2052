"""Validators for public arguments: one place that says what a valid argument is.

ssmref checks its arguments once, at the public boundary, and the math below is unchecked and
reusable.  Every validator here raises ``ValueError`` whose message names the argument and says what
was expected and what was received, and returns the (normalised) value, so a boundary reads as::

    steps = check_int("steps", steps, minimum=1)
    lr = check_scalar("lr", lr, low=0.0)
    method = check_choice("method", method, ("zoh", "bilinear"))
    check_shape("h0", h0, (n,))

Values may be autograd boxes (a traced learning rate, a traced array); only their values are
inspected, and boxes are returned unchanged so that differentiation flows through.  ``bool`` is
never accepted as a number (``True`` is an ``int`` in Python, and ``steps=True`` is a bug).
Arrays follow one rule, :func:`check_array`: numeric, never bool, real unless the model is complex,
and finite unless the function documents that it takes NaN or infinities.  Every
validator reads values through :func:`values`, which refuses ``numpy.ma`` masked arrays: the math
would compute on the hidden entries (a NaN behind a mask passes a finiteness check that honours
the mask), so a caller unmasks explicitly (``x.filled(0.0)``, ``x.data``).
"""

import math
import numbers

import numpy as onp
from autograd.tracer import getval


def values(name, x):
    """The plain ``ndarray`` of ``x`` (an array, a scalar or an autograd box holding one), read
    once by every validator; a ``numpy.ma.MaskedArray`` is refused."""
    raw = getval(x)
    if isinstance(raw, onp.ma.MaskedArray):
        raise ValueError(f"{name} is a numpy.ma masked array of shape {onp.shape(raw)}: ssmref "
                         f"computes on every entry, masked or not; unmask it explicitly "
                         f"({name}.filled(value) or {name}.data)")
    return onp.asarray(raw)


def check_int(name, value, *, minimum=None, maximum=None):
    """``value`` as a Python ``int`` with ``minimum <= value <= maximum`` (either bound optional)."""
    if isinstance(value, (bool, onp.bool_)) or not isinstance(value, (numbers.Integral, onp.integer)):
        raise ValueError(f"{name} must be an int{_bounds(minimum, maximum)}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int{_bounds(minimum, maximum)}, got {value}")
    return value


def _bounds(lo, hi, lo_open=False, hi_open=False):
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi}")
    return (" " + " and ".join(parts)) if parts else ""


def check_scalar(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite real scalar (Python number, 0-d array or autograd box) within the given bounds.

    Returns ``value`` unchanged (a box stays a box); complex values, bools and non-finite values
    are refused.
    """
    raw = getval(value)
    if isinstance(raw, (bool, onp.bool_)) or onp.ndim(raw) != 0 \
            or values(name, raw).dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a real scalar{_bounds(low, high, low_open, high_open)}, "
                         f"got {raw!r}")
    x = float(raw)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if low is not None and (x <= low if low_open else x < low):
        raise ValueError(f"{name} must be{_bounds(low, None, low_open)}, got {x}")
    if high is not None and (x >= high if high_open else x > high):
        raise ValueError(f"{name} must be{_bounds(None, high, hi_open=high_open)}, got {x}")
    return value


def check_flag(name, value):
    """``value`` as a ``bool``; only ``True``/``False`` (and numpy bools) are accepted."""
    if not isinstance(value, (bool, onp.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name, value, choices):
    """``value`` if it is one of ``choices`` (compared by type and value), else ``ValueError``."""
    ok = any(type(c) is type(value) and c == value for c in choices)
    if not ok:
        raise ValueError(f"{name} must be one of {sorted(choices, key=repr)}, got {value!r}")
    return value


def shape_of(x):
    """The shape of an array, a box or a scalar as a tuple."""
    return tuple(onp.shape(getval(x)))


def check_shape(name, x, shape, *, hint=""):
    """``x`` has exactly ``shape`` (``None`` entries match any size); returns ``x``."""
    got = shape_of(x)
    if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
        want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want}{hint}, got {got}")
    return x


def check_array(name, x, *, complex_ok=False, finite=True, note=""):
    """The one rule for array arguments: ``x`` (an array, a scalar or an autograd box holding one)
    is numeric, real unless ``complex_ok``, and finite unless ``finite=False``; ``finite`` may
    also be a bool mask over the leading axes: only the entries it selects must be finite (padding
    and the inputs of rows that restart, which the math never reads).  Returns the plain
    ``ndarray`` of its values (:func:`values`); the caller keeps ``x`` itself (a box stays a box).

    Refused, each with a one-line ``ValueError`` naming the argument and its shape: bool arrays
    (``True`` is not a number), object and string arrays, complex arrays where the model is real,
    masked arrays (:func:`values`), and NaN or infinite entries.  A function that takes non-finite
    entries on purpose passes ``finite=False`` and says so in its docstring (the adapter's guards,
    the monitors, the checker's results).  ``note`` (e.g. ``" for real A"``) says why a complex
    array is refused.
    """
    raw = values(name, x)
    kind = raw.dtype.kind
    if kind == "b":
        raise ValueError(f"{name} must be numeric, got a bool array of shape {raw.shape}")
    if kind == "c" and not complex_ok:
        raise ValueError(f"{name} must be real{note}, got a complex array of shape {raw.shape}")
    if kind not in "iufc":
        raise ValueError(f"{name} must be a numeric array, got dtype {raw.dtype}")
    if isinstance(finite, (bool, onp.bool_)):
        if finite and not onp.all(onp.isfinite(raw)):
            raise ValueError(f"{name} has non-finite entries (shape {raw.shape})")
    elif not onp.all(onp.isfinite(raw[onp.asarray(finite, dtype=bool)])):
        raise ValueError(f"{name} has non-finite entries where it is read (shape {raw.shape})")
    return raw


def check_real_array(name, x, *, finite=True):
    """``x`` under :func:`check_array` with real values; returns ``x`` (a box stays a box)."""
    check_array(name, x, finite=finite)
    return x


def check_numeric_array(name, x, *, finite=True):
    """``x`` under :func:`check_array`, real or complex; returns ``x`` (a box stays a box)."""
    check_array(name, x, complex_ok=True, finite=finite)
    return x


#: The most parameters a model built from a file or a configuration may have (checkpoints,
#: ``config.json``, policy files): 10⁷ float64 (80 MB; a meta-trainer holds several copies and a
#: second-order tape), far above any published setting (Finn et al.'s policy: 10⁴).  Checked
#: from the declared sizes, before anything is allocated.
MAX_MODEL_PARAMETERS = 10_000_000


def check_parameter_count(name, shapes, maximum=MAX_MODEL_PARAMETERS):
    """``ValueError`` if the arrays of ``shapes`` (``{name: shape}``) hold more than ``maximum``
    entries together; counted with Python ints, before any allocation."""
    total = sum(math.prod(shape) for shape in shapes.values())
    if total > maximum:
        raise ValueError(f"{name} declares {total:,} parameters, more than the {maximum:,} "
                         f"ssmref builds (MAX_MODEL_PARAMETERS)")
    return total
