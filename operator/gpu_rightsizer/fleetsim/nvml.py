"""A fake NVML: pynvml's functions, return shapes and error classes, for GPUs described in YAML.

The node agent reads GPUs through :class:`gpu_rightsizer.nvml.reader.Reader`, which takes
anything shaped like the ``pynvml`` module. :class:`FakeNvml` is that, for a node that has no
GPU: the functions the reader calls, returning objects with the real structures' attribute
names (``.used``/``.total``/``.free``/``.reserved`` of ``nvmlMemory_v2``, ``.gpu``/``.memory``
of the utilisation rates, ``.pid``/``.usedGpuMemory``/``.gpuInstanceId`` of a process,
``.pid``/``.timeStamp``/``.smUtil`` of a utilisation sample) and raising pynvml's own
``NVMLError`` subclasses with NVML's codes. Units are NVML's: bytes, milliwatts, millijoules,
percents, microseconds.

The description (a mapping, or a YAML file given to :meth:`FakeNvml.from_file`, re-read
whenever the file changes so a test can change the node under a running agent)::

    driverVersion: "580.95.05"
    init: ok            # or LibraryNotFound / DriverNotLoaded: nvmlInit fails with that error
    gpus:
      - uuid: GPU-8b0f...
        name: NVIDIA H100 80GB HBM3
        memory: {total: 85520809984, used: 21474836480, reserved: 553648128}
        utilization: {gpu: 40, memory: 25}
        powerMilliwatts: 310000
        energyMillijoules: 123456789
        unsupported: [power, processUtilization]  # these calls raise NOT_SUPPORTED
        lost: false     # true: every call on this GPU raises GPU_IS_LOST
        processes:      # compute processes (kind: graphics or mps for the other lists)
          - {pid: 4242, usedGpuMemory: 21000000000, smUtil: 38}
          - {pid: 4343, usedGpuMemory: null}          # the driver does not report it
        mig:            # MIG mode on: processes go on the instances
          instances:
            - {uuid: MIG-..., profile: 1g.10gb, gpuInstanceId: 7, computeInstanceId: 0,
               memory: {total: ..., used: ...}, processes: [...]}

``unsupported`` names: ``name``, ``memory``, ``utilization``, ``power``, ``energy``,
``migMode``, ``computeProcesses``, ``graphicsProcesses``, ``mpsProcesses``,
``processUtilization``. This is a test tool: it never touches a real driver.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import pynvml
import yaml

NVMLError = pynvml.NVMLError
nvmlMemory_v2 = pynvml.nvmlMemory_v2
NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
NVML_DEVICE_MIG_DISABLE = pynvml.NVML_DEVICE_MIG_DISABLE

_INIT_ERRORS = {
    "LibraryNotFound": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    "DriverNotLoaded": pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    "NoPermission": pynvml.NVML_ERROR_NO_PERMISSION,
}


@dataclasses.dataclass(frozen=True)
class _Struct:
    """An NVML structure as pynvml returns it: plain attributes."""

    fields: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclasses.dataclass(frozen=True)
class _Handle:
    """An opaque device handle: a GPU's index, and a MIG slot for an instance."""

    gpu: int
    slot: int | None = None


