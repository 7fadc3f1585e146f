"""gpu-rightsizer: find GPU waste in a Kubernetes cluster and remove it.

This top-level module carries the version only. Importing it has no side effects and pulls in
neither kopf nor the Kubernetes client, so the pure core can be used (and tested) on its own.
"""

__version__ = "0.1.0"
