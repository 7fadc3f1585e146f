"""Candidate search: the cheapest allocation that fits, for a whole batch of workloads at once.

For every workload and every candidate (precision option x slot) the engine computes memory
need, projected compute (p95, p99 and peak), bandwidth, vLLM startability, projected latency,
policy and quality admissibility, what the cluster's inventory has and has free, and cost, as
numpy arrays; then it sorts the candidates a team could act on by cost and, on ties, by least
change. Only the winner and a few alternatives are turned into model objects with reasons.

What is recommended is hardware the cluster has (its inventory) with room for one more replica;
a cheaper fit on hardware the cluster lacks, or has no room on, is shown as an alternative with
its availability, never as the recommendation. A change must save at least the policy's minimum,
and one that raises energy use must save clearly more. A recommendation already on status is
kept while the new best is within :data:`HYSTERESIS` of it, so near-equal candidates do not
flip from sweep to sweep.

Savings are not computed here: :mod:`gpu_rightsizer.recommend.priced` is the stage after this.
Pure: no I/O, no clocks.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np

from gpu_rightsizer.models import (
    crd,
    durations,
    engines,
    gpus,
    inventory,
    precisions,
    profiles,
    workloads,
)
from gpu_rightsizer.recommend import memory, slots as slots_
from gpu_rightsizer.savings import projection

ALTERNATIVES = 3
CHUNK = 1024
HYSTERESIS = 0.05
"""The recommendation on status stays while the new best is not this much cheaper."""
ENERGY_RAISE_MIN_SAVINGS_PERCENT = 20.0
"""A change that raises energy use must save at least this (or twice the policy minimum)."""
PEAK_COMPUTE_UTILIZATION = 1.0
"""The observed peak activity, projected, must not exceed the candidate's whole compute."""
_EPS = 1e-9
_FULL_CONFIDENCE_SECONDS = 7 * 86400.0


class Outcome(enum.StrEnum):
    RECOMMENDED = "Recommended"
    """A cheaper allocation fits."""
    NO_CHANGE = "NoChange"
    """Nothing cheaper fits: keep what runs."""
    INSUFFICIENT_DATA = "InsufficientData"
    """Not enough observation to decide."""
    INVALID = "Invalid"
    """The spec or the target cannot be evaluated (e.g. an unknown GPU model)."""
    DECLINED = "Declined"
    """The input is impossible or contradictory: nothing can be judged from it."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The engine's verdict on one workload."""

    ref: workloads.WorkloadRef
    outcome: Outcome
    reason: str
    """CamelCase, for conditions and events."""
    message: str
    current: crd.Allocation | None = None
    recommendation: crd.Recommendation | None = None
    alternatives: tuple[crd.Candidate, ...] = ()
    savings: crd.Savings | None = None
    usage: profiles.UsageProfile | None = None
    capacity: tuple[bool, str, str] | None = None
    """(free capacity for the best in-cluster fit, reason, message); None when not judged."""


@dataclasses.dataclass(frozen=True)
class _Option:
    precision: precisions.Precision
    variant: str | None
    quality: float


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """One workload, validated and reduced to the numbers the array stage needs."""

    workload: workloads.Workload
    usage: profiles.UsageProfile
    gpu: gpus.GpuModel
    current: crd.Allocation
    options: tuple[_Option, ...]
    demand: memory.MemoryDemand
    demand_tflops: float
    """p95 engine activity x current capacity."""
    burst_tflops: float
    """p99."""
    peak_tflops: float
    """max."""
    capacity_tflops: float
    """Of one replica now, at its precision."""
    demand_bandwidth_gb_per_s: float | None
    """p95 DRAM activity x bandwidth; None when no DRAM-activity series exists."""
    bandwidth_gb_per_s: float
    """Of one replica now."""
    mean_activity_tflops: float
    power_watts: float
    """One replica now (measured, else modelled)."""
    allowed: frozenset[str] | None
    latency_guarded: bool
    max_model_len: int | None
    pool_fraction: float


def evaluate(
    batch: Sequence[workloads.Workload],
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
    stock: inventory.Inventory | None = None,
) -> list[Evaluation]:
    """Evaluate every workload of a batch; the result is in the batch's order.

    ``stock`` is the cluster's GPU inventory; None considers the whole catalog.
    """
    slots = slots_.build(catalog, table)
    masks = _Stock.of(slots, catalog, stock)
    results: list[Evaluation | None] = [None] * len(batch)
    ready: list[tuple[int, _Prepared]] = []
    for i, workload in enumerate(batch):
        prepared = _prepare(workload, catalog, table)
        if isinstance(prepared, Evaluation):
            results[i] = prepared
        else:
            ready.append((i, prepared))
    for start in range(0, len(ready), CHUNK):
        chunk = ready[start : start + CHUNK]
        verdicts = _search([p for _, p in chunk], slots, masks, catalog)
        for (i, _), verdict in zip(chunk, verdicts, strict=True):
            results[i] = verdict
    return [r for r in results if r is not None]


def evaluate_one(
    workload: workloads.Workload,
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
    stock: inventory.Inventory | None = None,
) -> Evaluation:
    return evaluate([workload], catalog, table, stock)[0]


# ---------------------------------------------------------------------------------------------
# the inventory as slot masks


