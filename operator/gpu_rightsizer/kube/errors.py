"""Errors of the Kubernetes adapters, with the API server's own words in their messages."""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client.exceptions
import urllib3.exceptions

from gpu_rightsizer.models import workloads

# What a failed request may raise: the API answered with an error status, or could not be
# reached (refused, timed out, TLS).
REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    kubernetes.client.exceptions.ApiException,
    urllib3.exceptions.HTTPError,
)


class KubeError(RuntimeError):
    """A request to the API server failed; the message says which one and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterReadError(KubeError):
    """A list call of a sweep failed, so no target could be read."""


class WriteError(KubeError):
    """A status patch or an Event could not be written."""


class WorkloadGone(KubeError):  # noqa: N818 (the name callers catch)
    """The GPUWorkload no longer exists (deleted between the read and the write).

    Callers can ignore it: there is nothing left to write to.
    """

    def __init__(self, ref: workloads.WorkloadRef) -> None:
        super().__init__(f"GPUWorkload {ref} no longer exists", status=404)
        self.ref = ref


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed request, or None when no answer came."""
    status = getattr(exc, "status", None)
    # The client reports TLS failures as status 0.
    return status if isinstance(status, int) and status > 0 else None


def api_status(exc: BaseException) -> dict[str, Any]:
    """The ``Status`` object the API server sent with an error, or {} when there is none."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return {}
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) and decoded.get("kind") == "Status" else {}


def describe(exc: BaseException) -> str:
    """One line: the status code, the reason and the API server's message."""
    status = status_of(exc)
    if status is None:
        reason = getattr(exc, "reason", None)
        return f"cannot reach the API server: {reason or exc}"
    found = api_status(exc)
    reason = found.get("reason") or getattr(exc, "reason", None) or ""
    message = found.get("message") or ""
    if not message:
        body = getattr(exc, "body", None)
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        message = str(body or "").strip()
    return " ".join(part for part in (str(status), f"{reason}:" if reason else "", message) if part)
