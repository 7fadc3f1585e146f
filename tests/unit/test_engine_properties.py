"""Properties of the recommendation engine over random, valid workloads, catalogs and clusters.

Every generated workload is valid (its GPU and MIG profile are in the catalog, its percentiles are
ordered, its policy names only catalog GPUs), so the engine's only possible outcomes are
Recommended, NoChange, InsufficientData and Declined (the usage contradicts itself or the
declared model). Most generated usage is consistent (the declared weights fit in what DCGM saw,
vLLM's KV pool fits in its memory); some is not, and the tests check that exactly that is
declined. A batch may come with a random inventory of nodes (offered and free whole GPUs and MIG
slices, unschedulable nodes, nodes of products the catalog does not know). For each verdict the
tests check the promises of DESIGN §6 against numbers recomputed here from the inputs,
independently of the engine's arrays, after :func:`priced.attach` has added the savings.

Memory. Write G for the current GPUs per replica, n for the candidate's (never more than G), P for
the observed peak per GPU (``usage.memoryUsedBytes.max``), O for the planned runtime overhead per
GPU (``memory.RUNTIME_OVERHEAD_BYTES``), h for ``1 + memoryHeadroomPercent / 100``, W(p) for the
declared model's weights at precision p (0 without a declared model), c for the current
precision, S for the usable bytes of the current GPU or MIG instance and S' for the candidate's
(the catalog's usable MiB, never the nominal size). The replica's total is spread over the
candidate's GPUs:

    need = (W(p) + rest + O*G) / n * h          (per GPU or MIG instance)

and must fit in ``S' * pool``, where pool is vLLM's gpu_memory_utilization (the one vLLM reports,
else the container's flag, else spec.serving's) for vLLM and 1 otherwise. ``rest`` (KV cache,
activations and anything else of the whole replica) is

* not vLLM:          max(0, P*G - W(c) - O*G); memory unknown: max(0, (S - O)*G - W(c))
* vLLM with a declared model and KV usage: f*C*G + U*G, where C is the KV pool per GPU
  (kvCacheCapacityTokens x kvCacheBytesPerToken / G, else kvCacheCapacityBytes, else estimated
  as pool*S - W(c)/G - O), f = 1 when the KV cache saturated (a preemption, or usage >= 0.98)
  else the peak KV usage, and U = max(0, P - W(c)/G - C - O) is the memory vLLM holds that the
  weights, the pool and the runtime do not explain (activations, a draft model...; 0 when C was
  estimated or P is unknown)
* vLLM otherwise (pre-allocation hides the need): max(0, P*G - O*G), P = pool*S if unknown

Hence the floor the engine never goes below, "observed peak need plus headroom":

    not vLLM:                  need * n / h  >=  P*G - (W(c) - W(p))
    vLLM, measured pool and P: need * n / h  >=  P*G - (W(c) - W(p)) - (1 - f)*C*G

i.e. everything the replica was seen to hold, less only the weight bytes a chosen declared
variant saves and, for vLLM, the part of its pre-allocated KV pool it never used. With the
current precision and no vLLM this is ``need >= P * G / n * h``. Unknown memory (no
``memoryUsedBytes``): no candidate with less memory than now, ``S' * n >= S * G``.

Compute: p95, p99 and peak engine activity projected onto the candidate (current TFLOPS over the
candidate's, FP8 speed-up only where native, MIG by SM count) stay under
``targetComputeUtilization``, ``burstComputeUtilization`` and 1. Bandwidth: p95 DRAM activity
projected stays under the target; without a DRAM series no candidate has less bandwidth than
now. Latency (guard Enforce, or Auto for serving workloads): decode slowdown = (W(p) + rest) /
candidate bandwidth over (W(c) + rest) / current bandwidth (bytes read at least 1), prefill
slowdown = current TFLOPS / candidate TFLOPS, both under the policy's limits (and under the
p95 latency targets). vLLM with a known max model length and KV bytes per token starts only
where its KV pool, (pool*S' - O)*n - W(p) - U*G, holds one sequence of max-model-len tokens.

What is recommended saves at least ``minSavingsPercent`` and ``minMonthlySavings``, raises
modelled power only for a saving of at least max(2 x minSavingsPercent, 20)%, is hardware an
inventory (when given) offers with room for a replica (or, with allowMIGRepartition, a MIG
profile no node offers on a MIG-capable node with a whole GPU free), and is the cheapest such
fit unless the recommendation already on status is within 5% of it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from gpu_rightsizer import catalogs
from gpu_rightsizer.models import (
    crd,
    durations,
    gpus,
    inventory,
    precisions,
    profiles,
    workloads,
)
from gpu_rightsizer.recommend import engine, memory, priced

GIB = 2**30
MIB = 2**20
CATALOG = catalogs.default_catalog()
TABLE = catalogs.default_precisions()
GPU_COUNTS = (1, 2, 4, 8)
WINDOWS = ("30m", "1h", "6h", "12h", "1d", "3d", "7d", "14d")
MIN_OBSERVATIONS = ("1h", "12h", "24h", "1d", "3d", "7d")
OVERHEAD = memory.RUNTIME_OVERHEAD_BYTES
A = crd.Availability
RECOMMENDABLE = {A.IN_CLUSTER, A.NEEDS_REPARTITION, None}
EXTRA = {A.NO_FREE_CAPACITY, A.NOT_IN_CLUSTER}
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Slack for comparisons against figures the engine rounds (utilization to 4 places, latency to 3)
# or truncates (bytes to int).
UTILIZATION_SLACK = 5e-5 + 1e-9
SLOWDOWN_SLACK = 5e-4 + 1e-9
COST_EPS = 1e-9
# Relative margin that separates "clearly so" from "so within float noise".
MARGIN = 1e-6

# The promises as documented, written out here rather than read from the engine.
HYSTERESIS = 0.05
"""The recommendation on status stays while the new best is not 5% cheaper."""
ENERGY_RAISE_PERCENT = 20.0
"""A change that raises modelled power must save max(2 x minSavingsPercent, 20)%."""
KV_SATURATED = 0.98
"""vLLM's KV cache counts as full at this peak usage (or with any preemption)."""


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


@st.composite
def nodes_(
    draw: st.DrawFn, catalog: gpus.Catalog, i: int, whole_mig: bool = False
) -> inventory.NodeGPUs:
    """One GPU node: whole GPUs and (on MIG-capable models) MIG slices, some of them in use.

    ``whole_mig``: MIG-capable models mostly as whole GPUs on MIG-capable nodes (what a
    repartition would carve up).
    """
    known = not rarely(draw, 10)
    gpu = draw(st.sampled_from(catalog.gpus))
    count = draw(st.sampled_from(GPU_COUNTS))
    mig_gpus = 0
    if known and gpu.mig_capable:
        mig_gpus = draw(st.integers(0, count // 2 if whole_mig else count))
    whole = count - mig_gpus
    alloc: dict[str, int] = {}
    free: dict[str, int] = {}
    if mig_gpus:
        names = [p.name for p in gpu.mig_profiles if not p.name.endswith("+me")]
        for name in draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=3)):
            alloc[name] = draw(st.integers(1, 7 * mig_gpus))
            free[name] = alloc[name] - draw(st.integers(0, alloc[name]))
    return inventory.NodeGPUs(
        name=f"node-{i}",
        product=(gpu.aliases or (gpu.id,))[0] if known else "NVIDIA-Mystery-Accelerator",
        gpu_model=gpu.id if known else None,
        gpu_count=count,
        mig_capable=known and gpu.mig_capable and (bool(alloc) or whole_mig or draw(st.booleans())),
        mig_strategy=inventory.MigStrategy.MIXED if alloc else inventory.MigStrategy.NONE,
        mig_config="custom" if alloc else None,
        whole_allocatable=whole,
        whole_free=whole - draw(st.integers(0, whole)),
        mig_allocatable=alloc,
        mig_free=free,
        schedulable=not rarely(draw, 6),
    )


