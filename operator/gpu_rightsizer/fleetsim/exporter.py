"""The live endpoint: the fleet's current samples on ``/metrics`` for Prometheus to scrape.

One endpoint serves every simulated dcgm-exporter and vLLM server at once, in the Prometheus
text format (0.0.4), without timestamps (Prometheus stamps each scrape). Every series carries
its own ``job`` and ``instance`` labels, identical to the backfilled history's, so scrape it
with ``honor_labels: true`` and the past and present of a series are one series.

The layout may change while it serves: :meth:`Exporter.set_pods` swaps in real pod names (pods
that kube-controller-manager created for the simulated Deployments), :meth:`Exporter.set_workload`
replaces a workload (for instance after a right-sizing was applied). Counters carry on.
"""

from __future__ import annotations

import http.server
import io
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from gpu_rightsizer.fleetsim import fleets, layouts, openmetrics, series

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition(by_family: dict[str, list[series.Series]]) -> str:
    """The Prometheus text format for the first value of each series (NaN: none)."""
    out = io.StringIO()
    for family in series.FAMILIES:
        members = [m for m in by_family.get(family.name, []) if np.isfinite(m.values[:1]).all()]
        if not members:
            continue
        name = family.sample_name
        out.write(f"# HELP {name} {family.help}\n# TYPE {name} {family.kind}\n")
        for member in members:
            value = openmetrics.format_values(member.decimals, member.values[:1])[0]
            labels = openmetrics.label_text(member.labels)
            out.write(f"{member.sample_name}{{{labels}}} {value}\n")
    return out.getvalue()


class Exporter:
    """A ``/metrics`` endpoint in a background thread, serving a :class:`series.Simulator`."""

    def __init__(
        self,
        simulator: series.Simulator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.simulator = simulator
        self._clock = clock
        self._address = (host, port)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    @property
    def host(self) -> str:
        return str(self._listening().server_address[0])

    @property
    def port(self) -> int:
        return int(self._listening().server_address[1])

    @property
    def target(self) -> str:
        """``host:port``, as a Prometheus static or file_sd target."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def start(self) -> Exporter:
        """Listen (port 0: a free one) and serve in a daemon thread; OSError if it cannot."""
        if self._server is None:
            server = http.server.ThreadingHTTPServer(self._address, self._handler_class())
            server.daemon_threads = True
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, name="fleetsim-exporter", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server.server_close()
            self._server = None
            self._thread = None

    def _listening(self) -> http.server.ThreadingHTTPServer:
        if self._server is None:
            raise RuntimeError("the exporter is not started")
        return self._server

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- changing what is served ------------------------------------------------------------

    def set_pods(
        self,
        namespace: str,
        name: str,
        pods: Sequence[str],
        nodes: Sequence[str] | None = None,
    ) -> layouts.Placement:
        """Serve the workload's series under these pod names (one replica per pod)."""
        with self._lock:
            return self.simulator.set_pods(namespace, name, pods, nodes)

    def set_workload(
        self,
        workload: fleets.Workload,
        pods: Sequence[str] | None = None,
        nodes: Sequence[str] | None = None,
    ) -> layouts.Placement:
        """Add or replace a workload (its GPU model, partition, replicas…)."""
        with self._lock:
            return self.simulator.set_workload(workload, pods, nodes)

    def remove_workload(self, namespace: str, name: str) -> None:
        with self._lock:
            self.simulator.remove_workload(namespace, name)

    # --- serving ----------------------------------------------------------------------------

    def render(self, now: float | None = None) -> str:
        """The exposition at ``now`` (default: the clock)."""
        instant = self._clock() if now is None else now
        with self._lock:
            by_family = self.simulator.series(np.array([instant], dtype=np.float64))
        return exposition(by_family)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self._reply(404, "text/plain; charset=utf-8", b"try /metrics\n")
                    return
                body = exporter.render().encode("utf-8")
                exporter.scrapes += 1
                self._reply(200, CONTENT_TYPE, body)

            def _reply(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: a scrape every few seconds is not news."""

        return Handler
