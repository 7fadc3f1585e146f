"""The packaged GPU catalog and the loading of user overrides."""

from __future__ import annotations

import json
import pathlib

import pytest

from gpu_rightsizer import catalogs
from gpu_rightsizer.models import gpus, precisions

CANONICAL_IDS = {
    "B200",
    "H200-141GB",
    "H100-NVL-94GB",
    "H100-80GB",
    "A100-80GB",
    "A100-40GB",
    "L40S",
    "L40",
    "L4",
    "A10G",
    "A10",
    "T4",
    "V100-32GB",
}
MIG_IDS = {"B200", "H200-141GB", "H100-NVL-94GB", "H100-80GB", "A100-80GB", "A100-40GB"}
FP8_ARCHITECTURES = {gpus.Architecture.ADA, gpus.Architecture.HOPPER, gpus.Architecture.BLACKWELL}


@pytest.fixture(scope="module")
def catalog() -> gpus.Catalog:
    return catalogs.default_catalog()


def test_packaged_catalog_loads_and_is_cached(catalog: gpus.Catalog) -> None:
    assert catalog.currency == "USD"
    assert catalog.hours_per_month == 730
    assert catalog.energy.pue == 1.58
    assert catalog.energy.grid_carbon_intensity_grams_per_kwh == 367
    assert catalogs.default_catalog() is catalog


def test_exactly_the_canonical_ids(catalog: gpus.Catalog) -> None:
    assert len(catalog.ids) == len(CANONICAL_IDS)
    assert set(catalog.ids) == CANONICAL_IDS


def test_fp8_native_only_on_ada_hopper_blackwell(catalog: gpus.Catalog) -> None:
    for gpu in catalog.gpus:
        native_fp8 = precisions.Precision.FP8 in gpu.native_precisions
        assert native_fp8 == (gpu.architecture in FP8_ARCHITECTURES), gpu.id


def test_precision_rules(catalog: gpus.Catalog) -> None:
    p = precisions.Precision
    for gpu in catalog.gpus:
        native, runnable = set(gpu.native_precisions), set(gpu.runnable_precisions)
        assert {p.FP32, p.FP16} <= native, gpu.id
        assert native <= runnable, gpu.id
        assert p.INT4 in runnable, gpu.id  # GPTQ runs everywhere, Volta included
        old = gpu.architecture in {gpus.Architecture.VOLTA, gpus.Architecture.TURING}
        assert (p.BF16 in runnable) == (not old), gpu.id
    assert p.INT8 not in catalog.resolve("V100-32GB").runnable_precisions  # type: ignore[union-attr]
    assert p.FP8 in catalog.resolve("A100-80GB").runnable_precisions  # type: ignore[union-attr]
    assert p.INT4 not in catalog.resolve("H100-80GB").native_precisions  # type: ignore[union-attr]


def test_mig_only_on_datacenter_parts(catalog: gpus.Catalog) -> None:
    assert {g.id for g in catalog.gpus if g.mig_capable} == MIG_IDS
    for gpu in catalog.gpus:
        names = [p.name for p in gpu.mig_profiles]
        assert len(names) == len(set(names)), gpu.id
        for profile in gpu.mig_profiles:
            assert profile.memory_gib <= gpu.memory_gib, (gpu.id, profile.name)
            assert 1 <= profile.compute_slices <= 7, (gpu.id, profile.name)
            assert profile.compute_slices * profile.max_instances <= 7, (gpu.id, profile.name)


def test_mig_profile_sets(catalog: gpus.Catalog) -> None:
    def names(gpu_id: str) -> list[str]:
        gpu = catalog.get(gpu_id)
        assert gpu is not None
        return [p.name for p in gpu.mig_profiles]

    assert names("A100-80GB") == names("H100-80GB")
    assert "1g.10gb+me" in names("H100-80GB")
    assert "1g.5gb+me" in names("A100-40GB")
    assert "7g.141gb" in names("H200-141GB")
    assert not any(n.endswith("+me") for n in names("H100-NVL-94GB") + names("B200"))
    gpu = catalog.get("H100-80GB")
    assert gpu is not None
    profile = gpu.mig_profile("3g.40gb")
    assert profile is not None
    assert profile.resource_name == "nvidia.com/mig-3g.40gb"


def test_every_gpu_has_a_sourced_price(catalog: gpus.Catalog) -> None:
    for gpu in catalog.gpus:
        assert gpu.price.per_gpu_hour > 0, gpu.id
        assert gpu.price.source.strip(), gpu.id
        assert gpu.price.date, gpu.id
        assert gpu.sources, gpu.id
        assert any("modelling assumption" in s for s in gpu.sources), gpu.id
    h100 = catalog.get("H100-80GB")
    assert h100 is not None
    assert h100.price.per_gpu_hour == 6.88


