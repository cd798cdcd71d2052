"""Hostile run directories and command lines for ``python -m ssmref train`` / ``evaluate``.

Each test builds one class of hostile input and asserts: exit status 2 with one line on stderr and
no traceback, nothing written before every option was checked, no file of the run lost.
(``tests/test_hostile_inputs.py`` covers the loaders, the checker and the other commands.)

Attacks, by category (each kind counts once, whatever the commands it is tried with; the last
test checks the numbers):

- run-directory files (``config.json``, ``metrics.jsonl``, ``checkpoint.npz``, ``run.lock``):
  30 (malformed, unbounded sizes, settings that do not apply, a config and a checkpoint of
  different runs, links, lock files that are not files, bad metrics records, a directory without
  a run)
- options refused before any work or any write: 37 (values, unbounded sizes, usage errors,
  options that do not apply, ``--out`` and ``--out-name`` that would overwrite, ``--resume`` with other settings)
- runs interrupted before their first checkpoint, and corrupt metrics: 4
- concurrent writers of one run directory: 4 (a writer refused while another process holds the
  run, readers not; two threads of one process; two runs started together; two resumes at once)
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as onp
import pytest

from ssmref.cli import main
from ssmref.storage import load_npz, save_npz

TINY = ["--env", "bandit", "--meta-batch-size", "2", "--episodes-per-task", "2", "--horizon", "4",
        "--hidden", "4", "--state-dim", "2", "--checkpoint-every", "1", "--no-eval"]


def run(argv, capsys):
    """``main(argv)``: ``(exit status, stdout, stderr)``."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:                     # a usage error: argparse exits
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_refused(rc, err):
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (2 iterations), copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *TINY, "--out", str(out), "--iterations", "2"]) == 0
    return out


def run_files(run_dir):
    """The contents of a run's files (but the lock file, which a writer may touch) and of a
    directory in their place (as ``None``)."""
    return {n: None if (run_dir / n).is_dir() else (run_dir / n).read_bytes()
            for n in os.listdir(run_dir) if n != "run.lock"}


def copy_run(src, dst):
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


# ---------------------------------------------------------------------------------------------
# Run-directory files
# ---------------------------------------------------------------------------------------------

def damage_config(run_dir, content):
    path = run_dir / "config.json"
    if content == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text(content)


# The text of a hostile config.json (a function: of the real config), and what the refusal says.
CONFIGS = {
    "list": ("[]", "expected a run configuration"),
    "empty object": ("{}", "expected a run configuration"),
    "unknown env": (lambda c: c.update(env="chess"), "env must be one of"),
    "unknown family key": (lambda c: c["family"].update(gravity=9.81), "do not apply to env"),
    "deep nesting": ("[" * 10000 + "]" * 10000, "nested deeper than 64"),
    "nan": ('{"env": NaN}', "not valid JSON"),
    "directory": ("directory", "is a directory"),
    "not json": ("env = bandit", "not valid JSON"),
    # sizes bounded before anything is allocated or run
    "hidden sizes 1e5 x 1e5": (lambda c: c["policy"].update(hidden_sizes=[100000, 100000]),
                               "MAX_MODEL_PARAMETERS"),
    "horizon 1e9": (lambda c: c["family"].update(horizon=10 ** 9), "horizon must be an int"),
    "meta_batch_size 1e5": (lambda c: c["maml"].update(meta_batch_size=10 ** 5),
                            "meta_batch_size must be an int"),
    "iterations 1e12": (lambda c: c.update(iterations=10 ** 12), "iterations must be an int"),
    # settings that do not apply, or do not match the checkpoint
    "unknown preset": (lambda c: c.update(preset="nonsense"), "preset must be one of"),
    "mlp policy with state_dim": (lambda c: c["policy"].update(kind="mlp"),
                                  "state_dim applies to the SSM policy"),
    "hidden sizes of another run": (lambda c: c["policy"].update(hidden_sizes=[5]),
                                    "belongs to another run"),
}


def hostile_config(real, kind):
    content = CONFIGS[kind][0]
    if callable(content):
        config = json.loads(real)
        content(config)
        return json.dumps(config)
    return content


