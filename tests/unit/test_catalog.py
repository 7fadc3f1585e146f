"""The packaged GPU catalog and the loading of user overrides."""

from __future__ import annotations

import itertools
import json
import pathlib

import pytest
from hack.devcluster import nodes as kwok_nodes

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
# Boards whose bandwidth, power, throughput or price differ from the SXM part of the same name.
PCIE_NVL_IDS = {"H100-PCIe-80GB", "H200-NVL-141GB", "A100-PCIe-80GB"}
MIG_IDS = {
    "B200",
    "H200-141GB",
    "H200-NVL-141GB",
    "H100-NVL-94GB",
    "H100-80GB",
    "H100-PCIe-80GB",
    "A100-80GB",
    "A100-PCIe-80GB",
    "A100-40GB",
}
# Usable framebuffer (MiB) as nvidia-smi reports it, and total SMs, of the whole GPU.
USABLE_MIB = {
    "B200": 183359,
    "H200-141GB": 143771,
    "H100-NVL-94GB": 95830,
    "H100-80GB": 81559,
    "A100-80GB": 81920,
    "A100-40GB": 40960,
    "L40S": 46068,
    "L40": 46068,
    "L4": 23034,
    "A10G": 23028,
    "T4": 15360,
}
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


def test_exactly_the_canonical_ids_and_the_pcie_nvl_boards(catalog: gpus.Catalog) -> None:
    assert len(catalog.ids) == len(CANONICAL_IDS | PCIE_NVL_IDS)
    assert set(catalog.ids) == CANONICAL_IDS | PCIE_NVL_IDS


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


def test_usable_memory_is_what_nvidia_smi_reports(catalog: gpus.Catalog) -> None:
    for gpu_id, mib in USABLE_MIB.items():
        gpu = catalog.get(gpu_id)
        assert gpu is not None
        assert gpu.usable_memory_mib == mib, gpu_id
        assert gpu.usable_memory_bytes == mib * 2**20
        assert gpu.slot_memory_bytes(None) == mib * 2**20
    for gpu in catalog.gpus:
        # The marketing "GB" read as GiB is never usable: the framebuffer is smaller.
        assert gpu.usable_memory_mib <= gpu.memory_gib * 1024, gpu.id
        assert gpu.memory_bytes == gpu.usable_memory_bytes, gpu.id
        assert any("usableMemoryMib" in s for s in gpu.sources), gpu.id
    l4 = catalog.get("L4")
    assert l4 is not None
    assert l4.usable_memory_bytes / 2**30 == pytest.approx(22.49, abs=0.01)


def test_mig_usable_memory_and_sms(catalog: gpus.Catalog) -> None:
    for gpu in catalog.gpus:
        if not gpu.mig_capable:
            assert gpu.compute_share(None) == gpu.memory_share(None) == 1.0
            continue
        assert gpu.sm_count is not None, gpu.id
        assert any("-lgip" in s for s in gpu.sources), gpu.id
        by_slices: dict[int, list[int]] = {}
        for profile in gpu.mig_profiles:
            where = (gpu.id, profile.name)
            assert profile.usable_memory_mib <= gpu.usable_memory_mib, where
            # Under the nominal size of the name and within one 128 MiB step of the listing.
            assert profile.usable_memory_mib <= profile.memory_gib * 1024, where
            assert profile.usable_memory_mib % 128 == 0, where
            assert profile.sm_count <= gpu.sm_count, where
            assert gpu.slot_memory_bytes(profile.name) == profile.usable_memory_mib * 2**20, where
            assert gpu.compute_share(profile.name) == profile.sm_count / gpu.sm_count, where
            assert gpu.memory_share(profile.name) == pytest.approx(
                profile.usable_memory_mib / gpu.usable_memory_mib
            ), where
            assert 0 < gpu.compute_share(profile.name) <= 1, where
            by_slices.setdefault(profile.compute_slices, []).append(profile.sm_count)
        sizes = sorted(by_slices)
        for smaller, larger in itertools.pairwise(sizes):
            assert max(by_slices[smaller]) < min(by_slices[larger]), gpu.id
        # "+me" adds media engines, not SMs or memory.
        for profile in gpu.mig_profiles:
            if profile.name.endswith("+me"):
                base = gpu.mig_profile(profile.name.removesuffix("+me"))
                assert base is not None, (gpu.id, profile.name)
                assert (base.sm_count, base.usable_memory_mib) == (
                    profile.sm_count,
                    profile.usable_memory_mib,
                )
                assert profile.max_instances == 1


