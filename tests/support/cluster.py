"""Fixtures for the local control plane (hack/cluster)."""
