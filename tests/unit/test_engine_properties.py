"""Properties of the recommendation engine over random, valid workloads and catalogs.

Every generated workload is valid (its GPU and MIG profile are in the catalog, its percentiles are
ordered, its policy names only catalog GPUs), so the engine's only possible outcomes are
Recommended, NoChange and InsufficientData. For each outcome the tests check the promises of
DESIGN §6 against numbers recomputed here from the inputs, independently of the engine's arrays.

The memory invariant, derived from ``recommend/memory.py``. Write G for the current GPUs per
replica, n for the candidate's (never more than G), P for the observed peak
(``usage.memoryUsedBytes.max``, per GPU), O for the planned runtime overhead per GPU
(``memory.RUNTIME_OVERHEAD_BYTES``), h for ``1 + memoryHeadroomPercent / 100``, W(p) for the
declared model's weights at precision p (0 without a declared model) and c for the current
precision. The replica's total is spread over the candidate's GPUs:

    need = (W(p) + rest + O*G) / n * h          (per GPU or MIG instance)

where ``rest`` (KV cache and activations of the whole replica) is

* not vLLM:                                 max(0, P*G - W(c) - O*G)
* vLLM with a declared model and KV usage:  f * capacity * G, f = 1 when the KV cache saturated
  (a preemption, or usage >= 0.98) else the peak KV usage; capacity = kvCacheCapacityBytes or
  max(0, gpuMemoryUtilization * slot - W(c)/G - O)
* vLLM otherwise (pre-allocation hides the need): max(0, P*G - O*G)

Hence the floor the engine never goes below, "observed peak need plus headroom":

    not vLLM:  need * n / h  >=  P*G - (W(c) - W(p))
    vLLM:      need * n / h  >=  W(p) + rest + O*G

i.e. everything the replica was seen to hold, less only the weight bytes a chosen declared
variant saves; with the current precision this is ``need >= P * G / n * h``, the observed
peak per GPU scaled to the candidate's GPU count, plus headroom.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from gpu_rightsizer import catalogs
from gpu_rightsizer.models import crd, durations, gpus, precisions, profiles, workloads
from gpu_rightsizer.recommend import engine, memory, slots as slots_

GIB = 2**30
CATALOG = catalogs.default_catalog()
TABLE = catalogs.default_precisions()
GPU_COUNTS = (1, 2, 4, 8)
WINDOWS = ("30m", "1h", "6h", "12h", "1d", "3d", "7d", "14d")
MIN_OBSERVATIONS = ("1h", "12h", "24h", "1d", "3d", "7d")
OUTCOMES_WITH_DATA = {engine.Outcome.RECOMMENDED, engine.Outcome.NO_CHANGE}
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Slack for comparisons against figures the engine rounds (utilization to 4 places) or
# truncates (bytes to int).
UTILIZATION_SLACK = 5e-5 + 1e-9
COST_EPS = 1e-9


# ---------------------------------------------------------------------------------------------
# strategies


@st.composite
def catalogs_(draw: st.DrawFn) -> gpus.Catalog:
    """The default catalog, sometimes with perturbed prices, sometimes with a subset of GPUs."""
    catalog = CATALOG
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(catalog.ids), unique=True, max_size=8))
        factors = st.one_of(st.sampled_from((0.5, 1.0, 2.0)), st.floats(0.2, 5.0))
        prices = {
            gpu_id: gpus.Price(
                per_gpu_hour=round(catalog.get(gpu_id).price.per_gpu_hour * draw(factors), 4),  # type: ignore[union-attr]
                source="property test",
                date="2025-01",
            )
            for gpu_id in chosen
        }
        catalog = catalog.with_overrides(gpus.CatalogOverrides(prices=prices))
    if draw(st.booleans()):
        keep = draw(st.lists(st.sampled_from(catalog.ids), unique=True, min_size=1))
        catalog = catalog.model_copy(
            update={"gpus": tuple(g for g in catalog.gpus if g.id in keep)}
        )
    return catalog


def _percentiles(
    draw: st.DrawFn, cls: type[profiles.Percentiles], high: float
) -> profiles.Percentiles:
    values = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4)))
    p50, p95, p99, top = (v * high for v in values)
    mean = draw(st.one_of(st.none(), st.floats(0.0, 1.0).map(lambda v: v * high)))
    return cls(p50=p50, p95=p95, p99=p99, max=top, mean=mean)


@st.composite
def model_specs(draw: st.DrawFn) -> crd.ModelSpec:
    parameters = draw(
        st.one_of(
            st.sampled_from((0.5e9, 1.5e9, 3e9, 7e9, 8.03e9, 13e9, 34e9, 70.6e9)),
            st.floats(1e8, 2e11),
        )
    )
    embedding = draw(st.one_of(st.none(), st.floats(0.0, 0.2).map(lambda f: f * parameters)))
    precision = draw(st.sampled_from(tuple(precisions.Precision)))
    others = [p for p in precisions.Precision if p != precision]
    variant_precisions = draw(st.lists(st.sampled_from(others), unique=True, max_size=4))
    stems = st.sampled_from(("fp8", "awq", "gptq", "w4a16", "w8a8", "int8", "q", "turbo"))
    names = [f"{draw(stems)}-{i}" for i in range(len(variant_precisions))]
    variants = tuple(
        crd.Variant(
            name=name,
            precision=p,
            quality_recovery=draw(
                st.one_of(st.none(), st.sampled_from((0.93, 0.96, 0.99, 1.0)), st.floats(0.5, 1.0))
            ),
        )
        for name, p in zip(names, variant_precisions, strict=True)
    )
    return crd.ModelSpec(
        name=draw(st.one_of(st.none(), st.just("some/model"))),
        parameters=parameters,
        embedding_parameters=embedding,
        precision=precision,
        variants=variants,
    )


@st.composite
def policies(draw: st.DrawFn, catalog: gpus.Catalog) -> crd.Policy:
    allowed = None
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(catalog.gpus), unique_by=lambda g: g.id, max_size=6))
        # Each allowed GPU named by its id or by one of its aliases.
        allowed = tuple(draw(st.sampled_from((g.id, *g.aliases))) for g in chosen)
    return crd.Policy(
        memory_headroom_percent=draw(st.integers(0, 100)),
        target_compute_utilization=draw(
            st.one_of(st.sampled_from((0.5, 0.7, 0.9, 1.0)), st.floats(0.05, 1.0))
        ),
        allowed_gpu_models=allowed,
        allow_mig=draw(st.booleans()),
        min_quality_recovery=draw(
            st.one_of(st.sampled_from((0.0, 0.9, 0.95, 0.96, 0.97, 0.99, 1.0)), st.floats(0, 1))
        ),
        min_observation=draw(st.sampled_from(MIN_OBSERVATIONS)),
        min_coverage=draw(st.one_of(st.sampled_from((0.0, 0.5, 0.8)), st.floats(0.0, 1.0))),
        max_gpus_per_replica=draw(st.integers(1, 16)),
    )


@st.composite
def usages(
    draw: st.DrawFn, slot_bytes: float, vllm_like: bool, enough: bool | None
) -> profiles.UsageProfile:
    window = draw(st.sampled_from(WINDOWS[3:] if enough else WINDOWS))
    coverage = draw(st.one_of(st.just(1.0), st.floats(0.9, 1.0), st.floats(0.0, 1.0)))
    if enough is False:
        coverage = draw(st.floats(0.0, 0.5))
    observed = draw(
        st.one_of(st.none(), st.floats(0.0, 2.0).map(lambda f: f * 86400.0))
        if enough is None
        else st.none()
    )
    memory_used = _percentiles(draw, profiles.Percentiles, slot_bytes)
    kv = kv_capacity = preemptions = None
    if vllm_like:
        kv = _percentiles(draw, profiles.Fractions, 1.0)
        kv_capacity = draw(st.one_of(st.none(), st.integers(0, int(slot_bytes))))
        preemptions = draw(st.one_of(st.none(), st.just(0), st.integers(0, 50)))
    return profiles.UsageProfile(
        window=window,
        samples=draw(st.one_of(st.just(10080), st.integers(0, 100_000))),
        coverage=coverage,
        observed_seconds=observed,
        memory_used_bytes=memory_used,
        graphics_engine_active=_percentiles(draw, profiles.Fractions, 1.0),
        dram_active=(_percentiles(draw, profiles.Fractions, 1.0) if draw(st.booleans()) else None),
        power_watts=(
            _percentiles(draw, profiles.Percentiles, 1000.0) if draw(st.booleans()) else None
        ),
        kv_cache_usage=kv,
        kv_cache_capacity_bytes=kv_capacity,
        preemptions=preemptions,
    )


@st.composite
def workloads_(
    draw: st.DrawFn,
    catalog: gpus.Catalog,
    index: int = 0,
    enough: bool | None = None,
    vllm: bool = False,
) -> workloads.Workload:
    """A valid workload for ``catalog``.

    ``enough`` forces (True) or rules out (False) sufficient history; ``vllm`` makes it a vLLM
    server with a declared model and KV-cache metrics.
    """
    gpu = draw(st.sampled_from(catalog.gpus))
    name = draw(st.sampled_from((gpu.id, *gpu.aliases)))
    mig = None
    if gpu.mig_profiles and draw(st.booleans()):
        mig = draw(st.sampled_from(gpu.mig_profiles)).name
    count = 1 if mig else draw(st.sampled_from(GPU_COUNTS))
    kinds = (None, crd.ServingEngine.VLLM, crd.ServingEngine.OTHER)
    engine_kind = crd.ServingEngine.VLLM if vllm else draw(st.sampled_from(kinds))
    vllm_like = engine_kind == crd.ServingEngine.VLLM or (
        engine_kind is None and draw(st.booleans())
    )
    serving = crd.Serving(
        engine=engine_kind,
        gpu_memory_utilization=draw(st.sampled_from((0.9, 0.85, 0.95, 0.5, 1.0))),
    )
    policy = draw(policies(catalog))
    if enough:
        policy = policy.model_copy(update={"min_observation": "12h", "min_coverage": 0.5})
    elif enough is False:
        policy = policy.model_copy(update={"min_coverage": 0.6})
    spec = crd.GPUWorkloadSpec(
        target_ref=crd.TargetRef(name=f"model-{index}"),
        model=draw(model_specs() if vllm else st.one_of(st.none(), model_specs())),
        serving=serving,
        policy=policy,
    )
    slot_bytes = memory.slot_memory_bytes(gpu, mig)
    usage = None
    if enough is not None or draw(st.integers(0, 19)) > 0:
        usage = draw(usages(slot_bytes, vllm_like, enough))
    if usage is not None and enough:
        usage = usage.model_copy(update={"samples": max(usage.samples, 1), "coverage": 1.0})
    return workloads.Workload(
        ref=workloads.WorkloadRef(namespace=f"team-{index % 3}", name=f"model-{index}"),
        spec=spec,
        current=workloads.CurrentAllocation(
            gpu_model=name,
            mig_profile=mig,
            gpus_per_replica=count,
            replicas=draw(st.integers(0, 10)),
            precision=draw(st.sampled_from(tuple(precisions.Precision))),
        ),
        usage=usage,
    )


@st.composite
def batches(
    draw: st.DrawFn, enough: bool | None = None, max_size: int = 6, vllm: bool = False
) -> tuple[gpus.Catalog, list[workloads.Workload]]:
    catalog = draw(catalogs_())
    size = draw(st.integers(1, max_size))
    return catalog, [draw(workloads_(catalog, i, enough, vllm)) for i in range(size)]


# ---------------------------------------------------------------------------------------------
# the model, recomputed from the inputs


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the invariants need about one workload, computed here rather than by the engine."""

    workload: workloads.Workload
    usage: profiles.UsageProfile
    gpu: gpus.GpuModel
    precision: precisions.Precision
    allowed: frozenset[str] | None
    headroom: float
    vllm: bool
    pool: float
    rest: float
    demand_tflops: float
    demand_bandwidth: float
    current_cost: float