@dataclasses.dataclass(frozen=True)
class _Stock:
    """Per slot: offered by a node, free on a node, reachable by repartitioning a node."""

    known: bool
    offered: np.ndarray
    free: np.ndarray
    repartition: np.ndarray
    repartition_free: np.ndarray
    text: str

    @classmethod
    def of(
        cls, slots: slots_.SlotTable, catalog: gpus.Catalog, stock: inventory.Inventory | None
    ) -> _Stock:
        n = len(slots)
        if stock is None:
            yes = np.ones(n, dtype=bool)
            return cls(False, yes, yes, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), "")
        offered, free = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        repart, repart_free = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for s in range(n):
            gpu_id = slots.gpu_ids[slots.gpu_index[s]]
            mig = slots.mig_names[slots.mig_index[s]]
            count = int(slots.count[s])
            if mig:
                offered[s] = stock.offers_mig(gpu_id, mig)
                free[s] = stock.free_mig(gpu_id, mig)
                repart[s] = not offered[s] and stock.can_repartition(gpu_id)
                repart_free[s] = repart[s] and stock.free_to_repartition(gpu_id)
            else:
                offered[s] = stock.has_whole(gpu_id, count)
                free[s] = stock.free_whole(gpu_id, count)
        text = f"{stock.source}: {stock.describe()}"
        return cls(True, offered, free & offered, repart, repart_free, text)


# ---------------------------------------------------------------------------------------------
# preparation (per workload, scalar)


def _invalid(ref: workloads.WorkloadRef, reason: str, message: str) -> Evaluation:
    return Evaluation(ref, Outcome.INVALID, reason, message)


def _prepare(
    workload: workloads.Workload, catalog: gpus.Catalog, table: precisions.PrecisionTable
) -> _Prepared | Evaluation:
    ref, spec, cur = workload.ref, workload.spec, workload.current
    gpu = catalog.resolve(cur.gpu_model)
    if gpu is None:
        return _invalid(
            ref,
            "UnknownGPUModel",
            f"GPU model {cur.gpu_model!r} of the target is not in the catalog "
            f"(known: {', '.join(catalog.ids)})",
        )
    if cur.mig_profile is not None and gpu.mig_profile(cur.mig_profile) is None:
        return _invalid(
            ref, "UnknownMIGProfile", f"{gpu.id} has no MIG profile {cur.mig_profile!r}"
        )
    allowed: frozenset[str] | None = None
    if spec.policy.allowed_gpu_models is not None:
        resolved = {name: catalog.resolve(name) for name in spec.policy.allowed_gpu_models}
        unknown = [name for name, g in resolved.items() if g is None]
        if unknown:
            return _invalid(
                ref,
                "UnknownGPUModel",
                f"spec.policy.allowedGPUModels: unknown GPU model {unknown[0]!r} "
                f"(known: {', '.join(catalog.ids)})",
            )
        allowed = frozenset(g.id for g in resolved.values() if g is not None)
    precision = spec.model.precision if spec.model else cur.precision
    current = crd.Allocation(
        gpu_model=gpu.id,
        mig_profile=cur.mig_profile,
        gpus_per_replica=cur.gpus_per_replica,
        replicas=cur.replicas,
        precision=precision,
        hourly_cost=slots_.hourly_cost(gpu, cur.mig_profile, cur.gpus_per_replica),
    )
    usage = workload.usage
    missing = _observation_problem(usage, spec.policy)
    if missing is not None:
        return Evaluation(
            ref, Outcome.INSUFFICIENT_DATA, missing[0], missing[1], current, usage=usage
        )
    assert usage is not None
    options = [_Option(precision, None, 1.0)]
    for variant in spec.model.variants if spec.model else ():
        quality = variant.quality_recovery
        if quality is None:
            quality = table.get(variant.precision).quality_recovery
        options.append(_Option(variant.precision, variant.name, quality))
    beyond = _beyond_any_gpu(usage)
    if beyond is not None:
        return Evaluation(ref, Outcome.DECLINED, "ImpossibleUsage", beyond, current, usage=usage)
    slot_bytes = memory.slot_memory_bytes(gpu, cur.mig_profile)
    demand = memory.demand(
        spec,
        usage,
        precision,
        tuple(o.precision for o in options),
        cur.gpus_per_replica,
        slot_bytes,
        pool_fraction=workload.gpu_memory_utilization,
        container_engine=workload.serving_engine,
    )
    if demand.problem is not None:
        return Evaluation(
            ref, Outcome.DECLINED, "ImpossibleUsage", demand.problem, current, usage=usage
        )
    capacity = capacity_tflops(gpu, current, table)
    activity = usage.graphics_engine_active
    dram = usage.dram_active
    bandwidth = (
        gpu.memory_bandwidth_gb_per_s
        * slots_.memory_fraction(gpu, cur.mig_profile)
        * cur.gpus_per_replica
    )
    mean = activity.mean if activity.mean is not None else activity.p50
    guard = spec.policy.latency.guard
    serving = demand.preallocates or spec.serving.engine is not None
    return _Prepared(
        workload=workload,
        usage=usage,
        gpu=gpu,
        current=current,
        options=tuple(options),
        demand=demand,
        demand_tflops=activity.p95 * capacity,
        burst_tflops=activity.p99 * capacity,
        peak_tflops=activity.max * capacity,
        capacity_tflops=capacity,
        demand_bandwidth_gb_per_s=dram.p95 * bandwidth if dram is not None else None,
        bandwidth_gb_per_s=bandwidth,
        mean_activity_tflops=mean * capacity,
        power_watts=current_power_watts(gpu, current, usage)[0],
        allowed=allowed,
        latency_guarded=guard == crd.LatencyGuard.ENFORCE
        or (guard == crd.LatencyGuard.AUTO and serving),
        max_model_len=(spec.model.max_model_len if spec.model else None) or workload.max_model_len,
        pool_fraction=demand.pool_fraction,
    )


