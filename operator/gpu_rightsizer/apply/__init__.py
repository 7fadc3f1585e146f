"""Apply mode's pure core: patch builders, the gates before a change, rollout assessment, the
persisted state machine and realized savings.

Everything here is a function of what was read (the target, its pods, the inventory, the
GPUWorkload's spec and status) and the time the caller passes in. Must never do I/O: no API
calls, no clocks, no logging; the reconciler (:mod:`gpu_rightsizer.reconcile`) executes the
actions these functions return.
"""