def weights(model: crd.ModelSpec | None, precision: precisions.Precision) -> float:
    if model is None:
        return 0.0
    per = precisions.BYTES_PER_PARAMETER[precision]
    embed = model.embedding_parameters or 0.0
    return (model.parameters - embed) * per + embed * max(per, 2.0)


def speedup(gpu: gpus.GpuModel, precision: precisions.Precision) -> float:
    if precision in gpu.native_precisions:
        return TABLE.get(precision).native_speedup
    return 1.0


def share(gpu: gpus.GpuModel, mig: str | None) -> tuple[float, float, float]:
    """(compute share, memory share, price share) of a whole GPU or MIG instance."""
    if mig is None:
        return 1.0, 1.0, 1.0
    profile = gpu.mig_profile(mig)
    assert profile is not None
    compute, mem = profile.compute_slices / 7, profile.memory_gib / gpu.memory_gib
    return compute, mem, max(compute, mem)


def facts(workload: workloads.Workload, catalog: gpus.Catalog) -> Facts:
    spec, cur, usage = workload.spec, workload.current, workload.usage
    assert usage is not None
    gpu = catalog.resolve(cur.gpu_model)
    assert gpu is not None
    model = spec.model
    precision = model.precision if model else cur.precision
    g = cur.gpus_per_replica
    overhead = memory.RUNTIME_OVERHEAD_BYTES
    peak = usage.memory_used_bytes.max
    slot = (
        gpu.mig_profile(cur.mig_profile).memory_gib if cur.mig_profile else gpu.memory_gib
    ) * GIB  # type: ignore[union-attr]
    kv = usage.kv_cache_usage
    if spec.serving.engine is not None:
        vllm = spec.serving.engine == crd.ServingEngine.VLLM
    else:
        vllm = kv is not None
    w_current = weights(model, precision)
    if not vllm:
        rest = max(0.0, peak * g - w_current - overhead * g)
    elif model is None or kv is None:
        rest = max(0.0, peak * g - overhead * g)
    else:
        if usage.kv_cache_capacity_bytes is not None:
            capacity = float(usage.kv_cache_capacity_bytes)
        else:
            capacity = spec.serving.gpu_memory_utilization * slot - w_current / g - overhead
        saturated = (usage.preemptions or 0) > 0 or kv.max >= memory.KV_SATURATED_FRACTION
        rest = (1.0 if saturated else kv.max) * max(0.0, capacity) * g
    compute, mem, _ = share(gpu, cur.mig_profile)
    dram = usage.dram_active
    allowed = None
    if spec.policy.allowed_gpu_models is not None:
        resolved = [catalog.resolve(name) for name in spec.policy.allowed_gpu_models]
        allowed = frozenset(r.id for r in resolved if r is not None)
    return Facts(
        workload=workload,
        usage=usage,
        gpu=gpu,
        precision=precision,
        allowed=allowed,
        headroom=1 + spec.policy.memory_headroom_percent / 100,
        vllm=vllm,
        pool=spec.serving.gpu_memory_utilization if vllm else 1.0,
        rest=rest,
        demand_tflops=usage.graphics_engine_active.p95
        * gpu.bf16_dense_tflops
        * compute
        * g
        * speedup(gpu, precision),
        demand_bandwidth=(dram.p95 * gpu.memory_bandwidth_gb_per_s * mem * g) if dram else 0.0,
        current_cost=slots_.hourly_cost(gpu, cur.mig_profile, g),
    )


