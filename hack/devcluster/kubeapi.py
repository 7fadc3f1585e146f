"""Just enough of a Kubernetes API client for bringing the cluster up (stdlib only)."""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ApiError(RuntimeError):
    """The API server answered with an error status, or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True)
class KubeApi:
    """Requests to one API server as one client certificate."""

    server: str
    ca_cert: Path
    client_cert: Path
    client_key: Path
    timeout: float = 10.0

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send a request; return the decoded JSON (or text) body; raise ApiError otherwise."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        req.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context()) as resp:
                raw = resp.read().decode()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            raise ApiError(err.code, detail) from None
        except (urllib.error.URLError, OSError) as err:
            raise ApiError(0, f"{self.server} unreachable: {err}") from None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    def apply_node(self, node: dict[str, Any]) -> None:
        """Create the node, or bring an existing one's labels, taints and resources in line."""
        name = node["metadata"]["name"]
        try:
            self.request("POST", "/api/v1/nodes", node)
            return
        except ApiError as err:
            if err.status != 409:
                raise
        merge = "application/merge-patch+json"
        meta = {k: node["metadata"].get(k) for k in ("labels", "annotations")}
        self.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            {"metadata": meta, "spec": {"taints": node["spec"].get("taints")}},
            merge,
        )
        status = {k: node["status"][k] for k in ("capacity", "allocatable")}
        self.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": status}, merge)
