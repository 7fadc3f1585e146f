"""The recommendation engine on hand-made cases whose right answer is known."""

from __future__ import annotations

import pydantic
import pytest

from gpu_rightsizer import catalogs
from gpu_rightsizer.models import crd, gpus, precisions, profiles, workloads
from gpu_rightsizer.recommend import engine, memory, priced, slots as slots_

GIB = 2**30
P = precisions.Precision
CATALOG = catalogs.default_catalog()
TABLE = catalogs.default_precisions()
LLAMA_8B = 8.03e9


def usage(
    peak_gib: float,
    p95_activity: float,
    *,
    kv_max: float | None = None,
    kv_capacity_gib: float | None = None,
    preemptions: int | None = None,
    window: str = "7d",
    coverage: float = 1.0,
    dram_p95: float | None = 0.05,
) -> profiles.UsageProfile:
    peak = peak_gib * GIB
    kv = None
    if kv_max is not None:
        kv = profiles.Fractions(p50=kv_max / 2, p95=kv_max, p99=kv_max, max=kv_max)
    return profiles.UsageProfile(
        window=window,
        samples=10080,
        coverage=coverage,
        memory_used_bytes=profiles.Percentiles(p50=peak * 0.9, p95=peak, p99=peak, max=peak),
        graphics_engine_active=profiles.Fractions(
            p50=p95_activity / 2, p95=p95_activity, p99=p95_activity, max=p95_activity
        ),
        dram_active=None
        if dram_p95 is None
        else profiles.Fractions(p50=dram_p95 / 2, p95=dram_p95, p99=dram_p95, max=dram_p95),
        kv_cache_usage=kv,
        kv_cache_capacity_bytes=None if kv_capacity_gib is None else int(kv_capacity_gib * GIB),
        preemptions=preemptions,
    )


def workload(
    gpu: str,
    use: profiles.UsageProfile | None,
    *,
    gpus_per_replica: int = 1,
    mig: str | None = None,
    model: crd.ModelSpec | None = None,
    engine_kind: crd.ServingEngine | None = None,
    replicas: int = 2,
    **policy: object,
) -> workloads.Workload:
    return workloads.Workload(
        ref=workloads.WorkloadRef(namespace="ml", name="chat"),
        spec=crd.GPUWorkloadSpec(
            target_ref=crd.TargetRef(name="chat"),
            model=model,
            serving=crd.Serving(engine=engine_kind),
            policy=crd.Policy.model_validate(policy),
        ),
        current=workloads.CurrentAllocation(
            gpu_model=gpu, mig_profile=mig, gpus_per_replica=gpus_per_replica, replicas=replicas
        ),
        usage=use,
    )


def evaluate(w: workloads.Workload, catalog: gpus.Catalog = CATALOG) -> engine.Evaluation:
    return priced.attach([engine.evaluate_one(w, catalog, TABLE)], catalog, TABLE)[0]


def llama_8b(*variants: crd.Variant, precision: P = P.BF16) -> crd.ModelSpec:
    return crd.ModelSpec(
        name="meta-llama/Llama-3.1-8B-Instruct",
        parameters=LLAMA_8B,
        embedding_parameters=1.05e9,
        precision=precision,
        variants=variants,
    )


# ---------------------------------------------------------------------------------------------
# downsizing and keeping


def test_idle_8b_bf16_model_on_h100_moves_to_a_cheaper_gpu() -> None:
    w = workload("H100-80GB", usage(20, 0.08), model=llama_8b())
    result = evaluate(w)
    assert result.outcome == engine.Outcome.RECOMMENDED, result.message
    rec, savings = result.recommendation, result.savings
    assert rec is not None and savings is not None
    assert rec.gpu_model != "H100-80GB"
    assert rec.precision == P.BF16 and rec.variant is None
    assert rec.hourly_cost < 6.88
    assert savings.monthly_cost == pytest.approx((6.88 - rec.hourly_cost) * 730 * 2, abs=0.01)
    assert savings.percent > 50
    # 20 GiB observed (15 GiB of weights) plus 20% headroom fits in the new GPU.
    assert 20 * GIB * 1.2 - 1 <= rec.memory_need_bytes <= rec.memory_available_bytes
    assert rec.reasons[0].startswith("observed peak memory 20.0 GiB per GPU")


def vllm_8b(kv_max: float, preemptions: int) -> workloads.Workload:
    # vLLM pre-allocates 90% of the H100 whatever the load: DCGM shows 72 GiB in use.
    pool = 0.9 * 80 - 15.0 - 1.5
    return workload(
        "H100-80GB",
        usage(72.5, 0.1, kv_max=kv_max, kv_capacity_gib=pool, preemptions=preemptions),
        model=llama_8b(),
        engine_kind=crd.ServingEngine.VLLM,
        # The memory model is what these cases test; the latency guard has its own tests.
        latency={"guard": "Off"},
    )


