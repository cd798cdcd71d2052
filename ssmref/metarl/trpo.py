"""TRPO as MAML-RL's outer optimiser (Finn et al. 2017, sec. 5.3; maml_rl's ``MAMLTRPO``).

The meta-parameters ``θ`` move to approximately solve, with ``θ_i'(θ)`` task ``i``'s adapted
parameters (the inner step, differentiated through: second order) and ``π_old`` the post-update
policies that sampled the query data ``D_i'``::

    minimise   L(θ)  = mean_i  -mean_{t in D_i'} [π_{θ_i'(θ)}(a_t|s_t) / π_old(a_t|s_t)] A_t
    subject to KL(θ) = mean_i   mean_{t in D_i'} KL(π_old(.|s_t) || π_{θ_i'(θ)}(.|s_t))  <=  δ

One step (Schulman et al. 2015, appendix C; ``conjugate_gradient_optimizer.py`` in cbfinn/maml_rl)::

    g = ∇L(θ_0)                               (the MAML policy gradient: the ratio is 1 at θ_0)
    F v = ∇(∇KL(θ_0) · v) + λ v                (Hessian of the KL at θ_0 = the Fisher matrix of
                                               the post-update policies through the inner step)
    s = CG(F, g)                              (``cg_iters`` iterations of conjugate gradient)
    β = sqrt(2 δ / (s·F s + 1e-8))            (the step that reaches KL = δ on the quadratic model)
    θ = θ_0 − r^j β s,  j = 0, 1, ...         the first j < max_backtracks with L(θ) < L(θ_0) and
                                              KL(θ) <= δ; if none, θ stays θ_0 (step rejected)

Autograd differentiates the KL exactly (maml_rl's default took finite differences of gradients in
float32): ``F v`` is one reverse pass through the recorded graph of ``∇KL`` (``make_vjp``), whose
forward is traced once per step.  Defaults are maml_rl's: ``δ = 0.01``, 10 CG iterations,
``λ = 1e-5``, ``r = 0.8``, 15 backtracking steps.  The KL is a mean over each task's valid steps,
then over tasks (as pytorch-maml-rl; maml_rl averages over all steps at once, which differs only
when tasks have different numbers of valid steps).
"""

import autograd.numpy as np
import numpy as onp
from autograd import grad, make_vjp, value_and_grad
from autograd.tracer import getval

from ssmref import maml
from ssmref.checks import check_int, check_scalar
from ssmref.metarl.policy.core import log_prob
from ssmref.metarl.policy.tasks import tasks_distribution, tile_values
from ssmref.nn import log_softmax
from ssmref.params import ravel, stop_gradient, tree_map


# x_{k+1} = x_k + a_k p_k,  r_{k+1} = r_k − a_k A p_k,  p_{k+1} = r_{k+1} + (|r_{k+1}|²/|r_k|²) p_k
def conjugate_gradient(Avp, b, iters=10, residual_tol=1e-10):
    """Approximate ``A^{-1} b`` for a symmetric positive definite ``A`` given as ``Avp(v) = A v``,
    from ``x_0 = 0``: at most ``iters`` iterations, stopping once ``|r|² < residual_tol`` (rllab's
    ``krylov.cg``).  Returns ``(x, |r|²)`` with ``r = b − A x`` the recursively updated residual."""
    iters = check_int("iters", iters, minimum=1)
    b = onp.asarray(b, dtype=onp.float64)
    x, r = onp.zeros_like(b), b.copy()
    p, rr = r.copy(), float(r @ r)
    for _ in range(iters):
        if rr < residual_tol:
            break
        Ap = onp.asarray(Avp(p))
        a = rr / float(p @ Ap)
        x, r = x + a * p, r - a * Ap
        rr_new = float(r @ r)
        p, rr = r + (rr_new / rr) * p, rr_new
    return x, rr