MAX_READING_BYTES_PER_GPU = float(2**40)
"""1 TiB: no per-GPU memory figure above this is a reading (the largest GPU of
data/catalog.yaml, B200, has 180 GB; a broken exporter or a counter read as a gauge has more)."""
MAX_READING_WATTS_PER_GPU = 10_000.0
"""10 kW: no per-GPU power figure above this is a reading (the catalog's highest TDP is 1000 W)."""


def _beyond_any_gpu(usage: profiles.UsageProfile) -> str | None:
    """Why a per-GPU figure cannot be a GPU's (far more memory or power than any GPU has), or
    None. Such figures would overflow the arithmetic, and nothing can be judged from them."""
    used = usage.memory_used_bytes
    if used is not None and _top(used) > MAX_READING_BYTES_PER_GPU:
        return (
            f"DCGM reports {_top(used) / 2**30:.3g} GiB of memory used on one GPU, more than "
            f"any GPU has ({MAX_READING_BYTES_PER_GPU / 2**30:.0f} GiB): the memory series "
            "cannot be trusted"
        )
    power = usage.power_watts
    if power is not None and _top(power) > MAX_READING_WATTS_PER_GPU:
        return (
            f"DCGM reports {_top(power):.3g} W drawn by one GPU, more than any GPU draws "
            f"({MAX_READING_WATTS_PER_GPU:.0f} W): the power series cannot be trusted"
        )
    return None


def _top(figures: profiles.Percentiles) -> float:
    """The largest figure, the mean included (a usage file may hold a mean above the max)."""
    return max(figures.max, figures.mean or 0.0)


def current_power_watts(
    gpu: gpus.GpuModel, current: crd.Allocation, usage: profiles.UsageProfile
) -> tuple[float, str]:
    """Power of one replica now: measured by DCGM where it can be, else modelled; and how."""
    share = slots_.physical_share(gpu, current.mig_profile)
    count = current.gpus_per_replica
    if usage.power_watts is not None:
        power = (
            usage.power_watts.mean if usage.power_watts.mean is not None else usage.power_watts.p50
        )
        basis = f"measured by DCGM ({power:.0f} W per GPU over {usage.window}"
        basis += f", {share:.0%} of it for the MIG instance)" if current.mig_profile else ")"
        return power * share * count, basis
    activity = usage.graphics_engine_active
    mean = activity.mean if activity.mean is not None else activity.p50
    watts = projection.modelled_power_watts(gpu, share, mean) * count
    return watts, f"modelled from {gpu.id}'s power envelope at {mean:.0%} mean activity"


def capacity_tflops(
    gpu: gpus.GpuModel, allocation: crd.Allocation, table: precisions.PrecisionTable
) -> float:
    """Dense TFLOPS one replica of the allocation has at its precision."""
    precision = allocation.precision or precisions.Precision.BF16
    speed = table.get(precision).native_speedup if precision in gpu.native_precisions else 1.0
    share = slots_.physical_share(gpu, allocation.mig_profile)
    return gpu.bf16_dense_tflops * share * allocation.gpus_per_replica * speed


def _observation_problem(
    usage: profiles.UsageProfile | None, policy: crd.Policy
) -> tuple[str, str] | None:
    if usage is None:
        return "NoUsageData", "no usage data for the target's pods yet"
    needed = durations.parse(policy.min_observation).total_seconds()
    have = usage.history_seconds
    if usage.samples == 0 or have < needed:
        return (
            "InsufficientObservation",
            f"observed {durations.format_seconds(have)} of history; the policy asks for "
            f"{policy.min_observation} before recommending",
        )
    if usage.coverage_of_history < policy.min_coverage:
        return (
            "LowCoverage",
            f"samples cover {usage.coverage_of_history:.0%} of the "
            f"{durations.format_seconds(have)} observed; the policy asks for "
            f"{policy.min_coverage:.0%}",
        )
    return None


# ---------------------------------------------------------------------------------------------
# the array stage


@dataclasses.dataclass(frozen=True)
class _Arrays:
    recommendable: np.ndarray
    """(n, k, s): fits, allowed, in the cluster with room, worth the change."""
    no_room: np.ndarray
    """(n, k, s): would be recommendable, but no node has it free."""
    outside: np.ndarray
    """(n, k, s): would be recommendable, but the cluster does not have it."""
    need: np.ndarray
    available: np.ndarray
    utilization: np.ndarray
    decode: np.ndarray
    prefill: np.ndarray
    kv_pool: np.ndarray
    """(n, k, s): bytes of KV pool one replica would have."""
    needs_repartition: np.ndarray
    """(n, s)."""
    order: np.ndarray
    rejected: dict[str, np.ndarray]
    cheapest_no_room: np.ndarray
    """(n,): flat (k, s) index of the cheapest no-room fit (meaningful where one exists)."""
    cheapest_outside: np.ndarray


def _search(
    batch: list[_Prepared], slots: slots_.SlotTable, stock: _Stock, catalog: gpus.Catalog
) -> list[Evaluation]:
    arrays = _arrays(batch, slots, stock, catalog)
    return [_decide(w, p, arrays, slots, stock) for w, p in enumerate(batch)]