@dataclasses.dataclass(frozen=True)
class Option:
    """One candidate allocation, recomputed: the figures the engine must report for it."""

    gpu: gpus.GpuModel
    mig: str | None
    count: int
    precision: precisions.Precision
    variant: str | None
    quality: float
    need: float
    available: float
    utilization: float
    bandwidth_ok: bool
    cost: float


def option(
    f: Facts,
    gpu: gpus.GpuModel,
    mig: str | None,
    count: int,
    variant: crd.Variant | None,
) -> Option:
    model = f.workload.spec.model
    precision = variant.precision if variant else f.precision
    quality = 1.0
    if variant is not None:
        quality = variant.quality_recovery or TABLE.get(variant.precision).quality_recovery
    compute, mem, _ = share(gpu, mig)
    slot = (gpu.mig_profile(mig).memory_gib if mig else gpu.memory_gib) * GIB  # type: ignore[union-attr]
    overhead = memory.RUNTIME_OVERHEAD_BYTES * f.workload.current.gpus_per_replica
    need = (weights(model, precision) + f.rest + overhead) / count * f.headroom
    capacity = gpu.bf16_dense_tflops * compute * count * speedup(gpu, precision)
    target = f.workload.spec.policy.target_compute_utilization
    return Option(
        gpu=gpu,
        mig=mig,
        count=count,
        precision=precision,
        variant=variant.name if variant else None,
        quality=quality,
        need=need,
        available=slot * f.pool,
        utilization=f.demand_tflops / capacity,
        bandwidth_ok=f.demand_bandwidth <= target * gpu.memory_bandwidth_gb_per_s * mem * count,
        cost=slots_.hourly_cost(gpu, mig, count),
    )


