"""Candidate search: the cheapest allocation that fits, for a whole batch of workloads at once.

For every workload and every candidate (precision option x slot) the engine computes memory
need, projected compute and bandwidth use, policy and quality admissibility and cost as numpy
arrays, then sorts the feasible candidates by cost and, on ties, by least change. Only the
winner and the next few alternatives are turned into model objects with reasons.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np

from gpu_rightsizer.models import crd, durations, gpus, precisions, profiles, workloads
from gpu_rightsizer.recommend import memory, slots as slots_
from gpu_rightsizer.savings import projection

ALTERNATIVES = 3
CHUNK = 1024
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
    demand_bandwidth_gb_per_s: float
    mean_activity_tflops: float
    allowed: frozenset[str] | None


def evaluate(
    batch: Sequence[workloads.Workload],
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
) -> list[Evaluation]:
    """Evaluate every workload of a batch; the result is in the batch's order."""
    slots = slots_.build(catalog, table)
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
        verdicts = _search([p for _, p in chunk], slots, catalog)
        for (i, _), verdict in zip(chunk, verdicts, strict=True):
            results[i] = verdict
    return [r for r in results if r is not None]


def evaluate_one(
    workload: workloads.Workload, catalog: gpus.Catalog, table: precisions.PrecisionTable
) -> Evaluation:
    return evaluate([workload], catalog, table)[0]


# ---------------------------------------------------------------------------------------------
# preparation (per workload, scalar)


