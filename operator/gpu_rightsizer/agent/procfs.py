"""Each GPU process's pod cgroup, read from ``<proc root>/<pid>/cgroup``.

With ``hostPID: true`` the agent's own ``/proc`` shows the host's processes (NVML reports host
PIDs); without it, the host's ``/proc`` mounted read-only (``--proc-root``) does the same. A
PID whose file cannot be read (it exited between NVML's list and this read, or ``/proc`` is not
the host's) is left out, and its process is counted as unresolved.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

from gpu_rightsizer.nodeusage import cgroups


def owners(proc_root: pathlib.Path, pids: Iterable[int]) -> dict[int, cgroups.PodCgroup | None]:
    """PID -> its pod cgroup (None: not in a pod), for each PID whose cgroup file reads."""
    out: dict[int, cgroups.PodCgroup | None] = {}
    for pid in pids:
        try:
            text = (proc_root / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        out[pid] = cgroups.parse(text)
    return out
