"""The one decision path: from what a sweep read (targets, nodes, usage) to each status.

These go through ``decision.decide`` with target states resolved by the Kubernetes adapter's
pure part from a snapshot, as the operator's sweep does, and compare the offline CLI with it.
"""

from __future__ import annotations

import copy
import datetime
import json
import pathlib
from typing import Any

import yaml
from click.testing import CliRunner
from hack.devcluster import nodes as kwok_nodes

from gpu_rightsizer import catalogs, decision, ports
from gpu_rightsizer.cli import main
from gpu_rightsizer.kube import reading
from gpu_rightsizer.manifests import nodes as nodes_
from gpu_rightsizer.models import inventory, profiles, workloads

EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"
NOW = datetime.datetime(2026, 11, 20, 12, 0, tzinfo=datetime.UTC)
CATALOG = catalogs.default_catalog()
TABLE = catalogs.default_precisions()


def example(case: str) -> tuple[dict[str, Any], dict[str, Any], profiles.UsageProfile]:
    docs = list(yaml.safe_load_all((EXAMPLES / f"{case}.yaml").read_text()))
    gw = next(d for d in docs if d["kind"] == "GPUWorkload")
    target = next(d for d in docs if d["kind"] == "Deployment")
    usage = json.loads((EXAMPLES / f"{case}.usage.json").read_text())["items"][0]["usage"]
    return gw, target, profiles.UsageProfile.model_validate(usage)


def decide(
    gw: dict[str, Any],
    target: dict[str, Any],
    usage: profiles.UsageProfile | None,
    *,
    stock: inventory.Inventory | None = None,
    error: str | None = None,
    status: dict[str, Any] | None = None,
) -> decision.Result:
    meta = gw["metadata"]
    ref = workloads.WorkloadRef(namespace=meta["namespace"], name=meta["name"])
    generation = meta.get("generation")
    obj = decision.WorkloadObject(ref=ref, spec=gw["spec"], status=status, generation=generation)
    spec = decision.validate(obj)
    assert not isinstance(spec, str), spec
    t = spec.target_ref
    states = reading.resolve(
        reading.Snapshot(deployments=[target]), [(ref, t.kind, t.name, t.container)]
    )
    report = ports.UsageReport(
        profiles={ref: usage} if usage is not None and error is None else {},
        queries=1,
        error=error,
    )
    (result,) = decision.decide(
        [obj],
        {ref: spec},
        states,
        report,
        catalog=CATALOG,
        table=TABLE,
        now=NOW,
        settings=decision.Settings(),
        stock=stock,
    )
    return result


def conditions(result: decision.Result) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in result.document["conditions"]}


def a100_only() -> list[dict[str, Any]]:
    return [
        kwok_nodes.gpu_node("gpu-a100-0", "A100-80GB", 8),
        kwok_nodes.gpu_node("gpu-a100-mig-0", "A100-80GB", 8, mig={"3g.40gb": 4}, mig_gpus=2),
    ]


def stock_of(node_list: list[dict[str, Any]], pods: list[dict[str, Any]] = ()) -> Any:  # type: ignore[assignment]
    return nodes_.build(node_list, pods, CATALOG, source="the Node objects in the files")


