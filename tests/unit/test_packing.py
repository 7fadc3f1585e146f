"""Consolidation: MIG placement rules for every catalog profile, hand-made packings, properties
(never over-packs a GPU or a node, never frees a GPU that hosts something, deterministic) and
the heuristic against an exact search on small fleets."""

from __future__ import annotations

import collections
import dataclasses
import random

import pytest
from hypothesis import given, settings, strategies as st

from gpu_rightsizer import catalogs
from gpu_rightsizer.audit import packing, placements
from gpu_rightsizer.models import gpus

CATALOG = catalogs.default_catalog()
TABLE = catalogs.mig_placements()
A100 = "A100-80GB"
H100 = "H100-80GB"


def _a30() -> gpus.GpuModel:
    """An A30 (not in the catalog: no price source), for the 4-slice rules: the MIG User
    Guide's A30 profiles, sizes as `nvidia-smi mig -lgip` lists them on an A30."""
    base = CATALOG.get("A100-40GB")
    assert base is not None

    def profile(name: str, slices: int, mib: int, sms: int, count: int) -> gpus.MigProfile:
        gib = float(name.split(".")[1].removesuffix("+me").removesuffix("gb"))
        return gpus.MigProfile(
            name=name,
            compute_slices=slices,
            memory_gib=gib,
            usable_memory_mib=mib,
            sm_count=sms,
            max_instances=count,
        )

    return base.model_copy(
        update={
            "id": "A30",
            "display_name": "NVIDIA A30",
            "aliases": (),
            "memory_gib": 24.0,
            "usable_memory_mib": 24576,
            "sm_count": 56,
            "mig_profiles": (
                profile("1g.6gb", 1, 5952, 14, 4),
                profile("1g.6gb+me", 1, 5952, 14, 1),
                profile("2g.12gb", 2, 11968, 28, 2),
                profile("2g.12gb+me", 2, 11968, 28, 1),
                profile("4g.24gb", 4, 24064, 56, 1),
            ),
        }
    )


A30 = _a30()
WITH_A30 = CATALOG.model_copy(update={"gpus": (*CATALOG.gpus, A30)})


def mig(key: str, profile: str, model: str = A100) -> packing.Demand:
    return packing.Demand(key, model, 1, profile)


def used(p: packing.Packing, model: str = A100) -> int:
    return p.gpus_used_by_model[model]


def one_node(gpus_: int = 8, model: str = A100) -> list[packing.Node]:
    return [packing.Node("n", model, gpus_, True)]


def starts(p: packing.Packing, node: str = "n") -> list[list[tuple[str, int]]]:
    return [[(i.profile, i.start_slice) for i in h.instances] for h in p.hosts[node]]


# --- the placement rules ----------------------------------------------------------------------


def _profiles(gpu: gpus.GpuModel) -> list[tuple[gpus.GpuModel, gpus.MigProfile]]:
    return [(gpu, p) for p in gpu.mig_profiles]


EVERY_PROFILE = [pair for gpu in (*CATALOG.gpus, A30) for pair in _profiles(gpu)]


@pytest.mark.parametrize(
    ("gpu", "profile"), EVERY_PROFILE, ids=[f"{g.id}-{p.name}" for g, p in EVERY_PROFILE]
)
def test_the_derived_placement_gives_every_profile_its_instance_count(
    gpu: gpus.GpuModel, profile: gpus.MigProfile
) -> None:
    where = TABLE.placements(gpu, profile)
    assert where.max_instances == profile.max_instances
    if profile.name.endswith("+me"):
        # One set of media engines per GPU; the slices are the base profile's.
        base = gpu.require_mig_profile(profile.name.removesuffix("+me"))
        assert profile.max_instances == 1
        assert where == dataclasses.replace(TABLE.placements(gpu, base), max_instances=1)
    else:
        assert where.instances_by_slices == profile.max_instances
    # And the packer puts exactly that many on one GPU.
    demands = [packing.Demand(f"d{i}", gpu.id, 1, profile.name) for i in range(8)]
    nodes = [packing.Node("n", gpu.id, 8, True)]
    packed = packing.pack(demands, nodes, WITH_A30, TABLE)
    assert packed.unplaced == ()
    assert len(packed.hosts["n"][0].instances) == profile.max_instances


