"""The local control plane is a real one: schema validation, scheduling, RBAC, clean shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hack.devcluster import nodes as kwok_nodes

from tests.support.cluster import HACK_CLUSTER, Cluster, KubectlError, eventually

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CANONICAL_CRD = REPO_ROOT / "crds" / "gpuworkloads.gpu-rightsizer.dev.yaml"
CRD_NAME = "gpuworkloads.gpu-rightsizer.dev"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: kwok only pretends to run it


def gpu_workload(name: str, mode: str = "Recommend", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gpu-rightsizer.dev/v1alpha1",
        "kind": "GPUWorkload",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "mode": mode,
            **spec,
        },
    }


def deployment(name: str, resources: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": PAUSE_IMAGE,
                            "resources": {"requests": resources, "limits": resources},
                        }
                    ]
                },
            },
        },
    }


def pods_of(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"app={app}"
    )["items"]
    return items


# --- (a) the GPUWorkload CRD --------------------------------------------------------------------


@pytest.fixture
def gpuworkload_crd(cluster: Cluster) -> Any:
    """The GPUWorkload CRD installed; removed again afterwards if this fixture installed it."""
    existed = cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0
    path = CANONICAL_CRD
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    cluster.wait_established(CRD_NAME)
    yield path
    if not existed:
        cluster.kubectl("delete", "crd", CRD_NAME, "--wait=false", check=False)


def test_gpuworkload_crd_installs_and_stores_a_valid_object(
    cluster: Cluster, namespace: str, gpuworkload_crd: Path
) -> None:
    crd = cluster.kubectl_json("get", "crd", CRD_NAME)
    assert crd["spec"]["group"] == "gpu-rightsizer.dev"
    assert crd["spec"]["names"]["kind"] == "GPUWorkload"
    assert "gpuw" in crd["spec"]["names"]["shortNames"]

    # A valid object is stored, and the short name works.
    cluster.apply(gpu_workload("chat"), namespace=namespace)
    stored = cluster.kubectl_json("get", "gpuw", "chat", "-n", namespace)
    assert stored["spec"]["targetRef"]["name"] == "chat"
    assert stored["spec"]["mode"] == "Recommend"

    # What the API server refuses, naming the field, is tests/e2e/test_bad_input.py's table.
    names = {
        item["metadata"]["name"]
        for item in cluster.kubectl_json("get", "gpuworkloads", "-n", namespace)["items"]
    }
    assert names == {"chat"}


# --- (b) scheduling onto the simulated GPU fleet ------------------------------------------------


def test_fleet_nodes_advertise_gpus_and_mig_slices(cluster: Cluster) -> None:
    nodes = {
        n["metadata"]["name"]: n
        for n in cluster.kubectl_json("get", "nodes", "-l", f"{kwok_nodes.FLEET_LABEL}=true")[
            "items"
        ]
    }
    mig = nodes["gpu-h100-mig-0"]
    assert mig["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert mig["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    assert mig["status"]["allocatable"]["nvidia.com/mig-3g.40gb"] == "4"
    assert mig["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] == "14"
    products = {n["metadata"]["labels"].get("nvidia.com/gpu.product") for n in nodes.values()}
    assert {"NVIDIA-H200", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L40S", "NVIDIA-L4"} <= products
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]


def test_mig_request_is_scheduled_onto_a_mig_node_and_runs(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(deployment("mig", {"nvidia.com/mig-3g.40gb": "1"}), namespace=namespace)
    cluster.kubectl("rollout", "status", "deployment/mig", "-n", namespace, "--timeout=90s")

    def running_pod() -> dict[str, Any] | None:
        pods = pods_of(cluster, namespace, "mig")
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)

    pod = eventually(running_pod, timeout=60, what="the MIG pod to be Running")
    node = cluster.kubectl_json("get", "node", pod["spec"]["nodeName"])
    assert node["status"]["allocatable"].get("nvidia.com/mig-3g.40gb"), node["metadata"]["name"]
    assert node["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    assert node["metadata"]["annotations"][kwok_nodes.KWOK_ANNOTATION] == "fake"


def test_impossible_gpu_request_stays_pending(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("greedy", {"nvidia.com/gpu": "64"}), namespace=namespace)
    pod = eventually(
        lambda: next(iter(pods_of(cluster, namespace, "greedy")), None),
        timeout=60,
        what="the ReplicaSet to create a pod",
    )
    name = pod["metadata"]["name"]

    def failed_scheduling() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = cluster.kubectl_json(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"reason=FailedScheduling,involvedObject.name={name}",
        )["items"]
        return events

    events = eventually(failed_scheduling, timeout=60, what="a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in events[0]["message"]
    pod = cluster.kubectl_json("get", "pod", name, "-n", namespace)
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_extra_nodes_can_be_added(cluster: Cluster, namespace: str) -> None:
    """Tests and demos extend the fleet with kwok_nodes.gpu_node(...)."""
    name = f"gpu-b200-{namespace[-6:]}"
    cluster.add_nodes([kwok_nodes.gpu_node(name, "B200", 8)])
    try:
        node = cluster.kubectl_json("get", "node", name)
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-B200"
        dep = deployment("on-b200", {"nvidia.com/gpu": "8"})
        dep["spec"]["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-B200"}
        cluster.apply(dep, namespace=namespace)
        cluster.kubectl("rollout", "status", "deployment/on-b200", "-n", namespace, "--timeout=90s")
        (pod,) = pods_of(cluster, namespace, "on-b200")
        assert pod["spec"]["nodeName"] == name
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


# --- (c) RBAC is enforced -----------------------------------------------------------------------


def test_rbac_is_enforced_for_service_account_tokens(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
        namespace=namespace,
    )
    cluster.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=a=b")
    # TokenRequest API: a short-lived token signed with the cluster's service-account key.
    token = cluster.kubectl(
        "create", "token", "reader", "-n", namespace, "--duration=10m"
    ).stdout.strip()
    reader = cluster.as_token(token)

    whoami = reader.kubectl_json("auth", "whoami")
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    listed = reader.kubectl_json("get", "configmaps", "-n", namespace)
    assert "settings" in {item["metadata"]["name"] for item in listed["items"]}

    with pytest.raises(KubectlError) as secrets:
        reader.kubectl("get", "secrets", "-n", namespace)
    assert "Forbidden" in secrets.value.stderr
    assert 'cannot list resource "secrets"' in secrets.value.stderr

    with pytest.raises(KubectlError) as create:
        reader.kubectl("create", "configmap", "sneaky", "-n", namespace)
    assert 'cannot create resource "configmaps"' in create.value.stderr

    # Neither may it read configmaps in another namespace.
    with pytest.raises(KubectlError) as elsewhere:
        reader.kubectl("get", "configmaps", "-n", "kube-system")
    assert "Forbidden" in elsewhere.value.stderr


# --- (d) a second cluster comes up beside the first and goes down without leftovers ----------


def _state(state_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    return data


def _session_members(sid: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                members.add(int(entry.name))
    return members


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] != "Z"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_second_cluster_up_and_down_leaves_nothing_behind(cluster: Cluster, tmp_path: Path) -> None:
    state_dir = tmp_path / "second"

    def hack_cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(HACK_CLUSTER), "--state-dir", str(state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "GPU_RIGHTSIZER_CLUSTER_DIR"},
        )

    try:
        up = hack_cluster("up", "--no-fleet")
        assert up.returncode == 0, up.stdout + up.stderr
        state = _state(state_dir)
        pids = {name: p["pid"] for name, p in state["processes"].items()}
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert all(_alive(pid) for pid in pids.values())
        # Its own ports: nothing shared with the session's cluster.
        assert cluster.local is None or not set(state["ports"].values()) & set(
            cluster.local.ports.values()
        )

        again = hack_cluster("up", "--no-fleet")
        assert again.returncode == 0
        assert "already up" in again.stdout
        assert {n: p["pid"] for n, p in _state(state_dir)["processes"].items()} == pids

        status = hack_cluster("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" running ") == 5

        second = Cluster(
            Path(hack_cluster("kubeconfig").stdout.strip()),
            cluster.kubectl_bin,
            cluster.helm_bin,
            workdir=tmp_path,
        )
        assert second.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        everything = set().union(*(_session_members(pid) for pid in pids.values()))
        assert set(pids.values()) <= everything
    finally:
        down = hack_cluster("down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr

    assert not [pid for pid in everything if _alive(pid)]
    assert not any(_session_members(pid) for pid in pids.values())
    assert not any(_port_open(port) for port in state["ports"].values())
    status = hack_cluster("status")
    assert status.returncode == 3
    assert "cluster: down" in status.stdout
    # The session's cluster is untouched.
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_server_reports_a_real_release(cluster: Cluster) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    assert config["current-context"]
    version = cluster.kubectl_json("version")["serverVersion"]
    assert version["gitVersion"].startswith("v1."), version
    assert version["minor"].isdigit(), version
