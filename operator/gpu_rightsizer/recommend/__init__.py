"""The recommendation engine: from what a workload is and uses, the cheapest allocation that fits.

This is the functional core. Given typed inputs (:mod:`gpu_rightsizer.models`) and a catalog, it
enumerates candidate allocations (GPU model x whole GPU or MIG profile x GPUs per replica x
precision), rejects the infeasible ones with a reason, picks the cheapest and explains why.

It never does I/O, never logs, never reads the clock (callers pass ``now``), and imports neither
kopf, nor the Kubernetes client, nor any HTTP library. It never invents a model variant the team
did not declare, never goes below the observed peak need plus headroom, and never recommends
with less observation than the policy asks.
"""
