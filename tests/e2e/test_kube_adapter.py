"""The Kubernetes adapter against the real local control plane: reading targets, their
ReplicaSets, pods and GPU nodes; writing status and Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpu_rightsizer import catalogs, ports
from gpu_rightsizer.kube import clients, errors, reading, writing
from gpu_rightsizer.models import workloads
from tests.support.cluster import Cluster, eventually

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "gpuworkloads.gpu-rightsizer.dev.yaml"
CRD_NAME = "gpuworkloads.gpu-rightsizer.dev"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: kwok only pretends to run it
PRODUCT_LABEL = "nvidia.com/gpu.product"


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> Path:
    """The GPUWorkload CRD, installed if missing and left installed (other tests may use it)."""
    found = cluster.kubectl("get", "crd", CRD_NAME, "-o", "json", check=False)
    if found.returncode == 0 and json.loads(found.stdout)["metadata"].get("deletionTimestamp"):
        # Another test's fixture is removing it: let that finish before installing it again.
        cluster.kubectl("wait", "--for=delete", f"crd/{CRD_NAME}", "--timeout=120s", check=False)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.wait_established(CRD_NAME)
    return CRD_FILE


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Any]:
    client = clients.api_client(cluster.kubeconfig)
    yield client
    client.close()


def pod_template(app: str, resources: dict[str, str] | None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "server", "image": PAUSE_IMAGE}
    if resources:
        container["resources"] = {"requests": resources, "limits": resources}
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "sidecar", "image": PAUSE_IMAGE}, container]},
    }


def deployment(name: str, resources: dict[str, str] | None, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, resources),
        },
    }


def statefulset(name: str, resources: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, resources),
        },
    }


def gpu_workload(name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "gpu-rightsizer.dev/v1alpha1",
        "kind": "GPUWorkload",
        "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}},
    }


def scheduled_pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"app={app}"
    )["items"]
    return [p for p in pods if p["spec"].get("nodeName") and p["status"].get("phase") == "Running"]


def rolled_out(cluster: Cluster, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    """Wait for the rollout and for its pods to run on nodes; those pods."""
    cluster.kubectl("rollout", "status", f"{kind}/{name}", "-n", namespace, "--timeout=120s")
    return eventually(
        lambda: scheduled_pods(cluster, namespace, name),
        timeout=60,
        what=f"the pods of {kind} {name} to run",
    )


def replicaset_hashes(cluster: Cluster, namespace: str, app: str) -> set[str]:
    items = cluster.kubectl_json("get", "replicasets", "-n", namespace, "-l", f"app={app}")["items"]
    return {rs["metadata"]["labels"]["pod-template-hash"] for rs in items}


def node_product(cluster: Cluster, node: str) -> str:
    labels = cluster.kubectl_json("get", "node", node)["metadata"]["labels"]
    return str(labels[PRODUCT_LABEL])


def ref(namespace: str, name: str) -> workloads.WorkloadRef:
    return workloads.WorkloadRef(namespace=namespace, name=name)


# --- reading ------------------------------------------------------------------------------------


def test_mig_deployment_is_read_with_its_node_product_and_every_replicaset_hash(
    cluster: Cluster, namespace: str, api: Any
) -> None:
    cluster.apply(deployment("chat", {"nvidia.com/mig-3g.40gb": "1"}), namespace=namespace)
    (pod,) = rolled_out(cluster, namespace, "deployment", "chat")
    first_hash = pod["metadata"]["labels"]["pod-template-hash"]
    reader = reading.KubeClusterReader(api, namespaces=[namespace])
    me = ref(namespace, "chat-gpuw")

    state = reader.targets([(me, "Deployment", "chat", None)])[me]

    assert state.found and state.error is None
    assert state.gpus is not None
    assert state.gpus.container == "server"
    assert state.gpus.mig_profile == "3g.40gb"
    assert state.gpus.gpus_per_replica == 1
    assert state.gpus.replicas == 1
    assert state.node_products == (node_product(cluster, pod["spec"]["nodeName"]),)
    assert state.pods is not None
    assert state.pods.workload == me
    assert (state.pods.namespace, state.pods.kind, state.pods.name) == (
        namespace,
        "Deployment",
        "chat",
    )
    assert state.pods.pod_template_hashes == {first_hash}
    assert state.body is not None and state.body["metadata"]["name"] == "chat"
    assert reader.last_call_count == 5

    # A rollout: the old ReplicaSet stays listed (scaled to 0), so both hashes count.
    changed = deployment("chat", {"nvidia.com/mig-3g.40gb": "1"})
    changed["spec"]["template"]["metadata"]["annotations"] = {"revision": "2"}
    cluster.apply(changed, namespace=namespace)
    (new_pod,) = eventually(
        lambda: [
            p
            for p in rolled_out(cluster, namespace, "deployment", "chat")
            if p["metadata"]["labels"]["pod-template-hash"] != first_hash
        ],
        timeout=60,
        what="the new revision's pod",
    )
    new_hash = new_pod["metadata"]["labels"]["pod-template-hash"]
    listed = replicaset_hashes(cluster, namespace, "chat")
    assert listed == {first_hash, new_hash}

    state = reader.targets([(me, "Deployment", "chat", "server")])[me]
    assert state.pods is not None
    assert state.pods.pod_template_hashes == {first_hash, new_hash}
    assert new_pod["spec"]["nodeName"]
    assert node_product(cluster, new_pod["spec"]["nodeName"]) in state.node_products


def test_missing_target_and_unreadable_gpus(cluster: Cluster, namespace: str, api: Any) -> None:
    cluster.apply(deployment("web", None, replicas=0), namespace=namespace)
    reader = reading.KubeClusterReader(api, namespaces=[namespace])
    missing, plain, wrong_container = ref(namespace, "a"), ref(namespace, "b"), ref(namespace, "c")

    states = reader.targets(
        [
            (missing, "Deployment", "nothing-here", None),
            (plain, "Deployment", "web", None),
            (wrong_container, "Deployment", "web", "trainer"),
        ]
    )

    assert states[missing] == ports.TargetState(found=False)
    assert states[plain].found and states[plain].gpus is None
    no_gpus = str(states[plain].error)
    assert "spec.template.spec.containers" in no_gpus
    assert "nvidia.com/gpu" in no_gpus
    no_container = str(states[wrong_container].error)
    assert "no container named 'trainer'" in no_container
    assert "sidecar, server" in no_container
    # A target outside the watched namespaces is not seen.
    other = reading.KubeClusterReader(api, namespaces=["default"])
    assert not other.targets([(plain, "Deployment", "web", None)])[plain].found


def test_statefulset_target(cluster: Cluster, namespace: str, api: Any) -> None:
    cluster.apply(statefulset("train", {"nvidia.com/gpu": "2"}), namespace=namespace)
    (pod,) = rolled_out(cluster, namespace, "statefulset", "train")
    reader = reading.KubeClusterReader(api, namespaces=[namespace])
    me = ref(namespace, "train")

    state = reader.targets([(me, "StatefulSet", "train", None)])[me]

    assert state.found and state.error is None
    assert state.gpus is not None
    assert (state.gpus.gpus_per_replica, state.gpus.mig_profile, state.gpus.replicas) == (
        2,
        None,
        1,
    )
    assert state.node_products == (node_product(cluster, pod["spec"]["nodeName"]),)
    assert state.pods is not None
    assert state.pods.kind == "StatefulSet"
    assert state.pods.pod_template_hashes == frozenset()
    # The same name as a Deployment is a different target.
    assert not reader.targets([(me, "Deployment", "train", None)])[me].found


def test_api_calls_per_sweep_do_not_grow_with_workloads(
    cluster: Cluster, namespace: str, api: Any
) -> None:
    names = [f"model-{i}" for i in range(20)]
    cluster.apply(
        *(deployment(n, {"nvidia.com/gpu": "1"}, replicas=0) for n in names), namespace=namespace
    )
    refs = [(ref(namespace, n), "Deployment", n, None) for n in names]

    def all_have_replicasets() -> bool:
        items = cluster.kubectl_json("get", "replicasets", "-n", namespace)["items"]
        return len(items) == len(names)

    eventually(all_have_replicasets, timeout=60, what="a ReplicaSet for each Deployment")

    for reader, calls in (
        (reading.KubeClusterReader(api), 5),  # cluster-wide
        (reading.KubeClusterReader(api, namespaces=[namespace]), 5),
        (reading.KubeClusterReader(api, namespaces=[namespace, "default"]), 9),
    ):
        one = reader.targets(refs[:1])
        assert reader.last_call_count == calls
        twenty = reader.targets(refs)
        assert reader.last_call_count == calls
        assert len(one) == 1 and len(twenty) == 20
        assert all(s.found and s.gpus is not None for s in twenty.values())
        assert all(
            s.pods is not None and len(s.pods.pod_template_hashes) == 1 for s in twenty.values()
        )

    # Small pages: more requests (one per page), the same answer.
    paged = reading.KubeClusterReader(api, namespaces=[namespace], page_size=3)
    whole = reading.KubeClusterReader(api, namespaces=[namespace])

    def essentials(reader: reading.KubeClusterReader) -> dict[Any, Any]:
        # The bodies' status may move between two reads (the controllers are running).
        return {
            r: (s.found, s.gpus, s.error, s.node_products, s.pods)
            for r, s in reader.targets(refs).items()
        }

    assert essentials(paged) == essentials(whole)
    assert paged.last_call_count > 5

    nothing = reading.KubeClusterReader(api)
    assert nothing.targets([]) == {}
    assert nothing.last_call_count == 0


def test_a_read_within_a_few_namespaces_lists_only_them_and_keeps_the_whole_inventory(
    cluster: Cluster, namespace: str, api: Any
) -> None:
    """A prompt sweep's read: the same answer for its targets as a whole read, from lists of
    just their namespaces, and the capacity check's inventory still the whole cluster's."""
    cluster.apply(deployment("chat", {"nvidia.com/gpu": "1"}), namespace=namespace)
    (pod,) = rolled_out(cluster, namespace, "deployment", "chat")
    refs = [(ref(namespace, "chat-gpuw"), "Deployment", "chat", None)]
    catalog = catalogs.default_catalog()
    reader = reading.KubeClusterReader(api)  # cluster-wide

    def essentials(states: Any) -> dict[Any, Any]:
        return {r: (s.found, s.gpus, s.error, s.node_products, s.pods) for r, s in states.items()}

    # Nothing read whole yet: a read within namespaces reads the whole cluster (5 lists).
    first = reader.targets(refs, within={namespace, "default"})
    assert reader.last_call_count == 5
    whole_stock = reader.inventory(catalog)
    assert whole_stock is not None and whole_stock.nodes
    # Then: 4 lists per namespace and the Nodes' metadata.
    narrow = reader.targets(refs, within={namespace, "default"})
    assert reader.last_call_count == 9
    assert essentials(narrow) == essentials(first)
    (state,) = narrow.values()
    assert state.node_products == (node_product(cluster, pod["spec"]["nodeName"]),)
    assert reader.inventory(catalog) == whole_stock
    # Objects are kept without the managedFields the API server sends (nothing reads them).
    listed = cluster.kubectl_json(
        "get", "deployment", "chat", "-n", namespace, "--show-managed-fields"
    )
    assert listed["metadata"]["managedFields"]
    assert state.body is not None and "managedFields" not in state.body["metadata"]
    assert all("managedFields" not in p["metadata"] for p in state.pod_objects)
    # Within more namespaces than NARROW_MAX_NAMESPACES, cluster-wide lists are fewer calls.
    many = {namespace, *(f"other-{i}" for i in range(reading.NARROW_MAX_NAMESPACES))}
    assert essentials(reader.targets(refs, within=many)) == essentials(first)
    assert reader.last_call_count == 5
    # A reader limited to watched namespaces reads none beyond them.
    watched = reading.KubeClusterReader(api, namespaces=[namespace])
    watched.targets(refs)
    assert essentials(watched.targets(refs, within={namespace, "default"})) == essentials(first)
    assert watched.last_call_count == 5


def test_a_forbidden_list_is_a_clear_error(cluster: Cluster, namespace: str) -> None:
    """Acting as a ServiceAccount without RBAC: the error names the list and the API's reason."""
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    client = clients.api_client(cluster.kubeconfig, token=token)
    reader = reading.KubeClusterReader(client, namespaces=[namespace])
    with pytest.raises(errors.ClusterReadError) as denied:
        reader.targets([(ref(namespace, "x"), "Deployment", "x", None)])
    assert denied.value.status == 403
    assert f"listing deployments in namespace {namespace}: 403 Forbidden:" in str(denied.value)
    assert f"system:serviceaccount:{namespace}:nobody" in str(denied.value)
    assert reader.last_call_count == 1
    client.close()


