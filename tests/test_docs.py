"""The code in ``docs/*.md`` and ``README.md`` is part of the spec: every ```python block runs.

The blocks of one file run in order in one namespace, in a temporary working directory; each
block of README.md also runs alone, in a fresh namespace, as a reader pastes it.  A block
fenced ```python file=NAME.py is a test file of a user's own suite instead: it is written to
``NAME.py`` and run by pytest in a fresh process.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALL_FILES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# pages whose examples are programs and commands (```bash), not Python to run in-process
COMMANDS_ONLY = {"kernels.md"}
FILES = [path for path in ALL_FILES if path.name not in COMMANDS_ONLY]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FILE_BLOCK = re.compile(r"^```python file=([A-Za-z0-9_]+\.py)\n(.*?)^```", re.S | re.M)


def python_blocks(path):
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_pages_without_python_examples_are_the_listed_ones():
    assert {path.name for path in ALL_FILES if not python_blocks(path)} == COMMANDS_ONLY


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_doc_examples_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    assert blocks, f"{path.name} has no ```python example to run"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{path.stem}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{path.name}[block {i}]", "exec"), namespace)


README_BLOCKS = python_blocks(ROOT / "README.md")


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_each_readme_example_runs_when_pasted_alone(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = README_BLOCKS[index]
    exec(compile(code, f"README.md[block {index}]", "exec"), {"__name__": "readme_block"})


def file_blocks(path):
    return FILE_BLOCK.findall(path.read_text(encoding="utf-8"))


TEST_FILES = [(path, name, code) for path in FILES for name, code in file_blocks(path)]


@pytest.mark.slow                        # a fresh interpreter with torch: about 7 s on two cores
@pytest.mark.parametrize("path,name,code", TEST_FILES,
                         ids=[f"{p.name}:{n}" for p, n, _ in TEST_FILES])
def test_doc_test_files_pass_under_pytest(path, name, code, tmp_path):
    if "import torch" in code:
        pytest.importorskip("torch")
    (tmp_path / name).write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    for key in [k for k in env if k.startswith("PYTEST_")]:     # not a worker of this run's xdist
        del env[key]
    # pytest-benchmark, where installed, warns when it sees xdist, and -W error would stop the run
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:benchmark", "-W", "error", name], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"\d+ passed", run.stdout) and "skipped" not in run.stdout, run.stdout


def test_the_in_process_example_is_there():
    assert [n for _, n, _ in TEST_FILES if n == "test_my_selective_scan.py"]



#: Projects whose issue trackers the text may cite ("mamba issue 1017"); the project's own issues
#: and its history belong in commit messages, not in what describes the project as it is.
UPSTREAM = r"(?:mamba|mamba\.py|mamba\.py's|Triton,|triton|vLLM|fla|PyTorch|JAX|autograd)"
HISTORY = re.compile(r"\bprototype\b|\bissue \d+|\b(?:earlier|previous) (?:version|session|rule)s?\b",
                     re.IGNORECASE)


def _described_text():
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for sub in ("ssmref", "examples", "benchmarks"):
        paths += sorted((ROOT / sub).rglob("*.py"))
    return paths


def history_words(text):
    """The places in ``text`` that speak of the project's history: the word "prototype", an
    issue number not attributed to an upstream project, an earlier version or rule."""
    found = []
    for m in HISTORY.finditer(text):
        before = text[max(0, m.start() - 20):m.start()]
        if m.group(0).lower().startswith("issue") and re.search(UPSTREAM + r"\s+$", before):
            continue
        found.append(m.group(0))
    return found


def test_history_finder_finds_history():
    assert history_words("as the prototype wrote it; the goal of issue 13") == ["prototype", "issue 13"]
    assert history_words("mamba issue 1017 and mamba.py issue 26; Triton, issue 7009") == []
    assert history_words("The earlier rule let it pass") == ["earlier rule"]


def test_text_describes_the_project_as_it_is():
    bad = {}
    for path in _described_text():
        words = history_words(path.read_text(encoding="utf-8"))
        if words:
            bad[str(path.relative_to(ROOT))] = words
    assert not bad, f"history in the project's text (belongs in commit messages): {bad}"
