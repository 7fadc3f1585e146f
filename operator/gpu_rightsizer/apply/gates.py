"""What must hold before a change starts: GitOps ownership, where the pod template lives,
PodDisruptionBudgets, the window.

Pure checks over plain API dicts; each answers None (go) or a sentence saying why not.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from gpu_rightsizer.manifests import kinds
from gpu_rightsizer.models import crd

ARGO_INSTANCE_LABEL = "argocd.argoproj.io/instance"
ARGO_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
FLUX_PREFIXES = ("kustomize.toolkit.fluxcd.io/", "helm.toolkit.fluxcd.io/")
_WEEKDAYS = tuple(crd.Weekday)


def gitops_owner(target: Mapping[str, Any]) -> str | None:
    """Who syncs the target from Git (Argo CD, Flux), by their labels and annotations."""
    meta = target.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if ARGO_INSTANCE_LABEL in labels:
        return f"Argo CD (label {ARGO_INSTANCE_LABEL}={labels[ARGO_INSTANCE_LABEL]})"
    if ARGO_TRACKING_ANNOTATION in annotations:
        return f"Argo CD (annotation {ARGO_TRACKING_ANNOTATION})"
    for key in sorted(labels):
        if key.startswith(FLUX_PREFIXES):
            return f"Flux (label {key}={labels[key]})"
    return None


def template_elsewhere(kind: str, target: Mapping[str, Any]) -> str | None:
    """An Argo Rollout whose pod template is another object's (``spec.workloadRef``): patching
    the Rollout cannot change it, and gpu-rightsizer does not patch the Deployment behind it."""
    if kind != kinds.ROLLOUT.kind:
        return None
    deployment = kinds.workload_ref(target)
    if deployment is None:
        return None
    namespace = (target.get("metadata") or {}).get("namespace")
    return (
        f"its pod template is Deployment {namespace}/{deployment}'s (spec.workloadRef): "
        "gpu-rightsizer does not patch the Deployment a Rollout references; apply "
        "status.plan.patch to that Deployment (its spec.template) instead"
    )


def rolled_out_by_its_controller(kind: str, target: Mapping[str, Any]) -> str | None:
    """A KServe InferenceService: KServe turns its predictor into a Deployment and rolls that
    out; gpu-rightsizer publishes the patch of the InferenceService but does not apply it."""
    if kind != kinds.INFERENCESERVICE.kind:
        return None
    meta = target.get("metadata") or {}
    return (
        f"KServe rolls out InferenceService {meta.get('namespace')}/{meta.get('name')}'s "
        "changes, and gpu-rightsizer does not apply to InferenceServices: apply "
        "status.plan (a patch of spec.predictor, never of the Deployment KServe generates) "
        "with kubectl patch --type merge"
    )


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty selector selects everything (policy/v1)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def disruption_blocked(
    target: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]
) -> str | None:
    """A PodDisruptionBudget over the target's pods that allows no disruption now."""
    meta = target.get("metadata") or {}
    namespace = meta.get("namespace")
    labels = (((target.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels"
    ) or {}
    for pdb in budgets:
        pmeta = pdb.get("metadata") or {}
        if pmeta.get("namespace") != namespace:
            continue
        selector = (pdb.get("spec") or {}).get("selector")
        if selector is None or not _selects(selector, labels):
            continue
        allowed = int((pdb.get("status") or {}).get("disruptionsAllowed") or 0)
        if allowed < 1:
            return (
                f"PodDisruptionBudget {namespace}/{pmeta.get('name')} allows no disruption now "
                f"({allowed} allowed): the rollout would take pods down"
            )
    return None


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def window_open(window: crd.ApplyWindow | None, now: datetime.datetime) -> bool:
    """Whether ``now`` (UTC) is inside the window; no window: always."""
    if window is None:
        return True
    now = now.astimezone(datetime.UTC)
    start, end, minute = _minutes(window.start), _minutes(window.end), now.hour * 60 + now.minute
    if start < end:
        inside, opened = start <= minute < end, now
    else:  # spans midnight: opened today at start, or yesterday at start
        inside = minute >= start or minute < end
        opened = now if minute >= start else now - datetime.timedelta(days=1)
    if not inside:
        return False
    return window.days is None or _WEEKDAYS[opened.weekday()] in window.days


def describe_window(window: crd.ApplyWindow) -> str:
    days = ",".join(str(d) for d in window.days) if window.days else "every day"
    return f"{window.start}-{window.end} UTC, {days}"
