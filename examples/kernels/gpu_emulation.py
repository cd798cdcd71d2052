"""A GPU's numerics for Triton's interpreter: bfloat16 rounding and arithmetic, TF32 dots (opt-in).

Imported by harness.py (which sets ``TRITON_INTERPRET=1`` first; so does this module); the
properties of the interpreter these replace are listed in harness.py's docstring and in
docs/kernels.md.  Use the contexts through the harness: ``harness.gpu_bfloat16()``,
``harness.gpu_tf32()``, ``harness.gpu_numerics(bfloat16, tf32)``.
"""

import contextlib
import ctypes
import os

os.environ["TRITON_INTERPRET"] = "1"   # read when triton.language and each kernel are decorated

import numpy as np  # noqa: E402
import triton  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

def bf16_bits_to_f32(bits):
    """bfloat16 bit patterns (uint16) -> float32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(values):
    """float32 -> bfloat16 bit patterns, rounded to nearest even (NaN kept a quiet NaN)."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16
    nan = np.isnan(np.asarray(values, dtype=np.float32))
    return np.where(nan, (bits >> 16) | np.uint32(0x40), rounded).astype(np.uint16)


def _values(handle):
    """A TensorHandle's data as numbers (bfloat16 bit patterns decoded)."""
    if handle.dtype.scalar == triton.language.bfloat16:
        return bf16_bits_to_f32(handle.data)
    return handle.data


_BUILDER = interpreter.InterpreterBuilder
_ORIGINAL = {name: getattr(_BUILDER, name)
             for name in ("cast_impl", "binary_op", "unary_op", "create_dot", "create_fma")}


def _cast_rne(self, src, dst_type):
    """float32 -> bfloat16 rounds to nearest even; every other cast as the interpreter does."""
    bf16, f32 = triton.language.bfloat16, triton.language.float32
    if dst_type.scalar == bf16 and src.dtype.scalar == f32:
        return interpreter.TensorHandle(f32_to_bf16_bits(src.data), bf16)
    if dst_type.scalar == bf16 and src.dtype.scalar != bf16:
        return _cast_rne(self, _ORIGINAL["cast_impl"](self, src, f32), dst_type)
    return _ORIGINAL["cast_impl"](self, src, dst_type)


def _bf16_result(result, like):
    """Arithmetic on bfloat16 operands: computed in float32, rounded back to bfloat16."""
    bf16 = triton.language.bfloat16
    if like == bf16 and result.data.dtype == np.float32:
        return interpreter.TensorHandle(f32_to_bf16_bits(result.data), bf16)
    return result


def _decoded(handle):
    if handle.dtype.scalar != triton.language.bfloat16:
        return handle
    return interpreter.TensorHandle(bf16_bits_to_f32(handle.data), triton.language.float32)


def _binary_bf16(self, lhs, rhs, op):
    if triton.language.bfloat16 not in (lhs.dtype.scalar, rhs.dtype.scalar):
        return _ORIGINAL["binary_op"](self, lhs, rhs, op)
    out = _ORIGINAL["binary_op"](self, _decoded(lhs), _decoded(rhs), op)
    return _bf16_result(out, lhs.dtype.scalar)


def _unary_bf16(self, arg, op):
    if arg.dtype.scalar != triton.language.bfloat16:
        return _ORIGINAL["unary_op"](self, arg, op)
    return _bf16_result(_ORIGINAL["unary_op"](self, _decoded(arg), op), arg.dtype.scalar)


def _fma_bf16(self, x, y, z):
    if triton.language.bfloat16 not in (x.dtype.scalar, y.dtype.scalar, z.dtype.scalar):
        return _ORIGINAL["create_fma"](self, x, y, z)
    out = _ORIGINAL["create_fma"](self, _decoded(x), _decoded(y), _decoded(z))
    return _bf16_result(out, z.dtype.scalar)


def _dot_bf16(self, a, b, d, input_precision, max_num_imprecise_acc):
    """bfloat16 operands as their float32 values (exact), accumulated in the float32 ``d``,
    as tensor cores do."""
    return _ORIGINAL["create_dot"](self, _decoded(a), _decoded(b), d, input_precision,
                                   max_num_imprecise_acc)


_ORIGINAL["create_atomic_rmw"] = _BUILDER.create_atomic_rmw


def _atomic_bf16(self, rmw_op, ptr, val, mask, sem, scope):
    """``tl.atomic_add`` on bfloat16 memory (the interpreter's C++ atomics stop with
    ``ValueError('Unsupported data type')``): element by element, in order, each sum computed in
    float32 and rounded to bfloat16 once, as a GPU's ``red.add.bf16``; returns the old values."""
    adds = (interpreter._ir.ATOMIC_OP.FADD, interpreter._ir.ATOMIC_OP.ADD)
    if val.dtype.scalar != triton.language.bfloat16 or rmw_op not in adds:
        return _ORIGINAL["create_atomic_rmw"](self, rmw_op, ptr, val, mask, sem, scope)
    shape = np.broadcast(ptr.data, val.data, mask.data).shape
    address = np.broadcast_to(ptr.data, shape).ravel()
    add = bf16_bits_to_f32(np.broadcast_to(val.data, shape).ravel())
    active = np.broadcast_to(mask.data, shape).ravel()
    old = np.zeros(address.size, dtype=np.uint16)
    for i in np.flatnonzero(active):
        cell = ctypes.c_uint16.from_address(int(address[i]))
        old[i] = cell.value
        cell.value = int(f32_to_bf16_bits(bf16_bits_to_f32(cell.value) + add[i]))
    return interpreter.TensorHandle(old.reshape(shape), triton.language.bfloat16)