def test_vllm_with_a_mostly_empty_kv_cache_is_downsized_despite_full_fb_used() -> None:
    result = evaluate(vllm_8b(kv_max=0.2, preemptions=0))
    assert result.outcome == engine.Outcome.RECOMMENDED, result.message
    rec = result.recommendation
    assert rec is not None
    assert rec.hourly_cost < 6.88
    # The need is weights + 20% of the KV pool + runtime, not the 72.5 GiB FB_USED.
    weights = memory.weights_bytes(LLAMA_8B, 1.05e9, P.BF16)
    pool = int((0.9 * 80 - 15.0 - 1.5) * GIB)
    kv = 0.2 * pool
    # What DCGM shows beyond weights, the KV pool and the runtime is need too.
    unexplained = 72.5 * GIB - weights - pool - memory.RUNTIME_OVERHEAD_BYTES
    expected = (
        (weights + kv + unexplained + memory.RUNTIME_OVERHEAD_BYTES) * 1.2 / rec.gpus_per_replica
    )
    assert rec.memory_need_bytes == pytest.approx(expected, rel=1e-6)
    assert rec.memory_need_bytes < 72.5 * GIB
    assert "KV cache peaked at 20%" in rec.reasons[0]


def test_vllm_with_a_saturated_kv_cache_keeps_its_gpu() -> None:
    result = evaluate(vllm_8b(kv_max=0.99, preemptions=12))
    assert result.outcome == engine.Outcome.NO_CHANGE, result.message
    assert result.reason == "NoCheaperAllocation"
    assert "KV cache" in result.message
    assert "12 preemptions" in result.message
    rec = result.recommendation
    assert rec is not None and rec.gpu_model == "H100-80GB"
    assert result.savings is not None and result.savings.monthly_cost == 0


def test_preemptions_alone_mark_the_kv_cache_saturated() -> None:
    calm, preempted = evaluate(vllm_8b(0.5, 0)), evaluate(vllm_8b(0.5, 1))
    assert calm.outcome == engine.Outcome.RECOMMENDED
    assert preempted.outcome == engine.Outcome.NO_CHANGE
    assert "KV cache" in preempted.message


def test_compute_bound_workload_stays() -> None:
    result = evaluate(workload("H100-80GB", usage(20, 0.95), model=llama_8b()))
    assert result.outcome == engine.Outcome.NO_CHANGE, result.message
    assert "compute-bound" in result.message
    assert "95%" in result.message
    rec = result.recommendation
    assert rec is not None and rec.gpu_model == "H100-80GB"


# ---------------------------------------------------------------------------------------------
# invalid specs and missing data


def test_unknown_gpu_model_is_invalid_and_named() -> None:
    result = evaluate(workload("Radeon-Instinct-MI300X", usage(20, 0.1)))
    assert result.outcome == engine.Outcome.INVALID
    assert result.reason == "UnknownGPUModel"
    assert "'Radeon-Instinct-MI300X'" in result.message
    assert result.recommendation is None


def test_unknown_allowed_gpu_model_is_invalid() -> None:
    w = workload("H100-80GB", usage(20, 0.1), allowedGPUModels=["L4", "TPU-v5e"])
    result = evaluate(w)
    assert result.outcome == engine.Outcome.INVALID
    assert "spec.policy.allowedGPUModels" in result.message
    assert "'TPU-v5e'" in result.message


def test_unknown_mig_profile_is_invalid() -> None:
    result = evaluate(workload("A100-80GB", usage(5, 0.1), mig="5g.50gb"))
    assert result.outcome == engine.Outcome.INVALID
    assert "5g.50gb" in result.message


def test_gpu_aliases_resolve_to_catalog_ids() -> None:
    result = evaluate(workload("NVIDIA-H100-80GB-HBM3", usage(16, 0.08), allowedGPUModels=["L4"]))
    assert result.outcome == engine.Outcome.RECOMMENDED, result.message
    assert result.current is not None and result.current.gpu_model == "H100-80GB"
    assert result.recommendation is not None and result.recommendation.gpu_model == "L4"


@pytest.mark.parametrize(
    ("use", "reason"),
    [
        (None, "NoUsageData"),
        (usage(20, 0.1, window="12h"), "InsufficientObservation"),
        (usage(20, 0.1, coverage=0.5), "LowCoverage"),
    ],
)
def test_too_little_observation_gives_no_recommendation(
    use: profiles.UsageProfile | None, reason: str
) -> None:
    result = evaluate(workload("H100-80GB", use))
    assert result.outcome == engine.Outcome.INSUFFICIENT_DATA
    assert result.reason == reason
    assert result.recommendation is None and result.savings is None


# ---------------------------------------------------------------------------------------------
# variants and precisions


def int4_candidate(min_quality: float) -> engine.Evaluation:
    # 8B BF16 on an L40S; a T4 (no BF16) can only serve the declared INT4 variant.
    variant = crd.Variant(name="w4a16", precision=P.INT4, quality_recovery=0.96)
    w = workload(
        "L40S",
        usage(20, 0.05),
        model=llama_8b(variant),
        allowedGPUModels=["L40S", "T4"],
        minQualityRecovery=min_quality,
    )
    return evaluate(w)


