"""What the node agent knows about a node's GPUs, and whose they are: the agent's pure core.

``readings`` holds the typed shape of one NVML reading (GPUs, MIG instances, processes, and the
fields the driver could not give, each with its NVML error code); ``cgroups`` parses a process's
``/proc/<pid>/cgroup`` text into the pod UID and container ID it belongs to (cgroup v1 and v2,
systemd and cgroupfs drivers, containerd, CRI-O and Docker path shapes); ``attribution`` charges
each device's memory to the containers whose processes hold it; ``exposition`` turns all of it
into metric samples (DCGM's names, so a Prometheus that reads dcgm-exporter needs nothing new,
plus per-container series).

It never does I/O: it never reads ``/proc``, never calls NVML, never talks to the API server,
never serves HTTP and never reads the clock (callers pass every input in).
"""
