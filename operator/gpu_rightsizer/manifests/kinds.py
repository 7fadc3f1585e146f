"""The kinds a GPUWorkload may target, and what differs between them.

Every kind here but KServe's has a pod template at ``spec.template`` (an Argo Rollout may
instead point at a Deployment's with ``spec.workloadRef``) and ``spec.replicas``; they differ in
their API group, in how their pods are owned (through ReplicaSets or directly) and in the label
that names the pod template a pod was made from. An InferenceService's pod spec is its
``spec.predictor`` (:func:`predictor_view` shows it as a Deployment's). Pure data: no I/O.
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

INFERENCESERVICE = TargetKind(
    "InferenceService", "serving.kserve.io/v1beta1", "inferenceservices", "pod-template-hash", True
)
"""A KServe InferenceService: its predictor is a pod spec (``spec.predictor``) whose model
container is ``spec.predictor.model``; KServe runs it as a Deployment of its own (Standard
mode), whose pods carry :data:`KSERVE_LABEL`. Never patched there: the InferenceService is."""

KSERVE_LABEL = "serving.kserve.io/inferenceservice"
KSERVE_COMPONENT_LABEL = "component"
PREDICTOR = "predictor"
MODEL_CONTAINER = "kserve-container"
"""The name KServe gives the model container in the predictor's pods."""
_PREDICTOR_ONLY = (
    "model",
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "workerSpec",
    "canaryTrafficPercent",
    "containerConcurrency",
    "timeout",
    "batcher",
    "logger",
    "autoScaling",
    "deploymentStrategy",
)

ALL = (DEPLOYMENT, STATEFULSET, ROLLOUT, INFERENCESERVICE)
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


def predictor_view(isvc: Mapping[str, Any], replicas: int | None = None) -> dict[str, Any]:
    """An InferenceService's predictor shaped as a Deployment: the predictor's pod fields as
    its pod template, ``spec.predictor.model`` as the container :data:`MODEL_CONTAINER` ahead
    of ``spec.predictor.containers``, and ``replicas`` (else ``minReplicas``, else 1)."""
    spec = isvc.get("spec")
    predictor = spec.get(PREDICTOR) if isinstance(spec, Mapping) else None
    if not isinstance(predictor, Mapping):
        predictor = {}
    pod = {k: v for k, v in predictor.items() if k not in _PREDICTOR_ONLY}
    containers = [c for c in predictor.get("containers") or [] if isinstance(c, Mapping)]
    model = predictor.get("model")
    if isinstance(model, Mapping):
        containers = [{**model, "name": MODEL_CONTAINER}, *containers]
    pod["containers"] = containers
    if replicas is None:
        minimum = predictor.get("minReplicas")
        replicas = minimum if isinstance(minimum, int) and minimum >= 0 else 1
    return {
        "apiVersion": INFERENCESERVICE.api_version,
        "kind": INFERENCESERVICE.kind,
        "metadata": isvc.get("metadata") or {},
        "spec": {"replicas": replicas, "template": {"spec": pod}},
    }


def is_predictor_of(deployment: Mapping[str, Any], isvc_name: str) -> bool:
    """Whether a Deployment is the one KServe runs an InferenceService's predictor with: its
    labels name the InferenceService and the predictor component."""
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    return bool(
        labels.get(KSERVE_LABEL) == isvc_name
        and labels.get(KSERVE_COMPONENT_LABEL, PREDICTOR) == PREDICTOR
    )


def field_names(kind: str, text: str) -> str:
    """A message about the Deployment-shaped view of a target in the target's own field names
    (an InferenceService's ``spec.predictor`` and ``spec.predictor.model``)."""
    if kind != INFERENCESERVICE.kind:
        return text
    return text.replace(
        f"spec.template.spec.containers[{MODEL_CONTAINER}]", "spec.predictor.model"
    ).replace("spec.template.spec", "spec.predictor")
