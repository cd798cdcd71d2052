"""rllab's linear feature baseline: ridge regression of the returns on per-step features.

For step ``t`` of a path (``t`` counted from 0 within the path), with ``o_t`` the observation::

    o_t   = clip(obs_t, -10, 10)
    phi_t = [o_t, o_t**2, t/100, (t/100)**2, (t/100)**3, 1]        (2*obs_dim + 4 features)
    c     = lstsq(F^T F + reg * I, F^T y),   F, y = features and returns of the valid steps
    b_t   = phi_t . c

``reg = reg_coeff * 10^j`` for ``j = 0, 1, ..., 4``: the first finite solution is kept, as in
cbfinn/maml_rl.  Plain NumPy for the fit (never differentiated); the prediction is written with
``autograd.numpy``.  Each public function checks its arguments and calls its unchecked
twin ``name_core``.  Reference: ``rllab/baselines/linear_feature_baseline.py`` (rll/rllab,
cbfinn/maml_rl).
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from ssmref.metarl.rl.batch import check_like_mask, check_mask, masked

BASELINE_MAX_ATTEMPTS = 5   # cbfinn/maml_rl: ``for _ in range(5)``


# phi_t = [o_t, o_t**2, t/100, (t/100)**2, (t/100)**3, 1],  o_t = clip(obs_t, -10, 10)
def baseline_features_core(obs, m):
    N, T = m.shape
    o = np.clip(masked(obs, m), -10.0, 10.0)                    # (N, T, d)
    al = onp.broadcast_to((onp.arange(T) / 100.0)[None, :, None], (N, T, 1))   # (N, T, 1)
    ones = onp.ones((N, T, 1))
    feats = np.concatenate([o, o ** 2, al, al ** 2, al ** 3, ones], axis=2)   # (N, T, 2d + 4)
    return masked(feats, m)


def _check_obs(obs, m):
    if np.ndim(obs) != 3:
        raise ValueError(f"obs has shape {tuple(np.shape(obs))} but mask has shape {m.shape}; "
                         f"obs must have shape (N, T, obs_dim)")
    check_like_mask("obs", obs, m, trailing=tuple(np.shape(obs))[2:])


def baseline_features(obs, mask):
    """rllab ``LinearFeatureBaseline._features``, per step ``t`` of a path:

        o_t  = clip(obs_t, -10, 10)
        phi_t = [o_t, o_t**2, t/100, (t/100)**2, (t/100)**3, 1]      (2*obs_dim + 4 entries)

    The square is of the *clipped* observation (rllab: ``o = np.clip(...); ... o ** 2``); ``t`` is
    the step index within the path, starting at 0 (``np.arange(l) / 100.0``).  Rows at masked steps
    are 0.0.  Shapes: ``obs`` (N, T, obs_dim), ``mask`` (N, T) -> (N, T, 2*obs_dim + 4).
    Reference: ``rllab/baselines/linear_feature_baseline.py`` (rll/rllab, cbfinn/maml_rl).
    """
    m = check_mask(mask)
    _check_obs(obs, m)
    return baseline_features_core(obs, m)


def _ridge_solve(gram, rhs, reg_coeff):
    """rllab's solve: ``lstsq(F^T F + reg_coeff * I, F^T y)`` with ``rcond=-1`` (numpy < 2.0)."""
    k = gram.shape[0]
    return onp.linalg.lstsq(gram + reg_coeff * onp.identity(k), rhs, rcond=-1)[0]


