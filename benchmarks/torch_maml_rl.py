"""A PyTorch MAML-RL meta-iteration on Finn et al.'s 2-D navigation, written the usual way: the
peer of ``benchmarks/maml.py``'s navigation section.

"The usual way" is the structure of the most-used PyTorch MAML-RL implementation
(tristandeleu/pytorch-maml-rl, ``configs/maml/2d-navigation.yaml``), written here from its
description, not copied:

- the policy is an ``nn.Module``: a Gaussian MLP on the observation, hidden ``(64, 64)``,
  ``tanh``, a state-independent log standard deviation, float32, called with an optional
  parameter dict (the adapted parameters);
- tasks are handled one at a time: ``E`` episodes of a task run in a vectorized environment
  (here ssmref's ``VecNavigation2D``, the same dynamics), the policy called once per time step
  under ``torch.no_grad()``; discounted returns, rllab's linear feature baseline (fitted per task
  by regularised least squares) and normalised advantages in torch;
- the inner step is ``θ' = θ − α ∇L`` with ``torch.autograd.grad(create_graph=True)``; the
  post-update episodes are sampled with ``θ'``;
- the outer step is TRPO through the inner step: the surrogate and the KL looped over tasks,
  ``g`` by autograd, ``F v`` by double backward, 10 conjugate-gradient iterations, damping
  ``1e-5``, a backtracking line search (ratio 0.8, 15 steps) within ``δ = 0.01``.

``meta_iteration()`` samples ``2 · M · E · T`` environment steps (``M = 20`` tasks, ``E = 20``
episodes, ``T = 100``), as an ssmref meta-iteration does, so the two are compared per sampled
step.  Run it alone with ``python benchmarks/torch_maml_rl.py [--iterations 3]``.
"""

import argparse
import time

import numpy as onp
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from ssmref.metarl.envs import Navigation2D


class GaussianMLP(nn.Module):
    """``N(MLP(o), diag(exp(log_std))²)``; ``forward(obs, params=None)``."""

    def __init__(self, obs_dim=2, action_dim=2, hidden=(64, 64)):
        super().__init__()
        sizes = (obs_dim, *hidden, action_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, obs, params=None):
        p = dict(self.named_parameters()) if params is None else params
        h = obs
        for i in range(len(self.layers)):
            h = nn.functional.linear(h, p[f"layers.{i}.weight"], p[f"layers.{i}.bias"])
            if i < len(self.layers) - 1:
                h = torch.tanh(h)
        return Independent(Normal(h, torch.exp(p["log_std"])), 1)


def sample_task(policy, params, family, task, episodes, rng):
    """``E`` episodes of one task, the policy called once per step; returns a dict of tensors
    ``obs (E, T, 2)``, ``actions (E, T, 2)``, ``rewards (E, T)``, ``mask (E, T)``."""
    env = family.make_env([task], episodes)
    obs = env.reset(rng)
    rec = {"obs": [], "actions": [], "rewards": [], "mask": []}
    with torch.no_grad():
        for _ in range(env.horizon):
            o = torch.as_tensor(obs, dtype=torch.float32)
            a = policy(o, params).sample()
            obs_next, reward, _, _, info = env.step(a.numpy().astype(onp.float64))
            for k, v in (("obs", o), ("actions", a), ("rewards", reward), ("mask", info["mask"])):
                rec[k].append(torch.as_tensor(v, dtype=torch.float32))
            obs = obs_next
    return {k: torch.stack(v, dim=1) for k, v in rec.items()}


