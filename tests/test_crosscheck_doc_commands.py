"""Every command of the kit printed in the docs runs as printed, with the printed exit status.

The ``bash`` blocks of the kit's pages that call ``python -m ssmref vectors`` are run line by line
in a fresh directory (``python`` is this interpreter, ``examples/`` this checkout's); a comment
``exit N`` gives the expected status (0 otherwise).  A line that calls your own code
(``my_port.py``, ``my_kernel.py``) is a placeholder: it and the rest of its block are not run.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ("docs/crosscheck.md", "docs/selective.md", "docs/structured.md", "docs/mamba3.md",
         "docs/delta.md")
PLACEHOLDERS = ("my_port.py", "my_kernel.py")


def blocks():
    """``(page, index, [(command, expected status)])`` of every kit block of :data:`PAGES`."""
    out = []
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
        for i, m in enumerate(re.finditer(r"```bash\n(.*?)```", text, re.S)):
            if "ssmref vectors" not in m.group(1):
                continue
            lines = []
            for line in m.group(1).splitlines():
                command, _, comment = line.partition("#")
                if not command.strip():
                    continue
                status = re.search(r"\bexit (\d)", comment)
                lines.append((command.strip(), int(status.group(1)) if status else 0))
            out.append((page, i, lines))
    return out


def needs(lines):
    """The optional packages a block's commands import."""
    text = " ".join(c for c, _ in lines)
    return [m for m, key in (("torch", "torch_port"), ("jax", "jax_port")) if key in text]


def test_the_kit_blocks_are_found_and_state_their_statuses():
    found = {(page, tuple(c for c, _ in lines)) for page, _, lines in blocks()}
    assert len(found) >= 5
    worked = [lines for page, _, lines in blocks() if any("torch_port.py" in c for c, _ in lines)]
    assert worked and {s for _, s in worked[0]} == {0, 1, 3}
    for page, _, lines in blocks():              # a partial port checks what it wrote
        if any(p in c for c, _ in lines for p in PLACEHOLDERS):
            continue
        for command, _ in lines:
            if command.startswith("python -m ssmref check"):
                assert "--skip-missing" in command or "--cases" in command, (page, command)


@pytest.mark.slow
@pytest.mark.parametrize("page,index,lines", blocks(), ids=lambda v: str(v)[:40])
def test_every_printed_command_runs_with_its_printed_status(page, index, lines, tmp_path):
    for module in needs(lines):
        pytest.importorskip(module)
    env = dict(os.environ, PYTHONPATH=ROOT)
    for command, status in lines:
        if any(p in command for p in PLACEHOLDERS):
            break
        argv = shlex.split(command)
        assert argv[0] == "python", command
        argv = [sys.executable] + [os.path.join(ROOT, a) if a.startswith("examples/") else a
                                   for a in argv[1:]]
        p = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)
        assert p.returncode == status, (page, command, p.stdout[-2000:], p.stderr[-2000:])
