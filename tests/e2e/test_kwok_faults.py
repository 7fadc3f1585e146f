"""Faults the simulated cluster plays for the operator's Apply mode, end to end.

kwok runs with the fault Stages of ``hack/kwok/fault-stages.yaml`` next to its own: a pod whose
first container's image has the tag ``crashloop`` or ``oomkilled`` crash-loops (Running, not
ready, ``CrashLoopBackOff``, restarts with the kubelet's back-off; the last termination an
``Error`` exit 1 or ``OOMKilled`` exit 137), every other pod becomes Running and Ready. A
rolling update to such an image stalls with the old pods kept, as on a real cluster, and the
Deployment's ``Progressing`` condition ends ``ProgressDeadlineExceeded``.

The last test rolls a staged workload out to other GPUs (an A100 to a 3g.40gb slice of an H100)
on a control plane of its own, with its own Prometheus, and checks that ``hack/staging.py``'s
``retarget`` makes the live series follow the new pods.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest
from hack import staging
from hack.devcluster import nodes as kwok_nodes, plane

from gpu_rightsizer.fleetsim import fleets
from tests.support.cluster import Cluster, eventually

pytestmark = [pytest.mark.cluster]

FAULT_STAGES = "hack/kwok/fault-stages.yaml"
STALE_KWOK = (
    f"a pod with a faulty image became Ready: kwok runs without {FAULT_STAGES} (a cluster "
    "started before `make tools` rebuilt .cache/bin/kwok-stages.yaml? restart it: "
    "hack/cluster down && hack/cluster up)"
)


def deployment(
    name: str, image: str, *, replicas: int = 1, progress_deadline: int | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "server", "image": image}]},
        },
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"app={app}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {}
    )
    return found


def is_ready(pod: Mapping[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def crash_looping(pod: Mapping[str, Any], *, restarts: int = 1) -> bool:
    """The pod is Running with its container in CrashLoopBackOff after ``restarts`` restarts.

    Fails at once if the pod became Ready instead: kwok then runs without our Stages.
    """
    assert not is_ready(pod), STALE_KWOK
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    return bool(
        status.get("phase") == "Running"
        and containers
        and containers[0].get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
        and containers[0].get("restartCount", 0) >= restarts
    )


def running_and_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    return bool(
        status.get("phase") == "Running"
        and is_ready(pod)
        and containers
        and all(c.get("ready") and "running" in c.get("state", {}) for c in containers)
    )


def one_pod(cluster: Cluster, namespace: str, app: str) -> dict[str, Any] | None:
    found = pods(cluster, namespace, app)
    return found[0] if len(found) == 1 else None


def test_crashloop_and_oomkilled_images_crash_loop_while_others_run(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(
        deployment("crash", "registry.example/vllm:crashloop"),
        deployment("oom", "registry.example/vllm:oomkilled"),
        deployment("healthy", "registry.example/vllm:v0.11.0"),
        namespace=namespace,
    )

    def looping(app: str, restarts: int) -> dict[str, Any] | None:
        pod = one_pod(cluster, namespace, app)
        return pod if pod is not None and crash_looping(pod, restarts=restarts) else None

    # The first crash comes at once; the kubelet's back-off restarts it again after 10 s.
    crash = eventually(lambda: looping("crash", 2), timeout=90, what="crash to restart twice")
    oom = eventually(lambda: looping("oom", 2), timeout=60, what="oom to restart twice")

    def healthy_pod() -> dict[str, Any] | None:
        pod = one_pod(cluster, namespace, "healthy")
        return pod if pod is not None and running_and_ready(pod) else None

    healthy = eventually(healthy_pod, timeout=60, what="the healthy pod to be Running and Ready")
    for pod, exit_code, reason in ((crash, 1, "Error"), (oom, 137, "OOMKilled")):
        name = pod["metadata"]["name"]
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is False, name
        assert status["lastState"]["terminated"]["exitCode"] == exit_code, (name, status)
        assert status["lastState"]["terminated"]["reason"] == reason, (name, status)
        assert "back-off" in status["state"]["waiting"]["message"], (name, status)
        for kind in ("Ready", "ContainersReady"):
            assert condition(pod, kind)["status"] == "False", (name, kind)
            assert condition(pod, kind)["reason"] == "ContainersNotReady", (name, kind)
    # In the same cluster, the healthy pod is untouched: ready, never restarted.
    now = cluster.kubectl_json("get", "pod", "-n", namespace, healthy["metadata"]["name"])
    assert running_and_ready(now), now["status"]
    assert now["status"]["containerStatuses"][0]["restartCount"] == 0
    assert now["metadata"]["uid"] == healthy["metadata"]["uid"]
    # The Deployments see it the same way: no crash-looping replica is available.
    for app, available in (("crash", None), ("oom", None), ("healthy", 1)):
        body = cluster.kubectl_json("get", "deployment", "-n", namespace, app)
        assert body["status"].get("availableReplicas") == available, (app, body["status"])


def test_rolling_update_to_a_crashloop_image_keeps_the_old_pods(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(
        deployment("server", "registry.example/vllm:v1", replicas=2, progress_deadline=10),
        namespace=namespace,
    )

    def available() -> list[dict[str, Any]] | None:
        found = pods(cluster, namespace, "server")
        body = cluster.kubectl_json("get", "deployment", "-n", namespace, "server")
        done = body["status"].get("availableReplicas") == 2 and len(found) == 2
        return found if done and all(running_and_ready(p) for p in found) else None

    old = eventually(available, timeout=60, what="two available replicas of server:v1")
    old_names = {p["metadata"]["name"] for p in old}
    cluster.kubectl(
        "set",
        "image",
        "-n",
        namespace,
        "deployment/server",
        "server=registry.example/vllm:crashloop",
    )

    def stalled() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        body = cluster.kubectl_json("get", "deployment", "-n", namespace, "server")
        progressing = condition(body, "Progressing")
        if progressing.get("reason") != "ProgressDeadlineExceeded":
            return None
        new = [
            p for p in pods(cluster, namespace, "server") if p["metadata"]["name"] not in old_names
        ]
        return (body, new) if new and all(crash_looping(p) for p in new) else None

    body, new = eventually(
        stalled, timeout=120, what="ProgressDeadlineExceeded with the new pods crash-looping"
    )
    assert condition(body, "Progressing")["status"] == "False"
    # maxSurge 25 % of 2 replicas: one new pod, and with maxUnavailable 0 no old pod goes.
    assert len(new) == 1, [p["metadata"]["name"] for p in new]
    assert condition(body, "Available")["status"] == "True"
    hashes = {p["metadata"]["labels"]["pod-template-hash"] for p in new}
    sets = cluster.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=server")["items"]
    by_hash = {rs["metadata"]["labels"]["pod-template-hash"]: rs for rs in sets}
    (new_hash,) = hashes
    new_rs = by_hash.pop(new_hash)
    assert new_rs["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":crashloop")
    assert new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    (old_rs,) = by_hash.values()
    assert old_rs["spec"]["replicas"] == 2 and old_rs["status"].get("readyReplicas") == 2
    now = pods(cluster, namespace, "server")
    kept = [p for p in now if p["metadata"]["name"] in old_names]
    assert len(kept) == 2 and all(running_and_ready(p) for p in kept), [
        (p["metadata"]["name"], p["status"].get("phase")) for p in now
    ]


# ---------------------------------------------------------------------------------------------
# live series after a rollout to other GPUs


A100 = "A100-80GB"
H100 = "H100-80GB"
SLICE = "3g.40gb"
# What dcgm-exporter labels the GPUs with (NVML's product names).
DCGM_MODEL_NAMES = {A100: "NVIDIA A100-SXM4-80GB", H100: "NVIDIA H100 80GB HBM3"}
RETARGET_FLEET = """
seed: 23
workloads:
  - name: embedder
    namespace: {ns}
    parameters: 8.03e9
    precision: bf16
    gpuModel: A100-80GB
    replicas: 2
    traffic: {{shape: constant, low: 0.2, high: 0.3}}