def _check_trpo_settings(max_kl, cg_iters, cg_damping, backtrack_ratio, max_backtracks):
    check_scalar("max_kl", max_kl, low=0.0, low_open=True)
    check_int("cg_iters", cg_iters, minimum=1)
    check_scalar("cg_damping", cg_damping, low=0.0)
    check_scalar("backtrack_ratio", backtrack_ratio, low=0.0, high=1.0, low_open=True,
                 high_open=True)
    check_int("max_backtracks", max_backtracks, minimum=1)


# s = CG(F, g),  β = sqrt(2δ / (s·Fs + 1e-8)),  θ = θ_0 − r^j β s  (first j that improves within δ)
def trpo_update_core(theta0, loss0, g, Fvp, evaluate, max_kl, cg_iters, backtrack_ratio,
                     max_backtracks):
    """The step of the module docstring on flat vectors: ``Fvp(v) = (F + λI) v``,
    ``evaluate(θ) -> (L, KL)`` (values).  Returns ``(θ, info)``, ``θ = θ_0`` if rejected."""
    s, residual = conjugate_gradient(Fvp, g, iters=cg_iters)
    beta = onp.sqrt(2.0 * max_kl / (float(s @ Fvp(s)) + 1e-8))
    info = {"loss_before": float(loss0), "grad_norm": float(onp.linalg.norm(g)),
            "cg_residual": float(residual), "accepted": False, "backtracks": max_backtracks,
            "step_norm": 0.0, "loss_after": float(loss0), "kl_after": 0.0}
    for j in range(max_backtracks):
        step = (backtrack_ratio ** j) * beta * s
        value, divergence = evaluate(theta0 - step)
        if value < loss0 and divergence <= max_kl:
            info.update(accepted=True, backtracks=j, step_norm=float(onp.linalg.norm(step)),
                        loss_after=float(value), kl_after=float(divergence))
            return theta0 - step, info
    return theta0, info


def direct_pieces(params, objective, cg_damping=1e-5):
    """What one step of :func:`trpo_step` needs, on flat vectors:
    ``(θ_0, unravel, L(θ_0), g, Fvp, evaluate)`` with ``Fvp(v) = (H_KL + λI) v`` the exact
    Hessian-vector product of ``KL`` by autograd (one reverse pass through the recorded graph of
    ``∇KL`` per product) and ``evaluate(θ) -> (L, KL)`` as floats."""
    theta0, unravel = ravel(stop_gradient(params))
    theta0 = onp.asarray(theta0)
    loss0, g = value_and_grad(lambda v: objective(unravel(v))[0])(theta0)
    hvp, _ = make_vjp(grad(lambda v: objective(unravel(v))[1]))(theta0)   # v -> H_KL v

    def Fvp(v):
        return onp.asarray(hvp(v)) + cg_damping * v

    def evaluate(v):
        return tuple(float(getval(x)) for x in objective(unravel(v)))
    return theta0, unravel, float(loss0), onp.asarray(g), Fvp, evaluate


def trpo_step(params, objective, *, max_kl=0.01, cg_iters=10, cg_damping=1e-5,
              backtrack_ratio=0.8, max_backtracks=15):
    """One TRPO step from ``params`` (module docstring): ``(new_params, info)``.

    ``objective(θ) -> (L, KL)``: the surrogate loss to minimise and the mean KL from the sampling
    policy, both scalars differentiable with autograd (twice for the KL), ``KL = 0`` with zero
    gradient at ``θ = params`` (:func:`direct_pieces`).  ``info``: ``loss_before``,
    ``loss_after``, ``kl_after``, ``grad_norm`` (of ``g``), ``step_norm``, ``backtracks``
    (``j``), ``accepted``, ``cg_residual`` (``|r|²`` after CG)."""
    _check_trpo_settings(max_kl, cg_iters, cg_damping, backtrack_ratio, max_backtracks)
    theta0, unravel, loss0, g, Fvp, evaluate = direct_pieces(params, objective, cg_damping)
    theta, info = trpo_update_core(theta0, loss0, g, Fvp, evaluate, max_kl, cg_iters,
                                   backtrack_ratio, max_backtracks)
    return unravel(theta), info


