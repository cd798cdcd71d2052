"""A run directory's files: JSON written atomically, the metrics, the trainer's checkpoint.

``python -m ssmref train`` writes them (:mod:`ssmref.metarl.train`, which lists the files) and
``evaluate`` reads them (:mod:`ssmref.metarl.evaluation`).
"""

import os
from dataclasses import asdict
from pathlib import Path

from ssmref.metarl.maml_rl import MetaMAML
from ssmref.metarl.policy import SSMMetaPolicy
from ssmref.metarl.policy.kinds import policy_spec
from ssmref.metarl.run_config import (TRAINABLE_ENVS, build_family, check_config, maml_config,
                                      trainer_class)
from ssmref.params import flatten_dict
from ssmref.storage import inside, parse_json, regular_file, save_npz
from ssmref.storage import read_json as storage_read_json


def one_line(e):
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


class RunError(ValueError):
    """A run directory that cannot be used (reported as one line, exit code 2)."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

#: The files a run directory holds (``evaluate --out-name`` may not name one of them).
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.npz", "params.npz", "policy.npz",
             "run.lock")
#: The keys every run configuration has (runs written before the MLP policy lack ``preset``).
CONFIG_KEYS = ("env", "seed", "iterations", "checkpoint_every", "family", "policy", "maml")


def run_file(run_dir, name):
    """``run_dir/name``, refused (``RunError``) if it leads outside ``run_dir`` through a link."""
    try:
        return Path(inside(run_dir, name, what="run file"))
    except ValueError as e:
        raise RunError(str(e)) from None


def read_json(path, what="file"):
    """The JSON value in ``path``: a regular file, bounded size and depth, strict JSON
    (:func:`ssmref.storage.read_json`); ``RunError`` otherwise."""
    try:
        return storage_read_json(path, what=what)
    except ValueError as e:
        raise RunError(one_line(e)) from None


def read_config(run_dir):
    """The run configuration of ``run_dir/config.json``, checked: a JSON object with the keys of a
    run (:data:`CONFIG_KEYS`) whose settings build a valid run (:func:`check_config`)."""
    path = run_file(run_dir, "config.json")
    config = read_json(path, what="run configuration")
    if not isinstance(config, dict) or not set(CONFIG_KEYS) <= set(config):
        got = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise RunError(f"{path}: expected a run configuration with keys {list(CONFIG_KEYS)}, "
                       f"got {got}")
    try:
        check_config(config)
    except (ValueError, TypeError, KeyError) as e:
        raise RunError(f"{path}: not a valid run configuration ({one_line(e)})") from None
    return config


def read_metrics(path, upto):
    """The metric records of ``path`` with ``iteration <= upto`` (later ones belong to iterations
    after the last checkpoint and are dropped on resume).

    Every line must be a JSON object with an integer ``iteration``, except a last line without
    its newline, which an interruption cut short (it is dropped).  A bad line anywhere else, also a
    complete last line, raises ``RunError`` naming it, so that nothing is dropped silently."""
    path = Path(path)
    if not os.path.lexists(path):
        return []
    try:
        regular_file(path, what="metrics file")
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        lines = text.splitlines()
        cut_short = not text.endswith("\n")       # the writer ends every record with "\n"
    except (ValueError, OSError) as e:
        raise RunError(one_line(e)) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = parse_json(line, f"{path}: line {number}")
            if not isinstance(rec, dict) or isinstance(rec.get("iteration"), bool) \
                    or not isinstance(rec.get("iteration"), int):
                raise ValueError(f"{path}: line {number} is not a record with an integer "
                                 f"'iteration'")
        except ValueError as e:
            if number == len(lines) and cut_short:
                break                            # the last line, cut short by an interruption
            raise RunError(f"{one_line(e)}; fix or remove that line (the metrics are never "
                           f"rewritten over a bad record)") from None
        if rec["iteration"] <= upto:
            records.append(rec)
    return records


def load_trainer(run_dir, config):
    """The trainer of the checkpoint in ``run_dir``, with the MAML settings of ``config``."""
    path = run_file(run_dir, "checkpoint.npz")
    if config.get("env") not in TRAINABLE_ENVS:
        raise RunError(f"{Path(run_dir) / 'config.json'}: env must be one of {TRAINABLE_ENVS}, "
                       f"got {config.get('env')!r}")
    if not os.path.lexists(path):
        raise RunError(f"{path} not found: nothing to resume or evaluate")
    try:
        trainer = trainer_class(config).load(path, build_family(config))
    except ValueError as e:
        raise RunError(one_line(e)) from None
    want = maml_config(config)
    stored = asdict(trainer.config)
    if "lr_decay_iterations" in stored:          # follows the run's (possibly extended) length
        stored["lr_decay_iterations"] = want.lr_decay_iterations
    if stored != asdict(want):
        raise RunError(f"{path}: its MAML settings differ from {Path(run_dir) / 'config.json'}")
    if isinstance(trainer, MetaMAML):
        settings = {k: v for k, v in config["policy"].items() if k != "kind"}
        spec = policy_spec(config["policy"].get("kind", "ssm"), trainer.family, **settings)
        if trainer.spec != spec:
            raise RunError(f"{path} holds a policy {trainer.spec} but "
                           f"{Path(run_dir) / 'config.json'} describes {spec}: the checkpoint "
                           f"belongs to another run")
    trainer.config = want
    return trainer


def save_trainer(run_dir, trainer):
    """``checkpoint.npz``, ``params.npz`` and (SSM policy) ``policy.npz`` of ``trainer`` in
    ``run_dir``."""
    run_dir = Path(run_dir)
    trainer.save(run_dir / "checkpoint.npz")
    save_npz(run_dir / "params.npz", flatten_dict(trainer.params))
    if isinstance(trainer, MetaMAML) and trainer.spec.kind == "ssm":
        SSMMetaPolicy.from_params(trainer.params, trainer.spec).save(run_dir / "policy.npz")
