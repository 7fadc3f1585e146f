"""A reading and its attribution as metric families: DCGM's names, then the agent's own.

**DCGM-compatible series.** The families the operator (and most dashboards) read from
dcgm-exporter, with its units and labels: ``DCGM_FI_DEV_FB_USED`` / ``_FREE`` / ``_RESERVED``
(MiB), ``DCGM_FI_DEV_GPU_UTIL`` and ``DCGM_FI_DEV_MEM_COPY_UTIL`` (percent),
``DCGM_FI_DEV_POWER_USAGE`` (W) and ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (mJ, a counter
since the driver loaded); labels ``gpu``, ``UUID`` (the physical GPU's), ``device``
(``nvidiaN``), ``modelName``, ``Hostname`` and, for a MIG instance, ``GPU_I_PROFILE`` and
``GPU_I_ID``. Like dcgm-exporter, a device used by pods has one series per container using it,
labelled ``namespace``, ``pod`` and ``container``; an unused device has one series without
them. A MIG instance has memory series only (NVML has no utilisation or power per instance);
power and energy stay on its parent GPU, without pod labels.

**Per-container series** (the agent's own; the operator prefers them for memory, so pods that
share a GPU are sized on their own use):

- ``gpu_rightsizer_process_memory_used_bytes``: the memory the container's processes hold on
  the device (the whole device's used memory where the driver did not report a process's);
- ``gpu_rightsizer_process_memory_unreported``: how many of its processes had no memory figure;
- ``gpu_rightsizer_processes``: its processes on the device;
- ``gpu_rightsizer_process_sm_utilization_ratio``: their share of the SMs, where the driver
  gives per-process utilisation;

each labelled with the device's labels plus ``namespace``, ``pod``, ``container``. Per device:
``gpu_rightsizer_gpu_pods`` (pods holding a context), ``gpu_rightsizer_host_processes`` and
``gpu_rightsizer_host_memory_used_bytes`` (processes outside any pod),
``gpu_rightsizer_unresolved_processes`` (a pod not in the pod list yet, or ``/proc`` unreadable)
and ``gpu_rightsizer_gpu_mig_mode`` (1 when MIG mode is on). The agent's own health:
``gpu_rightsizer_agent_nvml_up`` and ``gpu_rightsizer_agent_field_errors{field, code}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from gpu_rightsizer.nodeusage import attribution, readings

MIB_BYTES = 1_048_576

FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
FB_RESERVED = "DCGM_FI_DEV_FB_RESERVED"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
MEM_COPY_UTIL = "DCGM_FI_DEV_MEM_COPY_UTIL"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
TOTAL_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"

PROCESS_MEMORY = "gpu_rightsizer_process_memory_used_bytes"
PROCESS_MEMORY_UNREPORTED = "gpu_rightsizer_process_memory_unreported"
PROCESSES = "gpu_rightsizer_processes"
PROCESS_SM = "gpu_rightsizer_process_sm_utilization_ratio"
GPU_PODS = "gpu_rightsizer_gpu_pods"
HOST_PROCESSES = "gpu_rightsizer_host_processes"
HOST_MEMORY = "gpu_rightsizer_host_memory_used_bytes"
UNRESOLVED = "gpu_rightsizer_unresolved_processes"
MIG_MODE = "gpu_rightsizer_gpu_mig_mode"
NVML_UP = "gpu_rightsizer_agent_nvml_up"
FIELD_ERRORS = "gpu_rightsizer_agent_field_errors"

Labels = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float


@dataclasses.dataclass(frozen=True)
class Family:
    """One metric family: ``kind`` is ``gauge`` or ``counter`` (OpenMetrics names a counter's
    samples ``<name>_total``; a DCGM counter keeps its name, as dcgm-exporter's does)."""

    name: str
    kind: str
    help: str
    samples: tuple[Sample, ...]


_HELP = {
    FB_USED: "Framebuffer memory used (in MiB).",
    FB_FREE: "Framebuffer memory free (in MiB).",
    FB_RESERVED: "Framebuffer memory reserved by the driver (in MiB).",
    GPU_UTIL: "GPU utilization (in %).",
    MEM_COPY_UTIL: "Memory utilization (in %).",
    POWER_USAGE: "Power draw (in W).",
    TOTAL_ENERGY: "Total energy consumption since the driver loaded (in mJ).",
    PROCESS_MEMORY: "GPU memory the container's processes hold on the device, in bytes.",
    PROCESS_MEMORY_UNREPORTED: "The container's processes whose memory the driver did not "
    "report (then the memory series is the whole device's).",
    PROCESSES: "The container's processes holding a context on the device.",
    PROCESS_SM: "The container's processes' share of the device's SMs (0-1).",
    GPU_PODS: "Pods holding a context on the device.",
    HOST_PROCESSES: "Processes outside any pod holding a context on the device.",
    HOST_MEMORY: "GPU memory held by processes outside any pod, in bytes.",
    UNRESOLVED: "Processes on the device whose pod could not be resolved yet.",
    MIG_MODE: "1 when the GPU's MIG mode is enabled.",
    NVML_UP: "1 when NVML answered this reading.",
    FIELD_ERRORS: "Fields NVML could not give in the last reading, by field and error code.",
}


def device_labels(device: readings.Device, node: str, model_name: str | None) -> Labels:
    """dcgm-exporter's labels for ``device`` (``model_name``: the physical GPU's name)."""
    labels = [
        ("gpu", str(device.index)),
        ("UUID", device.gpu_uuid),
        ("device", f"nvidia{device.index}"),
        ("modelName", model_name or ""),
        ("Hostname", node),
    ]
    if device.is_mig_instance:
        labels += [
            ("GPU_I_PROFILE", device.mig_profile or ""),
            ("GPU_I_ID", "" if device.gpu_instance_id is None else str(device.gpu_instance_id)),
        ]
    return tuple(labels)


def _pod_labels(use: attribution.ContainerUse) -> Labels:
    return (("namespace", use.namespace), ("pod", use.pod), ("container", use.container))


def _dcgm_values(device: readings.Device) -> list[tuple[str, float | None]]:
    def mib(value: int | None) -> float | None:
        return None if value is None else value / MIB_BYTES

    def percent(value: float | None) -> float | None:
        return None if value is None else value * 100.0

    free = (
        None
        if device.memory_total_bytes is None or device.memory_used_bytes is None
        else max(
            device.memory_total_bytes
            - device.memory_used_bytes
            - (device.memory_reserved_bytes or 0),
            0,
        )
    )
    values: list[tuple[str, float | None]] = [
        (FB_USED, mib(device.memory_used_bytes)),
        (FB_FREE, mib(free)),
        (FB_RESERVED, mib(device.memory_reserved_bytes)),
    ]
    if not device.is_mig_instance:
        values += [
            (GPU_UTIL, percent(device.utilization_ratio)),
            (MEM_COPY_UTIL, percent(device.memory_utilization_ratio)),
            (POWER_USAGE, device.power_watts),
            (TOTAL_ENERGY, None if device.energy_joules is None else device.energy_joules * 1e3),
        ]
    return values


def families(
    reading: readings.NodeReading, uses: Sequence[attribution.DeviceUse], node: str
) -> tuple[Family, ...]:
    """Every family of one reading, in a fixed order; a figure that is unknown has no sample."""
    out: dict[str, list[Sample]] = {name: [] for name in _HELP}
    names = {d.uuid: d.name for d in reading.devices if not d.is_mig_instance}
    for use in uses:
        device = use.device
        base = device_labels(device, node, names.get(device.gpu_uuid, device.name))
        # A MIG parent's processes are on its instances: it carries only its own figures.
        holders = [base + _pod_labels(c) for c in use.containers] or [base]
        for name, value in _dcgm_values(device):
            if value is None:
                continue
            # Power and energy of a GPU in MIG mode belong to no single pod.
            for labels in holders if not device.mig_enabled else [base]:
                out[name].append(Sample(labels, value))
        for container in use.containers:
            labels = base + _pod_labels(container)
            if container.memory_used_bytes is not None:
                out[PROCESS_MEMORY].append(Sample(labels, float(container.memory_used_bytes)))
            out[PROCESS_MEMORY_UNREPORTED].append(
                Sample(labels, float(container.unreported_processes))
            )
            out[PROCESSES].append(Sample(labels, float(container.processes)))
            if container.sm_utilization_ratio is not None:
                out[PROCESS_SM].append(Sample(labels, container.sm_utilization_ratio))
        if device.processes is not None:
            out[GPU_PODS].append(Sample(base, float(use.pods)))
            out[HOST_PROCESSES].append(Sample(base, float(use.host_processes)))
            if use.host_memory_used_bytes is not None:
                out[HOST_MEMORY].append(Sample(base, float(use.host_memory_used_bytes)))
            out[UNRESOLVED].append(Sample(base, float(use.unresolved_processes)))
        if not device.is_mig_instance and device.mig_enabled is not None:
            out[MIG_MODE].append(Sample(base, 1.0 if device.mig_enabled else 0.0))
    out[NVML_UP].append(Sample((("Hostname", node),), 1.0 if reading.ok else 0.0))
    for (field, code), count in sorted(_error_counts(reading.errors).items()):
        labels = (("Hostname", node), ("field", field), ("code", code))
        out[FIELD_ERRORS].append(Sample(labels, float(count)))
    return tuple(
        Family(name, "counter" if name == TOTAL_ENERGY else "gauge", _HELP[name], tuple(samples))
        for name, samples in out.items()
    )


def _error_counts(errors: Iterable[readings.FieldError]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for error in errors:
        key = (error.field, "" if error.code is None else str(error.code))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(all_families: Iterable[Family]) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``all_families``; a family without
    samples is left out."""
    lines: list[str] = []
    for family in all_families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            body = ",".join(f'{key}="{_escape(value)}"' for key, value in sample.labels)
            labels = f"{{{body}}}" if body else ""
            lines.append(f"{family.name}{labels} {_number(sample.value)}")
    return "\n".join(lines) + "\n"
