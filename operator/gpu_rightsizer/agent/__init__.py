"""``gpu-rightsizer agent``: the node agent that reads NVML and says which pod uses what.

Run as a DaemonSet, one per GPU node. Every interval it reads the node's GPUs and MIG instances
through NVML (:mod:`gpu_rightsizer.nvml`), maps each GPU process's host PID to its pod and
container through ``/proc/<pid>/cgroup`` (:mod:`.procfs`, parsed by
:mod:`gpu_rightsizer.nodeusage.cgroups`), pod UIDs to names through the API server's list of
this node's pods (:mod:`.pods`), charges memory per container
(:mod:`gpu_rightsizer.nodeusage.attribution`) and serves the result on ``/metrics`` with
dcgm-exporter's names plus per-container series, and its own health on ``/healthz``
(:mod:`.serving`). :mod:`.running` is the loop.

It only reads: NVML, ``/proc`` and this node's pods. It never writes to the API server, never
changes a GPU's settings (no MIG repartitioning, no clocks, no power limits) and never crashes
for NVML's sake.
"""
