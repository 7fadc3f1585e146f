"""SGLang and TensorRT-LLM beside vLLM: read from the container and the series, sized by their
own memory claim, and patched with their own flags."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from gpu_rightsizer import catalogs
from gpu_rightsizer.apply import patches
from gpu_rightsizer.manifests import kinds, targets
from gpu_rightsizer.metrics import attribution, prometheus, queries
from gpu_rightsizer.models import crd, engines, inventory, precisions, profiles, workloads
from gpu_rightsizer.recommend import engine, memory, priced

GIB = 2**30
CATALOG = catalogs.default_catalog()
TABLE = catalogs.default_precisions()
LLAMA_8B = 8.03e9
LLAMA_8B_EMBEDDING = 1.05e9
KV_BYTES_PER_TOKEN = 131072
E = crd.ServingEngine
LEN_8192 = ("--context-length", "8192")
LEN_4096 = ("--max_seq_len", "4096")


def container(command: list[str] | None, args: list[str]) -> dict[str, Any]:
    box: dict[str, Any] = {"name": "server", "args": args}
    if command is not None:
        box["command"] = command
    box["resources"] = {"limits": {"nvidia.com/gpu": "2"}}
    return box


def deployment(box: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat", "namespace": "ml"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [box]}}},
    }


@pytest.mark.parametrize(
    ("command", "args", "kind", "length", "fraction"),
    [
        (
            ["python3", "-m", "sglang.launch_server"],
            ["--model-path", "m", "--tp-size", "2", "--mem-fraction-static", "0.8", *LEN_8192],
            E.SGLANG,
            8192,
            0.8,
        ),
        (
            ["trtllm-serve"],
            ["m", "--tp_size", "2", "--kv_cache_free_gpu_memory_fraction=0.7", *LEN_4096],
            E.TENSORRT_LLM,
            4096,
            0.7,
        ),
        (
            ["vllm", "serve"],
            ["m", "--max-model-len", "2048", "--gpu-memory-utilization", "0.85"],
            E.VLLM,
            2048,
            0.85,
        ),
        # The image's entrypoint runs the engine: every engine's flags are tried.
        (None, ["--model-path", "m", "--mem-fraction-static", "0.75"], None, None, 0.75),
        # Triton keeps TensorRT-LLM's settings in the model repository.
        (
            ["/opt/tritonserver/bin/tritonserver", "--model-repository=/m"],
            [],
            E.TENSORRT_LLM,
            None,
            None,
        ),
    ],
)
def test_the_engine_and_its_settings_are_read_from_the_container(
    command: list[str] | None,
    args: list[str],
    kind: crd.ServingEngine | None,
    length: int | None,
    fraction: float | None,
) -> None:
    read = targets.read(deployment(container(command, args)))
    assert (read.engine, read.max_model_len, read.gpu_memory_utilization) == (
        kind,
        length,
        fraction,
    )


def kv(p95: float) -> profiles.Fractions:
    return profiles.Fractions(p50=p95 / 2, p95=p95, p99=p95, max=p95)


def usage(
    engine_kind: crd.ServingEngine | None, peak_bytes: float, kv_max: float
) -> profiles.UsageProfile:
    used = profiles.Percentiles(p50=peak_bytes, p95=peak_bytes, p99=peak_bytes, max=peak_bytes)
    return profiles.UsageProfile(
        window="7d",
        samples=10080,
        coverage=1.0,
        memory_used_bytes=used,
        graphics_engine_active=kv(0.05),
        dram_active=kv(0.02),
        serving_engine=engine_kind,
        kv_cache_usage=kv(kv_max),
    )


def llama(**extra: Any) -> crd.ModelSpec:
    return crd.ModelSpec(parameters=LLAMA_8B, embedding_parameters=LLAMA_8B_EMBEDDING, **extra)


def chat(
    use: profiles.UsageProfile,
    *,
    serving: crd.Serving | None = None,
    container_engine: crd.ServingEngine | None = None,
    fraction: float | None = None,
) -> workloads.Workload:
    return workloads.Workload(
        ref=workloads.WorkloadRef(namespace="ml", name="chat"),
        spec=crd.GPUWorkloadSpec(
            target_ref=crd.TargetRef(name="chat"),
            model=llama(),
            serving=serving or crd.Serving(),
            policy=crd.Policy.model_validate(
                {"allowMIG": False, "memoryHeadroomPercent": 0, "latency": {"guard": "Off"}}
            ),
        ),
        current=workloads.CurrentAllocation(gpu_model="H100-80GB", gpus_per_replica=1, replicas=2),
        usage=use,
        gpu_memory_utilization=fraction,
        serving_engine=container_engine,
    )


H100 = CATALOG.get("H100-80GB")
assert H100 is not None
SLOT = memory.slot_memory_bytes(H100, None)
WEIGHTS = memory.weights_bytes(LLAMA_8B, LLAMA_8B_EMBEDDING, precisions.Precision.BF16)
FIXED = WEIGHTS + memory.RUNTIME_OVERHEAD_BYTES


def test_tensorrt_llm_claims_a_share_of_what_its_weights_leave() -> None:
    # trtllm-serve at its default 0.9: weights and runtime, then 90% of the rest for KV cache.
    pool = 0.9 * (SLOT - FIXED)
    use = usage(E.TENSORRT_LLM, FIXED + pool, kv_max=0.25)
    demand = memory.demand(
        chat(use).spec, use, precisions.Precision.BF16, (precisions.Precision.BF16,), 1, SLOT
    )
    assert demand.engine is engines.TENSORRT_LLM
    assert demand.other_total_bytes == pytest.approx(0.25 * pool)
    assert "TensorRT-LLM pre-allocates 90% of the memory its weights leave" in demand.explanation
    # The same GPU under vLLM's rule would have claimed 90% of all of it.
    vllm = memory.demand(
        chat(use, serving=crd.Serving(engine=E.VLLM)).spec,
        use.model_copy(update={"memory_used_bytes": None}),
        precisions.Precision.BF16,
        (precisions.Precision.BF16,),
        1,
        SLOT,
    )
    assert vllm.other_total_bytes == pytest.approx(0.25 * (0.9 * SLOT - FIXED))


@pytest.mark.parametrize(
    ("detected", "declared", "command", "expected"),
    [
        (E.SGLANG, None, None, engines.SGLANG),
        (None, None, E.SGLANG, engines.SGLANG),  # no engine series: the container's command
        (E.SGLANG, E.VLLM, None, engines.VLLM),  # spec.serving.engine wins
        (E.SGLANG, E.OTHER, None, None),  # Other: never pre-allocating
        (None, None, None, engines.VLLM),  # a KV-cache series of no known engine: vLLM's
    ],
)
def test_which_engine_sizes_the_workload(
    detected: crd.ServingEngine | None,
    declared: crd.ServingEngine | None,
    command: crd.ServingEngine | None,
    expected: engines.Engine | None,
) -> None:
    use = usage(detected, 0.9 * SLOT, kv_max=0.2)
    spec = chat(use, serving=crd.Serving(engine=declared)).spec
    assert memory.engine_of(spec, use, command) is expected


def evaluate(w: workloads.Workload) -> engine.Evaluation:
    return priced.attach([engine.evaluate_one(w, CATALOG, TABLE, None)], CATALOG, TABLE)[0]


def test_a_recommendation_for_sglang_and_tensorrt_llm_states_their_settings() -> None:
    for kind, peak in ((E.SGLANG, 0.8 * SLOT), (E.TENSORRT_LLM, FIXED + 0.8 * (SLOT - FIXED))):
        result = evaluate(chat(usage(kind, peak, kv_max=0.05), fraction=0.8))
        rec = result.recommendation
        assert rec is not None and rec.engine_settings is not None, result.message
        assert rec.engine_settings.engine == kind
        assert rec.engine_settings.gpu_memory_utilization == 0.8
        assert rec.reasons[0].startswith(f"{kind} pre-allocates 80% of")
        assert rec.gpu_model != "H100-80GB", rec.reasons


def test_a_tensorrt_llm_candidate_offers_its_weights_plus_a_share_of_the_rest() -> None:
    use = usage(E.TENSORRT_LLM, FIXED + 0.9 * (SLOT - FIXED), kv_max=0.05)
    rec = evaluate(chat(use)).recommendation
    assert rec is not None and rec.gpu_model != "H100-80GB"
    gpu = CATALOG.get(rec.gpu_model)
    assert gpu is not None
    slot = memory.slot_memory_bytes(gpu, rec.mig_profile)
    offered = FIXED + 0.9 * (slot - FIXED)
    assert rec.memory_available_bytes == pytest.approx(offered, abs=2)
    assert rec.memory_available_bytes > 0.9 * slot  # more than vLLM's rule would offer


def alloc(gpus: int) -> crd.Allocation:
    return crd.Allocation(gpu_model="H100-80GB", gpus_per_replica=gpus, replicas=1, hourly_cost=1.0)


def patched_args(
    command: list[str], args: list[str], settings: crd.EngineSettings, gpus: int = 1
) -> list[str]:
    target = deployment(container(command, args))
    patch = patches.build(
        target,
        "server",
        alloc(gpus),
        current=alloc(2),
        variant=None,
        engine_settings=settings,
        placement=patches.Placement(product=None, mig_strategy=inventory.MigStrategy.MIXED),
    )
    for change in patch.changes:
        if change.path.endswith("/args"):
            return list(change.after)
    return args


def test_sglang_is_patched_with_its_own_flags() -> None:
    got = patched_args(
        ["python3", "-m", "sglang.launch_server"],
        ["--model-path", "m", "--tp-size", "2", "--mem-fraction-static", "0.9"],
        crd.EngineSettings(engine=E.SGLANG, gpu_memory_utilization=0.85, max_model_len=8192),
    )
    assert got == [
        "--model-path",
        "m",
        "--tp-size",
        "1",
        "--mem-fraction-static",
        "0.85",
        "--context-length",
        "8192",
    ]


def test_trtllm_serve_is_patched_with_its_own_flags() -> None:
    got = patched_args(
        ["trtllm-serve"],
        ["m", "--tp_size=2"],
        crd.EngineSettings(engine=E.TENSORRT_LLM, gpu_memory_utilization=0.9, max_model_len=4096),
    )
    assert got == [
        "m",
        "--tp_size=1",
        "--kv_cache_free_gpu_memory_fraction",
        "0.9",
        "--max_seq_len",
        "4096",
    ]


def test_triton_keeps_its_settings_in_the_model_repository() -> None:
    command = ["tritonserver", "--model-repository=/models"]
    settings = crd.EngineSettings(engine=E.TENSORRT_LLM, gpu_memory_utilization=0.9)
    with pytest.raises(patches.PlanError) as raised:
        patched_args(command, [], settings)
    assert raised.value.reason == "TensorParallelInModelRepository"
    assert "tritonserver" in str(raised.value)
    # Without a change of GPU count nothing is written into Triton's arguments.
    assert patched_args(command, [], settings, gpus=2) == []


def test_the_series_say_which_engine_and_how_large_its_pool_is() -> None:
    at = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    base = {"graphics_engine_active_p95": 0.1, "graphics_engine_active_max": 0.2}
    sglang = attribution.WorkloadUsage(
        values={**base, queries.SERVING_ENGINE: 2.0, queries.KV_CAPACITY: 412_000.0},
        pods=("chat-0",),
    )
    profile = prometheus.build_profile(sglang, window="1d", end=at)
    assert profile is not None
    assert (profile.serving_engine, profile.kv_cache_capacity_tokens) == (E.SGLANG, 412_000)
    # vLLM's cache_config labels, where present, are its pool.
    vllm = attribution.WorkloadUsage(
        values={
            **base,
            queries.SERVING_ENGINE: 1.0,
            queries.KV_CACHE_CAPACITY_TOKENS: 28_160.0,
            queries.KV_CAPACITY: 1.0,
        },
        pods=("chat-0",),
    )
    profile = prometheus.build_profile(vllm, window="1d", end=at)
    assert profile is not None
    assert (profile.serving_engine, profile.kv_cache_capacity_tokens) == (E.VLLM, 28_160)


def isvc() -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": "ml"},
        "spec": {
            "predictor": {
                "minReplicas": 2,
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "storageUri": "hf://meta-llama/Llama-3.1-8B-Instruct",
                    "args": ["--max-model-len", "8192"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                },
            }
        },
    }


def test_an_inferenceservice_is_read_from_its_predictors_model() -> None:
    read = targets.read(kinds.predictor_view(isvc()))
    assert (read.container, read.gpus_per_replica, read.replicas, read.max_model_len) == (
        kinds.MODEL_CONTAINER,
        1,
        2,
        8192,
    )
    assert read.gpu_product == "NVIDIA-H100-80GB-HBM3"


def test_an_inferenceservice_is_patched_on_its_predictor_never_a_template() -> None:
    mig = crd.Allocation(
        gpu_model="H100-80GB", mig_profile="3g.40gb", gpus_per_replica=1, replicas=2, hourly_cost=1
    )
    variant = crd.Variant.model_validate(
        {"name": "fp8", "precision": "fp8", "containerPatch": {"storageUri": "hf://m-fp8"}}
    )
    patch = patches.build(
        isvc(),
        kinds.MODEL_CONTAINER,
        mig,
        current=mig.model_copy(update={"mig_profile": None}),
        variant=variant,
        engine_settings=None,
        placement=patches.Placement(product=None, mig_strategy=inventory.MigStrategy.MIXED),
    )
    paths = {c.path: c.after for c in patch.changes}
    assert paths == {
        "/spec/predictor/model/resources/limits/nvidia.com~1gpu": None,
        "/spec/predictor/model/resources/limits/nvidia.com~1mig-3g.40gb": "1",
        "/spec/predictor/model/storageUri": "hf://m-fp8",
    }
    merge = patches.strategic_merge_patch(patch)
    assert merge["apiVersion"] == "serving.kserve.io/v1beta1"
    # A storageUri has no place in a Deployment's container.
    with pytest.raises(patches.PlanError) as raised:
        patches.build(
            deployment(container(None, [])),
            "server",
            alloc(2),
            current=alloc(2),
            variant=variant,
            engine_settings=None,
            placement=patches.Placement(product=None, mig_strategy=inventory.MigStrategy.NONE),
        )
    assert raised.value.reason == "StorageUriNotKServe"
