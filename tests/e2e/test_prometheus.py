"""A real Prometheus with backfilled simulator history and a live simulator endpoint.

The history queries are evaluated half a step before the end of the history, so no sample sits
on a window boundary and the expected figures can be computed from the simulator's own arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_rightsizer.fleetsim import series
from tests.support import prometheus as support

pytestmark = pytest.mark.prometheus

DAY = 86_400.0


def _window(sim: support.SimulatedPrometheus, family: str, **labels: str) -> np.ndarray:
    """The history values Prometheus sees in ``[1d]`` at :func:`_at`."""
    member = sim.history_series(family, **labels)
    at = _at(sim)
    inside = (sim.history_times > at - DAY) & (sim.history_times <= at)
    values: np.ndarray = member.values[inside]
    return values


def _at(sim: support.SimulatedPrometheus) -> float:
    return sim.history_end - support.STEP_SECONDS / 2


def _rounded(family: series.Family, values: np.ndarray) -> np.ndarray:
    """What went into the file: integers, or values rounded to the family's decimals."""
    if family.decimals is None:
        return values.astype(np.int64).astype(np.float64)
    return np.round(values, family.decimals)


@pytest.mark.parametrize(
    ("family", "labels"),
    [
        (series.FB_USED, {"namespace": "ml", "pod_prefix": "chat-"}),
        (series.FB_USED, {"namespace": "search", "pod_prefix": "embed-"}),
        (series.GR_ENGINE_ACTIVE, {"namespace": "search", "pod_prefix": "embed-"}),
        (series.POWER_USAGE, {"namespace": "research", "pod_prefix": "trainer-"}),
        (series.GR_ENGINE_ACTIVE, {"namespace": "ml", "pod_prefix": "mini-"}),
        (series.KV_CACHE_USAGE, {"namespace": "ml", "pod_prefix": "chat-"}),
        (series.REQUESTS_RUNNING, {"namespace": "ml", "pod_prefix": "mini-"}),
    ],
)
def test_backfilled_history_answers_quantile_and_max(
    prometheus: support.SimulatedPrometheus, family: series.Family, labels: dict[str, str]
) -> None:
    prefix = labels["pod_prefix"]
    placement = prometheus.simulator.placement(labels["namespace"], prefix.rstrip("-"))
    pod = placement.replicas[0].pod
    assert pod.startswith(prefix)
    selector = f'{family.sample_name}{{namespace="{labels["namespace"]}",pod="{pod}"}}'
    if family in series.DCGM_FAMILIES:
        selector = selector[:-1] + f',UUID="{placement.replicas[0].gpus[0].uuid}"}}'
    member_labels = {"namespace": labels["namespace"], "pod": pod}
    if family in series.DCGM_FAMILIES:
        member_labels["UUID"] = placement.replicas[0].gpus[0].uuid
    expected = _rounded(family, _window(prometheus, family.name, **member_labels))
    assert expected.size == 1440  # a day at 60 s

    at = _at(prometheus)
    p95 = prometheus.scalar(f"quantile_over_time(0.95, {selector}[1d])", at)
    peak = prometheus.scalar(f"max_over_time({selector}[1d])", at)
    assert p95 == pytest.approx(float(np.quantile(expected, 0.95)), rel=1e-6, abs=1e-6)
    assert peak == pytest.approx(float(expected.max()), rel=1e-9, abs=1e-9)


def test_mig_history_carries_the_instance_labels_and_no_gpu_util(
    prometheus: support.SimulatedPrometheus,
) -> None:
    placement = prometheus.simulator.placement("ml", "mini")
    pods = {r.pod for r in placement.replicas}
    at = _at(prometheus)
    used = prometheus.query(
        'max_over_time(DCGM_FI_DEV_FB_USED{namespace="ml",pod=~"mini-.*"}[1d])', at
    )
    assert {r["metric"]["pod"] for r in used} == pods
    for row in used:
        assert row["metric"]["GPU_I_PROFILE"] == "3g.40gb"
        assert row["metric"]["GPU_I_ID"] in {"1", "2"}
        assert float(row["value"][1]) <= 40 * 1024
    assert prometheus.query('DCGM_FI_DEV_GPU_UTIL{pod=~"mini-.*"}[1d]', at) == []


def test_vllm_memory_is_preallocated_while_kv_cache_shows_the_need(
    prometheus: support.SimulatedPrometheus,
) -> None:
    pod = prometheus.simulator.placement("ml", "chat").replicas[0].pod
    at = _at(prometheus)
    low = prometheus.scalar(f'min_over_time(DCGM_FI_DEV_FB_USED{{pod="{pod}"}}[1d])', at)
    high = prometheus.scalar(f'max_over_time(DCGM_FI_DEV_FB_USED{{pod="{pod}"}}[1d])', at)
    assert low == high
    assert high == pytest.approx(0.9 * 80 * 1024, rel=0.01)
    kv = f'vllm:kv_cache_usage_perc{{pod="{pod}"}}[1d]'
    spread = prometheus.scalar(f"max_over_time({kv}) - min_over_time({kv})", at)
    assert spread > 0.05
    blocks = prometheus.query(f'vllm:cache_config_info{{pod="{pod}"}}', at)
    assert blocks and int(blocks[0]["metric"]["num_gpu_blocks"]) > 1000
    assert blocks[0]["metric"]["block_size"] == "16"
    assert blocks[0]["metric"]["gpu_memory_utilization"] == "0.9"
    assert blocks[0]["metric"]["engine"] == "0"
    assert "model_name" not in blocks[0]["metric"]  # as vLLM: join it on pod, never on model


