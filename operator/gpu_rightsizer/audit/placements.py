"""MIG placement rules: at which memory slices a GPU instance of a profile may start.

The rules come from ``data/mig-placements.yaml`` (NVIDIA's ``nvidia-smi mig -lgipp`` and the
MIG User Guide, cited there), loaded by :func:`gpu_rightsizer.catalogs.mig_placements`. A
profile's size in memory slices is derived from the catalog: its usable memory over the GPU's
largest profile's, times the GPU's memory slices, rounded.
"""

from __future__ import annotations

import dataclasses

from gpu_rightsizer.models import gpus


@dataclasses.dataclass(frozen=True)
class Rule:
    compute_slices: int
    memory_slices: int
    starts: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Table:
    gpu_memory_slices: int
    rules: tuple[Rule, ...]


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where instances of one profile may go on one GPU."""

    start_slices: tuple[int, ...]
    memory_slices: int
    gpu_memory_slices: int
    max_instances: int


def memory_slices(gpu: gpus.GpuModel, profile: gpus.MigProfile, table: Table) -> int:
    largest = max(p.usable_memory_mib for p in gpu.mig_profiles)
    return max(round(profile.usable_memory_mib / largest * table.gpu_memory_slices), 1)


def placement(gpu: gpus.GpuModel, profile: gpus.MigProfile, table: Table) -> Placement:
    """The placement of ``profile`` on ``gpu``; ValueError when no rule covers it."""
    size = memory_slices(gpu, profile, table)
    for rule in table.rules:
        if rule.compute_slices == profile.compute_slices and rule.memory_slices == size:
            return Placement(rule.starts, size, table.gpu_memory_slices, profile.max_instances)
    raise ValueError(
        f"no MIG placement rule for {gpu.id} {profile.name} ({profile.compute_slices} compute, "
        f"{size} memory slices)"
    )
