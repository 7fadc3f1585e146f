"""The engine's guards on hand-made cases whose right answer is known.

Inventory (what the cluster has, and has free), MIG repartitioning, vLLM startability, the
latency guard, p99 bursts, impossible input, unknown memory, the minimum saving, hysteresis and
the energy rule. Each case states the catalog figures it relies on, so a catalog change that
invalidates a case fails on that precondition rather than on a puzzling verdict.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gpu_rightsizer import catalogs
from gpu_rightsizer.models import crd, gpus, inventory, precisions, profiles, workloads
from gpu_rightsizer.recommend import engine, memory, priced

GIB = 2**30
P = precisions.Precision
A = crd.Availability
CATALOG = catalogs.default_catalog()
TABLE = catalogs.default_precisions()
OVERHEAD = memory.RUNTIME_OVERHEAD_BYTES
LLAMA_8B = 8.03e9
LLAMA_8B_EMBEDDING = 1.05e9
LLAMA_8B_KV_BYTES_PER_TOKEN = 131072  # 2 x 32 layers x 8 KV heads x 128 x 2 bytes


def gpu(gpu_id: str) -> gpus.GpuModel:
    found = CATALOG.get(gpu_id)
    assert found is not None, gpu_id
    return found


def fractions(p95: float, p99: float | None = None, top: float | None = None) -> profiles.Fractions:
    p99 = p95 if p99 is None else p99
    top = p99 if top is None else top
    return profiles.Fractions(p50=p95 / 2, p95=p95, p99=p99, max=top)


def usage(
    peak_gib: float | None,
    p95: float = 0.05,
    *,
    p99: float | None = None,
    top: float | None = None,
    dram: float | None = 0.02,
    power: float | None = None,
    kv_max: float | None = None,
    kv_tokens: int | None = None,
    kv_bytes: int | None = None,
    peak_bytes: float | None = None,
) -> profiles.UsageProfile:
    peak = peak_bytes if peak_bytes is not None else (peak_gib or 0) * GIB
    used = None
    if peak_gib is not None or peak_bytes is not None:
        used = profiles.Percentiles(p50=peak * 0.9, p95=peak, p99=peak, max=peak)
    return profiles.UsageProfile(
        window="7d",
        samples=10080,
        coverage=1.0,
        memory_used_bytes=used,
        graphics_engine_active=fractions(p95, p99, top),
        dram_active=None if dram is None else fractions(dram),
        power_watts=None
        if power is None
        else profiles.Percentiles(p50=power, p95=power, p99=power, max=power, mean=power),
        kv_cache_usage=None if kv_max is None else fractions(kv_max),
        kv_cache_capacity_tokens=kv_tokens,
        kv_cache_capacity_bytes=kv_bytes,
    )


def workload(
    current: str,
    use: profiles.UsageProfile | None,
    *,
    mig: str | None = None,
    count: int = 1,
    model: crd.ModelSpec | None = None,
    vllm: bool = False,
    previous: crd.Recommendation | None = None,
    max_model_len: int | None = None,
    rules: Mapping[str, object] | None = None,
    **policy: object,
) -> workloads.Workload:
    """A workload on ``current``; its policy is ``rules`` and the camelCase keyword fields."""
    return workloads.Workload(
        ref=workloads.WorkloadRef(namespace="ml", name="chat"),
        spec=crd.GPUWorkloadSpec(
            target_ref=crd.TargetRef(name="chat"),
            model=model,
            serving=crd.Serving(engine=crd.ServingEngine.VLLM if vllm else None),
            policy=crd.Policy.model_validate({**(rules or {}), **policy}),
        ),
        current=workloads.CurrentAllocation(
            gpu_model=current, mig_profile=mig, gpus_per_replica=count, replicas=2
        ),
        usage=use,
        previous=previous,
        max_model_len=max_model_len,
    )


def evaluate(
    w: workloads.Workload,
    stock: inventory.Inventory | None = None,
    catalog: gpus.Catalog = CATALOG,
) -> engine.Evaluation:
    return priced.attach([engine.evaluate_one(w, catalog, TABLE, stock)], catalog, TABLE)[0]


def node(
    name: str,
    gpu_id: str,
    *,
    whole: int = 8,
    free: int | None = None,
    mig: dict[str, int] | None = None,
    mig_free: dict[str, int] | None = None,
    mig_capable: bool | None = None,
    schedulable: bool = True,
) -> inventory.NodeGPUs:
    model = gpu(gpu_id)
    mig = mig or {}
    return inventory.NodeGPUs(
        name=name,
        product=model.aliases[0],
        gpu_model=model.id,
        gpu_count=whole + (1 if mig else 0),
        mig_capable=model.mig_capable if mig_capable is None else mig_capable,
        mig_strategy=inventory.MigStrategy.MIXED if mig else inventory.MigStrategy.NONE,
        mig_config="custom" if mig else None,
        whole_allocatable=whole,
        whole_free=whole if free is None else free,
        mig_allocatable=mig,
        mig_free=dict(mig) if mig_free is None else mig_free,
        schedulable=schedulable,
    )


def cluster(*nodes: inventory.NodeGPUs) -> inventory.Inventory:
    return inventory.Inventory(nodes, "test nodes")


def llama_8b(
    *variants: crd.Variant, max_model_len: int | None = None, kv_bytes_per_token: int | None = None
) -> crd.ModelSpec:
    return crd.ModelSpec(
        name="meta-llama/Llama-3.1-8B-Instruct",
        parameters=LLAMA_8B,
        embedding_parameters=LLAMA_8B_EMBEDDING,
        variants=variants,
        max_model_len=max_model_len,
        kv_cache_bytes_per_token=kv_bytes_per_token,
    )


def recommended(result: engine.Evaluation) -> crd.Recommendation:
    assert result.outcome == engine.Outcome.RECOMMENDED, result.message
    assert result.recommendation is not None
    return result.recommendation


def kept(result: engine.Evaluation) -> crd.Recommendation:
    assert result.outcome == engine.Outcome.NO_CHANGE, result.message
    assert result.recommendation is not None
    assert result.current is not None
    assert result.recommendation.gpu_model == result.current.gpu_model
    return result.recommendation


def rejected(rec: crd.Recommendation) -> str:
    return next((r for r in rec.reasons if r.startswith("cheaper allocations rejected")), "")


# ---------------------------------------------------------------------------------------------
# inventory: what the cluster has, and has free


A100_ONLY = cluster(node("a100-0", "A100-80GB"), node("a100-1", "A100-80GB", free=2))


def test_a100_only_cluster_recommends_an_a100_and_shows_the_cheaper_l4_as_not_in_cluster() -> None:
    assert gpu("L4").price.per_gpu_hour < gpu("A100-80GB").price.per_gpu_hour
    w = workload(
        "H100-80GB",
        usage(10, 0.05),
        allowedGPUModels=["A100-80GB", "L4", "H100-80GB", "H200-141GB", "B200"],
        allowMIG=False,
    )
    result = evaluate(w, A100_ONLY)
    rec = recommended(result)
    assert (rec.gpu_model, rec.mig_profile, rec.availability) == ("A100-80GB", None, A.IN_CLUSTER)
    outside = [c for c in result.alternatives if c.availability == A.NOT_IN_CLUSTER]
    assert [c.gpu_model for c in outside] == ["L4"]
    assert outside[0].hourly_cost < rec.hourly_cost
    assert result.capacity is not None and result.capacity[0] is True
    assert any("inventory (test nodes: A100-80GB)" in r for r in rec.reasons), rec.reasons
    # Without an inventory the whole catalog is considered: the L4 itself is recommended.
    free = recommended(evaluate(w))
    assert free.gpu_model == "L4" and free.availability is None


@pytest.mark.parametrize("current", ["H100-80GB", "H200-141GB", "B200"])
def test_an_a100_only_cluster_never_yields_hopper_or_blackwell(current: str) -> None:
    for p95 in (0.01, 0.05, 0.2, 0.5):
        for peak in (5, 20, 60, 75):
            result = evaluate(workload(current, usage(peak, p95, dram=0.1)), A100_ONLY)
            rec = result.recommendation
            if result.outcome == engine.Outcome.RECOMMENDED:
                assert rec is not None and rec.gpu_model == "A100-80GB", (p95, peak, rec)
                assert rec.availability == A.IN_CLUSTER
            for c in result.alternatives:
                if c.gpu_model in {"H100-80GB", "H200-141GB", "B200", "L4"}:
                    assert c.availability == A.NOT_IN_CLUSTER, c


def test_a_cheaper_h100_fit_outside_the_cluster_is_shown_not_recommended() -> None:
    # 25% engine activity on an H200 is 247 TFLOPS: 79% of an A100 (above the 70% target), 25%
    # of an H100, which is 13% cheaper than the H200.
    h100, h200, a100 = gpu("H100-80GB"), gpu("H200-141GB"), gpu("A100-80GB")
    assert 0.25 * h200.bf16_dense_tflops / a100.bf16_dense_tflops > 0.7
    assert h100.price.per_gpu_hour <= 0.9 * h200.price.per_gpu_hour
    w = workload(
        "H200-141GB",
        usage(60, 0.25, dram=0.3, power=400),
        allowedGPUModels=["A100-80GB", "H100-80GB"],
        allowMIG=False,
    )
    result = evaluate(w, A100_ONLY)
    kept(result)
    assert [(c.gpu_model, c.availability) for c in result.alternatives] == [
        ("H100-80GB", A.NOT_IN_CLUSTER)
    ]
    assert recommended(evaluate(w)).gpu_model == "H100-80GB"


def test_unschedulable_and_unknown_nodes_offer_nothing() -> None:
    stock = cluster(
        node("l4-cordoned", "L4", schedulable=False),
        inventory.NodeGPUs(
            name="mystery",
            product="NVIDIA-Mystery",
            gpu_model=None,
            gpu_count=8,
            mig_capable=False,
            mig_strategy="none",
            mig_config=None,
            whole_allocatable=8,
            whole_free=8,
        ),
        node("a100-0", "A100-80GB"),
    )
    w = workload("H100-80GB", usage(10, 0.05), allowedGPUModels=["A100-80GB", "L4"])
    result = evaluate(w, stock)
    rec = recommended(result)
    assert rec.gpu_model == "A100-80GB"
    assert all(
        c.gpu_model != "L4" or c.availability == A.NOT_IN_CLUSTER for c in result.alternatives
    )


# ---------------------------------------------------------------------------------------------
# MIG: offered by a node, or reachable by repartitioning one


SMALL = usage(4, 0.01, dram=0.01)


def test_a_mig_profile_is_recommended_where_a_node_offers_it() -> None:
    stock = cluster(node("a100-mig", "A100-80GB", whole=4, mig={"1g.10gb": 7}))
    rec = recommended(evaluate(workload("H100-80GB", SMALL, allowedGPUModels=["A100-80GB"]), stock))
    assert (rec.gpu_model, rec.mig_profile, rec.availability) == (
        "A100-80GB",
        "1g.10gb",
        A.IN_CLUSTER,
    )
    assert not any("repartition" in r for r in rec.reasons)


def test_a_mig_profile_no_node_offers_is_not_recommended_without_allow_repartition() -> None:
    stock = cluster(node("a100-0", "A100-80GB", mig_capable=True))
    result = evaluate(workload("H100-80GB", SMALL, allowedGPUModels=["A100-80GB"]), stock)
    rec = recommended(result)
    assert (rec.gpu_model, rec.mig_profile) == ("A100-80GB", None)
    migs = [c for c in result.alternatives if c.mig_profile]
    assert migs and all(c.availability == A.NOT_IN_CLUSTER for c in migs)


def test_allow_mig_repartition_recommends_a_profile_on_a_mig_capable_node() -> None:
    stock = cluster(node("a100-0", "A100-80GB", mig_capable=True))
    w = workload("H100-80GB", SMALL, allowedGPUModels=["A100-80GB"], allowMIGRepartition=True)
    rec = recommended(evaluate(w, stock))
    assert rec.gpu_model == "A100-80GB" and rec.mig_profile is not None
    assert rec.availability == A.NEEDS_REPARTITION
    assert any("repartitioned" in r and "allowMIGRepartition" in r for r in rec.reasons)


def test_repartition_needs_a_mig_capable_node_with_a_whole_gpu_free() -> None:
    w = workload("H100-80GB", SMALL, allowedGPUModels=["A100-80GB"], allowMIGRepartition=True)
    # Not MIG-capable (e.g. mig.capable=false): nothing to repartition.
    rec = recommended(evaluate(w, cluster(node("a100-0", "A100-80GB", mig_capable=False))))
    assert rec.mig_profile is None
    # MIG-capable but no whole GPU free: the profile fits but has no room.
    full = evaluate(w, cluster(node("a100-0", "A100-80GB", mig_capable=True, free=0)))
    assert full.outcome == engine.Outcome.NO_CHANGE, full.message
    assert any(c.mig_profile and c.availability == A.NO_FREE_CAPACITY for c in full.alternatives), (
        full.alternatives
    )


# ---------------------------------------------------------------------------------------------
# free capacity


def test_no_free_capacity_for_the_best_fit_recommends_the_next_best_with_room() -> None:
    l4, l40s = gpu("L4"), gpu("L40S")
    assert l4.price.per_gpu_hour < l40s.price.per_gpu_hour
    stock = cluster(node("l4-0", "L4", free=0), node("l40s-0", "L40S", whole=4, free=1))
    w = workload("H100-80GB", usage(10, 0.05), allowedGPUModels=["L4", "L40S"])
    result = evaluate(w, stock)
    rec = recommended(result)
    assert (rec.gpu_model, rec.availability) == ("L40S", A.IN_CLUSTER)
    assert result.capacity is not None
    assert result.capacity[:2] == (False, "NoFreeCapacity")
    assert "1x L4" in result.capacity[2]
    assert result.capacity[2] in rec.reasons
    full = [c for c in result.alternatives if c.availability == A.NO_FREE_CAPACITY]
    assert [c.gpu_model for c in full] == ["L4"]
    # With room on the L4 node, the L4 is recommended.
    roomy = cluster(node("l4-0", "L4", free=1), node("l40s-0", "L40S", whole=4, free=1))
    assert recommended(evaluate(w, roomy)).gpu_model == "L4"


def test_a_replica_must_fit_on_one_node() -> None:
    # 2x H100 with 60 GiB in use on each: only 2x A100 holds it (72 GiB with headroom per GPU).
    w = workload(
        "H100-80GB", usage(60, 0.05), count=2, allowedGPUModels=["A100-80GB"], allowMIG=False
    )
    # Two nodes with one free A100 each do not hold a two-GPU replica.
    split = cluster(node("a-0", "A100-80GB", free=1), node("a-1", "A100-80GB", free=1))
    result = evaluate(w, split)
    kept(result)
    assert [(c.gpus_per_replica, c.availability) for c in result.alternatives] == [
        (2, A.NO_FREE_CAPACITY)
    ]
    assert result.capacity is not None and result.capacity[1] == "NoFreeCapacity"
    together = cluster(node("a-0", "A100-80GB", free=2), node("a-1", "A100-80GB", free=1))
    rec = recommended(evaluate(w, together))
    assert (rec.gpu_model, rec.gpus_per_replica) == ("A100-80GB", 2)


# ---------------------------------------------------------------------------------------------
# vLLM startability


def vllm_8b_on_h100(
    max_model_len: int | None, *, container_len: int | None = None, **policy: object
) -> workloads.Workload:
    """vLLM serving Llama 3.1 8B BF16 on an H100 at gpu_memory_utilization 0.9.

    The KV pool holds everything of the 90% beyond weights and runtime; DCGM sees exactly
    weights + pool + runtime (no unexplained memory); the cache peaked at 2%.
    """
    h100 = gpu("H100-80GB")
    weights = memory.weights_bytes(LLAMA_8B, LLAMA_8B_EMBEDDING, P.BF16)
    pool_bytes = 0.9 * h100.usable_memory_bytes - weights - OVERHEAD
    tokens = int(pool_bytes // LLAMA_8B_KV_BYTES_PER_TOKEN)
    peak = weights + tokens * LLAMA_8B_KV_BYTES_PER_TOKEN + OVERHEAD
    defaults: dict[str, object] = {
        "allowedGPUModels": ["H100-80GB", "L4"],
        "allowMIG": False,
        "memoryHeadroomPercent": 0,
        "latency": {"guard": "Off"},
    }
    return workload(
        "H100-80GB",
        usage(None, 0.02, peak_bytes=peak, kv_max=0.02, kv_tokens=tokens),
        model=llama_8b(max_model_len=max_model_len, kv_bytes_per_token=LLAMA_8B_KV_BYTES_PER_TOKEN),
        vllm=True,
        max_model_len=container_len,
        rules={**defaults, **policy},
    )


def l4_kv_pool_bytes() -> float:
    weights = memory.weights_bytes(LLAMA_8B, LLAMA_8B_EMBEDDING, P.BF16)
    return 0.9 * gpu("L4").usable_memory_bytes - OVERHEAD - weights


def test_vllm_is_not_moved_where_its_kv_pool_cannot_hold_max_model_len() -> None:
    # On an L4 the KV pool is about 3.7 GiB: 128k tokens of 128 KiB (16 GiB) do not fit.
    assert l4_kv_pool_bytes() < 131072 * LLAMA_8B_KV_BYTES_PER_TOKEN
    result = evaluate(vllm_8b_on_h100(131072))
    rec = kept(result)
    assert "the engine would not start" in rejected(rec), rec.reasons
    assert rec.engine_settings is not None and rec.engine_settings.max_model_len == 131072


def test_vllm_with_a_short_max_model_len_moves_and_carries_its_engine_settings() -> None:
    assert l4_kv_pool_bytes() > 2048 * LLAMA_8B_KV_BYTES_PER_TOKEN
    rec = recommended(evaluate(vllm_8b_on_h100(2048)))
    assert rec.gpu_model == "L4"
    assert rec.engine_settings is not None
    assert rec.engine_settings.gpu_memory_utilization == 0.9
    assert rec.engine_settings.max_model_len == 2048
    assert any(r.startswith("vLLM starts: its KV pool") and "2,048" in r for r in rec.reasons)


def test_vllm_max_model_len_from_the_container_is_checked_too() -> None:
    rec = kept(evaluate(vllm_8b_on_h100(None, container_len=131072)))
    assert "the engine would not start" in rejected(rec)
    assert rec.engine_settings is not None and rec.engine_settings.max_model_len == 131072
    moved = recommended(evaluate(vllm_8b_on_h100(None, container_len=2048)))
    assert moved.engine_settings is not None and moved.engine_settings.max_model_len == 2048


def test_vllm_without_max_model_len_says_startability_was_not_checked() -> None:
    rec = recommended(evaluate(vllm_8b_on_h100(None)))
    assert any("whether vLLM starts on a smaller pool was not checked" in r for r in rec.reasons)


# ---------------------------------------------------------------------------------------------
# latency guard


def vllm_8b_latency(
    guard: str, *variants: crd.Variant, max_decode: float | None = None
) -> workloads.Workload:
    """vLLM 8B on an H100 that could move to an A10 (about a fifth of the bandwidth)."""
    ratio = gpu("H100-80GB").memory_bandwidth_gb_per_s / gpu("A10").memory_bandwidth_gb_per_s
    assert 5 <= ratio <= 6
    h100 = gpu("H100-80GB")
    weights = memory.weights_bytes(LLAMA_8B, LLAMA_8B_EMBEDDING, P.BF16)
    pool = int(0.9 * h100.usable_memory_bytes - weights - OVERHEAD)
    latency: dict[str, object] = {
        "guard": guard,
        # Prefill on an A10 is 8x slower; this case is about decode.
        "maxTimeToFirstTokenSlowdown": 10,
        "maxTimePerOutputTokenSlowdown": max_decode or 0.75 * ratio,
    }
    return workload(
        "H100-80GB",
        usage(None, 0.02, peak_bytes=weights + pool + OVERHEAD, kv_max=0.02, kv_bytes=pool),
        model=llama_8b(*variants),
        vllm=True,
        allowedGPUModels=["H100-80GB", "A10"],
        allowMIG=False,
        memoryHeadroomPercent=0,
        latency=latency,
    )


def test_latency_guard_auto_keeps_vllm_off_a_gpu_with_a_fifth_of_the_bandwidth() -> None:
    rec = kept(evaluate(vllm_8b_latency("Auto")))
    assert "over the latency guard" in rejected(rec), rec.reasons


def test_latency_guard_off_lets_it_move() -> None:
    rec = recommended(evaluate(vllm_8b_latency("Off")))
    assert rec.gpu_model == "A10" and rec.variant is None
    ratio = gpu("H100-80GB").memory_bandwidth_gb_per_s / gpu("A10").memory_bandwidth_gb_per_s
    # Same bytes read per step, a fifth of the bandwidth: decode about 5.6x slower.
    assert rec.projected_time_per_output_token_slowdown == pytest.approx(ratio, abs=1e-3)


def test_an_fp8_variant_that_halves_bytes_read_passes_the_guard() -> None:
    fp8 = crd.Variant(name="fp8", precision=P.FP8, quality_recovery=0.995)
    result = evaluate(vllm_8b_latency("Auto", fp8))
    rec = recommended(result)
    assert (rec.gpu_model, rec.variant, rec.precision) == ("A10", "fp8", P.FP8)
    decode = rec.projected_time_per_output_token_slowdown
    ratio = gpu("H100-80GB").memory_bandwidth_gb_per_s / gpu("A10").memory_bandwidth_gb_per_s
    assert decode is not None and 0.5 * ratio < decode <= 0.75 * ratio
    assert any(r.startswith("projected latency: time per output token") for r in rec.reasons)


def batch_8b(guard: str) -> workloads.Workload:
    """8B BF16 on an H100, not served (no vLLM, no serving engine); an A10 holds it."""
    return workload(
        "H100-80GB",
        usage(16, 0.02),
        model=llama_8b(),
        allowedGPUModels=["H100-80GB", "A10"],
        allowMIG=False,
        latency={
            "guard": guard,
            "maxTimeToFirstTokenSlowdown": 1.0,
            "maxTimePerOutputTokenSlowdown": 1.0,
        },
    )


def test_latency_guard_auto_leaves_batch_workloads_alone() -> None:
    assert recommended(evaluate(batch_8b("Auto"))).gpu_model == "A10"
    assert "over the latency guard" in rejected(kept(evaluate(batch_8b("Enforce"))))


# ---------------------------------------------------------------------------------------------
# p99 and peak compute


def burst(p95: float, p99: float, top: float, **policy: object) -> engine.Evaluation:
    # 989 / 362 = 2.73: p95 20% on the H100 is 55% of an L40S (under the 70% target).
    assert gpu("H100-80GB").bf16_dense_tflops / gpu("L40S").bf16_dense_tflops == pytest.approx(
        2.73, abs=0.01
    )
    w = workload(
        "H100-80GB",
        usage(20, p95, p99=p99, top=top, power=500),
        allowedGPUModels=["H100-80GB", "L40S"],
        allowMIG=False,
        rules=policy,
    )
    return evaluate(w)


def test_a_p99_burst_blocks_a_candidate_the_p95_alone_would_allow() -> None:
    assert recommended(burst(0.2, 0.3, 0.3)).gpu_model == "L40S"  # p99 82% <= 90%
    rec = kept(burst(0.2, 0.35, 0.35))  # p99 96% > 90%
    assert "over the compute targets (p95, p99 or peak)" in rejected(rec)


def test_the_burst_target_is_the_policy_s() -> None:
    assert recommended(burst(0.2, 0.35, 0.35, burstComputeUtilization=1.0)).gpu_model == "L40S"


def test_the_peak_must_fit_the_whole_gpu() -> None:
    # p99 fine, but the peak, 40% of an H100, is 109% of an L40S.
    rec = kept(burst(0.2, 0.3, 0.4, burstComputeUtilization=1.0))
    assert "over the compute targets" in rejected(rec)


# ---------------------------------------------------------------------------------------------
# impossible input


def declined(w: workloads.Workload) -> engine.Evaluation:
    result = evaluate(w)
    assert result.outcome == engine.Outcome.DECLINED, (result.outcome, result.message)
    assert result.reason == "ImpossibleUsage"
    assert result.recommendation is None
    assert result.alternatives == ()
    assert result.savings is None
    return result


def test_zero_memory_while_active_is_declined() -> None:
    result = declined(workload("H100-80GB", usage(0, 0.3)))
    assert "0 bytes" in result.message
    # Idle with no memory is no contradiction.
    assert evaluate(workload("H100-80GB", usage(0, 0.0))).outcome != engine.Outcome.DECLINED


def test_a_vllm_kv_capacity_of_zero_is_declined() -> None:
    w = workload("H100-80GB", usage(72, 0.1, kv_max=0.2, kv_tokens=0), model=llama_8b(), vllm=True)
    assert "KV-cache pool of 0 tokens" in declined(w).message
    w = workload("H100-80GB", usage(72, 0.1, kv_max=0.2, kv_bytes=0), model=llama_8b(), vllm=True)
    declined(w)


def test_declared_weights_above_the_observed_memory_are_declined() -> None:
    # 8B in BF16 is 15 GiB of weights; DCGM never saw more than 10 GiB in use.
    result = declined(workload("H100-80GB", usage(10, 0.1), model=llama_8b()))
    assert "spec.model declares" in result.message
    # 15 GiB seen: consistent.
    assert evaluate(workload("H100-80GB", usage(16, 0.1), model=llama_8b())).outcome in {
        engine.Outcome.RECOMMENDED,
        engine.Outcome.NO_CHANGE,
    }


def test_vllm_memory_below_weights_and_kv_pool_is_declined() -> None:
    # 15 GiB of weights and a 40 GiB pool, yet DCGM saw 30 GiB in use.
    use = usage(30, 0.1, kv_max=0.2, kv_bytes=40 * GIB)
    result = declined(workload("H100-80GB", use, model=llama_8b(), vllm=True))
    assert "less than its declared weights" in result.message


# ---------------------------------------------------------------------------------------------
# unknown memory


def test_unknown_memory_gets_nothing_with_less_memory() -> None:
    # Without a memory series the whole 80 GB is planned (here without headroom): an A100-80GB
    # (81920 MiB usable) holds it, nothing smaller may be considered.
    h100 = gpu("H100-80GB")
    result = evaluate(workload("H100-80GB", usage(None, 0.05), memoryHeadroomPercent=0))
    candidates = [result.recommendation, *result.alternatives]
    assert result.outcome == engine.Outcome.RECOMMENDED, result.message
    for c in candidates:
        assert c is not None
        assert c.memory_available_bytes * c.gpus_per_replica >= h100.usable_memory_bytes, c
    rec = recommended(result)
    assert any("GPU memory use is unknown" in r for r in rec.reasons)


def test_unknown_memory_of_vllm_with_a_declared_model_gets_nothing_with_less_memory() -> None:
    # vLLM with a declared model and KV metrics, but no DCGM_FI_DEV_FB_USED series: what vLLM
    # holds beyond weights and KV pool (activations, CUDA graphs...) is unknown, so no
    # allocation with less memory than the current one may be considered.
    h200 = gpu("H200-141GB")
    use = usage(None, 0.02, kv_max=0.1, kv_bytes=50 * GIB)
    result = evaluate(
        workload("H200-141GB", use, model=llama_8b(), vllm=True, latency={"guard": "Off"})
    )
    for c in [result.recommendation, *result.alternatives]:
        assert c is not None
        target = gpu(c.gpu_model)
        assert target.slot_memory_bytes(c.mig_profile) * c.gpus_per_replica >= (
            h200.usable_memory_bytes
        ), f"{c.describe()} has less memory than the H200 although memory use is unknown"


# ---------------------------------------------------------------------------------------------
# minimum saving, hysteresis, energy


def priced_catalog(**prices: float) -> gpus.Catalog:
    return CATALOG.with_overrides(
        gpus.CatalogOverrides(
            prices={
                gpu_id: gpus.Price(per_gpu_hour=price, source="test", date="2025-01")
                for gpu_id, price in prices.items()
            }
        )
    )


def l40s_to_l40(**policy: object) -> workloads.Workload:
    # L40S and L40: same memory and bandwidth, the L40 half the compute. 200 W measured now, so
    # the L40's modelled power is lower and the energy rule does not apply.
    return workload(
        "L40S", usage(20, 0.1, power=200), allowedGPUModels=["L40S", "L40"], rules=policy
    )


def test_a_five_percent_saving_is_not_recommended_with_the_default_minimum() -> None:
    catalog = priced_catalog(L40=round(gpu("L40S").price.per_gpu_hour * 0.95, 4))
    rec = kept(evaluate(l40s_to_l40(), catalog=catalog))
    assert "a saving below the policy minimum" in rejected(rec)
    moved = recommended(evaluate(l40s_to_l40(minSavingsPercent=4), catalog=catalog))
    assert moved.gpu_model == "L40"


def test_a_monthly_saving_below_the_policy_minimum_is_not_recommended() -> None:
    catalog = priced_catalog(L40=1.0)
    saving = (gpu("L40S").price.per_gpu_hour - 1.0) * catalog.hours_per_month * 2
    result = evaluate(l40s_to_l40(), catalog=catalog)
    assert recommended(result).gpu_model == "L40"
    assert result.savings is not None
    assert result.savings.monthly_cost == pytest.approx(saving, abs=0.01)
    blocked = evaluate(l40s_to_l40(minMonthlySavings=saving + 1), catalog=catalog)
    assert "a saving below the policy minimum" in rejected(kept(blocked))


def previous(gpu_id: str, catalog: gpus.Catalog) -> crd.Recommendation:
    return crd.Recommendation(
        gpu_model=gpu_id,
        gpus_per_replica=1,
        replicas=2,
        precision=P.BF16,
        hourly_cost=catalog.get(gpu_id).price.per_gpu_hour,  # type: ignore[union-attr]
        memory_need_bytes=0,
        memory_available_bytes=0,
        confidence=0.5,
    )


def test_hysteresis_keeps_a_previous_recommendation_within_five_percent() -> None:
    # From an H100: the L40 is the cheapest fit, the L40S 3% dearer; the L4 would be cheaper
    # still but has too little memory (24 GiB with headroom).
    catalog = priced_catalog(L40=1.80, L40S=1.86)
    w = workload("H100-80GB", usage(20, 0.05), allowedGPUModels=["L40", "L40S", "L4"])
    assert recommended(evaluate(w, catalog=catalog)).gpu_model == "L40"
    stay = w.model_copy(update={"previous": previous("L40S", catalog)})
    assert recommended(evaluate(stay, catalog=catalog)).gpu_model == "L40S"
    # 10% dearer: the new best wins.
    dearer = priced_catalog(L40=1.80, L40S=1.98)
    stay = w.model_copy(update={"previous": previous("L40S", dearer)})
    assert recommended(evaluate(stay, catalog=dearer)).gpu_model == "L40"
    # A previous recommendation that no longer fits is dropped.
    gone = w.model_copy(update={"previous": previous("L4", catalog)})
    assert recommended(evaluate(gone, catalog=catalog)).gpu_model == "L40"


def l40_to_l40s(l40s_price: float) -> engine.Evaluation:
    # From an L40 to an L40S: twice the compute at 350 W instead of 300 W, so at the same work the
    # L40S draws more (modelled: idle + (TDP - idle) x activity).
    l40, l40s = gpu("L40"), gpu("L40S")
    mean = 0.02
    now = l40.idle_watts + (l40.tdp_watts - l40.idle_watts) * mean
    after = l40s.idle_watts + (l40s.tdp_watts - l40s.idle_watts) * mean / 2
    assert after > now
    w = workload("L40", usage(20, 2 * mean), allowedGPUModels=["L40", "L40S"])
    return evaluate(w, catalog=priced_catalog(L40S=l40s_price))


def test_a_cheaper_candidate_that_raises_power_needs_a_clear_saving() -> None:
    price = gpu("L40").price.per_gpu_hour
    # 12% cheaper (over the 10% minimum) but more power: below the 20% an energy raise needs.
    rec = kept(l40_to_l40s(round(price * 0.88, 4)))
    assert "more energy for a small saving" in rejected(rec)
    # 25% cheaper: worth the energy.
    assert recommended(l40_to_l40s(round(price * 0.75, 4))).gpu_model == "L40S"
