"""A fleet's recommendations as rows, groups and totals; its idle allocations; who could share.

Everything here is read off the statuses the operator writes (or that ``recommend`` computes the
same way): ``status.current`` and ``status.recommendation`` (allocations with their hourly
costs), ``status.savings`` (money, GPU-hours, energy and CO2 per month), ``status.usage``
(engine activity and history) and the Ready condition. A workload without a recommendation
(declined, not evaluated yet, already right-sized) is counted at its current allocation, with
no savings, and its Ready reason says why.

**Money per month** is the allocation's hourly cost (per replica, all its GPUs) x replicas x
the catalog's hours per month. **GPUs** are physical GPU equivalents: whole GPUs, or a MIG
instance's SM share of its GPU. **GPU-hours, energy and CO2** are the status' own savings
figures (their assumptions are on each status).

**Idle** means no meaningful activity: the busiest replica's engine activity stayed at or
below ``idle_activity`` (p99 over the window; 0.05 by default: an idle server's health checks
and metric scrapes stay well under it) over at least ``idle_days`` of observed history. A
workload observed for less is never called idle. Idle allocations are listed first.

**Sharing** (:func:`sharing`): replicas recommended onto one whole GPU whose memory need (the
recommendation's, headroom included) is small enough to stack several on one GPU of the same
model, time-sliced or under MPS: first-fit decreasing by memory, each group proven by the sum
of the needs against the GPU's usable memory, and by the sum of their projected engine
activity, which must stay within ``max_shared_activity`` (time-slicing shares the compute).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from gpu_rightsizer.models import crd, gpus
from gpu_rightsizer.recommend import slots

GIB = 1 << 30
DAY_SECONDS = 86_400.0
READY = "Ready"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One GPUWorkload as the audit reads it."""

    cluster: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    status: crd.GPUWorkloadStatus


@dataclasses.dataclass(frozen=True)
class Settings:
    group_by: str = "namespace"
    """``namespace``, or ``label:KEY`` (workloads without the label are grouped under ``-``)."""
    idle_days: float = 7.0
    idle_activity: float = 0.05
    max_shared_activity: float = 0.8


@dataclasses.dataclass(frozen=True)
class Row:
    cluster: str
    namespace: str
    name: str
    group: str
    state: str
    """The Ready condition's reason (``Recommended``, ``InsufficientObservation``...)."""
    current: str
    recommended: str
    replicas: int
    current_gpu_model: str | None
    recommended_gpu_model: str | None
    gpus_current: float
    gpus_recommended: float
    monthly_cost_current: float
    monthly_cost_recommended: float
    monthly_savings: float
    gpu_hours_saved_per_month: float
    energy_kwh_saved_per_month: float
    co2_kg_saved_per_month: float
    confidence: float | None
    activity_p95: float | None
    """The busiest replica's engine activity, p95 over the window (0-1)."""
    observed_days: float | None
    idle: bool


@dataclasses.dataclass(frozen=True)
class Totals:
    workloads: int = 0
    recommended: int = 0
    idle: int = 0
    gpus_current: float = 0.0
    gpus_recommended: float = 0.0
    monthly_cost_current: float = 0.0
    monthly_cost_recommended: float = 0.0
    monthly_savings: float = 0.0
    gpu_hours_saved_per_month: float = 0.0
    energy_kwh_saved_per_month: float = 0.0
    co2_kg_saved_per_month: float = 0.0
    idle_monthly_cost: float = 0.0


@dataclasses.dataclass(frozen=True)
class Group:
    key: str
    totals: Totals


def _ready_reason(status: crd.GPUWorkloadStatus) -> str:
    ready = next((c for c in status.conditions if c.type == READY), None)
    return "NotEvaluated" if ready is None else ready.reason


def _gpus(allocation: crd.Allocation | None, catalog: gpus.Catalog) -> float:
    if allocation is None:
        return 0.0
    gpu = catalog.get(allocation.gpu_model)
    share = 1.0 if gpu is None else slots.physical_share(gpu, allocation.mig_profile)
    return share * allocation.gpus_per_replica * allocation.replicas