def _prepare(
    workload: workloads.Workload, catalog: gpus.Catalog, table: precisions.PrecisionTable
) -> _Prepared | Evaluation:
    ref, spec, cur = workload.ref, workload.spec, workload.current
    gpu = catalog.resolve(cur.gpu_model)
    if gpu is None:
        return Evaluation(
            ref,
            Outcome.INVALID,
            "UnknownGPUModel",
            f"GPU model {cur.gpu_model!r} of the target is not in the catalog "
            f"(known: {', '.join(catalog.ids)})",
        )
    if cur.mig_profile is not None and gpu.mig_profile(cur.mig_profile) is None:
        return Evaluation(
            ref,
            Outcome.INVALID,
            "UnknownMIGProfile",
            f"{gpu.id} has no MIG profile {cur.mig_profile!r}",
        )
    allowed: frozenset[str] | None = None
    if spec.policy.allowed_gpu_models is not None:
        resolved = {name: catalog.resolve(name) for name in spec.policy.allowed_gpu_models}
        unknown = [name for name, g in resolved.items() if g is None]
        if unknown:
            return Evaluation(
                ref,
                Outcome.INVALID,
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
    slot_bytes = memory.slot_memory_bytes(gpu, cur.mig_profile)
    demand = memory.demand(
        spec,
        usage,
        precision,
        tuple(o.precision for o in options),
        cur.gpus_per_replica,
        slot_bytes,
    )
    share = slots_.physical_share(gpu, cur.mig_profile)
    speed = table.get(precision).native_speedup if precision in gpu.native_precisions else 1.0
    capacity = gpu.bf16_dense_tflops * share * cur.gpus_per_replica * speed
    activity = usage.graphics_engine_active
    dram = usage.dram_active
    bandwidth = gpu.memory_bandwidth_gb_per_s * slots_.memory_fraction(gpu, cur.mig_profile)
    return _Prepared(
        workload=workload,
        usage=usage,
        gpu=gpu,
        current=current,
        options=tuple(options),
        demand=demand,
        demand_tflops=activity.p95 * capacity,
        demand_bandwidth_gb_per_s=(dram.p95 * bandwidth * cur.gpus_per_replica if dram else 0.0),
        mean_activity_tflops=(activity.mean if activity.mean is not None else activity.p50)
        * capacity,
        allowed=allowed,
    )


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
    feasible: np.ndarray
    need: np.ndarray
    available: np.ndarray
    utilization: np.ndarray
    order: np.ndarray
    rejected: dict[str, np.ndarray]


def _search(
    batch: list[_Prepared], slots: slots_.SlotTable, catalog: gpus.Catalog
) -> list[Evaluation]:
    arrays = _arrays(batch, slots)
    return [_decide(w, p, arrays, slots, catalog) for w, p in enumerate(batch)]


def _arrays(batch: list[_Prepared], slots: slots_.SlotTable) -> _Arrays:
    n, k = len(batch), max(len(p.options) for p in batch)
    index = slots_.PRECISION_INDEX
    prec = np.zeros((n, k), dtype=np.int64)
    valid = np.zeros((n, k), dtype=bool)
    quality_ok = np.zeros((n, k), dtype=bool)
    weights = np.zeros((n, k))
    allowed = np.ones((n, len(slots.gpu_ids)), dtype=bool)
    other, overhead, pool, headroom, demand, bandwidth, target, allow_mig, max_gpus = (
        np.zeros(n) for _ in range(9)
    )
    cur_cost, cur_gpu, cur_mig, cur_count, cur_prec = (np.zeros(n) for _ in range(5))
    for w, p in enumerate(batch):
        policy = p.workload.spec.policy
        for j, option in enumerate(p.options):
            prec[w, j] = index[option.precision]
            valid[w, j] = True
            quality_ok[w, j] = option.variant is None or option.quality >= (
                policy.min_quality_recovery - _EPS
            )
            weights[w, j] = p.demand.weights_total_bytes.get(option.precision, 0.0)
        if p.allowed is not None:
            allowed[w] = [g in p.allowed for g in slots.gpu_ids]
        other[w] = p.demand.other_total_bytes
        overhead[w] = p.demand.overhead_total_bytes
        pool[w] = p.demand.pool_fraction
        headroom[w] = 1 + policy.memory_headroom_percent / 100
        demand[w] = p.demand_tflops
        bandwidth[w] = p.demand_bandwidth_gb_per_s
        target[w] = policy.target_compute_utilization
        allow_mig[w] = policy.allow_mig
        # Never spread a replica over more GPUs than it has now: tensor parallelism over more
        # (often slower-linked) GPUs changes performance in ways usage data cannot predict.
        max_gpus[w] = min(policy.max_gpus_per_replica, p.current.gpus_per_replica)
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
    need = (
        (weights[:, :, None] + (other + overhead)[:, None, None])
        / count
        * (headroom[:, None, None])
    )
    available = slots.memory_bytes[None, None, :] * pool[:, None, None]
    memory_ok = need <= available
    utilization = demand[:, None, None] / (slots.tflops * count * slots.speedup[prec])
    bandwidth_ok = bandwidth[:, None] <= target[:, None] * slots.bandwidth_gb_per_s * count
    compute_ok = (utilization <= target[:, None, None] + _EPS) & bandwidth_ok[:, None, :]
    runnable = slots.runnable[prec]
    policy_ok = (
        allowed[:, slots.gpu_index]
        & ((allow_mig[:, None] > 0) | ~slots.is_mig[None, :])
        & (slots.count[None, :] <= max_gpus[:, None])
    )
    affordable = slots.cost[None, :] <= cur_cost[:, None] + _EPS
    feasible = (
        (valid & quality_ok)[:, :, None]
        & runnable
        & policy_ok[:, None, :]
        & memory_ok
        & compute_ok
        & affordable[:, None, :]
    )
    change = (
        8 * (prec != cur_prec[:, None])[:, :, None]
        + (
            4 * (slots.gpu_index[None, :] != cur_gpu[:, None])
            + 2 * (slots.mig_index[None, :] != cur_mig[:, None])
            + (slots.count[None, :] != cur_count[:, None])
        )[:, None, :]
    )
    cost = np.where(feasible, slots.cost[None, None, :], np.inf).reshape(n, -1)
    flat = np.broadcast_to(np.arange(cost.shape[1]), cost.shape)
    order = np.lexsort((flat, change.reshape(n, -1), cost), axis=-1)[:, : ALTERNATIVES + 1]

    # Why the cheaper candidates were rejected, first failing check wins.
    cheaper = (slots.cost[None, :] < cur_cost[:, None] - _EPS)[:, None, :] & valid[:, :, None]
    rejected = {}
    remaining = cheaper
    for name, ok in (
        ("policy", np.broadcast_to(policy_ok[:, None, :], cheaper.shape)),
        ("unsupported", runnable),
        ("quality", np.broadcast_to(quality_ok[:, :, None], cheaper.shape)),
        ("memory", memory_ok),
        ("compute", compute_ok),
    ):
        rejected[name] = (remaining & ~ok).sum(axis=(1, 2))
        remaining = remaining & ok
    return _Arrays(feasible, need, available, utilization, order, rejected)


# ---------------------------------------------------------------------------------------------
# decisions and explanations (per workload)


def _decide(
    w: int,
    p: _Prepared,
    arrays: _Arrays,
    slots: slots_.SlotTable,
    catalog: gpus.Catalog,
) -> Evaluation:
    ref = p.workload.ref
    n_slots = len(slots)
    picks = [
        (int(i) // n_slots, int(i) % n_slots)
        for i in arrays.order[w]
        if arrays.feasible[w].reshape(-1)[int(i)]
    ]
    candidates = [_candidate(w, k, s, p, arrays, slots, catalog) for k, s in picks]
    rejected = _rejection_summary({name: int(c[w]) for name, c in arrays.rejected.items()})
    confidence = _confidence(p)
    memory_text = p.demand.explanation
    if (
        not candidates
        or _same(candidates[0], p.current)
        or candidates[0].hourly_cost >= p.current.hourly_cost - _EPS
    ):
        # Nothing strictly cheaper fits: a change that saves nothing is not worth making.
        reasons = _keep_reasons(p, rejected)
        keep = crd.Recommendation(
            **p.current.model_dump(),
            memory_need_bytes=int(
                p.demand.need_per_gpu_bytes(
                    p.current.precision or precisions.Precision.BF16,
                    p.current.gpus_per_replica,
                )
                * (1 + p.workload.spec.policy.memory_headroom_percent / 100)
            ),
            memory_available_bytes=int(
                memory.slot_memory_bytes(p.gpu, p.current.mig_profile) * p.demand.pool_fraction
            ),
            projected_compute_utilization=round(p.usage.graphics_engine_active.p95, 4),
            confidence=confidence,
            reasons=(memory_text, *reasons),
        )
        return Evaluation(
            ref,
            Outcome.NO_CHANGE,
            "NoCheaperAllocation",
            reasons[0],
            p.current,
            keep,
            tuple(c for c in candidates if not _same(c, p.current))[:ALTERNATIVES],
            _savings(p, keep, None, catalog),
            p.usage,
        )
    best = candidates[0]
    reasons = _reasons(p, best, len(picks), rejected)
    recommendation = crd.Recommendation(
        **best.model_dump(), confidence=confidence, reasons=(memory_text, *reasons)
    )
    k, s = picks[0]
    savings = _savings(p, recommendation, (k, s, arrays, slots), catalog)
    return Evaluation(
        ref,
        Outcome.RECOMMENDED,
        "CheaperAllocationFound",
        f"{best.describe()} instead of {p.current.describe()} saves "
        f"{savings.monthly_cost:,.0f} {savings.currency}/month ({savings.percent:.0f}%)",
        p.current,
        recommendation,
        tuple(candidates[1 : ALTERNATIVES + 1]),
        savings,
        p.usage,
    )


def _candidate(
    w: int,
    k: int,
    s: int,
    p: _Prepared,
    arrays: _Arrays,
    slots: slots_.SlotTable,
    catalog: gpus.Catalog,
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
    return round(min(1.0, float(value)), 2)


def _gib(value: float) -> str:
    return f"{value / memory.GIB:.1f} GiB"


def _reasons(p: _Prepared, best: crd.Candidate, feasible: int, rejected: str) -> tuple[str, ...]:
    policy = p.workload.spec.policy
    unit = "slice" if best.mig_profile else "GPU"
    reasons = [
        f"with {policy.memory_headroom_percent}% headroom it needs "
        f"{_gib(best.memory_need_bytes)} per {unit} on {best.describe()}, which offers "
        f"{_gib(best.memory_available_bytes)}",
        f"p95 engine activity {p.usage.graphics_engine_active.p95:.0%} on "
        f"{p.current.describe()} projects to {best.projected_compute_utilization or 0:.0%} on "
        f"{best.describe()} (target {policy.target_compute_utilization:.0%})",
    ]
    if best.variant is not None:
        reasons.append(
            f"serves the declared variant {best.variant!r} ({best.precision}, quality recovery "
            f"{best.quality_recovery:.2f} >= policy minimum {policy.min_quality_recovery:.2f})"
        )
    reasons.append(
        f"costs {best.hourly_cost:.2f}/h instead of {p.current.hourly_cost:.2f}/h per replica, "
        f"the cheapest of {feasible} allocation(s) that fit"
    )
    if rejected:
        reasons.append(f"cheaper allocations rejected: {rejected}")
    return tuple(reasons)


def _keep_reasons(p: _Prepared, rejected: str) -> tuple[str, ...]:
    policy = p.workload.spec.policy
    head = f"no allocation cheaper than {p.current.describe()} fits"
    if p.demand.saturated:
        head = (
            f"the KV cache is full ({p.usage.preemptions or 0} preemptions): the workload needs "
            f"all the memory it has, so {p.current.describe()} stays"
        )
    elif p.usage.graphics_engine_active.p95 > policy.target_compute_utilization:
        head = (
            f"compute-bound: p95 engine activity {p.usage.graphics_engine_active.p95:.0%} is "
            f"above the {policy.target_compute_utilization:.0%} target, so "
            f"{p.current.describe()} stays"
        )
    reasons = [head]
    if rejected:
        reasons.append(f"cheaper allocations rejected: {rejected}")
    return tuple(reasons)


def _rejection_summary(counts: dict[str, int]) -> str:
    words = {
        "policy": "outside the policy (GPU models, MIG, more GPUs per replica than now)",
        "unsupported": "precision not supported by the GPU",
        "quality": "below the quality floor",
        "memory": "too little memory",
        "compute": "over the compute target",
    }
    return ", ".join(f"{n} {words[name]}" for name, n in counts.items() if n)


def _savings(
    p: _Prepared,
    rec: crd.Recommendation,
    chosen: tuple[int, int, _Arrays, slots_.SlotTable] | None,
    catalog: gpus.Catalog,
) -> crd.Savings:
    current_side = _current_side(p)
    if chosen is None:
        rec_side = current_side
    else:
        gpu = catalog.get(rec.gpu_model)
        assert gpu is not None
        share = slots_.physical_share(gpu, rec.mig_profile)
        speed_table = chosen[3].speedup
        k, s = chosen[0], chosen[1]
        speed = float(speed_table[slots_.PRECISION_INDEX[p.options[k].precision], s])
        capacity = gpu.bf16_dense_tflops * share * rec.gpus_per_replica * speed
        activity = p.mean_activity_tflops / capacity
        rec_side = projection.Side(
            hourly_cost=rec.hourly_cost,
            gpu_equivalents=share * rec.gpus_per_replica,
            power_watts=projection.modelled_power_watts(gpu, share, activity)
            * rec.gpus_per_replica,
            power_basis=f"modelled from {gpu.id}'s power envelope at {activity:.0%} mean activity",
        )
    return projection.project(current_side, rec_side, p.current.replicas, catalog)


def _current_side(p: _Prepared) -> projection.Side:
    cur, gpu, usage = p.current, p.gpu, p.usage
    share = slots_.physical_share(gpu, cur.mig_profile)
    if usage.power_watts is not None:
        power = (
            usage.power_watts.mean if usage.power_watts.mean is not None else usage.power_watts.p50
        )
        watts = power * share * cur.gpus_per_replica
        basis = f"measured by DCGM ({power:.0f} W per GPU over {usage.window}"
        basis += f", {share:.0%} of it for the MIG instance)" if cur.mig_profile else ")"
    else:
        activity = usage.graphics_engine_active
        mean = activity.mean if activity.mean is not None else activity.p50
        watts = projection.modelled_power_watts(gpu, share, mean) * cur.gpus_per_replica
        basis = f"modelled from {gpu.id}'s power envelope at {mean:.0%} mean activity"
    return projection.Side(cur.hourly_cost, share * cur.gpus_per_replica, watts, basis)
