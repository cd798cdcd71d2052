"""Progress lines of long commands: throttled, on stderr, and shown by evaluate, vectors, adapt."""

import io

from ssmref.cli import main
from ssmref.progress import Progress

TINY = ["--env", "navigation2d", "--meta-batch-size", "2", "--episodes-per-task", "3",
        "--horizon", "8", "--hidden", "8", "--state-dim", "3", "--no-eval"]


def test_lines_are_throttled_and_estimate_the_time_left():
    now, out = [0.0], io.StringIO()
    progress = Progress("job", 10, every=5, stream=out, clock=lambda: now[0])
    printed = []
    for done in range(1, 11):
        now[0] += 2.0
        printed.append(progress.update(done))
    assert printed == [False, False, True, False, False, True, False, False, True, False]
    assert out.getvalue().splitlines()[0] == "job: 3/10 (30%), 6 s, about 14 s left"


def test_long_commands_report_progress_on_stderr(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Progress, "EVERY", 0.0)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--iterations", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--protocol", "finn"]) == 0
    err = capsys.readouterr().err
    assert "evaluate (finn protocol): 4/4 (100%)" in err
    assert main(["vectors", str(tmp_path / "vec"), "--cases", "ssm_scan", "ssm_step"]) == 0
    assert "vectors: 1/2 (50%)" in capsys.readouterr().err
    assert main(["adapt", "--smoke"]) == 0
    assert "adapt: " in capsys.readouterr().err