_EMULATION = {"cast_impl": _cast_rne, "binary_op": _binary_bf16, "unary_op": _unary_bf16,
              "create_fma": _fma_bf16, "create_dot": _dot_bf16,
              "create_atomic_rmw": _atomic_bf16}

_REDUCE, _SCAN = interpreter.ReduceOps, interpreter.ScanOps
_ORIGINAL_REDUCE = {(cls, name): getattr(cls, name)
                    for cls, name in ((_REDUCE, "sum"), (_REDUCE, "min_max"), (_SCAN, "cumsum"))}


def _on_values(cls, name):
    """A reduction or scan of bfloat16 data run on the values in float32, its result rounded
    to bfloat16 once (the interpreter's runs on the uint16 bit patterns)."""
    original = _ORIGINAL_REDUCE[(cls, name)]

    def op(self, input, *args, **kwargs):
        input = input[0] if isinstance(input, tuple) else input     # min_max's (values, index)
        if input.dtype.scalar != triton.language.bfloat16:
            return original(self, input, *args, **kwargs)
        f32 = triton.language.float32
        values = triton.language.core.tensor(
            interpreter.TensorHandle(bf16_bits_to_f32(input.handle.data), f32),
            triton.language.block_type(f32, list(input.handle.data.shape))
            if input.handle.data.shape else f32)
        got = original(self, values, *args, **kwargs)
        return _rounded_back(self, got)
    return op


def _rounded_back(self, got):
    """float32 results of :func:`_on_values` (tensors, or tuples with int32 indices) as
    bfloat16."""
    if isinstance(got, (tuple, list)):
        return type(got)(_rounded_back(self, g) for g in got)
    if got.dtype.scalar != triton.language.float32:
        return got
    bits = f32_to_bf16_bits(got.handle.data)
    return self.to_tensor(bits if got.type.is_block() else bits.reshape(()),
                          triton.language.bfloat16)


_EMULATION_REDUCE = {key: _on_values(*key) for key in _ORIGINAL_REDUCE}


@contextlib.contextmanager
def gpu_bfloat16():
    """Inside: bfloat16 in the interpreter behaves as on a GPU.

    float32 -> bfloat16 casts round to nearest even; ``tl.dot`` reads bfloat16 operands as their
    values and accumulates in float32; elementwise bfloat16 arithmetic (binary, unary, fma) runs
    in float32 on the values and rounds the result to bfloat16 once (a GPU's ``add.bf16`` /
    ``mul.bf16`` round the exact result once; the float32 detour can round twice, which moves a
    result by one bfloat16 ulp in rare ties).  Reductions and scans of bfloat16 data (``tl.sum``,
    ``tl.max``, ``tl.min``, ``tl.argmax``, ``tl.cumsum``) run on the values in float32 and round the
    result once (the interpreter sums the uint16 bit patterns; a GPU adds in bfloat16 in a tree
    order, rounding partial sums, which this rounds once); ``tl.atomic_add`` on bfloat16 memory
    adds in float32 and rounds once per add (the interpreter refuses it).  The casts the emulation replaces are
    the interpreter's, so results inside are the kernel's, computed with a GPU's bfloat16.
    """
    for name, fn in _EMULATION.items():
        setattr(_BUILDER, name, fn)
    for (cls, name), fn in _EMULATION_REDUCE.items():
        setattr(cls, name, fn)
    try:
        yield
    finally:
        for name, fn in _ORIGINAL.items():
            setattr(_BUILDER, name, fn)
        for (cls, name), fn in _ORIGINAL_REDUCE.items():
            setattr(cls, name, fn)


def _tf32_dot(inner):
    """``create_dot`` rounding float32 operands to TF32 (10 mantissa bits, nearest even) when the
    kernel's ``tl.dot`` asks for ``input_precision="tf32"`` (triton's default on NVIDIA GPUs
    since Ampere), as the tensor cores read them; products accumulate in float32."""
    def dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        f32 = triton.language.float32
        if (input_precision == interpreter._ir.INPUT_PRECISION.TF32
                and a.dtype.scalar == f32 and b.dtype.scalar == f32):
            a = interpreter.TensorHandle(interpreter._round_f32_to_tf32(a.data), f32)
            b = interpreter.TensorHandle(interpreter._round_f32_to_tf32(b.data), f32)
        return inner(self, a, b, d, input_precision, max_num_imprecise_acc)
    return dot


@contextlib.contextmanager
def gpu_tf32():
    """Inside: a float32 ``tl.dot`` without ``input_precision="ieee"`` reads its operands as
    TF32, as on an NVIDIA GPU (the interpreter multiplies them in full float32).  Composes with
    :func:`gpu_bfloat16`."""
    inner = _BUILDER.create_dot
    _BUILDER.create_dot = _tf32_dot(inner)
    try:
        yield
    finally:
        _BUILDER.create_dot = inner


def gpu_numerics(bfloat16=False, tf32=False):
    """A context with the chosen GPU emulations (:func:`gpu_bfloat16`, :func:`gpu_tf32`)."""
    stack = contextlib.ExitStack()
    if bfloat16:
        stack.enter_context(gpu_bfloat16())
    if tf32:
        stack.enter_context(gpu_tf32())
    return stack
