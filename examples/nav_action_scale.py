"""Test-time adaptation of a meta-trained navigation policy under a rescaled action
(``ssmref.experiments.action_scale``; the numbers are in docs/adaptation.md).

    python -m ssmref train --out runs/navigation2d      # once (about 10 minutes on 2 cores)
    python examples/nav_action_scale.py runs/navigation2d [--tasks 20] [--rounds 3]
"""

import argparse
import json
import pathlib

from ssmref.experiments import action_scale
from ssmref.metarl.policy import SSMMetaPolicy


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", default="runs/navigation2d")
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    run = pathlib.Path(args.run_dir)
    policy = SSMMetaPolicy.load(run / "policy.npz")
    inner_lr = json.loads((run / "config.json").read_text())["maml"].get("inner_lr", 0.1)
    print(f"{args.tasks} held-out goals, {args.episodes} episodes per round; mean return ± s.e.")
    print(action_scale.header(args.rounds))
    action_scale.run(policy, tasks=args.tasks, rounds=args.rounds, episodes=args.episodes,
                     inner_lr=inner_lr, seed=args.seed, log=print)


if __name__ == "__main__":
    main()