# ---------------------------------------------------------------------------------------------
# The MAML-TRPO objective
# ---------------------------------------------------------------------------------------------

# Gaussian: Σ_d log(σ1/σ0) + (σ0² + (μ0 − μ1)²) / (2 σ1²) − 1/2;  categorical: Σ_k p0 (log p0 − log p1)
def kl_divergence(spec, old, new):
    """``KL(old || new)`` per step, ``(...)``, of two distributions of the policy ``spec``
    (dicts as :func:`ssmref.metarl.policy.tasks.tasks_distribution` returns)."""
    if spec.discrete:
        lp0, lp1 = log_softmax(old["logits"]), log_softmax(new["logits"])
        return np.sum(np.exp(lp0) * (lp0 - lp1), axis=-1)
    ls0, ls1 = old["log_std"], new["log_std"]
    var_ratio = np.exp(2.0 * (ls0 - ls1))
    diff = (old["mean"] - new["mean"]) * np.exp(-ls1)
    return np.sum(ls1 - ls0 + 0.5 * (var_ratio + diff ** 2) - 0.5, axis=-1)


def _per_task_mean(x, m):
    """``mean_i (Σ_{e,t} m x) / Σ_{e,t} m`` for ``x, m: (M, E, T)``."""
    return np.mean(np.sum(np.where(m > 0, x, 0.0), axis=(1, 2)) / onp.sum(m, axis=(1, 2)))


def maml_trpo_objective(params, spec, query, adapted):
    """``objective(θ) -> (L(θ), KL(θ))`` of the module docstring for one meta-batch sampled with
    ``θ_0 = params``.

    ``adapted(θ)``: the task-batched adapted parameters ``Θ'(θ)`` (e.g. one inner step,
    ``maml.adapt(maml.tile_params(θ, M), Σ_i L_i, support)``), differentiable; ``query``: the
    task-batched data of the post-update episodes (with ``adv``).  ``π_old`` is the post-update
    policy at ``θ_0``, evaluated here once, by the sequence form (the rollout drew its actions
    from the step form, which gives the same values to rounding)."""
    def adapted_distribution(theta):
        return tasks_distribution(adapted(theta), spec, query["obs"], query["actions"],
                                  query["rewards"])

    old = stop_gradient(adapted_distribution(stop_gradient(params)))
    m, a = query["mask"], query["actions"]
    old_log_prob = log_prob(spec, old, a)                                         # (M, E, T)

    def objective(theta):
        new = adapted_distribution(theta)
        ratio = np.exp(log_prob(spec, new, a) - old_log_prob)                     # (M, E, T)
        return (-_per_task_mean(ratio * query["adv"], m),
                _per_task_mean(kl_divergence(spec, old, new), m))
    return objective


def one_step_adaptation(loss_fn, support, num_tasks, *, inner_lr, steps=1, first_order=False):
    """``adapted(θ)`` for :func:`maml_trpo_objective`: ``steps`` inner steps of every task on
    ``support`` from ``tile(θ)`` (``loss_fn(Θ, data) -> (M,)``, the task-batched inner loss)."""
    def adapted(theta):
        return maml.adapt(maml.tile_params(theta, num_tasks),
                          lambda t, d: np.sum(loss_fn(t, d)), support, inner_lr=inner_lr,
                          steps=steps, first_order=first_order)
    return adapted


# ---------------------------------------------------------------------------------------------
# The same step for one inner step, from second-order pieces only
# ---------------------------------------------------------------------------------------------