@pytest.mark.parametrize("command", ["evaluate", "resume"])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_hostile_config_json(trained, tmp_path, capsys, kind, command):
    run_dir = copy_run(trained, tmp_path / "run")
    damage_config(run_dir, hostile_config((trained / "config.json").read_text(), kind))
    argv = (["evaluate", run_dir, "--tasks", "2", "--steps", "1"] if command == "evaluate"
            else ["train", "--resume", "--out", run_dir, "--iterations", "3", "--no-eval"])
    before = run_files(run_dir)
    rc, out, err = run(argv, capsys)
    assert_refused(rc, err)
    assert CONFIGS[kind][1] in err
    assert run_files(run_dir) == before                        # nothing written or lost


def rewrite_checkpoint(run_dir, change):
    path = run_dir / "checkpoint.npz"
    arrays = load_npz(path)
    meta = json.loads(arrays["meta_json"].tobytes().decode())
    change(arrays, meta)
    arrays["meta_json"] = onp.frombuffer(json.dumps(meta).encode(), dtype=onp.uint8)
    save_npz(path, arrays)


def set_meta(key, value):
    def change(arrays, meta):
        meta[key] = value
    return change


def nan_weight(arrays, meta):
    name = next(k for k in arrays if k.startswith("params.") and arrays[k].size)
    arrays[name] = arrays[name] * onp.nan


def hidden(sizes):
    def change(arrays, meta):
        meta["spec"] = dict(meta["spec"], hidden_sizes=sizes)
    return change


def spec_nested(arrays, meta):
    meta["spec"] = dict(meta["spec"], hidden_sizes=[[[[[[[[[[[[[4]]]]]]]]]]]]])


# How the checkpoint is damaged, and what the refusal says.
CHECKPOINTS = {
    "iteration 1e999": (lambda a, m: m.update(iteration=1e999), "iteration must be an int >= 0"),
    "iteration -5": (set_meta("iteration", -5), "iteration must be an int >= 0"),
    "iteration 2.5": (set_meta("iteration", 2.5), "iteration must be an int >= 0"),
    "nan weights": (nan_weight, "has non-finite entries"),
    "hidden sizes 1e9": (hidden([10 ** 9, 10 ** 9]), "MAX_MODEL_PARAMETERS"),
    "hidden sizes 1e7": (hidden([10 ** 7]), "MAX_MODEL_PARAMETERS"),
    "hidden sizes nested": (spec_nested, "hidden_sizes[0] must be an int"),
}


@pytest.mark.parametrize("command", ["evaluate", "resume"])
@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_hostile_checkpoint(trained, tmp_path, capsys, kind, command):
    run_dir = copy_run(trained, tmp_path / "run")
    if kind == "iteration 1e999":                          # JSON cannot hold it: write the text
        path = run_dir / "checkpoint.npz"
        arrays = load_npz(path)
        text = arrays["meta_json"].tobytes().decode()
        meta = json.loads(text)
        text = text.replace(f'"iteration": {meta["iteration"]}', '"iteration": 1e999')
        arrays["meta_json"] = onp.frombuffer(text.encode(), dtype=onp.uint8)
        save_npz(path, arrays)
    else:
        rewrite_checkpoint(run_dir, CHECKPOINTS[kind][0])
    argv = (["evaluate", run_dir, "--tasks", "2", "--steps", "1"] if command == "evaluate"
            else ["train", "--resume", "--out", run_dir, "--iterations", "3", "--no-eval"])
    before = run_files(run_dir)
    rc, out, err = run(argv, capsys)
    assert_refused(rc, err)
    assert CHECKPOINTS[kind][1] in err
    assert run_files(run_dir) == before                            # nothing rewritten


