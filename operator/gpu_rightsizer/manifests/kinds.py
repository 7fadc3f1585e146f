"""The kinds a GPUWorkload may target, and what differs between them.

Every kind here has a pod template at ``spec.template`` (an Argo Rollout may instead point at a
Deployment's with ``spec.workloadRef``) and ``spec.replicas``; they differ in their API group,
in how their pods are owned (through ReplicaSets or directly) and in the label that names the
pod template a pod was made from. Pure data: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class TargetKind:
    kind: str
    api_version: str
    plural: str
    revision_label: str
    """The label the controller puts on every pod (and ReplicaSet) of one pod template."""
    through_replicasets: bool
    """Its pods are owned by ReplicaSets it owns (else by the target itself)."""

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        group, _, _version = self.api_version.rpartition("/")
        return group

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


DEPLOYMENT = TargetKind("Deployment", "apps/v1", "deployments", "pod-template-hash", True)
STATEFULSET = TargetKind(
    "StatefulSet", "apps/v1", "statefulsets", "controller-revision-hash", False
)
ROLLOUT = TargetKind(
    "Rollout", "argoproj.io/v1alpha1", "rollouts", "rollouts-pod-template-hash", True
)
"""An Argo Rollouts Rollout: its ReplicaSets and pods carry ``rollouts-pod-template-hash``."""

ALL = (DEPLOYMENT, STATEFULSET, ROLLOUT)
BY_NAME = {k.kind: k for k in ALL}
NAMES = tuple(k.kind for k in ALL)


def of(kind: str) -> TargetKind | None:
    """The kind named ``kind``, or None when gpu-rightsizer does not support it."""
    return BY_NAME.get(kind)


def workload_ref(rollout: Mapping[str, Any]) -> str | None:
    """The Deployment a Rollout's ``spec.workloadRef`` names for its pod template, if any."""
    spec = rollout.get("spec")
    if not isinstance(spec, Mapping):
        return None
    ref = spec.get("workloadRef")
    if not isinstance(ref, Mapping) or ref.get("kind", "Deployment") != "Deployment":
        return None
    name = ref.get("name")
    return str(name) if name else None