def all_options(f: Facts, catalog: gpus.Catalog) -> list[Option]:
    model = f.workload.spec.model
    variants: list[crd.Variant | None] = [None, *(model.variants if model else ())]
    out = []
    for gpu in catalog.gpus:
        shapes: list[tuple[str | None, int]] = [(None, n) for n in GPU_COUNTS]
        # As the slot table: no "+me" duplicates, no 7g instance (the whole GPU at its price).
        shapes += [
            (p.name, 1)
            for p in gpu.mig_profiles
            if not p.name.endswith("+me") and p.compute_slices < 7
        ]
        out += [option(f, gpu, mig, n, v) for mig, n in shapes for v in variants]
    return out


def robustly_feasible(f: Facts, o: Option) -> bool:
    """Feasible with a margin, so that float rounding cannot flip the verdict."""
    policy = f.workload.spec.policy
    return (
        o.precision in o.gpu.runnable_precisions
        and (f.allowed is None or o.gpu.id in f.allowed)
        and (policy.allow_mig or o.mig is None)
        and o.count <= min(policy.max_gpus_per_replica, f.workload.current.gpus_per_replica)
        and (o.variant is None or o.quality >= policy.min_quality_recovery + 1e-9)
        and o.need <= o.available * (1 - 1e-9)
        and o.utilization <= policy.target_compute_utilization - 1e-6
        and f.demand_bandwidth
        <= policy.target_compute_utilization
        * o.gpu.memory_bandwidth_gb_per_s
        * share(o.gpu, o.mig)[1]
        * o.count
        * (1 - 1e-9)
    )


