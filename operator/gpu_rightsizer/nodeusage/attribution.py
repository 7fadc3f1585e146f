"""Whose processes hold each device, and how much of its memory each container is charged.

The driver lists the processes that hold a context on a device, with their host PIDs and the
memory each has allocated; ``/proc/<pid>/cgroup`` gives each PID's pod UID and container ID
(:mod:`.cgroups`); the pod list gives each UID's namespace and name and each container ID's
name. A container is charged the sum of its processes' memory on a device, so two pods that
time-slice (or share through MPS) one GPU each get their own figure, not the whole GPU's.

Where the driver does not report a process's memory (``usedGpuMemory`` unavailable, as on MIG
instances read without privileges), its container is charged the device's whole used memory and
marked so: the figure is then an upper bound, never an under-count. A process whose pod UID is
not in the pod list yet (a pod created since the list was read) is counted as unresolved, and
the caller refreshes the list; a process outside any pod is the node's (host processes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gpu_rightsizer.nodeusage import cgroups, readings


@dataclasses.dataclass(frozen=True)
class PodIdentity:
    """A pod on this node: its name and its containers' names by runtime ID."""

    namespace: str
    name: str
    containers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ContainerUse:
    """What one container holds on one device."""

    namespace: str
    pod: str
    container: str
    """The container's name; ``""`` where its ID is not (yet) in the pod's status."""
    memory_used_bytes: int | None
    processes: int
    unreported_processes: int = 0
    """Processes whose memory the driver did not report; if any, ``memory_used_bytes`` is the
    whole device's used memory (an upper bound)."""
    sm_utilization_ratio: float | None = None

    @property
    def charged_whole_device(self) -> bool:
        return self.unreported_processes > 0


@dataclasses.dataclass(frozen=True)
class DeviceUse:
    """A device and the containers using it."""

    device: readings.Device
    containers: tuple[ContainerUse, ...] = ()
    host_processes: int = 0
    """Processes outside any pod."""
    host_memory_used_bytes: int | None = 0
    unresolved_processes: int = 0
    """Processes in a pod that is not in the pod list, or whose cgroup could not be read."""

    @property
    def pods(self) -> int:
        return len({(c.namespace, c.pod) for c in self.containers})


@dataclasses.dataclass
class _Tally:
    memory_bytes: int = 0
    processes: int = 0
    unreported: int = 0
    sm_ratio: float | None = None

    def add(self, process: readings.Process) -> None:
        self.processes += 1
        if process.used_memory_bytes is None:
            self.unreported += 1
        else:
            self.memory_bytes += process.used_memory_bytes
        if process.sm_utilization_ratio is not None:
            self.sm_ratio = (self.sm_ratio or 0.0) + process.sm_utilization_ratio


def attribute(
    device: readings.Device,
    owners: Mapping[int, cgroups.PodCgroup | None],
    pods: Mapping[str, PodIdentity],
) -> DeviceUse:
    """Charge ``device``'s processes to their containers.

    ``owners`` maps a host PID to its pod cgroup (None: not in a pod); a PID missing from it
    could not be read (it exited, or ``/proc`` is not the host's) and is unresolved.
    """
    tallies: dict[tuple[str, str, str], _Tally] = {}
    host = _Tally()
    unresolved = 0
    for process in device.processes or ():
        if process.pid not in owners:
            unresolved += 1
            continue
        owner = owners[process.pid]
        if owner is None:
            host.add(process)
            continue
        pod = pods.get(owner.pod_uid)
        if pod is None:
            unresolved += 1
            continue
        name = pod.containers.get(owner.container_id or "", "")
        tallies.setdefault((pod.namespace, pod.name, name), _Tally()).add(process)
    containers = tuple(
        ContainerUse(
            namespace=namespace,
            pod=pod_name,
            container=container,
            memory_used_bytes=(
                device.memory_used_bytes if tally.unreported else tally.memory_bytes
            ),
            processes=tally.processes,
            unreported_processes=tally.unreported,
            sm_utilization_ratio=None if tally.sm_ratio is None else min(tally.sm_ratio, 1.0),
        )
        for (namespace, pod_name, container), tally in sorted(tallies.items())
    )
    return DeviceUse(
        device=device,
        containers=containers,
        host_processes=host.processes,
        host_memory_used_bytes=None if host.unreported else host.memory_bytes,
        unresolved_processes=unresolved,
    )


def attribute_all(
    reading: readings.NodeReading,
    owners: Mapping[int, cgroups.PodCgroup | None],
    pods: Mapping[str, PodIdentity],
) -> tuple[DeviceUse, ...]:
    """:func:`attribute` for every device of ``reading``, in its order."""
    return tuple(attribute(device, owners, pods) for device in reading.devices)


def unknown_pods(
    reading: readings.NodeReading,
    owners: Mapping[int, cgroups.PodCgroup | None],
    pods: Mapping[str, PodIdentity],
) -> frozenset[str]:
    """Pod UIDs that hold a device but are not in ``pods``: the pod list needs a refresh."""
    return frozenset(
        owner.pod_uid
        for device in reading.devices
        for process in device.processes or ()
        if (owner := owners.get(process.pid)) is not None and owner.pod_uid not in pods
    )


def pids(reading: readings.NodeReading) -> frozenset[int]:
    """Every host PID that holds a context on any device."""
    return frozenset(p.pid for d in reading.devices for p in d.processes or ())
