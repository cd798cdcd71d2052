"""ssmref: a float64 reference for linear state space models, MAML and test-time adaptation.

Every model is a set of pure NumPy functions over parameter dicts, differentiated with ``autograd``
to any order.  The modules, in dependency order:

- :mod:`ssmref.params`  parameter-dict utilities and safe ``.npz`` persistence
- :mod:`ssmref.ssm`     the linear state space model in three equivalent modes
- :mod:`ssmref.optim`   torch-exact Adam and global-norm clipping as pure (init, update) pairs
- :mod:`ssmref.nn`      dense layers, MLPs, softmax, categorical and diagonal-Gaussian distributions
- :mod:`ssmref.policy`  the SSM meta-RL policy (step and sequence forms)
- :mod:`ssmref.envs`    task distributions: 2-D navigation, bandits, sinusoids, LTI system id
- :mod:`ssmref.rl`      returns, GAE, the linear feature baseline, REINFORCE and DiCE, rollouts
- :mod:`ssmref.maml`    MAML / FOMAML / Meta-SGD: adapt, meta_loss, meta_gradient
- :mod:`ssmref.metarl`  MetaMAML: the MAML-RL meta-training loop
- :mod:`ssmref.fewshot` MetaRegression: MAML for few-shot (sinusoid) regression
- :mod:`ssmref.train`   ``python -m ssmref train`` / ``evaluate``: run directories, resume, evaluation
- :mod:`ssmref.adaptation`  test-time adaptation, its monitors (:mod:`ssmref.adaptation.monitor`)
- :mod:`ssmref.experiments`  measurements that use the API (not library): TTA under shifted
  dynamics, a meta-trained navigation policy under a rescaled action
- :mod:`ssmref.crosscheck`  golden vectors and the checker for ports (``vectors`` / ``check``)

See ``docs/`` for the specification.
"""

__version__ = "0.1.0"