def test_quality_floor_rules_out_an_int4_variant() -> None:
    result = int4_candidate(0.99)
    assert result.outcome == engine.Outcome.NO_CHANGE
    assert result.recommendation is not None
    assert any("below the quality floor" in r for r in result.recommendation.reasons)


def test_int4_variant_is_chosen_when_the_floor_allows_it() -> None:
    result = int4_candidate(0.95)
    assert result.outcome == engine.Outcome.RECOMMENDED, result.message
    rec = result.recommendation
    assert rec is not None
    assert (rec.gpu_model, rec.variant, rec.precision) == ("T4", "w4a16", P.INT4)
    assert rec.quality_recovery == 0.96
    assert any("'w4a16'" in r for r in rec.reasons)


def test_variant_without_quality_takes_the_published_default() -> None:
    variant = crd.Variant(name="w8a8", precision=P.INT8)
    w = workload(
        "L40S",
        usage(18, 0.05),
        model=llama_8b(variant),
        allowedGPUModels=["L40S", "T4"],
        minQualityRecovery=0.95,
    )
    rec = evaluate(w).recommendation
    assert rec is not None and rec.variant == "w8a8"
    assert rec.quality_recovery == TABLE.get(P.INT8).quality_recovery


def fp8_on(gpu: str) -> crd.Recommendation:
    w = workload(
        "H100-80GB",
        usage(12, 0.05),
        model=llama_8b(precision=P.FP8),
        allowedGPUModels=[gpu],
        allowMIG=False,
    )
    result = evaluate(w)
    assert result.outcome == engine.Outcome.RECOMMENDED, result.message
    assert result.recommendation is not None
    assert result.recommendation.gpu_model == gpu
    assert result.recommendation.precision == P.FP8
    return result.recommendation


def test_fp8_speedup_only_on_gpus_with_fp8_tensor_cores() -> None:
    speedup = TABLE.get(P.FP8).native_speedup
    assert speedup > 1
    h100, l4, a100 = (CATALOG.get(g) for g in ("H100-80GB", "L4", "A100-80GB"))
    assert h100 is not None and l4 is not None and a100 is not None
    demand = 0.05 * h100.bf16_dense_tflops * speedup  # FP8 runs natively on the H100 now
    # Ada (L4) has FP8 tensor cores: the same work takes 1/speedup of the BF16 time.
    assert fp8_on("L4").projected_compute_utilization == pytest.approx(
        demand / (l4.bf16_dense_tflops * speedup), abs=1e-4
    )
    # Ampere (A100) runs FP8 weight-only: no speed-up.
    assert fp8_on("A100-80GB").projected_compute_utilization == pytest.approx(
        demand / a100.bf16_dense_tflops, abs=1e-4
    )


def test_fp8_speedup_in_the_slot_table_follows_the_architecture() -> None:
    table = slots_.build(CATALOG, TABLE)
    fp8 = slots_.PRECISION_INDEX[P.FP8]
    fast = {gpus.Architecture.ADA, gpus.Architecture.HOPPER, gpus.Architecture.BLACKWELL}
    for s in range(len(table)):
        gpu = CATALOG.gpus[table.gpu_index[s]]
        expected = TABLE.get(P.FP8).native_speedup if gpu.architecture in fast else 1.0
        assert table.speedup[fp8, s] == expected, gpu.id


# ---------------------------------------------------------------------------------------------
# invariants that once failed


def test_consolidation_never_plans_less_memory_than_was_observed() -> None:
    # 8 GPUs, 1 GiB in use on each: the replica holds 8 GiB, less than the runtime overhead the
    # model assumes per GPU. Whatever it moves to must still offer the 8 GiB plus headroom (it
    # once planned 1.5 GiB x 1.2 on a single A10).
    result = evaluate(workload("H100-80GB", usage(1, 0.01), gpus_per_replica=8))
    assert result.outcome == engine.Outcome.RECOMMENDED
    rec = result.recommendation
    assert rec is not None
    assert rec.memory_need_bytes * rec.gpus_per_replica >= 8 * 1 * GIB * 1.2


def test_a_recommendation_always_saves_money() -> None:
    # A 7g instance has no slot of its own (it is the whole GPU at the whole GPU's price): moving
    # to the whole GPU saves nothing, so it is no change rather than a recommendation.
    result = evaluate(workload("H200-141GB", usage(100, 0.0), mig="7g.141gb"))
    assert result.outcome == engine.Outcome.NO_CHANGE, result.message
    assert result.savings is not None and result.savings.monthly_cost == 0


# ---------------------------------------------------------------------------------------------
# known gaps, kept as failing examples until they are handled


def test_an_infinite_usage_figure_is_rejected_at_validation() -> None:
    # JSON 1e400, YAML .inf or a Prometheus +Inf all parse to float("inf"); such a profile must
    # never reach the engine, where it would abort the whole batch.
    with pytest.raises(pydantic.ValidationError, match="finite"):
        profiles.Percentiles(p50=1, p95=2, p99=3, max=float("inf"))
    with pytest.raises(pydantic.ValidationError, match="finite"):
        profiles.Percentiles.model_validate_json('{"p50": 1, "p95": 2, "p99": 3, "max": 1e400}')
