"""The candidate table: every allocation a replica could get, as columns of numpy arrays.

A *slot* is one GPU model x partition (whole GPU or one MIG instance) x GPUs per replica. The
table is built once per catalog and shared by every workload of a sweep; the engine then
evaluates all of a batch's workloads against all slots with array operations instead of Python
loops.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt

from gpu_rightsizer.models import gpus, precisions

GPU_COUNTS = (1, 2, 4, 8)
PRECISIONS = tuple(precisions.Precision)
PRECISION_INDEX = {p: i for i, p in enumerate(PRECISIONS)}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _profile(gpu: gpus.GpuModel, mig_profile: str) -> gpus.MigProfile:
    profile = gpu.mig_profile(mig_profile)
    if profile is None:
        raise ValueError(f"{gpu.id} has no MIG profile {mig_profile}")
    return profile


def physical_share(gpu: gpus.GpuModel, mig_profile: str | None) -> float:
    """Fraction of a physical GPU's compute (and power) a whole GPU or MIG instance has: its SMs
    over the GPU's, not the ``Ng`` of the profile's name over 7."""
    return gpu.compute_share(mig_profile)


def price_share(gpu: gpus.GpuModel, mig_profile: str | None) -> float:
    """Fraction of a GPU's price a MIG instance costs: the larger of its compute and memory."""
    if mig_profile is None:
        return 1.0
    return max(physical_share(gpu, mig_profile), memory_fraction(gpu, mig_profile))


def hourly_cost(gpu: gpus.GpuModel, mig_profile: str | None, count: int) -> float:
    """Price of one replica's GPUs per hour."""
    return round(gpu.price.per_gpu_hour * price_share(gpu, mig_profile) * count, 6)


def memory_fraction(gpu: gpus.GpuModel, mig_profile: str | None) -> float:
    """Fraction of a GPU's usable memory (and bandwidth) a whole GPU or MIG instance has."""
    return gpu.memory_share(mig_profile)


@dataclasses.dataclass(frozen=True)
class SlotTable:
    """Columns describing every slot; index ``s`` is the same slot in every array."""

    gpu_ids: tuple[str, ...]
    mig_names: tuple[str, ...]
    """Distinct partition names; index 0 is the whole GPU ("")."""
    gpu_index: IntArray
    mig_index: IntArray
    count: IntArray
    is_mig: BoolArray
    memory_bytes: FloatArray
    """Per GPU or MIG instance."""
    tflops: FloatArray
    """Dense BF16 TFLOPS of one GPU or instance."""
    bandwidth_gb_per_s: FloatArray
    cost: FloatArray
    """Per replica per hour."""
    speedup: FloatArray
    """(precision, slot): throughput factor of the precision on the slot's GPU."""
    runnable: BoolArray
    """(precision, slot): the serving engine can run the precision there."""

    def __len__(self) -> int:
        return len(self.count)

    def find(self, gpu_id: str, mig_profile: str | None, count: int) -> int | None:
        """The slot index of an allocation, if the table has it."""
        try:
            g = self.gpu_ids.index(gpu_id)
            m = self.mig_names.index(mig_profile or "")
        except ValueError:
            return None
        hits = np.flatnonzero((self.gpu_index == g) & (self.mig_index == m) & (self.count == count))
        return int(hits[0]) if len(hits) else None


@functools.lru_cache(maxsize=8)
def build(catalog: gpus.Catalog, table: precisions.PrecisionTable) -> SlotTable:
    """Enumerate the slots of a catalog (cached: catalogs are immutable)."""
    rows: list[tuple[int, gpus.GpuModel, str | None, int]] = []
    for g, gpu in enumerate(catalog.gpus):
        rows.extend((g, gpu, None, n) for n in GPU_COUNTS)
        # MIG instances serve one replica each; "+me" profiles duplicate a size for media work
        # and a 7g instance is the whole GPU at the whole GPU's price.
        rows.extend(
            (g, gpu, p.name, 1)
            for p in gpu.mig_profiles
            if not p.name.endswith("+me") and p.compute_slices < 7
        )
    mig_names = ("", *sorted({m for _, _, m, _ in rows if m}))
    speed = np.ones((len(PRECISIONS), len(rows)))
    runnable = np.zeros((len(PRECISIONS), len(rows)), dtype=bool)
    for s, (_, gpu, _, _) in enumerate(rows):
        for p, precision in enumerate(PRECISIONS):
            runnable[p, s] = precision in gpu.runnable_precisions
            if precision in gpu.native_precisions:
                speed[p, s] = table.get(precision).native_speedup
    return SlotTable(
        gpu_ids=catalog.ids,
        mig_names=mig_names,
        gpu_index=np.array([g for g, _, _, _ in rows], dtype=np.int64),
        mig_index=np.array([mig_names.index(m or "") for _, _, m, _ in rows], dtype=np.int64),
        count=np.array([n for _, _, _, n in rows], dtype=np.int64),
        is_mig=np.array([m is not None for _, _, m, _ in rows], dtype=bool),
        memory_bytes=np.array([float(gpu.slot_memory_bytes(m)) for _, gpu, m, _ in rows]),
        tflops=np.array([gpu.bf16_dense_tflops * physical_share(gpu, m) for _, gpu, m, _ in rows]),
        bandwidth_gb_per_s=np.array(
            [gpu.memory_bandwidth_gb_per_s * memory_fraction(gpu, m) for _, gpu, m, _ in rows]
        ),
        cost=np.array([hourly_cost(gpu, m, n) for _, gpu, m, n in rows]),
        speedup=speed,
        runnable=runnable,
    )