def _monthly(allocation: crd.Allocation | None, catalog: gpus.Catalog) -> float:
    if allocation is None:
        return 0.0
    return allocation.hourly_cost * allocation.replicas * catalog.hours_per_month


def _describe(allocation: crd.Allocation | None) -> str:
    if allocation is None:
        return "-"
    return f"{allocation.replicas} × {allocation.describe()}"


def group_key(entry: Entry, group_by: str) -> str:
    if group_by == "namespace":
        return entry.namespace
    key = group_by.removeprefix("label:")
    return entry.labels.get(key) or "-"


def row(entry: Entry, catalog: gpus.Catalog, settings: Settings) -> Row:
    status = entry.status
    current = status.current
    rec = status.recommendation
    target = rec if rec is not None else current
    savings = status.savings if rec is not None else None
    usage = status.usage
    activity = None if usage is None else usage.graphics_engine_active.p95
    busiest = None if usage is None else usage.graphics_engine_active.p99
    observed = None if usage is None else usage.history_seconds / DAY_SECONDS
    idle = (
        current is not None
        and busiest is not None
        and observed is not None
        and busiest <= settings.idle_activity
        and observed >= settings.idle_days
    )
    cost_current = _monthly(current, catalog)
    cost_target = _monthly(target, catalog)
    return Row(
        cluster=entry.cluster,
        namespace=entry.namespace,
        name=entry.name,
        group=group_key(entry, settings.group_by),
        state=_ready_reason(status),
        current=_describe(current),
        recommended=_describe(rec) if rec is not None else "-",
        replicas=0 if current is None else current.replicas,
        current_gpu_model=None if current is None else current.gpu_model,
        recommended_gpu_model=None if target is None else target.gpu_model,
        gpus_current=round(_gpus(current, catalog), 3),
        gpus_recommended=round(_gpus(target, catalog), 3),
        monthly_cost_current=round(cost_current, 2),
        monthly_cost_recommended=round(cost_target, 2),
        monthly_savings=round(cost_current - cost_target, 2) if rec is not None else 0.0,
        gpu_hours_saved_per_month=0.0 if savings is None else savings.gpu_hours_per_month,
        energy_kwh_saved_per_month=0.0 if savings is None else savings.energy_kwh_per_month,
        co2_kg_saved_per_month=0.0 if savings is None else savings.co2_kg_per_month,
        confidence=None if rec is None else rec.confidence,
        activity_p95=activity,
        observed_days=None if observed is None else round(observed, 2),
        idle=idle,
    )


def rows(entries: Iterable[Entry], catalog: gpus.Catalog, settings: Settings) -> list[Row]:
    """Every entry's row: idle ones first (costliest first), then by savings, then by name."""
    out = [row(e, catalog, settings) for e in entries]
    return sorted(
        out,
        key=lambda r: (
            not r.idle,
            -r.monthly_cost_current if r.idle else -r.monthly_savings,
            r.cluster,
            r.namespace,
            r.name,
        ),
    )


def totals(of: Iterable[Row]) -> Totals:
    listed = list(of)

    def add(field: str) -> float:
        return round(math.fsum(getattr(r, field) for r in listed), 3)

    return Totals(
        workloads=len(listed),
        recommended=sum(1 for r in listed if r.recommended != "-"),
        idle=sum(1 for r in listed if r.idle),
        gpus_current=add("gpus_current"),
        gpus_recommended=add("gpus_recommended"),
        monthly_cost_current=round(add("monthly_cost_current"), 2),
        monthly_cost_recommended=round(add("monthly_cost_recommended"), 2),
        monthly_savings=round(add("monthly_savings"), 2),
        gpu_hours_saved_per_month=round(add("gpu_hours_saved_per_month"), 1),
        energy_kwh_saved_per_month=round(add("energy_kwh_saved_per_month"), 1),
        co2_kg_saved_per_month=round(add("co2_kg_saved_per_month"), 1),
        idle_monthly_cost=round(math.fsum(r.monthly_cost_current for r in listed if r.idle), 2),
    )