def test_the_memory_slices_of_the_catalog_profiles() -> None:
    def sizes(gpu_id: str) -> dict[str, int]:
        gpu = CATALOG.get(gpu_id)
        assert gpu is not None
        return {p.name: TABLE.memory_slices(gpu, p) for p in gpu.mig_profiles}

    assert sizes("A100-40GB") == {
        "1g.5gb": 1,
        "1g.5gb+me": 1,
        "1g.10gb": 2,
        "2g.10gb": 2,
        "3g.20gb": 4,
        "4g.20gb": 4,
        "7g.40gb": 8,
    }
    assert sizes("H100-NVL-94GB")["1g.12gb"] == 1 and sizes("H100-NVL-94GB")["1g.24gb"] == 2
    assert {p.name: TABLE.memory_slices(A30, p) for p in A30.mig_profiles} == {
        "1g.6gb": 1,
        "1g.6gb+me": 1,
        "2g.12gb": 2,
        "2g.12gb+me": 2,
        "4g.24gb": 4,
    }
    assert TABLE.placements(A30, A30.require_mig_profile("2g.12gb")).start_slices == (0, 2)


def test_a_table_that_contradicts_itself_is_rejected() -> None:
    layout = placements.Layout(whole_gpu_compute_slices=7, memory_slices=8)
    with pytest.raises(ValueError, match="past the GPU's last slice"):
        placements.Table((layout,), (placements.Rule(8, 3, 4, (0, 5)),))
    with pytest.raises(ValueError, match="no layout has 4"):
        placements.Table((layout,), (placements.Rule(4, 1, 1, (0,)),))
    with pytest.raises(ValueError, match="two rules"):
        placements.Table((layout,), (placements.Rule(8, 1, 1, (0,)),) * 2)


def test_malformed_placement_files_name_the_file() -> None:
    with pytest.raises(catalogs.CatalogError, match=r"^p\.yaml: missing field 'rules'"):
        catalogs.parse_mig_placements("layouts: []\n", "p.yaml")
    with pytest.raises(catalogs.CatalogError, match=r"^p\.yaml: expected a mapping"):
        catalogs.parse_mig_placements("- 1\n", "p.yaml")
    bad = (
        "layouts: [{wholeGpuComputeSlices: 7, memorySlices: 8}]\n"
        "rules: [{gpuMemorySlices: 8, computeSlices: 7, memorySlices: 8, startSlices: [1]}]\n"
    )
    with pytest.raises(catalogs.CatalogError, match=r"^p\.yaml: rule 7g x 8 slices"):
        catalogs.parse_mig_placements(bad, "p.yaml")


def test_a_gpu_without_mig_has_no_placement() -> None:
    l4 = CATALOG.get("L4")
    assert l4 is not None
    with pytest.raises(ValueError, match="L4 has no MIG profiles"):
        TABLE.gpu_memory_slices(l4)


# --- hand-made packings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("demands", "gpus_"),
    [
        ([mig(f"a{i}", "1g.10gb") for i in range(7)], 1),
        ([mig(f"a{i}", "1g.10gb") for i in range(8)], 2),
        ([mig("a", "3g.40gb"), mig("b", "4g.40gb")], 1),
        ([mig("a", "3g.40gb"), mig("b", "3g.40gb")], 1),
        ([mig("a", "4g.40gb"), mig("b", "4g.40gb")], 2),
        ([mig("a", "4g.40gb"), mig("b", "7g.80gb")], 2),
        ([mig(f"a{i}", "2g.20gb") for i in range(3)] + [mig("b", "1g.10gb")], 1),
        ([mig(f"a{i}", "1g.20gb") for i in range(4)], 1),
        ([mig("a", "1g.10gb+me"), mig("b", "1g.10gb+me")], 2),
        ([mig("a", "7g.80gb"), mig("b", "1g.10gb")], 2),
        # 3g.40gb at 4 leaves 0-3 to a 1g.20gb and two 1g.10gb (at 0 it would strand slice 7).
        ([mig("a", "3g.40gb"), mig("b", "1g.20gb"), mig("c", "1g.10gb"), mig("d", "1g.10gb")], 1),
    ],
)
def test_mig_instances_follow_the_placement_rules(
    demands: list[packing.Demand], gpus_: int
) -> None:
    packed = packing.pack(demands, one_node(), CATALOG, TABLE)
    assert packed.unplaced == ()
    assert used(packed) == gpus_
    assert used(packed) >= packed.lower_bound_gpus[A100]
    assert packing.exact_min_gpus(demands, one_node(), CATALOG, TABLE) == gpus_