"""


def hack_cluster(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(plane.REPO_ROOT / "hack" / "cluster"), *args],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"hack/cluster {' '.join(args)}: {proc.stdout}\n{proc.stderr}", pytrace=False)


@contextlib.contextmanager
def staged_environment(
    fleet: fleets.Fleet, nodes: list[dict[str, Any]]
) -> Iterator[tuple[staging.Kubectl, staging.Staged]]:
    """A control plane of its own with ``nodes``, ``fleet`` staged on it with a Prometheus."""
    try:
        kubectl_bin = plane.find_tools(["kubectl"])["kubectl"]
        plane.find_tools(plane.COMPONENTS)
    except plane.ToolsMissingError as err:
        pytest.fail(str(err), pytrace=False)
    work = pathlib.Path(tempfile.mkdtemp(prefix="gpu-rightsizer-retarget-"))
    state_dir = work / "cluster"
    hack_cluster("--state-dir", str(state_dir), "up", "--no-fleet")
    staged = None
    try:
        kubectl = staging.Kubectl(kubectl_bin, state_dir / "kubeconfig")
        staged = staging.stage(
            kubectl,
            fleet,
            work_dir=work,
            history_days=0.05,
            scrape_interval="2s",
            nodes=nodes,
            workloads_mode=None,
        )
        yield kubectl, staged
    finally:
        if staged is not None:
            staged.stop()
        hack_cluster("--state-dir", str(state_dir), "down")
        shutil.rmtree(work, ignore_errors=True)


def promql(url: str, query: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=30
    ) as response:
        body = json.loads(response.read())
    assert body.get("status") == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def fb_used_by_pod(url: str, namespace: str) -> dict[str, dict[str, str]]:
    """The labels of the latest DCGM_FI_DEV_FB_USED sample per pod in ``namespace``."""
    found = promql(url, f'DCGM_FI_DEV_FB_USED{{namespace="{namespace}"}}')
    return {r["metric"]["pod"]: r["metric"] for r in found}


def series_for(
    url: str, namespace: str, pods: Iterable[str], *, newer_than: float = 0.0
) -> dict[str, dict[str, str]] | None:
    """fb_used_by_pod, once its pods are exactly ``pods`` (with samples after ``newer_than``)."""
    found = fb_used_by_pod(url, namespace)
    if set(found) != set(pods):
        return None
    query = f'timestamp(DCGM_FI_DEV_FB_USED{{namespace="{namespace}"}}) > {newer_than:.3f}'
    fresh = {r["metric"]["pod"] for r in promql(url, query)}
    return found if fresh == set(pods) else None


@pytest.mark.prometheus
def test_retarget_serves_the_new_pods_series_on_their_new_gpus() -> None:
    ns = f"e2e-retarget-{uuid.uuid4().hex[:6]}"
    fleet = fleets.parse(RETARGET_FLEET.format(ns=ns), "tests/e2e/test_kwok_faults.py")
    nodes = [
        kwok_nodes.gpu_node("a100-0", A100, 8),
        kwok_nodes.gpu_node("h100-mig-0", H100, 8, mig={SLICE: 4}, mig_gpus=2),
    ]
    with staged_environment(fleet, nodes) as (kubectl, staged):
        url = staged.prometheus_url
        old = {p.name: p for p in staging.serving_pods(kubectl, ns, "embedder")}
        assert len(old) == 2 and {p.node for p in old.values()} == {"a100-0"}
        # Scraped live (not only the backfilled history, which would outlive the pods for
        # Prometheus' 5-minute lookback: only a scraped series is marked stale when it goes).
        since = time.time()
        eventually(
            lambda: series_for(url, ns, old, newer_than=since),
            timeout=60,
            what="a live scrape of the staged pods' series",
        )
        series = fb_used_by_pod(url, ns)
        assert {m["modelName"] for m in series.values()} == {DCGM_MODEL_NAMES[A100]}

        # Roll the Deployment out to one 3g.40gb slice of an H100 per pod.
        slice_resource = f"nvidia.com/mig-{SLICE}"
        product = kwok_nodes.GPU_MODELS[H100].product
        patch = [
            {
                "op": "replace",
                "path": "/spec/template/spec/nodeSelector",
                "value": {"nvidia.com/gpu.product": product},
            },
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/resources",
                "value": {"limits": {slice_resource: "1"}, "requests": {slice_resource: "1"}},
            },
        ]
        kubectl("patch", "deployment", "-n", ns, "embedder", "--type=json", "-p", json.dumps(patch))
        kubectl("rollout", "status", "deployment/embedder", "-n", ns, "--timeout=120s", timeout=150)

        def rolled_out() -> dict[str, staging.ServingPod] | None:
            found = {p.name: p for p in staging.serving_pods(kubectl, ns, "embedder")}
            return found if len(found) == 2 and not set(found) & set(old) else None

        new = eventually(rolled_out, timeout=60, what="two new pods serving, the old ones gone")
        assert {(p.node, p.product, p.mig_profile, p.gpus) for p in new.values()} == {
            ("h100-mig-0", product, SLICE, 1)
        }

        retargeted = time.time()
        placement = staging.retarget(staged, kubectl, ns, "embedder")
        assert placement is not None
        assert (placement.gpu.id, placement.mig and placement.mig.name) == (H100, SLICE)
        assert sorted(r.pod for r in placement.replicas) == sorted(new)

        # Prometheus scrapes every 2 s: the new pods' series, on the slice, replace the old.
        series = eventually(
            lambda: series_for(url, ns, new, newer_than=retargeted),
            timeout=60,
            what="live DCGM series for exactly the new pods",
        )
        for pod, labels in series.items():
            assert labels["modelName"] == DCGM_MODEL_NAMES[H100], (pod, labels)
            assert labels["GPU_I_PROFILE"] == SLICE, (pod, labels)
            assert labels["Hostname"] == "h100-mig-0", (pod, labels)
        sliced = promql(
            url,
            f'count(DCGM_FI_DEV_FB_USED{{namespace="{ns}", modelName="{DCGM_MODEL_NAMES[H100]}",'
            f' GPU_I_PROFILE="{SLICE}", pod=~"{"|".join(sorted(new))}"}})',
        )
        assert [int(float(r["value"][1])) for r in sliced] == [2], sliced