# --- writing ------------------------------------------------------------------------------------

RECOMMENDATION = {
    "gpuModel": "L4",
    "gpusPerReplica": 1,
    "replicas": 1,
    "confidence": 0.5,
    "hourlyCost": 0.8,
    "memoryAvailableBytes": 24_000_000_000,
    "memoryNeedBytes": 20_000_000_000,
    "reasons": ["fits in 20 GB with 20 % headroom"],
}


def test_patch_status_writes_and_removes_fields(
    cluster: Cluster, namespace: str, api: Any, crd: Path
) -> None:
    cluster.apply(gpu_workload("chat", "chat"), namespace=namespace)
    writer = writing.KubeStatusWriter(api)
    me = ref(namespace, "chat")

    writer.patch_status(
        me,
        {"observedGeneration": 1, "recommendation": RECOMMENDATION, "summary": {"current": "H100"}},
    )
    status = cluster.kubectl_json("get", "gpuworkload", "chat", "-n", namespace)["status"]
    assert status["observedGeneration"] == 1
    assert status["recommendation"]["gpuModel"] == "L4"
    assert status["summary"]["current"] == "H100"

    writer.patch_status(me, {"recommendation": None, "summary": {"recommended": "none"}})
    status = cluster.kubectl_json("get", "gpuworkload", "chat", "-n", namespace)["status"]
    assert "recommendation" not in status
    assert status["observedGeneration"] == 1  # keys not given stay
    assert status["summary"]["current"] == "H100"
    assert status["summary"]["recommended"] == "none"

    with pytest.raises(errors.WorkloadGone):
        writer.patch_status(ref(namespace, "deleted"), {"observedGeneration": 1})
    with pytest.raises(errors.WriteError) as invalid:
        writer.patch_status(me, {"observedGeneration": -1})
    assert invalid.value.status == 422
    assert "status.observedGeneration" in str(invalid.value)


