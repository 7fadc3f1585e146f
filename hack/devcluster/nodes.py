"""kwok Node manifests that look like GPU nodes to the scheduler (the simulated fleet's nodes).

Each node carries the labels NVIDIA's GPU Feature Discovery puts on real GPU nodes
(`nvidia.com/gpu.product`, `nvidia.com/gpu.memory` in MiB, `nvidia.com/gpu.count`,
`nvidia.com/mig.strategy`, per-profile `nvidia.com/mig-<profile>.*`) and the extended resources
the NVIDIA device plugin advertises: `nvidia.com/gpu` for whole GPUs and, under the mixed MIG
strategy, `nvidia.com/mig-<profile>` for MIG slices. kube-scheduler places pods on them by those
resources, and kwok (which manages every node annotated `kwok.x-k8s.io/node: fake`) makes the
bound pods Running.

The fake nodes carry no taint: this cluster has no real nodes, so there is nothing to keep pods
away from, and test or demo pods need no toleration. (kwok's own examples taint fake nodes
`kwok.x-k8s.io/node=fake:NoSchedule` to keep real workloads off them in a real cluster; pass
`taints=` to `gpu_node` to do the same.)

Extend the fleet with `gpu_node(...)` / `cpu_node(...)`, e.g. in a test:

    cluster.apply_nodes([gpu_node("gpu-b200-0", "B200", gpus=8)])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
FLEET_LABEL = "gpu-rightsizer.dev/simulated"


@dataclass(frozen=True)
class GpuModel:
    """What GPU Feature Discovery reports for one GPU model."""

    product: str  # nvidia.com/gpu.product
    memory_mib: int  # nvidia.com/gpu.memory: the usable framebuffer nvidia-smi reports
    family: str  # nvidia.com/gpu.family
    compute: tuple[int, int]  # nvidia.com/gpu.compute.major/minor
    mig_capable: bool
    # MIG profile -> (memory in MiB, SMs) of one instance, as `nvidia-smi mig -lgip` lists them
    # and GFD labels them (nvidia.com/mig-<p>.memory, nvidia.com/mig-<p>.multiprocessors).
    # `+me` profiles are left out: `+` cannot appear in a label key or resource name.
    mig_profiles: Mapping[str, tuple[int, int]] | None = None


# Keys are the catalog's GPU model ids; the sizes are the catalog's usable figures, whose sources
# are in operator/gpu_rightsizer/data/catalog.yaml (tests/unit/test_catalog.py keeps them equal).
_H100_80GB_MIG = {
    "1g.10gb": (9856, 16),
    "1g.20gb": (19968, 26),
    "2g.20gb": (19968, 32),
    "3g.40gb": (40192, 60),
    "4g.40gb": (40192, 64),
    "7g.80gb": (81152, 132),
}
_A100_80GB_MIG = {
    "1g.10gb": (9728, 14),
    "1g.20gb": (19968, 14),
    "2g.20gb": (19968, 28),
    "3g.40gb": (40192, 42),
    "4g.40gb": (40192, 56),
    "7g.80gb": (80896, 98),
}
GPU_MODELS: dict[str, GpuModel] = {
    "B200": GpuModel(
        "NVIDIA-B200",
        183359,
        "blackwell",
        (10, 0),
        True,
        {
            "1g.23gb": (20992, 18),
            "1g.45gb": (45312, 30),
            "2g.45gb": (45312, 36),
            "3g.90gb": (90624, 54),
            "4g.90gb": (90624, 72),
            "7g.180gb": (181248, 144),
        },
    ),
    "H200-141GB": GpuModel(
        "NVIDIA-H200",
        143771,
        "hopper",
        (9, 0),
        True,
        {
            "1g.18gb": (16384, 16),
            "1g.35gb": (33024, 26),
            "2g.35gb": (33024, 32),
            "3g.71gb": (71168, 60),
            "4g.71gb": (71168, 64),
            "7g.141gb": (143104, 132),
        },
    ),
    "H100-NVL-94GB": GpuModel(
        "NVIDIA-H100-NVL",
        95830,
        "hopper",
        (9, 0),
        True,
        {
            "1g.12gb": (11008, 16),
            "1g.24gb": (22144, 26),
            "2g.24gb": (22144, 32),
            "3g.47gb": (47488, 60),
            "4g.47gb": (47488, 64),
            "7g.94gb": (95360, 132),
        },
    ),
    "H100-80GB": GpuModel("NVIDIA-H100-80GB-HBM3", 81559, "hopper", (9, 0), True, _H100_80GB_MIG),
    "A100-80GB": GpuModel("NVIDIA-A100-SXM4-80GB", 81920, "ampere", (8, 0), True, _A100_80GB_MIG),
    "A100-PCIe-80GB": GpuModel(
        "NVIDIA-A100-80GB-PCIe", 81920, "ampere", (8, 0), True, _A100_80GB_MIG
    ),
    "A100-40GB": GpuModel(
        "NVIDIA-A100-SXM4-40GB",
        40960,
        "ampere",
        (8, 0),
        True,
        {
            "1g.5gb": (4864, 14),
            "1g.10gb": (9856, 14),
            "2g.10gb": (9856, 28),
            "3g.20gb": (19968, 42),
            "4g.20gb": (19968, 56),
            "7g.40gb": (40192, 98),
        },
    ),
    "L40S": GpuModel("NVIDIA-L40S", 46068, "ada-lovelace", (8, 9), False),
    "L4": GpuModel("NVIDIA-L4", 23034, "ada-lovelace", (8, 9), False),
    "A10G": GpuModel("NVIDIA-A10G", 23028, "ampere", (8, 6), False),
    "T4": GpuModel("Tesla-T4", 15360, "turing", (7, 5), False),
}

_PROFILE = re.compile(r"^(\d+)g\.(\d+)gb$")


def _profile_slices(profile: str) -> int:
    match = _PROFILE.match(profile)
    if match is None:
        raise ValueError(f"not a MIG profile name like 3g.40gb: {profile!r}")
    return int(match.group(1))


def _profile_figures(model: GpuModel, profile: str) -> tuple[int, int]:
    """(usable MiB, SMs) of one instance of a profile the model offers."""
    _profile_slices(profile)
    if not model.mig_profiles or profile not in model.mig_profiles:
        known = ", ".join(model.mig_profiles or ())
        raise ValueError(f"{model.product} has no MIG profile {profile!r} ({known})")
    return model.mig_profiles[profile]


def gpu_node(
    name: str,
    model: str,
    gpus: int,
    *,
    mig: Mapping[str, int] | None = None,
    mig_gpus: int = 0,
    mig_strategy: str | None = None,
    cpu: str = "96",
    memory: str = "1024Gi",
    pods: int = 110,
    instance_type: str | None = None,
    labels: Mapping[str, str] | None = None,
    taints: Iterable[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """A kwok Node with `gpus` GPUs of `model` (a key of GPU_MODELS).

    `mig` maps MIG profiles to the number of slices on the node (e.g. {"3g.40gb": 4}), carved
    out of `mig_gpus` of the GPUs. Under the mixed strategy (the default when `mig` is given)
    the other GPUs stay whole (`nvidia.com/gpu`) and the slices are `nvidia.com/mig-<profile>`;
    under the single strategy every GPU must be partitioned the same way and the slices are
    advertised as `nvidia.com/gpu`, with the product label suffixed `-MIG-<profile>` as GFD
    does.
    """
    if model not in GPU_MODELS:
        raise ValueError(f"unknown GPU model {model!r}; known: {', '.join(GPU_MODELS)}")
    spec = GPU_MODELS[model]
    mig = dict(mig or {})
    strategy = mig_strategy or ("mixed" if mig else "none")
    if strategy not in ("none", "single", "mixed"):
        raise ValueError(f"mig_strategy must be none, single or mixed, not {strategy!r}")
    if mig and not spec.mig_capable:
        raise ValueError(f"{model} does not support MIG")
    if mig and strategy == "none":
        raise ValueError("MIG slices need the single or mixed strategy")
    if mig and not mig_gpus:
        mig_gpus = gpus if strategy == "single" else max(1, gpus // 2)
    if mig_gpus > gpus:
        raise ValueError(f"mig_gpus ({mig_gpus}) exceeds gpus ({gpus})")
    for profile, count in mig.items():
        if count < 0:
            raise ValueError(f"negative count for MIG profile {profile}")
        _profile_figures(spec, profile)

    gfd: dict[str, str] = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": spec.product,
        "nvidia.com/gpu.memory": str(spec.memory_mib),
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.family": spec.family,
        "nvidia.com/gpu.compute.major": str(spec.compute[0]),
        "nvidia.com/gpu.compute.minor": str(spec.compute[1]),
        "nvidia.com/mig.capable": str(spec.mig_capable).lower(),
        "nvidia.com/mig.strategy": strategy,
    }
    resources: dict[str, str] = {}
    if strategy == "single" and mig:
        if len(mig) != 1:
            raise ValueError("the single MIG strategy allows one profile per node")
        ((profile, count),) = mig.items()
        gfd["nvidia.com/gpu.product"] = f"{spec.product}-MIG-{profile}"
        memory_mib, sms = _profile_figures(spec, profile)
        gfd["nvidia.com/gpu.memory"] = str(memory_mib)
        gfd["nvidia.com/gpu.multiprocessors"] = str(sms)
        gfd["nvidia.com/gpu.count"] = str(count)
        gfd["nvidia.com/gpu.slices.gi"] = str(_profile_slices(profile))
        gfd["nvidia.com/gpu.slices.ci"] = str(_profile_slices(profile))
        resources["nvidia.com/gpu"] = str(count)
    else:
        whole = gpus - mig_gpus
        if whole or not mig:
            resources["nvidia.com/gpu"] = str(whole)
        for profile, count in mig.items():
            slices = str(_profile_slices(profile))
            memory_mib, sms = _profile_figures(spec, profile)
            gfd[f"nvidia.com/mig-{profile}.count"] = str(count)
            gfd[f"nvidia.com/mig-{profile}.memory"] = str(memory_mib)
            gfd[f"nvidia.com/mig-{profile}.multiprocessors"] = str(sms)
            gfd[f"nvidia.com/mig-{profile}.slices.gi"] = slices
            gfd[f"nvidia.com/mig-{profile}.slices.ci"] = slices
            resources[f"nvidia.com/mig-{profile}"] = str(count)
    if mig:
        gfd["nvidia.com/mig.config"] = "custom"

    extra = dict(labels or {})
    if instance_type:
        extra["node.kubernetes.io/instance-type"] = instance_type
    return _node(
        name, {**gfd, **extra}, cpu=cpu, memory=memory, pods=pods, extended=resources, taints=taints
    )


def cpu_node(
    name: str,
    *,
    cpu: str = "32",
    memory: str = "128Gi",
    pods: int = 110,
    labels: Mapping[str, str] | None = None,
    taints: Iterable[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """A kwok Node without GPUs, for everything that needs none (e.g. the operator itself)."""
    return _node(
        name, dict(labels or {}), cpu=cpu, memory=memory, pods=pods, extended={}, taints=taints
    )


def _node(
    name: str,
    labels: dict[str, str],
    *,
    cpu: str,
    memory: str,
    pods: int,
    extended: Mapping[str, str],
    taints: Iterable[Mapping[str, str]],
) -> dict[str, Any]:
    resources = {
        "cpu": cpu,
        "memory": memory,
        "pods": str(pods),
        "ephemeral-storage": "1Ti",
        **extended,
    }
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                FLEET_LABEL: "true",
                **labels,
            },
        },
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
        },
    }
    taint_list = [dict(t) for t in taints]
    if taint_list:
        node["spec"]["taints"] = taint_list
    return node


def default_fleet() -> list[dict[str, Any]]:
    """The fleet `hack/cluster up` creates.

    Eight-GPU nodes of the common data-centre models, two of them partly partitioned with MIG
    (mixed strategy: two GPUs as 2 x 3g.40gb each, two as 7 x 1g.10gb each, four left whole),
    and one CPU-only node.
    """
    mixed = {"3g.40gb": 4, "1g.10gb": 14}
    return [
        gpu_node(
            "gpu-h100-0", "H100-80GB", 8, cpu="192", memory="2048Gi", instance_type="p5.48xlarge"
        ),
        gpu_node(
            "gpu-h100-mig-0",
            "H100-80GB",
            8,
            mig=mixed,
            mig_gpus=4,
            cpu="192",
            memory="2048Gi",
            instance_type="p5.48xlarge",
        ),
        gpu_node(
            "gpu-h200-0", "H200-141GB", 8, cpu="192", memory="2048Gi", instance_type="p5en.48xlarge"
        ),
        gpu_node(
            "gpu-a100-0", "A100-80GB", 8, cpu="96", memory="1152Gi", instance_type="p4de.24xlarge"
        ),
        gpu_node(
            "gpu-a100-mig-0",
            "A100-80GB",
            8,
            mig=mixed,
            mig_gpus=4,
            cpu="96",
            memory="1152Gi",
            instance_type="p4de.24xlarge",
        ),
        gpu_node("gpu-l40s-0", "L40S", 4, cpu="48", memory="384Gi", instance_type="g6e.12xlarge"),
        gpu_node("gpu-l4-0", "L4", 8, cpu="192", memory="768Gi", instance_type="g6.48xlarge"),
        cpu_node("cpu-0", labels={"node.kubernetes.io/instance-type": "m7i.8xlarge"}),
    ]


def node_list(nodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A v1 List of the nodes, ready for `kubectl apply -f -`."""
    return {"apiVersion": "v1", "kind": "List", "items": list(nodes)}
