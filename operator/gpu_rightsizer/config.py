"""The operator's settings, read once at start-up (command-line flags or GPU_RIGHTSIZER_* env).

A plain frozen dataclass: the shell builds it, everything else receives it. No I/O here.
"""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class PrometheusConnection:
    url: str
    bearer_token_file: pathlib.Path | None = None
    """Read at every sweep, so rotated tokens are picked up."""
    username: str | None = None
    password_file: pathlib.Path | None = None
    ca_file: pathlib.Path | None = None
    verify_tls: bool = True
    timeout_seconds: float = 30.0
    retries: int = 3
    metrics_dialect: str = "dcgm"
    """The metric and label names the series have (``gpu_rightsizer.metrics.dialects``)."""
    query_concurrency: int = 4
    """Queries of a sweep sent to Prometheus at once (the query count per sweep is fixed)."""


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    prometheus: PrometheusConnection
    interval_seconds: float = 300.0
    """Time between periodic re-evaluations of every workload."""
    jitter_fraction: float = 0.1
    """Each interval is stretched or shrunk by up to this fraction, so replicas don't align."""
    debounce_seconds: float = 1.0
    """After a create/update, wait this long for more changes before sweeping."""
    debounce_max_seconds: float = 10.0
    """While changes keep coming, sweep them at the latest this long after the first."""
    write_workers: int = 16
    """Status patches and Events written at the same time (each object's writes stay in order)."""
    window: str = "7d"
    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty means the whole cluster."""
    kubeconfig: pathlib.Path | None = None
    catalog_overrides: pathlib.Path | None = None
    metrics_port: int | None = 8000
    metrics_bind_address: str = "0.0.0.0"
    """Address the operator's /metrics listens on (``0.0.0.0``: every IPv4 interface)."""
    savings_event_fraction: float = 0.1
    unhealthy_after_failures: int = 3
    """/healthz fails after this many failed sweeps in a row..."""
    unhealthy_after_intervals: float = 3.0
    """...or when no sweep succeeded for this many intervals (at least a minute)."""