class FakeNvml:
    """pynvml's functions over a description (see the module docstring)."""

    NVMLError = pynvml.NVMLError
    nvmlMemory_v2 = pynvml.nvmlMemory_v2

    def __init__(self, description: Mapping[str, Any], path: pathlib.Path | None = None) -> None:
        self._description = description
        self._path = path
        self._mtime: float | None = None
        self._initialised = False
        self.calls: list[str] = []

    @classmethod
    def from_file(cls, path: pathlib.Path) -> FakeNvml:
        fake = cls({}, path)
        fake._reload()
        return fake

    def _reload(self) -> None:
        if self._path is None:
            return
        mtime = self._path.stat().st_mtime
        if mtime != self._mtime:
            self._description = yaml.safe_load(self._path.read_text(encoding="utf-8")) or {}
            self._mtime = mtime

    # --- lookups ----------------------------------------------------------------------------

    def _gpus(self) -> Sequence[Mapping[str, Any]]:
        return list(self._description.get("gpus") or [])

    def _entry(self, handle: _Handle, field: str | None = None) -> Mapping[str, Any]:
        if not self._initialised:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        gpus = self._gpus()
        if not isinstance(handle, _Handle) or not 0 <= handle.gpu < len(gpus):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = gpus[handle.gpu]
        if gpu.get("lost"):
            raise NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if field is not None and field in (gpu.get("unsupported") or ()):
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if handle.slot is None:
            return gpu
        instances = (gpu.get("mig") or {}).get("instances") or []
        if handle.slot >= len(instances):
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        instance: Mapping[str, Any] = instances[handle.slot]
        if field is not None and field in (instance.get("unsupported") or ()):
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return instance

    # --- pynvml's functions -----------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._reload()
        self.calls.append("nvmlInit")
        failure = self._description.get("init", "ok")
        if failure != "ok":
            raise NVMLError(_INIT_ERRORS[failure])
        self._initialised = True

    def nvmlShutdown(self) -> None:
        self._initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._reload()
        if not self._initialised:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return str(self._description.get("driverVersion", "580.95.05"))

    def nvmlDeviceGetCount(self) -> int:
        self._reload()
        if not self._initialised:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return len(self._gpus())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        handle = _Handle(index)
        self._entry(handle)
        return handle

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        return str(self._entry(handle)["uuid"])

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        entry = self._entry(handle, "name")
        if handle.slot is None:
            return str(entry["name"])
        parent = self._entry(_Handle(handle.gpu))
        return f"{parent['name']} MIG {entry['profile']}"

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> _Struct:
        memory = self._entry(handle, "memory")["memory"]
        total, used = int(memory["total"]), int(memory["used"])
        reserved = int(memory.get("reserved", 0))
        if version is None:  # v1: used includes what the driver reserved
            return _Struct(
                {"total": total, "used": used + reserved, "free": total - used - reserved}
            )
        fields = {"version": version, "total": total, "reserved": reserved, "used": used}
        return _Struct({**fields, "free": total - used - reserved})

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Struct:
        if handle.slot is not None:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # none per MIG instance
        rates = self._entry(handle, "utilization")["utilization"]
        return _Struct({"gpu": int(rates["gpu"]), "memory": int(rates["memory"])})

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        if handle.slot is not None:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(self._entry(handle, "power")["powerMilliwatts"])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        if handle.slot is not None:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(self._entry(handle, "energy")["energyMillijoules"])

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        entry = self._entry(handle, "migMode")
        mode = NVML_DEVICE_MIG_ENABLE if entry.get("mig") else NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        entry = self._entry(handle)
        return 7 if entry.get("mig") else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        entry = self._entry(handle)
        if not entry.get("mig"):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        mig = _Handle(handle.gpu, index)
        self._entry(mig)
        return mig

    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        if handle.slot is None:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(self._entry(handle)["gpuInstanceId"])

    def nvmlDeviceGetComputeInstanceId(self, handle: _Handle) -> int:
        if handle.slot is None:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(self._entry(handle).get("computeInstanceId", 0))

    def _listed(self, handle: _Handle, kind: str, field: str) -> list[_Struct]:
        entry = self._entry(handle, field)
        out = []
        for process in entry.get("processes") or []:
            if process.get("kind", "compute") != kind:
                continue
            memory = process.get("usedGpuMemory")
            out.append(
                _Struct(
                    {
                        "pid": int(process["pid"]),
                        "usedGpuMemory": None if memory is None else int(memory),
                        "gpuInstanceId": entry.get("gpuInstanceId", 0xFFFFFFFF),
                        "computeInstanceId": entry.get("computeInstanceId", 0xFFFFFFFF),
                    }
                )
            )
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[_Struct]:
        return self._listed(handle, "compute", "computeProcesses")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[_Struct]:
        return self._listed(handle, "graphics", "graphicsProcesses")

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: _Handle) -> list[_Struct]:
        return self._listed(handle, "mps", "mpsProcesses")

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, timestamp: int) -> list[_Struct]:
        entry = self._entry(handle, "processUtilization")
        stamp = int(self._description.get("sampleTimeUs", 1_000_000))
        samples = [
            _Struct(
                {
                    "pid": int(p["pid"]),
                    "timeStamp": stamp,
                    "smUtil": int(p["smUtil"]),
                    "memUtil": int(p.get("memUtil", 0)),
                    "encUtil": 0,
                    "decUtil": 0,
                }
            )
            for p in entry.get("processes") or []
            if "smUtil" in p and stamp > timestamp
        ]
        if not samples:
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)  # the real library: no sample since then
        return samples