def maml_pieces(params, spec, loss_fn, support, query, num_tasks, *, inner_lr,
                first_order=False, cg_damping=1e-5):
    """:func:`direct_pieces` of :func:`maml_trpo_objective` for ONE inner step, computed without
    differentiating three times.  With ``θ_i' = θ − α ∇L_i(θ)``, ``H_i = ∇²L_i(θ)`` (the inner
    loss's Hessian), ``g_i'`` and ``F_i'`` the gradient of the outer loss and the Hessian of the
    KL with respect to ``θ_i'`` (plain first and second derivatives at the adapted parameters)::

        g   = Σ_i (I − α H_i) g_i'                       (= ∇L(θ), the MAML gradient)
        F v = Σ_i (I − α H_i) F_i' (I − α H_i) v         (= Hessian of KL(θ) times v)

    (the chain rule through ``∂θ_i'/∂θ = I − α H_i``, symmetric; ``first_order`` drops the
    ``α H_i`` terms).  ``H_i u`` is one reverse pass through the recorded graph of the inner
    gradient (recorded once per step, for all tasks: block diagonal in the task-batched
    parameters), ``F_i' u`` one through that of ``∇KL``.  The tests check ``g`` and ``F v``
    against :func:`direct_pieces` and the explicit Fisher matrix."""
    check_scalar("inner_lr", inner_lr, low=0.0)
    M, alpha = num_tasks, float(inner_lr)
    theta0, unravel = ravel(stop_gradient(params))
    theta0 = onp.asarray(theta0)
    tiled0, unravel_tasks = ravel(tile_values(params, M))

    def tile(v):                    # θ -> Θ, Θ_i = θ
        return onp.asarray(ravel(tile_values(unravel(v), M))[0])

    def untile(V):                  # the transpose of tile: Σ_i Θ_i
        return onp.asarray(ravel(tree_map(lambda x: onp.sum(x, axis=0), unravel_tasks(V)))[0])

    inner_grad = grad(lambda V: np.sum(loss_fn(unravel_tasks(V), support)))
    hvp_inner, G = make_vjp(inner_grad)(onp.asarray(tiled0))           # u -> H u, ∇ Σ_i L_i
    adapted0 = onp.asarray(tiled0) - alpha * onp.asarray(G)               # Θ' at θ_0

    def distribution(V):
        return tasks_distribution(unravel_tasks(V), spec, query["obs"], query["actions"],
                                  query["rewards"])

    old = stop_gradient(distribution(adapted0))
    m, a = query["mask"], query["actions"]
    old_log_prob = log_prob(spec, old, a)

    def loss_and_kl(V):
        new = distribution(V)
        ratio = np.exp(log_prob(spec, new, a) - old_log_prob)                     # (M, E, T)
        return (-_per_task_mean(ratio * query["adv"], m),
                _per_task_mean(kl_divergence(spec, old, new), m))

    loss0, G_outer = value_and_grad(lambda V: loss_and_kl(V)[0])(adapted0)
    hvp_kl, _ = make_vjp(grad(lambda V: loss_and_kl(V)[1]))(adapted0)

    def chain(U):                   # (I − α H_i) U_i for every task
        return U if first_order else U - alpha * onp.asarray(hvp_inner(U))

    def Fvp(v):
        return untile(chain(onp.asarray(hvp_kl(chain(tile(v)))))) + cg_damping * v

    def evaluate(v):
        V = tile(v)
        return tuple(float(x) for x in loss_and_kl(V - alpha * onp.asarray(inner_grad(V))))
    return (theta0, unravel, float(loss0), untile(chain(onp.asarray(G_outer))), Fvp,
            evaluate)


def maml_trpo_step(params, spec, loss_fn, support, query, num_tasks, *, inner_lr,
                   first_order=False, max_kl=0.01, cg_iters=10, cg_damping=1e-5,
                   backtrack_ratio=0.8, max_backtracks=15):
    """:func:`trpo_step` of :func:`maml_trpo_objective` for one inner step, from
    :func:`maml_pieces`: the same step (to rounding) and ``info``, about 2x faster."""
    _check_trpo_settings(max_kl, cg_iters, cg_damping, backtrack_ratio, max_backtracks)
    theta0, unravel, loss0, g, Fvp, evaluate = maml_pieces(
        params, spec, loss_fn, support, query, num_tasks, inner_lr=inner_lr,
        first_order=first_order, cg_damping=cg_damping)
    theta, info = trpo_update_core(theta0, loss0, g, Fvp, evaluate, max_kl, cg_iters,
                                   backtrack_ratio, max_backtracks)
    return unravel(theta), info