# ---------------------------------------------------------------------------------------------
# the checks


def insufficient(workload: workloads.Workload) -> bool:
    usage, policy = workload.usage, workload.spec.policy
    if usage is None or usage.samples == 0:
        return True
    needed = durations.parse(policy.min_observation).total_seconds()
    return usage.history_seconds < needed or usage.coverage_of_history < policy.min_coverage


def check_candidate(f: Facts, c: crd.Candidate, catalog: gpus.Catalog) -> Option:
    """Every promise one recommended or alternative allocation must keep; returns its model."""
    policy = f.workload.spec.policy
    gpu = catalog.get(c.gpu_model)
    assert gpu is not None, c.gpu_model
    # Shape: a catalog slot, MIG instances one per replica, within the policy, never more GPUs
    # per replica than now.
    assert c.gpus_per_replica in GPU_COUNTS
    assert c.gpus_per_replica <= policy.max_gpus_per_replica
    assert c.gpus_per_replica <= f.workload.current.gpus_per_replica, "spread over more GPUs"
    if c.mig_profile is not None:
        assert policy.allow_mig, "MIG recommended although allowMIG is false"
        assert gpu.mig_profile(c.mig_profile) is not None
        assert c.gpus_per_replica == 1
    if f.allowed is not None:
        assert c.gpu_model in f.allowed, (c.gpu_model, policy.allowed_gpu_models)
    assert c.replicas == f.workload.current.replicas
    # Variant: one the spec declared, at its precision, above the quality floor.
    model = f.workload.spec.model
    variant = None
    if c.variant is None:
        assert c.precision == f.precision
        assert c.quality_recovery == 1.0
    else:
        assert model is not None, "a variant was invented for a workload without a model"
        declared = {v.name: v for v in model.variants}
        assert c.variant in declared, f"variant {c.variant!r} was never declared"
        variant = declared[c.variant]
        assert c.precision == variant.precision
        assert c.quality_recovery >= policy.min_quality_recovery - 1e-9
    assert c.precision is not None
    assert c.precision in gpu.runnable_precisions
    o = option(f, gpu, c.mig_profile, c.gpus_per_replica, variant)
    assert c.quality_recovery == pytest.approx(o.quality)
    # Memory: fits, is what the model says, and never below the observed floor.
    assert c.memory_need_bytes <= c.memory_available_bytes
    assert c.memory_available_bytes == pytest.approx(o.available, abs=1.0)
    assert c.memory_need_bytes == pytest.approx(o.need, rel=1e-9, abs=1.0)
    check_memory_floor(f, c, o)
    # Compute: under the target, as projected from the current GPU (FP8 only where native).
    assert c.projected_compute_utilization is not None
    assert c.projected_compute_utilization <= policy.target_compute_utilization + UTILIZATION_SLACK
    assert c.projected_compute_utilization == pytest.approx(o.utilization, abs=UTILIZATION_SLACK)
    assert o.bandwidth_ok or f.demand_bandwidth <= 0
    # Cost: the slot's price, never more than now.
    assert c.hourly_cost == pytest.approx(o.cost)
    assert c.hourly_cost <= f.current_cost + COST_EPS
    return o


