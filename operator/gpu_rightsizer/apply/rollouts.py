"""How a target's rollout is going, from its status and its pods: complete, failed or not yet.

Deployment: ``status.observedGeneration`` caught up, every replica updated and available, no
old replica left, and ``Progressing`` not ``ProgressDeadlineExceeded``. StatefulSet: the update
revision is current on every replica and every replica is ready. Argo Rollout: as a Deployment
(its ``observedGeneration`` is a string), the pods labelled with ``status.currentPodHash``, and
``phase`` Healthy with that ReplicaSet stable; Degraded (an aborted rollout, a missed progress
deadline) fails it. Each fails early when a pod of the new revision crash-loops, is OOMKilled,
cannot pull its image, or stays unschedulable.

Pure: reads plain dicts as the API returns them, never calls anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Any

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"
ROLLOUTS_POD_TEMPLATE_HASH = "rollouts-pod-template-hash"
REVISION_LABELS = {
    "StatefulSet": CONTROLLER_REVISION_HASH,
    "Rollout": ROLLOUTS_POD_TEMPLATE_HASH,
}
"""The label naming a pod's template revision, by kind (else ``pod-template-hash``)."""
FAILING_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerError",
        "CreateContainerConfigError",
        "RunContainerError",
    }
)
UNSCHEDULABLE_GRACE = datetime.timedelta(seconds=60)
"""A new pod unschedulable for longer than this fails the rollout (capacity was checked)."""


class State(enum.StrEnum):
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True)
class Rollout:
    state: State
    message: str
    revision: str | None = None
    """The new ReplicaSet's pod-template-hash, or the StatefulSet's update revision."""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def revision(
    kind: str, target: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> str | None:
    """What the target's newest pods are labelled with (None: not known yet)."""
    status = target.get("status") or {}
    if kind == "StatefulSet":
        value = status.get("updateRevision")
        return str(value) if value else None
    if kind == "Rollout":
        value = status.get("currentPodHash")
        return str(value) if value else None
    wanted = (_meta(target).get("annotations") or {}).get(REVISION_ANNOTATION)
    if wanted is None:
        return None
    for rs in replicasets:
        meta = _meta(rs)
        if (meta.get("annotations") or {}).get(REVISION_ANNOTATION) == wanted:
            value = (meta.get("labels") or {}).get(POD_TEMPLATE_HASH)
            return str(value) if value else None
    return None


def pods_of_revision(
    kind: str, pods: Sequence[Mapping[str, Any]], rev: str | None
) -> list[Mapping[str, Any]]:
    if rev is None:
        return []
    label = REVISION_LABELS.get(kind, POD_TEMPLATE_HASH)
    return [p for p in pods if (_meta(p).get("labels") or {}).get(label) == rev]


def _parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_problems(pods: Sequence[Mapping[str, Any]], now: datetime.datetime) -> list[str]:
    """Why pods are failing: crash loops, OOM kills, image pulls, long unschedulable."""
    problems: list[str] = []
    for pod in pods:
        if _meta(pod).get("deletionTimestamp"):
            continue
        name = str(_meta(pod).get("name", "?"))
        status = pod.get("status") or {}
        for c in status.get("containerStatuses") or []:
            state = c.get("state") or {}
            last = c.get("lastState") or {}
            cname = c.get("name", "?")
            for term in (state.get("terminated") or {}, last.get("terminated") or {}):
                if term.get("reason") == "OOMKilled":
                    problems.append(f"pod {name}: container {cname} was OOMKilled")
                    break
            else:
                waiting = (state.get("waiting") or {}).get("reason")
                if waiting in FAILING_WAITING_REASONS:
                    restarts = int(c.get("restartCount") or 0)
                    problems.append(
                        f"pod {name}: container {cname} is in {waiting} ({restarts} restarts)"
                    )
        if status.get("phase") == "Pending":
            for cond in status.get("conditions") or []:
                if cond.get("type") != "PodScheduled" or cond.get("status") != "False":
                    continue
                if cond.get("reason") != "Unschedulable":
                    continue
                since = _parse_time(cond.get("lastTransitionTime"))
                if since is not None and now - since >= UNSCHEDULABLE_GRACE:
                    problems.append(
                        f"pod {name} is unschedulable: {cond.get('message', '')}".strip()
                    )
    return problems


def _condition(target: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for c in (target.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def _generation(value: Any) -> int:
    """``status.observedGeneration``: an integer, or (an Argo Rollout's) its decimal string."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def settled(kind: str, target: Mapping[str, Any]) -> bool:
    """No rollout of the target is in progress (whoever started it)."""
    return _complete(kind, target, None) is None


def _complete(kind: str, target: Mapping[str, Any], generation: int | None) -> str | None:
    """None when the rollout is complete; else what it waits for."""
    spec = target.get("spec") or {}
    status = target.get("status") or {}
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    gen = generation if generation is not None else int(_meta(target).get("generation") or 0)
    observed = _generation(status.get("observedGeneration"))
    if observed < gen:
        return f"the controller has not seen generation {gen} yet (observed {observed})"
    updated = int(status.get("updatedReplicas") or 0)
    if kind == "StatefulSet":
        ready = int(status.get("readyReplicas") or 0)
        if status.get("updateRevision") != status.get("currentRevision") and wanted > 0:
            return f"{updated}/{wanted} replicas updated, {ready} ready"
        if updated < wanted or ready < wanted:
            return f"{updated}/{wanted} replicas updated, {ready} ready"
        return None
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if updated < wanted or available < wanted or total > updated:
        old = max(total - updated, 0)
        return f"{updated}/{wanted} replicas updated, {available} available, {old} old"
    if kind == "Rollout":
        phase = status.get("phase")
        if phase != "Healthy":
            return f"the Rollout is {phase or 'not yet Healthy'}"
        if status.get("stableRS") != status.get("currentPodHash"):
            return "the new ReplicaSet is not yet the Rollout's stable one"
    return None


def assess(
    kind: str,
    target: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    replicasets: Sequence[Mapping[str, Any]],
    *,
    generation: int | None,
    now: datetime.datetime,
) -> Rollout:
    """Where the rollout to ``generation`` (the target's generation once patched) stands."""
    rev = revision(kind, target, replicasets)
    progressing = _condition(target, "Progressing")
    status = target.get("status") or {}
    if kind == "Rollout" and status.get("phase") == "Degraded":
        why = status.get("message") or progressing.get("message") or "no reason given"
        return Rollout(State.FAILED, f"the Rollout is Degraded: {why}", rev)
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Rollout(
            State.FAILED,
            f"ProgressDeadlineExceeded: {progressing.get('message', '')}".strip(),
            rev,
        )
    problems = pod_problems(pods_of_revision(kind, pods, rev), now)
    if problems:
        return Rollout(State.FAILED, "; ".join(problems[:3]), rev)
    waiting = _complete(kind, target, generation)
    if waiting is None:
        return Rollout(State.COMPLETE, "every replica runs the new pod template", rev)
    return Rollout(State.PROGRESSING, waiting, rev)
