"""The package's layout is part of the specification: no import cycles, short modules, one
NumPy alias convention, the layers of docs/index.md, and certification (40-digit references,
error bounds, high-precision arithmetic) only in the kit.

Imports are read from the source (``ast``), module level and inside functions alike: a lazy import
inside a function closes a cycle as surely as one at the top.
"""

import ast
import pathlib
import re

import pytest

import ssmref

ROOT = pathlib.Path(ssmref.__file__).parent
MAX_LINES = 420            # "about 400": a module is read in one sitting


def module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_modules(name, path):
    """The ssmref modules that module ``name`` imports (a submodule where ``from pkg import sub``
    names one, else the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in MODULES else target)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph):
    """A list of modules forming a cycle, or ``None`` (depth-first search, colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_numpy_aliases(name):
    """``np`` is ``autograd.numpy`` and ``onp`` plain NumPy, everywhere; no other alias."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "numpy":
                    assert a.asname == "onp", f"{name}: import numpy as {a.asname}"
                if a.name == "autograd.numpy":
                    assert a.asname == "np", f"{name}: import autograd.numpy as {a.asname}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_cryptic_module_aliases(name):
    """ssmref's own modules are imported under their own names (no ``P``, ``S``, ``V``)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = getattr(node, "module", None) or ""
            for a in node.names:
                target = a.name if isinstance(node, ast.Import) else f"{module}.{a.name}"
                if target in MODULES and a.asname is not None:
                    own = a.name.rpartition(".")[2]
                    assert a.asname == own or (a.asname.endswith("_" + own) and len(a.asname) > 3), \
                        f"{name}: {target} imported as {a.asname}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_absolute_imports(name):
    """One convention: ``from ssmref.x import y``, never a relative import."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    relative = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative, f"{name}: relative imports at lines {relative}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_imported_across_modules(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ssmref")):
            private = [a.name for a in node.names
                       if a.name.startswith("_") and not a.name.startswith("__")]
            assert not private, f"{name} imports private names {private} from {node.module}"


def test_foundation_does_not_import_the_layers_above():
    """params, rng, checks, recurrence, optim, nn and maml (with their *_args) sit below every model and tool."""
    foundation = {"ssmref.params", "ssmref.rng", "ssmref.checks", "ssmref.recurrence",
                  "ssmref.optim", "ssmref.optim_args", "ssmref.nn", "ssmref.nn_args",
                  "ssmref.maml", "ssmref.maml_args"}
    for name in foundation & set(GRAPH):
        above = sorted(m for m in GRAPH[name] if m not in foundation)
        assert not above, f"{name} imports {above}"


MODEL_PACKAGES = ("ssmref.ssm", "ssmref.structured", "ssmref.selective", "ssmref.delta")
APPLICATIONS_AND_TOOLS = ("ssmref.metarl", "ssmref.adaptation", "ssmref.crosscheck",
                          "ssmref.experiments", "ssmref.cli")


def in_package(name, packages):
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_models_do_not_import_applications_or_tools():
    for name, deps in GRAPH.items():
        if in_package(name, MODEL_PACKAGES):
            bad = sorted(d for d in deps if in_package(d, APPLICATIONS_AND_TOOLS))
            assert not bad, f"{name} imports {bad}"


# Certification (40-digit references, error bounds, the high-precision arithmetic under them) is
# the kit's: a model package holds models, the foundation what models and applications share.
KIT = "ssmref.crosscheck"
CERTIFICATION = re.compile(r"certify|bounds|highprec|\w+_(ref|certify|bounds)")


def misplaced_certification(modules, graph):
    """Messages for each certification module outside the kit, each module outside the kit that
    imports one, and each module outside the kit that imports mpmath (the 40-digit arithmetic)."""
    def certifying(name):
        return CERTIFICATION.fullmatch(name.rpartition(".")[2]) is not None

    out = [f"{name} is certification outside {KIT}" for name in sorted(modules)
           if certifying(name) and not in_package(name, (KIT,))]
    for name in sorted(graph):
        if not in_package(name, (KIT,)):
            out += [f"{name} imports {d}" for d in sorted(graph[name]) if certifying(d)]
    return out


def mpmath_importers():
    found = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "mpmath" or n.startswith("mpmath.") for n in names):
                found.setdefault(name, node.lineno)
    return found


def test_the_certification_rule_finds_misplaced_modules():
    modules = {"ssmref.structured.certify", "ssmref.structured.bounds", "ssmref.highprec",
               "ssmref.selective.scan_ref", "ssmref.delta.rule", "ssmref.crosscheck.highprec",
               "ssmref.crosscheck.families.structured_bounds", "ssmref.crosscheck.families.ssm_ref"}
    graph = {name: set() for name in modules}
    graph["ssmref.delta.rule"] = {"ssmref.crosscheck.families.ssm_ref"}
    assert misplaced_certification(modules, graph) == [
        "ssmref.highprec is certification outside ssmref.crosscheck",
        "ssmref.selective.scan_ref is certification outside ssmref.crosscheck",
        "ssmref.structured.bounds is certification outside ssmref.crosscheck",
        "ssmref.structured.certify is certification outside ssmref.crosscheck",
        "ssmref.delta.rule imports ssmref.crosscheck.families.ssm_ref"]


def test_certification_lives_in_the_kit():
    """No module named certify, bounds, highprec or *_ref / *_certify / *_bounds outside
    ssmref.crosscheck (not in a model package, not in the foundation, not in an application),
    none imported from outside it, and mpmath imported only inside it."""
    assert not misplaced_certification(MODULES, GRAPH)
    outside = {n: line for n, line in mpmath_importers().items() if not in_package(n, (KIT,))}
    assert not outside, f"mpmath imported outside {KIT}: {outside}"
    assert "ssmref.crosscheck.highprec" in mpmath_importers()


# ---------------------------------------------------------------------------------------------
# One definition of each shared piece of math (found by its shape in the source, not its name)
# ---------------------------------------------------------------------------------------------

def _functions():
    """``(module, function node)`` for every function defined in the package."""
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.Lambda)):
                yield name, node


def _where(predicate):
    """``module.function`` of every function with a node (not inside a nested function) for
    which ``predicate`` holds."""
    found = []
    for module, fn in _functions():
        body = fn.body if isinstance(fn.body, list) else [fn.body]
        nodes = [n for stmt in body for n in ast.walk(stmt)]
        nested = {id(m) for n in nodes if n is not fn and isinstance(n, (ast.FunctionDef, ast.Lambda))
                  for m in ast.walk(n) if m is not n}
        if any(predicate(n) for n in nodes if id(n) not in nested):
            found.append(f"{module}.{getattr(fn, 'name', '<lambda>')}")
    return sorted(set(found))


def _is_name(node, name=None):
    return isinstance(node, ast.Name) and (name is None or node.id == name)


def _is_mult(node):
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)


def test_output_scale_is_defined_once_and_alone_reads_2re():
    """``s = 2`` for ``output="2re"``: one function, and no other compares ``output`` with "2re"."""
    defs = [m for m, fn in _functions() if getattr(fn, "name", None) == "output_scale"]
    assert defs == ["ssmref.structured.diagonal"], defs

    def compares_2re(n):
        return isinstance(n, ast.Compare) and any(
            isinstance(c, ast.Constant) and c.value == "2re" for c in [n.left, *n.comparators])
    assert _where(compares_2re) == ["ssmref.structured.diagonal.output_scale"]


def test_one_diagonal_combine():
    """``(a1, b1), (a2, b2) -> (a2 a1, a2 b1 + b2)`` elementwise is written once."""
    def composes(n):
        if not (isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple) and len(n.value.elts) == 2):
            return False
        first, second = n.value.elts
        return (_is_mult(first) and isinstance(second, ast.BinOp) and isinstance(second.op, ast.Add)
                and _is_mult(second.left) and _is_name(first.left) and _is_name(second.left.left)
                and first.left.id == second.left.left.id)
    assert _where(composes) == ["ssmref.recurrence.diagonal_combine"]


def test_one_sum_to_shape():
    """Broadcasting in reverse (``while ndim(x) > len(shape): sum axis 0``) is written once."""
    def reduces(n):
        return (isinstance(n, ast.While) and isinstance(n.test, ast.Compare)
                and isinstance(n.test.comparators[0], ast.Call) and _is_name(n.test.comparators[0].func, "len"))
    assert _where(reduces) == ["ssmref.recurrence.sum_to"]


def test_one_decoding_of_interleaved_bc():
    """``X[..., 0::2] + 1j X[..., 1::2]`` (mamba's interleaved complex B/C) is decoded once."""
    def strided(n, start):
        # x[..., start::2]
        if not isinstance(n, ast.Subscript):
            return False
        parts = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
        return any(isinstance(s, ast.Slice) and isinstance(s.lower, ast.Constant) and s.lower.value == start
                   and isinstance(s.step, ast.Constant) and s.step.value == 2 for s in parts)

    def decodes(n):
        return (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add) and strided(n.left, 0)
                and _is_mult(n.right) and isinstance(n.right.left, ast.Constant)
                and n.right.left.value == 1j and strided(n.right.right, 1))
    assert _where(decodes) == ["ssmref.selective.scan.time_first_bc"]


@pytest.mark.parametrize("kit,definition,theirs", [
    ("selective_naive", "ssmref.selective.naive", {"recurrence", "step", "gate", "silu"}),
    ("mamba3_naive", "ssmref.selective.mamba3_loop", {"_sequences", "_rotate", "_sigmoid"}),
    ("delta_naive", "ssmref.delta.recurrent", {"step", "_l2norm", "l2norm", "core_layout"}),
    ("structured_naive", "ssmref.structured.diagonal_loop",
     {"discrete_factors", "states", "_states", "readout", "_readout", "powers", "_powers",
      "scan_loop", "kernel_loop", "s4d_kernel_loop", "bidirectional_loop"}),
    ("ssm", "ssmref.ssm.recurrent", {"ssm_step_core", "ssm_loop"})])
def test_the_kits_baselines_run_the_definitions(kit, definition, theirs):
    """Each naive baseline of the kit is the model's definition with rounding arithmetic: it
    imports the definition and defines none of its pieces itself."""
    name = f"ssmref.crosscheck.families.{kit}"
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not names & theirs, names & theirs
    assert definition in GRAPH[name]


#: Modules that may word their own array checks: the rule itself, and the file loader, whose
#: archives hold bool and integer data arrays beside the numbers it requires finite.
OWN_ARRAY_CHECKS = {"ssmref.checks", "ssmref.storage"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_one_validation_rule_for_arrays(name):
    """Arrays are checked by :func:`ssmref.checks.check_array` (numeric, never bool, finite unless
    documented) and by nothing else: no other module words a bool refusal or a non-finite one."""
    if name in OWN_ARRAY_CHECKS:
        return
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    texts = [node.value for raise_ in ast.walk(tree) if isinstance(raise_, ast.Raise)
             for node in ast.walk(raise_)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    own = [t for t in texts if "got a bool" in t or "non-finite entries" in t]
    assert not own, f"{name} words its own array check: {own} (use ssmref.checks.check_array)"


#: The cross-check kit's families are callables of ``(inputs, attrs)``, not public functions with
#: a checked boundary; the naming rule below is for the library's functions.
KIT = "ssmref.crosscheck"
VALIDATORS = ("check_", "values", "shape_of")


def _module_functions(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    return [node for node in tree.body if isinstance(node, ast.FunctionDef)]


@pytest.mark.parametrize("name", sorted(m for m in MODULES if not m.startswith(KIT)))
def test_one_name_for_unchecked_math(name):
    """A public ``f`` checks its arguments and calls its unchecked twin ``f_core``: no module
    defines a private ``_f`` beside a public ``f``, and no ``*_core`` function validates (it calls
    no ``check_*``, ``*_args``, ``values`` or ``shape_of``)."""
    functions = _module_functions(name)
    names = {f.name for f in functions}
    twins = sorted(n for n in names if n.startswith("_") and not n.startswith("__") and n[1:] in names)
    assert not twins, f"{name}: unchecked twins named {twins}; name them <public name>_core"
    for f in functions:
        if not f.name.endswith("_core"):
            continue
        called = {getattr(c.func, "id", None) or getattr(c.func, "attr", None)
                  for c in ast.walk(f) if isinstance(c, ast.Call)}
        checks = sorted(c for c in called if c and (c.startswith(VALIDATORS) or c.endswith("_args")))
        assert not checks, f"{name}.{f.name} is unchecked math by its name but calls {checks}"


#: The model packages and the foundation's math: a reader opening one of their modules sees its
#: equation (the module docstring) and the code that computes it on the first screen.
MATH_PACKAGES = ("ssmref.ssm", "ssmref.structured", "ssmref.selective", "ssmref.delta",
                 "ssmref.metarl.policy", "ssmref.metarl.rl", "ssmref.adaptation", "ssmref.maml",
                 "ssmref.optim", "ssmref.nn", "ssmref.recurrence")
FIRST_SCREEN = 70


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith(MATH_PACKAGES)
                                         and not m.endswith("selftest")))
def test_math_first(name):
    """The first function or class of a model module starts within :data:`FIRST_SCREEN` lines,
    and no argument check comes before its first public function: checks live in ``*_args``
    modules, long tapes below the public functions."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    if not defs:
        return
    assert defs[0].lineno <= FIRST_SCREEN, \
        f"{name}: the first definition ({defs[0].name}) is at line {defs[0].lineno}"
    public = [i for i, n in enumerate(defs) if not n.name.startswith("_")]
    before = defs[:public[0]] if public else defs
    checks = [n.name for n in before if n.name.lstrip("_").startswith("check") or n.name.endswith("_args")]
    assert not checks, f"{name}: argument checks {checks} before the first public function"
