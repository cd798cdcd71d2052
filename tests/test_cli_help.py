"""The command line as a user meets it: help with defaults, messages in the user's words, the
``ssmref`` console command."""

import argparse
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from ssmref.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", sorted(subparsers()))
def test_every_option_has_help_that_states_its_default(name):
    sub = subparsers()[name]
    text = sub.format_help()
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        if action.option_strings and action.default not in (None, False):
            assert "default" in action.help or f"(default: " in text, action.option_strings
        if action.option_strings and action.default is None and action.nargs != 0:
            assert "default" in action.help, f"{name} {action.option_strings}: default unstated"
    assert "%(" not in text


def test_help_shows_defaults_and_a_plain_description(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and ":mod:" not in top and "plot" in top
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "held-out tasks (default: 40)" in text and "(default: ssmref)" in text


def test_a_bad_value_is_named_by_its_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--hidden", "64x64"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--hidden" in err and "_hidden" not in err and "'64x64'" in err


def test_the_console_command():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options.entry_points"]["console_scripts"].split() == \
        ["ssmref", "=", "ssmref.cli:console"]
    code = ("import sys; sys.argv = ['ssmref', 'train', '--help']\n"
            "from ssmref.cli import console; console()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("usage: ssmref train"), out.stderr


@pytest.mark.parametrize("argv,option", [
    (["--inner-lr", "-1"], "--inner-lr"), (["--meta-batch-size", "0"], "--meta-batch-size"),
    (["--state-dim", "0"], "--state-dim"), (["--hidden", "4,0"], "--hidden"),
    (["--seed", "-1"], "--seed"), (["--env", "sinusoid", "--hidden", "0"], "--hidden"),
    (["--max-kl", "0"], "--max-kl")])
def test_refused_settings_are_named_by_their_option(argv, option, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {option} must be") and "_" not in err.split(" must")[0], err
    assert not (tmp_path / "run").exists()