def advantages(batch, gamma=0.99, reg=1e-5):
    """Normalised ``R − b``: discounted returns minus rllab's linear feature baseline."""
    r, m = batch["rewards"] * batch["mask"], batch["mask"]
    T = r.shape[1]
    t = torch.arange(T, dtype=torch.float32)
    disc = torch.where(t[None, :] >= t[:, None], gamma ** (t[None, :] - t[:, None]),
                       torch.zeros(()))                                         # (T, T)
    R = r @ disc.T
    o = batch["obs"].clamp(-10, 10)
    s = (t / 100.0)[None, :, None].expand(o.shape[0], T, 1)
    feats = torch.cat([o, o ** 2, s, s ** 2, s ** 3, torch.ones_like(s)], dim=2)[m > 0]
    gram = feats.T @ feats + reg * torch.eye(feats.shape[1])
    coeffs = torch.linalg.lstsq(gram, feats.T @ R[m > 0]).solution
    b = torch.cat([o, o ** 2, s, s ** 2, s ** 3, torch.ones_like(s)], dim=2) @ coeffs
    adv = (R - b)[m > 0]
    adv = (R - b - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    return adv * m


def reinforce_loss(policy, params, batch):
    lp = policy(batch["obs"], params).log_prob(batch["actions"])
    return -(lp * batch["adv"]).sum() / batch["mask"].sum()


def adapt(policy, batch, alpha, create_graph):
    params = dict(policy.named_parameters())
    grads = torch.autograd.grad(reinforce_loss(policy, params, batch), list(params.values()),
                                create_graph=create_graph)
    return {k: v - alpha * g for (k, v), g in zip(params.items(), grads)}


class TorchMAMLTRPO:
    """One meta-iteration of MAML-TRPO as described in the module docstring."""

    def __init__(self, meta_batch_size=20, episodes=20, alpha=0.1, max_kl=0.01, cg_iters=10,
                 damping=1e-5, ratio=0.8, max_backtracks=15, hidden=(64, 64), seed=0):
        torch.manual_seed(seed)
        self.policy = GaussianMLP(hidden=hidden)
        self.family = Navigation2D()
        self.M, self.E, self.alpha = meta_batch_size, episodes, alpha
        self.max_kl, self.cg_iters, self.damping = max_kl, cg_iters, damping
        self.ratio, self.max_backtracks = ratio, max_backtracks
        self.rng = onp.random.default_rng(seed)

    def steps_per_iteration(self):
        return 2 * self.M * self.E * self.family.horizon

    def _surrogate(self, train, valid, olds=None):
        losses, kls, pis = [], [], []
        for i, (tr, va) in enumerate(zip(train, valid)):
            params = adapt(self.policy, tr, self.alpha, create_graph=True)
            pi = self.policy(va["obs"], params)
            old = olds[i] if olds else Independent(Normal(pi.base_dist.loc.detach(),
                                                          pi.base_dist.scale.detach()), 1)
            ratio = torch.exp(pi.log_prob(va["actions"]) - old.log_prob(va["actions"]))
            losses.append(-(ratio * va["adv"]).sum() / va["mask"].sum())
            kls.append((kl_divergence(old, pi) * va["mask"]).sum() / va["mask"].sum())
            pis.append(old)
        return sum(losses) / len(train), sum(kls) / len(train), pis

    def meta_iteration(self):
        """Sample, adapt, sample, TRPO; returns the mean post-update return."""
        tasks = self.family.sample_tasks(self.M, self.rng)
        train, valid = [], []
        for task in tasks:
            batch = sample_task(self.policy, None, self.family, task, self.E, self.rng)
            batch["adv"] = advantages(batch)
            params = {k: v.detach() for k, v in adapt(self.policy, batch, self.alpha,
                                                        create_graph=False).items()}
            post = sample_task(self.policy, params, self.family, task, self.E, self.rng)
            post["adv"] = advantages(post)
            train.append(batch)
            valid.append(post)
        theta = list(self.policy.parameters())
        loss0, kl0, olds = self._surrogate(train, valid)
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss0, theta,
                                                                    retain_graph=True)])
        grad_kl = torch.cat([x.reshape(-1) for x in torch.autograd.grad(kl0, theta,
                                                                          create_graph=True)])

        def Fvp(v):
            hv = torch.autograd.grad(grad_kl @ v, theta, retain_graph=True)
            return torch.cat([x.reshape(-1) for x in hv]) + self.damping * v

        x, r = torch.zeros_like(g), g.clone()
        p, rr = r.clone(), r @ r
        for _ in range(self.cg_iters):
            Ap = Fvp(p)
            a = rr / (p @ Ap)
            x, r = x + a * p, r - a * Ap
            rr_new = r @ r
            p, rr = r + (rr_new / rr) * p, rr_new
        step = torch.sqrt(2 * self.max_kl / (x @ Fvp(x) + 1e-8)) * x
        old = torch.nn.utils.parameters_to_vector(theta).detach()
        for j in range(self.max_backtracks):
            torch.nn.utils.vector_to_parameters(old - self.ratio ** j * step, theta)
            loss, kl, _ = self._surrogate(train, valid, olds)
            if loss.item() < loss0.item() and kl.item() <= self.max_kl:
                break
        else:
            torch.nn.utils.vector_to_parameters(old, theta)
        return float(torch.stack([v["rewards"].sum(1).mean() for v in valid]).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    peer = TorchMAMLTRPO()
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        ret = peer.meta_iteration()
        dt = time.perf_counter() - t0
        print(f"{dt:.2f} s ({dt / peer.steps_per_iteration() * 1e6:.1f} us per sampled step), "
              f"post-update return {ret:.2f}")


if __name__ == "__main__":
    main()
