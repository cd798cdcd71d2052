"""What the tests of the example ports (``examples/torch_port*.py``, ``examples/jax_port*.py``)
share: a port loaded as a module, the packages it imports, and the cases a check of its results
fails."""

import ast
import importlib.util
import os

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def path(name):
    return os.path.join(EXAMPLES, f"{name}.py")


def load(name):
    """``examples/{name}.py`` as a module (one process, so one compilation cache for every run)."""
    spec = importlib.util.spec_from_file_location(name, path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported_packages(name):
    """The top-level packages ``examples/{name}.py`` imports, read from its source (a port that
    imports ssmref would check ssmref against itself)."""
    with open(path(name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    return {m.split(".")[0] for m in names}


def failed(vectors_dir, results_dir, cases, dtype):
    """``(names of the cases that failed, the report)`` of ``ssmref.crosscheck.check``."""
    from ssmref import crosscheck
    report = crosscheck.check(vectors_dir, str(results_dir), dtype, cases=cases)
    return {c["name"] for c in report["cases"] if not c["passed"]}, report