def groups(of: Sequence[Row]) -> list[Group]:
    """Totals per group, the largest savings first."""
    keys = sorted({r.group for r in of})
    found = [Group(k, totals(r for r in of if r.group == k)) for k in keys]
    return sorted(found, key=lambda g: (-g.totals.monthly_savings, g.key))


def gpu_mix(of: Sequence[Row]) -> dict[str, tuple[float, float]]:
    """GPU model -> (GPUs now, GPUs recommended), physical GPU equivalents."""
    mix: dict[str, list[float]] = {}
    for r in of:
        if r.current_gpu_model is not None:
            mix.setdefault(r.current_gpu_model, [0.0, 0.0])[0] += r.gpus_current
        if r.recommended_gpu_model is not None:
            mix.setdefault(r.recommended_gpu_model, [0.0, 0.0])[1] += r.gpus_recommended
    return {k: (round(v[0], 3), round(v[1], 3)) for k, v in sorted(mix.items())}


def activity_histogram(of: Sequence[Row], bins: int = 10) -> list[int]:
    """How many workloads have their p95 engine activity in each tenth of 0-1."""
    counts = [0] * bins
    for r in of:
        if r.activity_p95 is not None:
            counts[min(int(r.activity_p95 * bins), bins - 1)] += 1
    return counts


# --- sharing --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sharer:
    """One replica that could share a GPU."""

    workload: str
    """``cluster/namespace/name`` (or ``namespace/name`` for a single cluster)."""
    replica: int
    memory_need_bytes: int
    activity: float


@dataclasses.dataclass(frozen=True)
class SharedGPU:
    """Replicas that fit together on one GPU, with the proof."""

    gpu_model: str
    members: tuple[Sharer, ...]
    memory_need_bytes: int
    usable_memory_bytes: int
    activity: float

    @property
    def proof(self) -> str:
        needs = " + ".join(f"{m.memory_need_bytes / GIB:.1f}" for m in self.members)
        return (
            f"{needs} = {self.memory_need_bytes / GIB:.1f} GiB (needs, headroom included) "
            f"<= {self.usable_memory_bytes / GIB:.1f} GiB usable on one {self.gpu_model}; "
            f"engine activity {self.activity:.0%} together"
        )

    @property
    def gpus_freed(self) -> int:
        return len(self.members) - 1


def sharing(
    entries: Iterable[Entry], settings: Settings, *, multi_cluster: bool
) -> list[SharedGPU]:
    """GPUs several recommended single-GPU replicas could share (groups of two or more)."""
    by_model: dict[str, list[tuple[Sharer, int]]] = {}
    for e in entries:
        rec = e.status.recommendation
        if rec is None or rec.mig_profile is not None or rec.gpus_per_replica != 1:
            continue
        activity = rec.projected_compute_utilization
        if activity is None or rec.memory_need_bytes <= 0:
            continue
        name = f"{e.cluster}/{e.namespace}/{e.name}" if multi_cluster else f"{e.namespace}/{e.name}"
        for replica in range(rec.replicas):
            sharer = Sharer(name, replica, rec.memory_need_bytes, activity)
            by_model.setdefault(rec.gpu_model, []).append((sharer, rec.memory_available_bytes))
    out: list[SharedGPU] = []
    for model, members in sorted(by_model.items()):
        ordered = sorted(
            members, key=lambda m: (-m[0].memory_need_bytes, m[0].workload, m[0].replica)
        )
        bins: list[list[Sharer]] = []
        usable: list[int] = []
        for sharer, available in ordered:
            for i, group in enumerate(bins):
                memory = sum(m.memory_need_bytes for m in group) + sharer.memory_need_bytes
                activity = sum(m.activity for m in group) + sharer.activity
                if memory <= usable[i] and activity <= settings.max_shared_activity:
                    group.append(sharer)
                    break
            else:
                bins.append([sharer])
                usable.append(available)
        for group, room in zip(bins, usable, strict=True):
            if len(group) < 2:
                continue
            out.append(
                SharedGPU(
                    gpu_model=model,
                    members=tuple(group),
                    memory_need_bytes=sum(m.memory_need_bytes for m in group),
                    usable_memory_bytes=room,
                    activity=round(sum(m.activity for m in group), 4),
                )
            )
    return out
