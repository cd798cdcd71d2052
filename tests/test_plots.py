"""The pictures of a run: drawn by train, redrawn by ``plot``, and optional (no matplotlib: one
line, no crash)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssmref.cli import main
from ssmref.metarl.report import NO_MATPLOTLIB

TINY = ["--meta-batch-size", "2", "--episodes-per-task", "3", "--horizon", "8", "--hidden", "8",
        "--state-dim", "3"]
PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    plt = pytest.importorskip("matplotlib.pyplot")
    assert path.read_bytes()[:8] == PNG, path
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300


def test_plot_draws_the_pictures_of_a_run(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "nav"
    assert main(["train", "--env", "navigation2d", *TINY, "--out", str(run), "--iterations", "2",
                 "--no-eval"]) == 0
    assert not list(run.glob("*.png"))
    assert main(["plot", str(run)]) == 0                  # no evaluation yet: no adaptation.png
    assert "wrote " + str(run / "trajectories.png") in capsys.readouterr().out
    for name in ("learning_curve.png", "trajectories.png"):
        assert_png(run / name)
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "2", "--protocol", "finn",
                 "--out-name", "evaluation_finn.json"]) == 0
    assert_png(run / "adaptation.png")                    # train's file: the shared picture
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_without_matplotlib_one_line_and_no_crash(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)         # import matplotlib fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    run = tmp_path / "nav"
    assert main(["train", *TINY, "--out", str(run), "--iterations", "1", "--eval-tasks", "2",
                 "--eval-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_MATPLOTLIB) == 1 and "Traceback" not in out
    assert not list(run.glob("*.png"))
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "matplotlib is not installed" in err


def test_the_core_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "import ssmref, ssmref.cli, ssmref.metarl.plots, ssmref.metarl.train, ssmref.ssm\n"
            "assert 'matplotlib.pyplot' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr


def test_plot_refuses_a_run_another_writer_holds(tmp_path, capsys):
    import threading
    from ssmref.metarl.runlock import run_lock
    pytest.importorskip("matplotlib")
    run = tmp_path / "nav"
    assert main(["train", *TINY, "--out", str(run), "--iterations", "1", "--no-eval"]) == 0
    held, done = threading.Event(), threading.Event()

    def writer():
        with run_lock(run, "train"):
            held.set()
            done.wait(60)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(60)
        assert main(["plot", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "train" in err and "\n" not in err
        assert not list(run.glob("*.png"))
    finally:
        done.set()
        thread.join()


def test_the_trajectories_follow_finns_protocol_for_three_steps(monkeypatch):
    # The paths after k = 0..3 steps: every episode starts at the origin, the first step is taken
    # with alpha and the later ones with alpha/2, each on fresh episodes of the adapted policy.
    from ssmref import maml
    from ssmref.metarl import plots
    from ssmref.metarl.evaluation import finn_goals
    from ssmref.metarl.run_config import make_config, new_trainer
    config = make_config("navigation2d", family={"horizon": 8},
                         policy={"hidden_sizes": [8], "state_dim": 3},
                         maml={"meta_batch_size": 2, "episodes_per_task": 3})
    trainer = new_trainer(config)
    steps_taken, adapt = [], maml.adapt

    def recorded(*args, **kwargs):
        steps_taken.append(kwargs["inner_lr"])
        return adapt(*args, **kwargs)
    monkeypatch.setattr(plots.maml, "adapt", recorded)
    paths, masks = plots.navigation_paths(trainer, finn_goals()[:2], steps=3, episodes=4, shown=2)
    assert steps_taken == [0.5, 0.25, 0.25]
    assert len(paths) == len(masks) == 4
    for p, m in zip(paths, masks):
        assert p.shape == (2, 2, 8, 2) and m.shape == (2, 2, 8)
        assert (p[:, :, 0] == 0).all()
    assert not (paths[2] == paths[3]).all()                     # a fourth policy, fresh draws
