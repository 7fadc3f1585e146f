"""The fleet simulator: plausible, deterministic numbers with dcgm-exporter's and vLLM's names."""

from __future__ import annotations

import io
import pathlib
import re
import urllib.error
import urllib.request

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import yaml

from gpu_rightsizer import catalogs
from gpu_rightsizer.fleetsim import (
    __main__ as cli,
    deployments,
    exporter,
    fleets,
    layouts,
    openmetrics,
    physics,
    series,
    signals,
)
from gpu_rightsizer.models import precisions

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_FLEET = REPO_ROOT / "hack" / "fleet" / "fleet.yaml"
# 2026-11-02 00:00 UTC, a Monday; the epoch is 30 days earlier.
T0 = 1_793_577_600.0
EPOCH = series.default_epoch(T0)
HOUR = 3_600.0
DAY = 86_400.0
SAFE = "[bcdfghjklmnpqrstvwxz2456789]"

CATALOG = catalogs.default_catalog()


def _simulator(fleet: fleets.Fleet, epoch: float = EPOCH) -> series.Simulator:
    return series.Simulator(fleet, CATALOG, epoch=epoch)


def _fleet(*workloads: dict[str, object], seed: int = 3, **extra: object) -> fleets.Fleet:
    return fleets.Fleet.model_validate({"seed": seed, "workloads": list(workloads), **extra})


CHAT = {
    "name": "chat",
    "namespace": "ml",
    "modelName": "meta-llama/Llama-3.1-8B-Instruct",
    "parameters": 8.03e9,
    "gpuModel": "H100-80GB",
    "replicas": 2,
    "engine": "vllm",
    "traffic": {"shape": "diurnal", "low": 0.05, "high": 0.7},
}
MIG = {
    "name": "mini",
    "namespace": "ml",
    "parameters": 3.21e9,
    "gpuModel": "H100-80GB",
    "migProfile": "3g.40gb",
    "replicas": 3,
    "engine": "vllm",
    "traffic": {"shape": "bursty"},
}
EMBED = {
    "name": "embed",
    "namespace": "search",
    "container": "embedder",
    "parameters": 3.35e8,
    "precision": "fp16",
    "gpuModel": "L4",
    "replicas": 2,
    "traffic": {"shape": "bursty", "high": 0.9},
}
TRAIN = {
    "name": "trainer",
    "namespace": "research",
    "parameters": 7.24e9,
    "gpuModel": "H100-80GB",
    "gpusPerReplica": 4,
    "traffic": {"shape": "training"},
}


@pytest.fixture(scope="module")
def example() -> tuple[series.Simulator, series.FloatArray, dict[str, list[series.Series]]]:
    """The example fleet over three days at 5-minute steps."""
    simulator = _simulator(fleets.load(EXAMPLE_FLEET))
    times = openmetrics.timestamps(T0, T0 + 3 * DAY, 300.0)
    return simulator, times, simulator.series(times)


# --- the fleet file ---------------------------------------------------------------------------


def test_example_fleet_is_a_dozen_varied_workloads() -> None:
    fleet = fleets.load(EXAMPLE_FLEET)
    assert len(fleet.workloads) >= 12
    shapes = {w.traffic.shape for w in fleet.workloads}
    assert shapes == set(fleets.TrafficShape)
    assert any(w.mig_profile for w in fleet.workloads)
    assert any(w.engine is fleets.Engine.VLLM and w.gpus_per_replica > 1 for w in fleet.workloads)
    assert {w.gpu_model for w in fleet.workloads} >= {"H100-80GB", "L4", "H200-141GB"}
    for workload in fleet.workloads:  # every one is laid out against the real catalog
        layouts.place(fleet.seed, CATALOG, workload)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpuModel": "Z9000"}, "unknown GPU model 'Z9000'"),
        ({"gpuModel": "L4", "migProfile": "3g.40gb"}, "L4 has no MIG profile '3g.40gb'"),
        ({"migProfile": "1g.10gb"}, "leave no KV cache"),
        ({"parameters": 7.06e10}, "leave no KV cache"),
    ],
)
def test_fleets_that_cannot_exist_are_refused_in_one_line(
    change: dict[str, object], message: str
) -> None:
    fleet = _fleet({**CHAT, **change})
    with pytest.raises(fleets.FleetError) as caught:
        _simulator(fleet)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "ml/chat" in str(caught.value)


def test_a_model_too_big_for_a_non_vllm_server_is_refused() -> None:
    with pytest.raises(fleets.FleetError, match=r"needs .* but L4 has 22\.5 GiB usable"):
        _simulator(_fleet({**EMBED, "parameters": 2.0e10}))


