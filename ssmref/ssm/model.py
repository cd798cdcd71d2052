"""``StateSpaceModel``: the thin stateful shell over the pure SSM functions.

It holds ``params`` (read at call time, so the test-time adapter can swap traced parameters in),
the mode, and the hidden state between calls::

    forward(u_t):               y_t = C h_t + D u_t,   h_t = A h_{t-1} + B u_t   (one step)
    forward_sequence(u, reset): the same over a sequence, from zeros (reset) or the stored state

``save`` writes an ``.npz`` atomically; ``load`` never unpickles and validates every array.
"""

import autograd.numpy as np
import numpy as onp

from ssmref.checks import check_choice, check_flag
from ssmref.params import tree_copy
from ssmref.storage import load_npz, save_npz
from ssmref.ssm.dims import PARAM_NAMES, ssm_dims
from ssmref.ssm.init import init_ssm, spectral_radius
from ssmref.ssm.modes import MODES, run_ssm
from ssmref.ssm.recurrent import ssm_step


class StateSpaceModel:
    """A linear SSM that keeps its hidden state across calls (the original README's State Space
    Model class).

    ``params`` is the parameter dict, read at call time by :meth:`forward` and
    :meth:`forward_sequence` (so the test-time adapter can swap traced parameters in).
    ``hidden_state`` is ``None`` before the first call and after :meth:`reset_state`, otherwise
    the state ``h_t`` after the last input, shape ``(n,)`` or ``(batch, n)``.
    """

    def __init__(self, input_dim, state_dim, output_dim, *, rng=None, scale=0.1, method="random",
                 dt=0.1, mode="scan"):
        check_choice("mode", mode, tuple(MODES))
        self.params = init_ssm(input_dim, state_dim, output_dim, rng=rng, scale=scale,
                               method=method, dt=dt)
        self.input_dim, self.state_dim, self.output_dim = int(input_dim), int(state_dim), int(output_dim)
        self.mode = mode
        self.hidden_state = None

    def _state_for(self, batch):
        n = self.state_dim
        if self.hidden_state is None:
            return np.zeros(batch + (n,))
        if np.shape(self.hidden_state) != batch + (n,):
            raise ValueError(f"hidden_state has shape {np.shape(self.hidden_state)} but the input needs "
                             f"{batch + (n,)}; call reset_state() to change the batch size")
        return self.hidden_state

    def forward(self, u):
        """One step from the stored state: ``u: (m,)`` or ``(batch, m)`` -> ``y: (p,)`` or ``(batch, p)``."""
        m = self.input_dim
        if np.ndim(u) not in (1, 2) or np.shape(u)[-1] != m:
            raise ValueError(f"u must have shape ({m},) or (batch, {m}), got {np.shape(u)}")
        y, self.hidden_state = ssm_step(self.params, self._state_for(np.shape(u)[:-1]), u)
        return y

    __call__ = forward

    def forward_sequence(self, us, reset=True):
        """Run a sequence ``us: (T, m)`` or ``(batch, T, m)`` -> ``y: (..., T, p)``.

        ``reset=True`` starts from the zero state; ``reset=False`` continues from the stored state.
        The state after the last step is stored either way.
        """
        m = self.input_dim
        if np.ndim(us) not in (2, 3) or np.shape(us)[-1] != m:
            raise ValueError(f"us must have shape (T, {m}) or (batch, T, {m}), got {np.shape(us)}")
        if check_flag("reset", reset):
            self.hidden_state = None
        h0 = None if self.hidden_state is None else self._state_for(np.shape(us)[:-2])
        y, self.hidden_state = run_ssm(self.params, us, h0, self.mode)
        return y

    def reset_state(self):
        """Forget the hidden state (the next call starts from zeros)."""
        self.hidden_state = None

    def get_parameters(self):
        """A copy of the parameters (changing it does not change the model)."""
        return tree_copy(self.params)

    def set_parameters(self, params):
        """Replace the parameters by a validated copy of ``params`` (dims must match the model)."""
        m, n, p = ssm_dims(params)
        if (m, n, p) != (self.input_dim, self.state_dim, self.output_dim):
            raise ValueError(f"params have (input, state, output) dims {(m, n, p)}, the model has "
                             f"{(self.input_dim, self.state_dim, self.output_dim)}")
        self.params = tree_copy({k: params[k] for k in PARAM_NAMES})     # checked by ssm_dims

    def save(self, path):
        """Write parameters, hidden state and mode to ``path`` (``.npz``, atomic, no pickle)."""
        arrays = {k: onp.asarray(self.params[k], dtype=onp.float64) for k in PARAM_NAMES}
        if self.hidden_state is not None:
            arrays["hidden_state"] = onp.asarray(self.hidden_state, dtype=onp.float64)
        arrays["mode"] = onp.array(list(MODES).index(self.mode))
        save_npz(path, arrays)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; ``ValueError`` on any malformed file."""
        raw = load_npz(path, {"A": None, "B": None, "C": None, "D": None, "mode": ((), "i")},
                         allow_extra=True, finite=True)
        extra = [k for k in raw if k not in PARAM_NAMES + ("mode", "hidden_state")]
        if extra:
            raise ValueError(f"{path}: unexpected arrays {extra}")
        params = {k: raw[k] for k in PARAM_NAMES}
        try:
            m, n, p = ssm_dims(params)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        mode_index = int(raw["mode"])
        if not 0 <= mode_index < len(MODES):
            raise ValueError(f"{path}: mode index {mode_index} out of range")
        model = cls.__new__(cls)
        model.input_dim, model.state_dim, model.output_dim = m, n, p
        model.mode = list(MODES)[mode_index]
        model.hidden_state = None
        model.set_parameters(params)
        if "hidden_state" in raw:
            h = raw["hidden_state"]
            if h.dtype.kind != "f" or h.ndim not in (1, 2) or h.shape[-1] != n:
                raise ValueError(f"{path}: hidden_state has shape {h.shape} and dtype {h.dtype}, "
                                 f"expected float ({n},) or (batch, {n})")
            model.hidden_state = h.astype(onp.float64)
        return model

    def __repr__(self):
        state = "None" if self.hidden_state is None else str(tuple(onp.shape(self.hidden_state)))
        return (f"StateSpaceModel(input_dim={self.input_dim}, state_dim={self.state_dim}, "
                f"output_dim={self.output_dim}, mode={self.mode!r}, hidden_state={state}, "
                f"spectral_radius={spectral_radius(self.params['A']):.4g})")
