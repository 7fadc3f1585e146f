"""The GPU catalog's types: GPU models, their MIG profiles, prices and the energy factors.

The values live in ``gpu_rightsizer/data/catalog.yaml`` (each with its source); these types
validate them. A user's override file (prices, PUE, grid carbon intensity, currency) is applied
with :func:`Catalog.with_overrides`, which returns a new catalog.

Two memory figures exist for every GPU and MIG profile: the nominal size of the part (``80`` for
an H100 80GB, the ``40gb`` of ``3g.40gb``), kept for display, and the usable framebuffer in MiB
as ``nvidia-smi`` / DCGM (``FB_USED + FB_FREE``) and ``nvidia-smi mig -lgip`` report it, which is
what a process can allocate. Sizing uses only the usable figure: :meth:`GpuModel.slot_memory_bytes`.
A MIG slice's compute is its SM count over the whole GPU's (:meth:`GpuModel.compute_share`), not
the ``Ng`` of its name over 7.
"""

from __future__ import annotations

import enum
import functools
import re

import pydantic

from gpu_rightsizer.models import base, precisions

MIB = 2**20
MIG_PROFILE_PATTERN = r"^[1-7]g\.[0-9]+gb(\+me)?$"
_MIG_NAME = re.compile(r"^(?P<slices>[1-7])g\.(?P<gb>[0-9]+)gb(?P<me>\+me)?$")


class Architecture(enum.StrEnum):
    VOLTA = "Volta"
    TURING = "Turing"
    AMPERE = "Ampere"
    ADA = "Ada"
    HOPPER = "Hopper"
    BLACKWELL = "Blackwell"


class MigProfile(base.Model):
    """One MIG GPU-instance profile of a GPU model (NVIDIA's name, e.g. ``3g.40gb``)."""

    name: str = pydantic.Field(pattern=MIG_PROFILE_PATTERN)
    compute_slices: int = pydantic.Field(ge=1, le=7, description="N in Ng: GPU compute slices")
    memory_gib: float = pydantic.Field(gt=0, description="nominal memory, the Xgb of the name")
    usable_memory_mib: int = pydantic.Field(
        gt=0, description="framebuffer one instance can use, as `nvidia-smi mig -lgip` lists it"
    )
    sm_count: int = pydantic.Field(gt=0, description="streaming multiprocessors of one instance")
    max_instances: int = pydantic.Field(ge=1, le=7, description="instances of it on one GPU")

    @property
    def resource_name(self) -> str:
        """The extended resource under the GPU Operator's mixed strategy."""
        return f"nvidia.com/mig-{self.name}"

    @property
    def usable_memory_bytes(self) -> int:
        return self.usable_memory_mib * MIB

    @pydantic.model_validator(mode="after")
    def _name_matches(self) -> MigProfile:
        match = _MIG_NAME.match(self.name)
        if match is None or int(match["slices"]) != self.compute_slices:
            raise ValueError(f"MIG profile {self.name!r}: name and computeSlices disagree")
        return self


class Price(base.Model):
    """An on-demand price per whole GPU-hour, with where it came from."""

    per_gpu_hour: float = pydantic.Field(ge=0)
    source: str
    date: str = pydantic.Field(pattern=r"^[0-9]{4}-[0-9]{2}(-[0-9]{2})?$")


