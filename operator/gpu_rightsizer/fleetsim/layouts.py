"""Where the fleet runs: GPUs (or MIG instances) per replica, nodes, pod names, UUIDs.

Each workload is laid out on its own: replicas are packed onto 8-GPU nodes of its GPU model (or,
for MIG, onto GPU instances, as many per GPU as the profile allows), so changing one workload
never moves another's series. Names are deterministic for the fleet's seed:

- pods are named as the ReplicaSet controller names them: ``<deployment>-<pod-template-hash>-
  <suffix>``, 10 and 5 characters from Kubernetes' safe alphabet;
- nodes ``<gpu model>-<5 chars>-<n>``; GPU UUIDs ``GPU-xxxxxxxx-xxxx-…`` like NVML's.

A caller may give the pods (and the nodes they run on) instead: the live exporter does when the
pods really exist and got random names from kube-controller-manager.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gpu_rightsizer.fleetsim import fleets, signals
from gpu_rightsizer.models import gpus

GPUS_PER_NODE = 8
# k8s.io/apimachinery/pkg/util/rand: the alphabet of generated names (no vowels, no 0/1/3).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# GPU instance ids NVIDIA's driver hands out first for each compute-slice size (7g is 0).
_FIRST_INSTANCE_ID = {7: 0, 4: 1, 3: 1, 2: 3, 1: 7}


@dataclasses.dataclass(frozen=True)
class GpuSlot:
    """One GPU, or one MIG instance on a GPU, as a replica sees it."""

    index: int  # the `gpu` label: the GPU's index on its node
    uuid: str  # the physical GPU's UUID (MIG instances share it)
    hostname: str
    node_ip: str
    memory_bytes: int  # usable framebuffer (nvidia-smi / -lgip): the GPU's or the instance's
    compute_fraction: float  # 1 for a whole GPU, the instance's SMs / the GPU's for MIG
    mig_profile: str | None = None
    instance_id: int | None = None


@dataclasses.dataclass(frozen=True)
class Replica:
    """One pod of a workload and the GPUs it holds."""

    index: int
    pod: str
    pod_ip: str
    node: str
    gpus: tuple[GpuSlot, ...]


@dataclasses.dataclass(frozen=True)
class Placement:
    """A workload laid out: its GPU model from the catalog and every replica."""

    workload: fleets.Workload
    gpu: gpus.GpuModel
    mig: gpus.MigProfile | None
    template_hash: str
    replicas: tuple[Replica, ...]

    @property
    def slot_memory_bytes(self) -> int:
        return self.gpu.slot_memory_bytes(self.mig.name if self.mig else None)


def safe_name(seed: int, length: int, *parts: object) -> str:
    """``length`` characters of the Kubernetes safe alphabet, fixed by ``seed`` and ``parts``."""
    value = signals.key(seed, *parts)
    chars: list[str] = []
    for _ in range(length):
        value, digit = divmod(value, len(SAFE_ALPHABET))
        if value == 0:
            value = signals.key(seed, *parts, len(chars))
        chars.append(SAFE_ALPHABET[digit])
    return "".join(chars)


def pod_names(seed: int, workload: fleets.Workload, count: int | None = None) -> tuple[str, ...]:
    """The names the ReplicaSet controller could give this Deployment's pods."""
    template = safe_name(seed, 10, "template", workload.namespace, workload.name)
    return tuple(
        f"{workload.name}-{template}-{safe_name(seed, 5, 'pod', *workload.key, i)}"
        for i in range(workload.replicas if count is None else count)
    )


def gpu_uuid(seed: int, hostname: str, index: int) -> str:
    digits = f"{signals.key(seed, 'uuid', hostname, index):016x}"
    more = f"{signals.key(seed, 'uuid2', hostname, index):016x}"
    return f"GPU-{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{more[:4]}-{more[4:16]}"


def _ip(prefix: str, seed: int, *parts: object) -> str:
    value = signals.key(seed, "ip", *parts)
    return f"{prefix}.{(value >> 8) % 250 + 1}.{value % 250 + 2}"