def test_emit_creates_one_event_and_counts_repeats(
    cluster: Cluster, namespace: str, api: Any, crd: Path
) -> None:
    cluster.apply(gpu_workload("chat", "chat"), namespace=namespace)
    uid = cluster.kubectl_json("get", "gpuworkload", "chat", "-n", namespace)["metadata"]["uid"]
    recorder = writing.KubeEventRecorder(api, instance="operator-0")
    me = ref(namespace, "chat")

    def events() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = cluster.kubectl_json(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.kind=GPUWorkload,involvedObject.name=chat",
        )["items"]
        return sorted(found, key=lambda e: e["reason"])

    recorder.emit(me, type_="Normal", reason="Recommended", message="L4 saves $1,200/month")
    (event,) = events()
    assert event["type"] == "Normal"
    assert event["message"] == "L4 saves $1,200/month"
    assert event["count"] == 1
    assert event["involvedObject"] == {
        "apiVersion": "gpu-rightsizer.dev/v1alpha1",
        "kind": "GPUWorkload",
        "name": "chat",
        "namespace": namespace,
        "uid": uid,
    }
    assert event["source"] == {"component": "gpu-rightsizer", "host": "operator-0"}
    assert event["reportingComponent"] == "gpu-rightsizer"
    assert event["reportingInstance"] == "operator-0"
    assert event["metadata"]["name"].startswith("chat.")
    assert event["firstTimestamp"] and event["lastTimestamp"]

    for _ in range(3):
        recorder.emit(me, type_="Normal", reason="Recommended", message="L4 saves $1,200/month")
    (again,) = events()
    assert again["metadata"]["name"] == event["metadata"]["name"]
    assert again["count"] == 4

    recorder.emit(
        me, type_="Warning", reason="TargetNotFound", message="no Deployment chat", uid=uid
    )
    assert [(e["reason"], e["count"]) for e in events()] == [
        ("Recommended", 4),
        ("TargetNotFound", 1),
    ]
    described = cluster.kubectl("describe", "gpuworkload", "chat", "-n", namespace).stdout
    assert "(x4 over" in described and "TargetNotFound" in described

    # The Event expired or was deleted: the next identical one is created afresh.
    cluster.kubectl("delete", "event", event["metadata"]["name"], "-n", namespace)
    recorder.emit(me, type_="Normal", reason="Recommended", message="L4 saves $1,200/month")
    assert [(e["reason"], e["count"]) for e in events()] == [
        ("Recommended", 1),
        ("TargetNotFound", 1),
    ]

    with pytest.raises(errors.WorkloadGone):
        recorder.emit(ref(namespace, "deleted"), type_="Normal", reason="X", message="y")
    with pytest.raises(ValueError, match="Normal or Warning"):
        recorder.emit(me, type_="Info", reason="X", message="y")