def test_bad_fleet_files_name_the_file_and_field(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("workloads:\n  - name: x\n    gpuModel: L4\n    replicas: 0\n")
    with pytest.raises(fleets.FleetError) as caught:
        fleets.load(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert "workloads.0.parameters" in text and "workloads.0.replicas" in text
    path.write_text("workloads: [unclosed\n")
    with pytest.raises(fleets.FleetError, match="malformed YAML"):
        fleets.load(path)
    with pytest.raises(fleets.FleetError, match="ml/chat appears twice"):
        fleets.parse(yaml.safe_dump({"workloads": [CHAT, CHAT]}), "twice.yaml")


# --- names ------------------------------------------------------------------------------------


def test_pod_names_are_the_deployments_and_deterministic_for_a_seed() -> None:
    fleet = _fleet(CHAT, MIG, EMBED, TRAIN, seed=42)
    first = _simulator(fleet)
    again = _simulator(fleet)
    other = _simulator(fleet.model_copy(update={"seed": 43}))
    for placement in first.placements:
        name = placement.workload.name
        pods = [r.pod for r in placement.replicas]
        assert len(pods) == placement.workload.replicas == len(set(pods))
        for pod in pods:
            assert re.fullmatch(rf"{name}-{SAFE}{{10}}-{SAFE}{{5}}", pod), pod
            assert pod.startswith(f"{name}-{placement.template_hash}-")
            assert len(pod) <= 63
        assert pods == [r.pod for r in again.placement(*placement.workload.key).replicas]
        assert pods != [r.pod for r in other.placement(*placement.workload.key).replicas]
        assert pods == list(layouts.pod_names(42, placement.workload))


def test_dcgm_model_names_and_product_labels_come_from_the_catalog() -> None:
    h100 = CATALOG.get("H100-80GB")
    a100 = CATALOG.get("A100-80GB")
    assert h100 is not None and a100 is not None
    assert layouts.dcgm_model_name(h100) == "NVIDIA H100 80GB HBM3"
    assert layouts.product_label(h100) == "NVIDIA-H100-80GB-HBM3"
    assert layouts.dcgm_model_name(a100) == "NVIDIA A100-SXM4-80GB"
    assert layouts.product_label(a100) == "NVIDIA-A100-SXM4-80GB"


# --- plausibility -----------------------------------------------------------------------------


def test_every_series_of_the_example_fleet_is_plausible(
    example: tuple[series.Simulator, series.FloatArray, dict[str, list[series.Series]]],
) -> None:
    simulator, times, by_family = example
    gpus = {p.workload.key: p for p in simulator.placements}
    for family in series.FAMILIES:
        for member in by_family[family.name]:
            values = member.values
            assert values.shape == times.shape
            assert np.all(np.isfinite(values)), member.labels
    for used, free in zip(
        by_family[series.FB_USED.name], by_family[series.FB_FREE.name], strict=True
    ):
        labels = used.label_dict
        placement = gpus[(labels["namespace"], labels["pod"].rsplit("-", 2)[0])]
        capacity_mib = placement.slot_memory_bytes / 2**20
        assert used.labels == free.labels
        assert np.all(used.values > 0)
        assert np.all(used.values <= capacity_mib)
        np.testing.assert_array_equal(used.values + free.values, capacity_mib)
        # DCGM's FB_USED + FB_FREE add up to the usable MiB (the -lgip figure for an instance).
        gpu, mig = placement.gpu, placement.mig
        usable = mig.usable_memory_mib if mig else gpu.usable_memory_mib
        assert capacity_mib == usable
        # Weights alone are a floor.
        weights_mib = physics.plan_memory(placement).weights_bytes / 2**20
        assert np.all(used.values >= weights_mib)
    for member in by_family[series.POWER_USAGE.name]:
        labels = member.label_dict
        gpu = CATALOG.resolve(labels["modelName"])
        assert gpu is not None
        assert np.all(member.values >= gpu.idle_watts)
        assert np.all(member.values <= gpu.tdp_watts)
    for family in (series.GR_ENGINE_ACTIVE, series.PIPE_TENSOR_ACTIVE, series.DRAM_ACTIVE):
        for member in by_family[family.name]:
            assert np.all((member.values >= 0) & (member.values <= 1))
    for member in by_family[series.GPU_UTIL.name]:
        assert np.all((member.values >= 0) & (member.values <= 100))
        np.testing.assert_array_equal(member.values, np.round(member.values))
    for member in by_family[series.KV_CACHE_USAGE.name]:
        assert np.all((member.values >= 0) & (member.values <= 1))
    for family in (series.REQUESTS_RUNNING, series.REQUESTS_WAITING):
        for member in by_family[family.name]:
            assert np.all(member.values >= 0)


def test_power_follows_activity(
    example: tuple[series.Simulator, series.FloatArray, dict[str, list[series.Series]]],
) -> None:
    _, _, by_family = example
    for active, power in zip(
        by_family[series.GR_ENGINE_ACTIVE.name], by_family[series.POWER_USAGE.name], strict=True
    ):
        if "GPU_I_PROFILE" in active.label_dict or np.ptp(active.values) < 0.1:
            continue  # MIG power is the whole GPU's; flat activity says nothing
        assert np.corrcoef(active.values, power.values)[0, 1] > 0.8, active.labels


def test_energy_counters_only_grow_and_integrate_the_power(
    example: tuple[series.Simulator, series.FloatArray, dict[str, list[series.Series]]],
) -> None:
    simulator, _, by_family = example
    fine = np.arange(T0, T0 + 3 * DAY, 15.0)
    fine_state = {
        p.workload.key: simulator.behaviour(*p.workload.key).state(fine)
        for p in simulator.placements
    }
    for counter in by_family[series.TOTAL_ENERGY.name]:
        values = counter.values
        assert np.all(np.diff(values) >= 0), counter.labels
        labels = counter.label_dict
        key = (labels["namespace"], labels["pod"].rsplit("-", 2)[0])
        watts = fine_state[key].power_watts[labels["UUID"]]
        joules = float(np.sum(watts) * 15.0)
        measured = (values[-1] - values[0]) / 1000.0
        assert measured == pytest.approx(joules, rel=0.01), labels
    for counter in by_family[series.PREEMPTIONS.name]:
        assert np.all(np.diff(counter.values) >= 0)


def test_counters_continue_from_history_into_live_samples() -> None:
    fleet = _fleet(CHAT, MIG)
    history = _simulator(fleet)
    times = openmetrics.timestamps(T0, T0 + DAY, 60.0)
    past = history.series(times)
    later = np.array([T0 + DAY + 17.5])
    live = history.series(later)  # continues the cached integral
    fresh = _simulator(fleet).series(later)  # integrates from the epoch again
    for name in (series.TOTAL_ENERGY.name, series.PREEMPTIONS.name):
        for before, after, again in zip(past[name], live[name], fresh[name], strict=True):
            assert after.values[0] >= before.values[-1]
            assert after.values[0] == pytest.approx(again.values[0], rel=1e-12)


def test_gauges_are_the_same_alone_or_inside_a_history() -> None:
    simulator = _simulator(_fleet(CHAT, EMBED))
    times = openmetrics.timestamps(T0, T0 + 6 * HOUR, 60.0)
    whole = simulator.series(times)
    alone = _simulator(_fleet(CHAT, EMBED)).series(times[100:101])
    for family in (series.GR_ENGINE_ACTIVE, series.FB_USED, series.KV_CACHE_USAGE):
        for long, single in zip(whole[family.name], alone[family.name], strict=True):
            assert long.values[100] == single.values[0]


def test_same_seed_same_series_other_seed_other_series() -> None:
    times = openmetrics.timestamps(T0, T0 + 2 * HOUR, 60.0)
    first = _simulator(_fleet(CHAT, EMBED, seed=5)).series(times)
    again = _simulator(_fleet(CHAT, EMBED, seed=5)).series(times)
    other = _simulator(_fleet(CHAT, EMBED, seed=6)).series(times)
    for a, b, c in zip(
        first[series.GR_ENGINE_ACTIVE.name],
        again[series.GR_ENGINE_ACTIVE.name],
        other[series.GR_ENGINE_ACTIVE.name],
        strict=True,
    ):
        assert a.labels == b.labels
        np.testing.assert_array_equal(a.values, b.values)
        assert a.labels != c.labels
        assert not np.array_equal(a.values, c.values)


def test_vllm_preallocates_memory_while_kv_cache_usage_varies() -> None:
    simulator = _simulator(_fleet(CHAT))
    times = openmetrics.timestamps(T0, T0 + 2 * DAY, 300.0)
    by_family = simulator.series(times)
    for used in by_family[series.FB_USED.name]:
        assert np.ptp(used.values) == 0
        # 90 % of the framebuffer nvidia-smi reports for an H100 80GB (81559 MiB), not of 80 GiB.
        assert used.values[0] == pytest.approx(0.9 * 81559, abs=64)
    for usage in by_family[series.KV_CACHE_USAGE.name]:
        assert np.ptp(usage.values) > 0.2
        assert usage.values.max() < 0.5
    info = by_family[series.CACHE_CONFIG.name]
    assert len(info) == 2
    for member in info:
        labels = member.label_dict
        # 71.7 GiB budget - 15 GiB weights - 1.5 GiB overhead over 16 tokens x 128 KiB blocks.
        assert int(labels["num_gpu_blocks"]) == pytest.approx(28_000, rel=0.05)
        assert labels["block_size"] == "16"
        assert np.all(member.values == 1)


def test_kv_cache_beyond_capacity_preempts_and_queues() -> None:
    busy = {
        **CHAT,
        "kvCacheUsageAtPeak": 1.2,
        "traffic": {"shape": "constant", "low": 0.95, "high": 1.0},
    }
    by_family = _simulator(_fleet(busy)).series(openmetrics.timestamps(T0, T0 + HOUR, 60.0))
    for usage in by_family[series.KV_CACHE_USAGE.name]:
        assert usage.values.max() == 1.0
    for counter in by_family[series.PREEMPTIONS.name]:
        assert counter.values[-1] > counter.values[0]
    assert any(m.values.max() > 0 for m in by_family[series.REQUESTS_WAITING.name])


def test_non_vllm_memory_is_weights_plus_load() -> None:
    simulator = _simulator(_fleet(EMBED))
    times = openmetrics.timestamps(T0, T0 + DAY, 60.0)
    by_family = simulator.series(times)
    weights_mib = 3.35e8 * 2 / 2**20
    for used, active in zip(
        by_family[series.FB_USED.name], by_family[series.GR_ENGINE_ACTIVE.name], strict=True
    ):
        assert used.values.min() >= weights_mib + physics.RUNTIME_OVERHEAD_BYTES / 2**20 - 1
        assert np.corrcoef(used.values, active.values)[0, 1] > 0.9


def test_training_holds_optimizer_state_and_pauses_for_checkpoints() -> None:
    by_family = _simulator(_fleet(TRAIN)).series(openmetrics.timestamps(T0, T0 + DAY, 60.0))
    used = by_family[series.FB_USED.name]
    assert len(used) == 4  # one series per GPU of the replica, one pod
    assert len({m.label_dict["pod"] for m in used}) == 1
    assert len({m.label_dict["UUID"] for m in used}) == 4
    for member in used:  # 16 bytes a parameter over 4 GPUs ≈ 27 GiB, plus activations
        assert member.values.min() > 7.24e9 * 16 / 4 / 2**20
    for member in by_family[series.GR_ENGINE_ACTIVE.name]:
        assert np.median(member.values) > 0.8
        assert member.values.min() < 0.1  # checkpoints


# --- MIG --------------------------------------------------------------------------------------


def test_mig_series_have_instance_labels_and_no_gpu_util() -> None:
    simulator = _simulator(_fleet(MIG, CHAT))
    times = openmetrics.timestamps(T0, T0 + 6 * HOUR, 60.0)
    by_family = simulator.series(times)
    mig_pods = {r.pod for r in simulator.placement("ml", "mini").replicas}
    mig_series = [m for m in by_family[series.FB_USED.name] if m.label_dict["pod"] in mig_pods]
    assert len(mig_series) == 3
    for member in mig_series:
        labels = member.label_dict
        assert labels["GPU_I_PROFILE"] == "3g.40gb"
        assert labels["GPU_I_ID"] in {"1", "2"}
        assert member.values.max() <= 40192  # the -lgip size of an H100 3g.40gb instance
    # Two 3g.40gb instances per H100: three replicas take two GPUs, instance ids unique per GPU.
    slots = {(m.label_dict["UUID"], m.label_dict["GPU_I_ID"]) for m in mig_series}
    assert len(slots) == 3 and len({uuid for uuid, _ in slots}) == 2
    # An instance computes with its SMs: 60 of an H100's 132 for 3g.40gb, not 3/7.
    mini = simulator.placement("ml", "mini")
    assert {slot.compute_fraction for r in mini.replicas for slot in r.gpus} == {60 / 132}
    assert mini.slot_memory_bytes == 40192 * 2**20
    util_pods = {m.label_dict["pod"] for m in by_family[series.GPU_UTIL.name]}
    assert not util_pods & mig_pods
    assert util_pods == {r.pod for r in simulator.placement("ml", "chat").replicas}
    # Activity is per instance; power is the physical GPU's, shared by its instances.
    power: dict[str, list[series.FloatArray]] = {}
    for member in by_family[series.POWER_USAGE.name]:
        if member.label_dict["pod"] in mig_pods:
            power.setdefault(member.label_dict["UUID"], []).append(member.values)
    shared = [values for values in power.values() if len(values) == 2]
    assert shared and np.array_equal(shared[0][0], shared[0][1])
    active = [m for m in by_family[series.GR_ENGINE_ACTIVE.name] if m.label_dict["pod"] in mig_pods]
    assert not np.array_equal(active[0].values, active[1].values)


# --- labels -----------------------------------------------------------------------------------


def test_direct_dcgm_labels() -> None:
    simulator = _simulator(_fleet(EMBED))
    member = simulator.series(np.array([T0]))[series.FB_USED.name][0]
    labels = member.label_dict
    assert set(labels) == {
        "gpu", "UUID", "device", "modelName", "Hostname", "namespace", "pod", "container",
        "job", "instance",
    }  # fmt: skip
    assert labels["namespace"] == "search" and labels["container"] == "embedder"
    assert labels["modelName"] == "NVIDIA L4"
    assert labels["device"] == f"nvidia{labels['gpu']}"
    assert re.fullmatch(
        r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", labels["UUID"]
    )


def test_exported_label_variant_as_behind_a_service_monitor() -> None:
    fleet = _fleet(EMBED, MIG, dcgmLabels="exported")
    simulator = _simulator(fleet)
    by_family = simulator.series(np.array([T0]))
    pods = {r.pod for p in simulator.placements for r in p.replicas}
    for family in series.DCGM_FAMILIES:
        for member in by_family[family.name]:
            labels = member.label_dict
            assert "Hostname" not in labels and labels["hostname"]
            assert labels["exported_pod"] in pods
            assert labels["exported_namespace"] in {"search", "ml"}
            assert labels["exported_container"] in {"embedder", "server"}
            assert labels["namespace"] == "gpu-operator"
            assert labels["pod"].startswith("nvidia-dcgm-exporter-")
    # vLLM is scraped from its own pod: its labels do not change.
    for member in by_family[series.KV_CACHE_USAGE.name]:
        assert member.label_dict["pod"] in pods
        assert "exported_pod" not in member.label_dict


def test_vllm_series_are_labelled_with_namespace_pod_and_model() -> None:
    simulator = _simulator(_fleet(CHAT))
    by_family = simulator.series(np.array([T0]))
    pods = {r.pod for r in simulator.placement("ml", "chat").replicas}
    for family in series.VLLM_FAMILIES:
        members = by_family[family.name]
        assert {m.label_dict["pod"] for m in members} == pods
        for member in members:
            assert member.label_dict["namespace"] == "ml"
            assert member.label_dict["engine"] == "0"
            if family is not series.CACHE_CONFIG:
                assert member.label_dict["model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
            else:  # vLLM's cache_config_info has no model_name: join it on pod
                assert "model_name" not in member.label_dict
                assert member.label_dict["gpu_memory_utilization"] == "0.9"
    assert by_family[series.KV_CACHE_USAGE.name]
    non_vllm = _simulator(_fleet(EMBED)).series(np.array([T0]))
    assert all(not non_vllm[f.name] for f in series.VLLM_FAMILIES)


def _histogram(
    by_family: dict[str, list[series.Series]], family: series.Family, pod: str
) -> tuple[list[series.Series], series.Series, series.Series]:
    """A pod's buckets (ascending le, +Inf last), _sum and _count series of a histogram."""
    mine = [m for m in by_family[family.name] if m.label_dict["pod"] == pod]
    buckets = [m for m in mine if m.suffix == "_bucket"]
    (total,) = [m for m in mine if m.suffix == "_sum"]
    (count,) = [m for m in mine if m.suffix == "_count"]
    return buckets, total, count


def test_vllm_latency_histograms_are_cumulative_counters_with_vllms_buckets() -> None:
    simulator = _simulator(_fleet(CHAT))
    times = openmetrics.timestamps(T0, T0 + 6 * HOUR, 60.0)
    by_family = simulator.series(times)
    pod = simulator.placement("ml", "chat").replicas[0].pod
    for family in (series.TIME_TO_FIRST_TOKEN, series.INTER_TOKEN_LATENCY):
        buckets, total, count = _histogram(by_family, family, pod)
        assert [b.label_dict["le"] for b in buckets] == [
            *(repr(float(bound)) for bound in family.buckets),
            "+Inf",
        ]
        assert {b.sample_name for b in buckets} == {f"{family.name}_bucket"}
        stacked = np.array([b.values for b in buckets])
        assert np.all(np.diff(stacked, axis=0) >= 0)  # cumulative in le
        increase = stacked[:, 100:] - stacked[:, :-100]  # whole observations: never fewer in
        assert np.all(np.diff(increase, axis=0) >= 0)  # a bucket than in the one below it
        assert np.all(np.diff(stacked, axis=1) >= 0)  # counters only grow
        np.testing.assert_array_equal(stacked[-1], count.values)
        assert count.values[-1] > count.values[0]
        assert np.all(np.diff(total.values) > 0)
        np.testing.assert_array_equal(stacked, np.round(stacked))
        assert len(family.buckets) == (22 if family is series.TIME_TO_FIRST_TOKEN else 19)


def test_vllm_latency_follows_bandwidth_and_compute() -> None:
    times = openmetrics.timestamps(T0, T0 + DAY, 600.0)

    def medians(**changes: object) -> tuple[float, float]:
        simulator = _simulator(_fleet({**CHAT, **changes}))
        state = simulator.behaviour("ml", "chat").state(times).vllm[0]
        return float(np.median(state.time_per_output_token)), float(
            np.median(state.time_to_first_token)
        )

    tpot, ttft = medians()
    # Llama-3.1-8B in BF16 on an H100: 16 GB of weights and some KV read per token at
    # 70 % of 3.35 TB/s; a 1024-token prompt at half of 989 dense TFLOPS.
    assert 0.007 < tpot < 0.02
    assert 0.03 < ttft < 0.1
    # An A100's 2.0 TB/s makes decode slower, its 312 TFLOPS make prefill slower still.
    a100_tpot, a100_ttft = medians(gpuModel="A100-80GB")
    assert a100_tpot > 1.4 * tpot
    assert a100_ttft > 2.5 * ttft
    # FP8 weights halve the bytes a step reads.
    fp8_tpot, _ = medians(precision="fp8")
    assert fp8_tpot < 0.8 * tpot
    # More of the KV cache in use: more bytes a step reads.
    full_tpot, _ = medians(kvCacheUsageAtPeak=0.9)
    assert full_tpot > tpot


def test_histogram_quantiles_find_the_simulated_latency() -> None:
    simulator = _simulator(_fleet({**CHAT, "traffic": {"shape": "constant"}}))
    times = openmetrics.timestamps(T0, T0 + 2 * HOUR, 60.0)
    by_family = simulator.series(times)
    replica = simulator.placement("ml", "chat").replicas[0]
    state = simulator.behaviour("ml", "chat").state(times).vllm[0]
    buckets, _, _ = _histogram(by_family, series.TIME_TO_FIRST_TOKEN, replica.pod)
    increase = np.array([b.values[-1] - b.values[0] for b in buckets])
    bounds = np.array([*series.TIME_TO_FIRST_TOKEN.buckets, np.inf])
    # The bucket that holds the median observation holds the median latency.
    median_bucket = int(np.searchsorted(increase, increase[-1] / 2))
    median = float(np.median(state.time_to_first_token))
    assert bounds[median_bucket - 1] < median <= bounds[median_bucket]


def test_a_workload_can_have_no_framebuffer_series() -> None:
    simulator = _simulator(_fleet({**MIG, "framebufferMetrics": False}, CHAT))
    by_family = simulator.series(np.array([T0, T0 + 60]))
    mini = {r.pod for r in simulator.placement("ml", "mini").replicas}
    for family in (series.FB_USED, series.FB_FREE):
        pods = {m.label_dict["pod"] for m in by_family[family.name]}
        assert pods and not pods & mini  # chat's GPUs still have them
    for family in (series.GR_ENGINE_ACTIVE, series.POWER_USAGE, series.TOTAL_ENERGY):
        assert mini <= {m.label_dict["pod"] for m in by_family[family.name]}
    assert mini <= {m.label_dict["pod"] for m in by_family[series.KV_CACHE_USAGE.name]}


def test_stitched_history_gives_a_rollout_new_pods_half_way() -> None:
    simulator = _simulator(_fleet(CHAT, EMBED))
    first = openmetrics.timestamps(T0, T0 + HOUR, 60.0)
    second = openmetrics.timestamps(T0 + HOUR + 60, T0 + 2 * HOUR, 60.0)
    before = simulator.series(first)
    old = [r.pod for r in simulator.placement("ml", "chat").replicas]
    new = ["chat-5d8f7c9b4x-q2w7z", "chat-5d8f7c9b4x-k9m4t"]
    simulator.set_pods("ml", "chat", new)
    after = simulator.series(second)
    times, history = series.stitch([(first, before), (second, after)])
    np.testing.assert_array_equal(times, np.concatenate([first, second]))
    used = {m.label_dict["pod"]: m.values for m in history[series.FB_USED.name]}
    assert set(used) == {
        *old,
        *new,
        *(r.pod for r in simulator.placement("search", "embed").replicas),
    }
    for pod in old:
        assert np.all(np.isfinite(used[pod][: first.size]))
        assert np.all(np.isnan(used[pod][first.size :]))
    for pod in new:
        assert np.all(np.isnan(used[pod][: first.size]))
        assert np.all(np.isfinite(used[pod][first.size :]))
    embed = next(p for p in used if p.startswith("embed-"))
    assert np.all(np.isfinite(used[embed]))  # not rolled out: one series throughout
    out = io.StringIO()
    _, n_samples = openmetrics.write_families(out, history, times)
    lines = out.getvalue().splitlines()
    assert n_samples == sum(1 for line in lines if not line.startswith("#"))
    assert "nan" not in out.getvalue().lower()
    assert sum(1 for line in lines if f'pod="{old[0]}"' in line and "FB_USED" in line) == 61
    with pytest.raises(ValueError, match="ascend"):
        series.stitch([(second, after), (first, before)])


# --- outputs ----------------------------------------------------------------------------------


def test_openmetrics_history_is_what_promtool_reads(tmp_path: pathlib.Path) -> None:
    simulator = _simulator(_fleet(CHAT, MIG, EMBED))
    path = tmp_path / "history.om"
    stats = openmetrics.write_history(
        simulator, path, start=T0 + 10, end=T0 + 2 * HOUR, step_seconds=60.0
    )
    lines = path.read_text().splitlines()
    assert lines[-1] == "# EOF"
    assert stats.samples == sum(1 for line in lines if not line.startswith("#"))
    assert stats.start == T0 + 60  # first multiple of the step
    families_seen: list[str] = []
    current = None
    last_stamp: dict[str, int] = {}
    for line in lines[:-1]:
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in families_seen, f"{name} appears twice"
            families_seen.append(name)
            current = name
            assert kind in {"gauge", "counter", "unknown", "histogram"}
            continue
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)\{(.*)\} (\S+) (\d+)", line)
        assert match, line
        assert current is not None and match[1].startswith(current)
        stamp = int(match[4])
        assert stamp % 60 == 0
        key = match[1] + match[2]
        assert stamp > last_stamp.get(key, 0)  # time order within a series
        last_stamp[key] = stamp
    # Only families with series are written: this fleet serves with vLLM and other engines.
    assert families_seen == [f.name for f in series.DCGM_FAMILIES + series.VLLM_FAMILIES]
    assert any(line.startswith("vllm:num_preemptions_total{") for line in lines)


def test_exposition_for_the_live_endpoint() -> None:
    simulator = _simulator(_fleet(CHAT, MIG))
    text = exporter.Exporter(simulator, clock=lambda: T0 + 5.0).render()
    assert "# TYPE vllm:num_preemptions_total counter" in text
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" in text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples and all(re.fullmatch(r"\S+\{.*\} \S+", line) for line in samples)
    assert all(len(line.rsplit(" ", 1)[1]) > 0 for line in samples)


def test_live_endpoint_serves_and_takes_new_pod_names() -> None:
    simulator = _simulator(_fleet(CHAT, EMBED))
    with exporter.Exporter(simulator) as live:
        with urllib.request.urlopen(live.url, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = response.read().decode()
        old = simulator.placement("ml", "chat").replicas[0].pod
        assert f'pod="{old}"' in body
        renamed = ["chat-7c9d8f6b5x-abcde", "chat-7c9d8f6b5x-fghij", "chat-7c9d8f6b5x-klmno"]
        placement = live.set_pods("ml", "chat", renamed)
        assert len(placement.replicas) == 3
        with urllib.request.urlopen(live.url, timeout=10) as response:
            body = response.read().decode()
        assert f'pod="{old}"' not in body
        model = "meta-llama/Llama-3.1-8B-Instruct"
        for pod in renamed:
            assert (
                f'vllm:kv_cache_usage_perc{{model_name="{model}",engine="0",namespace="ml",'
                f'pod="{pod}"' in body
            )
        live.set_pods("search", "embed", ["embed-abc-1", "embed-abc-2"], nodes=["node-a", "node-a"])
        body = live.render()
        assert body.count('Hostname="node-a"') == 2 * 8  # 8 DCGM families each, not MIG
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(live.url.replace("/metrics", "/other"), timeout=10)
        caught.value.close()
        assert caught.value.code == 404
        assert live.scrapes == 2


def test_set_workload_replaces_the_allocation() -> None:
    simulator = _simulator(_fleet(CHAT))
    smaller = fleets.Workload.model_validate({**CHAT, "migProfile": "3g.40gb"})
    placement = simulator.set_workload(smaller)
    assert placement.mig is not None
    by_family = simulator.series(np.array([T0]))
    assert all(m.label_dict["GPU_I_PROFILE"] == "3g.40gb" for m in by_family[series.FB_USED.name])
    simulator.remove_workload("ml", "chat")
    assert simulator.series(np.array([T0]))[series.FB_USED.name] == []


def test_deployments_ask_for_what_the_series_show() -> None:
    simulator = _simulator(_fleet(CHAT, MIG, TRAIN))
    chat = deployments.deployment(simulator.placement("ml", "chat"))
    assert chat["apiVersion"] == "apps/v1" and chat["kind"] == "Deployment"
    assert chat["metadata"] == {
        "name": "chat",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/name": "chat", "gpu-rightsizer.dev/simulated": "true"},
    }
    spec = chat["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {
        "key": "kwok.x-k8s.io/node",
        "operator": "Equal",
        "value": "fake",
        "effect": "NoSchedule",
    } in pod["tolerations"]
    container = pod["containers"][0]
    assert container["name"] == "server"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "meta-llama/Llama-3.1-8B-Instruct" in container["args"]
    mini = deployments.deployment(simulator.placement("ml", "mini"))
    limits = mini["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/mig-3g.40gb": "1"}
    trainer = deployments.deployment(simulator.placement("research", "trainer"))
    limits = trainer["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "4"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


# --- the command line -------------------------------------------------------------------------


def test_cli_history_and_manifests(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump({"seed": 1, "workloads": [CHAT, EMBED]}))
    out = tmp_path / "h.om"
    assert cli.main(["history", "--fleet", str(fleet_file), "--days", "0.1", "--step", "30s",
                     "--end", str(T0), "--out", str(out)]) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    assert text.endswith("# EOF\n") and f" {int(T0)}\n" in text
    assert cli.main(["manifests", "--fleet", str(fleet_file)]) == 0
    documents = list(yaml.safe_load_all(io.StringIO(capsys.readouterr().out)))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert kinds == [("Namespace", "ml"), ("Namespace", "search"),
                     ("Deployment", "chat"), ("Deployment", "embed")]  # fmt: skip
    assert cli.main(["history", "--fleet", str(tmp_path / "nope.yaml"), "--out", str(out)]) == 2
    assert "nope.yaml: cannot read" in capsys.readouterr().err


# --- properties -------------------------------------------------------------------------------

GPU_IDS = ("H100-80GB", "A100-80GB", "H200-141GB", "L40S", "L4", "A100-40GB")


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, object]:
    gpu_id = draw(st.sampled_from(GPU_IDS))
    gpu = CATALOG.get(gpu_id)
    assert gpu is not None
    mig = draw(st.sampled_from([None, *(p.name for p in gpu.mig_profiles)]))
    return {
        "name": "w",
        "parameters": draw(st.floats(1e8, 1.5e11)),
        "precision": draw(st.sampled_from([p.value for p in precisions.Precision])),
        "gpuModel": gpu_id,
        "migProfile": mig,
        "gpusPerReplica": 1 if mig else draw(st.sampled_from([1, 2, 4, 8])),
        "replicas": draw(st.integers(1, 4)),
        "engine": draw(st.sampled_from(["vllm", "other"])),
        "kvCacheUsageAtPeak": draw(st.floats(0.05, 1.2)),
        "traffic": {
            "shape": draw(st.sampled_from([s.value for s in fleets.TrafficShape])),
            "low": draw(st.floats(0, 1)),
            "high": draw(st.floats(0, 1)),
        },
    }


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(workload=workloads(), seed=st.integers(0, 2**31), start=st.floats(0, 20 * DAY))
def test_any_workload_that_fits_stays_within_its_hardware(
    workload: dict[str, object], seed: int, start: float
) -> None:
    fleet = _fleet(workload, seed=seed)
    try:
        simulator = _simulator(fleet)
    except fleets.FleetError:
        hypothesis.assume(False)
        return
    times = openmetrics.timestamps(EPOCH + start, EPOCH + start + 4 * HOUR, 120.0)
    by_family = simulator.series(times)
    placement = simulator.placements[0]
    gpu = placement.gpu
    capacity_mib = placement.slot_memory_bytes / 2**20
    for used in by_family[series.FB_USED.name]:
        assert np.all((used.values > 0) & (used.values <= capacity_mib))
    for power in by_family[series.POWER_USAGE.name]:
        assert np.all((power.values >= gpu.idle_watts) & (power.values <= gpu.tdp_watts))
    for energy in by_family[series.TOTAL_ENERGY.name]:
        assert np.all(np.diff(energy.values) >= 0)
    for family in (series.GR_ENGINE_ACTIVE, series.KV_CACHE_USAGE):
        for member in by_family[family.name]:
            assert np.all((member.values >= 0) & (member.values <= 1))
    has_util = bool(by_family[series.GPU_UTIL.name])
    assert has_util == (placement.mig is None)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(seed_key=st.integers(0, 2**64 - 1), t=st.floats(0, 4e9))
def test_noise_is_in_the_unit_interval(seed_key: int, t: float) -> None:
    times = np.array([t, t + 1.0, t + 1000.0])
    for values in (signals.value_noise(seed_key, times, 60.0), signals.fractal(seed_key, times)):
        assert np.all((values >= 0) & (values < 1))


def test_deployment_names_leave_room_for_the_pod_suffixes() -> None:
    longest = fleets.Workload(name="a" * 46, parameters=1e9, gpu_model="L4")
    assert all(len(pod) == 63 for pod in layouts.pod_names(1, longest, 3))
    with pytest.raises(ValueError, match="name"):
        fleets.Workload(name="a" * 47, parameters=1e9, gpu_model="L4")