def test_seven_1g_on_one_gpu_take_slices_0_to_6() -> None:
    packed = packing.pack([mig(f"a{i}", "1g.10gb") for i in range(7)], one_node(), CATALOG, TABLE)
    (only,) = starts(packed)
    assert sorted(s for _, s in only) == [0, 1, 2, 3, 4, 5, 6]
    assert packed.gpus_freed == 7 and packed.nodes_freed == 0


def test_three_2g_at_0_2_4_then_a_1g_at_6() -> None:
    demands = [mig(f"a{i}", "2g.20gb") for i in range(3)] + [mig("b", "1g.10gb")]
    packed = packing.pack(demands, one_node(1), CATALOG, TABLE)
    (only,) = starts(packed)
    assert sorted(only) == [("1g.10gb", 6), ("2g.20gb", 0), ("2g.20gb", 2), ("2g.20gb", 4)]


def test_a_30_has_four_slices() -> None:
    demands = [mig(f"a{i}", "1g.6gb", "A30") for i in range(2)] + [mig("b", "2g.12gb", "A30")]
    packed = packing.pack(demands, one_node(2, "A30"), WITH_A30, TABLE)
    (only,) = starts(packed)
    assert sorted(only) == [("1g.6gb", 2), ("1g.6gb", 3), ("2g.12gb", 0)]
    assert packed.lower_bound_gpus["A30"] == 1
    more = [*demands, mig("c", "1g.6gb", "A30")]
    assert used(packing.pack(more, one_node(2, "A30"), WITH_A30, TABLE), "A30") == 2


def test_a_replica_is_never_split_across_nodes() -> None:
    nodes = [packing.Node("a", H100, 2), packing.Node("b", H100, 2)]
    packed = packing.pack([packing.Demand("big", H100, 4)], nodes, CATALOG, TABLE)
    (missing,) = packed.unplaced
    assert missing.reason == "needs 4 H100-80GB GPUs on one node; the largest node has 2"
    assert used(packed, H100) == 0 and packed.gpus_freed == 4 and packed.nodes_freed == 2


def test_pinned_gpus_are_never_freed_and_full_nodes_say_so() -> None:
    nodes = [packing.Node("a", H100, 8, pinned_gpus=7), packing.Node("b", H100, 8)]
    demands = [packing.Demand("x", H100, 1), packing.Demand("y", H100, 8)]
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    assert packed.unplaced == ()
    assert [h.kind for h in packed.hosts["a"]] == ["pinned"] * 7 + ["whole"]
    assert used(packed, H100) == 16 and packed.nodes_freed == 0
    crowded = packing.pack([*demands, packing.Demand("z", H100, 1)], nodes, CATALOG, TABLE)
    assert [u.reason for u in crowded.unplaced] == ["no H100-80GB node has 1 GPUs free"]
    idle = packing.pack([], nodes, CATALOG, TABLE)
    assert idle.gpus_used == 7 and idle.gpus_freed == 9 and idle.nodes_freed == 1
    assert idle.gpus_freed_by_model == {H100: 9} and idle.lower_bound_gpus == {H100: 7}


def test_the_pinned_node_is_filled_first_so_another_empties() -> None:
    nodes = [packing.Node("b", H100, 4), packing.Node("a", H100, 4, pinned_gpus=1)]
    demands = [packing.Demand(f"r{i}", H100, 1) for i in range(3)]
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    assert packed.hosts["b"] == () and packed.nodes_freed_by_model == {H100: 1}


