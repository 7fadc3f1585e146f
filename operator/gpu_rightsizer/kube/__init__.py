"""Adapters to the Kubernetes API: read targets, their ReplicaSets, pods and nodes; write status
and Events.

The only package that talks to the API server (besides kopf itself). A sweep makes a fixed number
of list calls, whatever the number of workloads. Never imports kopf and never decides anything:
decisions belong to the core.

- ``clients``: the ``ApiClient`` (kubeconfig, in-cluster or a bearer token; request timeouts).
- ``reading``: ``KubeClusterReader``, the ``ports.ClusterReader``.
- ``writing``: ``KubeStatusWriter`` and ``KubeEventRecorder``, the ``ports.StatusWriter`` and
  ``ports.EventRecorder``.
- ``errors``: what they raise (``ClusterReadError``, ``WriteError``, ``WorkloadGone``).
"""
