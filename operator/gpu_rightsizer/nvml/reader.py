"""Read every GPU and MIG instance of the node, and the processes on each, through NVML.

Per GPU: UUID, name, memory (``nvmlDeviceGetMemoryInfo`` version 2, which reports the driver's
reserved memory apart, else version 1), utilisation, power (mW), total energy (mJ), MIG mode.
A GPU in MIG mode is read through its MIG device handles: each instance's UUID, GPU and compute
instance IDs, profile (from the instance's name, ``... MIG 1g.10gb``), memory and processes;
the parent keeps its power and energy and lists no processes of its own (they are its
instances'). Processes come from the compute, graphics and MPS lists (a PID in several lists
counts once); per-process SM utilisation from ``nvmlDeviceGetProcessUtilization`` since the
previous reading, where the driver gives it (``NVML_ERROR_NOT_FOUND`` means no sample yet).

``nvmlInit`` is retried at every reading until it succeeds, so an agent started before the
driver loaded starts reporting once it has.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any, TypeVar

from gpu_rightsizer.nodeusage import readings

T = TypeVar("T")

MIG_ENABLE = 1
_MIG_NAME = re.compile(r"\bMIG\s+(?P<profile>\d+g\.\d+gb(?:\+\w+)?)\s*$", re.IGNORECASE)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


class _Fields:
    """Calls NVML and records each failure as a FieldError, never raising NVML's errors."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.errors: list[readings.FieldError] = []

    def get(self, device: str, field: str, call: Callable[..., T], *args: Any) -> T | None:
        try:
            return call(*args)
        except self.nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            self.errors.append(readings.FieldError(device, field, code, _describe(exc)))
            return None


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an error string NVML itself cannot give
        return f"NVML error {getattr(exc, 'value', '?')}"