@st.composite
def inventories(
    draw: st.DrawFn, catalog: gpus.Catalog, given: bool | None = None, whole_mig: bool = False
) -> inventory.Inventory | None:
    """None (the whole catalog) or the nodes of a random cluster; ``given`` forces either."""
    if given is None:
        given = draw(st.booleans())
    if not given:
        return None
    size = draw(st.integers(0, 10))
    nodes = tuple(draw(nodes_(catalog, i, whole_mig)) for i in range(size))
    return inventory.Inventory(nodes, "property-test nodes")


def rarely(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws (and False when Hypothesis shrinks)."""
    return draw(st.integers(0, n - 1)) == n - 1


def _fractions_below(draw: st.DrawFn, top: float) -> tuple[float, float, float]:
    values = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3)))
    return values[0] * top, values[1] * top, values[2] * top


def _percentiles(
    draw: st.DrawFn, cls: type[profiles.Percentiles], high: float, top: float | None = None
) -> profiles.Percentiles:
    """Ordered percentiles below ``high``; with ``top`` the max is exactly that."""
    if top is None:
        top = draw(st.floats(0.0, 1.0)) * high
    p50, p95, p99 = _fractions_below(draw, top)
    mean = draw(st.one_of(st.none(), st.floats(0.0, 1.0).map(lambda v: v * top)))
    return cls(p50=p50, p95=p95, p99=p99, max=top, mean=mean)


def _activity(draw: st.DrawFn) -> profiles.Fractions:
    high = draw(st.sampled_from((0.2, 0.05, 0.5, 1.0)))
    fractions = _percentiles(draw, profiles.Fractions, high)
    assert isinstance(fractions, profiles.Fractions)
    return fractions


@st.composite
def model_specs(draw: st.DrawFn, budget_bytes: float) -> crd.ModelSpec:
    """A declared model whose weights mostly fit in ``budget_bytes`` (sometimes they do not)."""
    precision = draw(st.sampled_from(tuple(precisions.Precision)))
    per = precisions.BYTES_PER_PARAMETER[precision]
    pick = draw(st.integers(0, 9))
    if pick < 7:
        # Weights that fit in the GPUs the workload runs on.
        parameters = max(1e6, draw(st.floats(0.01, 0.9)) * budget_bytes / per)
    elif pick < 9:
        parameters = draw(st.sampled_from((0.5e9, 1.5e9, 3e9, 7e9, 8.03e9, 13e9, 34e9, 70.6e9)))
    else:
        parameters = max(1e6, draw(st.floats(0.0, 2.0)) * budget_bytes / per)
    embedding = draw(st.one_of(st.none(), st.floats(0.0, 0.2).map(lambda f: f * parameters)))
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
        max_model_len=draw(st.one_of(st.none(), st.sampled_from((512, 4096, 32768, 131072)))),
        kv_cache_bytes_per_token=draw(
            st.one_of(st.none(), st.sampled_from((32768, 131072, 327680)), st.integers(1, 10**6))
        ),
    )


@st.composite
def latency_policies(draw: st.DrawFn) -> crd.LatencyPolicy:
    ratios = st.one_of(st.sampled_from((1.0, 1.2, 1.5, 2.0, 5.0)), st.floats(1.0, 20.0))
    return crd.LatencyPolicy(
        guard=draw(st.sampled_from(tuple(crd.LatencyGuard))),
        max_time_per_output_token_slowdown=draw(ratios),
        max_time_to_first_token_slowdown=draw(ratios),
        time_per_output_token_seconds=draw(st.one_of(st.none(), st.floats(0.001, 0.5))),
        time_to_first_token_seconds=draw(st.one_of(st.none(), st.floats(0.01, 10.0))),
    )


@st.composite
def policies(draw: st.DrawFn, catalog: gpus.Catalog) -> crd.Policy:
    allowed = None
    if draw(st.booleans()):
        chosen = draw(
            st.lists(
                st.sampled_from(catalog.gpus), unique_by=lambda g: g.id, min_size=1, max_size=6
            )
        )
        # Each allowed GPU named by its id or by one of its aliases.
        allowed = tuple(draw(st.sampled_from((g.id, *g.aliases))) for g in chosen)
    return crd.Policy(
        memory_headroom_percent=draw(st.integers(0, 100)),
        target_compute_utilization=draw(
            st.one_of(st.sampled_from((0.5, 0.7, 0.9, 1.0)), st.floats(0.05, 1.0))
        ),
        burst_compute_utilization=draw(
            st.one_of(st.sampled_from((0.9, 1.0, 0.8)), st.floats(0.05, 1.0))
        ),
        allowed_gpu_models=allowed,
        allow_mig=draw(st.booleans()),
        allow_mig_repartition=draw(st.booleans()),
        min_quality_recovery=draw(
            st.one_of(st.sampled_from((0.0, 0.9, 0.95, 0.96, 0.97, 0.99, 1.0)), st.floats(0, 1))
        ),
        min_observation=draw(st.sampled_from(MIN_OBSERVATIONS)),
        min_coverage=draw(st.one_of(st.sampled_from((0.0, 0.5, 0.8)), st.floats(0.0, 1.0))),
        max_gpus_per_replica=draw(st.integers(1, 16)),
        min_savings_percent=draw(
            st.one_of(st.just(10.0), st.sampled_from((0.0, 5.0, 30.0)), st.floats(0.0, 100.0))
        ),
        min_monthly_savings=draw(st.one_of(st.just(0.0), st.floats(0.0, 5000.0))),
        latency=draw(latency_policies()),
    )


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the usage strategy needs to know about the workload it observes."""

    slot_bytes: float
    gpus: int
    weights_per_gpu: float
    bytes_per_token: int | None
    vllm_like: bool


@st.composite
def usages(
    draw: st.DrawFn, shape: Shape, enough: bool | None, memory_known: bool | None
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
    slot, g = shape.slot_bytes, shape.gpus
    floor = shape.weights_per_gpu + OVERHEAD
    known = not rarely(draw, 8) if memory_known is None else memory_known
    memory_used = None
    peak = slot
    if known:
        if not rarely(draw, 10):
            # Consistent with the declared model: at least its weights and the runtime.
            low = min(floor, slot)
            peak = low + draw(st.floats(0.0, 1.0)) * (slot - low)
        else:
            peak = draw(st.floats(0.0, 1.0)) * slot
        memory_used = _percentiles(draw, profiles.Percentiles, slot, top=peak)
    kv = kv_bytes = kv_tokens = preemptions = utilization = None
    tpot = ttft = None
    if shape.vllm_like:
        kv = _percentiles(draw, profiles.Fractions, draw(st.sampled_from((0.3, 1.0))))
        # The KV pool per GPU: most of the memory beyond weights and runtime (vLLM pre-allocates
        # it); what is left is memory nothing explains.
        pool = max(1.0, draw(st.floats(0.5, 1.0)) * max(0.0, peak - floor))
        forms = ("bytes", "bytes", "bytes", "tokens", "tokens", "tokens", "none", "none")
        form = draw(st.sampled_from((*forms, "random", "zero")))
        if form == "bytes":
            kv_bytes = int(pool)
        elif form == "tokens":
            per_token = shape.bytes_per_token or draw(st.sampled_from((32768, 131072)))
            kv_tokens = max(1, int(pool * g / per_token))
            kv_bytes = draw(st.sampled_from((None, int(pool))))
        elif form == "random":
            kv_bytes = draw(st.one_of(st.none(), st.integers(0, int(slot))))
            kv_tokens = draw(st.one_of(st.none(), st.integers(0, 10**6)))
        elif form == "zero":
            kv_tokens = draw(st.sampled_from((0, None)))
            kv_bytes = 0 if kv_tokens is None else None
        preemptions = draw(st.sampled_from((None, 0, 0)))
        if rarely(draw, 4):
            preemptions = draw(st.integers(1, 50))
        utilization = draw(st.one_of(st.none(), st.sampled_from((0.9, 0.6, 0.95))))
        if draw(st.booleans()):
            tpot = _percentiles(draw, profiles.Percentiles, 0.2)
        if draw(st.booleans()):
            ttft = _percentiles(draw, profiles.Percentiles, 5.0)
    return profiles.UsageProfile(
        window=window,
        samples=draw(st.one_of(st.just(10080), st.integers(0, 100_000))),
        coverage=coverage,
        observed_seconds=observed,
        memory_used_bytes=memory_used,
        graphics_engine_active=_activity(draw),
        dram_active=_activity(draw) if draw(st.booleans()) else None,
        power_watts=(
            _percentiles(draw, profiles.Percentiles, 1000.0) if draw(st.booleans()) else None
        ),
        kv_cache_usage=kv,
        kv_cache_capacity_bytes=kv_bytes,
        kv_cache_capacity_tokens=kv_tokens,
        gpu_memory_utilization=utilization,
        time_per_output_token_seconds=tpot,
        time_to_first_token_seconds=ttft,
        preemptions=preemptions,
    )


@st.composite
def previous_(
    draw: st.DrawFn,
    catalog: gpus.Catalog,
    model: crd.ModelSpec | None,
    precision: precisions.Precision,
    replicas: int,
) -> crd.Recommendation:
    """A recommendation some earlier sweep put on status: any slot, any declared variant."""
    gpu = draw(st.sampled_from(catalog.gpus))
    migs = [p.name for p in gpu.mig_profiles if not p.name.endswith("+me") and p.compute_slices < 7]
    mig = draw(st.one_of(st.none(), st.sampled_from(migs))) if migs else None
    count = 1 if mig else draw(st.sampled_from(GPU_COUNTS))
    variant = None
    if model is not None and model.variants and draw(st.booleans()):
        variant = draw(st.sampled_from(model.variants))
    return crd.Recommendation(
        gpu_model=gpu.id,
        mig_profile=mig,
        gpus_per_replica=count,
        replicas=replicas,
        precision=variant.precision if variant else precision,
        variant=variant.name if variant else None,
        hourly_cost=hourly_cost(gpu, mig, count),
        memory_need_bytes=0,
        memory_available_bytes=0,
        confidence=0.5,
    )


@st.composite
def workloads_(
    draw: st.DrawFn,
    catalog: gpus.Catalog,
    index: int = 0,
    enough: bool | None = None,
    vllm: bool = False,
    memory_known: bool | None = None,
    allow_mig: bool = False,
) -> workloads.Workload:
    """A valid workload for ``catalog``.

    ``enough`` forces (True) or rules out (False) sufficient history; ``vllm`` makes it a vLLM
    server with a declared model and KV-cache metrics; ``memory_known`` forces or rules out a
    memory series; ``allow_mig`` forces policy.allowMIG.
    """
    gpu = draw(st.sampled_from(catalog.gpus))
    name = draw(st.sampled_from((gpu.id, *gpu.aliases)))
    mig = None
    if gpu.mig_capable and draw(st.booleans()):
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
    if allow_mig:
        # MIG allowed, and fewer other reasons to rule a small slice out.
        relaxed = {"allow_mig": True, "allowed_gpu_models": None, "min_monthly_savings": 0.0}
        policy = policy.model_copy(update=relaxed)
    slot = slot_bytes(gpu, mig)
    budget = slot * count
    model = draw(model_specs(budget) if vllm else st.one_of(st.none(), model_specs(budget)))
    spec = crd.GPUWorkloadSpec(
        target_ref=crd.TargetRef(name=f"model-{index}"),
        model=model,
        serving=serving,
        policy=policy,
    )
    precision = draw(st.sampled_from(tuple(precisions.Precision)))
    serves = model.precision if model else precision
    w_now = weights(model, serves) / count
    per_token = model.kv_cache_bytes_per_token if model else None
    shape = Shape(slot, count, w_now, per_token, vllm_like)
    usage = None
    if enough is not None or memory_known is not None or not rarely(draw, 20):
        usage = draw(usages(shape, enough, memory_known))
    if usage is not None and enough:
        usage = usage.model_copy(update={"samples": max(usage.samples, 1), "coverage": 1.0})
    replicas = draw(st.integers(0, 10))
    previous = None
    if rarely(draw, 4):
        previous = draw(previous_(catalog, model, serves, replicas))
    return workloads.Workload(
        ref=workloads.WorkloadRef(namespace=f"team-{index % 3}", name=f"model-{index}"),
        spec=spec,
        current=workloads.CurrentAllocation(
            gpu_model=name,
            mig_profile=mig,
            gpus_per_replica=count,
            replicas=replicas,
            precision=precision,
        ),
        usage=usage,
        previous=previous,
        max_model_len=draw(st.one_of(st.none(), st.sampled_from((1024, 8192, 131072)))),
        gpu_memory_utilization=draw(st.one_of(st.none(), st.sampled_from((0.9, 0.8, 0.95)))),
    )


class Case:
    """A catalog, maybe an inventory, and a batch; shown compactly when a property fails."""

    def __init__(
        self,
        catalog: gpus.Catalog,
        stock: inventory.Inventory | None,
        batch: list[workloads.Workload],
    ) -> None:
        self.catalog, self.stock, self.batch = catalog, stock, batch

    def __repr__(self) -> str:
        prices = ", ".join(f"{g.id} {g.price.per_gpu_hour}" for g in self.catalog.gpus)
        lines = [f"catalog: {prices}"]
        if self.stock is None:
            lines.append("inventory: None")
        else:
            lines += [f"node: {n!r}" for n in self.stock.nodes] or ["inventory: no nodes"]
        lines += [
            f"workload: {w.model_dump(mode='json', exclude_defaults=True, exclude_none=True)}"
            for w in self.batch
        ]
        return "\n".join(lines)


@st.composite
def batches(
    draw: st.DrawFn,
    enough: bool | None = None,
    max_size: int = 6,
    vllm: bool = False,
    stock: bool | None = None,
    memory_known: bool | None = None,
    repartition: bool = False,
) -> Case:
    """``repartition``: MIG allowed, and MIG-capable nodes with whole GPUs to carve up."""
    catalog = draw(catalogs_())
    nodes = draw(inventories(catalog, stock, repartition))
    size = draw(st.integers(1, max_size))
    batch = [
        draw(workloads_(catalog, i, enough, vllm, memory_known, repartition)) for i in range(size)
    ]
    return Case(catalog, nodes, batch)


# ---------------------------------------------------------------------------------------------
# the model, recomputed from the inputs


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


def slot_bytes(gpu: gpus.GpuModel, mig: str | None) -> float:
    """Usable bytes of a whole GPU or MIG instance: the catalog's usable MiB."""
    if mig is None:
        return float(gpu.usable_memory_mib * MIB)
    profile = gpu.mig_profile(mig)
    assert profile is not None
    return float(profile.usable_memory_mib * MIB)


def share(gpu: gpus.GpuModel, mig: str | None) -> tuple[float, float, float]:
    """(compute share by SMs, memory share by usable MiB, price share) of a GPU or instance."""
    if mig is None:
        return 1.0, 1.0, 1.0
    profile = gpu.mig_profile(mig)
    assert profile is not None and gpu.sm_count is not None
    compute = profile.sm_count / gpu.sm_count
    mem = profile.usable_memory_mib / gpu.usable_memory_mib
    return compute, mem, max(compute, mem)


def hourly_cost(gpu: gpus.GpuModel, mig: str | None, count: int) -> float:
    return round(gpu.price.per_gpu_hour * share(gpu, mig)[2] * count, 6)


def is_vllm(workload: workloads.Workload) -> bool:
    spec, usage = workload.spec, workload.usage
    if spec.serving.engine is not None:
        return spec.serving.engine == crd.ServingEngine.VLLM
    assert usage is not None
    return (
        usage.kv_cache_usage is not None
        or usage.kv_cache_capacity_tokens is not None
        or usage.time_per_output_token_seconds is not None
    )


def less(a: float, b: float) -> bool | None:
    """a < b clearly (True), a > b clearly (False), or too close to tell (None)."""
    margin = MARGIN * max(abs(a), abs(b)) + 1e-9
    if a < b - margin:
        return True
    if a > b + margin:
        return False
    return None


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the invariants need about one workload, computed here rather than by the engine."""

    workload: workloads.Workload
    usage: profiles.UsageProfile
    gpu: gpus.GpuModel
    precision: precisions.Precision
    gpus: int
    allowed: frozenset[str] | None
    headroom: float
    vllm: bool
    pool: float
    rest: float
    unexplained: float
    """U*G: memory vLLM holds that nothing else explains (part of ``rest``)."""
    unused_pool: float
    """(1 - f)*C*G: the part of vLLM's KV pool it never used."""
    pool_measured: bool
    """vLLM with its KV pool and peak memory measured (the floor of the docstring applies)."""
    memory_known: bool
    bytes_per_token: float | None
    max_model_len: int | None
    declined: bool | None
    """The input is impossible: True, False, or None where float noise could decide."""
    guarded: bool
    capacity_now: float
    bandwidth_now: float
    decode_now: float
    max_decode: float
    max_prefill: float
    power_now: float
    mean_activity: float
    current_slot_bytes: float
    current_cost: float


def facts(workload: workloads.Workload, catalog: gpus.Catalog) -> Facts:
    spec, cur, usage = workload.spec, workload.current, workload.usage
    assert usage is not None
    gpu = catalog.resolve(cur.gpu_model)
    assert gpu is not None
    model = spec.model
    precision = model.precision if model else cur.precision
    g = cur.gpus_per_replica
    slot = slot_bytes(gpu, cur.mig_profile)
    w_now = weights(model, precision)
    mem = usage.memory_used_bytes
    activity = usage.graphics_engine_active
    vllm = is_vllm(workload)
    declined: bool | None = False
    unexplained = unused = 0.0
    pool_measured = False
    per_token: float | None = None
    if mem is not None and mem.max <= 0 and activity.max > 0.01:
        declined = True
    if vllm:
        pool = (
            usage.gpu_memory_utilization
            or workload.gpu_memory_utilization
            or spec.serving.gpu_memory_utilization
        )
        peak = mem.max if mem is not None else pool * slot
        kv = usage.kv_cache_usage
        if usage.kv_cache_capacity_tokens == 0 or usage.kv_cache_capacity_bytes == 0:
            declined = True
        declared = model.kv_cache_bytes_per_token if model else None
        per_token = float(declared) if declared else None
        if model is None or kv is None:
            rest = max(0.0, peak * g - OVERHEAD * g)
        else:
            tokens = usage.kv_cache_capacity_tokens
            measured = True
            if per_token is not None and tokens:
                capacity = tokens * per_token / g
            elif usage.kv_cache_capacity_bytes is not None:
                capacity = float(usage.kv_cache_capacity_bytes)
            else:
                capacity = pool * slot - w_now / g - OVERHEAD
                measured = False
            capacity = max(0.0, capacity)
            if per_token is None and tokens:
                per_token = capacity * g / tokens
            saturated = (usage.preemptions or 0) > 0 or kv.max >= KV_SATURATED
            f = 1.0 if saturated else kv.max
            if measured and mem is not None:
                pool_measured = True
                if declined is False:
                    declined = less(peak * 1.05, w_now / g + capacity)
                unexplained = max(0.0, peak - w_now / g - capacity - OVERHEAD) * g
                unused = (1 - f) * capacity * g
            rest = f * capacity * g + unexplained
    else:
        pool = 1.0
        if mem is None:
            rest = max(0.0, (slot - OVERHEAD) * g - w_now)
        else:
            if model is not None and declined is False:
                declined = less(mem.max * 1.05, w_now / g)
            rest = max(0.0, mem.max * g - w_now - OVERHEAD * g)
    compute, mem_share, _ = share(gpu, cur.mig_profile)
    capacity_now = gpu.bf16_dense_tflops * compute * g * speedup(gpu, precision)
    bandwidth_now = gpu.memory_bandwidth_gb_per_s * mem_share * g
    allowed = None
    if spec.policy.allowed_gpu_models is not None:
        resolved = [catalog.resolve(name) for name in spec.policy.allowed_gpu_models]
        allowed = frozenset(r.id for r in resolved if r is not None)
    latency = spec.policy.latency
    guard = latency.guard
    max_decode = latency.max_time_per_output_token_slowdown
    max_prefill = latency.max_time_to_first_token_slowdown
    if latency.time_per_output_token_seconds and usage.time_per_output_token_seconds:
        target = latency.time_per_output_token_seconds
        max_decode = min(max_decode, target / max(usage.time_per_output_token_seconds.p95, 1e-9))
    if latency.time_to_first_token_seconds and usage.time_to_first_token_seconds:
        target = latency.time_to_first_token_seconds
        max_prefill = min(max_prefill, target / max(usage.time_to_first_token_seconds.p95, 1e-9))
    mean = activity.mean if activity.mean is not None else activity.p50
    if usage.power_watts is not None:
        measured_power = usage.power_watts
        watts = measured_power.mean if measured_power.mean is not None else measured_power.p50
        power_now = watts * compute * g
    else:
        power_now = (gpu.idle_watts + (gpu.tdp_watts - gpu.idle_watts) * min(mean, 1.0)) * (
            compute * g
        )
    return Facts(
        workload=workload,
        usage=usage,
        gpu=gpu,
        precision=precision,
        gpus=g,
        allowed=allowed,
        headroom=1 + spec.policy.memory_headroom_percent / 100,
        vllm=vllm,
        pool=pool,
        rest=rest,
        unexplained=unexplained,
        unused_pool=unused,
        pool_measured=pool_measured,
        memory_known=mem is not None,
        bytes_per_token=per_token,
        max_model_len=(model.max_model_len if model else None) or workload.max_model_len,
        declined=declined,
        guarded=guard == crd.LatencyGuard.ENFORCE
        or (guard == crd.LatencyGuard.AUTO and (vllm or spec.serving.engine is not None)),
        capacity_now=capacity_now,
        bandwidth_now=bandwidth_now,
        decode_now=max(w_now + rest, 1.0) / bandwidth_now,
        max_decode=max_decode,
        max_prefill=max_prefill,
        power_now=power_now,
        mean_activity=mean,
        current_slot_bytes=slot,
        current_cost=hourly_cost(gpu, cur.mig_profile, g),
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
    slot_bytes: float
    need: float
    available: float
    utilization: float
    burst: float
    peak: float
    bandwidth: float
    decode: float
    prefill: float
    kv_pool: float
    power: float
    cost: float


def option(
    f: Facts, gpu: gpus.GpuModel, mig: str | None, count: int, variant: crd.Variant | None
) -> Option:
    model = f.workload.spec.model
    precision = variant.precision if variant else f.precision
    quality = 1.0
    if variant is not None:
        quality = variant.quality_recovery or TABLE.get(variant.precision).quality_recovery
    compute, mem, _ = share(gpu, mig)
    slot = slot_bytes(gpu, mig)
    w = weights(model, precision)
    act = f.usage.graphics_engine_active
    capacity = gpu.bf16_dense_tflops * compute * count * speedup(gpu, precision)
    scale = f.capacity_now / capacity
    bandwidth = gpu.memory_bandwidth_gb_per_s * mem * count
    activity = min(max(f.mean_activity * scale, 0.0), 1.0)
    return Option(
        gpu=gpu,
        mig=mig,
        count=count,
        precision=precision,
        variant=variant.name if variant else None,
        quality=quality,
        slot_bytes=slot,
        need=(w + f.rest + OVERHEAD * f.gpus) / count * f.headroom,
        available=slot * f.pool,
        utilization=act.p95 * scale,
        burst=act.p99 * scale,
        peak=act.max * scale,
        bandwidth=bandwidth,
        decode=max(w + f.rest, 1.0) / bandwidth / max(f.decode_now, 1e-9),
        prefill=scale,
        kv_pool=(f.pool * slot - OVERHEAD) * count - w - f.unexplained,
        power=(gpu.idle_watts + (gpu.tdp_watts - gpu.idle_watts) * activity) * compute * count,
        cost=hourly_cost(gpu, mig, count),
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


def checks(f: Facts, o: Option, lenient: bool) -> dict[str, bool]:
    """Each rule of the engine for one option; ``lenient`` lets float noise pass, else it fails."""

    def le(a: float, b: float) -> bool:
        margin = MARGIN * max(abs(a), abs(b)) + 1e-9
        return a <= b + margin if lenient else a <= b - margin

    policy = f.workload.spec.policy
    dram = f.usage.dram_active
    saved = f.current_cost - o.cost
    percent = 100 * saved / f.current_cost
    months = saved * CATALOG.hours_per_month * max(f.workload.current.replicas, 1)
    startup = not (f.vllm and f.max_model_len and f.bytes_per_token)
    if not startup:
        assert f.max_model_len is not None and f.bytes_per_token is not None
        startup = le(f.max_model_len * f.bytes_per_token, o.kv_pool)
    return {
        "policy": (f.allowed is None or o.gpu.id in f.allowed)
        and (policy.allow_mig or o.mig is None)
        and o.count <= min(policy.max_gpus_per_replica, f.gpus),
        "runnable": o.precision in o.gpu.runnable_precisions,
        "quality": o.variant is None or le(policy.min_quality_recovery, o.quality),
        "memory": le(o.need, o.available)
        and (f.memory_known or le(f.current_slot_bytes * f.gpus, o.slot_bytes * o.count)),
        "compute": le(o.utilization, policy.target_compute_utilization)
        and le(o.burst, policy.burst_compute_utilization)
        and le(o.peak, 1.0),
        "bandwidth": le(dram.p95 * f.bandwidth_now, policy.target_compute_utilization * o.bandwidth)
        if dram is not None
        else le(f.bandwidth_now, o.bandwidth),
        "startup": startup,
        "latency": not f.guarded or (le(o.decode, f.max_decode) and le(o.prefill, f.max_prefill)),
        "saving": saved > (1e-9 if lenient else 1e-6)
        and le(policy.min_savings_percent, percent)
        and le(policy.min_monthly_savings, months),
        "energy": le(o.power, f.power_now)
        or le(max(2 * policy.min_savings_percent, ENERGY_RAISE_PERCENT), percent),
    }


def availability(
    stock: inventory.Inventory | None, gpu_id: str, mig: str | None, count: int, repartition: bool
) -> crd.Availability | None:
    """Where an allocation stands in the cluster, from the node records themselves."""
    if stock is None:
        return None
    nodes = [n for n in stock.nodes if n.gpu_model == gpu_id and n.schedulable]
    needs_repartition = False
    if mig is None:
        offered = any(n.whole_allocatable >= count for n in nodes)
        free = any(n.whole_free >= count for n in nodes)
    else:
        offered = any(n.mig_allocatable.get(mig, 0) >= 1 for n in nodes)
        free = any(n.mig_free.get(mig, 0) >= 1 for n in nodes)
        if not offered and repartition and any(n.mig_capable for n in nodes):
            needs_repartition = offered = True
            free = any(n.mig_capable and n.whole_free >= 1 for n in nodes)
    if not offered:
        return A.NOT_IN_CLUSTER
    if not free:
        return A.NO_FREE_CAPACITY
    return A.NEEDS_REPARTITION if needs_repartition else A.IN_CLUSTER


def where(f: Facts, stock: inventory.Inventory | None, o: Option) -> crd.Availability | None:
    repartition = f.workload.spec.policy.allow_mig_repartition
    return availability(stock, o.gpu.id, o.mig, o.count, repartition)


# ---------------------------------------------------------------------------------------------
# the checks


def insufficient(workload: workloads.Workload) -> bool:
    usage, policy = workload.usage, workload.spec.policy
    if usage is None or usage.samples == 0:
        return True
    needed = durations.parse(policy.min_observation).total_seconds()
    return usage.history_seconds < needed or usage.coverage_of_history < policy.min_coverage


def same_slot(a: crd.Allocation, b: crd.Allocation) -> bool:
    return (a.gpu_model, a.mig_profile, a.gpus_per_replica, a.precision, a.variant) == (
        b.gpu_model,
        b.mig_profile,
        b.gpus_per_replica,
        b.precision,
        b.variant,
    )


def assert_in_inventory(c: crd.Candidate, stock: inventory.Inventory, policy: crd.Policy) -> None:
    """The recommended slot is on a schedulable node of the inventory with room for a replica."""
    nodes = [n for n in stock.nodes if n.gpu_model == c.gpu_model and n.schedulable]
    assert nodes, f"{c.describe()}: no schedulable node has {c.gpu_model}"
    if c.mig_profile is None:
        assert c.availability == A.IN_CLUSTER
        assert any(n.whole_free >= c.gpus_per_replica for n in nodes), c.describe()
    elif any(n.mig_allocatable.get(c.mig_profile, 0) for n in nodes):
        assert c.availability == A.IN_CLUSTER
        assert any(n.mig_free.get(c.mig_profile, 0) >= 1 for n in nodes), c.describe()
    else:
        assert c.availability == A.NEEDS_REPARTITION, c.describe()
        assert policy.allow_mig_repartition, "repartitioning without allowMIGRepartition"
        assert any(n.mig_capable and n.whole_free >= 1 for n in nodes), c.describe()


def check_candidate(
    f: Facts, c: crd.Candidate, catalog: gpus.Catalog, stock: inventory.Inventory | None
) -> Option:
    """Every promise one recommended or alternative allocation must keep; returns its model."""
    policy = f.workload.spec.policy
    gpu = catalog.get(c.gpu_model)
    assert gpu is not None, c.gpu_model
    # Shape: a catalog slot, MIG instances one per replica, within the policy, never more GPUs
    # per replica than now.
    assert c.gpus_per_replica in GPU_COUNTS
    assert c.gpus_per_replica <= policy.max_gpus_per_replica
    assert c.gpus_per_replica <= f.gpus, "spread over more GPUs"
    if c.mig_profile is not None:
        assert policy.allow_mig, "MIG recommended although allowMIG is false"
        profile = gpu.mig_profile(c.mig_profile)
        assert profile is not None
        assert not profile.name.endswith("+me") and profile.compute_slices < 7
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
    # Every rule holds (within float noise), each named when it does not.
    failed = [name for name, ok in checks(f, o, lenient=True).items() if not ok]
    assert not failed, f"{c.describe()} breaks {failed}"
    # Memory in real bytes: usable bytes x pool fraction, at least the need with headroom.
    assert c.memory_need_bytes <= c.memory_available_bytes
    assert c.memory_available_bytes == pytest.approx(o.available, abs=1.0)
    assert c.memory_need_bytes == pytest.approx(o.need, rel=1e-9, abs=1.0)
    check_memory_floor(f, c, o)
    if f.usage.memory_used_bytes is None:
        # Unknown memory: nothing with less memory than the replica has now.
        assert o.slot_bytes * o.count >= f.current_slot_bytes * f.gpus - 1, c.describe()
    # Compute: p95, p99 and peak projected stay under their targets.
    assert c.projected_compute_utilization is not None
    assert c.projected_compute_utilization <= policy.target_compute_utilization + UTILIZATION_SLACK
    assert c.projected_compute_utilization == pytest.approx(o.utilization, abs=UTILIZATION_SLACK)
    assert o.burst <= policy.burst_compute_utilization * (1 + MARGIN) + 1e-9
    assert o.peak <= 1 + MARGIN
    # Latency: the reported slowdowns are the model's, and under the limits when guarded.
    decode = c.projected_time_per_output_token_slowdown
    prefill = c.projected_time_to_first_token_slowdown
    assert decode is not None and prefill is not None
    assert decode == pytest.approx(o.decode, abs=SLOWDOWN_SLACK)
    assert prefill == pytest.approx(o.prefill, abs=SLOWDOWN_SLACK)
    if f.guarded:
        event("latency guarded")
        assert decode <= f.max_decode + SLOWDOWN_SLACK, (decode, f.max_decode)
        assert prefill <= f.max_prefill + SLOWDOWN_SLACK, (prefill, f.max_prefill)
    # Cost: the slot's price, below now; availability as the inventory says.
    assert c.hourly_cost == pytest.approx(o.cost)
    assert c.hourly_cost < f.current_cost - COST_EPS
    assert c.availability == where(f, stock, o), c.describe()
    return o


def check_memory_floor(f: Facts, c: crd.Candidate, o: Option) -> None:
    """The safety floor of the module docstring (less int truncation: 1 byte)."""
    usage = f.usage
    model = f.workload.spec.model
    g, n, h = f.gpus, c.gpus_per_replica, f.headroom
    slack = 1.0 + 1e-9 * o.need
    total = c.memory_need_bytes * n / h + slack * n
    assert total >= weights(model, o.precision) + f.rest + OVERHEAD * g
    saved = weights(model, f.precision) - weights(model, o.precision)
    mem = usage.memory_used_bytes
    if mem is None:
        return
    peak = mem.max
    if f.vllm:
        if f.pool_measured:
            # Measured pool and peak: everything DCGM saw but the KV pool never used.
            assert total >= peak * g - saved - f.unused_pool - 1e-6 * peak * g
            event("vLLM need from the measured pool, unexplained memory counted")
    else:
        assert total >= peak * g - saved
        if saved <= 0:
            # The plain bound: the observed peak, spread over the candidate's GPUs, plus headroom.
            assert c.memory_need_bytes + slack >= peak * g / n * h
    if n < g:
        event("consolidates onto fewer GPUs")


@dataclasses.dataclass(frozen=True)
class Reference:
    """All options of one workload with the verdicts recomputed here."""

    options: list[Option]
    robust: list[Option]
    """Clearly recommendable: every rule holds with a margin and the cluster has room."""
    lenient: list[Option]
    """Recommendable within float noise."""
    no_room: list[Option]
    """Clearly wanted, but the cluster has no room for it."""
    outside: list[Option]
    """Clearly wanted, but not hardware the cluster has."""


def reference(f: Facts, catalog: gpus.Catalog, stock: inventory.Inventory | None) -> Reference:
    options = all_options(f, catalog)
    robust, lenient, no_room, outside = [], [], [], []
    for o in options:
        place = where(f, stock, o)
        if all(checks(f, o, lenient=False).values()):
            if place in RECOMMENDABLE:
                robust.append(o)
            elif place == A.NO_FREE_CAPACITY:
                no_room.append(o)
            else:
                outside.append(o)
        if place in RECOMMENDABLE and all(checks(f, o, lenient=True).values()):
            lenient.append(o)
    return Reference(options, robust, lenient, no_room, outside)


def cheapest(options: list[Option]) -> float:
    return min((o.cost for o in options), default=math.inf)


def check_evaluation(
    workload: workloads.Workload,
    evaluation: engine.Evaluation,
    catalog: gpus.Catalog,
    stock: inventory.Inventory | None,
) -> None:
    assert evaluation.ref == workload.ref
    event(f"outcome {evaluation.outcome}")
    if insufficient(workload):
        assert evaluation.outcome == engine.Outcome.INSUFFICIENT_DATA, evaluation.message
        assert evaluation.recommendation is None
        assert evaluation.alternatives == ()
        assert evaluation.savings is None
        return
    f = facts(workload, catalog)
    if f.declined is None:
        return  # the contradiction is within float noise: either verdict is right
    if f.declined:
        assert evaluation.outcome == engine.Outcome.DECLINED, evaluation.message
        assert evaluation.reason == "ImpossibleUsage"
        assert evaluation.recommendation is None
        assert evaluation.alternatives == ()
        assert evaluation.savings is None
        return
    assert evaluation.outcome in {engine.Outcome.RECOMMENDED, engine.Outcome.NO_CHANGE}, (
        evaluation.outcome,
        evaluation.message,
    )
    current, rec, savings = evaluation.current, evaluation.recommendation, evaluation.savings
    assert current is not None and rec is not None and savings is not None
    assert current.gpu_model == f.gpu.id
    assert current.hourly_cost == pytest.approx(f.current_cost)
    assert savings.monthly_cost >= 0
    assert savings.currency == catalog.currency
    assert 0 <= rec.confidence <= 1
    if f.vllm:
        assert rec.engine_settings is not None
        assert rec.engine_settings.gpu_memory_utilization == pytest.approx(float(f"{f.pool:.3g}"))
        assert rec.engine_settings.max_model_len == f.max_model_len
    else:
        assert rec.engine_settings is None
    ref = reference(f, catalog, stock)
    alternatives = [(c, check_candidate(f, c, catalog, stock)) for c in evaluation.alternatives]
    ranked = [c for c, _ in alternatives if c.availability in RECOMMENDABLE]
    extras = [c for c, _ in alternatives if c.availability in EXTRA]
    assert len(ranked) + len(extras) == len(alternatives)
    assert [c.availability for c in extras].count(A.NO_FREE_CAPACITY) <= 1
    assert [c.availability for c in extras].count(A.NOT_IN_CLUSTER) <= 1
    if stock is None:
        assert not extras and evaluation.capacity is None
    if evaluation.outcome == engine.Outcome.NO_CHANGE:
        # Nothing cheaper fits, by the rules recomputed here.
        assert (rec.gpu_model, rec.mig_profile, rec.gpus_per_replica, rec.precision) == (
            current.gpu_model,
            current.mig_profile,
            current.gpus_per_replica,
            current.precision,
        )
        assert savings.monthly_cost == 0
        assert not ref.robust, f"a cheaper allocation fits: {ref.robust[0]}"
        assert not ranked, "a recommendable alternative, yet no change"
        best_cost = current.hourly_cost
    else:
        best = check_candidate(f, rec, catalog, stock)
        assert rec.availability in RECOMMENDABLE, rec.availability
        if stock is not None:
            assert_in_inventory(rec, stock, workload.spec.policy)
        assert not same_slot(rec, current)
        # The cheapest that fits, unless the recommendation on status is within 5% of it.
        prev = workload.previous
        kept = prev is not None and same_slot(rec, prev)
        if kept:
            event("hysteresis kept the previous recommendation")
            assert best.cost <= cheapest(ref.lenient) * (1 + HYSTERESIS) + COST_EPS
        else:
            assert best.cost <= cheapest(ref.robust) + COST_EPS, "not the cheapest that fits"
        if prev is not None and not kept:
            prev_options = [
                o
                for o in ref.robust
                if (o.gpu.id, o.mig, o.count, o.precision, o.variant)
                == (
                    prev.gpu_model,
                    prev.mig_profile,
                    prev.gpus_per_replica,
                    prev.precision,
                    prev.variant,
                )
            ]
            limit = cheapest(ref.lenient) * (1 + HYSTERESIS) * (1 - MARGIN)
            assert not [o for o in prev_options if o.cost < limit], "previous not kept"
        costs = [c.hourly_cost for c in ranked]
        assert costs == sorted(costs), "alternatives not sorted by cost"
        if not kept:
            assert all(c >= rec.hourly_cost - COST_EPS for c in costs)
        assert len(ranked) <= engine.ALTERNATIVES
        # Savings (priced.attach): the money, and at least the policy's minimum.
        policy = workload.spec.policy
        expected = (current.hourly_cost - rec.hourly_cost) * catalog.hours_per_month
        assert savings.monthly_cost == pytest.approx(expected * current.replicas, abs=0.01)
        assert savings.percent >= policy.min_savings_percent - 0.05
        per_replica = expected * max(current.replicas, 1)
        assert per_replica >= policy.min_monthly_savings - 0.01
        if current.replicas:
            assert savings.monthly_cost >= policy.min_monthly_savings - 0.01
        best_cost = rec.hourly_cost
    # Cheaper fits the cluster has no room for, or does not have, are shown, never recommended.
    for c in extras:
        assert c.hourly_cost < best_cost - COST_EPS
    full = [c for c in extras if c.availability == A.NO_FREE_CAPACITY]
    missing = [c for c in extras if c.availability == A.NOT_IN_CLUSTER]
    if stock is not None:
        if cheapest(ref.no_room) < best_cost * (1 - MARGIN) - COST_EPS:
            assert full, "a cheaper fit without free capacity is not shown"
        if cheapest(ref.outside) < best_cost * (1 - MARGIN) - COST_EPS:
            assert missing, "a cheaper fit outside the cluster is not shown"
        if full:
            assert full[0].hourly_cost <= cheapest(ref.no_room) + COST_EPS
            assert evaluation.capacity is not None
            assert evaluation.capacity[:2] == (False, "NoFreeCapacity")
        else:
            assert evaluation.capacity is not None and evaluation.capacity[0] is True
        if missing:
            assert missing[0].hourly_cost <= cheapest(ref.outside) + COST_EPS


def evaluate(
    batch: list[workloads.Workload], catalog: gpus.Catalog, stock: inventory.Inventory | None
) -> list[engine.Evaluation]:
    return priced.attach(engine.evaluate(batch, catalog, TABLE, stock), catalog, TABLE)


def by_ref(results: list[engine.Evaluation]) -> dict[str, engine.Evaluation]:
    return {str(e.ref): e for e in results}


def check_batch(
    case: Case, each: Callable[[workloads.Workload], None] | None = None
) -> list[engine.Evaluation]:
    catalog, stock, batch = case.catalog, case.stock, case.batch
    results = evaluate(batch, catalog, stock)
    assert len(results) == len(batch)
    for workload, evaluation in zip(batch, results, strict=True):
        if each is not None:
            each(workload)
        check_evaluation(workload, evaluation, catalog, stock)
    return results


# ---------------------------------------------------------------------------------------------
# the properties


@SETTINGS
@given(batches())
def test_every_verdict_keeps_the_engine_promises(case: Case) -> None:
    check_batch(case)


@SETTINGS
@given(batches(enough=True))
def test_with_enough_history_every_recommendation_is_feasible(case: Case) -> None:
    def each(workload: workloads.Workload) -> None:
        assert not insufficient(workload)

    check_batch(case, each)


@SETTINGS
@given(batches(enough=True, vllm=True))
def test_vllm_need_follows_the_kv_cache_not_fb_used(case: Case) -> None:
    """vLLM with a declared model: weights + used (or whole) KV pool + unexplained memory."""
    catalog = case.catalog

    def each(workload: workloads.Workload) -> None:
        assert facts(workload, catalog).vllm

    check_batch(case, each)


@SETTINGS
@given(batches(enough=True, stock=True))
def test_recommendations_are_hardware_the_cluster_has_free(case: Case) -> None:
    """With an inventory, the recommended (GPU, MIG profile, count) is offered and free there, or
    a MIG profile reachable by repartitioning only where the policy allows it."""
    results = check_batch(case)
    stock, batch = case.stock, case.batch
    assert stock is not None
    for workload, evaluation in zip(batch, results, strict=True):
        if evaluation.outcome == engine.Outcome.RECOMMENDED:
            rec = evaluation.recommendation
            assert rec is not None
            assert_in_inventory(rec, stock, workload.spec.policy)
            event(f"recommended {rec.availability}")
        for c in evaluation.alternatives:
            event(f"alternative {c.availability}")


@SETTINGS
@given(batches(enough=True, stock=True, repartition=True))
def test_repartition_only_where_the_policy_allows_it(case: Case) -> None:
    """A MIG profile no node offers is recommended only with allowMIGRepartition, on a
    MIG-capable node of that GPU model with a whole GPU free, and says so."""
    stock, batch = case.stock, case.batch
    assert stock is not None
    for workload, evaluation in zip(batch, check_batch(case), strict=True):
        rec = evaluation.recommendation
        if evaluation.outcome != engine.Outcome.RECOMMENDED or rec is None:
            continue
        assert_in_inventory(rec, stock, workload.spec.policy)
        event(f"recommended {rec.availability}")
        if rec.availability == A.NEEDS_REPARTITION:
            assert workload.spec.policy.allow_mig_repartition
            assert any("repartitioned" in r for r in rec.reasons), rec.reasons


@SETTINGS
@given(batches(enough=True, memory_known=False))
def test_unknown_memory_never_gets_less_memory(case: Case) -> None:
    """Without a memory series, no candidate has less memory than the replica has now."""
    catalog, batch = case.catalog, case.batch
    for workload, evaluation in zip(batch, check_batch(case), strict=True):
        cur = workload.current
        gpu = catalog.resolve(cur.gpu_model)
        assert gpu is not None
        now = slot_bytes(gpu, cur.mig_profile) * cur.gpus_per_replica
        recommended = evaluation.outcome == engine.Outcome.RECOMMENDED
        shown = [evaluation.recommendation] if recommended else []
        for c in [*shown, *evaluation.alternatives]:
            assert c is not None
            target = catalog.get(c.gpu_model)
            assert target is not None
            assert slot_bytes(target, c.mig_profile) * c.gpus_per_replica >= now - 1, (
                f"{c.describe()} has less memory than {cur.gpus_per_replica}x {gpu.id}"
                f"/{cur.mig_profile} although memory use is unknown"
            )


@SETTINGS
@given(batches(enough=False))
def test_too_little_history_never_recommends(case: Case) -> None:
    catalog, stock, batch = case.catalog, case.stock, case.batch
    for workload, evaluation in zip(batch, evaluate(batch, catalog, stock), strict=True):
        assert insufficient(workload)
        assert evaluation.outcome == engine.Outcome.INSUFFICIENT_DATA
        assert evaluation.recommendation is None
        assert evaluation.reason in {"InsufficientObservation", "LowCoverage"}
        check_evaluation(workload, evaluation, catalog, stock)


@settings(SETTINGS, max_examples=100)
@given(batches(enough=True))
def test_a_previous_recommendation_within_five_percent_stays(case: Case) -> None:
    """Put an alternative on status as the previous recommendation: it stays while the best is
    not 5% cheaper, otherwise the verdict does not change."""
    catalog, stock, batch = case.catalog, case.stock, case.batch
    batch = [w.model_copy(update={"previous": None}) for w in batch]
    for workload, evaluation in zip(batch, evaluate(batch, catalog, stock), strict=True):
        rec = evaluation.recommendation
        if evaluation.outcome != engine.Outcome.RECOMMENDED or rec is None:
            continue
        for alt in evaluation.alternatives:
            if alt.availability not in RECOMMENDABLE:
                continue
            previous = crd.Recommendation(**alt.model_dump(), confidence=0.5)
            again = engine.evaluate_one(
                workload.model_copy(update={"previous": previous}), catalog, TABLE, stock
            )
            assert again.outcome == engine.Outcome.RECOMMENDED
            assert again.recommendation is not None
            if alt.hourly_cost <= rec.hourly_cost * (1 + HYSTERESIS) - COST_EPS:
                event("previous kept")
                assert same_slot(again.recommendation, alt)
            elif alt.hourly_cost > rec.hourly_cost * (1 + HYSTERESIS) + COST_EPS:
                event("previous replaced")
                assert same_slot(again.recommendation, rec)


@settings(SETTINGS, max_examples=100)
@given(batches(max_size=8), st.randoms(use_true_random=False))
def test_verdicts_do_not_depend_on_the_batch(case: Case, rng: random.Random) -> None:
    """The same workload gets the same verdict alone, twice, or anywhere in any batch."""
    catalog, stock, batch = case.catalog, case.stock, case.batch
    first = engine.evaluate(batch, catalog, TABLE, stock)
    assert engine.evaluate(batch, catalog, TABLE, stock) == first
    shuffled = list(batch)
    rng.shuffle(shuffled)
    assert by_ref(engine.evaluate(shuffled, catalog, TABLE, stock)) == by_ref(first)
    alone = [engine.evaluate_one(w, catalog, TABLE, stock) for w in batch]
    assert alone == first
    doubled = engine.evaluate([*batch, *reversed(batch)], catalog, TABLE, stock)
    assert doubled[: len(batch)] == first
    assert doubled[len(batch) :] == first[::-1]


@settings(SETTINGS, max_examples=30)
@given(batches(enough=True, max_size=3, stock=True))
def test_chunking_does_not_change_verdicts(case: Case) -> None:
    """Batches larger than one array chunk give the verdicts of a small batch."""
    catalog, stock, batch = case.catalog, case.stock, case.batch
    first = engine.evaluate(batch, catalog, TABLE, stock)
    filler = [
        w.model_copy(update={"ref": workloads.WorkloadRef(namespace="x", name=f"f{i}")})
        for i, w in enumerate(batch * math.ceil(engine.CHUNK / len(batch)))
    ]
    big = engine.evaluate([*filler, *batch], catalog, TABLE, stock)
    assert big[len(filler) :] == first
