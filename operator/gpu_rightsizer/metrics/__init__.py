"""Adapters that read what workloads use: DCGM and vLLM series in Prometheus (and NVML).

Query builders (``queries``) and attribution of series to workloads (``attribution``) are pure;
``prometheus`` talks HTTP. Implements :class:`gpu_rightsizer.ports.UsageSource`. Never imports
kopf or the Kubernetes client, and never writes anything anywhere.
"""