@pytest.mark.parametrize(
    ("gpu_id", "profile", "mib", "sms"),
    [
        ("A100-80GB", "1g.10gb", 9728, 14),
        ("A100-80GB", "2g.20gb", 19968, 28),
        ("A100-80GB", "3g.40gb", 40192, 42),
        ("A100-80GB", "4g.40gb", 40192, 56),
        ("A100-80GB", "7g.80gb", 80896, 98),
        ("A100-40GB", "1g.5gb", 4864, 14),
        ("H100-80GB", "1g.10gb", 9856, 16),
        ("H100-80GB", "2g.20gb", 19968, 32),
        ("H100-80GB", "3g.40gb", 40192, 60),
        ("H100-80GB", "4g.40gb", 40192, 64),
        ("H100-80GB", "7g.80gb", 81152, 132),
        ("H100-NVL-94GB", "1g.12gb+me", 11008, 16),
        ("H100-NVL-94GB", "3g.47gb", 47488, 60),
        ("H200-141GB", "3g.71gb", 71168, 60),
        ("B200", "1g.23gb+me", 20992, 18),
    ],
)
def test_mig_profiles_as_lgip_lists_them(
    catalog: gpus.Catalog, gpu_id: str, profile: str, mib: int, sms: int
) -> None:
    gpu = catalog.get(gpu_id)
    assert gpu is not None
    slice_ = gpu.require_mig_profile(profile)
    assert (slice_.usable_memory_mib, slice_.sm_count) == (mib, sms)
    assert slice_.usable_memory_bytes == mib * 2**20
    assert gpu.slot_memory_bytes(profile) == mib * 2**20


def test_compute_share_is_sms_not_sevenths(catalog: gpus.Catalog) -> None:
    a100, h100 = catalog.get("A100-80GB"), catalog.get("H100-80GB")
    assert a100 is not None and h100 is not None
    assert a100.sm_count == 108 and h100.sm_count == 132
    assert a100.compute_share("1g.10gb") == pytest.approx(14 / 108)
    assert a100.compute_share("7g.80gb") == pytest.approx(98 / 108)
    assert h100.compute_share("3g.40gb") == pytest.approx(60 / 132)
    assert h100.compute_share("7g.80gb") == 1.0
    with pytest.raises(ValueError, match=r"H100-80GB has no MIG profile 1g\.5gb"):
        h100.compute_share("1g.5gb")
    with pytest.raises(ValueError, match="no MIG profile"):
        h100.slot_memory_bytes("1g.5gb")


def test_mig_gpu_without_sm_count_is_rejected() -> None:
    text = (
        pathlib.Path(catalogs.__file__).parent.joinpath("data", "catalog.yaml").read_text("utf-8")
    )
    broken = text.replace("    smCount: 132\n", "", 1)
    with pytest.raises(catalogs.CatalogError, match="needs its smCount"):
        catalogs.parse_catalog(broken, "catalog.yaml")
    too_big = text.replace(
        "usableMemoryMib: 16384, smCount: 16", "usableMemoryMib: 16384, smCount: 160", 1
    )
    with pytest.raises(catalogs.CatalogError, match="more SMs than the GPU"):
        catalogs.parse_catalog(too_big, "catalog.yaml")


