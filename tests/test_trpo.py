"""The TRPO outer step of MAML-RL: conjugate gradient, the Fisher-vector product through the inner
step (against the explicit Fisher matrix), the KL bound of the accepted step, and one meta-step
against an independent PyTorch float64 implementation of the same step on the same samples."""

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import jacobian

from ssmref import maml
from ssmref.metarl import MetaMAML, MetaMAMLConfig
from ssmref.metarl.envs import Navigation2D
from ssmref.metarl.maml_rl import tasks_trajectory_data
from ssmref.metarl.policy import policy_init
from ssmref.metarl.policy.mlp import mlp_policy_init
from ssmref.metarl.policy.tasks import tasks_distribution, tile_values
from ssmref.metarl.trpo import (conjugate_gradient, direct_pieces, maml_pieces,
                                maml_trpo_objective, maml_trpo_step, one_step_adaptation,
                                trpo_step)
from ssmref.params import flatten_dict, ravel, tree_map

ALPHA = 0.3


def meta_batch(kind="mlp", M=2, E=3, T=5, seed=0):
    """A trainer and the support / query data of one meta-batch it sampled."""
    if kind == "mlp":
        params, spec = mlp_policy_init(2, 2, hidden_sizes=(6, 5), rng=seed)
        # nonzero biases: with zero biases every episode's first observation, the origin, puts
        # the first layer exactly on ReLU's kink, where the inner gradient (and so the MAML
        # objective) jumps under any perturbation of the biases
        noise = onp.random.default_rng(seed + 100)
        params = tree_map(lambda p: p + 0.05 * noise.standard_normal(p.shape), params)
    else:
        params, spec = policy_init(2, 2, discrete=False, state_dim=3, ssm_output_dim=2,
                                   hidden_sizes=(5,), rng=seed)
    m = MetaMAML(Navigation2D(horizon=T), params, spec,
                 MetaMAMLConfig(meta_batch_size=M, episodes_per_task=E, inner_lr=ALPHA))
    rng = onp.random.default_rng(seed)
    tasks = m.family.sample_tasks(M, rng)
    theta = tile_values(m.params, M)
    support = tasks_trajectory_data(m._sample(theta, tasks, rng), M, 0.99, "reinforce")
    post = m._sample(m._adapt(theta, support), tasks, rng)
    return m, support, tasks_trajectory_data(post, M, 0.99, "reinforce")


def test_conjugate_gradient_solves_to_its_tolerance(rng):
    n = 12
    Q = rng.standard_normal((n, n))
    A, b = Q @ Q.T + 0.5 * onp.eye(n), rng.standard_normal(n)
    calls = []

    def Avp(v):
        calls.append(1)
        return A @ v
    x, rr = conjugate_gradient(Avp, b, iters=100, residual_tol=1e-20)
    assert onp.allclose(x, onp.linalg.solve(A, b), rtol=1e-9, atol=1e-12)
    assert onp.sum((A @ x - b) ** 2) < 1e-18
    # it stops as soon as the (recursive) residual is below the tolerance ...
    calls.clear()
    x, rr = conjugate_gradient(Avp, b, iters=100, residual_tol=1e-4)
    assert rr < 1e-4 and onp.isclose(rr, onp.sum((A @ x - b) ** 2), rtol=1e-6)
    assert len(calls) < 100
    _, rr_before = conjugate_gradient(Avp, b, iters=len(calls) - 1, residual_tol=1e-4)
    assert rr_before >= 1e-4
    # ... and takes exactly `iters` products otherwise
    calls.clear()
    conjugate_gradient(Avp, b, iters=3)
    assert len(calls) == 3


def explicit_fisher(m, support, query, first_order):
    """``F = Σ_i (1/M) (1/n_i) Σ_{valid t} J_t^T diag(1/σ², 2) J_t``: the Gaussian Fisher of the
    post-update policies, with ``J`` the Jacobian (through the inner step) of their means and
    log standard deviations with respect to ``θ``, each formed explicitly."""
    M = query["mask"].shape[0]
    theta0, unravel = ravel(m.params)

    def adapted(v):
        return maml.adapt(maml.tile_params(unravel(v), M),
                          lambda t, d: np.sum(m.tasks_loss_fn(t, d)), support, inner_lr=ALPHA,
                          first_order=first_order)

    def means(v):
        return tasks_distribution(adapted(v), m.spec, query["obs"], query["actions"],
                                  query["rewards"])["mean"]
    J_mean = jacobian(means)(theta0)                                   # (M, E, T, d, P)
    J_std = jacobian(lambda v: adapted(v)["log_std"])(theta0)          # (M, d, P)
    log_std = onp.asarray(adapted(theta0)["log_std"])                  # (M, d)
    mask, count = query["mask"], query["mask"].sum(axis=(1, 2))
    F = onp.zeros((theta0.size, theta0.size))
    for i in range(M):
        w = mask[i][..., None, None] / (M * count[i])                 # (E, T, 1, 1)
        Jm = J_mean[i] * onp.exp(-log_std[i])[None, None, :, None]     # rows scaled by 1/σ
        F += onp.einsum("etdp,etdq->pq", w * Jm, Jm)
        F += 2.0 * J_std[i].T @ J_std[i] / M
    return F


