"""A GPUWorkload that targets a KServe InferenceService, end to end, with KServe's real CRD.

KServe's InferenceService CRD (from its Go module, ``make tools``) is installed; no KServe
controller runs. What its controller would generate in Standard mode, the Deployment
``chat-predictor`` labelled ``serving.kserve.io/inferenceservice: chat`` and
``component: predictor``, is staged beside the InferenceService ``chat`` (its model container
as ``spec.predictor.model``): a vLLM server of Llama-3.1-8B on a whole H100 with little load and
a day of history in a real Prometheus.

* the GPUs are read from ``spec.predictor.model``, the pods found through the predictor
  Deployment, and a 3g.40gb slice recommended;
* in Apply mode the change is a patch of ``spec.predictor``, published on ``status.plan`` and
  not applied (``Applied=False, AppliedByHand``): KServe rolls out InferenceServices, and
  gpu-rightsizer never patches the Deployment KServe generates;
* that patch, applied by hand with ``kubectl patch --type merge``, is accepted by the API
  server under KServe's own schema and changes what the recommendation said.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hack import staging

from gpu_rightsizer.fleetsim import fleets
from gpu_rightsizer.manifests import kinds
from tests.e2e import test_apply as apply_e2e, test_inventory as inv
from tests.support import cluster as cluster_support

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

ISVC_RESOURCE = f"{kinds.INFERENCESERVICE.plural}.{kinds.INFERENCESERVICE.group}"

SERVER = """
  - name: chat-predictor
    namespace: {ns}
    container: kserve-container
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    engine: vllm
    maxModelLen: 8192
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.1
    traffic: {{shape: constant, low: 0.02, high: 0.05}}
"""


def gpuworkloads(fleet: fleets.Fleet) -> list[dict[str, Any]]:
    [w] = fleet.workloads
    body = staging.gpuworkload(w, mode="Apply")
    body["metadata"]["name"] = "chat"
    spec = body["spec"]
    spec["targetRef"] = {
        "apiVersion": kinds.INFERENCESERVICE.api_version,
        "kind": kinds.INFERENCESERVICE.kind,
        "name": "chat",
    }
    spec["apply"] = {"approval": "Manual", "rolloutTimeout": "2m", "cooldown": "1h"}
    spec["policy"]["latency"] = {"guard": "Off"}
    return [body]


@pytest.fixture(scope="module")
def env() -> Iterator[apply_e2e.ApplyEnv]:
    ns = f"e2e-kserve-{uuid.uuid4().hex[:6]}"
    fleet = fleets.parse("seed: 37\nworkloads:" + SERVER.format(ns=ns), "tests/e2e/test_kserve.py")
    with apply_e2e.apply_environment(
        "kserve", fleet, ns, gpuworkloads(fleet), kserve=[(ns, "chat-predictor")]
    ) as ctx:
        yield ctx


def isvc(e: apply_e2e.ApplyEnv) -> dict[str, Any]:
    found: dict[str, Any] = e.kubectl.json(
        "get", "inferenceservices.serving.kserve.io", "-n", e.ns, "chat"
    )
    return found


def test_an_inferenceservice_is_read_from_its_predictor(env: apply_e2e.ApplyEnv) -> None:
    status = env.status(env.ns, "chat")
    assert inv.condition(status, "TargetNotFound")["status"] == "False"
    current = status["current"]
    assert (current["gpuModel"], current["gpusPerReplica"], current["replicas"]) == (
        "H100-80GB",
        1,
        1,
    )
    # The pods of KServe's predictor Deployment carry the usage.
    assert status["usage"]["samples"] > 0 and status["usage"]["servingEngine"] == "vLLM"
    assert status["recommendation"]["migProfile"] == "3g.40gb", status["recommendation"]


def test_apply_mode_publishes_a_patch_of_the_predictor_and_leaves_it_to_the_user(
    env: apply_e2e.ApplyEnv,
) -> None:
    applied = apply_e2e.wait_reason(env, "chat", "AppliedByHand")
    assert applied["status"] == "False"
    assert "kubectl patch --type merge" in applied["message"]
    status = env.status(env.ns, "chat")
    plan = status["plan"]
    assert plan["recommendationId"] == status["recommendation"]["id"]
    paths = [c["path"] for c in plan["changes"]]
    limit = apply_e2e.THREE_G.replace("/", "~1")
    assert f"/spec/predictor/model/resources/limits/{limit}" in paths
    assert all(p.startswith("/spec/predictor/") for p in paths), paths
    predictor_before = apply_e2e.deployment(env, "chat-predictor")
    before = isvc(env)
    # Still not applied a few sweeps later; neither the InferenceService nor KServe's
    # Deployment was touched.
    sweeps = len(env.operator.sweeps())
    cluster_support.eventually(
        lambda: len(env.operator.sweeps()) >= sweeps + 2, timeout=60, what="2 more sweeps"
    )
    assert isvc(env)["metadata"]["generation"] == before["metadata"]["generation"]
    predictor = apply_e2e.deployment(env, "chat-predictor")
    assert predictor["metadata"]["generation"] == predictor_before["metadata"]["generation"]

    # Applied by hand, the patch passes KServe's schema and says what the recommendation said.
    patch = yaml.safe_load(plan["patch"])
    env.kubectl(
        "patch",
        ISVC_RESOURCE,
        "-n",
        env.ns,
        "chat",
        "--type",
        "merge",
        "-p",
        json.dumps(patch),
    )
    model = isvc(env)["spec"]["predictor"]["model"]
    assert model["resources"]["limits"] == {apply_e2e.THREE_G: "1"}
    cluster_support.eventually(
        lambda: env.status(env.ns, "chat")["current"].get("migProfile") == "3g.40gb",
        timeout=120,
        what="chat: the current allocation read from the patched predictor",
    )
