"""Orchestration of one sweep: read the cluster and metrics through ports, run the core, write.

Takes its adapters as arguments (:mod:`gpu_rightsizer.ports`), so tests pass fakes. Never imports
kopf; never decides anything the core can decide.
"""
