"""Start the operator: logging, the operator's own /metrics, then kopf with our handlers."""

from __future__ import annotations

import os

import kopf
import prometheus_client

from gpu_rightsizer import config
from gpu_rightsizer.handlers import operator  # noqa: F401 (importing registers the handlers)
from gpu_rightsizer.telemetry import instruments, logs, serving


def run(
    cfg: config.OperatorConfig,
    *,
    liveness: str | None,
    peering: str | None,
    log_format: str = "json",
    log_level: str = "INFO",
) -> None:
    logs.configure(log_level, log_format)
    if cfg.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(cfg.kubeconfig)
    registry = prometheus_client.CollectorRegistry()
    meters = instruments.Instruments(registry)
    server = None
    if cfg.metrics_port:
        try:
            server = serving.start_metrics_server(
                cfg.metrics_port, cfg.metrics_bind_address, registry=registry
            )
        except OSError as exc:  # a bad address, or the port is taken: one line, no traceback
            where = f"{cfg.metrics_bind_address}:{cfg.metrics_port}"
            raise SystemExit(
                f"error: --metrics-bind-address/--metrics-port {where}: {exc}"
            ) from exc
    try:
        kopf.run(
            clusterwide=not cfg.namespaces,
            namespaces=cfg.namespaces,
            standalone=peering is None,
            peering_name=peering,
            liveness_endpoint=liveness,
            memo=kopf.Memo(config=cfg, instruments=meters),
        )
    finally:
        if server is not None:
            server.shutdown()