class GpuModel(base.Model):
    """A GPU model as the catalog knows it, keyed by its canonical id (``H100-80GB``)."""

    id: str
    display_name: str
    architecture: Architecture
    memory_gib: float = pydantic.Field(gt=0, description="nominal memory of the part (display)")
    usable_memory_mib: int = pydantic.Field(
        gt=0, description="framebuffer a process can use, as nvidia-smi / DCGM report it"
    )
    sm_count: int | None = pydantic.Field(
        default=None, gt=0, description="streaming multiprocessors (required with MIG profiles)"
    )
    memory_bandwidth_gb_per_s: float = pydantic.Field(gt=0)
    tdp_watts: float = pydantic.Field(gt=0)
    idle_watts: float = pydantic.Field(gt=0, description="board power when idle")
    bf16_dense_tflops: float = pydantic.Field(
        gt=0, description="dense FP16/BF16 tensor TFLOPS (FP16 where the GPU has no BF16)"
    )
    native_precisions: tuple[precisions.Precision, ...] = pydantic.Field(
        description="formats with tensor-core support (math runs in them, not just storage)"
    )
    runnable_precisions: tuple[precisions.Precision, ...] = pydantic.Field(
        description="formats serving engines can run here at all (e.g. FP8 weight-only on Ampere)"
    )
    mig_profiles: tuple[MigProfile, ...] = ()
    aliases: tuple[str, ...] = pydantic.Field(
        default=(), description="nvidia.com/gpu.product label values and DCGM modelName values"
    )
    price: Price
    sources: tuple[str, ...] = pydantic.Field(min_length=1)

    @property
    def usable_memory_bytes(self) -> int:
        """Bytes a process can use on the whole GPU (not the nominal size)."""
        return self.usable_memory_mib * MIB

    @property
    def memory_bytes(self) -> int:
        """The same as :attr:`usable_memory_bytes`; nominal sizes are never used for sizing."""
        return self.usable_memory_bytes

    @property
    def mig_capable(self) -> bool:
        return bool(self.mig_profiles)

    @functools.cached_property
    def _profiles_by_name(self) -> dict[str, MigProfile]:
        return {p.name: p for p in self.mig_profiles}

    def mig_profile(self, name: str) -> MigProfile | None:
        return self._profiles_by_name.get(name)

    def require_mig_profile(self, name: str) -> MigProfile:
        """The MIG profile ``name``, or ValueError if this GPU has none of that name."""
        profile = self.mig_profile(name)
        if profile is None:
            raise ValueError(f"{self.id} has no MIG profile {name}")
        return profile

    def slot_memory_bytes(self, mig_profile: str | None) -> int:
        """Usable bytes of the whole GPU (``None``) or of one instance of a MIG profile."""
        if mig_profile is None:
            return self.usable_memory_bytes
        return self.require_mig_profile(mig_profile).usable_memory_bytes

    def compute_share(self, mig_profile: str | None) -> float:
        """Fraction of the GPU's SMs (compute, and power) the whole GPU or a MIG instance has."""
        if mig_profile is None:
            return 1.0
        profile = self.require_mig_profile(mig_profile)
        if self.sm_count is None:  # not reached: the validator requires it with MIG profiles
            raise ValueError(f"{self.id} has no smCount")
        return profile.sm_count / self.sm_count

    def memory_share(self, mig_profile: str | None) -> float:
        """Fraction of the GPU's usable memory (and memory bandwidth) a slot has."""
        if mig_profile is None:
            return 1.0
        return self.slot_memory_bytes(mig_profile) / self.usable_memory_bytes

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> GpuModel:
        if not set(self.native_precisions) <= set(self.runnable_precisions):
            raise ValueError(f"{self.id}: every native precision must also be runnable")
        if self.idle_watts >= self.tdp_watts:
            raise ValueError(f"{self.id}: idleWatts must be below tdpWatts")
        if self.usable_memory_mib > self.memory_gib * 1024:
            raise ValueError(f"{self.id}: usableMemoryMib exceeds the nominal memoryGib")
        if self.mig_profiles and self.sm_count is None:
            raise ValueError(f"{self.id}: a GPU with MIG profiles needs its smCount")
        for profile in self.mig_profiles:
            if profile.memory_gib > self.memory_gib:
                raise ValueError(f"{self.id}: MIG profile {profile.name} exceeds GPU memory")
            if profile.usable_memory_mib > self.usable_memory_mib:
                raise ValueError(f"{self.id}: MIG profile {profile.name} exceeds usable memory")
            if self.sm_count is not None and profile.sm_count > self.sm_count:
                raise ValueError(f"{self.id}: MIG profile {profile.name} has more SMs than the GPU")
        return self


