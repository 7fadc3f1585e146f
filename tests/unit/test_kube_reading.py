"""The pure part of the cluster reader: ownership, hashes and node products from plain dicts."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import kubernetes.client.exceptions
import pytest

from gpu_rightsizer.kube import errors, reading
from gpu_rightsizer.models import workloads

NS = "ml"
REF = workloads.WorkloadRef(namespace=NS, name="chat-gpuw")


def owner(kind: str, name: str, uid: str, *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
    }


def meta(name: str, uid: str, *owners: dict[str, Any], **labels: str) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "namespace": NS, "uid": uid}
    if owners:
        found["ownerReferences"] = list(owners)
    if labels:
        found["labels"] = labels
    return found


def workload(
    kind: str, name: str, uid: str, limits: dict[str, str] | None = None
) -> dict[str, Any]:
    resources = {"limits": limits} if limits else {}
    return {
        "metadata": meta(name, uid),
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {"containers": [{"name": "server", "image": "x", "resources": resources}]}
            },
        },
    }


def replicaset(
    name: str, uid: str, deployment: str, deployment_uid: str, hash_: str
) -> dict[str, Any]:
    return {
        "metadata": meta(
            name,
            uid,
            owner("Deployment", deployment, deployment_uid),
            **{"pod-template-hash": hash_},
        )
    }


def pod(name: str, owner_kind: str, owner_uid: str, node: str | None) -> dict[str, Any]:
    spec = {"nodeName": node} if node else {}
    return {"metadata": meta(name, f"uid-{name}", owner(owner_kind, "x", owner_uid)), "spec": spec}


def node(name: str, product: str | None) -> dict[str, Any]:
    labels = {"nvidia.com/gpu.product": product} if product else {}
    return {"metadata": {"name": name, "labels": labels}}


H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
NODES = (node("h100", H100), node("a100", A100), node("cpu", None))


def test_deployment_through_its_replicasets_to_pods_and_nodes() -> None:
    snapshot = reading.Snapshot(
        deployments=[workload("Deployment", "chat", "d1", {"nvidia.com/mig-3g.40gb": "1"})],
        replicasets=[
            replicaset("chat-aaa", "rs1", "chat", "d1", "aaa"),
            replicaset("chat-bbb", "rs2", "chat", "d1", "bbb"),  # an earlier revision
        ],
        pods=[
            pod("chat-aaa-1", "ReplicaSet", "rs1", "h100"),
            pod("chat-bbb-1", "ReplicaSet", "rs2", "a100"),
            pod("chat-aaa-2", "ReplicaSet", "rs1", "h100"),
            pod("chat-aaa-3", "ReplicaSet", "rs1", None),  # pending: no node yet
        ],
        nodes=NODES,
    )
    state = reading.resolve(snapshot, [(REF, "Deployment", "chat", None)])[REF]
    assert state.found and state.error is None
    assert state.gpus is not None
    assert state.gpus.mig_profile == "3g.40gb"
    assert state.gpus.replicas == 2
    assert state.node_products == (A100, H100)
    assert state.pods is not None
    assert state.pods.workload == REF
    assert (state.pods.namespace, state.pods.kind, state.pods.name) == (NS, "Deployment", "chat")
    assert state.pods.pod_template_hashes == {"aaa", "bbb"}
    assert state.body is not None
    assert state.body["apiVersion"] == "apps/v1"
    assert state.body["kind"] == "Deployment"


def test_ownership_goes_by_controller_uid_never_by_name() -> None:
    """``chat`` never takes the ReplicaSets or pods of ``chat-v2``, nor of an earlier ``chat``."""
    snapshot = reading.Snapshot(
        deployments=[
            workload("Deployment", "chat", "d1", {"nvidia.com/gpu": "1"}),
            workload("Deployment", "chat-v2", "d2", {"nvidia.com/gpu": "1"}),
        ],
        replicasets=[
            replicaset("chat-aaa", "rs1", "chat", "d1", "aaa"),
            replicaset("chat-v2-ccc", "rs3", "chat-v2", "d2", "ccc"),
            replicaset("chat-ddd", "rs4", "chat", "d-deleted", "ddd"),  # a former chat's
            {  # owned, but not controlled, by chat
                "metadata": meta(
                    "adopted",
                    "rs5",
                    owner("Deployment", "chat", "d1", controller=False),
                    **{"pod-template-hash": "eee"},
                )
            },
        ],
        pods=[
            pod("chat-aaa-1", "ReplicaSet", "rs1", "h100"),
            pod("chat-v2-ccc-1", "ReplicaSet", "rs3", "a100"),
            pod("chat-ddd-1", "ReplicaSet", "rs4", "a100"),
        ],
        nodes=NODES,
    )
    states = reading.resolve(
        snapshot,
        [
            (REF, "Deployment", "chat", None),
            (REF.model_copy(update={"name": "v2"}), "Deployment", "chat-v2", None),
        ],
    )
    chat = states[REF]
    assert chat.pods is not None and chat.pods.pod_template_hashes == {"aaa"}
    assert chat.node_products == (H100,)
    v2 = states[workloads.WorkloadRef(namespace=NS, name="v2")]
    assert v2.pods is not None and v2.pods.pod_template_hashes == {"ccc"}
    assert v2.node_products == (A100,)


def test_statefulset_owns_its_pods_directly() -> None:
    snapshot = reading.Snapshot(
        deployments=[workload("Deployment", "train", "d1", {"nvidia.com/gpu": "1"})],
        statefulsets=[workload("StatefulSet", "train", "s1", {"nvidia.com/gpu": "8"})],
        pods=[
            pod("train-0", "StatefulSet", "s1", "h100"),
            pod("train-1", "StatefulSet", "s1", "cpu"),  # a node without the label adds nothing
        ],
        nodes=NODES,
    )
    state = reading.resolve(snapshot, [(REF, "StatefulSet", "train", "server")])[REF]
    assert state.found and state.gpus is not None
    assert state.gpus.gpus_per_replica == 8
    assert state.node_products == (H100,)
    assert state.pods is not None
    assert state.pods.kind == "StatefulSet"
    assert state.pods.pod_template_hashes == frozenset()
    assert state.body is not None and state.body["kind"] == "StatefulSet"


def test_missing_target_other_namespace_or_other_kind_is_not_found() -> None:
    elsewhere = workload("Deployment", "chat", "d1", {"nvidia.com/gpu": "1"})
    elsewhere["metadata"]["namespace"] = "other"
    snapshot = reading.Snapshot(
        deployments=[elsewhere],
        statefulsets=[workload("StatefulSet", "sts", "s1", {"nvidia.com/gpu": "1"})],
    )
    refs = [
        (REF, "Deployment", "chat", None),
        (workloads.WorkloadRef(namespace=NS, name="b"), "Deployment", "sts", None),
        (workloads.WorkloadRef(namespace=NS, name="c"), "DaemonSet", "sts", None),
    ]
    states = reading.resolve(snapshot, refs)
    assert [s.found for s in states.values()] == [False, False, False]
    assert states[REF].error is None and states[REF].pods is None
    unsupported = states[workloads.WorkloadRef(namespace=NS, name="c")].error
    assert unsupported is not None and "spec.targetRef.kind" in unsupported


def test_unreadable_gpus_are_an_error_naming_the_field_with_pods_still_known() -> None:
    snapshot = reading.Snapshot(
        deployments=[workload("Deployment", "web", "d1")],
        replicasets=[replicaset("web-aaa", "rs1", "web", "d1", "aaa")],
        pods=[pod("web-aaa-1", "ReplicaSet", "rs1", "cpu")],
        nodes=NODES,
    )
    state = reading.resolve(snapshot, [(REF, "Deployment", "web", None)])[REF]
    assert state.found and state.gpus is None
    assert state.error is not None and "spec.template.spec.containers" in state.error
    assert state.pods is not None and state.pods.pod_template_hashes == {"aaa"}
    assert state.error_reason == "TargetHasNoGPUs"
    named = reading.resolve(snapshot, [(REF, "Deployment", "web", "sidecar")])[REF]
    assert named.error is not None and "no container named 'sidecar'" in named.error
    # A missing container is its own problem, not a target without GPUs.
    assert named.error_reason == "ContainerNotFound"


def test_pod_template_hashes_skip_replicasets_without_the_label() -> None:
    unlabelled = {"metadata": meta("x", "rs9", owner("Deployment", "d", "d1"))}
    labelled = replicaset("d-abc", "rs1", "d", "d1", "abc")
    assert reading.pod_template_hashes([unlabelled, labelled]) == {"abc"}


def test_controller_uid() -> None:
    assert reading.controller_uid({"metadata": {}}) is None
    only_owner = {
        "metadata": {"ownerReferences": [owner("ReplicaSet", "r", "u1", controller=False)]}
    }
    assert reading.controller_uid(only_owner) is None
    both = {
        "metadata": {
            "ownerReferences": [
                owner("ReplicaSet", "r", "u1", controller=False),
                owner("ReplicaSet", "r2", "u2"),
            ]
        }
    }
    assert reading.controller_uid(both) == "u2"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            kubernetes.client.exceptions.ApiException(
                status=403,
                reason="Forbidden",
                body='{"kind":"Status","reason":"Forbidden","message":"pods is forbidden"}',
            ),
            "403 Forbidden: pods is forbidden",
        ),
        (
            kubernetes.client.exceptions.ApiException(
                status=404, reason="Not Found", body="404 page not found"
            ),
            "404 Not Found: 404 page not found",
        ),
        (
            kubernetes.client.exceptions.ApiException(
                status=0, reason="SSL: certificate verify failed"
            ),
            "cannot reach the API server: SSL: certificate verify failed",
        ),
    ],
)
def test_errors_describe_uses_the_api_servers_words(exc: BaseException, expected: str) -> None:
    assert errors.describe(exc) == expected


def rollout(name: str, uid: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": meta(name, uid), "spec": {"replicas": 3, **spec}}


def rollout_replicaset(name: str, uid: str, rollout_uid: str, hash_: str) -> dict[str, Any]:
    return {
        "metadata": meta(
            name,
            uid,
            {**owner("Rollout", "chat", rollout_uid), "apiVersion": "argoproj.io/v1alpha1"},
            **{"rollouts-pod-template-hash": hash_},
        )
    }


def test_a_rollout_with_its_own_template_is_read_through_its_replicasets() -> None:
    template = workload("Deployment", "x", "x", {"nvidia.com/gpu": "2"})["spec"]["template"]
    snapshot = reading.Snapshot(
        # A Deployment of the same name is another object: the Rollout's pods are its own.
        deployments=[workload("Deployment", "chat", "d1", {"nvidia.com/gpu": "8"})],
        rollouts=[rollout("chat", "r1", template=template)],
        replicasets=[
            rollout_replicaset("chat-aaa", "rs1", "r1", "aaa"),
            replicaset("chat-ddd", "rs2", "chat", "d1", "ddd"),
        ],
        pods=[
            pod("chat-aaa-1", "ReplicaSet", "rs1", "h100"),
            pod("d", "ReplicaSet", "rs2", "a100"),
        ],
        nodes=NODES,
    )
    state = reading.resolve(snapshot, [(REF, "Rollout", "chat", "server")])[REF]
    assert state.found and state.error is None
    assert state.gpus is not None
    assert (state.gpus.gpus_per_replica, state.gpus.replicas) == (2, 3)
    assert state.node_products == (H100,)
    assert state.pods is not None and state.pods.kind == "Rollout"
    assert state.pods.pod_template_hashes == {"aaa"}
    assert state.body is not None
    assert (state.body["apiVersion"], state.body["kind"]) == ("argoproj.io/v1alpha1", "Rollout")


def test_a_rollout_with_a_workload_ref_takes_the_deployments_template() -> None:
    snapshot = reading.Snapshot(
        deployments=[workload("Deployment", "chat-template", "d1", {"nvidia.com/gpu": "4"})],
        rollouts=[
            rollout(
                "chat",
                "r1",
                workloadRef={
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "chat-template",
                },
            ),
            rollout("lost", "r2", workloadRef={"kind": "Deployment", "name": "gone"}),
        ],
        replicasets=[rollout_replicaset("chat-aaa", "rs1", "r1", "aaa")],
        pods=[pod("chat-aaa-1", "ReplicaSet", "rs1", "a100")],
        nodes=NODES,
    )
    lost = workloads.WorkloadRef(namespace=NS, name="lost")
    states = reading.resolve(
        snapshot, [(REF, "Rollout", "chat", None), (lost, "Rollout", "lost", None)]
    )
    chat = states[REF]
    assert chat.found and chat.gpus is not None
    # GPUs from the Deployment's template, replicas from the Rollout (which scales the pods).
    assert (chat.gpus.gpus_per_replica, chat.gpus.replicas) == (4, 3)
    assert chat.node_products == (A100,)
    assert chat.body is not None and chat.body["spec"]["workloadRef"]["name"] == "chat-template"
    assert not states[lost].found
    assert states[lost].error is not None and f"Deployment {NS}/gone" in states[lost].error


def test_rollouts_that_cannot_be_listed_fail_only_their_workloads() -> None:
    snapshot = reading.Snapshot(
        deployments=[workload("Deployment", "chat", "d1", {"nvidia.com/gpu": "1"})],
        rollouts_error="Argo Rollouts is not installed",
    )
    other = workloads.WorkloadRef(namespace=NS, name="other")
    states = reading.resolve(
        snapshot, [(REF, "Rollout", "chat", None), (other, "Deployment", "chat", None)]
    )
    assert not states[REF].found and states[REF].error == "Argo Rollouts is not installed"
    assert states[other].found and states[other].gpus is not None


class ListingReader(reading.KubeClusterReader):
    """The reader with its list calls answered from memory (or refused with a status)."""

    def __init__(self, rollouts_status: int | None) -> None:
        self.rollouts_status = rollouts_status
        self.listed: list[str] = []
        super().__init__(kubernetes.client.ApiClient())

    def _list(self, kind: str, lister: Any, **_: Any) -> list[dict[str, Any]]:
        self.listed.append(kind)
        if kind == "rollouts" and self.rollouts_status is not None:
            raise errors.ClusterReadError("refused", self.rollouts_status)
        return []


@pytest.mark.parametrize(
    ("status", "words"),
    [(404, "Argo Rollouts is not installed"), (403, "targets.argoRollouts=true")],
)
def test_a_cluster_without_argo_rollouts_or_the_rbac_says_which(status: int, words: str) -> None:
    reader = ListingReader(status)
    state = reader.targets([(REF, "Rollout", "chat", None)])[REF]
    assert not state.found and state.error is not None and words in state.error
    assert "rollouts" in reader.listed


def test_rollouts_are_listed_only_when_a_workload_targets_one() -> None:
    reader = ListingReader(None)
    reader.targets([(REF, "Deployment", "chat", None)])
    assert "rollouts" not in reader.listed
    with pytest.raises(errors.ClusterReadError):
        ListingReader(500).targets([(REF, "Rollout", "chat", None)])
