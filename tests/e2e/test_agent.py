"""The node agent end to end: fake NVML on a kwok node, real pods, real Prometheus, the operator.

A kwok node offers an H100 time-sliced four ways (``nvidia.com/gpu: 4``, one physical GPU). The
agent runs as ``gpu-rightsizer agent`` for that node with a fake NVML (the GPU and its
processes, from a YAML file it re-reads) and a fake ``/proc`` tree whose cgroup files put each
process in a real pod's cgroup (the pods' UIDs from the API server). Two Deployments, ``chat``
and ``embed``, each run one pod on the node, both on the one GPU: 20 GiB and 6 GiB of a GPU
that has 26.5 GiB in use. A real Prometheus scrapes the agent alone (no dcgm-exporter, no
simulator), and the operator, sweeping a short window, must size each workload on its own
memory, not on the whole GPU's.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from hack import staging
from hack.devcluster import nodes as kwok_nodes
from prometheus_client import parser

from gpu_rightsizer.fleetsim import deployments
from gpu_rightsizer.models import crd
from tests.e2e.test_operator import GPU_RIGHTSIZER
from tests.support import cluster as cluster_support

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

GIB = 1 << 30
NODE = f"agent-h100-{uuid.uuid4().hex[:5]}"
GPU_UUID = "GPU-5e3c1a2b-7d8e-4f90-a1b2-c3d4e5f60718"
USED = {"chat": 20 * GIB, "embed": 6 * GIB}
DEVICE_USED = sum(USED.values()) + GIB // 2  # plus a host process's context
HOST_PID = 900
PIDS = {"chat": 4100, "embed": 4200}


def nvml_description(processes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "driverVersion": "580.95.05",
        "gpus": [
            {
                "uuid": GPU_UUID,
                "name": "NVIDIA H100 80GB HBM3",
                "memory": {"total": 80 * GIB, "used": DEVICE_USED, "reserved": GIB // 2},
                "utilization": {"gpu": 30, "memory": 20},
                "powerMilliwatts": 280_000,
                "energyMillijoules": 5_000_000,
                "processes": processes,
            }
        ],
    }


def deployment(ns: str, name: str) -> dict[str, Any]:
    resources = {"nvidia.com/gpu": "1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "tolerations": [deployments.KWOK_TAINT, deployments.GPU_TAINT],
                    "containers": [
                        {
                            "name": "server",
                            "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                            "resources": {"limits": resources, "requests": resources},
                        }
                    ],
                },
            },
        },
    }


def gpuworkload(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "model": {"name": f"example/{name}", "parameters": 1.0e9, "precision": "bf16"},
            "serving": {"engine": "Other"},
            "policy": {"minObservation": "30s", "minCoverage": 0.5, "latency": {"guard": "Off"}},
        },
    }


def cgroup_line(uid: str) -> str:
    """What /proc/<pid>/cgroup says for a container of pod ``uid`` (systemd, containerd)."""
    slice_uid = uid.replace("-", "_")
    return (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{slice_uid}.slice/cri-containerd-{'e' * 64}.scope\n"
    )


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except OSError:  # not listening yet, or gone
        return 0, ""


def series(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value)
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


class Process:
    """A ``gpu-rightsizer`` subcommand in the background, its output in a log file."""

    def __init__(self, log: pathlib.Path, *args: str) -> None:
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [str(GPU_RIGHTSIZER), *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


@pytest.fixture(scope="module")
def agent_env(
    cluster: cluster_support.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("agent")
    ns = f"e2e-agent-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(staging.CRD))
    cluster.wait_established("gpuworkloads.gpu-rightsizer.dev")
    cluster.add_nodes([kwok_nodes.gpu_node(NODE, "H100-80GB", 4)])
    cluster.kubectl("create", "namespace", ns)
    nvml_file = work / "nvml.yaml"
    nvml_file.write_text(yaml.safe_dump(nvml_description([])), encoding="utf-8")
    proc = work / "proc"
    proc.mkdir()
    port = staging.free_port()
    agent = Process(
        work / "agent.log",
        "agent",
        "--node-name",
        NODE,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--interval",
        "2s",
        "--metrics-port",
        str(port),
        "--metrics-bind-address",
        "127.0.0.1",
        "--proc-root",
        str(proc),
        "--fake-nvml",
        str(nvml_file),
    )
    prom_state = work / "prometheus"
    operator: Process | None = None
    try:
        url = f"http://127.0.0.1:{port}"
        cluster_support.eventually(
            lambda: get(f"{url}/healthz")[0] == 200, timeout=60, what="the agent's /healthz"
        )
        # The pods start after the agent: it must list the node's pods again to know them.
        cluster.apply(*(deployment(ns, name) for name in USED))

        def running_pods() -> dict[str, Mapping[str, Any]] | None:
            items = cluster.kubectl_json("get", "pods", "-n", ns)["items"]
            found = {
                p["metadata"]["labels"]["app"]: p
                for p in items
                if p.get("status", {}).get("phase") == "Running"
            }
            return found if len(found) == len(USED) else None

        pods = cluster_support.eventually(running_pods, timeout=120, what="chat and embed Running")
        processes = [{"pid": HOST_PID, "usedGpuMemory": GIB // 2}]
        (proc / str(HOST_PID)).mkdir()
        (proc / str(HOST_PID) / "cgroup").write_text(
            "0::/system.slice/nvidia-persistenced.service\n", encoding="utf-8"
        )
        for name, used in USED.items():
            pid = PIDS[name]
            (proc / str(pid)).mkdir()
            (proc / str(pid) / "cgroup").write_text(
                cgroup_line(pods[name]["metadata"]["uid"]), encoding="utf-8"
            )
            processes.append({"pid": pid, "usedGpuMemory": used, "smUtil": 15})
        nvml_file.write_text(yaml.safe_dump(nvml_description(processes)), encoding="utf-8")
        os.utime(nvml_file)
        staging.prometheus(
            "up",
            "--target",
            f"127.0.0.1:{port}",
            "--scrape-interval",
            "2s",
            state_dir=prom_state,
        )
        prometheus_url = json.loads((prom_state / "state.json").read_text())["url"]
        cluster.apply(*(gpuworkload(ns, name) for name in USED))
        operator = Process(
            work / "operator.log",
            "run",
            "--prometheus-url",
            prometheus_url,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            ns,
            "--interval",
            "5s",
            "--window",
            "1m",
            "--metrics-port",
            str(staging.free_port()),
            "--liveness",
            f"http://127.0.0.1:{staging.free_port()}/healthz",
        )
        yield {
            "ns": ns,
            "url": url,
            "pods": pods,
            "prometheus": prometheus_url,
            "cluster": cluster,
            "work": work,
        }
    finally:
        if operator is not None:
            operator.stop()
        agent.stop()
        staging.prometheus("down", state_dir=prom_state)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "node", NODE, "--wait=false", check=False)


def test_the_agent_attributes_each_process_to_its_pod(agent_env: dict[str, Any]) -> None:
    def attributed() -> list[tuple[dict[str, str], float]] | None:
        status, text = get(f"{agent_env['url']}/metrics")
        found = series(text, "gpu_rightsizer_process_memory_used_bytes")
        return found if status == 200 and len(found) == len(USED) else None

    found = cluster_support.eventually(
        attributed, timeout=60, what="per-container memory for both pods on the agent"
    )
    pods = agent_env["pods"]
    by_pod = {labels["pod"]: (labels, value) for labels, value in found}
    for name, used in USED.items():
        labels, value = by_pod[pods[name]["metadata"]["name"]]
        assert value == used
        assert labels["namespace"] == agent_env["ns"]
        assert labels["UUID"] == GPU_UUID and labels["Hostname"] == NODE
    _, text = get(f"{agent_env['url']}/metrics")
    # DCGM's own series: the whole GPU's memory, once per pod using it, as dcgm-exporter does.
    fb = series(text, "DCGM_FI_DEV_FB_USED")
    assert sorted(labels.get("pod", "") for labels, _ in fb) == sorted(
        p["metadata"]["name"] for p in pods.values()
    )
    assert {value for _, value in fb} == {DEVICE_USED / (1 << 20)}
    assert series(text, "gpu_rightsizer_gpu_pods")[0][1] == 2
    assert series(text, "gpu_rightsizer_host_processes")[0][1] == 1
    assert series(text, "gpu_rightsizer_agent_pod_lists_total")[0][1] >= 2  # listed again
    status, body = get(f"{agent_env['url']}/healthz")
    assert status == 200 and json.loads(body)["nvml"] == "ok"


def test_the_operator_sizes_each_pod_on_its_own_memory(agent_env: dict[str, Any]) -> None:
    cluster = agent_env["cluster"]
    ns = agent_env["ns"]

    def recommended(name: str) -> dict[str, Any] | None:
        body = cluster.kubectl_json("get", "gpuworkload", "-n", ns, name)
        status: dict[str, Any] = body.get("status") or {}
        return status if status.get("recommendation") else None

    for name, used in USED.items():
        status = cluster_support.eventually(
            lambda name=name: recommended(name),
            timeout=240,
            interval=2.0,
            what=f"a recommendation for {name} from the agent's series",
        )
        memory = status["usage"]["memoryUsedBytes"]
        assert memory["max"] == used, (name, memory)  # its own, not the GPU's 26.5 GiB
        assert status["usage"]["gpuModel"] == "NVIDIA H100 80GB HBM3"  # DCGM's modelName
        need = status["recommendation"]["memoryNeedBytes"]
        assert used < need < DEVICE_USED * 1.2, (name, need)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", ready


def test_a_gpu_that_fell_off_the_bus_is_reported_not_fatal(agent_env: dict[str, Any]) -> None:
    nvml_file = agent_env["work"] / "nvml.yaml"
    description = yaml.safe_load(nvml_file.read_text(encoding="utf-8"))
    description["gpus"][0]["lost"] = True
    nvml_file.write_text(yaml.safe_dump(description), encoding="utf-8")
    os.utime(nvml_file)

    def reported() -> str | None:
        _, text = get(f"{agent_env['url']}/metrics")
        errors = series(text, "gpu_rightsizer_agent_field_errors")
        return text if any(labels.get("code") == "15" for labels, _ in errors) else None

    text = cluster_support.eventually(reported, timeout=30, what="GPU_IS_LOST on /metrics")
    assert series(text, "gpu_rightsizer_agent_nvml_up")[0][1] == 1
    assert series(text, "DCGM_FI_DEV_FB_USED") == []
    status, _ = get(f"{agent_env['url']}/healthz")
    assert status == 200
    del description["gpus"][0]["lost"]
    nvml_file.write_text(yaml.safe_dump(description), encoding="utf-8")
    os.utime(nvml_file, (1e9, 1e9))
    cluster_support.eventually(
        lambda: series(get(f"{agent_env['url']}/metrics")[1], "DCGM_FI_DEV_FB_USED"),
        timeout=30,
        what="the GPU back on /metrics",
    )
