"""Fixtures for the local Prometheus and the fleet simulator."""
