"""The families of cases: each module defines ``KINDS`` (the checker's rules, a list of
:class:`~ssmref.crosscheck.kinds.Kind`) and ``CASES`` (a list of
:class:`~ssmref.crosscheck.kinds.Case`) for one family of models.

- :mod:`.ssm`: the dense linear SSM (scan, step, kernel, gradients, discretization);
- :mod:`.learning`: the SSM policy, MAML (:mod:`.maml`) and the test-time adapter (:mod:`.adapter`);
- :mod:`.selective`: Mamba's selective scan and decoding step, Mamba-2's SSD, their gradients and a
  decode with a narrow state cache (inputs in :mod:`.selective_inputs`, baselines in
  :mod:`.selective_naive`);
- :mod:`.mamba3`: Mamba-3 SISO, its decoding step and its gradients (baselines in
  :mod:`.mamba3_naive`, 40-digit references in :mod:`.mamba3_ref`).
- :mod:`.delta`: the delta rule family (DeltaNet, Gated DeltaNet, KDA), its decode step and its
  gradients (baselines in :mod:`.delta_naive`, 40-digit references in :mod:`.delta_ref`).
"""
