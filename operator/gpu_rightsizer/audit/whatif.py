"""What if the cluster had another GPU model: the fleet re-evaluated, one model at a time.

"Compare before you buy": for each GPU model asked about, every workload is decided again by the
operator's own decision (:func:`gpu_rightsizer.decision.decide`), from the usage its status
already holds, with an inventory that is the cluster's plus an unbounded supply of that model
(whole GPUs and, on a MIG-capable model, every MIG profile). The answer per model is the
fleet's monthly cost, its savings against what runs now, and how many GPUs of that model the
recommendations would use: the purchase the fleet would justify. A model the fleet does not
move to needs none. Nothing here acts: every workload is decided in Recommend mode.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence

from gpu_rightsizer import decision, ports
from gpu_rightsizer.models import crd, gpus, inventory, precisions, profiles, workloads
from gpu_rightsizer.recommend import slots

UNBOUNDED = 1_000_000
WHAT_IF_NODE = "what-if"


@dataclasses.dataclass(frozen=True)
class Outcome:
    gpu_model: str
    monthly_cost: float
    monthly_savings: float
    gpus_needed: float
    """Physical GPU equivalents of ``gpu_model`` the recommendations would use."""
    workloads_on_model: int
    currency: str


def with_model(stock: inventory.Inventory | None, gpu: gpus.GpuModel) -> inventory.Inventory:
    """``stock`` plus an unbounded node of ``gpu`` (whole GPUs and every MIG profile)."""
    mig = {p.name: UNBOUNDED for p in gpu.mig_profiles}
    node = inventory.NodeGPUs(
        name=f"{WHAT_IF_NODE}-{gpu.id}",
        product=gpu.display_name,
        gpu_model=gpu.id,
        gpu_count=UNBOUNDED,
        mig_capable=bool(gpu.mig_profiles),
        mig_strategy=inventory.MigStrategy.MIXED if mig else inventory.MigStrategy.NONE,
        mig_config=None,
        whole_allocatable=UNBOUNDED,
        whole_free=UNBOUNDED,
        mig_allocatable=mig,
        mig_free=mig,
    )
    nodes = () if stock is None else stock.nodes
    source = "the cluster" if stock is None else stock.source
    return inventory.Inventory((*nodes, node), f"{source} and {gpu.id} (what-if)")


def _recommend_mode(o: decision.WorkloadObject) -> decision.WorkloadObject:
    spec = {**o.spec, "mode": crd.Mode.RECOMMEND.value}
    return dataclasses.replace(o, spec=spec, status=None, annotations={})


def evaluate(
    objects: Sequence[decision.WorkloadObject],
    states: Mapping[workloads.WorkloadRef, ports.TargetState],
    usage: Mapping[workloads.WorkloadRef, profiles.UsageProfile],
    *,
    models: Sequence[str],
    stock: inventory.Inventory | None,
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
    now: datetime.datetime,
    window: str,
) -> list[Outcome]:
    """One outcome per GPU model of ``models`` (catalog ids), in that order.

    ValueError names a model the catalog does not know.
    """
    quiet = [_recommend_mode(o) for o in objects]
    specs = {o.ref: decision.validate(o) for o in quiet}
    report = ports.UsageReport(profiles=dict(usage), queries=0)
    out = []
    for model in models:
        gpu = catalog.get(model)
        if gpu is None:
            raise ValueError(f"unknown GPU model {model!r}; known: {', '.join(catalog.ids)}")
        decided = decision.decide(
            quiet,
            specs,
            states,
            report,
            catalog=catalog,
            table=table,
            now=now,
            settings=decision.Settings(window=window),
            stock=with_model(stock, gpu),
        )
        cost = 0.0
        saved = 0.0
        needed = 0.0
        moved = 0
        for result in decided:
            status = crd.GPUWorkloadStatus.model_validate(result.document)
            current = status.current
            rec = status.recommendation or current
            if current is None or rec is None:
                continue
            hours = catalog.hours_per_month
            now_cost = current.hourly_cost * current.replicas * hours
            then_cost = rec.hourly_cost * rec.replicas * hours
            cost += then_cost
            saved += now_cost - then_cost
            if rec.gpu_model == gpu.id:
                moved += 1
                share = slots.physical_share(gpu, rec.mig_profile)
                needed += share * rec.gpus_per_replica * rec.replicas
        out.append(
            Outcome(
                gpu_model=gpu.id,
                monthly_cost=round(cost, 2),
                monthly_savings=round(saved, 2),
                gpus_needed=round(math.ceil(needed * 1000) / 1000, 3),
                workloads_on_model=moved,
                currency=catalog.currency,
            )
        )
    return out
