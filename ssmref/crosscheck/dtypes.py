"""The precisions a port is checked in, and rounding to them: float64 values rounded to
float32, float16 or bfloat16 (emulated on the float32 bit pattern, as ``torch`` converts)."""

import numpy as np

DTYPES = ("float64", "float32", "float16", "bfloat16")


def _check_dtype(dtype, name="dtype"):
    if dtype not in DTYPES:
        raise ValueError(f"{name} must be one of {list(DTYPES)}, got {dtype!r}")
    return dtype


def _bfloat16_round(x32):
    """float32 array -> float32 array holding the nearest bfloat16 (ties to even), as
    ``torch``'s float -> bfloat16 conversion: add ``0x7FFF + lsb`` to the bit pattern and clear
    the low 16 bits.  Infinities stay infinite, values beyond the largest bfloat16 round to inf,
    NaNs stay NaN (quiet)."""
    x32 = np.asarray(x32, dtype=np.float32)
    bits = np.array(x32, order="C").reshape(-1).view(np.uint32).astype(np.uint64)
    lsb = (bits >> np.uint64(16)) & np.uint64(1)
    rounded = (bits + np.uint64(0x7FFF) + lsb) & np.uint64(0xFFFF0000)
    quiet_nan = (bits | np.uint64(0x00400000)) & np.uint64(0xFFFF0000)
    out = np.where(np.isnan(x32).reshape(-1), quiet_nan, rounded).astype(np.uint32)
    return out.view(np.float32).reshape(x32.shape)


def round_to_dtype(x, dtype):
    """``x`` rounded to the nearest ``dtype`` value, returned as float64 (exactly representable).

    float32 and float16: NumPy's correctly rounded conversion from float64.  bfloat16: first to
    float32, then :func:`_bfloat16_round` (the double rounding ``torch`` does too).  Integer arrays
    are returned unchanged.
    """
    _check_dtype(dtype)
    a = np.asarray(x)
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "float64":
            return a.astype(np.float64)
        if dtype == "float32":
            return a.astype(np.float32).astype(np.float64)
        if dtype == "float16":
            return a.astype(np.float16).astype(np.float64)
        return _bfloat16_round(a.astype(np.float32)).astype(np.float64)