class EnergyFactors(base.Model):
    """Facility and grid factors for energy and CO2 projections, with their sources."""

    pue: float = pydantic.Field(ge=1.0, le=3.0, description="power usage effectiveness")
    pue_source: str
    grid_carbon_intensity_grams_per_kwh: float = pydantic.Field(ge=0, le=2000)
    grid_carbon_intensity_source: str


class Catalog(base.Model):
    """Everything the engine needs to know about hardware and money."""

    currency: str = pydantic.Field(pattern=r"^[A-Z]{3}$")
    hours_per_month: float = pydantic.Field(default=730.0, gt=0)
    mig_pricing: str = pydantic.Field(
        default=(
            "max(slice SMs / GPU SMs, slice usable memory / GPU usable memory)"
            " of the whole-GPU price"
        ),
        description="how a MIG slice is priced (an operator convention, not a cloud price)",
    )
    energy: EnergyFactors
    gpus: tuple[GpuModel, ...] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _unique(self) -> Catalog:
        seen: dict[str, str] = {}
        for gpu in self.gpus:
            for key in (gpu.id, gpu.display_name, *gpu.aliases):
                norm = normalize_alias(key)
                if seen.get(norm, gpu.id) != gpu.id:
                    raise ValueError(f"alias {key!r} names both {seen[norm]} and {gpu.id}")
                seen[norm] = gpu.id
        return self

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(g.id for g in self.gpus)

    @functools.cached_property
    def _by_id(self) -> dict[str, GpuModel]:
        return {g.id: g for g in self.gpus}

    @functools.cached_property
    def _by_alias(self) -> dict[str, GpuModel]:
        # Built once per catalog object (hashing the models on every lookup cost seconds per
        # sweep at 10,000 workloads).
        return _alias_index(self.gpus)

    def get(self, gpu_id: str) -> GpuModel | None:
        return self._by_id.get(gpu_id)

    def resolve(self, name: str) -> GpuModel | None:
        """Find a GPU by canonical id or any alias (GFD product label, DCGM modelName)."""
        return self._by_alias.get(normalize_alias(name))

    def with_overrides(self, overrides: CatalogOverrides) -> Catalog:
        """A copy with a user's prices, currency and energy factors in force."""
        unknown = sorted(set(overrides.prices) - set(self.ids))
        if unknown:
            raise ValueError(f"prices: unknown GPU model(s) {', '.join(unknown)}")
        gpus = tuple(
            gpu.model_copy(update={"price": overrides.prices[gpu.id]})
            if gpu.id in overrides.prices
            else gpu
            for gpu in self.gpus
        )
        update: dict[str, object] = {}
        if overrides.pue is not None:
            update |= {"pue": overrides.pue, "pue_source": "user override"}
        grid = overrides.grid_carbon_intensity_grams_per_kwh
        if grid is not None:
            update |= {
                "grid_carbon_intensity_grams_per_kwh": grid,
                "grid_carbon_intensity_source": "user override",
            }
        energy = self.energy.model_copy(update=update)
        return self.model_copy(
            update={"gpus": gpus, "energy": energy, "currency": overrides.currency or self.currency}
        )


class CatalogOverrides(base.Model):
    """What a user may override (Helm values -> ConfigMap, or ``--catalog-overrides FILE``)."""

    currency: str | None = pydantic.Field(default=None, pattern=r"^[A-Z]{3}$")
    pue: float | None = pydantic.Field(default=None, ge=1.0, le=3.0)
    grid_carbon_intensity_grams_per_kwh: float | None = pydantic.Field(default=None, ge=0, le=2000)
    prices: dict[str, Price] = pydantic.Field(default_factory=dict)


@functools.lru_cache(maxsize=16)
def _alias_index(models: tuple[GpuModel, ...]) -> dict[str, GpuModel]:
    """Normalised id and aliases -> GPU, built once per distinct set of GPU models."""
    return {
        normalize_alias(key): gpu
        for gpu in models
        for key in (gpu.id, gpu.display_name, *gpu.aliases)
    }


def normalize_alias(name: str) -> str:
    """Compare GPU names the way clusters spell them: case, spaces, dashes and underscores aside."""
    return re.sub(r"[\s_\-]+", "", name).lower()
