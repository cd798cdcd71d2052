"""`python -m ssmref train` / `evaluate`: run directories, resume, evaluation, errors."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as onp
import pytest

from ssmref import params as P
from ssmref import storage
from ssmref.metarl import train as TR
from ssmref.metarl.run_config import check_config
from ssmref.cli import main
from ssmref.metarl import MetaMAML
from ssmref.metarl.policy import SSMMetaPolicy

PLOT_MODULES = {"matplotlib"} if importlib.util.find_spec("matplotlib") else set()
TINY_NAV = ["--env", "navigation2d", "--meta-batch-size", "2", "--episodes-per-task", "3",
            "--horizon", "8", "--hidden", "8", "--state-dim", "3", "--checkpoint-every", "2"]


def records(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def without_time(recs):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]


def test_train_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY_NAV, "--out", str(out), "--iterations", "3",
                 "--eval-tasks", "3", "--eval-steps", "2"]) == 0
    text = capsys.readouterr().out
    assert "iter     3/3" in text and "Finn et al. 2017" in text
    for name in ("config.json", "metrics.jsonl", "checkpoint.npz", "params.npz", "policy.npz",
                 "evaluation.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["env"] == "navigation2d" and config["seed"] == 0
    assert config["maml"]["meta_batch_size"] == 2 and config["family"]["horizon"] == 8
    recs = records(out)
    assert [r["iteration"] for r in recs] == [1, 2, 3]
    assert {"meta_loss", "pre_return", "post_return", "grad_norm", "seconds"} <= set(recs[0])
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["num_tasks"] == 3 and ev["steps"] == [0, 1, 2] and len(ev["returns_by_step"]) == 3
    assert all(-8 <= r <= 0 for r in ev["returns_by_step"])
    # the saved policy is the trainer's final meta-parameters
    policy = SSMMetaPolicy.load(out / "policy.npz")
    flat = storage.load_npz(out / "params.npz")
    assert P.tree_allclose(policy.params, P.unflatten_dict(flat), rtol=0, atol=0)


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *TINY_NAV, "--out", str(a), "--iterations", "4", "--no-eval"]) == 0
    step = MetaMAML.meta_step

    def interrupted(self, rng=None):
        if self.iteration == 3:                     # after the checkpoint at 2 and one more step
            raise KeyboardInterrupt
        return step(self, rng)
    monkeypatch.setattr(MetaMAML, "meta_step", interrupted)
    assert main(["train", *TINY_NAV, "--out", str(b), "--iterations", "4", "--no-eval"]) == 130
    monkeypatch.undo()
    assert [r["iteration"] for r in records(b)] == [1, 2, 3]
    assert TR.load_trainer(b, json.loads((b / "config.json").read_text())).iteration == 3
    assert "interrupted at iteration 3/4" in capsys.readouterr().err
    with open(b / "metrics.jsonl", "a") as f:      # and a line cut short
        f.write('{"iterat')
    assert main(["train", "--resume", "--out", str(b), "--no-eval"]) == 0
    assert without_time(records(a)) == without_time(records(b))
    assert P.tree_allclose(P.unflatten_dict(storage.load_npz(a / "params.npz")),
                           P.unflatten_dict(storage.load_npz(b / "params.npz")), rtol=0, atol=0)


def test_extending_a_run(tmp_path):
    # constant lr: 2 + 2 iterations are exactly 4
    a, b = tmp_path / "a", tmp_path / "b"
    flags = [*TINY_NAV, "--constant-lr", "--no-eval"]
    assert main(["train", *flags, "--out", str(a), "--iterations", "4"]) == 0
    assert main(["train", *flags, "--out", str(b), "--iterations", "2"]) == 0
    assert main(["train", "--resume", "--out", str(b), "--iterations", "4", "--no-eval"]) == 0
    assert without_time(records(a)) == without_time(records(b))
    assert json.loads((b / "config.json").read_text())["iterations"] == 4
    # with the decaying lr the schedule follows the new length
    c = tmp_path / "c"
    assert main(["train", *TINY_NAV, "--out", str(c), "--iterations", "2", "--no-eval"]) == 0
    config = json.loads((c / "config.json").read_text())
    assert config["lr_decay"] and TR.load_trainer(c, config).config.lr_decay_iterations == 2
    assert main(["train", "--resume", "--out", str(c), "--iterations", "5", "--no-eval"]) == 0
    config = json.loads((c / "config.json").read_text())
    trainer = TR.load_trainer(c, config)
    assert trainer.iteration == 5 and trainer.config.lr_decay_iterations == 5
    assert main(["train", "--resume", "--out", str(c), "--iterations", "3", "--no-eval"]) == 2
    assert json.loads((c / "config.json").read_text())["iterations"] == 5      # unchanged


def test_evaluate_is_seeded_and_independent_of_the_training_seed(tmp_path):
    runs = {seed: tmp_path / f"seed{seed}" for seed in (0, 1)}
    for seed, run in runs.items():
        assert main(["train", *TINY_NAV, "--seed", str(seed), "--out", str(run), "--iterations",
                     "1", "--no-eval"]) == 0
    first = TR.evaluate(runs[0], tasks=2, steps=1, log=lambda *a: None, plot=False)
    second = TR.evaluate(runs[0], tasks=2, steps=1, log=lambda *a: None, plot=False)
    assert first["returns_by_step"] == second["returns_by_step"]            # seeded
    assert json.loads((runs[0] / "evaluation.json").read_text())["returns_by_step"] == \
        second["returns_by_step"]
    # the two seeds trained different parameters ...
    params = [storage.load_npz(run / "params.npz") for run in runs.values()]
    assert not P.tree_allclose(P.unflatten_dict(params[0]), P.unflatten_dict(params[1]))
    # ... and seed 1's parameters evaluated under a config that says seed 0 give seed 1's result:
    # the evaluation depends on the parameters, not on the training seed
    hybrid = tmp_path / "hybrid"
    shutil.copytree(runs[1], hybrid)
    shutil.copy(runs[0] / "config.json", hybrid / "config.json")
    assert json.loads((hybrid / "config.json").read_text())["seed"] == 0
    other = TR.evaluate(runs[1], tasks=2, steps=1, log=lambda *a: None, plot=False)
    assert TR.evaluate(hybrid, tasks=2, steps=1, log=lambda *a: None, plot=False)[
        "returns_per_task"] == other["returns_per_task"]
    assert other["returns_per_task"] != first["returns_per_task"]


def test_evaluate_with_a_smaller_step_after_the_first(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY_NAV, "--out", str(run), "--iterations", "1", "--no-eval",
                 "--later-lr-scale", "1"]) == 0
    plain = TR.evaluate(run, tasks=2, steps=2, log=lambda *a: None)
    small = TR.evaluate(run, tasks=2, steps=2, later_inner_lr=0.02, name="eval_small.json",
                        log=lambda *a: None)
    assert plain["inner_lr_by_step"] == [0.5, 0.5] and small["inner_lr_by_step"] == [0.5, 0.02]
    assert small["returns_by_step"][:2] == plain["returns_by_step"][:2]     # same first step
    assert small["returns_by_step"][2] != plain["returns_by_step"][2]
    assert json.loads((run / "eval_small.json").read_text()) == small
    assert json.loads((run / "evaluation.json").read_text()) == plain       # not overwritten
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--out-name", "../x.json"]) == 2
    with pytest.raises(ValueError, match="RL envs"):
        sin = tmp_path / "sin"
        main(["train", "--env", "sinusoid", "--out", str(sin), "--iterations", "1",
              "--hidden", "4", "--no-eval"])
        TR.evaluate(sin, tasks=2, steps=2, later_inner_lr=0.01, log=lambda *a: None)


def test_unusable_run_directories_exit_2_with_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_NAV, "--out", str(run), "--iterations", "1", "--no-eval"]) == 0
    capsys.readouterr()
    # a second fresh run into the same directory would overwrite it: refused
    assert main(["train", *TINY_NAV, "--out", str(run), "--iterations", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--resume" in err and "\n" not in err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert main(["train", "--resume", "--out", str(tmp_path / "missing")]) == 2
    (run / "checkpoint.npz").write_bytes(b"not a zip")
    assert main(["evaluate", str(run)]) == 2
    assert "checkpoint.npz" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown MAML settings"):
        TR.make_config("sinusoid", maml={"episodes_per_task": 3})
    with pytest.raises(ValueError, match="env"):
        TR.make_config("cartpole")
    with pytest.raises(ValueError, match="lr_decay"):
        TR.make_config("sinusoid", lr_decay=True)
    with pytest.raises(ValueError, match="lr_decay"):
        TR.make_config("bandit", maml={"lr_decay_iterations": 3})


def test_bandit_and_sinusoid_runs(tmp_path):
    bandit = tmp_path / "bandit"
    assert main(["train", "--env", "bandit", "--out", str(bandit), "--iterations", "2",
                 "--meta-batch-size", "2", "--episodes-per-task", "4", "--horizon", "5",
                 "--eval-tasks", "3", "--eval-steps", "1"]) == 0
    ev = json.loads((bandit / "evaluation.json").read_text())
    assert len(ev["returns_by_step"]) == 2 and 0 <= ev["returns_by_step"][0] <= 5
    assert ev["oracle_return"] <= 5
    assert 0 < ev["random_arm_return"] < ev["oracle_return"]     # horizon * E[p] < horizon * max p
    SSMMetaPolicy.load(bandit / "policy.npz")
    sin = tmp_path / "sin"
    assert main(["train", "--env", "sinusoid", "--out", str(sin), "--iterations", "3",
                 "--meta-batch-size", "2", "--hidden", "8", "--eval-tasks", "3"]) == 0
    ev = json.loads((sin / "evaluation.json").read_text())
    assert len(ev["mse_by_step"]) == 4 and "returns_by_step" not in ev
    assert all(v > 0 for v in ev["mse_by_step"])
    if "matplotlib" in PLOT_MODULES:                          # the pictures, when matplotlib is there
        assert (bandit / "adaptation.png").read_bytes()[:4] == b"\x89PNG"
        assert (sin / "sinusoid_fit.png").read_bytes()[:4] == b"\x89PNG"


def test_dice_estimator_and_the_plot(tmp_path):
    out = tmp_path / "dice"
    assert main(["train", *TINY_NAV, "--estimator", "dice", "--out", str(out), "--iterations",
                 "2", "--eval-tasks", "2", "--eval-steps", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["maml"]["estimator"] == "dice"
    assert TR.load_trainer(out, json.loads((out / "config.json").read_text())).config.estimator \
        == "dice"
    pytest.importorskip("matplotlib")
    assert (out / "adaptation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_runs_as_a_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ssmref", "train", *TINY_NAV, "--out",
                          str(tmp_path / "r"), "--iterations", "1", "--eval-tasks", "2",
                          "--eval-steps", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "held-out tasks" in out.stdout


def test_format_table_names_the_reference():
    result = {"env": "navigation2d", "num_tasks": 40, "iteration": 5,
              "returns_by_step": [-40.0, -12.0], "returns_stderr_by_step": [1.0, 0.5],
              "reference_finn2017": {"0": -40.4, "1": -11.7, "2": -3.3}}
    table = TR.format_table(result)
    assert "-40.4" in table and "-11.7" in table and "-12.000" in table


# ---------------------------------------------------------------------------------------------
# Finn et al.'s protocol, the MLP policy and TRPO, --resume conflicts, runs of earlier versions
# ---------------------------------------------------------------------------------------------

OLD_RUN = Path(__file__).parent / "data" / "run_without_policy_kind"


def test_finn_protocol(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY_NAV, "--out", str(run), "--iterations", "1", "--no-eval",
                 "--inner-lr", "0.3"]) == 0
    ours = TR.evaluate(run, tasks=3, steps=2, log=lambda *a: None)
    finn = TR.evaluate(run, tasks=3, steps=2, protocol="finn", log=lambda *a: None)
    assert finn["inner_lr_by_step"] == [0.3, 0.15] and finn["episodes_per_step"] == 40
    # ssmref's protocol: the run's own episodes and step sizes (alpha, then later_lr_scale alpha)
    assert ours["inner_lr_by_step"] == [0.3, 0.15] and ours["episodes_per_step"] == 3
    assert json.loads((run / "evaluation_finn.json").read_text()) == finn
    assert json.loads((run / "evaluation.json").read_text()) == ours
    goals = onp.random.RandomState(1).uniform(-0.5, 0.5, size=(40, 2))  # test_maml_point.py
    assert onp.array_equal(onp.array([t["goal"] for t in TR.finn_goals()]), goals)
    f = finn["finn_goals"]
    assert onp.array(f["returns_per_task"]).shape == (3, 40)
    assert onp.allclose(onp.mean(f["returns_per_task"], axis=1), f["returns_by_step"], atol=1e-5)
    assert len(f["policy_std_by_step"]) == 3 and len(f["step_norm_by_step"]) == 2
    table = TR.format_table(finn)
    assert "Finn's 40 goals" in table and "0.3, 0.15" in table
    with pytest.raises(ValueError, match="--later-inner-lr applies to --protocol ssmref"):
        TR.evaluate(run, tasks=3, steps=2, protocol="finn", later_inner_lr=0.1)
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--protocol", "finn"]) == 0


def test_mlp_policy_with_trpo_resumes_exactly(tmp_path):
    flags = ["--policy", "mlp", "--outer", "trpo", "--hidden", "8,8", "--meta-batch-size", "2",
             "--episodes-per-task", "3", "--horizon", "8", "--checkpoint-every", "2", "--no-eval"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *flags, "--out", str(a), "--iterations", "4"]) == 0
    assert main(["train", *flags, "--out", str(b), "--iterations", "2"]) == 0
    assert main(["train", "--resume", "--out", str(b), "--iterations", "4", "--no-eval"]) == 0
    assert without_time(records(a)) == without_time(records(b))
    rec = records(a)[-1]
    assert {"kl", "backtracks", "accepted", "step_norm"} <= set(rec) and rec["kl"] <= 0.01
    config = json.loads((a / "config.json").read_text())
    assert config["policy"] == {"kind": "mlp", "hidden_sizes": [8, 8], "activation": "relu"}
    assert config["maml"]["outer"] == "trpo"
    assert not (a / "policy.npz").exists()          # policy.npz holds the SSM policy only
    ev = TR.evaluate(a, tasks=2, steps=1, log=lambda *a: None)
    assert len(ev["returns_by_step"]) == 2


def test_the_finn2017_preset():
    config = TR.make_config(preset="finn2017")
    assert config["env"] == "navigation2d" and config["iterations"] == 100
    assert config["policy"] == {"kind": "mlp", "hidden_sizes": [100, 100], "activation": "relu"}
    mc = TR.maml_config(config)
    assert (mc.meta_batch_size, mc.episodes_per_task, mc.inner_lr, mc.outer, mc.max_kl,
            mc.cg_iters, mc.cg_damping, mc.ls_backtrack_ratio, mc.ls_max_steps) == \
        (40, 20, 0.5, "trpo", 0.01, 10, 1e-5, 0.8, 15)
    assert not config["lr_decay"]
    with pytest.raises(ValueError, match="preset"):
        TR.make_config("bandit", preset="finn2017")


def test_the_ssm2step_preset_is_the_measured_run():
    """docs/train.md's two-step SSM rows were measured with the configuration that config.json
    stores below (--adapt-rounds 2 --later-lr-scale 0.5 --inner-lr 0.5 --iterations 350 and A's
    initial spectral radius 0.7; the meta-objective the loss after the second step): the preset
    must build exactly that configuration (and so the same trainer)."""
    stored = {"checkpoint_every": 25, "env": "navigation2d", "family": {"horizon": 100},
              "iterations": 350, "lr_decay": True,
              "maml": {"adapt_rounds": 2, "inner_lr": 0.5, "later_lr_scale": 0.5,
                       "max_grad_norm": 1.0},
              "policy": {"hidden_sizes": [64, 64], "kind": "ssm", "ssm_output_dim": 8,
                         "ssm_scale": 0.7, "state_dim": 8},
              "preset": "ssm2step", "seed": 0}
    preset = TR.make_config(preset="ssm2step")
    assert {k: v for k, v in preset.items() if k != "ssmref_version"} == stored
    mc = TR.maml_config(preset)
    assert (mc.adapt_rounds, mc.loss_rounds, mc.later_lr_scale, mc.inner_lr, mc.max_grad_norm,
            mc.outer, mc.lr_decay_iterations) == (2, 1, 0.5, 0.5, 1.0, "adam", 350)
    with pytest.raises(ValueError, match="preset"):
        TR.make_config("sinusoid", preset="ssm2step")
    trainer = TR.new_trainer(preset)
    A = trainer.params["ssm"]["A"]
    assert abs(max(abs(onp.linalg.eigvals(A))) - 0.7) < 1e-12


def test_the_ssm1step_preset_is_the_measured_one_step_run():
    """docs/train.md's one-step SSM rows were measured with the configuration that config.json
    stores below (alpha = 0.1 from MetaMAMLConfig's default, one inner step, A's initial
    spectral radius 0.9 from the policy's default): the preset must build exactly that."""
    stored = {"checkpoint_every": 25, "env": "navigation2d", "family": {"horizon": 100},
              "iterations": 250, "lr_decay": True, "maml": {"max_grad_norm": 1.0},
              "policy": {"hidden_sizes": [64, 64], "kind": "ssm", "ssm_output_dim": 8,
                         "state_dim": 8},
              "preset": "ssm1step", "seed": 0}
    preset = TR.make_config(preset="ssm1step")
    assert {k: v for k, v in preset.items() if k != "ssmref_version"} == stored
    mc = TR.maml_config(preset)
    assert (mc.adapt_rounds, mc.later_lr_scale, mc.inner_lr, mc.max_grad_norm, mc.outer,
            mc.lr_decay_iterations) == (1, 1.0, 0.1, 1.0, "adam", 250)
    A = TR.new_trainer(preset).params["ssm"]["A"]
    assert abs(max(abs(onp.linalg.eigvals(A))) - 0.9) < 1e-12


def test_the_navigation_default_trains_through_three_of_finns_steps():
    """README command 1: alpha = 0.5 then alpha / 2 twice in meta-training, the mean of the losses
    after the second and the third step, A's radius 0.7; the ssm2step preset differs only in
    its rounds, its objective and its length."""
    config = TR.make_config("navigation2d")
    mc = TR.maml_config(config)
    assert (mc.adapt_rounds, mc.loss_rounds, mc.later_lr_scale, mc.inner_lr, mc.max_grad_norm,
            mc.outer, mc.lr_decay_iterations) == (3, 2, 0.5, 0.5, 1.0, "adam",
                                                  config["iterations"])
    assert config["policy"]["ssm_scale"] == 0.7 and config["preset"] is None
    two = TR.make_config(preset="ssm2step")
    assert {**config, "iterations": 350, "preset": "ssm2step",
            "maml": {**config["maml"], "adapt_rounds": 2, "loss_rounds": 1}} == \
        {**two, "maml": {"loss_rounds": 1, **two["maml"]}}


@pytest.mark.parametrize("bad", ["0.7", -0.1, float("nan"), True, [0.7]])
def test_a_bad_ssm_scale_in_a_run_config_is_refused(bad):
    config = TR.make_config(preset="ssm2step")
    config["policy"]["ssm_scale"] = bad
    with pytest.raises(ValueError, match="ssm_scale"):
        check_config(config)


def test_resume_refuses_settings_that_differ_from_the_stored_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_NAV, "--out", str(run), "--iterations", "1", "--no-eval"]) == 0
    capsys.readouterr()
    for flags in (["--inner-lr", "0.3"], ["--adapt-rounds", "1"], ["--policy", "mlp"], ["--outer", "trpo"],
                  ["--seed", "3"], ["--hidden", "16"], ["--preset", "finn2017"],
                  ["--constant-lr"], ["--horizon", "9"]):
        assert main(["train", "--resume", "--out", str(run), "--iterations", "2", "--no-eval",
                     *flags]) == 2, flags
        err = capsys.readouterr().err
        assert "--resume keeps" in err and "\n" not in err.strip(), (flags, err)
    assert records(run)[-1]["iteration"] == 1                  # nothing was run
    # settings equal to the stored ones are accepted
    assert main(["train", "--resume", "--out", str(run), "--iterations", "2", "--no-eval",
                 "--inner-lr", "0.5", "--seed", "0", "--policy", "ssm", "--hidden", "8",
                 "--outer", "adam"]) == 0
    assert records(run)[-1]["iteration"] == 2


