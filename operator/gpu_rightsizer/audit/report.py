"""The whole audit as one value: what every output format renders.

:func:`build` assembles it from the fleet's entries (:mod:`.fleet`), the consolidation summary
(:mod:`.packing` via :class:`Consolidation`), the sharing groups and the what-if outcomes
(:mod:`.whatif`). Numbers keep their units in their names; money is in ``currency`` per month.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gpu_rightsizer.audit import fleet, whatif


@dataclasses.dataclass(frozen=True)
class ModelConsolidation:
    """One GPU model's nodes before and after packing the recommended allocations."""

    gpu_model: str
    nodes: int
    gpus_total: int
    gpus_needed: int
    """After packing the recommended allocations, with what the audit does not move."""
    gpus_freed: int
    """Whole GPUs that would hold nothing: ``gpus_total - gpus_needed``."""
    nodes_freed: int
    """Nodes that would hold nothing."""
    lower_bound_gpus: int
    """No packing needs fewer: how close ``gpus_needed`` is to the best possible."""
    purchase_price_per_gpu: float | None = None

    @property
    def capex_avoided(self) -> float | None:
        if self.purchase_price_per_gpu is None:
            return None
        return round(self.gpus_freed * self.purchase_price_per_gpu, 2)


@dataclasses.dataclass(frozen=True)
class Consolidation:
    algorithm: str
    models: tuple[ModelConsolidation, ...] = ()
    unplaced: tuple[str, ...] = ()
    """Replicas the packing could not place, each with why (they keep their GPUs)."""
    note: str = ""

    @property
    def gpus_freed(self) -> int:
        return sum(m.gpus_freed for m in self.models)

    @property
    def nodes_freed(self) -> int:
        return sum(m.nodes_freed for m in self.models)

    @property
    def capex_avoided(self) -> float | None:
        known = [m.capex_avoided for m in self.models if m.capex_avoided is not None]
        return round(sum(known), 2) if known else None


@dataclasses.dataclass(frozen=True)
class Report:
    generated: str
    """RFC 3339 time of the report."""
    clusters: tuple[str, ...]
    currency: str
    settings: fleet.Settings
    source: str
    """Where the figures come from: the operator's statuses, or Prometheus."""
    rows: tuple[fleet.Row, ...]
    groups: tuple[fleet.Group, ...]
    totals: fleet.Totals
    consolidation: Consolidation | None = None
    sharing: tuple[fleet.SharedGPU, ...] = ()
    what_if: tuple[whatif.Outcome, ...] = ()

    @property
    def idle(self) -> tuple[fleet.Row, ...]:
        return tuple(r for r in self.rows if r.idle)

    @property
    def multi_cluster(self) -> bool:
        return len(self.clusters) > 1


def build(
    entries: Sequence[fleet.Entry],
    *,
    generated: str,
    clusters: Sequence[str],
    currency: str,
    settings: fleet.Settings,
    source: str,
    catalog_rows: Sequence[fleet.Row],
    consolidation: Consolidation | None = None,
    what_if: Sequence[whatif.Outcome] = (),
) -> Report:
    """The report of ``catalog_rows`` (:func:`.fleet.rows` of ``entries``)."""
    listed = tuple(catalog_rows)
    return Report(
        generated=generated,
        clusters=tuple(clusters),
        currency=currency,
        settings=settings,
        source=source,
        rows=listed,
        groups=tuple(fleet.groups(listed)),
        totals=fleet.totals(listed),
        consolidation=consolidation,
        sharing=tuple(fleet.sharing(entries, settings, multi_cluster=len(clusters) > 1)),
        what_if=tuple(what_if),
    )