def _arrays(
    batch: list[_Prepared], slots: slots_.SlotTable, stock: _Stock, catalog: gpus.Catalog
) -> _Arrays:
    n, k = len(batch), max(len(p.options) for p in batch)
    index = slots_.PRECISION_INDEX
    prec = np.zeros((n, k), dtype=np.int64)
    valid = np.zeros((n, k), dtype=bool)
    quality_ok = np.zeros((n, k), dtype=bool)
    weights = np.zeros((n, k))
    allowed = np.ones((n, len(slots.gpu_ids)), dtype=bool)
    (
        other,
        overhead,
        pool,
        headroom,
        demand,
        burst,
        peak,
        burst_target,
        bandwidth,
        bandwidth_known,
        bandwidth_now,
        target,
        allow_mig,
        allow_repartition,
        max_gpus,
        memory_floor,
        max_len_bytes,
        non_kv,
        guarded,
        max_decode,
        max_prefill,
        capacity_now,
        decode_now,
        mean_tflops,
        power_now,
        min_percent,
        min_monthly,
        replicas,
    ) = (np.zeros(n) for _ in range(28))
    cur_cost, cur_gpu, cur_mig, cur_count, cur_prec = (np.zeros(n) for _ in range(5))
    of_free = np.zeros(n, dtype=bool)
    for w, p in enumerate(batch):
        policy = p.workload.spec.policy
        d = p.demand
        for j, option in enumerate(p.options):
            prec[w, j] = index[option.precision]
            valid[w, j] = True
            quality_ok[w, j] = option.variant is None or option.quality >= (
                policy.min_quality_recovery - _EPS
            )
            weights[w, j] = d.weights_total_bytes.get(option.precision, 0.0)
        if p.allowed is not None:
            allowed[w] = [g in p.allowed for g in slots.gpu_ids]
        other[w] = d.other_total_bytes
        overhead[w] = d.overhead_total_bytes
        pool[w] = d.pool_fraction
        of_free[w] = d.engine is not None and d.engine.of_free_memory
        headroom[w] = 1 + policy.memory_headroom_percent / 100
        demand[w], burst[w], peak[w] = p.demand_tflops, p.burst_tflops, p.peak_tflops
        burst_target[w] = policy.burst_compute_utilization
        bandwidth_known[w] = p.demand_bandwidth_gb_per_s is not None
        bandwidth[w] = p.demand_bandwidth_gb_per_s or 0.0
        bandwidth_now[w] = p.bandwidth_gb_per_s
        target[w] = policy.target_compute_utilization
        allow_mig[w] = policy.allow_mig
        allow_repartition[w] = policy.allow_mig_repartition
        # Never spread a replica over more GPUs than it has now: tensor parallelism over more
        # (often slower-linked) GPUs changes performance in ways usage data cannot predict.
        max_gpus[w] = min(policy.max_gpus_per_replica, p.current.gpus_per_replica)
        if not d.known:
            # Memory unknown: no allocation with less memory than the current one.
            memory_floor[w] = memory.slot_memory_bytes(p.gpu, p.current.mig_profile) * (
                p.current.gpus_per_replica
            )
        if d.preallocates and p.max_model_len and d.kv_bytes_per_token:
            max_len_bytes[w] = p.max_model_len * d.kv_bytes_per_token
        guarded[w] = p.latency_guarded
        latency = policy.latency
        max_decode[w] = latency.max_time_per_output_token_slowdown
        max_prefill[w] = latency.max_time_to_first_token_slowdown
        usage = p.usage
        if latency.time_per_output_token_seconds and usage.time_per_output_token_seconds:
            max_decode[w] = min(
                max_decode[w],
                latency.time_per_output_token_seconds
                / max(usage.time_per_output_token_seconds.p95, _EPS),
            )
        if latency.time_to_first_token_seconds and usage.time_to_first_token_seconds:
            max_prefill[w] = min(
                max_prefill[w],
                latency.time_to_first_token_seconds
                / max(usage.time_to_first_token_seconds.p95, _EPS),
            )
        capacity_now[w] = p.capacity_tflops
        weights_now = d.weights_total_bytes.get(p.current.precision or precisions.Precision.BF16)
        # At least one byte read per step: with nothing known to read, decode time is the
        # bandwidth ratio alone.
        decode_now[w] = max((weights_now or 0.0) + d.other_total_bytes, 1.0) / max(
            p.bandwidth_gb_per_s, _EPS
        )
        mean_tflops[w] = p.mean_activity_tflops
        power_now[w] = p.power_watts
        min_percent[w] = policy.min_savings_percent
        min_monthly[w] = policy.min_monthly_savings
        replicas[w] = max(p.current.replicas, 1)
        non_kv[w] = d.non_kv_total_bytes
        cur = p.current
        cur_cost[w] = cur.hourly_cost
        cur_gpu[w] = slots.gpu_ids.index(cur.gpu_model)
        cur_mig[w] = (
            slots.mig_names.index(cur.mig_profile or "")
            if (cur.mig_profile or "") in slots.mig_names
            else -1
        )
        cur_count[w] = cur.gpus_per_replica
        cur_prec[w] = index[cur.precision or precisions.Precision.BF16]

    count = slots.count.astype(np.float64)
    slot_memory = slots.memory_bytes * count
    need = (
        (weights[:, :, None] + (other + overhead)[:, None, None]) / count * headroom[:, None, None]
    )
    # What the engine may fill on each GPU: its claim of the GPU (vLLM, SGLang), or for an
    # engine that claims a fraction of what the weights and runtime leave (TensorRT-LLM) those
    # plus that fraction of the rest.
    slot_bytes = slots.memory_bytes[None, None, :]
    fraction = pool[:, None, None]
    free = of_free[:, None, None]
    fixed = weights[:, :, None] / count + memory.RUNTIME_OVERHEAD_BYTES
    available = np.where(
        free,
        np.minimum(fixed + fraction * np.maximum(slot_bytes - fixed, 0.0), slot_bytes),
        slot_bytes * fraction,
    )
    memory_ok = (need <= available) & (
        slot_memory[None, None, :] >= memory_floor[:, None, None] - 1
    )

    # An engine refuses to start unless its KV pool holds one sequence of the served max length.
    kv_pool = np.where(
        free,
        fraction
        * np.maximum(
            (slot_bytes - memory.RUNTIME_OVERHEAD_BYTES) * count
            - weights[:, :, None]
            - non_kv[:, None, None],
            0.0,
        ),
        (fraction * slot_bytes - memory.RUNTIME_OVERHEAD_BYTES) * count
        - weights[:, :, None]
        - non_kv[:, None, None],
    )
    startable = (max_len_bytes[:, None, None] <= 0) | (kv_pool >= max_len_bytes[:, None, None])

    capacity = slots.tflops * count * slots.speedup[prec]
    utilization = demand[:, None, None] / capacity
    compute_ok = (
        (utilization <= target[:, None, None] + _EPS)
        & (burst[:, None, None] / capacity <= burst_target[:, None, None] + _EPS)
        & (peak[:, None, None] / capacity <= PEAK_COMPUTE_UTILIZATION + _EPS)
    )
    slot_bandwidth = slots.bandwidth_gb_per_s * count
    bandwidth_ok = np.where(
        bandwidth_known[:, None] > 0,
        bandwidth[:, None] <= target[:, None] * slot_bandwidth[None, :],
        # Bandwidth use unknown: no allocation with less memory bandwidth than now.
        slot_bandwidth[None, :] >= bandwidth_now[:, None] * (1 - 1e-6),
    )

    # Decode reads the weights and the KV cache in use every step: time ∝ bytes / bandwidth.
    decode = (
        np.maximum(weights[:, :, None] + other[:, None, None], 1.0)
        / slot_bandwidth[None, None, :]
        / np.maximum(decode_now[:, None, None], _EPS)
    )
    # Prefill is compute bound: time ∝ 1 / compute.
    prefill = capacity_now[:, None, None] / capacity
    latency_ok = (guarded[:, None, None] <= 0) | (
        (decode <= max_decode[:, None, None] + _EPS)
        & (prefill <= max_prefill[:, None, None] + _EPS)
    )

    runnable = slots.runnable[prec]
    policy_ok = (
        allowed[:, slots.gpu_index]
        & ((allow_mig[:, None] > 0) | ~slots.is_mig[None, :])
        & (slots.count[None, :] <= max_gpus[:, None])
    )
    repartition = (allow_repartition[:, None] > 0) & stock.repartition[None, :]
    present = stock.offered[None, :] | repartition
    room = stock.free[None, :] | (repartition & stock.repartition_free[None, :])
    is_current = (
        (slots.gpu_index[None, :] == cur_gpu[:, None])
        & (slots.mig_index[None, :] == cur_mig[:, None])
        & (slots.count[None, :] == cur_count[:, None])
    )
    present = present | is_current
    room = room | is_current

    hours = catalog.hours_per_month
    saved = cur_cost[:, None] - slots.cost[None, :]
    percent = 100 * saved / np.maximum(cur_cost[:, None], _EPS)
    worth = (
        (saved > _EPS)
        & (percent >= min_percent[:, None] - _EPS)
        & (saved * hours * replicas[:, None] >= min_monthly[:, None] - _EPS)
    )
    gpu_of = slots.gpu_index
    idle = np.array([g.idle_watts for g in catalog.gpus])[gpu_of]
    tdp = np.array([g.tdp_watts for g in catalog.gpus])[gpu_of]
    share = slots.tflops / np.array([g.bf16_dense_tflops for g in catalog.gpus])[gpu_of]
    activity = np.clip(mean_tflops[:, None, None] / capacity, 0.0, 1.0)
    power = (idle + (tdp - idle) * activity) * share * count
    raise_floor = np.maximum(2 * min_percent, ENERGY_RAISE_MIN_SAVINGS_PERCENT)
    energy_ok = (power <= power_now[:, None, None] + _EPS) | (
        percent[:, None, :] >= raise_floor[:, None, None] - _EPS
    )

    fits = (
        (valid & quality_ok)[:, :, None]
        & runnable
        & policy_ok[:, None, :]
        & memory_ok
        & compute_ok
        & bandwidth_ok[:, None, :]
        & startable
        & latency_ok
    )
    wanted = fits & worth[:, None, :] & energy_ok
    recommendable = wanted & (present & room)[:, None, :]
    no_room = wanted & (present & ~room)[:, None, :]
    outside = wanted & ~present[:, None, :]
    change = (
        8 * (prec != cur_prec[:, None])[:, :, None]
        + (
            4 * (slots.gpu_index[None, :] != cur_gpu[:, None])
            + 2 * (slots.mig_index[None, :] != cur_mig[:, None])
            + (slots.count[None, :] != cur_count[:, None])
        )[:, None, :]
    )
    cost = np.where(recommendable, slots.cost[None, None, :], np.inf).reshape(n, -1)
    flat = np.broadcast_to(np.arange(cost.shape[1]), cost.shape)
    order = np.lexsort((flat, change.reshape(n, -1), cost), axis=-1)[:, : ALTERNATIVES + 1]

    # Why the cheaper candidates were rejected, first failing check wins.
    cheaper = (slots.cost[None, :] < cur_cost[:, None] - _EPS)[:, None, :] & valid[:, :, None]
    shape = cheaper.shape
    rejected = {}
    remaining = cheaper
    for name, ok in (
        ("policy", np.broadcast_to(policy_ok[:, None, :], shape)),
        ("inventory", np.broadcast_to(present[:, None, :], shape)),
        ("unsupported", runnable),
        ("quality", np.broadcast_to(quality_ok[:, :, None], shape)),
        ("memory", memory_ok),
        ("compute", compute_ok),
        ("bandwidth", np.broadcast_to(bandwidth_ok[:, None, :], shape)),
        ("startup", startable),
        ("latency", latency_ok),
        ("room", np.broadcast_to(room[:, None, :], shape)),
        ("saving", np.broadcast_to(worth[:, None, :], shape)),
        ("energy", energy_ok),
    ):
        rejected[name] = (remaining & ~ok).sum(axis=(1, 2))
        remaining = remaining & ok
    cheapest_no_room = np.argmin(
        np.where(no_room, slots.cost[None, None, :], np.inf).reshape(n, -1), axis=-1
    )
    cheapest_outside = np.argmin(
        np.where(outside, slots.cost[None, None, :], np.inf).reshape(n, -1), axis=-1
    )
    return _Arrays(
        recommendable,
        no_room,
        outside,
        need,
        available,
        utilization,
        decode,
        prefill,
        kv_pool,
        repartition & ~stock.offered[None, :],
        order,
        rejected,
        cheapest_no_room,
        cheapest_outside,
    )


