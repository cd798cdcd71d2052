"""ssmref: a float64 reference for state space models, MAML meta-learning and test-time adaptation.

Every model is a set of pure NumPy functions over parameter dicts, differentiated with ``autograd``
to any order.  The package is laid out by layer; each layer imports only the layers above it in
this list (``tests/test_layout.py`` checks it, and that there are no import cycles):

Foundation (single modules)
  :mod:`ssmref.checks`      validators of public arguments (int, scalar, flag, choice, shape)
  :mod:`ssmref.rng`         ``rng``: None, a seed, or a Generator; never global state
  :mod:`ssmref.params`      parameter trees: map, flatten, ravel, norms, stop_gradient
  :mod:`ssmref.storage`     trusted files: atomic writes, ``.npz`` read header-first, bounded JSON
  :mod:`ssmref.recurrence`  the diagonal linear recurrence (adjoint VJP) and the associative scan
  :mod:`ssmref.optim`       torch-exact Adam and global-norm clipping, as (init, update) pairs
  :mod:`ssmref.nn`          dense layers, MLPs, softmax, categorical and Gaussian distributions
  :mod:`ssmref.maml`        MAML / FOMAML / Meta-SGD: adapt, meta_loss, meta_gradient

State space models (subpackages)
  :mod:`ssmref.ssm`         the dense linear time-invariant SSM: scan, convolution, parallel scan,
                            discretization, HiPPO, ``StateSpaceModel`` (``python -m ssmref.ssm``)
  :mod:`ssmref.structured`  S4D / S5 complex diagonal SSMs and S4's DPLR kernel
  :mod:`ssmref.selective`   Mamba's selective scan and decoding step, Mamba-2's SSD

Applications (subpackages)
  :mod:`ssmref.metarl`      meta-RL with MAML: task families, policy-gradient math, the SSM
                            policy, the trainers, ``python -m ssmref train`` / ``evaluate``
  :mod:`ssmref.adaptation`  test-time adaptation: the guarded 8-step update, strategies, hooks,
                            monitors

Tools
  :mod:`ssmref.crosscheck`  golden vectors and the checker for ports (``vectors`` / ``check``),
                            and the certification of the references: 40-digit recomputations
                            (``crosscheck.highprec``, mpmath, optional) and error bounds
  :mod:`ssmref.experiments` measurements that use the public API (not library): TTA under
                            shifted dynamics, a meta-trained policy under a rescaled action
  :mod:`ssmref.cli`         ``python -m ssmref``

See ``docs/`` for the specification (``docs/index.md`` is the map).
"""

__version__ = "0.1.0"