def test_checkpoint_linked_from_outside_is_refused(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    outside = tmp_path / "elsewhere.npz"
    os.replace(run_dir / "checkpoint.npz", outside)
    os.symlink(outside, run_dir / "checkpoint.npz")
    assert_refused(*run(["evaluate", run_dir, "--tasks", "2"], capsys)[::2])


def test_metrics_that_is_a_directory(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").mkdir()
    assert_refused(*run(["train", "--resume", "--out", run_dir, "--iterations", "3",
                         "--no-eval"], capsys)[::2])


def test_a_metrics_line_that_is_not_an_object(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(["[1, 2]"] + lines[1:]) + "\n")
    before = (run_dir / "metrics.jsonl").read_bytes()
    assert_refused(*run(["train", "--resume", "--out", run_dir, "--iterations", "3",
                         "--no-eval"], capsys)[::2])
    assert (run_dir / "metrics.jsonl").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Options: checked before any work and before anything is written
# ---------------------------------------------------------------------------------------------

TINY_RUN = ["train", *TINY, "--iterations", "2"]
NAV = ["train", "--env", "navigation2d", "--iterations", "2", "--no-eval"]
SIN = ["train", "--env", "sinusoid", "--iterations", "2", "--no-eval"]
# (command line without --out, what the one-line refusal says)
BAD_OPTIONS = {
    "seed -1": (TINY_RUN + ["--seed", "-1"], "seed must be an int >= 0"),
    "iterations 0": (TINY_RUN + ["--iterations", "0"], "--iterations must be an int >= 1"),
    "eval-tasks 0": (TINY_RUN + ["--eval-tasks", "0"], "--eval-tasks must be an int >= 1"),
    "eval-steps -1": (TINY_RUN + ["--eval-steps", "-1"], "--eval-steps must be an int >= 0"),
    "checkpoint-every 0": (TINY_RUN + ["--checkpoint-every", "0"], "--checkpoint-every must"),
    "inner-lr nan": (TINY_RUN + ["--inner-lr", "nan"], "--inner-lr must be finite"),
    "outer-lr -1": (TINY_RUN + ["--outer-lr", "-1"], "--outer-lr must be >= 0"),
    "loss-rounds 0": (NAV + ["--loss-rounds", "0"], "--loss-rounds must be an int >= 1"),
    "loss-rounds over adapt-rounds": (NAV + ["--adapt-rounds", "2", "--loss-rounds", "3"],
                                      "--loss-rounds must be at most --adapt-rounds (2), got 3"),
    # a later option wins in argparse, so TINY's bandit options would stay for these: not used
    "sinusoid horizon": (SIN + ["--horizon", "5"], "do not apply to env 'sinusoid'"),
    "sinusoid episodes": (SIN + ["--episodes-per-task", "3"], "unknown MAML settings"),
    # sizes bounded before anything is allocated (never a MemoryError)
    "hidden 99999,99999": (TINY_RUN + ["--hidden", "99999,99999"], "MAX_MODEL_PARAMETERS"),
    "mlp hidden 99999,99999": (NAV + ["--policy", "mlp", "--hidden", "99999,99999"],
                               "MAX_MODEL_PARAMETERS"),
    "sinusoid hidden 1e5,1e5": (SIN + ["--hidden", "100000,100000"], "MAX_MODEL_PARAMETERS"),
    "horizon 1e9": (TINY_RUN + ["--horizon", "1000000000"], "horizon must be an int >= 1 and <="),
    "meta-batch-size 1e5": (TINY_RUN + ["--meta-batch-size", "100000"],
                            "--meta-batch-size must be"),
    "steps per iteration 4e7": (TINY_RUN + ["--horizon", "10000", "--episodes-per-task", "1000"],
                                "MAX_BATCH_STEPS"),
    "eval-tasks 1e9": (TINY_RUN + ["--eval-tasks", "1000000000"], "--eval-tasks must be an int"),
    "final evaluation of 2e7 steps": (["train", "--env", "navigation2d", "--iterations", "2",
                                       "--eval-tasks", "10000"], "would sample 20,000,000 steps"),
    "eval-steps 1e6": (TINY_RUN + ["--eval-steps", "1000000"], "--eval-steps must be an int"),
    "iterations 1e11": (TINY_RUN + ["--iterations", str(10 ** 11)],
                        "--iterations must be an int >= 1 and <= 10000000"),
    # usage errors: one line too
    "hidden 1e5 (not an int)": (TINY_RUN + ["--hidden", "1e5"],
                                "hidden sizes must be ints separated by commas"),
    "seed abc": (TINY_RUN + ["--seed", "abc"], "invalid int value: 'abc'"),
    # options that do not apply
    "mlp with state-dim": (NAV + ["--policy", "mlp", "--state-dim", "4"],
                           "applies to the SSM policy"),
}


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_train_options_write_nothing(tmp_path, capsys, name):
    argv, match = BAD_OPTIONS[name]
    out = tmp_path / "run"
    rc, stdout, err = run([*argv, "--out", out], capsys)
    assert_refused(rc, err)
    assert match in err
    assert not out.exists()
    assert stdout == ""


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_that_cannot_be_a_directory(tmp_path, capsys, where):
    (tmp_path / "f").write_text("mine")
    out = tmp_path / "f" if where == "a file" else tmp_path / "f" / "run"
    assert_refused(*run(["train", *TINY, "--out", out, "--iterations", "1"], capsys)[::2])
    assert (tmp_path / "f").read_text() == "mine"


OUT_NAMES = ["config.json", "metrics.jsonl", "checkpoint.npz", "../x.json", "a/b.json",
             "policy.npz", "run.lock"]


@pytest.mark.parametrize("name", OUT_NAMES)
def test_evaluate_never_overwrites_the_run_files(trained, tmp_path, capsys, name):
    run_dir = copy_run(trained, tmp_path / "run")
    before = {n: (run_dir / n).read_bytes() for n in os.listdir(run_dir)}
    assert_refused(*run(["evaluate", run_dir, "--tasks", "2", "--out-name", name], capsys)[::2])
    assert {n: (run_dir / n).read_bytes() for n in os.listdir(run_dir)} == before


RESUME_CONFLICTS = (["--seed", "7"], ["--inner-lr", "0.9"], ["--env", "navigation2d"])


def test_resume_refuses_conflicting_options(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    for extra in RESUME_CONFLICTS:
        assert_refused(*run(["train", "--resume", "--out", run_dir, "--iterations", "3",
                             "--no-eval", *extra], capsys)[::2])


# ---------------------------------------------------------------------------------------------
# Interrupted runs and corrupt metrics
# ---------------------------------------------------------------------------------------------

def test_a_run_killed_before_its_first_checkpoint_can_be_resumed(tmp_path, capsys):
    """config.json is written, no checkpoint yet: --resume starts it from its first iteration,
    and the result is the run an uninterrupted train would have made."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    assert run(["train", *TINY, "--out", whole, "--iterations", "2"], capsys)[0] == 0
    assert run(["train", *TINY, "--out", killed, "--iterations", "2"], capsys)[0] == 0
    for name in os.listdir(killed):
        if name != "config.json":
            os.unlink(killed / name)
    rc, out, err = run(["train", "--resume", "--out", killed], capsys)
    assert rc == 0, err
    a, b = load_npz(killed / "checkpoint.npz"), load_npz(whole / "checkpoint.npz")
    assert sorted(a) == sorted(b) and all(onp.array_equal(a[k], b[k]) for k in a)


def test_a_fresh_train_into_a_run_without_checkpoint_is_refused_with_advice(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", *TINY, "--out", out, "--iterations", "2"], capsys)[0] == 0
    os.unlink(out / "checkpoint.npz")
    rc, stdout, err = run(["train", *TINY, "--out", out, "--iterations", "2"], capsys)
    assert_refused(rc, err)
    assert "--resume" in err


def test_a_corrupt_metrics_record_in_the_middle_loses_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", *TINY, "--out", out, "--iterations", "3"], capsys)[0] == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]                       # a record cut in the middle
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    before = (out / "metrics.jsonl").read_bytes()
    rc, stdout, err = run(["train", "--resume", "--out", out, "--iterations", "4", "--no-eval"],
                          capsys)
    assert_refused(rc, err)
    assert "metrics.jsonl" in err and "line 2" in err
    assert (out / "metrics.jsonl").read_bytes() == before


def test_a_complete_last_metrics_line_that_is_not_a_record_loses_nothing(tmp_path, capsys):
    """Only a last line without its newline (cut short) is dropped; a complete ``[1, 2]``
    is a bad record, and --resume refuses it."""
    out = tmp_path / "run"
    assert run(["train", *TINY, "--out", out, "--iterations", "2"], capsys)[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write("[1, 2]\n")
    before = run_files(out)
    rc, stdout, err = run(["train", "--resume", "--out", out, "--iterations", "3", "--no-eval"],
                          capsys)
    assert_refused(rc, err)
    assert "metrics.jsonl" in err and "line 3" in err
    assert run_files(out) == before


def test_a_last_metrics_line_cut_short_is_dropped_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", *TINY, "--out", out, "--iterations", "2"], capsys)[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 3, "lo')                       # no newline: cut by a kill
    rc, stdout, err = run(["train", "--resume", "--out", out, "--iterations", "3", "--no-eval"],
                          capsys)
    assert rc == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]


def test_train_as_a_module_refuses_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ssmref", "train", "--seed", "-1", "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert_refused(proc.returncode, proc.stderr)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# Concurrent writers: one process writes a run directory at a time
# ---------------------------------------------------------------------------------------------

def ssmref_command(*args):
    return [sys.executable, "-m", "ssmref", *map(str, args)]


def wait_for(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_writer_is_refused_while_a_run_is_written(tmp_path, capsys):
    """A ``train`` in another process holds the run: ``--resume``, ``train`` and ``evaluate
    --out-name`` refuse, naming it; readers work: ``evaluate --no-write``, and a plain
    ``evaluate``, which then writes nothing; once the holder is killed, the operating system has
    released the lock."""
    out = tmp_path / "run"
    holder = subprocess.Popen(ssmref_command("train", *TINY, "--out", out, "--iterations", 10 ** 5),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / "run.lock"
        wait_for(lambda: (out / "checkpoint.npz").exists() and lock.exists()
                 and f"pid {holder.pid}," in lock.read_text())
        for argv in (["train", "--resume", "--out", out, "--no-eval"],
                     ["evaluate", out, "--tasks", "2", "--steps", "1", "--out-name", "mine.json"]):
            rc, stdout, err = run(argv, capsys)
            assert_refused(rc, err)
            assert f"pid {holder.pid}, train, started" in err
        assert_refused(*run(["train", *TINY, "--out", out, "--iterations", "2"], capsys)[::2])
        assert not (out / "mine.json").exists()
        for extra in (["--no-write"], []):
            rc, stdout, err = run(["evaluate", out, "--tasks", "2", "--steps", "1", *extra],
                                  capsys)
            assert rc == 0, err
            assert "return (mean" in stdout
            assert not (out / "evaluation_ssmref_2tasks_1steps.json").exists()
        assert f"pid {holder.pid}, train, started" in stdout and "not written" in stdout
    finally:
        holder.kill()
        holder.wait(timeout=60)
        holder.stderr.close()
    rc, stdout, err = run(["evaluate", out, "--tasks", "2", "--steps", "1"], capsys)
    assert rc == 0, err                                   # a killed holder leaves no stale lock
    assert (out / "evaluation_ssmref_2tasks_1steps.json").exists()      # named by its settings


LOCK_FILES = ["link leading outside", "fifo", "directory"]


@pytest.mark.parametrize("kind", LOCK_FILES)
def test_a_lock_file_that_is_not_a_regular_file(trained, tmp_path, capsys, kind):
    """``run.lock`` as a link (its target is never truncated), a FIFO (never blocks) or a
    directory: refused."""
    run_dir = copy_run(trained, tmp_path / "run")
    lock = run_dir / "run.lock"
    lock.unlink()
    outside = tmp_path / "precious"
    outside.write_text("mine")
    if kind == "link leading outside":
        os.symlink(outside, lock)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    before = run_files(run_dir)
    for argv in (["evaluate", run_dir, "--tasks", "2", "--steps", "1"],
                 ["train", "--resume", "--out", run_dir, "--iterations", "3", "--no-eval"]):
        rc, stdout, err = run(argv, capsys)
        assert_refused(rc, err)
        assert "run.lock" in err
    assert outside.read_text() == "mine" and run_files(run_dir) == before


def test_resume_of_a_directory_without_a_run_writes_nothing(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    rc, stdout, err = run(["train", "--resume", "--out", tmp_path, "--no-eval"], capsys)
    assert_refused(rc, err)
    assert "no config.json" in err and os.listdir(tmp_path) == ["notes.txt"]


def test_two_threads_of_one_process_exclude_each_other(tmp_path):
    """The lock is re-entrant within a thread (train's final evaluation), not across threads."""
    from ssmref.metarl.runlock import RunLocked, run_lock
    entered, release, refused = threading.Event(), threading.Event(), []

    def holder():
        with run_lock(tmp_path, "train"), run_lock(tmp_path, "evaluate"):   # nested: allowed
            entered.set()
            release.wait(60)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert entered.wait(60)
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}, train, started"):
            with run_lock(tmp_path, "train --resume"):
                refused.append("not refused")
    finally:
        release.set()
        thread.join(60)
    with run_lock(tmp_path, "train --resume"):               # released with the holder's block
        pass
    assert refused == []


def test_two_runs_started_together_never_mix(tmp_path, capsys):
    """Two ``train --out X`` (seeds 0 and 1) at once: one runs, the other exits 2; the run holds
    the winner's config, checkpoint and metrics only."""
    out = tmp_path / "run"
    procs = {seed: subprocess.Popen(ssmref_command("train", *TINY, "--out", out, "--iterations", 3,
                                                   "--seed", seed),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)}
    errs = {seed: p.communicate(timeout=300)[1] for seed, p in procs.items()}
    codes = {seed: p.returncode for seed, p in procs.items()}
    assert sorted(codes.values()) == [0, 2], errs
    winner = next(seed for seed, rc in codes.items() if rc == 0)
    assert_refused(codes[1 - winner], errs[1 - winner])
    assert json.loads((out / "config.json").read_text())["seed"] == winner
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    alone = tmp_path / "alone"
    assert run(["train", *TINY, "--out", alone, "--iterations", "3", "--seed", winner],
               capsys)[0] == 0
    a, b = load_npz(out / "checkpoint.npz"), load_npz(alone / "checkpoint.npz")
    assert all(onp.array_equal(a[k], b[k]) for k in a if k.startswith("params."))


def test_two_resumes_at_once_leave_a_consistent_run(trained, tmp_path):
    """``--resume`` to 6 and to 4 at once: whatever the order, the config, the checkpoint and the
    metrics agree (a refused resume changes nothing)."""
    run_dir = copy_run(trained, tmp_path / "run")
    procs = [subprocess.Popen(ssmref_command("train", "--resume", "--out", run_dir, "--iterations",
                                             n, "--no-eval"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for n in (6, 4)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode in (0, 2) for p in procs), errs
    for p, err in zip(procs, errs):
        if p.returncode == 2:
            assert_refused(p.returncode, err)
    config = json.loads((run_dir / "config.json").read_text())
    meta = json.loads(load_npz(run_dir / "checkpoint.npz")["meta_json"].tobytes().decode())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert config["iterations"] == meta["iteration"] == len(lines)
    assert [json.loads(line)["iteration"] for line in lines] == list(range(1, len(lines) + 1))


# ---------------------------------------------------------------------------------------------
# The counts in the module docstring
# ---------------------------------------------------------------------------------------------

ATTACKS = {
    "run-directory files": len(CONFIGS) + len(CHECKPOINTS) + len(LOCK_FILES) + 5,   # + link,
    # metrics x 3, a directory without a run
    "options": len(BAD_OPTIONS) + 2 + len(OUT_NAMES) + len(RESUME_CONFLICTS) + 1,   # + module
    "interrupted": 4,
    "concurrent": 4,
}


def test_the_docstring_counts_the_attacks():
    doc = " ".join(__doc__.split())
    assert f"``checkpoint.npz``, ``run.lock``): {ATTACKS['run-directory files']}" in doc
    assert f"options refused before any work or any write: {ATTACKS['options']}" in doc
    assert f"and corrupt metrics: {ATTACKS['interrupted']}" in doc
    assert f"concurrent writers of one run directory: {ATTACKS['concurrent']}" in doc