def test_a_missing_container_has_its_own_reason() -> None:
    gw, target, usage = example("idle-server")
    gw = copy.deepcopy(gw)
    gw["spec"]["targetRef"]["container"] = "sidecar"
    result = decide(gw, target, usage)
    ready = conditions(result)["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainerNotFound"
    assert "no container named 'sidecar'" in ready["message"]


def test_an_outage_condition_says_the_latest_error() -> None:
    gw, target, usage = example("idle-server")
    first = decide(gw, target, usage, error="Prometheus: connection refused")
    second = decide(
        gw, target, usage, error="Prometheus: timed out after 30s", status=first.document
    )
    metrics = conditions(second)["MetricsAvailable"]
    assert metrics["status"] == "False"
    assert metrics["message"] == "Prometheus: timed out after 30s"


def test_an_outage_does_not_hide_an_unknown_gpu_model() -> None:
    gw, target, usage = example("idle-server")
    target = copy.deepcopy(target)
    target["spec"]["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-X9000"}
    result = decide(gw, target, usage, error="Prometheus: connection refused")
    ready = conditions(result)["Ready"]
    assert ready["reason"] == "UnknownGPUModel"
    assert "'NVIDIA-X9000'" in ready["message"]


def test_apply_mode_without_a_checked_permission_says_so_and_changes_nothing() -> None:
    # The offline decision (no writer for targets, no access review) never acts.
    gw, target, usage = example("idle-server")
    gw = copy.deepcopy(gw)
    gw["spec"]["mode"] = "Apply"
    result = decide(gw, target, usage)
    applied = conditions(result)["Applied"]
    assert applied["status"] == "False"
    assert applied["reason"] == "ApplyForbidden"
    assert "not checked" in applied["message"]
    assert result.action is None
    assert result.document["recommendation"]["id"]
    assert result.document["plan"]["recommendationId"] == result.document["recommendation"]["id"]
    plain = decide(*example("idle-server"))
    assert "Applied" not in conditions(plain)
    assert "plan" not in plain.document


def test_an_a100_only_cluster_gets_a100_recommendations_and_learns_what_else_would_fit() -> None:
    gw, target, usage = example("idle-server")
    anywhere = decide(gw, target, usage).document["recommendation"]
    assert anywhere["gpuModel"] not in {"A100-80GB", "A100-40GB"}  # a cheaper model exists
    result = decide(gw, target, usage, stock=stock_of(a100_only()))
    rec = result.document["recommendation"]
    assert rec["gpuModel"] == "A100-80GB"
    assert rec.get("migProfile") == "3g.40gb"  # the only profile a node offers
    assert rec["availability"] == "InCluster"
    outside = [a for a in result.document["alternatives"] if a["availability"] == "NotInCluster"]
    assert outside and outside[0]["hourlyCost"] < rec["hourlyCost"]
    assert outside[0]["gpuModel"] == anywhere["gpuModel"]
    assert any("A100-80GB" in r and "inventory" in r for r in rec["reasons"])
    assert conditions(result)["CapacityAvailable"]["status"] == "True"


def test_no_free_slice_gives_the_next_best_that_has_room() -> None:
    gw, target, usage = example("idle-server")
    busy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "other", "namespace": "x"},
        "spec": {
            "nodeName": "gpu-a100-mig-0",
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "4"}}}],
        },
        "status": {"phase": "Running"},
    }
    result = decide(gw, target, usage, stock=stock_of(a100_only(), [busy]))
    capacity = conditions(result)["CapacityAvailable"]
    assert capacity["status"] == "False"
    assert capacity["reason"] == "NoFreeCapacity"
    assert "3g.40gb" in capacity["message"]
    rec = result.document["recommendation"]
    assert rec.get("migProfile") != "3g.40gb"
    assert any(
        a.get("migProfile") == "3g.40gb" and a["availability"] == "NoFreeCapacity"
        for a in result.document["alternatives"]
    )


def test_recommend_json_is_what_the_decision_writes(tmp_path: pathlib.Path) -> None:
    gw, target, usage = example("idle-server")
    node_docs = a100_only()
    files = tmp_path / "all.yaml"
    files.write_text(yaml.safe_dump_all([gw, target, *node_docs]))
    usage_file = EXAMPLES / "idle-server.usage.json"
    result = CliRunner().invoke(
        main.cli,
        [
            "recommend",
            "-f",
            str(files),
            "--usage",
            str(usage_file),
            "--at",
            "2026-11-20T12:00:00Z",
            "-o",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    expected = decide(gw, target, usage, stock=stock_of(node_docs)).document
    assert item["status"] == expected


def test_a_field_the_new_recommendation_lacks_is_removed_by_the_patch() -> None:
    gw, target, usage = example("idle-server")
    first = decide(gw, target, usage, stock=stock_of(a100_only()))
    assert first.document["recommendation"]["migProfile"] == "3g.40gb"
    whole_only = [kwok_nodes.gpu_node("gpu-a100-0", "A100-80GB", 8)]
    second = decide(gw, target, usage, stock=stock_of(whole_only), status=first.document)
    assert "migProfile" not in second.document["recommendation"]
    # A merge patch merges nested objects key by key: the old profile must be nulled.
    assert second.status["recommendation"]["migProfile"] is None
