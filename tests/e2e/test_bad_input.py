"""Bad input, end to end: what the API server refuses, and what the operator explains.

Part one is a table of invalid GPUWorkloads, each one change away from a valid one: a wrong type
for every kind of field, values out of range, values outside an enum, malformed names and
durations, missing required fields, unknown fields, and the cross-field rules (list types and
CEL). Each is created with ``kubectl create`` against the real kube-apiserver, which must refuse
it with a message naming the field; nothing invalid is ever stored. An unsupported target kind
is one of these rows: ``spec.targetRef.kind`` is an enum of Deployment and StatefulSet.

Part two is a table of GPUWorkloads the schema accepts but the operator cannot act on: a target
that does not exist, a container the target does not have, a target that holds no GPUs, a GPU
model the catalog does not know, a duration above the maximum the pattern cannot express. The
real operator (``gpu-rightsizer run``) sweeps them against a staged workload with history in a
real Prometheus; each gets Ready=False with its own reason and a message naming what is wrong,
exactly one Warning Event with that reason, and fixing the GPUWorkload clears it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hack import staging

from gpu_rightsizer.fleetsim import fleets
from tests.support.cluster import Cluster, eventually

pytestmark = pytest.mark.cluster

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD = REPO_ROOT / "crds" / "gpuworkloads.gpu-rightsizer.dev.yaml"
CRD_NAME = "gpuworkloads.gpu-rightsizer.dev"
API_VERSION = "gpu-rightsizer.dev/v1alpha1"
DELETE = object()
"""A row's value that removes the field instead of setting it."""

# Every field a row changes exists here, set to a valid value.
VALID_SPEC: dict[str, Any] = {
    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"},
    "mode": "Recommend",
    "gpuModel": "H100-80GB",
    "model": {
        "name": "meta-llama/Llama-3.1-8B-Instruct",
        "parameters": 8.03e9,
        "embeddingParameters": 1.05e9,
        "precision": "bf16",
        "maxModelLen": 8192,
        "kvCacheBytesPerToken": 131072,
        "variants": [
            {
                "name": "fp8",
                "precision": "fp8",
                "qualityRecovery": 0.99,
                "containerPatch": {
                    "image": "vllm/vllm-openai:v0.6.3",
                    "args": ["--quantization", "fp8"],
                    "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}],
                },
            }
        ],
    },
    "serving": {"engine": "vLLM", "gpuMemoryUtilization": 0.9},
    "policy": {
        "memoryHeadroomPercent": 20,
        "targetComputeUtilization": 0.7,
        "burstComputeUtilization": 0.9,
        "allowedGPUModels": ["H100-80GB", "NVIDIA A100-SXM4-80GB", "L4"],
        "allowMIG": True,
        "minQualityRecovery": 0.99,
        "minObservation": "24h",
        "minCoverage": 0.8,
        "maxGpusPerReplica": 8,
        "minSavingsPercent": 10,
        "latency": {"guard": "Auto", "maxTimePerOutputTokenSlowdown": 1.5},
    },
    "apply": {
        "approval": "Automatic",
        "cooldown": "24h",
        "rolloutTimeout": "15m",
        "verificationWindow": "1h",
        "window": {"start": "22:00", "end": "06:00", "days": ["Mon", "Tue"]},
        "minConfidence": 0.8,
        "realizedTolerancePercent": 20,
        "tensorParallelFlag": "--tensor-parallel-size",
    },
}


@dataclasses.dataclass(frozen=True)
class Refused:
    """One invalid GPUWorkload: ``path`` in the valid spec set to ``value``."""

    id: str
    path: str
    value: Any
    field: str
    """What the API server's message must name (``spec.model.variants[0].precision``)."""
    message: str
    """A fragment of what it must say about it."""


V0 = "model.variants.0"
V0_PATCH = f"{V0}.containerPatch"

