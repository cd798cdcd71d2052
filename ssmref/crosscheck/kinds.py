"""What the kit knows about a kind of case, and a case itself.

A *case* draws its float64 inputs from a generator seeded by its name and computes its expected
outputs with ssmref's own functions.  A *kind* tells the checker what it needs to judge a result:
the inputs it reads and how to validate them, the effective length ``L`` of the tolerance's
``g(L)`` (how many past steps' rounding errors still reach an output), which outputs are
gradients, which axis is time, the naive computations of baseline mode (the step loop, and
where the kind has one, the log-depth form: baseline mode allows ``k`` times the larger error),
which inputs are complex, the 40-digit recomputation that certifies the expected outputs
(``ref_error``), and the cancellation factor ``κ`` of outputs that are sums of larger terms.  Each family of models (:mod:`ssmref.crosscheck.families`) defines its kinds and
cases with these two classes.
"""

import dataclasses
import zlib
from typing import Callable, Optional

import numpy as onp

from ssmref.params import flatten_dict, unflatten_dict


@dataclasses.dataclass(frozen=True)
class Case:
    """One golden-vector case: ``build(rng) -> (inputs, attrs)`` draws raw float64 inputs,
    ``compute(inputs, attrs) -> outputs`` is the float64 reference (from ssmref's functions).
    Built as ``Case(name, kind=..., build=..., compute=..., doc=...)``: after the name, every
    field is keyword-only."""
    name: str
    _: dataclasses.KW_ONLY
    kind: str
    build: Callable
    compute: Callable
    doc: str = ""


def _no_length(inputs, attrs):
    return 1.0


def _values_only(name):
    return "value"


def _no_axis(name):
    return None


@dataclasses.dataclass(frozen=True)
class Kind:
    """The checker's rules for one kind of case; after the name, every field is keyword-only."""
    name: str
    _: dataclasses.KW_ONLY
    required_inputs: tuple = ()                         # inputs the checker itself reads
    validate: Optional[Callable] = None                 # (inputs, attrs) -> None or ValueError
    effective_length: Callable = _no_length             # (inputs, attrs) -> L >= 1
    output_class: Callable = _values_only               # output name -> "value" | "grad"
    sequence_axis: Callable = _no_axis                  # output name -> (axis, label) | None
    naive: Optional[Callable] = None                    # (inputs, attrs, R, work) -> outputs
    log_depth: Optional[Callable] = None                # the same, in log depth (baseline mode)
    validate_outputs: Optional[Callable] = None         # (outputs, inputs, attrs) -> None or
                                                        # ValueError: the stored shapes agree
                                                        # with the attrs the checker reads
    complex_inputs: tuple = ()                          # required inputs stored as complex128
    # (inputs, attrs) -> {output: object array of mpmath numbers}: an independent recomputation
    # in 40 digits (ssmref.crosscheck.highprec; mpmath imported only when called), for ref_error
    reference: Optional[Callable] = None
    # (inputs, attrs) -> {output: κ >= 1}: the cancellation factor of an output that is a sum of
    # terms larger than itself (κ = Σ|t_n| / |Σ t_n|); it scales atol in every dtype
    condition: Optional[Callable] = None


def case_seed(name):
    """The seed of a case's generator: CRC-32 of its name."""
    return zlib.crc32(name.encode("utf-8"))


def prefixed(prefix, tree):
    """``{"ssm": {"A": x}} -> {prefix + "ssm.A": x}`` as float64 arrays."""
    return {prefix + k: onp.asarray(v, dtype=onp.float64) for k, v in flatten_dict(tree).items()}


def params_in(inputs, prefix):
    """``{"params.ssm.A": x} -> {"ssm": {"A": x}}`` for ``prefix = "params."``."""
    return unflatten_dict({k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)})


def memory_length(T, decay):
    """``min(T, 1 / (1 − decay))`` (``T`` when ``decay >= 1``): the number of past steps whose
    rounding errors still reach an output of a recurrence whose state decays like ``decay^k``."""
    return float(T) if decay >= 1.0 else min(float(T), 1.0 / (1.0 - decay))
