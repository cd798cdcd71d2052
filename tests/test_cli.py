"""The command line: ``python -m ssmref SUBCOMMAND``."""

import subprocess
import sys

from ssmref.cli import main


def test_selftest_subcommand(capsys):
    assert main(["selftest"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("passed, 0 failed")


def test_ssm_module_selftest_runs_as_a_script():
    out = subprocess.run([sys.executable, "-m", "ssmref.ssm"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith(" passed, 0 failed") and int(last.split()[0]) >= 10


def test_adapt_subcommand_smoke(capsys):
    assert main(["adapt", "--smoke"]) == 0
    assert "tent" in capsys.readouterr().out


def test_selftest_covers_every_ssm_family(capsys):
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    assert "S4D/S5" in out and "Mamba-2" in out and "scan = convolve = parallel scan" in out
    assert "delta rule: WY/UT chunks" in out
    assert out.strip().splitlines()[-1].endswith("passed, 0 failed")
