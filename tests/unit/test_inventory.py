"""The GPU inventory read from Node and Pod objects (manifests/nodes.py, models/inventory.py).

The nodes are those of the simulated kwok fleet (hack/devcluster/nodes.py), which carry the
labels GPU Feature Discovery writes and the extended resources the NVIDIA device plugin
advertises, under the none, mixed and single MIG strategies.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest
from hack.devcluster import nodes as kwok_nodes

from gpu_rightsizer import catalogs
from gpu_rightsizer.manifests import nodes
from gpu_rightsizer.models import inventory

CATALOG = catalogs.default_catalog()
PRODUCT = "nvidia.com/gpu.product"


def build(
    node_list: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]] = ()
) -> inventory.Inventory:
    return nodes.build(node_list, pods, CATALOG, source="test nodes")


def one(node: dict[str, Any], pods: Sequence[dict[str, Any]] = ()) -> inventory.NodeGPUs:
    found = build([node], pods).nodes
    assert len(found) == 1, found
    return found[0]


def pod(
    node: str | None,
    phase: str = "Running",
    *,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    containers: int = 1,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "resources": resources} for i in range(containers)]
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p-{node}-{phase}", "namespace": "ml"},
        "spec": spec,
        "status": {"phase": phase},
    }


def relabel(node: dict[str, Any], **labels: str) -> dict[str, Any]:
    changed = copy.deepcopy(node)
    changed["metadata"]["labels"].update({k.replace("_", "/", 1): v for k, v in labels.items()})
    return changed


# ---------------------------------------------------------------------------------------------
# products and strategies


def test_the_default_fleet_resolves_every_product_to_its_catalog_id() -> None:
    stock = build(kwok_nodes.default_fleet())
    by_name = {n.name: n for n in stock.nodes}
    # The CPU-only node has no GPU resources: it is not in the inventory.
    assert "cpu-0" not in by_name
    assert {name: n.gpu_model for name, n in by_name.items()} == {
        "gpu-h100-0": "H100-80GB",
        "gpu-h100-mig-0": "H100-80GB",
        "gpu-h200-0": "H200-141GB",
        "gpu-a100-0": "A100-80GB",
        "gpu-a100-mig-0": "A100-80GB",
        "gpu-l40s-0": "L40S",
        "gpu-l4-0": "L4",
    }
    assert by_name["gpu-h100-0"].product == "NVIDIA-H100-80GB-HBM3"
    assert stock.gpu_models() == {"H100-80GB", "H200-141GB", "A100-80GB", "L40S", "L4"}
    assert stock.describe() == "A100-80GB, H100-80GB, H200-141GB, L4, L40S"


@pytest.mark.parametrize("model", sorted(kwok_nodes.GPU_MODELS))
def test_every_simulated_product_resolves(model: str) -> None:
    assert one(kwok_nodes.gpu_node("n", model, 2)).gpu_model == model


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        ("NVIDIA-L4-SHARED", "L4"),  # time-slicing appends -SHARED
        ("NVIDIA L4", "L4"),
        ("nvidia-h100-80gb-hbm3", "H100-80GB"),
        ("NVIDIA-H100-PCIe", "H100-PCIe-80GB"),
        ("Tesla-T4", "T4"),
    ],
)
def test_gfd_product_aliases_resolve_to_catalog_ids(product: str, expected: str) -> None:
    node = relabel(kwok_nodes.gpu_node("n", "L4", 4), **{"nvidia.com_gpu.product": product})
    found = one(node)
    assert (found.product, found.gpu_model) == (product, expected)


def test_whole_gpus_under_the_none_strategy() -> None:
    found = one(kwok_nodes.gpu_node("h100", "H100-80GB", 8))
    assert found.mig_strategy == inventory.MigStrategy.NONE
    assert (found.gpu_count, found.whole_allocatable, found.whole_free) == (8, 8, 8)
    assert dict(found.mig_allocatable) == {} and found.mig_config is None
    # MIG-capable hardware (nvidia.com/mig.capable=true) even with no slices carved.
    assert found.mig_capable is True
    assert found.schedulable is True


def test_mixed_strategy_gives_whole_gpus_and_mig_profile_counts() -> None:
    node = next(n for n in kwok_nodes.default_fleet() if n["metadata"]["name"] == "gpu-h100-mig-0")
    found = one(node)
    assert found.mig_strategy == inventory.MigStrategy.MIXED
    assert found.gpu_model == "H100-80GB"
    assert found.gpu_count == 8
    # Four GPUs left whole, four carved into 2 x 3g.40gb and 7 x 1g.10gb each.
    assert (found.whole_allocatable, found.whole_free) == (4, 4)
    assert dict(found.mig_allocatable) == {"3g.40gb": 4, "1g.10gb": 14}
    assert dict(found.mig_free) == {"3g.40gb": 4, "1g.10gb": 14}
    assert found.mig_capable is True
    assert found.mig_config == "custom"


def test_single_strategy_counts_slices_of_the_one_profile() -> None:
    node = kwok_nodes.gpu_node(
        "a100-single", "A100-80GB", 8, mig={"1g.10gb": 56}, mig_strategy="single"
    )
    labels = node["metadata"]["labels"]
    assert labels[PRODUCT] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "56"
    # nvidia.com/gpu counts MIG instances here, not whole GPUs.
    found = one(node, [pod("a100-single", requests={"nvidia.com/gpu": "3"})])
    assert found.gpu_model == "A100-80GB"
    assert found.product == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"
    assert found.mig_strategy == inventory.MigStrategy.SINGLE
    assert (found.whole_allocatable, found.whole_free) == (0, 0)
    assert dict(found.mig_allocatable) == {"1g.10gb": 56}
    assert dict(found.mig_free) == {"1g.10gb": 53}
    assert found.mig_capable is True
    stock = build([node])
    assert stock.offers_mig("A100-80GB", "1g.10gb")
    assert not stock.has_whole("A100-80GB", 1)


# ---------------------------------------------------------------------------------------------
# free capacity: allocatable minus the requests of live pods bound to the node


def test_free_is_allocatable_minus_requests_of_live_pods_on_the_node() -> None:
    node = kwok_nodes.gpu_node("h100", "H100-80GB", 8, mig={"1g.10gb": 7}, mig_gpus=1)
    pods = [
        pod("h100", requests={"nvidia.com/gpu": "2"}),
        pod("h100", "Pending", requests={"nvidia.com/gpu": "1"}),  # bound, starting: counts
        pod("h100", limits={"nvidia.com/gpu": "1"}),  # limits alone are the request
        pod("h100", requests={"nvidia.com/mig-1g.10gb": "1"}, containers=3),
        pod("h100", requests={"cpu": "4", "memory": "16Gi"}),  # no GPU
    ]
    found = one(node, pods)
    assert (found.whole_allocatable, found.whole_free) == (7, 3)
    assert (found.mig_allocatable["1g.10gb"], found.mig_free["1g.10gb"]) == (7, 4)


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_free_their_gpus(phase: str) -> None:
    node = kwok_nodes.gpu_node("h100", "H100-80GB", 8)
    assert one(node, [pod("h100", phase, requests={"nvidia.com/gpu": "8"})]).whole_free == 8


def test_unbound_pods_and_pods_on_other_nodes_do_not_count() -> None:
    node = kwok_nodes.gpu_node("h100", "H100-80GB", 8)
    pods = [
        pod(None, "Pending", requests={"nvidia.com/gpu": "4"}),  # not scheduled yet
        pod("other-node", requests={"nvidia.com/gpu": "4"}),
    ]
    assert one(node, pods).whole_free == 8


def test_free_never_goes_below_zero() -> None:
    node = kwok_nodes.gpu_node("l4", "L4", 2)
    found = one(node, [pod("l4", requests={"nvidia.com/gpu": "5"})])
    assert (found.whole_allocatable, found.whole_free) == (2, 0)
    assert not build([node], [pod("l4", requests={"nvidia.com/gpu": "5"})]).free_whole("L4", 1)


# ---------------------------------------------------------------------------------------------
# what the inventory answers


def test_inventory_queries_per_model_count_and_profile() -> None:
    stock = build(
        [
            kwok_nodes.gpu_node("h100-a", "H100-80GB", 8),
            kwok_nodes.gpu_node("h100-b", "H100-80GB", 4, mig={"3g.40gb": 2}, mig_gpus=1),
            kwok_nodes.gpu_node("l4", "L4", 8),
        ],
        [
            pod("h100-a", requests={"nvidia.com/gpu": "7"}),
            pod("h100-b", requests={"nvidia.com/mig-3g.40gb": "2"}),
        ],
    )
    # A replica stays on one node: 8 whole H100s on h100-a, one of them free; 3 free on h100-b.
    assert stock.has_whole("H100-80GB", 8) and not stock.free_whole("H100-80GB", 8)
    assert stock.free_whole("H100-80GB", 3) and not stock.free_whole("H100-80GB", 4)
    assert stock.offers_mig("H100-80GB", "3g.40gb") and not stock.free_mig("H100-80GB", "3g.40gb")
    assert not stock.offers_mig("H100-80GB", "1g.10gb")
    assert stock.can_repartition("H100-80GB") and stock.free_to_repartition("H100-80GB")
    # An L4 has no MIG, whatever a label says.
    assert not stock.can_repartition("L4")
    assert not stock.has_whole("A100-80GB", 1)


def test_a_node_that_is_not_mig_capable_cannot_be_repartitioned() -> None:
    node = relabel(
        kwok_nodes.gpu_node("a100", "A100-80GB", 8), **{"nvidia.com_mig.capable": "false"}
    )
    found = one(node)
    assert found.mig_capable is False
    assert not build([node]).can_repartition("A100-80GB")
    l4 = relabel(kwok_nodes.gpu_node("l4", "L4", 8), **{"nvidia.com_mig.capable": "true"})
    assert one(l4).mig_capable is False


def test_unschedulable_nodes_are_ignored_by_the_queries() -> None:
    cordoned = kwok_nodes.gpu_node("h100", "H100-80GB", 8, mig={"1g.10gb": 7}, mig_gpus=1)
    cordoned["spec"]["unschedulable"] = True
    stock = build([cordoned])
    (found,) = stock.nodes
    assert found.schedulable is False
    assert found.whole_allocatable == 7  # still listed, with what it has
    assert not stock.has_whole("H100-80GB", 1)
    assert not stock.free_whole("H100-80GB", 1)
    assert not stock.offers_mig("H100-80GB", "1g.10gb")
    assert not stock.free_mig("H100-80GB", "1g.10gb")
    assert not stock.can_repartition("H100-80GB")
    assert not stock.free_to_repartition("H100-80GB")
    # Uncordoned, the same node answers.
    cordoned["spec"]["unschedulable"] = False
    assert build([cordoned]).has_whole("H100-80GB", 7)


def test_nodes_without_gpu_resources_are_skipped() -> None:
    no_gpus = kwok_nodes.gpu_node("drained", "H100-80GB", 8)
    no_gpus["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    unlabelled = kwok_nodes.gpu_node("bare", "H100-80GB", 8)
    del unlabelled["metadata"]["labels"][PRODUCT]
    stock = build(
        [kwok_nodes.cpu_node("cpu-0"), no_gpus, unlabelled, {"metadata": {"name": "empty"}}]
    )
    assert stock.nodes == ()
    assert stock.describe() == "no GPU nodes"


def test_an_unknown_product_keeps_gpu_model_none() -> None:
    node = relabel(
        kwok_nodes.gpu_node("odd", "H100-80GB", 8),
        **{"nvidia.com_gpu.product": "NVIDIA-Mystery-9000"},
    )
    stock = build([node])
    (found,) = stock.nodes
    assert found.product == "NVIDIA-Mystery-9000"
    assert found.gpu_model is None
    assert found.whole_allocatable == 8
    assert found.mig_capable is False
    assert stock.gpu_models() == frozenset()
    assert not stock.has_whole("H100-80GB", 1)
