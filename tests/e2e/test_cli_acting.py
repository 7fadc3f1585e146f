"""``gpu-rightsizer plan`` and ``approve`` as a person runs them, against the real API server.

The GPUWorkload's status is written here (as the operator would have written it): the commands
only read it, so no operator needs to run. What is asserted is what a person sees (the diff, the
one-line errors) and what lands in the cluster (the approval annotation, the untouched target).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = REPO_ROOT / ".venv" / "bin" / "gpu-rightsizer"
CRD_FILE = REPO_ROOT / "crds" / "gpuworkloads.gpu-rightsizer.dev.yaml"
CRD_NAME = "gpuworkloads.gpu-rightsizer.dev"
APPROVE = "gpu-rightsizer.dev/approve"
REC_ID = "5e1f0c2a9b"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: no kubelet runs these pods


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> None:
    found = cluster.kubectl("get", "crd", CRD_NAME, "-o", "json", check=False)
    if found.returncode == 0 and json.loads(found.stdout)["metadata"].get("deletionTimestamp"):
        cluster.kubectl("wait", "--for=delete", f"crd/{CRD_NAME}", "--timeout=120s", check=False)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.wait_established(CRD_NAME)


def deployment(name: str) -> dict[str, Any]:
    limits = {"nvidia.com/mig-3g.40gb": "1"}
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
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                    "containers": [
                        {
                            "name": "server",
                            "image": PAUSE_IMAGE,
                            "resources": {"requests": limits, "limits": limits},
                        }
                    ],
                },
            },
        },
    }


def gpuworkload(name: str, apply: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "gpu-rightsizer.dev/v1alpha1",
        "kind": "GPUWorkload",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "mode": "Apply",
            "apply": apply or {"approval": "Manual"},
        },
    }


STATUS: dict[str, Any] = {
    "current": {
        "gpuModel": "A100-80GB",
        "migProfile": "3g.40gb",
        "gpusPerReplica": 1,
        "replicas": 1,
        "hourlyCost": 2.1,
    },
    "recommendation": {
        "gpuModel": "A100-80GB",
        "migProfile": "1g.10gb",
        "gpusPerReplica": 1,
        "replicas": 1,
        "hourlyCost": 0.6,
        "id": REC_ID,
        "memoryNeedBytes": 6_000_000_000,
        "memoryAvailableBytes": 10_737_418_240,
        "confidence": 0.9,
        "availability": "InCluster",
        "reasons": ["p99 memory 5.6 GiB fits a 1g.10gb slice with 20 % headroom"],
    },
}


def set_status(cluster: Cluster, namespace: str, name: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch",
        "gpuworkload",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli_on_status(
    cluster: Cluster, namespace: str, name: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``cli`` run while the GPUWorkload shows ``STATUS``.

    An operator running on the same cluster (another test's) may replace the status written
    here; then it is written again and the command rerun, so the command is judged on the
    status it was meant to read.
    """
    for _ in range(5):
        set_status(cluster, namespace, name, STATUS)
        proc = cli(cluster, *args)
        status = cluster.kubectl_json("get", "gpuworkload", name, "-n", namespace)["status"]
        if (status.get("recommendation") or {}).get("id") == REC_ID:
            return proc
    raise AssertionError(f"{namespace}/{name}: the status written here kept being replaced")


def annotations_of(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    body = cluster.kubectl_json("get", "gpuworkload", name, "-n", namespace)
    return dict(body["metadata"].get("annotations") or {})


def test_plan_then_approve_writes_the_annotation_and_leaves_the_target(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    cluster.apply(deployment("embedder"), gpuworkload("embedder"), namespace=namespace)
    before = cluster.kubectl_json("get", "deployment", "embedder", "-n", namespace)

    plan = cli_on_status(cluster, namespace, "embedder", "plan", "-n", namespace, "embedder")
    assert plan.returncode == 0, plan.stderr
    assert f"Deployment {namespace}/embedder" in plan.stdout
    removed = [line for line in plan.stdout.splitlines() if line.startswith("-")]
    added = [line for line in plan.stdout.splitlines() if line.startswith("+")]
    assert any("nvidia.com/mig-3g.40gb" in line for line in removed), plan.stdout
    assert any("nvidia.com/mig-1g.10gb" in line for line in added), plan.stdout

    patch = cli_on_status(
        cluster, namespace, "embedder", "plan", "-n", namespace, "embedder", "-o", "yaml"
    )
    assert patch.returncode == 0, patch.stderr
    assert "nvidia.com/mig-1g.10gb" in patch.stdout

    dry = cli_on_status(
        cluster, namespace, "embedder", "approve", "-n", namespace, "embedder", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert APPROVE not in annotations_of(cluster, namespace, "embedder")

    wrong = cli_on_status(
        cluster, namespace, "embedder", "approve", "-n", namespace, "embedder", "--id", "0000000000"
    )
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: ") and len(wrong.stderr.strip().splitlines()) == 1
    assert REC_ID in wrong.stderr
    assert APPROVE not in annotations_of(cluster, namespace, "embedder")

    approved = cli_on_status(
        cluster, namespace, "embedder", "approve", "-n", namespace, "embedder", "--id", REC_ID
    )
    assert approved.returncode == 0, approved.stderr
    assert "nvidia.com/mig-1g.10gb" in approved.stdout  # the plan is shown first
    assert f"approved (id {REC_ID})" in approved.stdout
    assert annotations_of(cluster, namespace, "embedder")[APPROVE] == REC_ID

    # Approving changes only the GPUWorkload: the operator is the one that applies.
    after = cluster.kubectl_json("get", "deployment", "embedder", "-n", namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]


def test_refusals_are_one_line_errors_and_write_nothing(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    cluster.apply(
        deployment("auto"),
        gpuworkload("auto", {"approval": "Automatic"}),
        deployment("fresh"),
        gpuworkload("fresh"),
        namespace=namespace,
    )
    automatic = cli_on_status(cluster, namespace, "auto", "approve", "-n", namespace, "auto")
    assert automatic.returncode == 1
    assert "Automatic" in automatic.stderr and "Traceback" not in automatic.stderr
    assert APPROVE not in annotations_of(cluster, namespace, "auto")

    for command in ("plan", "approve"):
        none = cli(cluster, command, "-n", namespace, "fresh")
        assert none.returncode == 1, none.stdout
        assert none.stderr.startswith("error: ") and len(none.stderr.strip().splitlines()) == 1
        assert "no recommendation" in none.stderr
    assert APPROVE not in annotations_of(cluster, namespace, "fresh")

    missing = cli(cluster, "plan", "-n", namespace, "nope")
    assert missing.returncode == 1
    assert '"nope" not found' in missing.stderr and "Traceback" not in missing.stderr
