"""From a recommendation to the patch of its target: where the pods must land, which variant,
and the recommendation's stable id.

Shared by the operator's decision and the ``plan``/``approve`` commands, so what a person
approves is exactly what the operator applies. Pure: never does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gpu_rightsizer.apply import patches
from gpu_rightsizer.manifests import kinds, targets
from gpu_rightsizer.models import crd, gpus, inventory

APPROVE_ANNOTATION = "gpu-rightsizer.dev/approve"
ID_LENGTH = 10


def recommendation_id(
    recommendation: crd.Allocation,
    engine_settings: crd.EngineSettings | None,
    target_generation: int | None,
) -> str:
    """A short hash of the allocation, its engine settings and the target's generation.

    Stable across sweeps and operator restarts while the recommendation and the target stay
    the same; a new recommendation, or any edit of the target, gives a new id (and so makes an
    earlier approval stale).
    """
    key = {
        "gpuModel": recommendation.gpu_model,
        "migProfile": recommendation.mig_profile,
        "gpusPerReplica": recommendation.gpus_per_replica,
        "replicas": recommendation.replicas,
        "precision": str(recommendation.precision) if recommendation.precision else None,
        "variant": recommendation.variant,
        "engineSettings": engine_settings.to_api() if engine_settings else None,
        "targetGeneration": target_generation,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return digest[:ID_LENGTH]


def placement(
    recommendation: crd.Allocation,
    current: crd.Allocation,
    target: Mapping[str, Any],
    *,
    stock: inventory.Inventory | None,
    catalog: gpus.Catalog,
) -> patches.Placement:
    """The ``nvidia.com/gpu.product`` the new pods must land on, and the MIG strategy there.

    The product is what the cluster's nodes offering the recommended GPUs are labelled (under
    the single MIG strategy, the ``-MIG-<profile>`` product); without an inventory, the
    catalog's first product label for the model. No pin is added when the GPU model and the
    MIG strategy stay and the target does not pin already.
    """
    if target.get("kind") == kinds.INFERENCESERVICE.kind:
        target = kinds.predictor_view(target)
    pod = ((target.get("spec") or {}).get("template") or {}).get("spec") or {}
    pinned = targets.gpu_product(pod)
    profile = recommendation.mig_profile
    nodes = [
        n
        for n in (stock.nodes if stock is not None else ())
        if n.gpu_model == recommendation.gpu_model and n.schedulable
    ]
    if profile:
        offering = [n for n in nodes if n.mig_allocatable.get(profile, 0) >= 1]
        mixed = [n for n in offering if n.mig_strategy != inventory.MigStrategy.SINGLE]
        if mixed or not offering:
            product = mixed[0].product if mixed else _catalog_product(recommendation, catalog)
            return patches.Placement(product=product, mig_strategy=inventory.MigStrategy.MIXED)
        return patches.Placement(
            product=offering[0].product, mig_strategy=inventory.MigStrategy.SINGLE
        )
    if recommendation.gpu_model == current.gpu_model and current.mig_profile is None:
        # Same model, whole GPUs before and after: keep the user's pin (or the lack of one).
        return patches.Placement(product=pinned, mig_strategy=inventory.MigStrategy.NONE)
    whole = [n for n in nodes if n.whole_allocatable >= recommendation.gpus_per_replica]
    product = whole[0].product if whole else _catalog_product(recommendation, catalog)
    return patches.Placement(product=product, mig_strategy=inventory.MigStrategy.NONE)


def _catalog_product(recommendation: crd.Allocation, catalog: gpus.Catalog) -> str | None:
    gpu = catalog.get(recommendation.gpu_model)
    if gpu is None:
        return None
    labels = [a for a in gpu.aliases if a.startswith(("NVIDIA-", "Tesla-"))]
    return labels[0] if labels else (gpu.aliases[0] if gpu.aliases else None)


def variant_of(spec: crd.GPUWorkloadSpec, name: str | None) -> crd.Variant | None:
    if not name or spec.model is None:
        return None
    for v in spec.model.variants:
        if v.name == name:
            return v
    raise patches.PlanError(
        "UnknownVariant", f"spec.model.variants: no variant named {name!r} (it was removed?)"
    )


def patch_for(
    spec: crd.GPUWorkloadSpec,
    target: Mapping[str, Any],
    current: crd.Allocation,
    recommendation: crd.Recommendation,
    *,
    stock: inventory.Inventory | None,
    catalog: gpus.Catalog,
    container: str | None = None,
) -> patches.Patch:
    """Raises ``patches.PlanError`` when the recommendation cannot be a patch of ``target``."""
    name = container or spec.target_ref.container or _gpu_container(target)
    variant = variant_of(spec, recommendation.variant)
    if variant is not None and variant.container_patch is None:
        raise patches.PlanError(
            "VariantHasNoPatch",
            f"spec.model.variants[{variant.name}].containerPatch: not set, so gpu-rightsizer "
            "does not know how to serve this variant",
        )
    return patches.build(
        target,
        name,
        recommendation,
        current=current,
        variant=variant,
        engine_settings=recommendation.engine_settings,
        placement=placement(recommendation, current, target, stock=stock, catalog=catalog),
        tensor_parallel_flag=spec.apply.tensor_parallel_flag,
    )


def _gpu_container(target: Mapping[str, Any]) -> str:
    if target.get("kind") == kinds.INFERENCESERVICE.kind:
        target = kinds.predictor_view(target)
    containers = (((target.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    for c in containers:
        if targets.gpu_limits(c):
            return str(c.get("name", ""))
    raise patches.PlanError(
        "TargetHasNoGPUs", "spec.template.spec.containers: no container requests GPUs"
    )


def plan_for(
    spec: crd.GPUWorkloadSpec,
    target: Mapping[str, Any],
    current: crd.Allocation,
    recommendation: crd.Recommendation,
    *,
    stock: inventory.Inventory | None,
    catalog: gpus.Catalog,
    container: str | None = None,
) -> crd.Plan:
    patch = patch_for(
        spec, target, current, recommendation, stock=stock, catalog=catalog, container=container
    )
    return patches.plan(target, patch, recommendation.id or "")