def test_mig_gpus_keep_the_mig_capable_node() -> None:
    # First fit alone puts the 2-GPU replica on the MIG-capable node and strands the MIG GPU.
    nodes = [packing.Node("a", A100, 2, mig_capable=True), packing.Node("b", A100, 2)]
    demands = [packing.Demand("whole", A100, 2), mig("m", "3g.40gb")]
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    assert packed.unplaced == ()
    assert [h.kind for h in packed.hosts["a"]] == ["mig"]
    assert [h.kind for h in packed.hosts["b"]] == ["whole", "whole"]


def test_hardware_the_cluster_lacks_is_unplaced_with_a_reason() -> None:
    nodes = [packing.Node("h", H100, 8, mig_capable=False)]
    demands = [mig("m", "1g.10gb", H100), packing.Demand("l4", "L4", 1), mig("q", "9g.1gb", H100)]
    packed = packing.pack(demands, nodes, CATALOG, TABLE)
    assert {u.demand.key: u.reason for u in packed.unplaced} == {
        "l4": "the cluster has no L4 node",
        "m": "no H100-80GB node is MIG-capable",
        "q": "H100-80GB has no MIG profile 9g.1gb",
    }


def test_full_mig_nodes_leave_instances_unplaced() -> None:
    demands = [mig(f"m{i}", "7g.80gb") for i in range(3)]
    packed = packing.pack(demands, one_node(2), CATALOG, TABLE)
    assert [u.reason for u in packed.unplaced] == ["no MIG-capable A100-80GB node has a GPU free"]
    assert packing.exact_min_gpus(demands, one_node(2), CATALOG, TABLE) is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one GPU"):
        packing.Demand("x", H100, 0)
    with pytest.raises(ValueError, match="must not be negative"):
        packing.Node("n", H100, 2, pinned_gpus=-1)
    twice = [packing.Demand("x", H100), packing.Demand("x", H100)]
    with pytest.raises(ValueError, match="demand key given twice: x"):
        packing.pack(twice, one_node(), CATALOG, TABLE)


def test_the_exact_search_and_its_size_limit() -> None:
    demands = [mig(f"a{i}", "1g.10gb") for i in range(7)] + [
        mig("b", "3g.40gb"),
        mig("c", "4g.40gb"),
    ]
    assert packing.exact_min_gpus(demands, one_node(), CATALOG, TABLE) == 2
    assert used(packing.pack(demands, one_node(), CATALOG, TABLE)) == 2
    assert packing.exact_min_gpus(demands * 2, one_node(), CATALOG, TABLE) is None  # too big


# --- properties -------------------------------------------------------------------------------

MODELS = (A100, H100, "A100-40GB", "A30")
PROFILES = {m: [p.name for p in WITH_A30.get(m).mig_profiles] for m in MODELS}  # type: ignore[union-attr]

Fleet = tuple[list[packing.Demand], list[packing.Node]]


