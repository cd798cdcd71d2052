"""ssmref: a float64 reference for linear state space models, MAML and test-time adaptation.

Every model is a set of pure NumPy functions over parameter dicts, differentiated with ``autograd``
to any order.  The modules, in dependency order:

- :mod:`ssmref.params`  parameter-dict utilities and safe ``.npz`` persistence
- :mod:`ssmref.ssm`     the linear state space model in three equivalent modes
- :mod:`ssmref.optim`   torch-exact Adam and global-norm clipping as pure (init, update) pairs
- :mod:`ssmref.nn`      dense layers, MLPs, softmax, categorical and diagonal-Gaussian distributions
- :mod:`ssmref.maml`    MAML / FOMAML / Meta-SGD: adapt, meta_loss, meta_gradient
- :mod:`ssmref.metarl`  meta-learning with MAML: task families (``envs``), policy-gradient math
  (``rl``), the SSM policy (``policy``), the trainers ``MetaMAML`` and ``MetaRegression``, and the
  run directories of ``python -m ssmref train`` / ``evaluate`` (``train``)
- :mod:`ssmref.adaptation`, :mod:`ssmref.monitor`  test-time adaptation and its monitors
- :mod:`ssmref.policy_shift`  adapting a meta-trained navigation policy under a rescaled action
- :mod:`ssmref.crosscheck`  golden vectors and the checker for ports (``vectors`` / ``check``)

See ``docs/`` for the specification.
"""

__version__ = "0.1.0"
