"""Write a GPUWorkload's status and its Events.

``KubeStatusWriter`` sends a JSON merge patch (RFC 7386) to the ``status`` subresource: keys
given are set, keys given as None are removed, keys not given are left alone.

``KubeEventRecorder`` writes core/v1 Events about the GPUWorkload, the way ``kubectl describe``
finds them (involvedObject with apiVersion, kind, name, namespace and uid). Like client-go's
event correlator, it remembers the Events it created in this process: an identical
(workload, type, reason, message) bumps ``count`` and ``lastTimestamp`` of the existing Event
instead of creating another, so repeated sweeps never flood the namespace with Events.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import kubernetes.client

from gpu_rightsizer.kube import clients, errors
from gpu_rightsizer.models import crd, workloads

# What the writers raise, here too for callers that import only this module.
WorkloadGone = errors.WorkloadGone
WriteError = errors.WriteError

MERGE_PATCH = "application/merge-patch+json"
RETRIED_STATUSES = frozenset({409, 429, 500, 503, 504})
"""Conflicts and transient server trouble: retried once."""
RETRY_DELAY = 0.2
"""Seconds before the one retry (or the server's Retry-After, at most ``MAX_RETRY_DELAY``)."""
MAX_RETRY_DELAY = 5.0
EVENT_TYPES = frozenset({"Normal", "Warning"})
MAX_MESSAGE = 1024
"""Event messages are cut to this many characters (the API's note limit)."""
MAX_REASON = 128
MAX_NAME = 253
REMEMBERED_EVENTS = 4096
"""Identical Events remembered per process for aggregation (least recently used dropped)."""


def _plain(value: Any) -> Any:
    """Mappings to dicts and sequences to lists, recursively; None stays (it deletes a key)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _retry_delay(exc: BaseException) -> float:
    headers = getattr(exc, "headers", None) or {}
    try:
        after = float(headers.get("Retry-After", RETRY_DELAY))
    except (TypeError, ValueError):
        after = RETRY_DELAY
    return min(max(after, 0.0), MAX_RETRY_DELAY)


def _is_object_missing(exc: BaseException, ref: workloads.WorkloadRef) -> bool:
    """A 404 about the object itself, not about an API that is not served (CRD missing)."""
    status = errors.api_status(exc)
    return (
        status.get("reason") == "NotFound" and (status.get("details") or {}).get("name") == ref.name
    )


def _not_found(exc: BaseException, ref: workloads.WorkloadRef, doing: str) -> errors.KubeError:
    if _is_object_missing(exc, ref):
        return errors.WorkloadGone(ref)
    return errors.WriteError(
        f"{doing}: {crd.API_VERSION} {crd.PLURAL} is not served (is the CRD installed?): "
        f"{errors.describe(exc)}",
        404,
    )


class KubeStatusWriter:
    """``ports.StatusWriter`` over the ``status`` subresource of GPUWorkloads."""

    def __init__(self, api_client: Any, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._api = kubernetes.client.CustomObjectsApi(api_client)
        self._sleep = sleep

    def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None:
        """Merge ``status`` into the GPUWorkload's status; a None value removes that field.

        Raises ``errors.WorkloadGone`` when the GPUWorkload no longer exists, and
        ``errors.WriteError`` for anything else after one retry of a conflict or a transient
        server error.
        """
        body = {"status": _plain(status)}
        doing = f"patching the status of GPUWorkload {ref}"
        for attempt in (1, 2):
            try:
                response: Any = self._api.patch_namespaced_custom_object_status(
                    crd.GROUP,
                    crd.VERSION,
                    ref.namespace,
                    crd.PLURAL,
                    ref.name,
                    body,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
                response.read()  # drain: an unread body would be taken as the next answer
                response.release_conn()
                return
            except errors.REQUEST_ERRORS as exc:
                code = errors.status_of(exc)
                if code == 404:
                    raise _not_found(exc, ref, doing) from exc
                if attempt == 1 and code in RETRIED_STATUSES:
                    self._sleep(_retry_delay(exc))
                    continue
                raise errors.WriteError(f"{doing}: {errors.describe(exc)}", code) from exc


@dataclasses.dataclass
class _Recorded:
    name: str
    uid: str
    count: int


def _timestamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeEventRecorder:
    """``ports.EventRecorder`` writing core/v1 Events about GPUWorkloads.

    ``component`` and ``instance`` (default: the host name, i.e. the pod's name) go into the
    Event's ``source`` and ``reportingComponent``/``reportingInstance``.
    """

    def __init__(
        self,
        api_client: Any,
        component: str = "gpu-rightsizer",
        instance: str | None = None,
        *,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._objects = kubernetes.client.CustomObjectsApi(api_client)
        self.component = component
        self.instance = (instance or socket.gethostname())[:128]
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._recorded: collections.OrderedDict[tuple[Any, ...], _Recorded] = (
            collections.OrderedDict()
        )

    def emit(
        self,
        ref: workloads.WorkloadRef,
        *,
        type_: str,
        reason: str,
        message: str,
        uid: str | None = None,
        key: str | None = None,
    ) -> None:
        """Record an Event about the GPUWorkload ``ref``.

        ``uid`` is the GPUWorkload's uid; without it, it is looked up (once per distinct
        Event). With ``key``, the Event's name is derived from (uid, key), so posting it again
        (after an operator restart, say) finds it there and posts nothing: exactly once.
        Raises ``errors.WorkloadGone`` when the GPUWorkload no longer exists and
        ``errors.WriteError`` when the Event cannot be written; Events are best-effort, so
        callers usually log and go on.
        """
        if type_ not in EVENT_TYPES:
            raise ValueError(f"event type {type_!r}: expected Normal or Warning")
        reason = reason[:MAX_REASON]
        message = message[:MAX_MESSAGE]
        if key is not None:
            if uid is None:
                uid = self._uid(ref)
            digest = hashlib.sha256(f"{uid}/{key}".encode()).hexdigest()[:16]
            self._create(ref, uid, type_, reason, message, name=f"{ref.name[:200]}.{digest}")
            return
        remembered = (ref, type_, reason, message)
        with self._lock:
            seen = self._recorded.get(remembered)
            if seen is not None:
                self._recorded.move_to_end(remembered)
        same_object = seen is not None and (uid is None or uid == seen.uid)
        if seen is not None and same_object and self._bump(ref, seen):
            return
        if uid is None:
            uid = self._uid(ref)
        recorded = self._create(ref, uid, type_, reason, message)
        with self._lock:
            self._recorded[remembered] = recorded
            self._recorded.move_to_end(remembered)
            while len(self._recorded) > REMEMBERED_EVENTS:
                self._recorded.popitem(last=False)

    def _uid(self, ref: workloads.WorkloadRef) -> str:
        doing = f"reading GPUWorkload {ref} for its uid"
        try:
            response = self._objects.get_namespaced_custom_object(
                crd.GROUP,
                crd.VERSION,
                ref.namespace,
                crd.PLURAL,
                ref.name,
                _preload_content=False,
            )
            found = clients.read_json(response)
        except errors.REQUEST_ERRORS as exc:
            if errors.status_of(exc) == 404:
                raise _not_found(exc, ref, doing) from exc
            raise errors.WriteError(
                f"{doing}: {errors.describe(exc)}", errors.status_of(exc)
            ) from exc
        except ValueError as exc:
            raise errors.WriteError(f"{doing}: {exc}") from exc
        return str((found.get("metadata") or {}).get("uid") or "")

    def _bump(self, ref: workloads.WorkloadRef, seen: _Recorded) -> bool:
        """Count one more occurrence on the existing Event; False when that Event is gone."""
        patch = {"count": seen.count + 1, "lastTimestamp": _timestamp(self._clock())}
        try:
            response: Any = self._core.patch_namespaced_event(
                seen.name,
                ref.namespace,
                patch,
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
            response.read()  # drain: an unread body would be taken as the next answer
            response.release_conn()
        except errors.REQUEST_ERRORS as exc:
            if errors.status_of(exc) == 404:  # expired (the API server's event TTL) or deleted
                return False
            raise errors.WriteError(
                f"updating Event {ref.namespace}/{seen.name}: {errors.describe(exc)}",
                errors.status_of(exc),
            ) from exc
        with self._lock:
            seen.count += 1
        return True

    def _create(
        self,
        ref: workloads.WorkloadRef,
        uid: str,
        type_: str,
        reason: str,
        message: str,
        *,
        name: str | None = None,
    ) -> _Recorded:
        """Create the Event; with a fixed ``name``, one that exists already counts as posted."""
        now = _timestamp(self._clock())
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": crd.API_VERSION,
                "kind": crd.KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": uid,
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.component, "host": self.instance},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
        }
        for attempt in (1, 2):
            event_name = name or self._event_name(ref, unique=attempt > 1)
            body["metadata"]["name"] = event_name
            try:
                # The generated signature names the model; a plain dict validates into it.
                response: Any = self._core.create_namespaced_event(
                    ref.namespace, cast(Any, body), _preload_content=False
                )
                response.read()  # drain: an unread body would be taken as the next answer
                response.release_conn()
                return _Recorded(name=event_name, uid=uid, count=1)
            except errors.REQUEST_ERRORS as exc:
                code = errors.status_of(exc)
                if code == 404:  # the namespace is gone, and the GPUWorkload with it
                    raise errors.WorkloadGone(ref) from exc
                if code == 409 and name is not None:  # posted before (this key's one Event)
                    return _Recorded(name=event_name, uid=uid, count=1)
                if attempt == 1 and code in RETRIED_STATUSES:
                    if code != 409:  # 409: the name is taken; the retry uses a random one
                        self._sleep(_retry_delay(exc))
                    continue
                raise errors.WriteError(
                    f"creating Event {reason} for GPUWorkload {ref}: {errors.describe(exc)}", code
                ) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _event_name(ref: workloads.WorkloadRef, *, unique: bool) -> str:
        """``<object>.<suffix>``: nanoseconds in hex like client-go, or random after a clash."""
        suffix = secrets.token_hex(8) if unique else f"{time.time_ns():x}"
        return f"{ref.name[: MAX_NAME - len(suffix) - 1]}.{suffix}"
