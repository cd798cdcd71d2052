"""A run directory's files: JSON written atomically, the metrics, the trainer's checkpoint.

``python -m ssmref train`` writes them (:mod:`ssmref.metarl.train`, which lists the files) and
``evaluate`` reads them (:mod:`ssmref.metarl.evaluation`).
"""

import json
from dataclasses import asdict
from pathlib import Path

from ssmref.metarl.maml_rl import MetaMAML
from ssmref.metarl.policy import SSMMetaPolicy
from ssmref.metarl.run_config import TRAINABLE_ENVS, build_family, maml_config, trainer_class
from ssmref.params import flatten_dict
from ssmref.storage import atomic_write, save_npz


class RunError(ValueError):
    """A run directory that cannot be used (reported as one line, exit code 2)."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def write_json(path, obj):
    """Write ``obj`` as JSON to ``path`` atomically (:func:`ssmref.storage.atomic_write`)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None


def read_metrics(path, upto):
    """The metric records of ``path`` with ``iteration <= upto`` (later ones belong to iterations
    after the last checkpoint and are dropped on resume)."""
    if not Path(path).exists():
        return []
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break                       # a line cut short by an interruption
                if rec.get("iteration", upto + 1) <= upto:
                    records.append(rec)
    return records


def load_trainer(run_dir, config):
    """The trainer of the checkpoint in ``run_dir``, with the MAML settings of ``config``."""
    path = Path(run_dir) / "checkpoint.npz"
    if config.get("env") not in TRAINABLE_ENVS:
        raise RunError(f"{Path(run_dir) / 'config.json'}: env must be one of {TRAINABLE_ENVS}, "
                       f"got {config.get('env')!r}")
    if not path.exists():
        raise RunError(f"{path} not found: nothing to resume or evaluate")
    trainer = trainer_class(config).load(path, build_family(config))
    want = maml_config(config)
    stored = asdict(trainer.config)
    if "lr_decay_iterations" in stored:          # follows the run's (possibly extended) length
        stored["lr_decay_iterations"] = want.lr_decay_iterations
    if stored != asdict(want):
        raise RunError(f"{path}: its MAML settings differ from {Path(run_dir) / 'config.json'}")
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