def test_latency_histograms_are_backfilled_and_scraped(
    prometheus: support.SimulatedPrometheus,
) -> None:
    pod = prometheus.simulator.placement("ml", "chat").replicas[0].pod
    at = _at(prometheus)
    for family in (series.INTER_TOKEN_LATENCY, series.TIME_TO_FIRST_TOKEN):
        selector = f'{family.name}_bucket{{pod="{pod}"}}'
        buckets = prometheus.query(f"increase({selector}[1d])", at)
        assert len(buckets) == len(family.buckets) + 1  # and +Inf
        p50 = prometheus.scalar(
            f"histogram_quantile(0.5, sum by (le) (increase({selector}[1d])))", at
        )
        mean = prometheus.scalar(
            f'increase({family.name}_sum{{pod="{pod}"}}[1d])'
            f' / increase({family.name}_count{{pod="{pod}"}}[1d])',
            at,
        )
        assert 0 < p50 < 2 * mean
    # The live endpoint serves the same histograms: one series each across history and present.
    support.eventually(
        lambda: prometheus.query(f'vllm:time_to_first_token_seconds_count{{pod="{pod}"}}'),
        what="a scraped histogram",
    )
    resets = prometheus.scalar(f'resets(vllm:time_to_first_token_seconds_count{{pod="{pod}"}}[3d])')
    assert resets == 0


def test_energy_counter_agrees_with_power(prometheus: support.SimulatedPrometheus) -> None:
    pod = prometheus.simulator.placement("research", "trainer").replicas[0].pod
    at = _at(prometheus)
    uuid = prometheus.simulator.placement("research", "trainer").replicas[0].gpus[0].uuid
    selector = f'{{pod="{pod}",UUID="{uuid}"}}'
    kwh_counter = prometheus.scalar(
        f"increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{selector}[1d]) / 3.6e9", at
    )
    kwh_power = prometheus.scalar(
        f"avg_over_time(DCGM_FI_DEV_POWER_USAGE{selector}[1d]) * 24 / 1000", at
    )
    assert kwh_counter == pytest.approx(kwh_power, rel=0.02)
    assert prometheus.scalar(f"resets(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{selector}[2d])") == 0


def test_live_samples_appear_after_a_scrape(prometheus: support.SimulatedPrometheus) -> None:
    placement = prometheus.simulator.placement("ml", "chat")
    pod = placement.replicas[1].pod
    end = prometheus.history_end

    def scraped() -> float | None:
        rows = prometheus.query(f'timestamp(DCGM_FI_PROF_GR_ENGINE_ACTIVE{{pod="{pod}"}})')
        stamps = [float(r["value"][1]) for r in rows]
        return stamps[0] if stamps and stamps[0] > end else None

    stamp = support.eventually(scraped, what="a live sample newer than the history")
    value = prometheus.scalar(f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{pod="{pod}"}}', stamp)
    expected = prometheus.simulator.behaviour("ml", "chat").state(np.array([stamp]))
    graphics = [s.graphics_active[0] for s in expected.slots if s.replica.pod == pod]
    # The exporter computed its sample a few milliseconds after Prometheus stamped the scrape.
    assert value == pytest.approx(graphics[0], abs=2e-3)
    # History and present are one series: same labels, no counter reset at the joint.
    series_count = prometheus.scalar(
        f'count(count_over_time(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{pod="{pod}"}}[3d]))'
    )
    assert series_count == 1
    resets = prometheus.scalar(f'resets(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{pod="{pod}"}}[3d])')
    assert resets == 0
    preemption_resets = prometheus.scalar(f'resets(vllm:num_preemptions_total{{pod="{pod}"}}[3d])')
    assert preemption_resets == 0


def test_live_exporter_takes_real_pod_names(prometheus: support.SimulatedPrometheus) -> None:
    original = [r.pod for r in prometheus.simulator.placement("search", "embed").replicas]
    renamed = ["embed-5d8f7c9b4x-q2w7z", "embed-5d8f7c9b4x-k9m4t"]
    prometheus.exporter.set_pods("search", "embed", renamed)
    try:

        def both_scraped() -> set[str]:
            rows = prometheus.query('DCGM_FI_DEV_FB_USED{namespace="search"}')
            pods = {str(r["metric"]["pod"]) for r in rows}
            return pods if set(renamed) <= pods else set()

        support.eventually(both_scraped, what="series for the renamed pods")
    finally:
        prometheus.exporter.set_pods("search", "embed", original)
