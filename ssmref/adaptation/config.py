"""The adapter's hyperparameters: one dataclass, checked at the public boundary.

The first twelve fields and their defaults are the contract; the last five are ssmref's.  The
step numbers refer to the update in :mod:`ssmref.adaptation`.  :meth:`AdaptationConfig.validate`
runs on construction and again in :func:`ssmref.adaptation.create_adapter` (a dataclass can be
changed in between); a bad value raises ``ValueError`` naming the field,
``AdaptationConfig.<field>``.
"""

import dataclasses

from ssmref.checks import check_flag, check_int, check_scalar

from ssmref.adaptation.selection import compile_patterns


@dataclasses.dataclass
class AdaptationConfig:
    """Hyperparameters of the adapter (see the field comments; ``docs/adaptation.md``, Defaults)."""
    enabled: bool = True               # False: adapt() does nothing (observe() still works)
    lr: float = 1e-4                   # Adam learning rate (step 4)
    max_step_scale: float = 0.1        # s of step 5; 0 disables the step bound
    weight_decay: float = 0.0          # L2 added to the gradient inside Adam (torch.optim.Adam)
    grad_clip_norm: float = 1.0        # global-norm clipping threshold of step 3; 0 disables it
    trust_region_eps: float = 1e-3     # ε of step 7 (active only when ema_decay > 0 too)
    ema_decay: float = 0.0             # d of step 8; 0 keeps the anchor fixed (and step 7 off)
    entropy_weight: float = 0.0        # weight of the entropy term of tent / eata
    max_steps_per_call: int = 1        # steps per adapt() call
    allow_layers: object = None        # None, a regex or a list of regexes (re.search on names)
    deny_layers: object = None         # None, a regex or a list of regexes
    episodic: bool = False             # context() restores everything on exit
    # --- beyond the contract ---
    b1: float = 0.9                    # Adam betas, as torch.optim.Adam(betas=(b1, b2))
    b2: float = 0.999
    adam_eps: float = 1e-8             # Adam eps, outside the square root
    eata_margin: float = 0.4           # eata: E0 = eata_margin * ln(C)
    monitor_momentum: float = 0.9      # β of the feature tracker

    def __post_init__(self):
        self.validate()

    def validate(self):
        """``ValueError`` naming the first bad field; returns ``self``."""
        for name in ("enabled", "episodic"):
            check_flag(f"AdaptationConfig.{name}", getattr(self, name))
        for name in ("lr", "max_step_scale", "weight_decay", "grad_clip_norm",
                     "trust_region_eps", "adam_eps", "eata_margin"):
            check_scalar(f"AdaptationConfig.{name}", getattr(self, name), low=0.0)
        for name in ("ema_decay", "b1", "b2", "monitor_momentum"):
            check_scalar(f"AdaptationConfig.{name}", getattr(self, name), low=0.0, high=1.0,
                         high_open=True)
        check_scalar("AdaptationConfig.entropy_weight", self.entropy_weight)
        check_int("AdaptationConfig.max_steps_per_call", self.max_steps_per_call, minimum=1)
        self.layer_patterns()
        return self

    def layer_patterns(self):
        """``(allow, deny)``: ``allow_layers`` and ``deny_layers`` as lists of compiled regexes
        (``None`` where the field is ``None``)."""
        return (compile_patterns("AdaptationConfig.allow_layers", self.allow_layers),
                compile_patterns("AdaptationConfig.deny_layers", self.deny_layers))
