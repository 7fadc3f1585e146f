"""The pod and container a process belongs to, from the text of ``/proc/<pid>/cgroup``.

The kubelet puts every container in a cgroup below its pod's, and the pod's cgroup carries the
pod UID. The path shapes differ by cgroup version and driver:

- cgroup v2 has one line, ``0::<path>``; cgroup v1 one line per hierarchy
  (``4:memory:<path>``, ``1:name=systemd:<path>``...), the pod's path the same in each;
- the systemd driver writes the UID with underscores in a slice,
  ``kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/``, and the
  container as a scope named by the runtime: ``cri-containerd-<id>.scope`` (containerd),
  ``crio-<id>.scope`` (CRI-O), ``docker-<id>.scope`` (cri-dockerd);
- the cgroupfs driver writes ``kubepods/burstable/pod<uid>/<id>`` (Guaranteed pods have no QoS
  level: ``kubepods/pod<uid>/<id>``);
- read from inside another cgroup namespace the path is relative (``/../../kubepods...``), and
  nested setups (kind, k3s) put more directories in front. Only the part from ``pod<uid>`` on
  is read, so both work.

A process outside any pod (a host process, the driver's persistence daemon) has no pod; a
process of a pod's sandbox or of CRI-O's ``conmon`` has the pod but no container ID.
"""

from __future__ import annotations

import dataclasses
import re

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD = re.compile(rf"(?:^|[/-])pod(?P<uid>{_UID})(?:\.slice)?(?=/|$)")
_CONTAINER = re.compile(
    r"^(?:(?P<runtime>cri-containerd|crio|docker|containerd)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_RUNTIMES = {"cri-containerd": "containerd", "containerd": "containerd", "crio": "cri-o"}


@dataclasses.dataclass(frozen=True)
class PodCgroup:
    """The pod a process runs in: its UID (with dashes) and, where the path names one, the
    container's runtime ID (64 hex characters) and runtime (``containerd``, ``cri-o``,
    ``docker``, or None for a bare cgroupfs ID)."""

    pod_uid: str
    container_id: str | None = None
    runtime: str | None = None


def _paths(text: str) -> list[str]:
    """The cgroup paths of ``text``: the v2 line first, then the v1 hierarchies in order."""
    unified: list[str] = []
    legacy: list[str] = []
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        (unified if hierarchy == "0" and controllers == "" else legacy).append(path)
    return unified + legacy


def parse(text: str) -> PodCgroup | None:
    """The pod (and container) of a process whose ``/proc/<pid>/cgroup`` reads ``text``; None
    when no hierarchy puts it in a pod."""
    for path in _paths(text):
        match = _POD.search(path)
        if match is None:
            continue
        uid = match.group("uid").replace("_", "-")
        rest = [part for part in path[match.end() :].split("/") if part]
        if not rest:
            return PodCgroup(uid)
        container = _CONTAINER.match(rest[0])
        if container is None:
            return PodCgroup(uid)
        runtime = container.group("runtime")
        return PodCgroup(
            uid, container.group("id"), _RUNTIMES.get(runtime, runtime) if runtime else None
        )
    return None


def container_id(status_id: str) -> str | None:
    """The bare ID of a pod status' ``containerID`` (``containerd://<id>``, ``cri-o://<id>``,
    ``docker://<id>``); None when it is not one."""
    _, sep, rest = status_id.partition("://")
    candidate = rest if sep else status_id
    return candidate if re.fullmatch(r"[0-9a-f]{64}", candidate) else None