@st.composite
def fleets(draw: st.DrawFn, max_demands: int = 14) -> Fleet:
    models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True))
    nodes = [
        packing.Node(
            f"n{i}",
            draw(st.sampled_from(models)),
            draw(st.sampled_from([1, 2, 4, 8])),
            draw(st.booleans()),
            draw(st.sampled_from([0, 0, 1, 2])),
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    demands = []
    for i in range(draw(st.integers(0, max_demands))):
        model = draw(st.sampled_from(models))
        if draw(st.booleans()):
            demands.append(mig(f"d{i:02d}", draw(st.sampled_from(PROFILES[model])), model))
        else:
            demands.append(packing.Demand(f"d{i:02d}", model, draw(st.sampled_from([1, 2, 4]))))
    return demands, nodes


def _check(demands: list[packing.Demand], nodes: list[packing.Node], p: packing.Packing) -> None:
    by_name = {n.name: n for n in nodes}
    placed: collections.Counter[str] = collections.Counter()
    homes: dict[str, set[str]] = collections.defaultdict(set)
    assert set(p.hosts) == set(by_name)
    for name, hosted in p.hosts.items():
        node = by_name[name]
        assert len(hosted) <= node.gpus  # never more GPUs than the node has
        assert sum(h.kind == "pinned" for h in hosted) == min(node.pinned_gpus, node.gpus)
        for h in hosted:
            assert h.kind in {"pinned", "whole", "mig"}
            if h.kind == "mig":
                assert node.mig_capable and h.instances and h.demand is None
                gpu = WITH_A30.get(node.gpu_model)
                assert gpu is not None
                taken: set[int] = set()
                for i in h.instances:
                    where = TABLE.placements(gpu, gpu.require_mig_profile(i.profile))
                    assert i.start_slice in where.start_slices
                    assert i.memory_slices == where.memory_slices
                    span = set(where.span(i.start_slice))
                    assert not span & taken and max(span) < where.gpu_memory_slices
                    taken |= span
                    placed[i.key] += 1
                for profile, count in collections.Counter(i.profile for i in h.instances).items():
                    assert count <= gpu.require_mig_profile(profile).max_instances
            elif h.kind == "whole":
                assert h.demand is not None and not h.instances
                placed[h.demand] += 1
                homes[h.demand].add(name)
            else:
                assert h.demand is None and not h.instances
    unplaced = collections.Counter(u.demand.key for u in p.unplaced)
    assert all(u.reason for u in p.unplaced)
    for d in demands:
        # Placed (whole: all its GPUs on one node of its model; MIG: once) or listed with why.
        if unplaced[d.key]:
            assert unplaced[d.key] == 1 and placed[d.key] == 0
        elif d.mig_profile is None:
            assert placed[d.key] == d.gpus and len(homes[d.key]) == 1
            assert by_name[next(iter(homes[d.key]))].gpu_model == d.gpu_model
        else:
            assert placed[d.key] == 1
    for model, total in p.gpus_total_by_model.items():
        of_model = [n for n in nodes if n.gpu_model == model]
        hosted_gpus = sum(len(p.hosts[n.name]) for n in of_model)
        assert total == sum(n.gpus for n in of_model)
        assert p.gpus_used_by_model[model] == hosted_gpus <= total
        assert p.gpus_freed_by_model[model] + p.gpus_used_by_model[model] == total
        assert p.gpus_used_by_model[model] >= p.lower_bound_gpus[model]
        empty = sum(1 for n in of_model if not p.hosts[n.name])
        assert p.nodes_freed_by_model[model] == empty
    assert p.gpus_freed + p.gpus_used == p.gpus_total == sum(n.gpus for n in nodes)
    assert p.algorithm == "first-fit decreasing"


@settings(max_examples=300, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_a_packing_never_overpacks_and_never_frees_a_gpu_in_use(
    fleet: Fleet, rnd: random.Random
) -> None:
    demands, nodes = fleet
    packed = packing.pack(demands, nodes, WITH_A30, TABLE)
    _check(demands, nodes, packed)
    # The same packing whatever the order the demands and nodes come in.
    shuffled, renodes = list(demands), list(nodes)
    rnd.shuffle(shuffled)
    rnd.shuffle(renodes)
    assert packing.pack(shuffled, renodes, WITH_A30, TABLE) == packed


@settings(max_examples=200, deadline=None)
@given(fleets(max_demands=10))
def test_first_fit_decreasing_is_at_most_one_gpu_from_the_optimum_on_small_fleets(
    fleet: Fleet,
) -> None:
    demands, nodes = fleet
    packed = packing.pack(demands, nodes, WITH_A30, TABLE)
    best = packing.exact_min_gpus(demands, nodes, WITH_A30, TABLE)
    if best is None:
        # No packing places everything, so this one cannot either.
        assert packed.unplaced
        return
    assert packed.unplaced == ()  # whatever some packing can place, this one places
    assert sum(packed.lower_bound_gpus.values()) <= best <= packed.gpus_used <= best + 1
