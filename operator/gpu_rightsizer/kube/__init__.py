"""Adapters to the Kubernetes API: read targets, their ReplicaSets, pods and nodes; write status
and Events.

The only package that talks to the API server (besides kopf itself). A sweep makes a fixed number
of list calls, whatever the number of workloads. Never imports kopf and never decides anything:
decisions belong to the core.
"""
