"""The agent's HTTP endpoint: ``/metrics`` (Prometheus text format 0.0.4) and ``/healthz``.

``/healthz`` answers 200 while the reading loop is alive (its last pass ended within
``stale_after_seconds``) and 503 once it is not, with a JSON body saying why and whether NVML
and the pod list answered. A node without a driver is healthy in this sense (restarting the
agent would not load a driver): it reports ``gpu_rightsizer_agent_nvml_up 0`` and the driver's
error on ``/healthz``, and keeps retrying. Anything else is 404.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclasses.dataclass(frozen=True)
class Health:
    healthy: bool
    detail: dict[str, Any]


@dataclasses.dataclass
class Server:
    """A running endpoint; ``shutdown()`` stops it and frees the port."""

    httpd: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def start(
    address: str, port: int, metrics: Callable[[], str], health: Callable[[], Health]
) -> Server:
    """Serve ``metrics()`` on ``/metrics`` and ``health()`` on ``/healthz`` in a daemon thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE, metrics().encode())
            elif path == "/healthz":
                state = health()
                body = json.dumps({"healthy": state.healthy, **state.detail}).encode()
                self._send(200 if state.healthy else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the agent's own log

    family = _V6Server if ":" in address else http.server.ThreadingHTTPServer
    httpd = family((address, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="agent-http", daemon=True)
    thread.start()
    return Server(httpd, thread)
