"""Baseline mode's yardstick: the naive computation carried out in the target dtype, rounding
after every operation (bfloat16 emulated), for the SSM kinds and discretization."""

import numpy as np
import scipy.linalg

from ssmref import ssm as S
from ssmref.crosscheck.dtypes import _bfloat16_round, _check_dtype


def _rounder(dtype):
    """``(work, r)``: the working dtype of the naive computation in ``dtype`` and the function
    that rounds an array of it to the nearest ``dtype`` value (returned in ``work``)."""
    if dtype == "float64":
        return np.float64, lambda x: np.asarray(x, dtype=np.float64)
    if dtype == "float32":
        return np.float32, lambda x: np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        return np.float32, lambda x: np.asarray(x, dtype=np.float16).astype(np.float32)
    return np.float32, _bfloat16_round


def _naive_ssm(x, R, work):
    """States and outputs of the recurrence, every operation rounded by ``R``; matrix products
    accumulate in the working precision (float32 for the low-precision dtypes, as GPUs do)."""
    A, B, C, D = (R(np.asarray(x[k], dtype=work)) for k in S.PARAM_NAMES)
    u, h = R(np.asarray(x["u"], dtype=work)), R(np.asarray(x["h0"], dtype=work))
    Bu = R(u @ B.T)                                       # (b, T, n)
    hs = []
    for t in range(u.shape[1]):
        h = R(R(h @ A.T) + Bu[:, t])                      # h_t = A h_{t-1} + B u_t
        hs.append(h)
    H = np.stack(hs, axis=1)                              # (b, T, n)
    y = R(R(H @ C.T) + R(u @ D.T))                        # y_t = C h_t + D u_t
    return (A, B, C, D, u), H, y


def _naive_vjp(x, R, work):
    (A, B, C, D, u), H, y = _naive_ssm(x, R, work)
    gy, gh = R(np.asarray(x["gy"], dtype=work)), R(np.asarray(x["gh"], dtype=work))
    h0 = R(np.asarray(x["h0"], dtype=work))
    Cg = R(gy @ C)                                        # (b, T, n): C^T gy_t
    T = u.shape[1]
    lam = R(Cg[:, T - 1] + gh)                            # lambda_{T-1} = C^T gy + gh
    lams = [lam]
    for t in range(T - 2, -1, -1):
        lam = R(Cg[:, t] + R(lam @ A))                    # lambda_t = C^T gy_t + A^T lambda_{t+1}
        lams.append(lam)
    L = np.stack(lams[::-1], axis=1)                      # (b, T, n)
    H_prev = np.concatenate([h0[:, None], H[:, :-1]], axis=1)
    flat = lambda a: a.reshape(-1, a.shape[-1])           # (b*T, .)
    return {"y": y, "h_last": H[:, -1],
            "dA": R(flat(L).T @ flat(H_prev)), "dB": R(flat(L).T @ flat(u)),
            "dC": R(flat(gy).T @ flat(H)), "dD": R(flat(gy).T @ flat(u)),
            "du": R(R(L @ B) + R(gy @ D)), "dh0": R(L[:, 0] @ A)}


def _naive_kernel(x, attrs, R, work):
    A, B, C = (R(np.asarray(x[k], dtype=work)) for k in ("A", "B", "C"))
    X, Ks = B, []
    for _ in range(int(attrs["length"])):
        Ks.append(R(C @ X))                               # K[k] = C (A^k B)
        X = R(A @ X)
    return {"K": np.stack(Ks)}


def _naive_discretize(x, attrs, R, work):
    A, B = R(np.asarray(x["A"], dtype=work)), R(np.asarray(x["B"], dtype=work))
    dt = R(np.asarray(x["dt"], dtype=work))
    n, m = B.shape
    if attrs["method"] == "zoh":
        block = R(dt * np.block([[A, B], [np.zeros((m, n + m), dtype=work)]]))
        E = R(scipy.linalg.expm(block))                   # expm in the working precision
        return {"Ad": E[:n, :n], "Bd": E[:n, n:]}
    I = np.eye(n, dtype=work)
    half = R(R(dt / 2) * A)
    left, right = R(I - half), R(I + half)
    return {"Ad": R(np.linalg.solve(left, right)), "Bd": R(np.linalg.solve(left, R(dt * B)))}


def naive_outputs(kind, inputs, attrs, dtype):
    """The naive computation carried out in ``dtype`` (the plain recurrence, the powers
    ``A^k B``, the reverse recurrence of the VJP, the direct discretization formulas), rounding
    to ``dtype`` after every operation (bfloat16 emulated; matrix products accumulate in float32
    for float16 / bfloat16, in ``dtype`` otherwise); returned as float64 arrays.  ``None`` for the
    kinds without a naive baseline (policy, maml, adapter)."""
    work, R = _rounder(_check_dtype(dtype))
    with np.errstate(all="ignore"):
        if kind == "ssm_scan":
            _, H, y = _naive_ssm(inputs, R, work)
            out = {"y": y, "h_last": H[:, -1]}
        elif kind == "ssm_step":
            A, B, C, D = (R(np.asarray(inputs[k], dtype=work)) for k in S.PARAM_NAMES)
            h, u = R(np.asarray(inputs["h"], dtype=work)), R(np.asarray(inputs["u"], dtype=work))
            h_next = R(R(h @ A.T) + R(u @ B.T))
            out = {"h_next": h_next, "y": R(R(h_next @ C.T) + R(u @ D.T))}
        elif kind == "ssm_kernel":
            out = _naive_kernel(inputs, attrs, R, work)
        elif kind == "ssm_scan_vjp":
            out = _naive_vjp(inputs, R, work)
        elif kind == "discretize":
            out = _naive_discretize(inputs, attrs, R, work)
        else:
            return None
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
