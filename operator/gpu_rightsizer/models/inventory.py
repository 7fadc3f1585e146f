"""The cluster's GPU inventory: which GPU models and MIG slices its nodes offer, and what is free.

Built from Node objects (GPU Feature Discovery labels and allocatable resources) and the
requests of the pods bound to them (:mod:`gpu_rightsizer.manifests.nodes`). The engine
recommends only what the inventory has; hardware outside it is shown as an informational
alternative. An inventory that is ``None`` (no nodes known, e.g. an offline run without Node
manifests) means the whole catalog, and the output says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


class MigStrategy:
    NONE = "none"
    SINGLE = "single"
    MIXED = "mixed"


@dataclasses.dataclass(frozen=True)
class NodeGPUs:
    """What one node offers: whole GPUs of one model and MIG slices, allocatable and free."""

    name: str
    product: str
    """The ``nvidia.com/gpu.product`` label as GFD writes it."""
    gpu_model: str | None
    """Catalog id of the product; None when the catalog does not know it."""
    gpu_count: int
    """Physical GPUs (``nvidia.com/gpu.count``, else the allocatable count)."""
    mig_capable: bool
    mig_strategy: str
    mig_config: str | None
    whole_allocatable: int
    whole_free: int
    mig_allocatable: Mapping[str, int] = dataclasses.field(default_factory=dict)
    mig_free: Mapping[str, int] = dataclasses.field(default_factory=dict)
    schedulable: bool = True


@dataclasses.dataclass(frozen=True)
class Inventory:
    """Every GPU node of the cluster (or of the files given to the offline CLI)."""

    nodes: tuple[NodeGPUs, ...]
    source: str
    """Where it comes from, for the output ("the cluster's nodes", "Node objects in the files")."""

    def _nodes(self, gpu_model: str) -> list[NodeGPUs]:
        return [n for n in self.nodes if n.gpu_model == gpu_model and n.schedulable]

    def gpu_models(self) -> frozenset[str]:
        return frozenset(n.gpu_model for n in self.nodes if n.gpu_model is not None)

    def has_whole(self, gpu_model: str, count: int) -> bool:
        """Some node has ``count`` whole GPUs of the model (one replica stays on one node)."""
        return any(n.whole_allocatable >= count for n in self._nodes(gpu_model))

    def free_whole(self, gpu_model: str, count: int) -> bool:
        return any(n.whole_free >= count for n in self._nodes(gpu_model))

    def offers_mig(self, gpu_model: str, profile: str) -> bool:
        return any(n.mig_allocatable.get(profile, 0) >= 1 for n in self._nodes(gpu_model))

    def free_mig(self, gpu_model: str, profile: str) -> bool:
        return any(n.mig_free.get(profile, 0) >= 1 for n in self._nodes(gpu_model))

    def can_repartition(self, gpu_model: str) -> bool:
        """Some MIG-capable node of the model (its GPUs could be repartitioned)."""
        return any(n.mig_capable for n in self._nodes(gpu_model))

    def free_to_repartition(self, gpu_model: str) -> bool:
        """A MIG-capable node of the model with a whole GPU free to repartition."""
        return any(n.mig_capable and n.whole_free >= 1 for n in self._nodes(gpu_model))

    def describe(self) -> str:
        models = sorted(self.gpu_models())
        return ", ".join(models) if models else "no GPU nodes"
