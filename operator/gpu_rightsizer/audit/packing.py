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
MIG GPU with a free valid start (else a new one); of the free starts, the one whose slices the
fewest placements can reach is taken (a 3g.40gb at slice 4, leaving 0-3 to anything). The same
is done with the profiles capped below what their slices allow (``+me``: one per GPU) first, and
the order giving fewer MIG GPUs kept (the first on a tie). (2) Whole-GPU demands and the MIG
GPUs, largest first, go onto the first node with room, nodes with pinned GPUs first, then by
name. Three variants are tried as well (MIG GPUs before whole-GPU demands of their size;
whole-GPU demands on nodes that are not MIG-capable first; both) and the one leaving the fewest
GPUs without a node, then using the fewest nodes, is kept (the plain order on a tie).
Deterministic: the same demands in any order give the same packing. A demand that fits nowhere
is listed with why.

**How close to optimal.** :attr:`Packing.lower_bound_gpus` is a bound no packing of the placed
demands beats: pinned + whole GPUs + the most of (the MIG instances' memory slices over a GPU's
slices, rounded up; per profile, its instances over its instances per GPU, rounded up; the
instances that all need one same slice, such as 4g and 7g instances, which only start at 0).
:func:`exact_min_gpus` is an exhaustive search for small instances, which the tests and
``bench/packing.py`` compare the heuristic against.
"""

from __future__ import annotations

import collections
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
    """One replica: ``gpus`` whole GPUs on one node, or (``mig_profile`` set) one MIG instance."""

    key: str
    gpu_model: str
    gpus: int = 1
    mig_profile: str | None = None

    def __post_init__(self) -> None:
        if self.mig_profile is None and self.gpus < 1:
            raise ValueError(f"demand {self.key}: a whole-GPU replica needs at least one GPU")

    @property
    def size_gpus(self) -> int:
        """GPUs of a node the replica takes by itself (a MIG instance shares one: 1)."""
        return self.gpus if self.mig_profile is None else 1


@dataclasses.dataclass(frozen=True)
class Node:
    """A node's GPUs of one model; ``pinned_gpus`` of them host what the audit does not move."""

    name: str
    gpu_model: str
    gpus: int
    mig_capable: bool = False
    pinned_gpus: int = 0

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.pinned_gpus < 0:
            raise ValueError(f"node {self.name}: GPU counts must not be negative")

    @property
    def free_gpus(self) -> int:
        return self.gpus - min(self.pinned_gpus, self.gpus)


@dataclasses.dataclass(frozen=True)
class Instance:
    """One MIG instance on a GPU: the demand, its profile and the memory slices it takes."""

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
    """The packing. Per GPU model: ``gpus_total_by_model`` of the nodes, ``gpus_used_by_model``
    (pinned included), ``nodes_freed_by_model`` (nodes with no GPU used) and
    ``lower_bound_gpus``; the overall figures are properties."""

    algorithm: str
    hosts: Mapping[str, tuple[HostedGPU, ...]]
    """Node name -> its used GPUs (pinned ones first); a freed node has none."""
    gpus_total_by_model: Mapping[str, int]
    gpus_used_by_model: Mapping[str, int]
    nodes_freed_by_model: Mapping[str, int]
    lower_bound_gpus: Mapping[str, int]
    unplaced: tuple[Unplaced, ...]

    @property
    def gpus_freed_by_model(self) -> Mapping[str, int]:
        return {
            m: total - self.gpus_used_by_model.get(m, 0)
            for m, total in self.gpus_total_by_model.items()
        }

    @property
    def gpus_total(self) -> int:
        return sum(self.gpus_total_by_model.values())

    @property
    def gpus_used(self) -> int:
        return sum(self.gpus_used_by_model.values())

    @property
    def gpus_freed(self) -> int:
        return self.gpus_total - self.gpus_used

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

    def place(
        self, key: str, profile: str, where: placements.Placement, scarcity: Sequence[int]
    ) -> bool:
        if self.count(profile) >= where.max_instances:
            return False
        taken = self.used()
        free = [s for s in where.start_slices if not set(where.span(s)) & taken]
        if not free:
            return False
        # The start whose slices the fewest placements reach: keep the versatile ones free.
        start = min(free, key=lambda s: (sum(scarcity[x] for x in where.span(s)), s))
        self.instances.append(Instance(key, profile, start, where.memory_slices))
        return True


def _placement(
    gpu: gpus.GpuModel | None, profile: str, table: placements.Table
) -> placements.Placement | str:
    if gpu is None:
        return "the catalog does not know this GPU model"
    found = gpu.mig_profile(profile)
    if found is None:
        return f"{gpu.id} has no MIG profile {profile}"
    try:
        return table.placements(gpu, found)
    except ValueError as exc:
        return str(exc)


def _mig_first_fit(
    sized: Sequence[tuple[Demand, placements.Placement]],
    table: placements.Table,
    *,
    capped_first: bool,
) -> list[_MigGPU]:
    """First fit of MIG instances into GPUs, largest first; of one size the most constrained
    (fewest allowed starts) first. ``capped_first``: profiles whose instances per GPU are
    capped below what the slices allow (the ``+me`` ones, one per GPU) go before all others."""

    def rank(x: tuple[Demand, placements.Placement]) -> tuple[bool, int, int, str, str]:
        d, where = x
        capped = where.max_instances < where.instances_by_slices
        return (
            not (capped_first and capped),
            -where.memory_slices,
            len(where.start_slices),
            d.mig_profile or "",
            d.key,
        )

    mig_gpus: list[_MigGPU] = []
    for d, where in sorted(sized, key=rank):
        profile = d.mig_profile or ""
        scarcity = table.coverage(where.gpu_memory_slices)
        if not any(g.place(d.key, profile, where, scarcity) for g in mig_gpus):
            fresh = _MigGPU()
            fresh.place(d.key, profile, where, scarcity)
            mig_gpus.append(fresh)
    return mig_gpus