def check_memory_floor(f: Facts, c: crd.Candidate, o: Option) -> None:
    """The safety floor of the module docstring (less int truncation: 1 byte)."""
    usage, cur = f.usage, f.workload.current
    model = f.workload.spec.model
    g, n, h = cur.gpus_per_replica, c.gpus_per_replica, f.headroom
    overhead = memory.RUNTIME_OVERHEAD_BYTES * g
    peak = usage.memory_used_bytes.max
    slack = 1.0 + 1e-9 * o.need
    total = c.memory_need_bytes * n / h + slack * n
    if f.vllm:
        assert total >= weights(model, o.precision) + f.rest + overhead
        kv = usage.kv_cache_usage
        if kv is not None and (
            (usage.preemptions or 0) > 0 or kv.max >= memory.KV_SATURATED_FRACTION
        ):
            event("vLLM with a saturated KV cache recommended")
    else:
        saved = weights(model, f.precision) - weights(model, o.precision)
        assert total >= peak * g - saved
        if saved <= 0:
            # The plain bound: the observed peak, spread over the candidate's GPUs, plus headroom.
            assert c.memory_need_bytes + slack >= peak * g / n * h
    if n < g:
        event("consolidates onto fewer GPUs")


def check_evaluation(
    workload: workloads.Workload, evaluation: engine.Evaluation, catalog: gpus.Catalog
) -> None:
    assert evaluation.ref == workload.ref
    event(f"outcome {evaluation.outcome}")
    if insufficient(workload):
        assert evaluation.outcome == engine.Outcome.INSUFFICIENT_DATA, evaluation.message
        assert evaluation.recommendation is None
        assert evaluation.alternatives == ()
        assert evaluation.savings is None
        return
    assert evaluation.outcome in OUTCOMES_WITH_DATA, (evaluation.outcome, evaluation.message)
    f = facts(workload, catalog)
    current, rec, savings = evaluation.current, evaluation.recommendation, evaluation.savings
    assert current is not None and rec is not None and savings is not None
    assert current.gpu_model == f.gpu.id
    assert current.hourly_cost == pytest.approx(f.current_cost)
    assert savings.monthly_cost >= 0
    assert savings.currency == catalog.currency
    alternatives = [check_candidate(f, c, catalog) for c in evaluation.alternatives]
    cheaper = [
        o
        for o in all_options(f, catalog)
        if robustly_feasible(f, o) and o.cost < f.current_cost - COST_EPS
    ]
    if evaluation.outcome == engine.Outcome.NO_CHANGE:
        # Nothing strictly cheaper fits, by the rules recomputed here.
        assert (rec.gpu_model, rec.mig_profile, rec.gpus_per_replica, rec.precision) == (
            current.gpu_model,
            current.mig_profile,
            current.gpus_per_replica,
            current.precision,
        )
        assert savings.monthly_cost == 0
        assert not cheaper, f"a cheaper allocation fits: {cheaper[0]}"
        costs = [c.hourly_cost for c in evaluation.alternatives]
        assert costs == sorted(costs)
        return
    best = check_candidate(f, rec, catalog)
    assert (rec.gpu_model, rec.mig_profile, rec.gpus_per_replica, rec.precision) != (
        current.gpu_model,
        current.mig_profile,
        current.gpus_per_replica,
        current.precision,
    )
    # Recommended means strictly cheaper: a change that saves nothing is not worth making.
    assert rec.hourly_cost < current.hourly_cost - COST_EPS
    assert all(o.cost >= best.cost - COST_EPS for o in cheaper), "not the cheapest that fits"
    costs = [rec.hourly_cost, *(c.hourly_cost for c in evaluation.alternatives)]
    assert costs == sorted(costs), "alternatives not sorted by cost"
    assert len(alternatives) <= engine.ALTERNATIVES
    expected = (current.hourly_cost - rec.hourly_cost) * catalog.hours_per_month
    assert savings.monthly_cost == pytest.approx(expected * current.replicas, abs=0.01)
    assert 0 <= rec.confidence <= 1