class Reader:
    """Reads the node through ``nvml`` (the pynvml module, or anything shaped like it)."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._initialised = False
        self._last_sample_us: dict[str, int] = {}

    def close(self) -> None:
        if self._initialised:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._initialised = False

    def read(self) -> readings.NodeReading:
        nvml = self._nvml
        if not self._initialised:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                return readings.NodeReading(driver_error=f"nvmlInit: {_describe(exc)}")
            self._initialised = True
        fields = _Fields(nvml)
        count = fields.get("", "deviceCount", nvml.nvmlDeviceGetCount)
        if count is None:
            self._initialised = False  # e.g. the driver was unloaded: init again next time
            message = fields.errors[-1].message
            return readings.NodeReading(
                errors=tuple(fields.errors), driver_error=f"nvmlDeviceGetCount: {message}"
            )
        version = fields.get("", "driverVersion", nvml.nvmlSystemGetDriverVersion)
        devices: list[readings.Device] = []
        for index in range(count):
            devices += self._gpu(fields, index)
        return readings.NodeReading(
            devices=tuple(devices),
            errors=tuple(fields.errors),
            driver_version=None if version is None else _text(version),
        )

    # --- one GPU --------------------------------------------------------------------------

    def _gpu(self, fields: _Fields, index: int) -> list[readings.Device]:
        nvml = self._nvml
        where = f"index:{index}"
        handle = fields.get(where, "handle", nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            return []
        raw_uuid = fields.get(where, "uuid", nvml.nvmlDeviceGetUUID, handle)
        if raw_uuid is None:
            return []
        uuid = _text(raw_uuid)
        name = _optional_text(fields.get(uuid, "name", nvml.nvmlDeviceGetName, handle))
        mig = fields.get(uuid, "migMode", nvml.nvmlDeviceGetMigMode, handle)
        mig_enabled = None if mig is None else int(mig[0]) == MIG_ENABLE
        utilization = fields.get(uuid, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = fields.get(uuid, "power", nvml.nvmlDeviceGetPowerUsage, handle)
        energy_mj = fields.get(uuid, "energy", nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        used, total, reserved = self._memory(fields, uuid, handle)
        gpu = readings.Device(
            index=index,
            uuid=uuid,
            name=name,
            mig_enabled=mig_enabled,
            memory_used_bytes=used,
            memory_total_bytes=total,
            memory_reserved_bytes=reserved,
            utilization_ratio=None if utilization is None else utilization.gpu / 100.0,
            memory_utilization_ratio=None if utilization is None else utilization.memory / 100.0,
            power_watts=None if power_mw is None else power_mw / 1000.0,
            energy_joules=None if energy_mj is None else energy_mj / 1000.0,
            processes=None if mig_enabled else self._processes(fields, uuid, handle),
        )
        if not mig_enabled:
            return [gpu]
        return [gpu, *self._instances(fields, gpu, handle)]

    def _memory(
        self, fields: _Fields, uuid: str, handle: Any
    ) -> tuple[int | None, int | None, int | None]:
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None:
            try:
                info = nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
                return int(info.used), int(info.total), int(info.reserved)
            except nvml.NVMLError:
                pass  # an older driver: version 1 below (its error, if any, is recorded)
        info = fields.get(uuid, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        if info is None:
            return None, None, None
        return int(info.used), int(info.total), None

    def _instances(
        self, fields: _Fields, gpu: readings.Device, handle: Any
    ) -> list[readings.Device]:
        nvml = self._nvml
        uuid = gpu.uuid
        slots = fields.get(uuid, "maxMigDevices", nvml.nvmlDeviceGetMaxMigDeviceCount, handle)
        out: list[readings.Device] = []
        for slot in range(slots or 0):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError as exc:
                if getattr(exc, "value", None) != readings.NOT_FOUND:  # NOT_FOUND: an empty slot
                    fields.errors.append(
                        readings.FieldError(uuid, f"migDevice[{slot}]", exc.value, _describe(exc))
                    )
                continue
            mig_uuid = fields.get(uuid, f"migDevice[{slot}].uuid", nvml.nvmlDeviceGetUUID, mig)
            if mig_uuid is None:
                continue
            mig_uuid = _text(mig_uuid)
            mig_name = _optional_text(fields.get(mig_uuid, "name", nvml.nvmlDeviceGetName, mig))
            match = None if mig_name is None else _MIG_NAME.search(mig_name)
            if mig_name is not None and match is None:
                fields.errors.append(
                    readings.FieldError(mig_uuid, "migProfile", None, f"no profile in {mig_name!r}")
                )
            gi = fields.get(mig_uuid, "gpuInstanceId", nvml.nvmlDeviceGetGpuInstanceId, mig)
            ci = fields.get(mig_uuid, "computeInstanceId", nvml.nvmlDeviceGetComputeInstanceId, mig)
            used, total, reserved = self._memory(fields, mig_uuid, mig)
            out.append(
                readings.Device(
                    index=gpu.index,
                    uuid=mig_uuid,
                    name=gpu.name,
                    parent_uuid=uuid,
                    mig_profile=None if match is None else match.group("profile").lower(),
                    gpu_instance_id=None if gi is None else int(gi),
                    compute_instance_id=None if ci is None else int(ci),
                    memory_used_bytes=used,
                    memory_total_bytes=total,
                    memory_reserved_bytes=reserved,
                    processes=self._processes(fields, mig_uuid, mig),
                )
            )
        return out

    # --- processes ------------------------------------------------------------------------

    def _processes(
        self, fields: _Fields, uuid: str, handle: Any
    ) -> tuple[readings.Process, ...] | None:
        nvml = self._nvml
        lists = [
            (
                "computeProcesses",
                readings.ProcessKind.COMPUTE,
                "nvmlDeviceGetComputeRunningProcesses",
            ),
            (
                "mpsProcesses",
                readings.ProcessKind.COMPUTE,
                "nvmlDeviceGetMPSComputeRunningProcesses",
            ),
            (
                "graphicsProcesses",
                readings.ProcessKind.GRAPHICS,
                "nvmlDeviceGetGraphicsRunningProcesses",
            ),
        ]
        found: dict[int, readings.Process] = {}
        answered = False
        for field, kind, function in lists:
            call = getattr(nvml, function, None)
            if call is None:
                continue
            listed = fields.get(uuid, field, call, handle)
            if listed is None:
                continue
            answered = True
            for info in listed:
                pid = int(info.pid)
                if pid in found:
                    continue
                memory = info.usedGpuMemory
                found[pid] = readings.Process(pid, kind, None if memory is None else int(memory))
        if not answered:
            return None
        shares = self._sm_shares(fields, uuid, handle)
        return tuple(
            readings.Process(p.pid, p.kind, p.used_memory_bytes, shares.get(p.pid))
            for p in sorted(found.values(), key=lambda p: p.pid)
        )

    def _sm_shares(self, fields: _Fields, uuid: str, handle: Any) -> dict[int, float]:
        """Each PID's SM share in its latest sample since the previous reading."""
        nvml = self._nvml
        since = self._last_sample_us.get(uuid, 0)
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, since)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) != readings.NOT_FOUND:  # NOT_FOUND: no sample yet
                fields.errors.append(
                    readings.FieldError(uuid, "processUtilization", exc.value, _describe(exc))
                )
            return {}
        latest: dict[int, tuple[int, float]] = {}
        for sample in samples:
            stamp = int(sample.timeStamp)
            if stamp >= latest.get(int(sample.pid), (-1, 0.0))[0]:
                latest[int(sample.pid)] = (stamp, min(float(sample.smUtil) / 100.0, 1.0))
            self._last_sample_us[uuid] = max(self._last_sample_us.get(uuid, 0), stamp)
        return {pid: share for pid, (_, share) in latest.items()}
