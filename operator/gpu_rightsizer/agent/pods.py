"""Pod UID -> namespace, name and container names, for the pods of this node.

Read from the API server: ``GET /api/v1/pods?fieldSelector=spec.nodeName=<node>``. The kubelet's
own ``/pods`` endpoint would spare the API server, but reading it needs the ``nodes/proxy``
permission, which also allows exec into every pod on the node; a pod list filtered by node needs
only ``list pods``. The list is read at start, again whenever a GPU process belongs to a pod UID
it does not know (a pod started since), at most once per ``min_refresh_seconds``, and at least
every ``max_age_seconds`` (so deleted pods are forgotten).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import kubernetes.client

from gpu_rightsizer.kube import clients
from gpu_rightsizer.nodeusage import attribution, cgroups


def identities(items: Collection[Mapping[str, Any]]) -> dict[str, attribution.PodIdentity]:
    """The pod list's items as UID -> PodIdentity (container IDs from every kind of status)."""
    out: dict[str, attribution.PodIdentity] = {}
    for pod in items:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            continue
        status = pod.get("status") or {}
        containers: dict[str, str] = {}
        for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(key) or []:
                found = cgroups.container_id(str(entry.get("containerID") or ""))
                if found is not None:
                    containers[found] = str(entry.get("name", ""))
        out[str(uid)] = attribution.PodIdentity(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            containers=containers,
        )
    return out


class PodDirectory:
    """This node's pods, listed from the API server and refreshed on demand."""

    def __init__(
        self,
        api_client: Any,
        node: str,
        *,
        min_refresh_seconds: float = 5.0,
        max_age_seconds: float = 300.0,
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._node = node
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._pods: dict[str, attribution.PodIdentity] = {}
        self._listed_at: float | None = None
        self.lists = 0
        self.error: str | None = None

    @property
    def pods(self) -> Mapping[str, attribution.PodIdentity]:
        return self._pods

    def refresh_if_needed(self, now: float, unknown: Collection[str]) -> None:
        """List again if it is time, or if ``unknown`` UIDs appeared and the last list is
        older than ``min_refresh_seconds``. A failure keeps the last list and sets ``error``."""
        age = None if self._listed_at is None else now - self._listed_at
        if age is not None and age < self._max_age and (not unknown or age < self._min_refresh):
            return
        self._listed_at = now
        self.lists += 1
        try:
            response = self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self._node}", _preload_content=False
            )
            body = clients.read_json(response)
        except Exception as exc:  # the API server's errors, the connection's, bad JSON
            self.error = f"listing the pods of node {self._node}: {str(exc).splitlines()[0]}"
            return
        self._pods = identities(body.get("items") or [])
        self.error = None