def by_ref(results: list[engine.Evaluation]) -> dict[str, engine.Evaluation]:
    return {str(e.ref): e for e in results}


# ---------------------------------------------------------------------------------------------
# the properties


@SETTINGS
@given(batches())
def test_every_verdict_keeps_the_engine_promises(
    case: tuple[gpus.Catalog, list[workloads.Workload]],
) -> None:
    catalog, batch = case
    results = engine.evaluate(batch, catalog, TABLE)
    assert len(results) == len(batch)
    for workload, evaluation in zip(batch, results, strict=True):
        check_evaluation(workload, evaluation, catalog)


@SETTINGS
@given(batches(enough=True))
def test_with_enough_history_every_recommendation_is_feasible(
    case: tuple[gpus.Catalog, list[workloads.Workload]],
) -> None:
    catalog, batch = case
    results = engine.evaluate(batch, catalog, TABLE)
    for workload, evaluation in zip(batch, results, strict=True):
        assert not insufficient(workload)
        check_evaluation(workload, evaluation, catalog)


@SETTINGS
@given(batches(enough=True, vllm=True))
def test_vllm_need_follows_the_kv_cache_not_fb_used(
    case: tuple[gpus.Catalog, list[workloads.Workload]],
) -> None:
    """vLLM with a declared model: need = weights + used (or, when saturated, whole) KV pool."""
    catalog, batch = case
    for workload, evaluation in zip(batch, engine.evaluate(batch, catalog, TABLE), strict=True):
        assert facts(workload, catalog).vllm
        check_evaluation(workload, evaluation, catalog)


@SETTINGS
@given(batches(enough=False))
def test_too_little_history_never_recommends(
    case: tuple[gpus.Catalog, list[workloads.Workload]],
) -> None:
    catalog, batch = case
    for workload, evaluation in zip(batch, engine.evaluate(batch, catalog, TABLE), strict=True):
        assert insufficient(workload)
        assert evaluation.outcome == engine.Outcome.INSUFFICIENT_DATA
        assert evaluation.recommendation is None
        assert evaluation.reason in {"InsufficientObservation", "LowCoverage"}
        check_evaluation(workload, evaluation, catalog)


@settings(SETTINGS, max_examples=100)
@given(batches(max_size=8), st.randoms(use_true_random=False))
def test_verdicts_do_not_depend_on_the_batch(
    case: tuple[gpus.Catalog, list[workloads.Workload]], rng: random.Random
) -> None:
    """The same workload gets the same verdict alone, twice, or anywhere in any batch."""
    catalog, batch = case
    first = engine.evaluate(batch, catalog, TABLE)
    assert engine.evaluate(batch, catalog, TABLE) == first
    shuffled = list(batch)
    rng.shuffle(shuffled)
    assert by_ref(engine.evaluate(shuffled, catalog, TABLE)) == by_ref(first)
    alone = [engine.evaluate_one(w, catalog, TABLE) for w in batch]
    assert alone == first
    doubled = engine.evaluate([*batch, *reversed(batch)], catalog, TABLE)
    assert doubled[: len(batch)] == first
    assert doubled[len(batch) :] == first[::-1]


@settings(SETTINGS, max_examples=50)
@given(batches(enough=True, max_size=3))
def test_chunking_does_not_change_verdicts(
    case: tuple[gpus.Catalog, list[workloads.Workload]],
) -> None:
    """Batches larger than one array chunk give the verdicts of a small batch."""
    catalog, batch = case
    first = engine.evaluate(batch, catalog, TABLE)
    filler = [
        w.model_copy(update={"ref": workloads.WorkloadRef(namespace="x", name=f"f{i}")})
        for i, w in enumerate(batch * math.ceil(engine.CHUNK / len(batch)))
    ]
    big = engine.evaluate([*filler, *batch], catalog, TABLE)
    assert big[len(filler) :] == first
