"""An HTTP proxy in front of a real Prometheus that injects faults, switchable at runtime.

A test tool between two real components: the operator talks to the proxy as if it were
Prometheus, and the proxy forwards to the real server unless told to fail in one of these ways
(:meth:`FaultProxy.set`):

- ``pass``: forward every request and its answer unchanged;
- ``closed``: nothing listens on the port any more (connections are refused), as when
  Prometheus is stopped; the port is bound again when another mode is set;
- ``delay``: hold each request ``delay_seconds`` before forwarding it (beyond the client's
  timeout, the client gives up first); every other forwarding mode takes ``delay_seconds``
  too, e.g. to widen a sweep for a test that acts during it;
- ``status``: answer ``status_code`` with a Prometheus-style error body, forwarding nothing;
- ``malformed``: forward, then answer valid JSON whose samples' values are not numbers;
- ``truncated``: forward, then answer only the first half of the body (a complete HTTP answer,
  with a Content-Length that matches, holding half a JSON document);
- ``drop``: forward, then remove from the answer every sample whose ``pod`` (or
  ``exported_pod``) label matches ``drop_pods``, as when some workloads' series are missing.

It counts the requests it received and those in flight, so a test can act while a query is
being answered (e.g. kill the client mid-sweep). Standard library only.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import re
import socketserver
import threading
import time
import urllib.parse
from typing import Any

MODES = ("pass", "closed", "delay", "status", "malformed", "truncated", "drop")


@dataclasses.dataclass(frozen=True)
class Fault:
    mode: str = "pass"
    delay_seconds: float = 0.0
    status_code: int = 503
    drop_pods: str = ""
    """A regular expression matched against the whole pod name (``drop`` mode)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}: expected one of {MODES}")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with proxy.lock:
            proxy.received += 1
            proxy.in_flight += 1
            fault = proxy.fault
        try:
            self._answer(proxy, fault, body)
        finally:
            with proxy.lock:
                proxy.in_flight -= 1

    def _answer(self, proxy: FaultProxy, fault: Fault, body: bytes) -> None:
        if fault.mode == "status":
            error = {
                "status": "error",
                "errorType": "unavailable",
                "error": f"injected HTTP {fault.status_code}",
            }
            self._send(fault.status_code, json.dumps(error).encode(), "application/json")
            return
        if fault.delay_seconds > 0:  # any forwarding mode may be slowed too
            time.sleep(fault.delay_seconds)
        try:
            status, content_type, answer = proxy.forward(
                self.command, self.path, self.headers, body
            )
        except OSError as exc:
            self._send(502, f"proxy: upstream failed: {exc}".encode(), "text/plain")
            return
        if fault.mode == "truncated":
            answer = answer[: len(answer) // 2]
        elif fault.mode == "malformed":
            answer = _rewrite(answer, _garble)
        elif fault.mode == "drop":
            pattern = re.compile(fault.drop_pods)
            answer = _rewrite(answer, lambda rows: _drop(rows, pattern))
        self._send(status, answer, content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (its timeout): nothing to answer
            self.close_connection = True


def _rewrite(answer: bytes, change: Any) -> bytes:
    """Apply ``change`` to the ``data.result`` list of a JSON answer; other answers unchanged."""
    try:
        decoded = json.loads(answer)
    except ValueError:
        return answer
    data = decoded.get("data") if isinstance(decoded, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        return answer
    data["result"] = change(data["result"])
    return json.dumps(decoded).encode()


def _garble(rows: list[Any]) -> list[Any]:
    """Every sample's value replaced by text that is not ``[time, "number"]``."""
    out = [{**row, "value": "not-a-sample"} for row in rows if isinstance(row, dict)]
    return out or [{"metric": {"namespace": "x", "pod": "x"}, "value": "not-a-sample"}]


def _drop(rows: list[Any], pattern: re.Pattern[str]) -> list[Any]:
    def pod(row: Any) -> str:
        metric = row.get("metric") if isinstance(row, dict) else None
        if not isinstance(metric, dict):
            return ""
        return str(metric.get("pod") or metric.get("exported_pod") or "")

    return [row for row in rows if not pattern.fullmatch(pod(row))]


class FaultProxy:
    """The proxy: ``start()``, ``url``, ``set(...)``, ``stop()``."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError(f"upstream {upstream!r}: expected http://host:port")
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port
        self.upstream_prefix = parsed.path.rstrip("/")
        self.port = port
        self.lock = threading.Lock()
        self.fault = Fault()
        self.received = 0
        self.in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.proxy = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def set(self, mode: str, **options: Any) -> None:
        """Switch to ``mode`` (see the module docstring) at once, for the next requests."""
        fault = Fault(mode=mode, **options)
        with self.lock:
            self.fault = fault
        if mode == "closed":
            self._close()
        else:
            self.start()

    def stop(self) -> None:
        self._close()

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        """The upstream's answer to the request: (status, content type, body)."""
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            forwarded = {
                k: v
                for k, v in headers.items()
                if k.lower() in ("content-type", "accept", "authorization")
            }
            connection.request(method, self.upstream_prefix + path, body or None, forwarded)
            response = connection.getresponse()
            return (
                response.status,
                response.getheader("Content-Type") or "application/json",
                response.read(),
            )
        finally:
            connection.close()
