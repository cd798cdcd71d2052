"""Ctrl-C during ``python -m ssmref train``: a checkpoint, one line, exit 130, an exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ssmref import params as P
from ssmref import storage
from ssmref.cli import main
from ssmref.metarl.interrupt import resume_command

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--env", "navigation2d", "--meta-batch-size", "2", "--episodes-per-task", "3",
        "--horizon", "8", "--hidden", "8", "--state-dim", "3", "--checkpoint-every", "1000",
        "--constant-lr", "--no-eval"]


def records(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in f if line.endswith("\n")]


def iterations(run_dir):
    return [r["iteration"] for r in records(run_dir)]


def test_sigint_saves_a_checkpoint_and_resume_is_exact(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # Ctrl-C as in a terminal: a runner started in the background by a shell without job control
    # ignores SIGINT, its children inherit that, and Python installs no KeyboardInterrupt handler
    # for an ignored SIGINT; the child starts with the default action restored.
    with subprocess.Popen([sys.executable, "-m", "ssmref", "train", *TINY, "--out", str(run),
                           "--iterations", "100000"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                (run / "metrics.jsonl").exists() and len(iterations(run)) >= 3):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert resume_command(run) in lines[0]
    reached = int(lines[0].split("interrupted at iteration ")[1].split("/")[0])
    assert reached >= 3
    # the checkpoint holds every finished iteration (checkpoint-every is 1000)
    config = json.loads((run / "config.json").read_text())
    from ssmref.metarl.rundir import load_trainer
    assert load_trainer(run, config).iteration == reached
    # resumed for two more, it equals an uninterrupted run of that length
    total = str(reached + 2)
    assert main(["train", "--resume", "--out", str(run), "--iterations", total, "--no-eval"]) == 0
    ref = tmp_path / "ref"
    assert main(["train", *TINY, "--out", str(ref), "--iterations", total]) == 0
    assert iterations(ref) == list(range(1, reached + 3)) and records(run) == records(ref)
    assert P.tree_allclose(P.unflatten_dict(storage.load_npz(run / "params.npz")),
                           P.unflatten_dict(storage.load_npz(ref / "params.npz")), rtol=0, atol=0)


def test_ctrl_c_while_a_checkpoint_is_written_goes_back_one_iteration(tmp_path, monkeypatch,
                                                                       capsys):
    from ssmref.metarl import train as TR
    real, calls = TR.save_trainer, []

    def interrupted_once(run_dir, trainer):
        calls.append(trainer.iteration)
        if len(calls) == 1:                       # the periodic checkpoint after iteration 2
            raise KeyboardInterrupt
        real(run_dir, trainer)
    monkeypatch.setattr(TR, "save_trainer", interrupted_once)
    run, ref = tmp_path / "run", tmp_path / "ref"
    flags = [*TINY[:-4], "--checkpoint-every", "2", "--constant-lr", "--no-eval"]
    assert main(["train", *flags, "--out", str(run), "--iterations", "4"]) == 130
    assert calls == [2, 1]                        # then the checkpoint of iteration 1
    assert "interrupted at iteration 1/4" in capsys.readouterr().err
    assert iterations(run) == [1, 2]              # line 2 is dropped on resume
    monkeypatch.undo()
    assert main(["train", "--resume", "--out", str(run), "--no-eval"]) == 0
    assert main(["train", *flags, "--out", str(ref), "--iterations", "4"]) == 0
    assert records(run) == records(ref)
