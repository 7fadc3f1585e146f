"""Realized savings: what the applied allocation really costs and draws, against what ran before.

Cost comes from the pods that really run the new pod template: each one's GPUs (whole or MIG
slices, from its container's resources) at the price of the GPU model of the node it runs on.
Power comes from DCGM over the verification window. Both are compared to the baseline recorded
when the change started.

Pure: never does I/O.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from gpu_rightsizer.manifests import targets
from gpu_rightsizer.models import crd, gpus, inventory, profiles
from gpu_rightsizer.recommend import slots, statuses


def gpu_equivalents(gpu: gpus.GpuModel, mig_profile: str | None, count: int) -> float:
    return slots.physical_share(gpu, mig_profile) * count


def power_watts(
    usage: profiles.UsageProfile | None, gpu: gpus.GpuModel, mig_profile: str | None, gpus_: float
) -> float | None:
    """Measured power of ``gpus_`` GPUs (or slices), from the mean per-GPU DCGM reading."""
    if usage is None or usage.power_watts is None:
        return None
    per_gpu = (
        usage.power_watts.mean if usage.power_watts.mean is not None else usage.power_watts.p50
    )
    return per_gpu * gpus_ * slots.physical_share(gpu, mig_profile)


def baseline(
    current: crd.Allocation, usage: profiles.UsageProfile | None, catalog: gpus.Catalog
) -> crd.Baseline:
    gpu = catalog.get(current.gpu_model)
    count = current.gpus_per_replica * current.replicas
    return crd.Baseline(
        allocation=current,
        hourly_cost=round(current.hourly_cost * current.replicas, 6),
        power_watts=(
            round(p, 1)
            if gpu is not None
            and (p := power_watts(usage, gpu, current.mig_profile, count)) is not None
            else None
        ),
        gpu_equivalents=(
            round(gpu_equivalents(gpu, current.mig_profile, count), 3) if gpu else float(count)
        ),
        time_per_output_token_seconds=(
            usage.time_per_output_token_seconds.p95
            if usage is not None and usage.time_per_output_token_seconds is not None
            else None
        ),
        preemptions=usage.preemptions if usage is not None else None,
    )


def _pod_gpus(
    pod: Mapping[str, Any], container: str, node: inventory.NodeGPUs | None, catalog: gpus.Catalog
) -> tuple[gpus.GpuModel, str | None, int] | None:
    """(GPU model, MIG profile, count) one running pod holds, from its node and resources."""
    if node is None or node.gpu_model is None:
        return None
    gpu = catalog.get(node.gpu_model)
    if gpu is None:
        return None
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") != container:
            continue
        for resource, amount in targets.gpu_limits(c).items():
            try:
                count = int(str(amount))
            except ValueError:
                return None
            match = targets.MIG_RESOURCE.match(resource)
            if match is not None:
                return gpu, match["profile"], count
            single = node.product.rsplit("-MIG-", 1)
            return gpu, (single[1] if len(single) == 2 else None), count
    return None


def measure(
    state: crd.ApplyState,
    pods: Sequence[Mapping[str, Any]],
    container: str,
    usage: profiles.UsageProfile | None,
    *,
    stock: inventory.Inventory | None,
    catalog: gpus.Catalog,
    window: str,
    now: datetime.datetime,
) -> crd.RealizedSavings | None:
    """The realized savings of the applied change; None without a baseline or running pods."""
    base = state.baseline
    if base is None:
        return None
    nodes = {n.name: n for n in (stock.nodes if stock is not None else ())}
    cost = equivalents = 0.0
    held = 0.0
    power = 0.0
    power_known = usage is not None and usage.power_watts is not None
    replicas = 0
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        node = nodes.get(str((pod.get("spec") or {}).get("nodeName", "")))
        found = _pod_gpus(pod, container, node, catalog)
        if found is None:
            continue
        gpu, profile, count = found
        replicas += 1
        held += count
        cost += slots.hourly_cost(gpu, profile, count)
        equivalents += gpu_equivalents(gpu, profile, count)
        watts = power_watts(usage, gpu, profile, count)
        power += watts or 0.0
    if replicas == 0:
        return None
    hours = catalog.hours_per_month
    energy = catalog.energy
    saved_kwh = saved_co2 = None
    if power_known and base.power_watts is not None:
        saved_kwh = round((base.power_watts - power) * hours / 1000 * energy.pue, 1)
        saved_co2 = round(saved_kwh * energy.grid_carbon_intensity_grams_per_kwh / 1000, 1)
    monthly = (base.hourly_cost - cost) * hours
    projected = state.projected.monthly_cost if state.projected is not None else 0.0
    return crd.RealizedSavings(
        candidate=state.candidate,
        recommendation_id=state.recommendation_id,
        monthly_cost=round(monthly, 2),
        percent=round(100 * (1 - cost / base.hourly_cost), 1) if base.hourly_cost else 0.0,
        gpu_hours_per_month=round((base.gpu_equivalents - equivalents) * hours, 1),
        energy_kwh_per_month=saved_kwh,
        co2_kg_per_month=saved_co2,
        projected_monthly_cost=projected,
        replicas=replicas,
        gpus=held,
        hourly_cost=round(cost, 4),
        power_watts=round(power, 1) if power_known else None,
        window=window,
        measured_time=statuses.timestamp(now),
    )


def agreement(
    realized: crd.RealizedSavings, tolerance_percent: float, currency: str
) -> tuple[bool, str]:
    """Whether realized and projected monthly savings agree within the tolerance, and a text."""
    projected = realized.projected_monthly_cost
    gap = abs(realized.monthly_cost - projected)
    ok = gap <= tolerance_percent / 100 * max(abs(projected), 1.0)
    text = (
        f"realized {statuses.money(realized.monthly_cost, currency)}/month "
        f"({realized.replicas} replica(s) on {realized.gpus:g} GPU(s), "
        f"{statuses.money(realized.hourly_cost, currency)}/h) against a projected "
        f"{statuses.money(projected, currency)}/month"
    )
    if not ok:
        text += f": more than {tolerance_percent:g}% apart"
    return ok, text