@pytest.mark.parametrize("kind", ["mlp", "ssm"])
@pytest.mark.parametrize("first_order", [False, True])
def test_fisher_vector_products_equal_the_explicit_fisher_matrix(kind, first_order):
    m, support, query = meta_batch(kind)
    M = query["mask"].shape[0]
    F = explicit_fisher(m, support, query, first_order)
    objective = maml_trpo_objective(m.params, m.spec, query, one_step_adaptation(
        m.tasks_loss_fn, support, M, inner_lr=ALPHA, first_order=first_order))
    direct = direct_pieces(m.params, objective, cg_damping=0.0)
    structured = maml_pieces(m.params, m.spec, m.tasks_loss_fn, support, query, M,
                             inner_lr=ALPHA, first_order=first_order, cg_damping=0.0)
    P = F.shape[0]
    scale = onp.abs(F).max()
    for pieces in (direct, structured):
        Fvp = pieces[4]
        columns = onp.stack([Fvp(e) for e in onp.eye(P)], axis=1)
        assert onp.abs(columns - F).max() <= 1e-10 * scale
    # and the gradient is the MAML meta-gradient of the REINFORCE surrogate
    _, grads = maml.batched_meta_gradient(m.params, m.tasks_loss_fn, support, query,
                                          num_tasks=M, inner_lr=ALPHA, first_order=first_order)
    g = onp.asarray(ravel(grads)[0])
    for pieces in (direct, structured):
        assert onp.allclose(pieces[3], g, rtol=1e-10, atol=1e-13)
    # damping adds lambda v
    v = onp.random.default_rng(0).standard_normal(P)
    damped = maml_pieces(m.params, m.spec, m.tasks_loss_fn, support, query, M, inner_lr=ALPHA,
                         first_order=first_order, cg_damping=1e-3)[4]
    assert onp.allclose(damped(v), F @ v + 1e-3 * v, rtol=1e-9, atol=1e-12 * scale)


def test_the_accepted_step_satisfies_the_kl_bound_and_improves_the_surrogate():
    m, support, query = meta_batch("mlp")
    objective = maml_trpo_objective(m.params, m.spec, query, one_step_adaptation(
        m.tasks_loss_fn, support, 2, inner_lr=ALPHA))
    loss0, kl0 = objective(m.params)
    assert abs(kl0) < 1e-12
    for max_kl in (1e-3, 1e-2, 1e-1):
        new, info = maml_trpo_step(m.params, m.spec, m.tasks_loss_fn, support, query, 2,
                                   inner_lr=ALPHA, max_kl=max_kl)
        loss, kl = objective(new)
        assert info["accepted"] and kl <= max_kl and loss < loss0
        assert onp.isclose(kl, info["kl_after"], rtol=1e-9) and onp.isclose(
            loss, info["loss_after"], rtol=1e-9)
        assert kl > 0.1 * max_kl                      # the step uses the trust region

    # a KL the quadratic model underestimates (KL + 100 KL^2: the same Hessian at theta_0)
    # breaks the bound at the first trial step; with one trial the step is rejected
    def stiff(theta):
        loss, kl = objective(theta)
        return loss, kl + 100.0 * kl ** 2
    new, info = trpo_step(m.params, stiff, max_kl=1e-2, max_backtracks=1)
    assert not info["accepted"] and info["step_norm"] == 0.0
    assert all(onp.array_equal(a, b) for a, b in zip(ravel(new)[0], ravel(m.params)[0]))
    new, info = trpo_step(m.params, stiff, max_kl=1e-2)            # backtracking fixes it
    assert info["accepted"] and info["backtracks"] >= 1 and stiff(new)[1] <= 1e-2


