"""MIG placement rules: at which memory slices a GPU instance of a profile may start.

A MIG-capable GPU has a row of memory slices (8 on A100, H100, H200, B200; 4 on A30). A GPU
instance takes a contiguous run of them and may start only at the slices NVIDIA allows for its
size; two instances on one GPU never overlap. The rules are data (``data/mig-placements.yaml``,
citing NVIDIA's MIG User Guide and ``nvidia-smi mig -lgipp``), loaded by
:func:`gpu_rightsizer.catalogs.mig_placements` into a :class:`Table`, keyed by (the GPU's memory
slices, the profile's compute slices, the profile's memory slices).

Neither number is in the catalog, so both are derived from it: a GPU's memory slices from its
whole-GPU profile's compute slices (7g: 8 slices, 4g on A30: 4), looked up in the table; a
profile's memory slices as its usable memory over the whole-GPU profile's, times the GPU's
slices, rounded (1g.10gb on H100: 9856 / 81152 x 8 = 0.97 -> 1; 1g.20gb: 1.97 -> 2). The tests
check that this gives every catalog profile exactly its ``maxInstances`` on an empty GPU.
"""

from __future__ import annotations

import dataclasses

from gpu_rightsizer.models import gpus


@dataclasses.dataclass(frozen=True)
class Layout:
    """How many memory slices a GPU has, by the compute slices of its whole-GPU profile."""

    whole_gpu_compute_slices: int
    memory_slices: int


@dataclasses.dataclass(frozen=True)
class Rule:
    """Where an instance of (compute slices, memory slices) may start on such a GPU."""

    gpu_memory_slices: int
    compute_slices: int
    memory_slices: int
    start_slices: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where instances of one profile may go on one GPU.

    ``max_instances`` is the catalog's cap per GPU: the geometry allows more of a ``+me``
    profile than the one set of media engines does.
    """

    start_slices: tuple[int, ...]
    memory_slices: int
    gpu_memory_slices: int
    max_instances: int

    def span(self, start: int) -> range:
        """The memory slices an instance starting at ``start`` takes."""
        return range(start, start + self.memory_slices)

    @property
    def instances_by_slices(self) -> int:
        """Instances of the profile an empty GPU's slices hold (before ``max_instances``)."""
        end = -1
        count = 0
        for start in self.start_slices:  # ascending: greedy is exact for equal-length spans
            if start > end:
                count += 1
                end = start + self.memory_slices - 1
        return count


@dataclasses.dataclass(frozen=True)
class Table:
    """The placement rules of every MIG layout; ValueError when they contradict themselves."""

    layouts: tuple[Layout, ...]
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        slices = {layout.memory_slices for layout in self.layouts}
        if len({layout.whole_gpu_compute_slices for layout in self.layouts}) < len(self.layouts):
            raise ValueError("two layouts for one whole-GPU compute slice count")
        keys = [(r.gpu_memory_slices, r.compute_slices, r.memory_slices) for r in self.rules]
        if len(set(keys)) < len(keys):
            raise ValueError("two rules for one (GPU slices, compute slices, memory slices)")
        for rule in self.rules:
            name = f"rule {rule.compute_slices}g x {rule.memory_slices} slices"
            if rule.gpu_memory_slices not in slices:
                raise ValueError(f"{name}: no layout has {rule.gpu_memory_slices} memory slices")
            if not rule.start_slices or list(rule.start_slices) != sorted(set(rule.start_slices)):
                raise ValueError(f"{name}: start slices must be distinct and ascending")
            if rule.memory_slices < 1 or rule.start_slices[0] < 0:
                raise ValueError(f"{name}: sizes and starts must be positive")
            if rule.start_slices[-1] + rule.memory_slices > rule.gpu_memory_slices:
                raise ValueError(f"{name}: an instance would run past the GPU's last slice")

    def gpu_memory_slices(self, gpu_model: gpus.GpuModel) -> int:
        """The memory slices of ``gpu_model``; ValueError when it has no MIG or no layout."""
        if not gpu_model.mig_profiles:
            raise ValueError(f"{gpu_model.id} has no MIG profiles")
        whole = max(p.compute_slices for p in gpu_model.mig_profiles)
        for layout in self.layouts:
            if layout.whole_gpu_compute_slices == whole:
                return layout.memory_slices
        raise ValueError(f"no MIG layout for {gpu_model.id} (whole-GPU profile {whole}g)")

    def memory_slices(self, gpu_model: gpus.GpuModel, profile: gpus.MigProfile) -> int:
        """The memory slices one instance of ``profile`` takes on ``gpu_model``."""
        total = self.gpu_memory_slices(gpu_model)
        whole = max(gpu_model.mig_profiles, key=lambda p: (p.compute_slices, p.usable_memory_mib))
        return max(round(profile.usable_memory_mib / whole.usable_memory_mib * total), 1)

    def placements(self, gpu_model: gpus.GpuModel, profile: gpus.MigProfile) -> Placement:
        """Where ``profile`` may go on ``gpu_model``; ValueError when no rule covers it."""
        total = self.gpu_memory_slices(gpu_model)
        size = self.memory_slices(gpu_model, profile)
        for rule in self.rules:
            key = (rule.gpu_memory_slices, rule.compute_slices, rule.memory_slices)
            if key == (total, profile.compute_slices, size):
                return Placement(rule.start_slices, size, total, profile.max_instances)
        raise ValueError(
            f"no MIG placement rule for {gpu_model.id} {profile.name} ({profile.compute_slices} "
            f"compute slices, {size} of {total} memory slices)"
        )

    def coverage(self, gpu_memory_slices: int) -> tuple[int, ...]:
        """Per memory slice of such a GPU, how many (rule, start) placements cover it: the
        fewer, the harder that slice is to use (on 8 slices, slice 7 is reached only from a
        2-slice 1g at 6, a 3g at 4 or a 7g)."""
        counts = [0] * gpu_memory_slices
        for rule in self.rules:
            if rule.gpu_memory_slices == gpu_memory_slices:
                for start in rule.start_slices:
                    for s in range(start, start + rule.memory_slices):
                        counts[s] += 1
        return tuple(counts)
