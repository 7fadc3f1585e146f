"""Consolidation: pack replicas onto the cluster's nodes and count the GPUs and nodes left empty.

**The problem.** Each :class:`Demand` is one replica: ``gpus`` whole GPUs that must sit on one
node, or one MIG instance of a profile. Each :class:`Node` has ``gpus`` GPUs of one model, of
which ``pinned_gpus`` hold things the audit does not move (never freed). A GPU holds either one
whole-GPU demand's share or MIG instances; MIG instances on one GPU never overlap and each
starts at a memory slice NVIDIA's placement rules allow (:mod:`.placements`), at most the
profile's instance count per GPU. MIG GPUs go on MIG-capable nodes only (repartitioning is
assumed possible: this is what the fleet could look like, not what it looks like now).

**The algorithm: first-fit decreasing, per GPU model.** (1) MIG demands, largest first (of one
size, those with the fewest allowed starts first: a 4g.40gb before a 3g.40gb), go into the first
MIG GPU with a free valid start (else a new one). (2) Whole-GPU demands and the MIG
GPUs, largest first, go onto the first node with room, nodes with pinned GPUs first, then by
name. Deterministic: the same demands in any order give the same packing. A demand that fits
nowhere is listed with why.

**How close to optimal.** :attr:`Packing.lower_bound_gpus` is a bound no packing of the placed
demands beats (pinned + whole GPUs + the MIG instances' memory slices over a GPU's slices,
rounded up);
:func:`exact_min_gpus` is an exhaustive search for small instances, which the tests and
``bench/packing.py`` compare the heuristic against.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

from gpu_rightsizer.audit import placements
from gpu_rightsizer.models import gpus

ALGORITHM = "first-fit decreasing"
EXACT_LIMIT = 12


@dataclasses.dataclass(frozen=True)
class Demand:
    key: str
    gpu_model: str
    gpus: int = 1
    mig_profile: str | None = None


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    gpu_model: str
    gpus: int
    mig_capable: bool = False
    pinned_gpus: int = 0


@dataclasses.dataclass(frozen=True)
class Instance:
    key: str
    profile: str
    start_slice: int
    memory_slices: int


@dataclasses.dataclass(frozen=True)
class HostedGPU:
    """One used GPU of a node: pinned, part of a whole-GPU demand, or MIG instances."""

    kind: str  # "pinned" | "whole" | "mig"
    demand: str | None = None
    instances: tuple[Instance, ...] = ()


@dataclasses.dataclass(frozen=True)
class Unplaced:
    demand: Demand
    reason: str


@dataclasses.dataclass(frozen=True)
class Packing:
    algorithm: str
    hosts: Mapping[str, tuple[HostedGPU, ...]]
    """Node name -> its used GPUs."""
    gpus_total_by_model: Mapping[str, int]
    gpus_used_by_model: Mapping[str, int]
    nodes_freed_by_model: Mapping[str, int]
    lower_bound_gpus: Mapping[str, int]
    unplaced: tuple[Unplaced, ...]

    @property
    def gpus_freed(self) -> int:
        return sum(self.gpus_total_by_model.values()) - sum(self.gpus_used_by_model.values())

    @property
    def nodes_freed(self) -> int:
        return sum(self.nodes_freed_by_model.values())


@dataclasses.dataclass
class _MigGPU:
    instances: list[Instance] = dataclasses.field(default_factory=list)

    def used(self) -> set[int]:
        return {
            s for i in self.instances for s in range(i.start_slice, i.start_slice + i.memory_slices)
        }

    def count(self, profile: str) -> int:
        return sum(1 for i in self.instances if i.profile == profile)

    def place(self, key: str, profile: str, where: placements.Placement) -> bool:
        if self.count(profile) >= where.max_instances:
            return False
        taken = self.used()
        for start in where.start_slices:
            span = set(range(start, start + where.memory_slices))
            if start + where.memory_slices <= where.gpu_memory_slices and not span & taken:
                self.instances.append(Instance(key, profile, start, where.memory_slices))
                return True
        return False


def _placement(
    gpu: gpus.GpuModel | None, profile: str, table: placements.Table
) -> placements.Placement | str:
    if gpu is None:
        return "the catalog does not know this GPU model"
    found = gpu.mig_profile(profile)
    if found is None:
        return f"{gpu.id} has no MIG profile {profile}"
    try:
        return placements.placement(gpu, found, table)
    except ValueError as exc:
        return str(exc)


def _order(nodes: Sequence[Node]) -> list[Node]:
    return sorted(nodes, key=lambda n: (n.pinned_gpus == 0, n.name))


def pack(
    demands: Sequence[Demand],
    nodes: Sequence[Node],
    catalog: gpus.Catalog,
    table: placements.Table,
) -> Packing:
    """Pack ``demands`` onto ``nodes`` (see the module docstring)."""
    hosts: dict[str, list[HostedGPU]] = {
        n.name: [HostedGPU("pinned")] * min(n.pinned_gpus, n.gpus) for n in nodes
    }
    free = {n.name: n.gpus - min(n.pinned_gpus, n.gpus) for n in nodes}
    unplaced: list[Unplaced] = []
    totals: dict[str, int] = {}
    used: dict[str, int] = {}
    freed: dict[str, int] = {}
    bounds: dict[str, int] = {}
    models = sorted({n.gpu_model for n in nodes} | {d.gpu_model for d in demands})
    for model in models:
        of_model = _order([n for n in nodes if n.gpu_model == model])
        wanted = sorted((d for d in demands if d.gpu_model == model), key=lambda d: d.key)
        if not of_model:
            unplaced += [Unplaced(d, f"the cluster has no {model} node") for d in wanted]
            continue
        gpu = catalog.get(model)
        mig_gpus: list[_MigGPU] = []
        mig_slices = 0
        sized: list[tuple[Demand, placements.Placement]] = []
        for d in wanted:
            if d.mig_profile is None:
                continue
            where = _placement(gpu, d.mig_profile, table)
            if isinstance(where, str):
                unplaced.append(Unplaced(d, where))
            elif not any(n.mig_capable for n in of_model):
                unplaced.append(Unplaced(d, f"no {model} node is MIG-capable"))
            else:
                sized.append((d, where))
        # Largest first; of one size, the most constrained (fewest allowed starts) first.
        ranked = sorted(
            sized, key=lambda x: (-x[1].memory_slices, len(x[1].start_slices), x[0].key)
        )
        for d, where in ranked:
            profile = d.mig_profile or ""
            if not any(g.place(d.key, profile, where) for g in mig_gpus):
                fresh = _MigGPU()
                fresh.place(d.key, profile, where)
                mig_gpus.append(fresh)
        items: list[tuple[int, str, Demand | _MigGPU]] = [
            (d.gpus, d.key, d) for d in wanted if d.mig_profile is None
        ]
        items += [(1, f"~mig{i:05d}", g) for i, g in enumerate(mig_gpus)]
        largest = max(n.gpus for n in of_model)
        whole = 0
        for size, _, item in sorted(items, key=lambda x: (-x[0], x[1])):
            is_mig = isinstance(item, _MigGPU)
            node = next(
                (n for n in of_model if free[n.name] >= size and (n.mig_capable or not is_mig)),
                None,
            )
            if node is None:
                if isinstance(item, _MigGPU):
                    for i in item.instances:
                        d = next(x for x, _ in sized if x.key == i.key)
                        unplaced.append(Unplaced(d, f"no MIG-capable {model} node has a GPU free"))
                    continue
                reason = (
                    f"needs {size} {model} GPUs on one node; the largest node has {largest}"
                    if size > largest
                    else f"no {model} node has {size} GPUs free"
                )
                unplaced.append(Unplaced(item, reason))
                continue
            free[node.name] -= size
            if isinstance(item, _MigGPU):
                hosts[node.name].append(HostedGPU("mig", instances=tuple(item.instances)))
                mig_slices += sum(i.memory_slices for i in item.instances)
            else:
                whole += size
                hosts[node.name] += [HostedGPU("whole", demand=item.key)] * size
        pinned = sum(min(n.pinned_gpus, n.gpus) for n in of_model)
        totals[model] = sum(n.gpus for n in of_model)
        used[model] = sum(len(hosts[n.name]) for n in of_model)
        freed[model] = sum(1 for n in of_model if not hosts[n.name])
        bounds[model] = pinned + whole + math.ceil(mig_slices / table.gpu_memory_slices)
    return Packing(
        algorithm=ALGORITHM,
        hosts={name: tuple(h) for name, h in sorted(hosts.items())},
        gpus_total_by_model=totals,
        gpus_used_by_model=used,
        nodes_freed_by_model=freed,
        lower_bound_gpus=bounds,
        unplaced=tuple(sorted(unplaced, key=lambda u: u.demand.key)),
    )


# --- the exact answer, for small instances ---------------------------------------------------


def exact_min_gpus(
    demands: Sequence[Demand],
    nodes: Sequence[Node],
    catalog: gpus.Catalog,
    table: placements.Table,
) -> int | None:
    """The fewest GPUs any packing of ``demands`` uses (pinned included), or None when the
    instance has more than :data:`EXACT_LIMIT` demands or some demand cannot be placed at all.

    Whole-GPU demands take their GPUs in any packing; the search is over MIG instances to GPUs
    (every valid start, every GPU so far or a new one) and, for each candidate count, whether
    the whole-GPU demands and the MIG GPUs fit the nodes (exhaustive as well).
    """
    if len(demands) > EXACT_LIMIT:
        return None
    total = 0
    for model in sorted({d.gpu_model for d in demands} | {n.gpu_model for n in nodes}):
        of_model = [n for n in nodes if n.gpu_model == model]
        wanted = [d for d in demands if d.gpu_model == model]
        best = _exact_model(wanted, of_model, catalog.get(model), table)
        if best is None:
            return None
        total += best
    return total


def _exact_model(
    wanted: Sequence[Demand],
    of_model: Sequence[Node],
    gpu: gpus.GpuModel | None,
    table: placements.Table,
) -> int | None:
    pinned = sum(min(n.pinned_gpus, n.gpus) for n in of_model)
    if not wanted:
        return pinned
    if not of_model:
        return None
    whole = [d.gpus for d in wanted if d.mig_profile is None]
    migs: list[tuple[str, placements.Placement]] = []
    for d in wanted:
        if d.mig_profile is not None:
            where = _placement(gpu, d.mig_profile, table)
            if isinstance(where, str):
                return None
            migs.append((d.mig_profile, where))
    if migs and not any(n.mig_capable for n in of_model):
        return None
    capacities = tuple(
        sorted((n.gpus - min(n.pinned_gpus, n.gpus), n.mig_capable) for n in of_model)
    )
    for count in range(0 if not migs else 1, len(migs) + 1):
        if _mig_fits(tuple(migs), count) and _nodes_fit(tuple(sorted(whole)), count, capacities):
            return pinned + sum(whole) + count
    return None


def _mig_fits(migs: tuple[tuple[str, placements.Placement], ...], count: int) -> bool:
    """Whether the MIG instances fit on ``count`` GPUs (exhaustive, largest first)."""
    ordered = sorted(migs, key=lambda m: -m[1].memory_slices)
    gpus_state: list[tuple[frozenset[int], tuple[str, ...]]] = [(frozenset(), ())] * count

    def search(i: int, state: tuple[tuple[frozenset[int], tuple[str, ...]], ...]) -> bool:
        if i == len(ordered):
            return True
        profile, where = ordered[i]
        seen: set[tuple[frozenset[int], tuple[str, ...]]] = set()
        for g, (taken, names) in enumerate(state):
            if (taken, names) in seen:  # identical GPUs: try one of them
                continue
            seen.add((taken, names))
            if names.count(profile) >= where.max_instances:
                continue
            for start in where.start_slices:
                span = frozenset(range(start, start + where.memory_slices))
                if start + where.memory_slices > where.gpu_memory_slices or span & taken:
                    continue
                after = list(state)
                after[g] = (taken | span, (*names, profile))
                if search(i + 1, tuple(after)):
                    return True
        return False

    return search(0, tuple(gpus_state))


@functools.cache
def _nodes_fit(
    whole: tuple[int, ...], mig_gpus: int, capacities: tuple[tuple[int, bool], ...]
) -> bool:
    """Whether whole-GPU demands (each on one node) and ``mig_gpus`` single MIG GPUs (on
    MIG-capable nodes) fit the nodes' free GPUs (exhaustive)."""
    if not whole:
        room = sum(c for c, capable in capacities if capable)
        return mig_gpus <= room
    size, rest = whole[-1], whole[:-1]
    tried: set[tuple[int, bool]] = set()
    for i, (cap, capable) in enumerate(capacities):
        if cap < size or (cap, capable) in tried:
            continue
        tried.add((cap, capable))
        after = list(capacities)
        after[i] = (cap - size, capable)
        if _nodes_fit(rest, mig_gpus, tuple(sorted(after))):
            return True
    return False
