"""Run real Triton kernels on a CPU with Triton's interpreter (``TRITON_INTERPRET=1``).

The interpreter executes a ``@triton.jit`` kernel's Python source block by block with NumPy, on
CPU torch tensors, so the kernels that mamba_ssm and fla ship can be checked against ssmref's
golden vectors on a machine with no GPU.  They run unmodified: everything this module changes is
*around* the kernels (the torch and triton functions their host code calls, and module
attributes), never in their source.  Import this module before any kernel module (the
interpreter is chosen when ``@triton.jit`` runs), then call :func:`install_shims`.

The shims, and the exact error each avoids (triton 3.9.0, torch 2.13.0+cpu):

    torch.cuda.device(idx)            the kernels' launchers run ``with torch.cuda.device(
                                      x.device.index)``; a CPU tensor's index is None and CPU torch
                                      raises ``TypeError: '<' not supported between instances of
                                      'NoneType' and 'int'`` (torch/cuda/__init__.py,
                                      _exchange_device).  Replaced by a context that does nothing.
    torch.cuda.get_device_properties  mamba's backward sizes its grids with the device's
                                      ``multi_processor_count``: ``AssertionError: Torch not
                                      compiled with CUDA enabled``.  Replaced by a record of an
                                      H100 SXM (132 SMs); the count only splits work between
                                      programs.
    Autotuner.prune_configs           with several configs the autotuner benchmarks them and asks
                                      for a GPU driver: ``RuntimeError: 0 active drivers ([]).
                                      There should only be one.`` (triton/runtime/driver.py).
                                      Pruned to the first config, as a single-config kernel runs.
    range in fla's kernel modules     the interpreter runs a kernel's ``for i in range(n)`` with a
                                      Python int ``i``; compiled Triton gives a tensor, and fla
                                      calls ``i_t.to(tl.int64)``: ``AttributeError: 'int' object
                                      has no attribute 'to'`` (fla/ops/common/chunk_h.py).  The
                                      modules' ``range`` yields ints that also have ``.to``.
    importing mamba_ssm               ``mamba_ssm/__init__.py`` imports the model code and the CUDA
                                      extension: ``ModuleNotFoundError: No module named
                                      'selective_scan_cuda'``.  :func:`import_mamba_ops` registers
                                      ``mamba_ssm``, ``mamba_ssm.ops``, ``mamba_ssm.ops.triton`` and
                                      ``mamba_ssm.utils`` as bare packages over the sdist's folders,
                                      so only the Triton files (and ``utils/determinism.py``,
                                      ``utils/torch.py``) are imported.

The interpreter's own numerics (properties of triton 3.9.0's ``runtime/interpreter.py``, not of
any kernel; :func:`gpu_bfloat16` emulates a GPU instead):

    float32 -> bfloat16 casts truncate (``cast_impl`` calls ``_convert_float`` with no rounding
    mode): a GPU (``cvt.rn.bf16.f32``) and torch round to nearest even.  bfloat16 is stored as
    ``uint16`` bit patterns and the NumPy ops run on them: ``tl.dot`` of bfloat16 operands
    multiplies the bit patterns (triton-lang/triton#11584, #11585 closed unmerged), and bfloat16
    ``+ - * /``, comparisons and reductions compute on the integers (#10945 closed unmerged,
    #11604); triton's docs say the interpreter does not support bfloat16 arithmetic (#4972).
    A float32 ``tl.dot`` multiplies in full float32, where an NVIDIA GPU reads the operands as
    TF32 unless the kernel asks for ``input_precision="ieee"``; :func:`gpu_tf32` emulates that.

Shapes, vectors and tolerances: docs/kernels.md.
"""

import argparse
import builtins
import contextlib
import json
import os
import sys
import types

os.environ["TRITON_INTERPRET"] = "1"   # read when triton.language and each kernel are decorated

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
from triton.runtime import interpreter  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402

from ssmref import crosscheck  # noqa: E402

