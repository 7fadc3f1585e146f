"""Consolidation: MIG placement rules for every catalog profile, hand-made packings, properties
(never over-packs a GPU or a node, never frees a GPU that hosts something, deterministic) and
the heuristic against an exact search on small fleets."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings, strategies as st

from gpu_rightsizer import catalogs
from gpu_rightsizer.audit import packing, placements

CATALOG = catalogs.default_catalog()
TABLE = catalogs.mig_placements()
A100 = "A100-80GB"
H100 = "H100-80GB"


def test_every_catalog_profile_has_a_placement_that_gives_its_instance_count() -> None:
    for gpu in CATALOG.gpus:
        for profile in gpu.mig_profiles:
            where = placements.placement(gpu, profile, TABLE)
            demands = [packing.Demand(f"d{i}", gpu.id, 1, profile.name) for i in range(7)]
            packed = packing.pack(demands, [packing.Node("n", gpu.id, 7, True)], CATALOG, TABLE)
            per_gpu = [len(h.instances) for h in packed.hosts["n"]]
            assert per_gpu[0] == profile.max_instances, (gpu.id, profile.name, where)


def mig(key: str, profile: str, model: str = A100) -> packing.Demand:
    return packing.Demand(key, model, 1, profile)


def used(p: packing.Packing, model: str = A100) -> int:
    return p.gpus_used_by_model[model]


def one_node(gpus: int = 8, **extra: object) -> list[packing.Node]:
    return [packing.Node("n", A100, gpus, True, **extra)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("demands", "gpus"),
    [
        ([mig(f"a{i}", "1g.10gb") for i in range(7)], 1),
        ([mig(f"a{i}", "1g.10gb") for i in range(8)], 2),
        ([mig("a", "3g.40gb"), mig("b", "4g.40gb")], 1),
        ([mig("a", "3g.40gb"), mig("b", "3g.40gb")], 1),
        ([mig("a", "4g.40gb"), mig("b", "4g.40gb")], 2),
        ([mig(f"a{i}", "2g.20gb") for i in range(3)] + [mig("b", "1g.10gb")], 1),
        ([mig("a", "1g.10gb+me"), mig("b", "1g.10gb+me")], 2),
        ([mig("a", "7g.80gb"), mig("b", "1g.10gb")], 2),
    ],
)
def test_mig_instances_follow_the_placement_rules(demands: list[packing.Demand], gpus: int) -> None:
    packed = packing.pack(demands, one_node(), CATALOG, TABLE)
    assert packed.unplaced == ()
    assert used(packed) == gpus
    assert used(packed) >= packed.lower_bound_gpus[A100]


def test_a_replica_is_never_split_across_nodes() -> None:
    nodes = [packing.Node("a", H100, 2), packing.Node("b", H100, 2)]
    packed = packing.pack([packing.Demand("big", H100, 4)], nodes, CATALOG, TABLE)
    (missing,) = packed.unplaced
    assert missing.reason == "needs 4 H100-80GB GPUs on one node; the largest node has 2"
    assert used(packed, H100) == 0 and packed.gpus_freed == 4


def test_pinned_gpus_are_never_freed_and_full_nodes_say_so() -> None:
    nodes = [packing.Node("a", H100, 8, pinned_gpus=7), packing.Node("b", H100, 8)]
    demands = [packing.Demand("x", H100, 1), packing.Demand("y", H100, 8)]
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    assert packed.unplaced == ()
    assert [h.kind for h in packed.hosts["a"]] == ["pinned"] * 7 + ["whole"]
    assert used(packed, H100) == 16 and packed.nodes_freed == 0
    crowded = packing.pack([*demands, packing.Demand("z", H100, 1)], nodes, CATALOG, TABLE)
    assert [u.reason for u in crowded.unplaced] == ["no H100-80GB node has 1 GPUs free"]


def test_hardware_the_cluster_lacks_is_unplaced_with_a_reason() -> None:
    nodes = [packing.Node("h", H100, 8, mig_capable=False)]
    demands = [mig("m", "1g.10gb", H100), packing.Demand("l4", "L4", 1), mig("q", "9g.1gb", H100)]
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    assert {u.demand.key: u.reason for u in packed.unplaced} == {
        "l4": "the cluster has no L4 node",
        "m": "no H100-80GB node is MIG-capable",
        "q": "H100-80GB has no MIG profile 9g.1gb",
    }


# --- properties -------------------------------------------------------------------------------

MODELS = (A100, H100)
PROFILES = {m: [p.name for p in CATALOG.get(m).mig_profiles] for m in MODELS}  # type: ignore[union-attr]


@st.composite
def fleets(
    draw: st.DrawFn, max_demands: int = 14
) -> tuple[list[packing.Demand], list[packing.Node]]:
    nodes = [
        packing.Node(
            f"n{i}",
            draw(st.sampled_from(MODELS)),
            draw(st.sampled_from([1, 2, 4, 8])),
            draw(st.booleans()),
            draw(st.integers(0, 2)),
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    demands = []
    for i in range(draw(st.integers(0, max_demands))):
        model = draw(st.sampled_from(MODELS))
        if draw(st.booleans()):
            demands.append(mig(f"d{i:02d}", draw(st.sampled_from(PROFILES[model])), model))
        else:
            demands.append(packing.Demand(f"d{i:02d}", model, draw(st.sampled_from([1, 2, 4, 8]))))
    return demands, nodes


@settings(max_examples=300, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_a_packing_never_overpacks_and_never_frees_a_gpu_in_use(
    fleet: tuple[list[packing.Demand], list[packing.Node]], rnd: object
) -> None:
    demands, nodes = fleet
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    by_name = {n.name: n for n in nodes}
    placed: collections.Counter[str] = collections.Counter()
    for name, hosted in packed.hosts.items():
        node = by_name[name]
        assert len(hosted) <= node.gpus  # never more GPUs than the node has
        assert sum(h.kind == "pinned" for h in hosted) == min(node.pinned_gpus, node.gpus)
        for h in hosted:
            if h.kind == "mig":
                assert node.mig_capable and h.instances
                taken: set[int] = set()
                for i in h.instances:
                    gpu = CATALOG.get(node.gpu_model)
                    assert gpu is not None
                    profile = gpu.mig_profile(i.profile)
                    assert profile is not None
                    where = placements.placement(gpu, profile, TABLE)
                    assert i.start_slice in where.start_slices
                    span = set(range(i.start_slice, i.start_slice + i.memory_slices))
                    assert not span & taken and max(span) < where.gpu_memory_slices
                    taken |= span
                    placed[i.key] += 1
                counts = collections.Counter(i.profile for i in h.instances)
                for name_, count in counts.items():
                    assert count <= gpu.mig_profile(name_).max_instances  # type: ignore[union-attr]
            elif h.kind == "whole":
                placed[h.demand or ""] += 1
    for d in demands:
        is_unplaced = any(u.demand == d for u in packed.unplaced)
        if d.mig_profile is None:
            # A whole-GPU replica: all its GPUs on one node, or unplaced with a reason.
            homes = [n for n, hs in packed.hosts.items() if any(h.demand == d.key for h in hs)]
            assert (placed[d.key] == d.gpus and len(homes) == 1) != is_unplaced
        else:
            assert (placed[d.key] == 1) != is_unplaced
    for model, total in packed.gpus_total_by_model.items():
        hosted_gpus = sum(len(packed.hosts[n.name]) for n in nodes if n.gpu_model == model)
        assert packed.gpus_used_by_model[model] == hosted_gpus <= total
        assert packed.gpus_used_by_model[model] >= packed.lower_bound_gpus[model]
        empty = sum(1 for n in nodes if n.gpu_model == model and not packed.hosts[n.name])
        assert packed.nodes_freed_by_model[model] == empty
    assert all(u.reason for u in packed.unplaced)
    # The same packing whatever the order the demands come in.
    shuffled = list(demands)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert packing.pack(shuffled, nodes, CATALOG, TABLE) == packed


@settings(max_examples=200, deadline=None)
@given(fleets(max_demands=10))
def test_first_fit_decreasing_is_at_most_one_gpu_from_the_optimum_on_small_fleets(
    fleet: tuple[list[packing.Demand], list[packing.Node]],
) -> None:
    demands, nodes = fleet
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    best = packing.exact_min_gpus(demands, nodes, CATALOG, TABLE)
    if best is None or packed.unplaced:
        return  # something cannot be placed at all: nothing to compare
    heuristic = sum(packed.gpus_used_by_model.values())
    assert best <= heuristic <= best + 1
    assert sum(packed.lower_bound_gpus.values()) <= best


def test_the_exact_search_finds_the_layout_first_fit_misses_without_ranking() -> None:
    demands = [mig(f"a{i}", "1g.10gb") for i in range(7)] + [
        mig("b", "3g.40gb"),
        mig("c", "4g.40gb"),
    ]
    assert packing.exact_min_gpus(demands, one_node(), CATALOG, TABLE) == 2
    assert used(packing.pack(demands, one_node(), CATALOG, TABLE)) == 2
    assert packing.exact_min_gpus(demands * 2, one_node(), CATALOG, TABLE) is None  # too big
