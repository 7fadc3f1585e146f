"""Reading Kubernetes manifests: what a Deployment or StatefulSet holds in GPUs today.

Pure functions over the plain dicts the API (or a YAML file) gives: find the container with
GPUs, read its ``nvidia.com/gpu`` or ``nvidia.com/mig-<profile>`` limits, the GPU model it is
pinned to (``nvidia.com/gpu.product`` node selector or node affinity) and the replica count.
Never does I/O and never talks to the API server.
"""