def dcgm_model_name(gpu: gpus.GpuModel) -> str:
    """DCGM's modelName label for a GPU model (NVML's product name: the alias with spaces)."""
    return next((a for a in gpu.aliases if " " in a), gpu.display_name)


def product_label(gpu: gpus.GpuModel) -> str:
    """GPU Feature Discovery's ``nvidia.com/gpu.product`` value for a GPU model."""
    return next(
        (a for a in gpu.aliases if " " not in a and not a.endswith("-SHARED")),
        gpu.display_name.replace(" ", "-"),
    )


def resolve(
    catalog: gpus.Catalog, workload: fleets.Workload
) -> tuple[gpus.GpuModel, gpus.MigProfile | None]:
    """The workload's GPU model and MIG profile from the catalog, or a FleetError."""
    where = f"workload {workload.namespace}/{workload.name}"
    gpu = catalog.get(workload.gpu_model) or catalog.resolve(workload.gpu_model)
    if gpu is None:
        known = ", ".join(catalog.ids)
        raise fleets.FleetError(f"{where}: unknown GPU model {workload.gpu_model!r} ({known})")
    if workload.mig_profile is None:
        return gpu, None
    mig = gpu.mig_profile(workload.mig_profile)
    if mig is None:
        offered = ", ".join(p.name for p in gpu.mig_profiles) or "none: no MIG on this GPU"
        raise fleets.FleetError(
            f"{where}: {gpu.id} has no MIG profile {workload.mig_profile!r} ({offered})"
        )
    return gpu, mig


def place(
    seed: int,
    catalog: gpus.Catalog,
    workload: fleets.Workload,
    pods: Sequence[str] | None = None,
    nodes: Sequence[str] | None = None,
) -> Placement:
    """Lay out one workload. ``pods`` (and the ``nodes`` they run on) replace the simulated ones;
    there is then one replica per pod."""
    gpu, mig = resolve(catalog, workload)
    names = tuple(pods) if pods is not None else pod_names(seed, workload)
    if nodes is not None and len(nodes) != len(names):
        raise ValueError("give one node per pod")
    slug = gpu.id.lower()
    pool = safe_name(seed, 5, "nodes", *workload.key)
    template = safe_name(seed, 10, "template", *workload.key)
    memory_bytes = gpu.slot_memory_bytes(mig.name if mig else None)
    per_gpu = 1 if mig is None else mig.max_instances
    per_node = GPUS_PER_NODE * per_gpu if mig else GPUS_PER_NODE // workload.gpus_per_replica
    used_on_node: dict[str, int] = {}
    replicas = []
    for i, pod in enumerate(names):
        node = nodes[i] if nodes is not None else f"{slug}-{pool}-{i // per_node}"
        node_ip = _ip("192.168", seed, node)
        first = used_on_node.get(node, 0)
        if mig is None:
            used_on_node[node] = first + workload.gpus_per_replica
            slots = tuple(
                GpuSlot(
                    index=(first + g) % GPUS_PER_NODE,
                    uuid=gpu_uuid(seed, node, (first + g) % GPUS_PER_NODE),
                    hostname=node,
                    node_ip=node_ip,
                    memory_bytes=memory_bytes,
                    compute_fraction=1.0,
                )
                for g in range(workload.gpus_per_replica)
            )
        else:
            used_on_node[node] = first + 1
            index = (first // per_gpu) % GPUS_PER_NODE
            slots = (
                GpuSlot(
                    index=index,
                    uuid=gpu_uuid(seed, node, index),
                    hostname=node,
                    node_ip=node_ip,
                    memory_bytes=memory_bytes,
                    compute_fraction=gpu.compute_share(mig.name),
                    mig_profile=mig.name,
                    instance_id=_FIRST_INSTANCE_ID[mig.compute_slices] + first % per_gpu,
                ),
            )
        replicas.append(
            Replica(index=i, pod=pod, pod_ip=_ip("10.244", seed, pod), node=node, gpus=slots)
        )
    return Placement(
        workload=workload, gpu=gpu, mig=mig, template_hash=template, replicas=tuple(replicas)
    )
