"""The savings stage: after the candidate search, what each verdict saves per month.

Money and GPU-hours from the catalog's prices; energy from DCGM power for what runs now
(modelled from the GPU's envelope where DCGM has no power series) and modelled for the
recommendation at the workload's mean activity projected onto it; CO2 from the grid intensity.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gpu_rightsizer.models import crd, gpus, precisions, profiles
from gpu_rightsizer.recommend import engine, slots as slots_
from gpu_rightsizer.savings import projection


def attach(
    evaluations: Sequence[engine.Evaluation],
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
) -> list[engine.Evaluation]:
    """Each evaluation with its savings (none where nothing was judged)."""
    return [_attach(e, catalog, table) for e in evaluations]


def _attach(
    evaluation: engine.Evaluation, catalog: gpus.Catalog, table: precisions.PrecisionTable
) -> engine.Evaluation:
    current, rec, usage = evaluation.current, evaluation.recommendation, evaluation.usage
    if evaluation.outcome not in (engine.Outcome.RECOMMENDED, engine.Outcome.NO_CHANGE):
        return evaluation
    if current is None or rec is None or usage is None:
        return evaluation
    gpu = catalog.get(current.gpu_model)
    assert gpu is not None
    watts, basis = engine.current_power_watts(gpu, current, usage)
    current_side = projection.Side(
        current.hourly_cost,
        slots_.physical_share(gpu, current.mig_profile) * current.gpus_per_replica,
        watts,
        basis,
    )
    if evaluation.outcome == engine.Outcome.NO_CHANGE:
        side = current_side
    else:
        side = _recommended_side(gpu, current, rec, usage.graphics_engine_active, catalog, table)
    savings = projection.project(current_side, side, current.replicas, catalog)
    message = evaluation.message
    if evaluation.outcome == engine.Outcome.RECOMMENDED:
        message = (
            f"{rec.describe()} instead of {current.describe()} saves "
            f"{savings.monthly_cost:,.0f} {savings.currency}/month ({savings.percent:.0f}%)"
        )
    return dataclasses.replace(evaluation, savings=savings, message=message)


def _recommended_side(
    gpu: gpus.GpuModel,
    current: crd.Allocation,
    rec: crd.Allocation,
    activity: profiles.Fractions,
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
) -> projection.Side:
    target = catalog.get(rec.gpu_model)
    assert target is not None
    mean = activity.mean if activity.mean is not None else activity.p50
    projected = (
        mean
        * engine.capacity_tflops(gpu, current, table)
        / engine.capacity_tflops(target, rec, table)
    )
    share = slots_.physical_share(target, rec.mig_profile)
    return projection.Side(
        hourly_cost=rec.hourly_cost,
        gpu_equivalents=share * rec.gpus_per_replica,
        power_watts=projection.modelled_power_watts(target, share, projected)
        * rec.gpus_per_replica,
        power_basis=f"modelled from {target.id}'s power envelope at {projected:.0%} mean activity",
    )
