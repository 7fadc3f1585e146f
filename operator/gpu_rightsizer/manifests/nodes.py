"""The GPU inventory read from Node objects and the pods bound to them (no I/O).

A node's GPUs come from GPU Feature Discovery and the device plugin: the product label
``nvidia.com/gpu.product`` (``NVIDIA-H100-80GB-HBM3``; under the single MIG strategy
``NVIDIA-A100-SXM4-80GB-MIG-1g.10gb``), ``nvidia.com/gpu.count``, ``nvidia.com/mig.strategy``
(none, single, mixed), ``nvidia.com/mig.capable``, ``nvidia.com/mig.config``, and the allocatable
extended resources ``nvidia.com/gpu`` and ``nvidia.com/mig-<profile>``. Free capacity is
allocatable minus the GPU requests of the live pods bound to the node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from gpu_rightsizer.manifests import targets
from gpu_rightsizer.models import gpus, inventory

COUNT_LABEL = "nvidia.com/gpu.count"
MIG_STRATEGY_LABEL = "nvidia.com/mig.strategy"
MIG_CAPABLE_LABEL = "nvidia.com/mig.capable"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
_SINGLE_PRODUCT = re.compile(r"^(?P<product>.+)-MIG-(?P<profile>[1-7]g\.[0-9]+gb(\+me)?)$")
_FINISHED = ("Succeeded", "Failed")


def _int(value: Any) -> int:
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


def gpu_requests(pods: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Node name -> GPU resource -> amount requested by the live pods bound to it."""
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in _FINISHED:
            continue
        per_node = used.setdefault(str(node), {})
        for container in spec.get("containers") or ():
            for name, amount in targets.gpu_limits(container).items():
                per_node[name] = per_node.get(name, 0) + _int(amount)
    return used


def node_gpus(
    node: Mapping[str, Any], used: Mapping[str, int], catalog: gpus.Catalog
) -> inventory.NodeGPUs | None:
    """One node's GPUs; None for a node without a GPU product label or GPU resources."""
    meta = node.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    product = labels.get(targets.PRODUCT_LABEL)
    allocatable: Mapping[str, Any] = (node.get("status") or {}).get("allocatable") or {}
    gpu_resources = {k: _int(v) for k, v in allocatable.items() if targets.is_gpu_resource(k)}
    if not product or not any(gpu_resources.values()):
        return None
    strategy = str(labels.get(MIG_STRATEGY_LABEL, inventory.MigStrategy.NONE)).lower()
    base_product, single_profile = str(product), None
    match = _SINGLE_PRODUCT.match(base_product)
    if match is not None:
        base_product, single_profile = match["product"], match["profile"]
    gpu = catalog.resolve(base_product)
    whole = gpu_resources.get(targets.GPU_RESOURCE, 0)
    whole_used = used.get(targets.GPU_RESOURCE, 0)
    mig_alloc: dict[str, int] = {}
    mig_free: dict[str, int] = {}
    for name, amount in gpu_resources.items():
        found = targets.MIG_RESOURCE.match(name)
        if found is not None:
            mig_alloc[found["profile"]] = amount
            mig_free[found["profile"]] = max(0, amount - used.get(name, 0))
    if single_profile is not None:
        # Single strategy: nvidia.com/gpu counts MIG instances of the one profile.
        mig_alloc[single_profile] = whole
        mig_free[single_profile] = max(0, whole - whole_used)
        whole = whole_used = 0
    count = _int(labels.get(COUNT_LABEL, 0)) or whole or 0
    capable = str(labels.get(MIG_CAPABLE_LABEL, "")).lower() == "true" or bool(mig_alloc)
    return inventory.NodeGPUs(
        name=str(meta.get("name", "")),
        product=str(product),
        gpu_model=gpu.id if gpu is not None else None,
        gpu_count=count,
        mig_capable=capable and gpu is not None and gpu.mig_capable,
        mig_strategy=strategy,
        mig_config=labels.get(MIG_CONFIG_LABEL),
        whole_allocatable=whole,
        whole_free=max(0, whole - whole_used),
        mig_allocatable=mig_alloc,
        mig_free=mig_free,
        schedulable=not (node.get("spec") or {}).get("unschedulable", False),
    )


def build(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    catalog: gpus.Catalog,
    *,
    source: str,
) -> inventory.Inventory:
    """The inventory of the GPU nodes among ``nodes`` (others are ignored)."""
    used = gpu_requests(pods)
    found = [node_gpus(n, used.get(_name(n), {}), catalog) for n in nodes]
    return inventory.Inventory(tuple(n for n in found if n is not None), source)


def _name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", ""))
