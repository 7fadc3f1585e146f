"""Monthly savings between a current and a recommended allocation (DESIGN §7)."""

from __future__ import annotations

import dataclasses

from gpu_rightsizer.models import crd, gpus


@dataclasses.dataclass(frozen=True)
class Side:
    """One replica's cost, GPU share and power under one allocation."""

    hourly_cost: float
    gpu_equivalents: float
    """Physical GPUs held: whole GPUs, or sevenths of one for MIG instances."""
    power_watts: float
    power_basis: str
    """How the power figure was obtained (measured by DCGM, or modelled)."""


def modelled_power_watts(gpu: gpus.GpuModel, share: float, activity: float) -> float:
    """Board power from the GPU's envelope: idle + (TDP - idle) x engine activity, times share."""
    active = min(max(activity, 0.0), 1.0)
    return (gpu.idle_watts + (gpu.tdp_watts - gpu.idle_watts) * active) * share


def project(current: Side, recommended: Side, replicas: int, catalog: gpus.Catalog) -> crd.Savings:
    hours = catalog.hours_per_month
    energy = catalog.energy
    money = (current.hourly_cost - recommended.hourly_cost) * hours * replicas
    gpu_hours = (current.gpu_equivalents - recommended.gpu_equivalents) * hours * replicas
    kwh = (current.power_watts - recommended.power_watts) * hours / 1000 * energy.pue * replicas
    co2 = kwh * energy.grid_carbon_intensity_grams_per_kwh / 1000
    percent = (
        100 * (1 - recommended.hourly_cost / current.hourly_cost) if current.hourly_cost else 0
    )
    return crd.Savings(
        currency=catalog.currency,
        monthly_cost=round(money, 2),
        percent=round(percent, 1),
        gpu_hours_per_month=round(gpu_hours, 1),
        energy_kwh_per_month=round(kwh, 1),
        co2_kg_per_month=round(co2, 1),
        assumptions=(
            f"{hours:g} hours per month, {replicas} replica(s)",
            f"current power: {current.power_basis}",
            f"recommended power: {recommended.power_basis}",
            f"PUE {energy.pue:g} ({energy.pue_source})",
            f"grid {energy.grid_carbon_intensity_grams_per_kwh:g} gCO2/kWh "
            f"({energy.grid_carbon_intensity_source})",
        ),
    )