def torch_maml_trpo_step(params, support, query, alpha, max_kl=0.01, cg_iters=10,
                         damping=1e-5, backtrack_ratio=0.8, max_backtracks=15):
    """The same step written in PyTorch, float64, as a PyTorch MAML-TRPO is usually written: a loop
    over tasks, the inner step with ``create_graph=True``, the Fisher-vector product as the
    gradient of ``∇KL · v`` (double backward), conjugate gradient, backtracking."""
    import torch
    from torch.distributions import Independent, Normal, kl_divergence

    flat = flatten_dict(params)
    names = sorted(flat)
    theta = [torch.tensor(flat[n], dtype=torch.float64, requires_grad=True) for n in names]
    layers = len([n for n in names if n.endswith(".W")])
    t = lambda x: torch.as_tensor(onp.asarray(x, dtype=onp.float64))     # noqa: E731
    M = query["mask"].shape[0]

    def policy(p, obs):
        q = dict(zip(names, p))
        h = obs
        for i in range(layers):
            h = torch.nn.functional.linear(h, q[f"pi.layer{i}.W"], q[f"pi.layer{i}.b"])
            h = torch.relu(h) if i < layers - 1 else h
        return Independent(Normal(h, torch.exp(q["log_std"])), 1)

    def masked_mean(x, mask):
        return (x * mask).sum() / mask.sum()

    def adapted(p, i):
        pi = policy(p, t(support["obs"][i]))
        mask = t(support["mask"][i])
        inner = -masked_mean(pi.log_prob(t(support["actions"][i])) * t(support["adv"][i]), mask)
        grads = torch.autograd.grad(inner, p, create_graph=True)
        return [w - alpha * g for w, g in zip(p, grads)]

    def surrogate(p, olds=None):
        losses, kls, pis = [], [], []
        for i in range(M):
            pi = policy(adapted(p, i), t(query["obs"][i]))
            old = olds[i] if olds else Independent(Normal(pi.base_dist.loc.detach(),
                                                          pi.base_dist.scale.detach()), 1)
            a, mask = t(query["actions"][i]), t(query["mask"][i])
            ratio = torch.exp(pi.log_prob(a) - old.log_prob(a))
            losses.append(-masked_mean(ratio * t(query["adv"][i]), mask))
            kls.append(masked_mean(kl_divergence(old, pi), mask))
            pis.append(old)
        return sum(losses) / M, sum(kls) / M, pis

    loss0, kl0, olds = surrogate(theta)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss0, theta, retain_graph=True)])
    grad_kl = torch.cat([x.reshape(-1) for x in
                         torch.autograd.grad(kl0, theta, create_graph=True)])

    def Fvp(v):
        hv = torch.autograd.grad(grad_kl @ v, theta, retain_graph=True)
        return torch.cat([x.reshape(-1) for x in hv]) + damping * v

    x, r = torch.zeros_like(g), g.clone()
    p, rr = r.clone(), r @ r
    for _ in range(cg_iters):
        if rr < 1e-10:
            break
        Ap = Fvp(p)
        a = rr / (p @ Ap)
        x, r = x + a * p, r - a * Ap
        rr_new = r @ r
        p, rr = r + (rr_new / rr) * p, rr_new
    beta = torch.sqrt(2.0 * max_kl / (x @ Fvp(x) + 1e-8))
    theta0 = torch.cat([w.detach().reshape(-1) for w in theta])

    def unflatten(vec):
        out, start = [], 0
        for w in theta:
            out.append(vec[start:start + w.numel()].reshape(w.shape))
            start += w.numel()
        return out
    with torch.enable_grad():                        # the inner step needs gradients
        for j in range(max_backtracks):
            cand = [w.detach().requires_grad_(True)
                    for w in unflatten(theta0 - backtrack_ratio ** j * beta * x)]
            loss, kl, _ = surrogate(cand, olds)
            if loss.item() < loss0.item() and kl.item() <= max_kl:
                return {n: w.detach().numpy() for n, w in zip(names, cand)}, j
    return {n: w.detach().numpy() for n, w in zip(names, theta)}, None


def test_one_trpo_meta_step_equals_pytorch_float64():
    pytest.importorskip("torch")
    m, support, query = meta_batch("mlp", M=3, E=4, T=6, seed=1)
    ours, info = maml_trpo_step(m.params, m.spec, m.tasks_loss_fn, support, query, 3,
                                inner_lr=ALPHA, max_kl=0.01)
    theirs, backtracks = torch_maml_trpo_step(m.params, support, query, ALPHA, max_kl=0.01)
    assert info["accepted"] and backtracks == info["backtracks"]
    step = onp.linalg.norm(ravel(ours)[0] - ravel(m.params)[0])
    for name, value in flatten_dict(ours).items():
        assert onp.abs(value - theirs[name]).max() <= 1e-9 * step, name
    # and the trainer's step is this step (the meta-batch drawn the same way)
    trainer, _, _ = meta_batch("mlp", M=3, E=4, T=6, seed=1)
    trainer.config = MetaMAMLConfig(meta_batch_size=3, episodes_per_task=4, inner_lr=ALPHA,
                                    outer="trpo")
    new, _ = trainer._trpo_step([support], [(1, query)])
    assert onp.allclose(ravel(new)[0], ravel(ours)[0], rtol=0, atol=1e-14)