@pytest.mark.parametrize(
    ("name", "gpu_id"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA H100 PCIe", "H100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA-A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-80GB-PCIe", "A100-80GB"),
        ("NVIDIA-H200", "H200-141GB"),
        ("NVIDIA H200 NVL", "H200-141GB"),
        ("NVIDIA H100 NVL", "H100-NVL-94GB"),
        ("NVIDIA-L40S", "L40S"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA-L4-SHARED", "L4"),
        ("NVIDIA-A10G", "A10G"),
        ("NVIDIA A10", "A10"),
        ("Tesla T4", "T4"),
        ("Tesla-T4", "T4"),
        ("Tesla V100-SXM2-32GB", "V100-32GB"),
        ("Tesla-V100-PCIE-32GB", "V100-32GB"),
        ("NVIDIA B200", "B200"),
        ("h100-80gb", "H100-80GB"),
    ],
)
def test_aliases_resolve(catalog: gpus.Catalog, name: str, gpu_id: str) -> None:
    gpu = catalog.resolve(name)
    assert gpu is not None, name
    assert gpu.id == gpu_id


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4090", "Tesla K80", "", "H100"])
def test_unknown_names_resolve_to_none(catalog: gpus.Catalog, name: str) -> None:
    assert catalog.resolve(name) is None


def test_parse_catalog_rejects_alias_collisions(catalog: gpus.Catalog) -> None:
    text = (
        pathlib.Path(catalogs.__file__).parent.joinpath("data", "catalog.yaml").read_text("utf-8")
    )
    broken = text.replace("- NVIDIA-L40-SHARED", "- NVIDIA-L40S-SHARED", 1)
    with pytest.raises(catalogs.CatalogError, match=r"^catalog\.yaml: .*names both"):
        catalogs.parse_catalog(broken, "catalog.yaml")


def _write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_overrides_change_prices_pue_and_currency(
    catalog: gpus.Catalog, tmp_path: pathlib.Path
) -> None:
    path = _write(
        tmp_path,
        "overrides.yaml",
        "currency: EUR\n"
        "pue: 1.2\n"
        "gridCarbonIntensityGramsPerKwh: 56\n"
        "prices:\n"
        "  H100-80GB: {perGpuHour: 2.5, source: our contract, date: 2026-01-01}\n",
    )
    overrides = catalogs.load_overrides(path)
    assert overrides.prices["H100-80GB"].date == "2026-01-01"  # unquoted dates stay strings
    updated = catalog.with_overrides(overrides)
    h100, a100 = updated.get("H100-80GB"), updated.get("A100-80GB")
    assert h100 is not None and a100 is not None
    assert h100.price.per_gpu_hour == 2.5
    assert h100.price.source == "our contract"
    assert a100.price == catalog.get("A100-80GB").price  # type: ignore[union-attr]
    assert updated.currency == "EUR"
    assert updated.energy.pue == 1.2
    assert updated.energy.pue_source == "user override"
    assert updated.energy.grid_carbon_intensity_grams_per_kwh == 56
    assert catalog.currency == "USD"  # the packaged catalog is untouched
    assert catalogs.load_catalog(path) == updated


def test_json_overrides(catalog: gpus.Catalog, tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "overrides.json", json.dumps({"pue": 1.1}))
    assert catalog.with_overrides(catalogs.load_overrides(path)).energy.pue == 1.1


def test_empty_override_file_changes_nothing(catalog: gpus.Catalog, tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "overrides.yaml", "")
    assert catalog.with_overrides(catalogs.load_overrides(path)) == catalog


def test_override_for_unknown_gpu_names_it(catalog: gpus.Catalog, tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        "overrides.yaml",
        "prices:\n  RTX-4090: {perGpuHour: 0.4, source: x, date: '2026-01'}\n",
    )
    overrides = catalogs.load_overrides(path)
    with pytest.raises(ValueError, match="RTX-4090"):
        catalog.with_overrides(overrides)
    with pytest.raises(catalogs.CatalogError, match=r"overrides\.yaml: .*RTX-4090"):
        catalogs.load_catalog(path)


def test_malformed_override_yaml(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "overrides.yaml", "prices: {H100-80GB: [unclosed\n")
    with pytest.raises(catalogs.CatalogError) as info:
        catalogs.load_overrides(path)
    message = str(info.value)
    assert message.startswith(f"{path}: malformed YAML: line ")
    assert "\n" not in message
    assert "Traceback" not in message


def test_malformed_override_json(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "overrides.json", '{"pue": }')
    with pytest.raises(catalogs.CatalogError, match=r"overrides\.json: malformed JSON at line 1"):
        catalogs.load_overrides(path)


def test_negative_price_names_file_and_field(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        "overrides.yaml",
        "prices:\n  H100-80GB: {perGpuHour: -1, source: x, date: '2026-01'}\n",
    )
    with pytest.raises(catalogs.CatalogError) as info:
        catalogs.load_overrides(path)
    assert str(info.value) == (
        f"{path}: prices.H100-80GB.perGpuHour: Input should be greater than or equal to 0"
    )


def test_unknown_override_field_and_non_mapping(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "overrides.yaml", "puee: 1.2\n")
    with pytest.raises(catalogs.CatalogError, match=r"overrides\.yaml: puee: Extra inputs"):
        catalogs.load_overrides(path)
    path = _write(tmp_path, "overrides.yaml", "- 1\n- 2\n")
    with pytest.raises(catalogs.CatalogError, match="expected a mapping"):
        catalogs.load_overrides(path)


def test_missing_override_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(catalogs.CatalogError, match=r"absent\.yaml: cannot read"):
        catalogs.load_overrides(path)