def test_mig_profile_sets(catalog: gpus.Catalog) -> None:
    def names(gpu_id: str) -> list[str]:
        gpu = catalog.get(gpu_id)
        assert gpu is not None
        return [p.name for p in gpu.mig_profiles]

    assert names("A100-80GB") == names("H100-80GB")
    assert "1g.10gb+me" in names("H100-80GB")
    assert "1g.5gb+me" in names("A100-40GB")
    assert "7g.141gb" in names("H200-141GB")
    assert "1g.12gb+me" in names("H100-NVL-94GB")
    assert "1g.23gb+me" in names("B200")
    assert "1g.18gb+me" in names("H200-141GB")
    # Same silicon, same MIG profile set (mig-parted serves them with one device filter list).
    assert names("H100-PCIe-80GB") == names("H100-80GB")
    assert names("A100-PCIe-80GB") == names("A100-80GB")
    assert names("H200-NVL-141GB") == names("H200-141GB")
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
    ("board", "sxm", "bandwidth", "tdp", "tflops"),
    [
        ("H100-PCIe-80GB", "H100-80GB", 2000, 350, 756),
        ("H200-NVL-141GB", "H200-141GB", 4800, 600, 836),
        ("A100-PCIe-80GB", "A100-80GB", 1935, 300, 312),
    ],
)
def test_pcie_and_nvl_boards_have_their_own_figures(
    catalog: gpus.Catalog, board: str, sxm: str, bandwidth: float, tdp: float, tflops: float
) -> None:
    gpu, sxm_gpu = catalog.get(board), catalog.get(sxm)
    assert gpu is not None and sxm_gpu is not None
    assert (gpu.memory_bandwidth_gb_per_s, gpu.tdp_watts, gpu.bf16_dense_tflops) == (
        bandwidth,
        tdp,
        tflops,
    )
    assert gpu.tdp_watts < sxm_gpu.tdp_watts
    assert gpu.architecture == sxm_gpu.architecture
    assert gpu.native_precisions == sxm_gpu.native_precisions
    assert gpu.usable_memory_mib == sxm_gpu.usable_memory_mib
    assert not set(gpu.aliases) & set(sxm_gpu.aliases)
    # A price that no primary list confirms says so.
    if board != "A100-PCIe-80GB":
        assert "UNVERIFIED" in gpu.price.source
    assert any("UNVERIFIED" in s for s in gpu.sources) or board == "A100-PCIe-80GB"


def test_mig_pricing_convention_is_stated(catalog: gpus.Catalog) -> None:
    assert "SMs" in catalog.mig_pricing and "usable memory" in catalog.mig_pricing


@pytest.mark.parametrize(
    ("name", "gpu_id"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA H100 PCIe", "H100-PCIe-80GB"),
        ("NVIDIA-H100-PCIe", "H100-PCIe-80GB"),
        ("NVIDIA-H100-PCIe-SHARED", "H100-PCIe-80GB"),
        ("NVIDIA-H100-80GB-HBM3-SHARED", "H100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA-A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-80GB-PCIe", "A100-PCIe-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-PCIe-80GB"),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-H200", "H200-141GB"),
        ("NVIDIA H200 NVL", "H200-NVL-141GB"),
        ("NVIDIA-H200-NVL", "H200-NVL-141GB"),
        ("NVIDIA H200", "H200-141GB"),
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


def test_simulated_kwok_nodes_label_the_catalog_sizes(catalog: gpus.Catalog) -> None:
    for gpu_id, spec in kwok_nodes.GPU_MODELS.items():
        gpu = catalog.get(gpu_id)
        assert gpu is not None, gpu_id
        assert catalog.resolve(spec.product) == gpu, gpu_id
        assert spec.memory_mib == gpu.usable_memory_mib, gpu_id
        assert spec.mig_capable == gpu.mig_capable, gpu_id
        for name, (mib, sms) in (spec.mig_profiles or {}).items():
            profile = gpu.require_mig_profile(name)
            assert (mib, sms) == (profile.usable_memory_mib, profile.sm_count), (gpu_id, name)
    node = kwok_nodes.gpu_node("n", "H100-80GB", 8, mig={"3g.40gb": 2}, mig_gpus=1)
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert labels["nvidia.com/mig-3g.40gb.memory"] == "40192"
    assert labels["nvidia.com/mig-3g.40gb.multiprocessors"] == "60"