def test_runs_without_policy_kind_evaluate_and_resume(tmp_path):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    config = json.loads((run / "config.json").read_text())
    assert "kind" not in config["policy"] and "preset" not in config
    ours = TR.evaluate(run, tasks=2, steps=1, log=lambda *a: None)
    finn = TR.evaluate(run, tasks=2, steps=1, protocol="finn", log=lambda *a: None)
    assert ours["iteration"] == 2 and finn["inner_lr_by_step"] == [0.1]
    assert main(["train", "--resume", "--out", str(run), "--iterations", "3", "--no-eval"]) == 0
    assert records(run)[-1]["iteration"] == 3
    assert main(["train", "--resume", "--out", str(run), "--iterations", "4", "--no-eval",
                 "--outer", "trpo"]) == 2


def test_the_default_loss_rounds_follow_a_given_adapt_rounds():
    """``--adapt-rounds 1`` alone trains one round on its own loss (the navigation default's
    ``loss_rounds = 2`` is capped at the rounds given); an explicit ``--loss-rounds`` is kept and
    refused when it exceeds the rounds."""
    for rounds, want in ((1, 1), (2, 2), (4, 2)):
        config = TR.make_config("navigation2d", maml={"adapt_rounds": rounds})
        assert (config["maml"]["adapt_rounds"], config["maml"]["loss_rounds"]) == (rounds, want)
    with pytest.raises(ValueError, match=r"loss_rounds must be at most adapt_rounds \(1\), got 2"):
        TR.make_config("navigation2d", maml={"adapt_rounds": 1, "loss_rounds": 2})
    assert "loss_rounds" not in TR.make_config("bandit", maml={"adapt_rounds": 2})["maml"]
