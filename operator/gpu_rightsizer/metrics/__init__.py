"""Adapters that read what workloads use: DCGM and vLLM series in Prometheus.

Query builders (``queries``: the fixed set of PromQL queries of a sweep, aggregated per pod) and
attribution of pods to workloads (``attribution``: by parsing pod names, then combining a
workload's pods) are pure; ``prometheus`` talks HTTP through prometheus-api-client
(synchronous: the operator runs it in a worker thread). Implements
:class:`gpu_rightsizer.ports.UsageSource`. Never imports kopf or the Kubernetes client, and
never writes anything anywhere.
"""
