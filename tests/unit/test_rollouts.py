"""Rollout assessment and the gates before a change: what a platform engineer would check."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from gpu_rightsizer.apply import gates, rollouts
from gpu_rightsizer.models import crd

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "chat",
            "namespace": "ml",
            "generation": 3,
            "annotations": {rollouts.REVISION_ANNOTATION: "2"},
        },
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "chat"}}}},
        "status": {"observedGeneration": 3, **status},
    }


RS = [
    {
        "metadata": {
            "annotations": {rollouts.REVISION_ANNOTATION: "1"},
            "labels": {"pod-template-hash": "old"},
        }
    },
    {
        "metadata": {
            "annotations": {rollouts.REVISION_ANNOTATION: "2"},
            "labels": {"pod-template-hash": "new"},
        }
    },
]


def pod(name: str, hash_: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pod-template-hash": hash_}},
        "status": {"phase": "Running", **status},
    }


def test_a_deployment_with_every_replica_updated_and_available_is_complete() -> None:
    target = deployment(replicas=2, updatedReplicas=2, availableReplicas=2)
    r = rollouts.assess("Deployment", target, [], RS, generation=3, now=NOW)
    assert r.state == rollouts.State.COMPLETE
    assert r.revision == "new"


def test_old_replicas_left_or_an_unobserved_generation_mean_progressing() -> None:
    mid = deployment(replicas=3, updatedReplicas=2, availableReplicas=3)
    assert rollouts.assess("Deployment", mid, [], RS, generation=3, now=NOW).state == (
        rollouts.State.PROGRESSING
    )
    stale = deployment(replicas=2, updatedReplicas=2, availableReplicas=2)
    stale["status"]["observedGeneration"] = 2
    r = rollouts.assess("Deployment", stale, [], RS, generation=3, now=NOW)
    assert r.state == rollouts.State.PROGRESSING
    assert "generation 3" in r.message


def test_progress_deadline_exceeded_fails_the_rollout() -> None:
    target = deployment(
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "chat-new" has timed out progressing.',
            }
        ]
    )
    r = rollouts.assess("Deployment", target, [], RS, generation=3, now=NOW)
    assert r.state == rollouts.State.FAILED
    assert "ProgressDeadlineExceeded" in r.message


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (
            {
                "containerStatuses": [
                    {
                        "name": "server",
                        "restartCount": 4,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    }
                ]
            },
            "CrashLoopBackOff (4 restarts)",
        ),
        (
            {
                "containerStatuses": [
                    {
                        "name": "server",
                        "restartCount": 1,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"reason": "OOMKilled"}},
                    }
                ]
            },
            "OOMKilled",
        ),
        (
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes: 3 Insufficient nvidia.com/mig-3g.40gb.",
                        "lastTransitionTime": "2026-12-02T11:58:00Z",
                    }
                ],
            },
            "Insufficient nvidia.com/mig-3g.40gb",
        ),
    ],
)
def test_new_pods_that_fail_fail_the_rollout(status: dict[str, Any], words: str) -> None:
    target = deployment(replicas=3, updatedReplicas=1, availableReplicas=2)
    pods = [pod("chat-new-a", "new", **status), pod("chat-old-b", "old")]
    r = rollouts.assess("Deployment", target, pods, RS, generation=3, now=NOW)
    assert r.state == rollouts.State.FAILED
    assert words in r.message and "chat-new-a" in r.message


def test_old_pods_failing_or_a_new_pod_briefly_unschedulable_do_not_fail_it() -> None:
    target = deployment(replicas=3, updatedReplicas=1, availableReplicas=2)
    crashing_old = pod(
        "chat-old-a",
        "old",
        containerStatuses=[{"name": "s", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    )
    briefly = pod(
        "chat-new-b",
        "new",
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "lastTransitionTime": "2026-12-02T11:59:50Z",
            }
        ],
    )
    r = rollouts.assess("Deployment", target, [crashing_old, briefly], RS, generation=3, now=NOW)
    assert r.state == rollouts.State.PROGRESSING


def test_a_statefulset_is_complete_when_the_update_revision_is_current_everywhere() -> None:
    sts: dict[str, Any] = {
        "metadata": {"generation": 5},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 5,
            "updateRevision": "web-2",
            "currentRevision": "web-1",
            "updatedReplicas": 1,
            "readyReplicas": 2,
        },
    }
    assert rollouts.assess("StatefulSet", sts, [], [], generation=5, now=NOW).state == (
        rollouts.State.PROGRESSING
    )
    sts["status"].update(currentRevision="web-2", updatedReplicas=2)
    r = rollouts.assess("StatefulSet", sts, [], [], generation=5, now=NOW)
    assert (r.state, r.revision) == (rollouts.State.COMPLETE, "web-2")


# --- gates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "owner"),
    [
        ({"labels": {"argocd.argoproj.io/instance": "ml-serving"}}, "Argo CD"),
        (
            {"annotations": {"argocd.argoproj.io/tracking-id": "app:apps/Deployment:ml/chat"}},
            "Argo CD",
        ),
        ({"labels": {"kustomize.toolkit.fluxcd.io/name": "serving"}}, "Flux"),
        ({"labels": {"helm.toolkit.fluxcd.io/name": "chat"}}, "Flux"),
    ],
)
def test_gitops_owned_targets_are_recognised(meta: dict[str, Any], owner: str) -> None:
    found = gates.gitops_owner({"metadata": meta})
    assert found is not None and found.startswith(owner)


def test_a_target_without_gitops_marks_has_no_owner() -> None:
    assert gates.gitops_owner({"metadata": {"labels": {"app": "chat"}}}) is None


def pdb(allowed: int, selector: dict[str, Any], namespace: str = "ml") -> dict[str, Any]:
    return {
        "metadata": {"name": "chat-pdb", "namespace": namespace},
        "spec": {"selector": selector},
        "status": {"disruptionsAllowed": allowed},
    }


def test_a_pdb_over_the_pods_that_allows_no_disruption_blocks_the_rollout() -> None:
    target = deployment()
    blocked = gates.disruption_blocked(target, [pdb(0, {"matchLabels": {"app": "chat"}})])
    assert blocked is not None and "ml/chat-pdb" in blocked
    assert gates.disruption_blocked(target, [pdb(1, {"matchLabels": {"app": "chat"}})]) is None
    # Other pods, or another namespace: not ours.
    assert gates.disruption_blocked(target, [pdb(0, {"matchLabels": {"app": "embed"}})]) is None
    assert gates.disruption_blocked(target, [pdb(0, {}, namespace="other")]) is None
    expr = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["chat", "x"]}]}
    assert gates.disruption_blocked(target, [pdb(0, expr)]) is not None


@pytest.mark.parametrize(
    ("start", "end", "days", "at", "open_"),
    [
        ("22:00", "06:00", None, "2026-12-02T23:30:00Z", True),
        ("22:00", "06:00", None, "2026-12-03T05:59:00Z", True),
        ("22:00", "06:00", None, "2026-12-02T12:00:00Z", False),
        ("09:00", "17:00", None, "2026-12-02T17:00:00Z", False),
        # 2026-12-05 is a Saturday; 01:00 on Sunday belongs to Saturday's window.
        ("22:00", "06:00", ["Sat"], "2026-12-06T01:00:00Z", True),
        ("22:00", "06:00", ["Sat"], "2026-12-06T23:00:00Z", False),
    ],
)
def test_apply_window(start: str, end: str, days: list[str] | None, at: str, open_: bool) -> None:
    window = crd.ApplyWindow.model_validate({"start": start, "end": end, "days": days})
    now = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert gates.window_open(window, now) is open_


def test_no_window_is_always_open() -> None:
    assert gates.window_open(None, NOW)


def argo_rollout(**status: Any) -> dict[str, Any]:
    """An Argo Rollout as its controller reports it (observedGeneration is a string there)."""
    return {
        "metadata": {"name": "chat", "namespace": "ml", "generation": 3},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "chat"}}}},
        "status": {"observedGeneration": "3", "currentPodHash": "new", **status},
    }


def argo_pod(name: str, hash_: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"rollouts-pod-template-hash": hash_}},
        "status": {"phase": "Running", **status},
    }


DONE = {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}


def test_a_rollout_is_complete_when_healthy_with_the_new_replicaset_stable() -> None:
    target = argo_rollout(phase="Healthy", stableRS="new", **DONE)
    r = rollouts.assess("Rollout", target, [argo_pod("a", "new")], [], generation=3, now=NOW)
    assert r.state == rollouts.State.COMPLETE
    assert r.revision == "new"
    assert rollouts.settled("Rollout", target)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ({"phase": "Progressing", "stableRS": "old"}, "Progressing"),
        ({"phase": "Paused", "stableRS": "old"}, "Paused"),
        ({"phase": "Healthy", "stableRS": "old"}, "not yet the Rollout's stable one"),
        ({"phase": "Healthy", "stableRS": "new", "observedGeneration": "2"}, "generation 3"),
    ],
)
def test_a_rollout_still_in_a_canary_step_or_unobserved_is_progressing(
    status: dict[str, Any], words: str
) -> None:
    target = argo_rollout(**{**DONE, **status})
    r = rollouts.assess("Rollout", target, [], [], generation=3, now=NOW)
    assert r.state == rollouts.State.PROGRESSING
    assert words in r.message
    assert not rollouts.settled("Rollout", target)


def test_a_degraded_rollout_fails_with_its_message() -> None:
    target = argo_rollout(
        phase="Degraded", message="RolloutAborted: Rollout aborted update to revision 4", **DONE
    )
    r = rollouts.assess("Rollout", target, [], [], generation=3, now=NOW)
    assert r.state == rollouts.State.FAILED
    assert "RolloutAborted" in r.message


def test_a_crash_looping_pod_of_the_rollouts_new_hash_fails_it() -> None:
    crashing = argo_pod(
        "b",
        "new",
        containerStatuses=[
            {"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
        ],
    )
    target = argo_rollout(phase="Progressing", stableRS="old", replicas=3, updatedReplicas=1)
    r = rollouts.assess("Rollout", target, [crashing], [], generation=3, now=NOW)
    assert r.state == rollouts.State.FAILED
    assert "CrashLoopBackOff" in r.message


def test_a_rollout_whose_template_is_a_deployments_is_not_patched() -> None:
    ref = argo_rollout()
    ref["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tpl"}
    why = gates.template_elsewhere("Rollout", ref)
    assert why is not None and "Deployment ml/tpl" in why
    assert gates.template_elsewhere("Rollout", argo_rollout()) is None
    assert gates.template_elsewhere("Deployment", ref) is None
