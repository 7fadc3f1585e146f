"""The seams between the reconciler and the outside world, as typing Protocols.

Adapters implement these (``metrics.prometheus`` the usage source, ``kube`` the cluster reader
and writers); tests pass in-memory fakes. The data types here are plain frozen dataclasses over
the models: no I/O, no framework imports.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from gpu_rightsizer.manifests import targets
from gpu_rightsizer.models import gpus, inventory, profiles, workloads


@dataclasses.dataclass(frozen=True)
class TargetPods:
    """How to recognise the pods of a workload's target in metric series.

    A Deployment's pods are named ``<name>-<pod-template-hash>-<5 chars>``; its ReplicaSets
    (current and earlier, still listed in the window) give the hashes. A StatefulSet's pods are
    ``<name>-<ordinal>``. Attribution is by parsing names, never by prefix alone, so a
    Deployment ``chat`` never captures the pods of ``chat-v2``.
    """

    workload: workloads.WorkloadRef
    namespace: str
    kind: str
    name: str
    pod_template_hashes: frozenset[str] = frozenset()
    """Known ReplicaSet hashes; empty means any well-formed hash."""


@dataclasses.dataclass(frozen=True)
class UsageReport:
    """The result of one batched sweep over the metrics backend."""

    profiles: Mapping[workloads.WorkloadRef, profiles.UsageProfile]
    """Workloads with data; a workload missing here had no series in the window."""
    queries: int
    """Queries issued (must not depend on the number of workloads)."""
    error: str | None = None
    """Set when the backend could not be read; then ``profiles`` is empty."""


class UsageSource(Protocol):
    """Reads what workloads used (Prometheus; a file in the offline CLI)."""

    def collect(
        self,
        targets: Sequence[TargetPods],
        *,
        window: str,
        at: datetime.datetime | None = None,
    ) -> UsageReport: ...


@dataclasses.dataclass(frozen=True)
class TargetState:
    """What the cluster says about one GPUWorkload's target."""

    found: bool
    gpus: targets.TargetGPUs | None = None
    """GPU limits, pinned product and replicas; None when not found or unreadable."""
    error: str | None = None
    """Why the target's GPUs could not be read (names the field)."""
    error_reason: str | None = None
    """The condition reason for ``error`` (e.g. ``ContainerNotFound``); default TargetHasNoGPUs."""
    node_products: tuple[str, ...] = ()
    """``nvidia.com/gpu.product`` of the nodes its pods run on."""
    pods: TargetPods | None = None
    body: Mapping[str, Any] | None = None
    """The target as listed (spec, metadata and status)."""
    pod_objects: tuple[Mapping[str, Any], ...] = ()
    """The target's live pods as listed (for rollout watching and realized savings)."""
    replicaset_objects: tuple[Mapping[str, Any], ...] = ()
    """A Deployment's ReplicaSets (metadata only)."""


class ClusterReader(Protocol):
    """Reads targets, their pods and nodes: a fixed number of API calls per sweep."""

    def targets(
        self,
        refs: Sequence[tuple[workloads.WorkloadRef, str, str, str | None]],
        *,
        within: Collection[str] | None = None,
    ) -> Mapping[workloads.WorkloadRef, TargetState]:
        """For each (workload, target kind, target name, container) the target's state.

        ``within``: the refs' namespaces, for a small sweep that need not read the whole
        cluster (a reader may still read it all); None reads every watched namespace.
        """
        ...

    def inventory(self, catalog: gpus.Catalog) -> inventory.Inventory | None:
        """The cluster's GPU inventory as of the last whole read (None: unknown)."""
        ...

    def disruption_budgets(self) -> Sequence[Mapping[str, Any]] | None:
        """Every PodDisruptionBudget of the watched namespaces (None: could not be read)."""
        ...


class TargetWriter(Protocol):
    """Changes targets (Apply mode) as field manager ``gpu-rightsizer``."""

    def patch(
        self, kind: str, namespace: str, name: str, operations: Sequence[Mapping[str, Any]]
    ) -> None:
        """Send one RFC 6902 JSON patch (atomic: all of it, or nothing when a test fails)."""
        ...

    def may_patch(self, kind: str, namespace: str) -> str | None:
        """None when the operator may patch ``kind`` in ``namespace``; else why it may not."""
        ...


class StatusWriter(Protocol):
    def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None: ...


class EventRecorder(Protocol):
    def emit(
        self,
        ref: workloads.WorkloadRef,
        *,
        type_: str,
        reason: str,
        message: str,
        key: str | None = None,
    ) -> None:
        """Post an Event; with ``key``, at most one Event per (workload, key) ever."""
        ...