if not isinstance(triton.language.sum, interpreter.InterpretedFunction):
    # triton.language's own @jit helpers (tl.sum, tl.max, ...) were compiled for a GPU; a
    # kernel calling them would stop with "Cannot call @triton.jit'd outside of the scope of
    # a kernel".
    raise ImportError("triton was imported before TRITON_INTERPRET=1 was set: import "
                      "harness before triton, or set TRITON_INTERPRET=1 in the environment")

MAMBA_SSM_VERSION = "2.3.2.post1"
CACHE_ENV = "SSMREF_KERNELS_CACHE"
SM_COUNT = 132                         # an H100 SXM: only splits work between programs


def kernels_cache():
    """The folder install.sh extracts the mamba_ssm sdist into (``$SSMREF_KERNELS_CACHE``)."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "ssmref-kernels")
    return os.environ.get(CACHE_ENV) or default


def mamba_ssm_source():
    """The extracted sdist (a folder holding ``mamba_ssm/ops/triton``), or None if absent."""
    root = os.path.join(kernels_cache(), f"mamba_ssm-{MAMBA_SSM_VERSION}")
    ok = os.path.isfile(os.path.join(root, "mamba_ssm", "ops", "triton", "ssd_combined.py"))
    return root if ok else None


# ---------------------------------------------------------------------------------------------
# Shims around the kernels
# ---------------------------------------------------------------------------------------------

class _NoDevice(contextlib.nullcontext):
    """``torch.cuda.device(idx)`` for CPU tensors: nothing to switch."""

    def __init__(self, device=None):
        super().__init__()


def _device_properties(device=None):
    return types.SimpleNamespace(multi_processor_count=SM_COUNT, name="triton-interpreter",
                                 major=9, minor=0)


_original_prune = Autotuner.prune_configs


def _first_config(self, kwargs):
    return _original_prune(self, kwargs)[:1]


class LoopInt(int):
    """A loop index of the interpreter that also answers ``.to(dtype)``, as a Triton scalar."""

    def to(self, dtype, **kwargs):
        return interpreter.interpreter_semantic.to_tensor(int(self), False).to(dtype, **kwargs)


def loop_range(*args):
    """``range`` as a list of :class:`LoopInt` (host code sees plain ints: ``len``, indexing
    and ``reversed`` work)."""
    return [LoopInt(i) for i in builtins.range(*args)]


_installed = []


def install_shims():
    """Install the shims of the module docstring (idempotent; CPU torch only)."""
    if _installed:
        return
    if torch.cuda.is_available():
        raise RuntimeError("a GPU is visible: run the kernels compiled, without this harness")
    torch.cuda.device = _NoDevice
    torch.cuda.get_device_properties = _device_properties
    Autotuner.prune_configs = _first_config
    _installed.append(True)


def patch_loop_ranges(prefix):
    """Give every imported module under ``prefix`` the :func:`loop_range` ``range``."""
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix) and isinstance(module, types.ModuleType):
            module.range = loop_range


def import_mamba_ops(source=None):
    """Make ``mamba_ssm.ops.triton.*`` importable without ``mamba_ssm/__init__.py``."""
    source = source or mamba_ssm_source()
    if source is None:
        raise FileNotFoundError(f"mamba_ssm {MAMBA_SSM_VERSION} not found under "
                                f"{kernels_cache()}: run examples/kernels/install.sh")
    for package in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.utils"):
        module = sys.modules.get(package)
        if module is None:
            module = types.ModuleType(package)
            module.__path__ = [os.path.join(source, *package.split("."))]
            sys.modules[package] = module
    return source


# ---------------------------------------------------------------------------------------------
# A GPU's bfloat16 and TF32 (opt-in): examples/kernels/gpu_emulation.py
# ---------------------------------------------------------------------------------------------

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_emulation import (bf16_bits_to_f32, f32_to_bf16_bits, gpu_bfloat16,  # noqa: E402,F401
                           gpu_numerics, gpu_tf32)


# ---------------------------------------------------------------------------------------------
# Vectors in, ssmref's verdict out
# ---------------------------------------------------------------------------------------------

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}


def read_manifest(vectors_dir):
    with open(os.path.join(vectors_dir, "manifest.json")) as f:
        return json.load(f)


def case_inputs(vectors_dir, name, dtype, device="cpu"):
    """``(inputs, attrs)``: float inputs as torch tensors of ``dtype`` (exact: the vectors were
    rounded to it), integer inputs as int32 (the kernels' ``seq_idx``)."""
    inputs, attrs = crosscheck.load_case(vectors_dir, name)
    tensors = {}
    for key, a in inputs.items():
        want = TORCH_DTYPES[dtype] if a.dtype.kind == "f" else torch.int32
        tensors[key] = torch.from_numpy(np.ascontiguousarray(a)).to(device, want)
    return tensors, attrs


def verdict(vectors_dir, name, outputs, dtype):
    """ssmref's :class:`~ssmref.crosscheck.CaseReport` for one case's outputs (torch tensors:
    the kit detaches them and widens bfloat16 exactly)."""
    return crosscheck.check_case(vectors_dir, name, outputs, dtype)


def first_failing(check):
    """The first failing index of an output (``-`` if it passes), ``t=`` the sequence step."""
    if check.passed:
        return "-"
    if check.first_bad_step is not None and len(check.first_bad) > 1:
        return f"step {check.first_bad_step} {check.first_bad}"
    return str(check.first_bad)


def table(rows):
    """One line per (case, output): passed, err_over_tol, first failing index."""
    lines = [f"{'case':<30} {'output':<18} {'passed':<6} {'err/tol':>9}  first failing",
             "-" * 80]
    for name, report in rows:
        for out, check in sorted(report.outputs.items()):
            lines.append(f"{name:<30} {out:<18} {str(check.passed):<6} "
                         f"{check.err_over_tol:>9.3g}  {first_failing(check)}")
    return "\n".join(lines)


def summary(rows):
    """One Markdown row per case: passed, the worst ``err_over_tol`` (and its output), the
    first failing index of each failing output."""
    lines = ["| case | passed | err_over_tol (worst output) | first failing |",
             "| --- | --- | --- | --- |"]
    for name, report in rows:
        worst = max(report.outputs, key=lambda o: report.outputs[o].err_over_tol)
        bad = "; ".join(f"`{o}` {first_failing(c)}" for o, c in sorted(report.outputs.items())
                        if not c.passed) or "-"
        lines.append(f"| `{name}` | {'yes' if report.passed else '**no**'} | "
                     f"{report.err_over_tol:.3g} (`{worst}`) | {bad} |")
    return "\n".join(lines)


def client_parser(doc, cases, dtype="float32"):
    """The command line every kernel client shares (``vectors``, ``--dtype``, ``--cases``,
    ``--gpu-bfloat16``, ``--gpu-tf32``, ``--tolerances``, ``--summary``); a client adds its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("vectors", help="a folder written by python -m ssmref vectors")
    parser.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default=dtype)
    parser.add_argument("--cases", nargs="+", choices=cases, default=cases)
    parser.add_argument("--gpu-bfloat16", action="store_true",
                        help="bfloat16 as on a GPU (round to nearest even, dot on values)")
    parser.add_argument("--gpu-tf32", action="store_true",
                        help="float32 tl.dot operands rounded to TF32, as on an NVIDIA GPU")
    parser.add_argument("--tolerances", choices=sorted(TORCH_DTYPES),
                        help="judge with this dtype's tolerances (default: --dtype's)")
    parser.add_argument("--summary", action="store_true",
                        help="one Markdown row per case instead of one line per output")
    return parser


def report(rows, args, extra=()):
    """Print ``rows`` (:func:`table`, or :func:`summary` with ``--summary``), the lines of
    ``extra`` and the count; the client's exit status: 0 when every case passes, else 1."""
    print(summary(rows) if args.summary else table(rows))
    for line in extra:
        print(line)
    failed = [name for name, case in rows if not case.passed]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed ({args.dtype})")
    return 1 if failed else 0
