"""Change targets in Apply mode: one JSON patch per step, as field manager ``gpu-rightsizer``.

Each change (and each rollback) is one RFC 6902 JSON patch built by
:func:`gpu_rightsizer.apply.patches.json_patch`: it touches only the fields the change is
about, and its ``test`` operations make the API server refuse it (422, nothing changed) when
those fields no longer hold what was recorded, so it never overwrites someone else's edit and
never applies twice. ``may_patch`` asks the API server (a SelfSubjectAccessReview) whether the
operator's identity may patch a kind in a namespace, so a missing permission becomes a clear
condition rather than a failed write; answers are cached for a minute.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import kubernetes.client

from gpu_rightsizer.kube import clients, errors
from gpu_rightsizer.manifests import kinds

FIELD_MANAGER = "gpu-rightsizer"
JSON_PATCH = "application/json-patch+json"
RESOURCES = {k.kind: k for k in kinds.ALL}
ACCESS_CACHE_SECONDS = 60.0


class KubeTargetWriter:
    """``ports.TargetWriter`` over apps/v1 Deployments and StatefulSets, and Argo Rollouts."""

    def __init__(self, api_client: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._auth = kubernetes.client.AuthorizationV1Api(api_client)
        self._clock = clock
        self._lock = threading.Lock()
        self._access: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.calls = 0

    def patch(
        self, kind: str, namespace: str, name: str, operations: Sequence[Mapping[str, Any]]
    ) -> None:
        """Send the JSON patch to the target; raises ``errors.WriteError``."""
        rollout = kinds.ROLLOUT
        patchers: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.patch_namespaced_deployment,
            "StatefulSet": self._apps.patch_namespaced_stateful_set,
            "Rollout": functools.partial(
                self._custom.patch_namespaced_custom_object,
                rollout.group,
                rollout.version,
                plural=rollout.plural,
            ),
        }
        if kind not in patchers:
            raise errors.WriteError(f"cannot patch a {kind}: only {', '.join(kinds.NAMES)}")
        self.calls += 1
        try:
            response: Any = patchers[kind](
                name=name,
                namespace=namespace,
                body=[dict(op) for op in operations],
                field_manager=FIELD_MANAGER,
                _content_type=JSON_PATCH,
                _preload_content=False,
            )
            response.read()  # drain: an unread body would be taken as the next answer
            response.release_conn()
        except errors.REQUEST_ERRORS as exc:
            raise errors.WriteError(
                f"patching {kind} {namespace}/{name}: {errors.describe(exc)}",
                errors.status_of(exc),
            ) from exc

    def may_patch(self, kind: str, namespace: str) -> str | None:
        """None when patch on the kind is allowed in the namespace; else a sentence why not."""
        key = (kind, namespace)
        now = self._clock()
        with self._lock:
            cached = self._access.get(key)
        if cached is not None and now - cached[0] < ACCESS_CACHE_SECONDS:
            return cached[1]
        answer = self._review(kind, namespace)
        with self._lock:
            self._access[key] = (now, answer)
        return answer

    def _review(self, kind: str, namespace: str) -> str | None:
        spec = RESOURCES.get(kind)
        if spec is None:
            return f"gpu-rightsizer cannot change a {kind}"
        resource = spec.plural
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "group": spec.group,
                    "resource": resource,
                    "verb": "patch",
                    "namespace": namespace,
                }
            },
        }
        self.calls += 1
        try:
            found = clients.read_json(
                self._auth.create_self_subject_access_review(
                    cast(Any, body), _preload_content=False
                )
            )
        except errors.REQUEST_ERRORS as exc:
            return f"cannot check the permission to patch {resource} in {namespace}: " + (
                errors.describe(exc)
            )
        except ValueError as exc:
            return f"cannot check the permission to patch {resource} in {namespace}: {exc}"
        status = found.get("status") or {}
        if status.get("allowed"):
            return None
        why = status.get("reason") or status.get("evaluationError") or "denied"
        return (
            f"the operator may not patch {resource} in namespace {namespace} ({why}): install "
            "the chart with apply.enabled=true to let it act"
        )