# c = lstsq(F^T F + reg I, F^T y),  reg = reg_coeff * 10^j,  j = 0..4: the first finite c
def fit_linear_baseline_core(obs, returns, m, reg_coeff=1e-5):
    valid = m.reshape(-1) > 0                                   # (N*T,)
    feats = onp.asarray(baseline_features_core(obs, m))             # (N, T, k)
    k = feats.shape[2]
    F = feats.reshape(-1, k)[valid]                             # (n_valid, k)
    y = returns.reshape(-1)[valid]                              # (n_valid,)
    gram, rhs = F.T @ F, F.T @ y                                # (k, k), (k,)
    reg = float(reg_coeff)
    for _ in range(BASELINE_MAX_ATTEMPTS):
        coeffs = _ridge_solve(gram, rhs, reg)
        if onp.all(onp.isfinite(coeffs)):
            return coeffs
        reg *= 10.0
    raise onp.linalg.LinAlgError(
        f"fit_linear_baseline: no finite solution after {BASELINE_MAX_ATTEMPTS} attempts "
        f"(reg_coeff {reg_coeff} up to {reg / 10.0})")


def fit_linear_baseline(obs, returns, mask, reg_coeff=1e-5):
    """Ridge-regression coefficients ``c`` of the returns on :func:`baseline_features`.

        F = features of the valid steps (masked steps excluded),  y = their returns
        c = lstsq(F^T F + reg * I, F^T y),   reg = reg_coeff * 10^j,  j = 0, 1, ..., 4

    The first attempt whose ``c`` is finite is returned (cbfinn/maml_rl retries on NaN; here on
    NaN or inf).  If all 5 attempts fail, ``numpy.linalg.LinAlgError`` (a ``ValueError``) is raised
    instead of rllab's silent NaN coefficients.  Non-finite ``obs`` or ``returns`` at valid steps
    are refused with ``ValueError``.  Not differentiated (plain NumPy); the returns are usually
    :func:`discounted_returns`, fitted on the same batch before predicting, as maml_rl does.

    Shapes: ``obs`` (N, T, obs_dim), ``returns``, ``mask`` (N, T) -> ``c`` (2*obs_dim + 4,).
    Reference: ``rllab/baselines/linear_feature_baseline.py`` ``fit`` (cbfinn/maml_rl version).
    """
    m = check_mask(mask)
    check_like_mask("returns", returns, m)
    _check_obs(obs, m)
    obs_v = onp.asarray(getval(obs)).astype(onp.float64)
    ret_v = onp.asarray(getval(returns)).astype(onp.float64)
    return fit_linear_baseline_core(obs_v, ret_v, m, reg_coeff)


# b_t = phi_t . c  (0 at masked steps)
def predict_linear_baseline_core(coeffs, obs, m):
    return masked(np.dot(baseline_features_core(obs, m), coeffs), m)     # (N, T)


def predict_linear_baseline(coeffs, obs, mask):
    """``b_t = phi_t . c`` at valid steps, 0.0 at masked steps.

    Shapes: ``coeffs`` (2*obs_dim + 4,), ``obs`` (N, T, obs_dim), ``mask`` (N, T) -> (N, T).
    Reference: ``rllab/baselines/linear_feature_baseline.py`` ``predict``.
    """
    m = check_mask(mask)
    _check_obs(obs, m)
    k = 2 * np.shape(obs)[2] + 4
    if tuple(np.shape(coeffs)) != (k,):
        raise ValueError(f"coeffs has shape {tuple(np.shape(coeffs))} but obs has shape "
                         f"{tuple(np.shape(obs))}; coeffs must have shape "
                         f"(2*obs_dim + 4,) = ({k},)")
    return predict_linear_baseline_core(coeffs, obs, m)


class LinearFeatureBaseline:
    """Thin stateful wrapper of :func:`fit_linear_baseline` / :func:`predict_linear_baseline`.

    As in rllab, :meth:`predict` before any :meth:`fit` returns zeros (``coeffs is None``).
    """

    def __init__(self, reg_coeff=1e-5):
        self.reg_coeff = float(reg_coeff)
        self.coeffs = None

    def fit(self, obs, returns, mask):
        self.coeffs = fit_linear_baseline(obs, returns, mask, self.reg_coeff)
        return self

    def predict(self, obs, mask):
        m = check_mask(mask)
        if self.coeffs is None:
            return onp.zeros(m.shape)
        return predict_linear_baseline(self.coeffs, obs, m)