def _check_unique(demands: Sequence[Demand], nodes: Sequence[Node]) -> None:
    for what, names in (
        ("demand key", [d.key for d in demands]),
        ("node", [n.name for n in nodes]),
    ):
        twice = sorted(k for k, n in collections.Counter(names).items() if n > 1)
        if twice:
            raise ValueError(f"{what} given twice: {', '.join(twice)}")


def _order(nodes: Sequence[Node]) -> list[Node]:
    return sorted(nodes, key=lambda n: (n.pinned_gpus == 0, n.name))


def _mig_bound(instances: Sequence[tuple[str, placements.Placement]]) -> int:
    """Fewest GPUs the MIG instances (profile, placement) need in any packing (see the module
    docstring)."""
    if not instances:
        return 0
    gpu_slices = instances[0][1].gpu_memory_slices
    by_slices = math.ceil(sum(w.memory_slices for _, w in instances) / gpu_slices)
    caps = {profile: w.max_instances for profile, w in instances}
    counts = collections.Counter(profile for profile, _ in instances)
    by_cap = max(math.ceil(n / caps[profile]) for profile, n in counts.items())
    needing: collections.Counter[int] = collections.Counter()
    for _, w in instances:  # slices every allowed start of the instance covers
        needing.update(set.intersection(*(set(w.span(s)) for s in w.start_slices)))
    return max(by_slices, by_cap, max(needing.values(), default=0))


_Item = tuple[int, str, "Demand | _MigGPU"]


def _to_nodes(
    items: Sequence[_Item], nodes: Sequence[Node], *, mig_first: bool, plain_first: bool
) -> tuple[dict[str, list[_Item]], list[_Item]]:
    """First fit of the items (largest first) over ``nodes`` (in their order)."""
    free = {n.name: n.free_gpus for n in nodes}
    placed: dict[str, list[_Item]] = {n.name: [] for n in nodes}
    left: list[_Item] = []

    def rank(item: _Item) -> tuple[int, bool, str]:
        return (-item[0], mig_first and not isinstance(item[2], _MigGPU), item[1])

    for item in sorted(items, key=rank):
        size, _, what = item
        is_mig = isinstance(what, _MigGPU)
        candidates = [n for n in nodes if n.mig_capable or not is_mig]
        if plain_first and not is_mig:
            candidates.sort(key=lambda n: n.mig_capable)  # stable: keeps the node order
        node = next((n for n in candidates if free[n.name] >= size), None)
        if node is None:
            left.append(item)
            continue
        free[node.name] -= size
        placed[node.name].append(item)
    return placed, left


def pack(
    demands: Sequence[Demand],
    nodes: Sequence[Node],
    catalog: gpus.Catalog,
    table: placements.Table,
) -> Packing:
    """Pack ``demands`` onto ``nodes`` (see the module docstring); demand keys and node names
    must be unique (ValueError otherwise)."""
    _check_unique(demands, nodes)
    hosts: dict[str, list[HostedGPU]] = {
        n.name: [HostedGPU("pinned")] * min(n.pinned_gpus, n.gpus) for n in nodes
    }
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
        mig_gpus = min(
            (_mig_first_fit(sized, table, capped_first=c) for c in (False, True)), key=len
        )
        items: list[_Item] = [(d.gpus, d.key, d) for d in wanted if d.mig_profile is None]
        items += [(1, f"~mig{i:05d}", g) for i, g in enumerate(mig_gpus)]
        tries = [
            _to_nodes(items, of_model, mig_first=mig_first, plain_first=plain_first)
            for mig_first, plain_first in (
                (False, False),
                (True, False),
                (False, True),
                (True, True),
            )
        ]

        def score(t: tuple[dict[str, list[_Item]], list[_Item]]) -> tuple[int, int]:
            return (sum(size for size, _, _ in t[1]), sum(1 for v in t[0].values() if v))

        placed, left = min(tries, key=score)  # min keeps the first of equals
        largest = max(n.gpus for n in of_model)
        whole = 0
        mig_placed: list[tuple[str, placements.Placement]] = []
        where_of = {d.key: w for d, w in sized}
        for node in of_model:
            for size, _, what in sorted(placed[node.name], key=lambda x: (-x[0], x[1])):
                if isinstance(what, _MigGPU):
                    hosts[node.name].append(HostedGPU("mig", instances=tuple(what.instances)))
                    mig_placed += [(i.profile, where_of[i.key]) for i in what.instances]
                else:
                    whole += size
                    hosts[node.name] += [HostedGPU("whole", demand=what.key)] * size
        demand_of = {d.key: d for d in wanted}
        for size, _, what in left:
            if isinstance(what, _MigGPU):
                for i in what.instances:
                    reason = f"no MIG-capable {model} node has a GPU free"
                    unplaced.append(Unplaced(demand_of[i.key], reason))
                continue
            reason = (
                f"needs {size} {model} GPUs on one node; the largest node has {largest}"
                if size > largest
                else f"no {model} node has {size} GPUs free"
            )
            unplaced.append(Unplaced(what, reason))
        pinned = sum(min(n.pinned_gpus, n.gpus) for n in of_model)
        totals[model] = sum(n.gpus for n in of_model)
        used[model] = sum(len(hosts[n.name]) for n in of_model)
        freed[model] = sum(1 for n in of_model if not hosts[n.name])
        bounds[model] = pinned + whole + _mig_bound(mig_placed)
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
    """The fewest GPUs any packing that places every demand uses (pinned included), or None
    when the instance has more than :data:`EXACT_LIMIT` demands or no packing places them all.

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
