"""``plan`` and ``approve`` against fake API functions: what a person sees and what is written."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from click.testing import CliRunner

from gpu_rightsizer.apply import planning
from gpu_rightsizer.cli import main
from gpu_rightsizer.kube import clients, errors, objects, reading

TARGET: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "embedder", "namespace": "ml", "generation": 2},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                "containers": [
                    {
                        "name": "server",
                        "image": "tei:1.8",
                        "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}},
                    }
                ],
            }
        },
    },
}
ALLOC = {"gpuModel": "A100-80GB", "gpusPerReplica": 1, "replicas": 2}
GPUWORKLOAD: dict[str, Any] = {
    "metadata": {"name": "embedder", "namespace": "ml"},
    "spec": {"targetRef": {"kind": "Deployment", "name": "embedder"}, "mode": "Apply"},
    "status": {
        "current": {**ALLOC, "migProfile": "3g.40gb", "hourlyCost": 1.9},
        "recommendation": {
            **ALLOC,
            "migProfile": "1g.10gb",
            "hourlyCost": 0.7,
            "id": "abcdef0123",
            "memoryNeedBytes": 1,
            "memoryAvailableBytes": 2,
            "confidence": 0.9,
            "availability": "InCluster",
        },
    },
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"gw": copy.deepcopy(GPUWORKLOAD), "annotations": {}}
    monkeypatch.setattr(clients, "api_client", lambda **_: object())

    def get_gw(api: Any, ns: str, name: str) -> dict[str, Any]:
        if name != "embedder":
            raise errors.ClusterReadError("not found", 404)
        return copy.deepcopy(state["gw"])

    monkeypatch.setattr(objects, "get_gpuworkload", get_gw)
    monkeypatch.setattr(objects, "get_target", lambda *a: copy.deepcopy(TARGET))
    monkeypatch.setattr(
        objects,
        "annotate_gpuworkload",
        lambda api, ns, n, k, v: state["annotations"].update({k: v}),
    )
    monkeypatch.setattr(reading.KubeClusterReader, "snapshot", lambda self: reading.Snapshot())
    return state


def run(*args: str) -> Any:
    return CliRunner().invoke(main.cli, list(args))


def test_plan_shows_the_resource_swap_like_kubectl_diff(api: dict[str, Any]) -> None:
    result = run("plan", "-n", "ml", "embedder")
    assert result.exit_code == 0, result.output
    assert "--- Deployment ml/embedder (live)" in result.output
    assert '-            nvidia.com/mig-3g.40gb: "1"' in result.output
    assert '+            nvidia.com/mig-1g.10gb: "1"' in result.output
    patch = run("plan", "-n", "ml", "embedder", "-o", "yaml")
    assert "nvidia.com/mig-3g.40gb: null" in patch.output


def test_approve_writes_the_current_id(api: dict[str, Any]) -> None:
    result = run("approve", "-n", "ml", "embedder")
    assert result.exit_code == 0, result.output
    assert "gpuworkload.gpu-rightsizer.dev/embedder approved (id abcdef0123)" in result.output
    assert api["annotations"] == {planning.APPROVE_ANNOTATION: "abcdef0123"}


def test_approve_dry_run_and_a_wrong_id_write_nothing(api: dict[str, Any]) -> None:
    assert run("approve", "-n", "ml", "embedder", "--dry-run").exit_code == 0
    wrong = run("approve", "-n", "ml", "embedder", "--id", "0000000000")
    assert wrong.exit_code == 1
    assert "not the current recommendation (abcdef0123)" in wrong.output
    assert api["annotations"] == {}


def test_approve_refuses_outside_manual_apply_mode(api: dict[str, Any]) -> None:
    api["gw"]["spec"]["mode"] = "Recommend"
    result = run("approve", "-n", "ml", "embedder")
    assert result.exit_code == 1 and "mode is Recommend, not Apply" in result.output
    api["gw"]["spec"]["mode"] = "Apply"
    api["gw"]["spec"]["apply"] = {"approval": "Automatic"}
    result = run("approve", "-n", "ml", "embedder")
    assert result.exit_code == 1 and "Automatic" in result.output
    assert api["annotations"] == {}


def test_no_recommendation_or_no_object_is_a_one_line_error(api: dict[str, Any]) -> None:
    del api["gw"]["status"]["recommendation"]
    api["gw"]["status"]["conditions"] = [
        {
            "type": "RecommendationReady",
            "status": "False",
            "reason": "NoUsageData",
            "message": "no DCGM series",
            "lastTransitionTime": "2026-12-02T12:00:00Z",
        }
    ]
    result = run("plan", "-n", "ml", "embedder")
    assert result.exit_code == 1
    assert "NoUsageData" in result.output and "Traceback" not in result.output
    missing = run("plan", "-n", "ml", "nope")
    assert missing.exit_code == 1 and '"nope" not found in namespace ml' in missing.output


def test_a_target_that_cannot_be_patched_is_a_one_line_error_with_the_reason(
    api: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_gpus = copy.deepcopy(TARGET)
    del no_gpus["spec"]["template"]["spec"]["containers"][0]["resources"]
    monkeypatch.setattr(objects, "get_target", lambda *a: copy.deepcopy(no_gpus))
    for command in ("plan", "approve"):
        result = run(command, "-n", "ml", "embedder")
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert "TargetHasNoGPUs" in lines[0]
    assert api["annotations"] == {}


def test_a_plan_on_status_for_another_recommendation_is_pointed_out(
    api: dict[str, Any],
) -> None:
    api["gw"]["status"]["plan"] = {
        "recommendationId": "1111111111",
        "target": "Deployment ml/embedder",
    }
    result = CliRunner().invoke(main.cli, ["plan", "-n", "ml", "embedder"])
    assert result.exit_code == 0
    assert "1111111111" in result.stderr and "abcdef0123" in result.stderr
    assert "nvidia.com/mig-1g.10gb" in result.stdout
    api["gw"]["status"]["plan"]["recommendationId"] = "abcdef0123"
    same = CliRunner().invoke(main.cli, ["plan", "-n", "ml", "embedder"])
    assert same.exit_code == 0 and same.stderr == ""


def test_a_target_that_already_has_it_says_no_changes(
    api: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    done = copy.deepcopy(TARGET)
    done["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/mig-1g.10gb": "1"}
    }
    monkeypatch.setattr(objects, "get_target", lambda *a: copy.deepcopy(done))
    api["gw"]["status"]["current"]["migProfile"] = "1g.10gb"
    result = run("plan", "-n", "ml", "embedder")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("no changes")