REFUSED = (
    # --- a wrong type for every kind of field
    Refused("mode-a-number", "mode", 3, "spec.mode", "must be of type string"),
    Refused("policy-a-list", "policy", [], "spec.policy", "must be of type object"),
    Refused("target-ref-a-string", "targetRef", "chat", "spec.targetRef", "of type object"),
    Refused(
        "headroom-a-string",
        "policy.memoryHeadroomPercent",
        "20",
        "spec.policy.memoryHeadroomPercent",
        "must be of type integer",
    ),
    Refused(
        "headroom-a-fraction",
        "policy.memoryHeadroomPercent",
        20.5,
        "spec.policy.memoryHeadroomPercent",
        "must be of type integer",
    ),
    Refused(
        "parameters-a-string",
        "model.parameters",
        "8B",
        "spec.model.parameters",
        "must be of type number",
    ),
    Refused(
        "allow-mig-a-string", "policy.allowMIG", "yes", "spec.policy.allowMIG", "of type boolean"
    ),
    Refused(
        "allowed-gpu-models-a-string",
        "policy.allowedGPUModels",
        "L4",
        "spec.policy.allowedGPUModels",
        "must be of type array",
    ),
    Refused(
        "variants-a-string",
        "model.variants",
        "fp8",
        "spec.model.variants",
        "must be of type array",
    ),
    Refused(
        "an-argument-a-number",
        f"{V0_PATCH}.args",
        ["--max-num-seqs", 64],
        "spec.model.variants[0].containerPatch.args[1]",
        "must be of type string",
    ),
    Refused("cooldown-a-number", "apply.cooldown", 24, "spec.apply.cooldown", "of type string"),
    # --- ranges
    Refused(
        "negative-headroom",
        "policy.memoryHeadroomPercent",
        -1,
        "spec.policy.memoryHeadroomPercent",
        "greater than or equal to 0",
    ),
    Refused(
        "headroom-above-100",
        "policy.memoryHeadroomPercent",
        150,
        "spec.policy.memoryHeadroomPercent",
        "less than or equal to 100",
    ),
    Refused(
        "zero-target-utilization",
        "policy.targetComputeUtilization",
        0,
        "spec.policy.targetComputeUtilization",
        "should be greater than 0",
    ),
    Refused(
        "target-utilization-above-1",
        "policy.targetComputeUtilization",
        1.5,
        "spec.policy.targetComputeUtilization",
        "less than or equal to 1",
    ),
    Refused(
        "coverage-above-1",
        "policy.minCoverage",
        1.2,
        "spec.policy.minCoverage",
        "less than or equal to 1",
    ),
    Refused(
        "negative-coverage",
        "policy.minCoverage",
        -0.1,
        "spec.policy.minCoverage",
        "greater than or equal to 0",
    ),
    Refused(
        "quality-floor-above-1",
        "policy.minQualityRecovery",
        1.01,
        "spec.policy.minQualityRecovery",
        "less than or equal to 1",
    ),
    Refused(
        "zero-quality-recovery",
        f"{V0}.qualityRecovery",
        0,
        "spec.model.variants[0].qualityRecovery",
        "should be greater than 0",
    ),
    Refused(
        "zero-gpus-per-replica",
        "policy.maxGpusPerReplica",
        0,
        "spec.policy.maxGpusPerReplica",
        "greater than or equal to 1",
    ),
    Refused(
        "17-gpus-per-replica",
        "policy.maxGpusPerReplica",
        17,
        "spec.policy.maxGpusPerReplica",
        "less than or equal to 16",
    ),
    Refused(
        "negative-parameters",
        "model.parameters",
        -8e9,
        "spec.model.parameters",
        "should be greater than 0",
    ),
    Refused(
        "zero-max-model-len",
        "model.maxModelLen",
        0,
        "spec.model.maxModelLen",
        "greater than or equal to 1",
    ),
    Refused(
        "gpu-memory-utilization-above-1",
        "serving.gpuMemoryUtilization",
        1.5,
        "spec.serving.gpuMemoryUtilization",
        "less than or equal to 1",
    ),
    Refused(
        "decode-speed-up-demanded",
        "policy.latency.maxTimePerOutputTokenSlowdown",
        0.5,
        "spec.policy.latency.maxTimePerOutputTokenSlowdown",
        "greater than or equal to 1",
    ),
    Refused(
        "confidence-above-1",
        "apply.minConfidence",
        2,
        "spec.apply.minConfidence",
        "less than or equal to 1",
    ),
    Refused(
        "negative-monthly-savings",
        "policy.minMonthlySavings",
        -5,
        "spec.policy.minMonthlySavings",
        "greater than or equal to 0",
    ),
    Refused(
        "tolerance-above-100-percent",
        "apply.realizedTolerancePercent",
        101,
        "spec.apply.realizedTolerancePercent",
        "less than or equal to 100",
    ),
    # --- durations
    Refused(
        "duration-in-words",
        "policy.minObservation",
        "1 day",
        "spec.policy.minObservation",
        "should match",
    ),
    Refused(
        "duration-without-unit", "apply.rolloutTimeout", "15", "spec.apply.rolloutTimeout", "match"
    ),
    Refused(
        "negative-duration",
        "apply.verificationWindow",
        "-1h",
        "spec.apply.verificationWindow",
        "should match",
    ),
    Refused(
        "absurd-duration",
        "policy.minObservation",
        "99999999999d",
        "spec.policy.minObservation",
        "should match",
    ),
    Refused("overlong-duration", "apply.cooldown", "1m" * 17, "spec.apply.cooldown", "Too long"),
    # --- enums
    Refused("mode-sometimes", "mode", "Sometimes", "spec.mode", 'Unsupported value: "Sometimes"'),
    Refused(
        "precision-fp4",
        "model.precision",
        "fp4",
        "spec.model.precision",
        'Unsupported value: "fp4"',
    ),
    Refused(
        "precision-in-capitals",
        f"{V0}.precision",
        "FP8",
        "spec.model.variants[0].precision",
        'Unsupported value: "FP8"',
    ),
    Refused(
        "engine-tgi", "serving.engine", "TGI", "spec.serving.engine", 'Unsupported value: "TGI"'
    ),
    Refused(
        "latency-guard-on",
        "policy.latency.guard",
        "On",
        "spec.policy.latency.guard",
        'Unsupported value: "On"',
    ),
    Refused(
        "approval-auto",
        "apply.approval",
        "Auto",
        "spec.apply.approval",
        'Unsupported value: "Auto"',
    ),
    Refused(
        "unsupported-target-kind",
        "targetRef.kind",
        "CronJob",
        "spec.targetRef.kind",
        'Unsupported value: "CronJob"',
    ),
    Refused(
        "target-api-version-apps-v1beta1",
        "targetRef.apiVersion",
        "apps/v1beta1",
        "spec.targetRef.apiVersion",
        "Unsupported value",
    ),
    Refused(
        "weekday-spelled-out",
        "apply.window.days",
        ["Monday"],
        "spec.apply.window.days[0]",
        'Unsupported value: "Monday"',
    ),
    # --- names and formats
    Refused("empty-gpu-model", "gpuModel", "", "spec.gpuModel", "at least 1 chars long"),
    Refused("gpu-model-with-a-slash", "gpuModel", "nvidia/h100", "spec.gpuModel", "should match"),
    Refused("overlong-gpu-model", "gpuModel", "H" * 64, "spec.gpuModel", "Too long"),
    Refused(
        "allowed-gpu-model-with-a-trailing-space",
        "policy.allowedGPUModels",
        ["L4 "],
        "spec.policy.allowedGPUModels[0]",
        "should match",
    ),
    Refused(
        "target-name-not-dns",
        "targetRef.name",
        "Chat_Server",
        "spec.targetRef.name",
        "should match",
    ),
    Refused(
        "container-in-capitals",
        "targetRef.container",
        "Server",
        "spec.targetRef.container",
        "should match",
    ),
    Refused(
        "variant-name-with-a-space",
        f"{V0}.name",
        "fp 8",
        "spec.model.variants[0].name",
        "should match",
    ),
    Refused(
        "clock-time-24-00",
        "apply.window.start",
        "24:00",
        "spec.apply.window.start",
        "should match",
    ),
    Refused(
        "tensor-parallel-flag-without-dashes",
        "apply.tensorParallelFlag",
        "tp",
        "spec.apply.tensorParallelFlag",
        "should match",
    ),
    Refused("overlong-model-name", "model.name", "m" * 254, "spec.model.name", "Too long"),
    Refused(
        "empty-image",
        f"{V0_PATCH}.image",
        "",
        "spec.model.variants[0].containerPatch.image",
        "at least 1 chars long",
    ),
    # --- required fields
    Refused("no-target-ref", "targetRef", DELETE, "spec.targetRef", "Required value"),
    Refused("no-target-name", "targetRef.name", DELETE, "spec.targetRef.name", "Required value"),
    Refused(
        "variant-without-precision",
        f"{V0}.precision",
        DELETE,
        "spec.model.variants[0].precision",
        "Required value",
    ),
    Refused(
        "model-without-parameters",
        "model.parameters",
        DELETE,
        "spec.model.parameters",
        "Required value",
    ),
    Refused(
        "window-without-start",
        "apply.window.start",
        DELETE,
        "spec.apply.window.start",
        "Required value",
    ),
    Refused(
        "env-without-name",
        f"{V0_PATCH}.env.0.name",
        DELETE,
        "spec.model.variants[0].containerPatch.env[0].name",
        "Required value",
    ),
    # --- list sizes
    Refused(
        "no-allowed-gpu-model",
        "policy.allowedGPUModels",
        [],
        "spec.policy.allowedGPUModels",
        "should have at least 1 items",
    ),
    Refused(
        "17-variants",
        "model.variants",
        [{"name": f"v{i}", "precision": "int4"} for i in range(17)],
        "spec.model.variants",
        "must have at most 16 items",
    ),
    Refused(
        "window-with-no-day",
        "apply.window.days",
        [],
        "spec.apply.window.days",
        "should have at least 1 items",
    ),
    # --- unknown fields (kubectl asks for strict field validation)
    Refused("unknown-spec-field", "replicas", 2, "spec.replicas", "unknown field"),
    Refused("misspelt-allow-mig", "policy.allowMig", True, "spec.policy.allowMig", "unknown field"),
    Refused(
        "target-in-another-namespace",
        "targetRef.namespace",
        "ml",
        "spec.targetRef.namespace",
        "unknown field",
    ),
    # --- cross-field rules (CEL and list types)
    Refused(
        "duplicate-variant-names",
        "model.variants",
        [{"name": "q", "precision": "fp8"}, {"name": "q", "precision": "int4"}],
        "spec.model.variants",
        "variant names must be unique",
    ),
    Refused(
        "variant-at-the-models-precision",
        f"{V0}.precision",
        "bf16",
        "spec.model.variants",
        "a variant must use a different precision than the model itself",
    ),
    Refused(
        "embeddings-as-large-as-the-model",
        "model.embeddingParameters",
        8.03e9,
        "spec.model.embeddingParameters",
        "embeddingParameters must be smaller than parameters",
    ),
    Refused(
        "allowed-gpu-model-twice",
        "policy.allowedGPUModels",
        ["L4", "H100-80GB", "L4"],
        "spec.policy.allowedGPUModels",
        "allowedGPUModels must not repeat a model",
    ),
    Refused(
        "window-that-ends-when-it-starts",
        "apply.window.end",
        "22:00",
        "spec.apply.window.end",
        "start and end must differ",
    ),
    Refused(
        "window-under-manual-approval",
        "apply.approval",
        "Manual",
        "spec.apply.window",
        "window only applies to approval Automatic",
    ),
    Refused(
        "a-day-twice",
        "apply.window.days",
        ["Mon", "Tue", "Mon"],
        "spec.apply.window.days[2]",
        'Duplicate value: "Mon"',
    ),
    Refused(
        "an-environment-variable-twice",
        f"{V0_PATCH}.env",
        [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
        "spec.model.variants[0].containerPatch.env[1]",
        "Duplicate value",
    ),
)


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The valid spec with ``path`` (dotted, list indices as numbers) set or removed."""
    spec = copy.deepcopy(VALID_SPEC)
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


def gpu_workload(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "GPUWorkload",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> Any:
    """``kubectl create`` (the API server's own validation, strict about unknown fields)."""
    return cluster.kubectl(
        "create", "--namespace", namespace, "-f", "-", input=json.dumps(body), check=False
    )


def stored(cluster: Cluster, namespace: str) -> set[str]:
    items = cluster.kubectl_json("get", "gpuworkloads", "-n", namespace)["items"]
    return {item["metadata"]["name"] for item in items}


@pytest.fixture(scope="module")
def crd_installed(cluster: Cluster) -> Iterator[None]:
    """The generated CRD, which the API server accepts (its CEL rules fit the cost budget)."""
    existed = cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.wait_established(CRD_NAME)
    yield
    if not existed:
        cluster.kubectl("delete", "crd", CRD_NAME, "--wait=false", check=False)


@pytest.fixture(scope="module")
def table_namespace(cluster: Cluster, crd_installed: None) -> Iterator[str]:
    """One namespace for the whole table, holding only the valid GPUWorkload."""
    name = f"bad-input-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_table_is_large_and_each_row_changes_one_field() -> None:
    assert len(REFUSED) >= 30
    assert len({r.id for r in REFUSED}) == len(REFUSED)
    for row in REFUSED:
        assert with_change(row.path, row.value) != VALID_SPEC, row.id


def test_the_valid_spec_is_stored_as_written(cluster: Cluster, table_namespace: str) -> None:
    proc = create(cluster, table_namespace, gpu_workload("valid", VALID_SPEC))
    assert proc.returncode == 0, proc.stderr
    body = cluster.kubectl_json("get", "gpuw", "valid", "-n", table_namespace)
    assert body["spec"]["model"] == VALID_SPEC["model"]
    assert body["spec"]["apply"]["window"] == VALID_SPEC["apply"]["window"]


def test_values_at_the_bounds_are_accepted(cluster: Cluster, table_namespace: str) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    spec["gpuModel"] = "H" * 63
    spec["policy"] |= {"minObservation": "3650d", "memoryHeadroomPercent": 100, "minCoverage": 1}
    spec["apply"]["cooldown"] = "315360000s"
    spec["model"]["variants"][0]["qualityRecovery"] = 1
    proc = create(cluster, table_namespace, gpu_workload("at-the-bounds", spec))
    assert proc.returncode == 0, proc.stderr
    cluster.kubectl("delete", "gpuw", "at-the-bounds", "-n", table_namespace)


@pytest.mark.parametrize("row", REFUSED, ids=[r.id for r in REFUSED])
def test_the_api_server_refuses_it_naming_the_field(
    cluster: Cluster, table_namespace: str, row: Refused
) -> None:
    name = row.id[:63].strip("-")
    proc = create(cluster, table_namespace, gpu_workload(name, with_change(row.path, row.value)))
    assert proc.returncode != 0, f"{row.id}: accepted\n{proc.stdout}"
    error = proc.stderr
    assert re.search(rf"(^|[\s\"]){re.escape(row.field)}([:\s\"]|$)", error), error
    assert row.message in error, error


def test_nothing_invalid_was_stored(cluster: Cluster, table_namespace: str) -> None:
    assert stored(cluster, table_namespace) == {"valid"}


# --- part two: accepted by the schema, explained by the operator ---------------------------------

FLEET = """
seed: 11
workloads:
  - name: base
    namespace: {ns}
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    policy: {{latency: {{guard: "Off"}}}}
    traffic: {{shape: constant, low: 0.1, high: 0.2}}
"""


@dataclasses.dataclass(frozen=True)
class Explained:
    """A GPUWorkload the operator cannot act on, what it must say, and the fix."""

    id: str
    change: dict[str, Any]
    """Merged into the staged workload's spec (one level deep) to make it wrong."""
    reason: str
    said: tuple[str, ...]
    """Fragments the Ready condition's message (and the Event's) must hold."""
    fix: dict[str, Any]
    """Merged the same way into the wrong spec to make it right again."""
    ready_when_fixed: bool = True
    """Fixed, it targets the staged workload with history, so it becomes Ready=True."""


EXPLAINED = (
    Explained(
        "missing-target",
        {"targetRef": {"name": "no-such-deployment"}},
        "TargetNotFound",
        ("Deployment", "no-such-deployment", "not found"),
        {"targetRef": {"name": "base"}},
    ),
    Explained(
        "container-not-found",
        {"targetRef": {"name": "base", "container": "sidecar"}},
        "ContainerNotFound",
        ("spec.template.spec.containers", "'sidecar'", "containers: server"),
        {"targetRef": {"name": "base", "container": "server"}},
    ),
    Explained(
        "target-with-no-gpus",
        {"targetRef": {"name": "cpu-only"}},
        "TargetHasNoGPUs",
        ("cpu-only", "requests no nvidia.com/gpu"),
        {"targetRef": {"name": "base"}},
    ),
    Explained(
        "unknown-gpu-model",
        {"targetRef": {"name": "nodeless"}, "gpuModel": "TPU-v5"},
        "UnknownGPUModel",
        ("'TPU-v5'", "spec.gpuModel", "not in the catalog"),
        {"gpuModel": "H100-80GB"},
        ready_when_fixed=False,  # its Deployment has no replicas, so no usage to size it on
    ),
    Explained(
        # The pattern bounds each number's digits; the 3650d maximum itself only pydantic checks.
        "duration-above-the-maximum",
        {"policy": {"minObservation": "9999d"}},
        "InvalidSpec",
        ("spec.policy.minObservation", "'9999d'", "3650d"),
        {"policy": {"minObservation": "12h"}},
    ),
)


def merged(spec: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclasses.dataclass
class OperatorEnv:
    ns: str
    kubectl: staging.Kubectl
    operator: staging.Operator
    base_spec: dict[str, Any]

    def ready(self, name: str) -> dict[str, Any]:
        body = self.kubectl.json("get", "gpuworkload", "-n", self.ns, name)
        conditions = (body.get("status") or {}).get("conditions", [])
        found: dict[str, Any] = next((c for c in conditions if c["type"] == "Ready"), {})
        return found

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        return staging.gpuworkload_events(self.kubectl, self.ns, name, reason)

    def wrong(self, row: Explained) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "GPUWorkload",
            "metadata": {"name": row.id, "namespace": self.ns},
            "spec": merged(self.base_spec, row.change),
        }


def _side_deployments(kubectl: staging.Kubectl, ns: str) -> list[dict[str, Any]]:
    """``cpu-only`` (a container with no GPU) and ``nodeless`` (GPUs, no GPU model anywhere)."""
    base = kubectl.json("get", "deployment", "-n", ns, "base")
    pod = base["spec"]["template"]["spec"]
    pod.pop("nodeSelector", None)
    cpu_pod = copy.deepcopy(pod)
    for container in cpu_pod["containers"]:
        container["resources"] = {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}

    def deployment(name: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            },
        }

    return [deployment("cpu-only", cpu_pod), deployment("nodeless", pod)]


@pytest.fixture(scope="module")
def operator_env(
    cluster: Cluster, crd_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    """One staged workload with a day of history, the operator, and every wrong GPUWorkload."""
    work = tmp_path_factory.mktemp("bad-input")
    ns = f"e2e-bad-{uuid.uuid4().hex[:6]}"
    kubectl = staging.Kubectl(cluster.kubectl_bin, cluster.kubeconfig)
    fleet = fleets.parse(FLEET.format(ns=ns), "tests/e2e/test_bad_input.py")
    staged = staging.stage(kubectl, fleet, work_dir=work, history_days=1.0, scrape_interval="5s")
    operator = staging.Operator(
        cluster.kubeconfig, staged.prometheus_url, work / "operator.log", interval="5s"
    )
    try:
        kubectl.apply(_side_deployments(kubectl, ns))
        env = OperatorEnv(ns, kubectl, operator, staging.gpuworkload(fleet.workloads[0])["spec"])
        kubectl.apply(env.wrong(row) for row in EXPLAINED)
        operator.start()
        yield env
    finally:
        operator.stop()
        staged.stop()
        if not os.environ.get("KEEP_E2E"):
            kubectl("delete", "namespace", ns, "--wait=false")
        sys.stderr.write(f"operator log: {operator.log}\n")


def test_the_staged_workload_is_ready(operator_env: OperatorEnv) -> None:
    # The fixes below point at it: a fixed GPUWorkload is as good as this one.
    eventually(
        lambda: operator_env.ready("base").get("status") == "True",
        timeout=120,
        what="Ready=True on the staged workload",
    )


@pytest.mark.parametrize("row", EXPLAINED, ids=[r.id for r in EXPLAINED])
def test_the_operator_explains_it_once_and_a_fix_clears_it(
    operator_env: OperatorEnv, row: Explained
) -> None:
    env = operator_env

    def wrong_reason() -> dict[str, Any] | None:
        ready = env.ready(row.id)
        return ready if ready.get("reason") == row.reason else None

    def other_reason() -> dict[str, Any] | None:
        ready = env.ready(row.id)
        return ready if ready and ready.get("reason") != row.reason else None

    ready = eventually(
        wrong_reason,
        timeout=90,
        what=f"Ready=False, reason {row.reason}, on {row.id}",
    )
    assert ready["status"] == "False"
    for fragment in row.said:
        assert fragment in ready["message"], (fragment, ready["message"])
    [event] = eventually(lambda: env.events(row.id, row.reason), timeout=60, what="its Event")
    assert event["type"] == "Warning"
    assert all(fragment in event["message"] for fragment in row.said), event["message"]
    # Two more sweeps of the same wrong spec post nothing more: one Event, count 1.
    seen = len(env.operator.sweeps())
    eventually(lambda: len(env.operator.sweeps()) >= seen + 2, timeout=60, what="two sweeps")
    [again] = env.events(row.id, row.reason)
    assert again.get("count", 1) == 1 and again["metadata"]["uid"] == event["metadata"]["uid"]

    fixed = env.wrong(row)
    fixed["spec"] = merged(fixed["spec"], row.fix)
    env.kubectl.apply([fixed])
    after = eventually(
        other_reason,
        timeout=90,
        what=f"{row.id}'s {row.reason} cleared by the fix",
    )
    if row.ready_when_fixed:
        eventually(
            lambda: env.ready(row.id).get("status") == "True",
            timeout=90,
            what=f"Ready=True on {row.id} once fixed (last: {after})",
        )
    assert len(env.events(row.id, row.reason)) == 1
