"""One reading of a node's GPUs through NVML, as plain data.

A figure the driver could not give is ``None`` and has a :class:`FieldError` beside it naming
the device, the field and NVML's return code (``NVML_ERROR_NOT_SUPPORTED`` = 3 for a field a
GPU lacks, ``NVML_ERROR_GPU_IS_LOST`` = 15 for one that fell off the bus). Units are in the
field names: bytes, watts, joules and 0-1 ratios; NVML's milliwatts, millijoules and percents
are converted by the adapter.
"""

from __future__ import annotations

import dataclasses
import enum

NOT_SUPPORTED = 3
NOT_FOUND = 6
GPU_IS_LOST = 15


class ProcessKind(enum.Enum):
    COMPUTE = "compute"
    GRAPHICS = "graphics"


@dataclasses.dataclass(frozen=True)
class FieldError:
    """A field NVML did not give: ``device`` is the GPU's UUID (or ``index:N`` before the UUID
    is known, ``""`` for the node), ``code`` NVML's return code (None for other failures)."""

    device: str
    field: str
    code: int | None
    message: str


@dataclasses.dataclass(frozen=True)
class Process:
    """A process that holds a context on a device; ``pid`` is the host's PID."""

    pid: int
    kind: ProcessKind
    used_memory_bytes: int | None
    """None where the driver does not report it (MIG without privileges, some vGPU setups)."""
    sm_utilization_ratio: float | None = None
    """The process's share of the SMs over the last sample period, where the driver gives it."""


@dataclasses.dataclass(frozen=True)
class Device:
    """A whole GPU, or one MIG instance of a GPU (then ``parent_uuid`` is set).

    ``index`` is the GPU's NVML index (a MIG instance carries its parent's). ``processes`` is
    None when the process list could not be read, which is not the same as an empty list.
    """

    index: int
    uuid: str
    name: str | None = None
    parent_uuid: str | None = None
    mig_profile: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    mig_enabled: bool | None = None
    """For a whole GPU: whether MIG mode is on (None: unknown or not MIG-capable)."""
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    utilization_ratio: float | None = None
    memory_utilization_ratio: float | None = None
    power_watts: float | None = None
    energy_joules: float | None = None
    processes: tuple[Process, ...] | None = ()

    @property
    def is_mig_instance(self) -> bool:
        return self.parent_uuid is not None

    @property
    def gpu_uuid(self) -> str:
        """The physical GPU's UUID (the parent's for a MIG instance), as DCGM labels it."""
        return self.parent_uuid or self.uuid


@dataclasses.dataclass(frozen=True)
class NodeReading:
    """Everything one interval read. ``driver_error`` is set when NVML could not start at all
    (no driver, no library); then ``devices`` is empty."""

    devices: tuple[Device, ...] = ()
    errors: tuple[FieldError, ...] = ()
    driver_error: str | None = None
    driver_version: str | None = None

    @property
    def ok(self) -> bool:
        return self.driver_error is None
