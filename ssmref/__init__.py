"""ssmref: a float64 reference for linear state space models, MAML and test-time adaptation.

Every model is a set of pure NumPy functions over parameter dicts, differentiated with ``autograd``
to any order.  The modules, in dependency order:

- :mod:`ssmref.params`  parameter-dict utilities and safe ``.npz`` persistence
- :mod:`ssmref.ssm`     the linear state space model in three equivalent modes

See ``docs/`` for the specification.
"""

__version__ = "0.1.0"
