"""SGLang and TensorRT-LLM workloads, end to end: the engine detected from its series in a real
Prometheus, the workload sized by that engine's memory claim, and a change applied with that
engine's flags.

One control plane of its own with A100s and H100s (some cut into MIG slices). Two Llama-3.1-8B
servers on a whole H100 with little load, a day of their history in the real Prometheus:

* ``sglang``: ``python3 -m sglang.launch_server --mem-fraction-static 0.9 --context-length 8192``
  sending ``sglang:*`` series;
* ``trtllm``: ``trtllm-serve --kv_cache_free_gpu_memory_fraction 0.9 --max_seq_len 8192``
  sending ``trtllm_*`` series.

Their GPUWorkloads leave ``spec.serving.engine`` unset: the operator reads which engine runs
from the series.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hack import staging

from gpu_rightsizer.fleetsim import fleets
from tests.e2e import test_apply as apply_e2e

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

SERVER = """
  - name: {name}
    namespace: {ns}
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    engine: {engine}
    maxModelLen: 8192
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.1
    traffic: {{shape: constant, low: 0.02, high: 0.05}}
"""
NAMES = {"sglang": "sglang", "trtllm": "trtllm-serve"}


def gpuworkloads(fleet: fleets.Fleet) -> list[dict[str, Any]]:
    out = []
    for w in fleet.workloads:
        body = staging.gpuworkload(w, mode="Apply", declare_engine=False)
        body["spec"]["apply"] = {
            "approval": "Manual",
            "rolloutTimeout": "2m",
            "cooldown": "1h",
            "verificationWindow": "30s",
        }
        body["spec"]["policy"]["latency"] = {"guard": "Off"}
        out.append(body)
    return out


@pytest.fixture(scope="module")
def env() -> Iterator[apply_e2e.ApplyEnv]:
    ns = f"e2e-engines-{uuid.uuid4().hex[:6]}"
    text = "seed: 31\nworkloads:" + "".join(
        SERVER.format(name=name, ns=ns, engine=engine) for name, engine in NAMES.items()
    )
    fleet = fleets.parse(text, "tests/e2e/test_engines.py")
    with apply_e2e.apply_environment("engines", fleet, ns, gpuworkloads(fleet)) as ctx:
        yield ctx


def test_each_engine_is_detected_and_sized_by_its_own_memory_claim(
    env: apply_e2e.ApplyEnv,
) -> None:
    for name, engine, claim in (
        ("sglang", "SGLang", "90% of each GPU"),
        ("trtllm", "TensorRT-LLM", "90% of the memory its weights leave on each GPU"),
    ):
        status = env.status(env.ns, name)
        usage = status["usage"]
        assert usage["servingEngine"] == engine
        # The KV pool in tokens: SGLang's max_total_num_tokens, TensorRT-LLM's blocks x
        # tokens per block.
        assert usage["kvCacheCapacityTokens"] > 100_000, usage
        assert 0 < usage["kvCacheUsage"]["max"] <= 0.15, usage
        rec = status["recommendation"]
        assert rec["engineSettings"] == {
            "engine": engine,
            "gpuMemoryUtilization": 0.9,
            "maxModelLen": 8192,
        }
        reasons = rec["reasons"]
        assert reasons[0].startswith(f"{engine} pre-allocates {claim}"), reasons
        assert any(r.startswith(f"{engine} starts: its KV pool") for r in reasons), reasons
        # Far less than the whole H100 it holds: one 3g.40gb slice.
        assert rec["migProfile"] == "3g.40gb", reasons


def test_an_approved_change_keeps_the_engines_own_flags(env: apply_e2e.ApplyEnv) -> None:
    before = apply_e2e.deployment(env, "sglang")
    args = apply_e2e.container(before)["args"]
    assert "--mem-fraction-static" in args and "--gpu-memory-utilization" not in args
    apply_e2e.wait_reason(env, "sglang", "AwaitingApproval")
    plan = apply_e2e.cli(env, "plan", "-n", env.ns, "sglang")
    assert plan.returncode == 0, plan.stderr
    assert apply_e2e.THREE_G in plan.stdout
    assert "--gpu-memory-utilization" not in plan.stdout and "--max-model-len" not in plan.stdout

    apply_e2e.approve(env, "sglang")
    apply_e2e.wait_phase(env, "sglang", {"Verifying", "Succeeded"}, timeout=240)
    after = apply_e2e.container(apply_e2e.deployment(env, "sglang"))
    assert after["resources"]["limits"] == {apply_e2e.THREE_G: "1"}
    # SGLang's settings were already its arguments: nothing of vLLM's was added.
    assert after["args"] == args
    assert after["command"] == ["python3", "-m", "sglang.launch_server"]
