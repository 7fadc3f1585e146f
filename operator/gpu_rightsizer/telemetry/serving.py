"""Serve a registry's exposition over HTTP for Prometheus to scrape, at ``/metrics``.

prometheus_client's own server runs in a daemon thread. It answers ``/metrics`` (and, being
prometheus_client's, any other path alike) and honours ``Accept-Encoding: gzip``. It listens on
``--metrics-bind-address`` (``0.0.0.0`` by default; an IPv6 address such as ``::`` works too).
Liveness is kopf's job (``--liveness``), not this server's.
"""

from __future__ import annotations

import dataclasses
import threading
import wsgiref.simple_server

import prometheus_client


@dataclasses.dataclass
class MetricsServer:
    """A running metrics server; ``shutdown()`` stops it and frees the port."""

    server: wsgiref.simple_server.WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return int(self.server.server_port)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_metrics_server(
    port: int,
    addr: str = "0.0.0.0",
    *,
    registry: prometheus_client.CollectorRegistry,
) -> MetricsServer:
    """Start serving ``registry`` on ``addr:port`` (port 0 picks a free one) in the background.

    The registry is required: the operator's instruments live in their own registry
    (``Instruments.registry``), not in prometheus_client's global one.
    """
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server=server, thread=thread)
