"""The package's layout is part of the specification: no import cycles, short modules, one
NumPy alias convention, and the layers of docs/index.md.

Imports are read from the source (``ast``), module level and inside functions alike: a lazy import
inside a function closes a cycle as surely as one at the top.
"""

import ast
import pathlib

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


def test_models_do_not_import_applications_or_tools():
    for name, deps in GRAPH.items():
        if name.startswith("ssmref.ssm"):
            bad = sorted(d for d in deps if d.startswith(("ssmref.metarl", "ssmref.adaptation",
                                                          "ssmref.crosscheck", "ssmref.experiments",
                                                          "ssmref.cli")))
            assert not bad, f"{name} imports {bad}"


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