# ---------------------------------------------------------------------------------------------
# decisions and explanations (per workload)


def _decide(
    w: int, p: _Prepared, arrays: _Arrays, slots: slots_.SlotTable, stock: _Stock
) -> Evaluation:
    ref = p.workload.ref
    n_slots = len(slots)
    flat_ok = arrays.recommendable[w].reshape(-1)
    picks = [(int(i) // n_slots, int(i) % n_slots) for i in arrays.order[w] if flat_ok[int(i)]]
    picks = _hysteresis(p, picks, arrays.recommendable[w], slots)
    candidates = [_candidate(w, k, s, p, arrays, slots, stock) for k, s in picks]
    rejected = _rejection_summary({name: int(c[w]) for name, c in arrays.rejected.items()})
    confidence = _confidence(p)
    memory_text = p.demand.explanation
    best_cost = candidates[0].hourly_cost if candidates else p.current.hourly_cost
    extra, capacity = _beyond(w, p, arrays, slots, stock, best_cost)
    notes = _notes(p, stock)
    if not candidates or _same(candidates[0], p.current):
        # Nothing cheaper fits (or is worth the change): keep what runs.
        reasons = _keep_reasons(p, rejected, capacity)
        keep = crd.Recommendation(
            **p.current.model_dump(),
            memory_need_bytes=int(
                p.demand.need_per_gpu_bytes(
                    p.current.precision or precisions.Precision.BF16,
                    p.current.gpus_per_replica,
                )
                * (1 + p.workload.spec.policy.memory_headroom_percent / 100)
            ),
            memory_available_bytes=int(_available_now(p)),
            projected_compute_utilization=round(p.usage.graphics_engine_active.p95, 4),
            availability=crd.Availability.IN_CLUSTER if stock.known else None,
            confidence=confidence,
            reasons=(memory_text, *reasons, *notes),
            engine_settings=_engine_settings(p),
        )
        alternatives = tuple(c for c in candidates if not _same(c, p.current))[:ALTERNATIVES]
        return Evaluation(
            ref,
            Outcome.NO_CHANGE,
            "NoCheaperAllocation",
            reasons[0],
            p.current,
            keep,
            (*alternatives, *extra),
            None,
            p.usage,
            capacity,
        )
    best = candidates[0]
    k, s = picks[0]
    reasons = _reasons(w, k, s, p, best, arrays, len(picks), rejected)
    if capacity is not None and not capacity[0]:
        reasons = (*reasons, capacity[2])
    recommendation = crd.Recommendation(
        **best.model_dump(),
        confidence=confidence,
        reasons=(memory_text, *reasons, *notes),
        engine_settings=_engine_settings(p),
    )
    percent = 100 * (1 - best.hourly_cost / p.current.hourly_cost)
    return Evaluation(
        ref,
        Outcome.RECOMMENDED,
        "CheaperAllocationFound",
        f"{best.describe()} instead of {p.current.describe()} costs {percent:.0f}% less",
        p.current,
        recommendation,
        (*candidates[1 : ALTERNATIVES + 1], *extra),
        None,
        p.usage,
        capacity,
    )


def _hysteresis(
    p: _Prepared, picks: list[tuple[int, int]], ok: np.ndarray, slots: slots_.SlotTable
) -> list[tuple[int, int]]:
    """Keep the recommendation already on status while the new best is not clearly cheaper."""
    prev = p.workload.previous
    if prev is None or not picks:
        return picks
    s = slots.find(prev.gpu_model, prev.mig_profile, prev.gpus_per_replica)
    k = next(
        (
            j
            for j, o in enumerate(p.options)
            if o.precision == prev.precision and o.variant == prev.variant
        ),
        None,
    )
    if s is None or k is None or not ok[k, s] or (k, s) == picks[0]:
        return picks
    if float(slots.cost[s]) <= float(slots.cost[picks[0][1]]) * (1 + HYSTERESIS) + _EPS:
        return [(k, s), *(pick for pick in picks if pick != (k, s))]
    return picks


def _beyond(
    w: int,
    p: _Prepared,
    arrays: _Arrays,
    slots: slots_.SlotTable,
    stock: _Stock,
    best_cost: float,
) -> tuple[tuple[crd.Candidate, ...], tuple[bool, str, str] | None]:
    """Cheaper fits the cluster has no room for, or does not have; and the capacity verdict."""
    out: list[crd.Candidate] = []
    capacity: tuple[bool, str, str] | None = None
    if not stock.known:
        return (), None
    for mask, flat in (
        (arrays.no_room[w], int(arrays.cheapest_no_room[w])),
        (arrays.outside[w], int(arrays.cheapest_outside[w])),
    ):
        k, s = flat // len(slots), flat % len(slots)
        if mask[k, s] and float(slots.cost[s]) < best_cost - _EPS:
            out.append(_candidate(w, k, s, p, arrays, slots, stock))
    room = next((c for c in out if c.availability == crd.Availability.NO_FREE_CAPACITY), None)
    if room is not None:
        capacity = (
            False,
            "NoFreeCapacity",
            f"{room.describe()} would fit for {room.hourly_cost:.2f}/h, but no node has one "
            "free now: the next best that has room is recommended",
        )
    else:
        capacity = (True, "CapacityAvailable", "the recommended allocation has room on a node")
    return tuple(out), capacity


def _candidate(
    w: int,
    k: int,
    s: int,
    p: _Prepared,
    arrays: _Arrays,
    slots: slots_.SlotTable,
    stock: _Stock,
) -> crd.Candidate:
    option = p.options[k]
    mig = slots.mig_names[slots.mig_index[s]] or None
    return crd.Candidate(
        gpu_model=slots.gpu_ids[slots.gpu_index[s]],
        mig_profile=mig,
        gpus_per_replica=int(slots.count[s]),
        replicas=p.current.replicas,
        precision=option.precision,
        variant=option.variant,
        hourly_cost=float(slots.cost[s]),
        memory_need_bytes=int(arrays.need[w, k, s]),
        memory_available_bytes=int(arrays.available[w, 0, s]),
        projected_compute_utilization=round(float(arrays.utilization[w, k, s]), 4),
        quality_recovery=option.quality,
        availability=_availability(w, k, s, arrays, stock),
        projected_time_per_output_token_slowdown=round(float(arrays.decode[w, k, s]), 3),
        projected_time_to_first_token_slowdown=round(float(arrays.prefill[w, k, s]), 3),
    )


def _availability(
    w: int, k: int, s: int, arrays: _Arrays, stock: _Stock
) -> crd.Availability | None:
    if not stock.known:
        return None
    if arrays.outside[w, k, s]:
        return crd.Availability.NOT_IN_CLUSTER
    if arrays.no_room[w, k, s]:
        return crd.Availability.NO_FREE_CAPACITY
    if arrays.needs_repartition[w, s]:
        return crd.Availability.NEEDS_REPARTITION
    return crd.Availability.IN_CLUSTER


def _available_now(p: _Prepared) -> float:
    """What the engine may fill on one GPU of the current allocation (see _arrays)."""
    slot = memory.slot_memory_bytes(p.gpu, p.current.mig_profile)
    d = p.demand
    if d.engine is None:
        return slot * d.pool_fraction
    weights = d.weights_total_bytes.get(p.current.precision or precisions.Precision.BF16, 0.0)
    fixed = weights / p.current.gpus_per_replica + memory.RUNTIME_OVERHEAD_BYTES
    return min(d.engine.claimed_bytes(d.pool_fraction, slot, fixed), slot)


def _engine_settings(p: _Prepared) -> crd.EngineSettings | None:
    if p.demand.engine is None:
        return None
    # Three significant digits, not three places: a container's --gpu-memory-utilization of
    # 0.0001 (vLLM accepts any fraction) must not round to 0, which the status rejects.
    return crd.EngineSettings(
        engine=None if p.demand.engine is engines.VLLM else p.demand.engine.kind,
        gpu_memory_utilization=float(f"{p.pool_fraction:.3g}"),
        max_model_len=p.max_model_len,
    )


def _same(a: crd.Allocation, b: crd.Allocation) -> bool:
    return (a.gpu_model, a.mig_profile, a.gpus_per_replica, a.precision) == (
        b.gpu_model,
        b.mig_profile,
        b.gpus_per_replica,
        b.precision,
    )


def _confidence(p: _Prepared) -> float:
    """Grows with history (like the VPA recommender) and coverage; lower if need was guessed."""
    history = min(1.0, p.usage.history_seconds / _FULL_CONFIDENCE_SECONDS)
    value = history**0.5 * p.usage.coverage_of_history
    if p.demand.estimated:
        value *= 0.8
    if p.demand.preallocates and not p.max_model_len:
        value *= 0.9
    return round(min(1.0, float(value)), 2)


def _gib(value: float) -> str:
    return f"{value / memory.GIB:.1f} GiB"


def _notes(p: _Prepared, stock: _Stock) -> tuple[str, ...]:
    notes = list(p.demand.notes)
    if p.demand.preallocates and not p.demand.known:
        notes.append(
            "GPU memory use is unknown (no DCGM_FI_DEV_FB_USED series for the target): no "
            "allocation with less memory than the current one is considered"
        )
    if p.demand_bandwidth_gb_per_s is None:
        notes.append(
            "memory-bandwidth use is unknown (no DCGM_FI_PROF_DRAM_ACTIVE series): no allocation "
            "with less memory bandwidth than the current one is considered"
        )
    engine = p.demand.engine
    if engine is not None and not p.max_model_len:
        notes.append(
            f"the served max model length is unknown (no {engine.max_length_flag} in the "
            f"container, no spec.model.maxModelLen): whether {engine.name} starts on a smaller "
            "pool was not checked"
        )
    elif engine is not None and not p.demand.kv_bytes_per_token:
        notes.append(
            "KV bytes per token are unknown (set spec.model.kvCacheBytesPerToken): whether "
            f"{engine.name} starts on a smaller pool was not checked"
        )
    if stock.known:
        notes.append(f"candidates from the cluster's inventory ({stock.text})")
    else:
        notes.append(
            "no inventory of the cluster's nodes was given: the whole catalog was considered"
        )
    return tuple(notes)


def _reasons(
    w: int,
    k: int,
    s: int,
    p: _Prepared,
    best: crd.Candidate,
    arrays: _Arrays,
    feasible: int,
    rejected: str,
) -> tuple[str, ...]:
    policy = p.workload.spec.policy
    unit = "slice" if best.mig_profile else "GPU"
    act = p.usage.graphics_engine_active
    util = best.projected_compute_utilization or 0.0
    scale = util / act.p95 if act.p95 > 0 else 0.0
    reasons = [
        f"with {policy.memory_headroom_percent}% headroom it needs "
        f"{_gib(best.memory_need_bytes)} per {unit} on {best.describe()}, which offers "
        f"{_gib(best.memory_available_bytes)}",
        f"engine activity on {p.current.describe()} (p95 {act.p95:.0%}, p99 {act.p99:.0%}, "
        f"max {act.max:.0%}) projects to p95 {util:.0%}, p99 {act.p99 * scale:.0%}, max "
        f"{act.max * scale:.0%} on {best.describe()} (targets "
        f"{policy.target_compute_utilization:.0%}, {policy.burst_compute_utilization:.0%}, 100%)",
    ]
    if p.latency_guarded:
        decode = best.projected_time_per_output_token_slowdown or 0.0
        prefill = best.projected_time_to_first_token_slowdown or 0.0
        text = (
            f"projected latency: time per output token x{decode:.2f} (limit "
            f"x{policy.latency.max_time_per_output_token_slowdown:.2f}), time to first token "
            f"x{prefill:.2f} (limit x{policy.latency.max_time_to_first_token_slowdown:.2f})"
        )
        tpot, ttft = p.usage.time_per_output_token_seconds, p.usage.time_to_first_token_seconds
        if tpot is not None:
            text += (
                f"; p95 inter-token latency {tpot.p95 * 1000:.0f} ms → "
                f"{tpot.p95 * decode * 1000:.0f} ms"
            )
        if ttft is not None:
            text += f"; p95 time to first token {ttft.p95:.2f} s → {ttft.p95 * prefill:.2f} s"
        reasons.append(text)
    if p.demand.preallocates and p.max_model_len and p.demand.kv_bytes_per_token:
        tokens = float(arrays.kv_pool[w, k, s]) / p.demand.kv_bytes_per_token
        reasons.append(
            f"{p.demand.engine_name} starts: its KV pool of "
            f"{_gib(float(arrays.kv_pool[w, k, s]))} holds "
            f"{tokens:,.0f} tokens, at least one sequence of max-model-len {p.max_model_len:,}"
        )
    if best.variant is not None:
        reasons.append(
            f"serves the declared variant {best.variant!r} ({best.precision}, quality recovery "
            f"{best.quality_recovery:.2f} >= policy minimum {policy.min_quality_recovery:.2f})"
        )
    if best.availability == crd.Availability.NEEDS_REPARTITION:
        reasons.append(
            f"no node offers {best.mig_profile} yet: a MIG-capable {best.gpu_model} node must be "
            "repartitioned (spec.policy.allowMIGRepartition is set)"
        )
    reasons.append(
        f"costs {best.hourly_cost:.2f}/h instead of {p.current.hourly_cost:.2f}/h per replica, "
        f"the cheapest of {feasible} allocation(s) that fit"
    )
    if rejected:
        reasons.append(f"cheaper allocations rejected: {rejected}")
    return tuple(reasons)


def _keep_reasons(
    p: _Prepared, rejected: str, capacity: tuple[bool, str, str] | None
) -> tuple[str, ...]:
    policy = p.workload.spec.policy
    head = f"no allocation cheaper than {p.current.describe()} fits"
    act = p.usage.graphics_engine_active
    if p.demand.saturated:
        head = (
            f"the KV cache is full ({p.usage.preemptions or 0} preemptions): the workload needs "
            f"all the memory it has, so {p.current.describe()} stays"
        )
    elif act.p95 > policy.target_compute_utilization:
        head = (
            f"compute-bound: p95 engine activity {act.p95:.0%} is above the "
            f"{policy.target_compute_utilization:.0%} target, so {p.current.describe()} stays"
        )
    elif capacity is not None and not capacity[0]:
        head = capacity[2].replace(
            "the next best that has room is recommended", f"{p.current.describe()} stays"
        )
    reasons = [head]
    if rejected:
        reasons.append(f"cheaper allocations rejected: {rejected}")
    return tuple(reasons)


def _rejection_summary(counts: dict[str, int]) -> str:
    words = {
        "policy": "outside the policy (GPU models, MIG, more GPUs per replica than now)",
        "inventory": "hardware the cluster does not have",
        "unsupported": "precision not supported by the GPU",
        "quality": "below the quality floor",
        "memory": "too little memory",
        "compute": "over the compute targets (p95, p99 or peak)",
        "bandwidth": "too little memory bandwidth",
        "startup": "a KV pool too small for one max-length sequence (the engine would not start)",
        "latency": "over the latency guard",
        "room": "no free capacity on any node",
        "saving": "a saving below the policy minimum",
        "energy": "more energy for a small saving",
    }
    return ", ".join(f"{n} {words[name]}" for name, n in counts.items() if n)
