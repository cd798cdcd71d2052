"""``python -m ssmref evaluate`` as a user meets it: its own file, --steps 0, messages."""

import json

from ssmref.cli import main
from ssmref.metarl.evaluation import cli_result_name

TINY = ["--env", "navigation2d", "--meta-batch-size", "2", "--episodes-per-task", "3",
        "--horizon", "8", "--hidden", "8", "--state-dim", "3"]


def test_evaluate_keeps_the_files_train_wrote(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--iterations", "1", "--eval-tasks", "2",
                 "--eval-steps", "1"]) == 0
    trained = {name: (run / name).read_bytes()
               for name in ("evaluation.json", "evaluation_finn.json")}
    capsys.readouterr()
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "0"]) == 0
    out, err = capsys.readouterr()
    assert "--steps 0: no inner step" in err
    assert "inner step sizes: ;" not in out and "no inner step; 3 episodes" in out
    own = run / cli_result_name("ssmref", 2, 0)
    assert own.name == "evaluation_ssmref_2tasks_0steps.json"
    assert json.loads(own.read_text())["steps"] == [0]
    assert {name: (run / name).read_bytes() for name in trained} == trained
    # replacing train's file is asked for by name
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "2",
                 "--out-name", "evaluation.json"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["steps"] == [0, 1, 2]
    # the default settings write train's file (the contract's evaluation.json)
    assert cli_result_name("ssmref", 40, 3) == "evaluation.json"
    assert cli_result_name("finn", 40, 3) == "evaluation_finn.json"
    assert cli_result_name("ssmref", 40, 3, 0.05) == \
        "evaluation_ssmref_40tasks_3steps_later0.05.json"


def test_messages_name_the_options_the_user_typed(tmp_path, capsys):
    sin = tmp_path / "sin"
    assert main(["train", "--env", "sinusoid", "--out", str(sin), "--iterations", "1",
                 "--hidden", "4", "--no-eval"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(sin), "--protocol", "finn"]) == 2
    err = capsys.readouterr().err
    assert "--protocol finn applies to the RL envs" in err and "later_inner_lr" not in err
    assert main(["evaluate", str(sin), "--later-inner-lr", "0.1"]) == 2
    assert "--later-inner-lr applies to the RL envs" in capsys.readouterr().err


def test_evaluate_with_the_defaults_rewrites_trains_result_unchanged(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env", "bandit", "--meta-batch-size", "2", "--episodes-per-task",
                 "2", "--horizon", "4", "--hidden", "4", "--state-dim", "2", "--out", str(run),
                 "--iterations", "1"]) == 0
    before = json.loads((run / "evaluation.json").read_text())
    assert main(["evaluate", str(run)]) == 0
    after = json.loads((run / "evaluation.json").read_text())
    assert {k: v for k, v in after.items() if k != "seconds"} == \
        {k: v for k, v in before.items() if k != "seconds"}
