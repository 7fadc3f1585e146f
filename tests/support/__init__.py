"""Test support: pytest plugins for the real local control plane and Prometheus (from hack/)."""
