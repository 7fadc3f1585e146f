"""The Prometheus usage source against a real Prometheus holding the simulator's history.

Expected figures are computed from the simulator's own arrays, the way
``tests/e2e/test_prometheus.py`` does: the sweep is evaluated half a step before the end of the
history, so no sample sits on a window boundary. A second, small Prometheus holds one fleet
whose DCGM series are labelled as behind a ServiceMonitor without ``honorLabels``
(``exported_pod``...) next to a fleet labelled directly, so one sweep must read both. A third
holds the edge cases of history: a MIG slice whose driver sends no framebuffer series, and a
Deployment whose pods were all replaced by a rollout half-way through the window.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import pathlib
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from gpu_rightsizer import catalogs, ports
from gpu_rightsizer.fleetsim import fleets, layouts, openmetrics, series
from gpu_rightsizer.metrics import prometheus, queries
from gpu_rightsizer.models import profiles, workloads
from tests.support import prometheus as support

pytestmark = pytest.mark.prometheus

DAY = 86_400.0
WINDOW = "1d"
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


# --- helpers --------------------------------------------------------------------------------


def _target(placement: layouts.Placement) -> ports.TargetPods:
    workload = placement.workload
    return ports.TargetPods(
        workload=workloads.WorkloadRef(namespace=workload.namespace, name=workload.name),
        namespace=workload.namespace,
        kind="Deployment",
        name=workload.name,
        pod_template_hashes=frozenset({placement.template_hash}),
    )


def _targets(simulator: series.Simulator) -> list[ports.TargetPods]:
    return [_target(p) for p in simulator.placements]


def _ref(namespace: str, name: str) -> workloads.WorkloadRef:
    return workloads.WorkloadRef(namespace=namespace, name=name)


def _at(history_end: float) -> float:
    return history_end - support.STEP_SECONDS / 2


def _when(stamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC)


def _rounded(family: series.Family, values: np.ndarray) -> np.ndarray:
    """What went into the history file: integers, or values rounded to the family's decimals."""
    if family.decimals is None:
        return values.astype(np.int64).astype(np.float64)
    return np.round(values, family.decimals)


def _windows(
    history: dict[str, list[series.Series]],
    times: np.ndarray,
    family: series.Family,
    pods: set[str],
    at: float,
) -> list[np.ndarray]:
    """Each series of ``family`` of these pods, as Prometheus sees it in ``[1d]`` at ``at``."""
    inside = (times > at - DAY) & (times <= at)
    found = []
    for member in history[family.name]:
        labels = member.label_dict
        pod = labels.get("exported_pod", labels.get("pod"))
        if pod in pods:
            found.append(_rounded(family, member.values[inside]))
    return found


def _expected(
    history: dict[str, list[series.Series]],
    times: np.ndarray,
    placement: layouts.Placement,
    family: series.Family,
    at: float,
    scale: float = 1.0,
) -> dict[str, float]:
    """p50, p95, p99, max and mean of the busiest series, ordered like the source orders them."""
    pods = {r.pod for r in placement.replicas}
    members = _windows(history, times, family, pods, at)
    assert members, f"no {family.name} series for {sorted(pods)}"
    figures = {
        name: max(float(np.quantile(v, q)) for v in members) * scale
        for name, q in QUANTILES.items()
    }
    figures["max"] = max(float(v.max()) for v in members) * scale
    figures["mean"] = max(float(v.mean()) for v in members) * scale
    running = 0.0
    for name in ("p50", "p95", "p99", "max"):
        running = figures[name] = max(figures[name], running)
    return figures


def _assert_matches(
    actual: profiles.Percentiles | None, expected: dict[str, float], what: str
) -> None:
    assert actual is not None, f"{what}: missing"
    for name, value in expected.items():
        got = getattr(actual, name)
        assert got == pytest.approx(value, rel=1e-6, abs=1e-6), f"{what}.{name}"


def _histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts (the last bound +Inf)."""
    counts = list(itertools.accumulate(counts, max))  # as Prometheus makes them monotonic
    observations = counts[-1]
    if observations <= 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return float(bounds[-2])
    start = 0.0 if b == 0 else float(bounds[b - 1])
    below = 0.0 if b == 0 else counts[b - 1]
    return start + (float(bounds[b]) - start) * (rank - below) / (counts[b] - below)


def _expected_latency(
    history: dict[str, list[series.Series]],
    times: np.ndarray,
    placement: layouts.Placement,
    family: series.Family,
    at: float,
) -> dict[str, float]:
    """p50, p95, p99 and max of a histogram over ``[1d]`` at ``at``, slowest pod, ordered."""
    inside = (times > at - DAY) & (times <= at)
    bounds = [*family.buckets, math.inf]
    figures = dict.fromkeys(("p50", "p95", "p99", "max"), 0.0)
    for replica in placement.replicas:
        buckets = [
            m
            for m in history[family.name]
            if m.suffix == "_bucket" and m.label_dict["pod"] == replica.pod
        ]
        assert len(buckets) == len(bounds)
        # increase() scales every bucket alike (the counters are far from zero): no quantile moves.
        counts = [float(b.values[inside][-1] - b.values[inside][0]) for b in buckets]
        for name, q in (*QUANTILES.items(), ("max", 1.0)):
            figures[name] = max(figures[name], _histogram_quantile(q, bounds, counts))
    running = 0.0
    for name in ("p50", "p95", "p99", "max"):
        running = figures[name] = max(figures[name], running)
    return figures


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the shared fixture's fleet ---------------------------------------------------------------


@pytest.fixture(scope="module")
def history_report(prometheus: support.SimulatedPrometheus) -> ports.UsageReport:
    source = prometheus_source(prometheus.url)
    at = _at(prometheus.history_end)
    report = source.collect(_targets(prometheus.simulator), window=WINDOW, at=_when(at))
    assert report.error is None, report.error
    return report


def prometheus_source(
    url: str, *, retries: int = 3, retry_backoff_seconds: float = 0.5
) -> prometheus.PrometheusUsageSource:
    settings = prometheus.PrometheusSettings(
        url=url, retries=retries, retry_backoff_seconds=retry_backoff_seconds
    )
    return prometheus.PrometheusUsageSource(settings)


DCGM_SIGNALS = [
    ("memory_used_bytes", series.FB_USED, float(queries.MIB_BYTES)),
    ("graphics_engine_active", series.GR_ENGINE_ACTIVE, 1.0),
    ("tensor_active", series.PIPE_TENSOR_ACTIVE, 1.0),
    ("dram_active", series.DRAM_ACTIVE, 1.0),
    ("power_watts", series.POWER_USAGE, 1.0),
]


@pytest.mark.parametrize("name", ["chat", "embed", "mini", "trainer"])
def test_profiles_match_the_simulated_history(
    prometheus: support.SimulatedPrometheus, history_report: ports.UsageReport, name: str
) -> None:
    placement = next(p for p in prometheus.simulator.placements if p.workload.name == name)
    workload = placement.workload
    profile = history_report.profiles[_ref(workload.namespace, name)]
    at = _at(prometheus.history_end)
    for field, family, scale in DCGM_SIGNALS:
        expected = _expected(
            prometheus.history, prometheus.history_times, placement, family, at, scale
        )
        _assert_matches(getattr(profile, field), expected, f"{name}.{field}")

    assert profile.window == WINDOW
    assert profile.end == _when(at)
    assert profile.samples == 1440 * workload.replicas  # a day at 60 s, summed over replicas
    assert profile.coverage == 1.0
    assert profile.observed_seconds == DAY  # history goes back further than the window
    assert profile.gpu_model == layouts.dcgm_model_name(placement.gpu)
    assert profile.gpus == workload.gpus_per_replica
    assert profile.mig_profile == workload.mig_profile
    assert profile.kv_cache_capacity_bytes is None
    if workload.engine is not fleets.Engine.VLLM:
        assert profile.kv_cache_usage is None
        assert profile.preemptions is None
        assert profile.requests_waiting is None
        assert profile.kv_cache_capacity_tokens is None
        assert profile.gpu_memory_utilization is None
        assert profile.time_per_output_token_seconds is None
        assert profile.time_to_first_token_seconds is None


@pytest.mark.parametrize("name", ["chat", "mini"])
def test_vllm_workloads_get_kv_cache_usage_and_preemptions(
    prometheus: support.SimulatedPrometheus, history_report: ports.UsageReport, name: str
) -> None:
    placement = prometheus.simulator.placement("ml", name)
    profile = history_report.profiles[_ref("ml", name)]
    at = _at(prometheus.history_end)
    history, times = prometheus.history, prometheus.history_times
    _assert_matches(
        profile.kv_cache_usage,
        _expected(history, times, placement, series.KV_CACHE_USAGE, at),
        f"{name}.kv_cache_usage",
    )
    _assert_matches(
        profile.requests_waiting,
        _expected(history, times, placement, series.REQUESTS_WAITING, at),
        f"{name}.requests_waiting",
    )
    # increase() extrapolates to the window's ends: compare with the counters' own increase.
    pods = {r.pod for r in placement.replicas}
    counters = _windows(history, times, series.PREEMPTIONS, pods, at)
    expected = max(float(c[-1] - c[0]) for c in counters)
    assert profile.preemptions is not None
    assert profile.preemptions == pytest.approx(expected * DAY / (DAY - 60), abs=1.0)


@pytest.mark.parametrize("name", ["chat", "mini"])
def test_vllm_cache_config_is_joined_on_pod_and_latency_read_from_histograms(
    prometheus: support.SimulatedPrometheus, history_report: ports.UsageReport, name: str
) -> None:
    placement = prometheus.simulator.placement("ml", name)
    behaviour = prometheus.simulator.behaviour("ml", name)
    profile = history_report.profiles[_ref("ml", name)]
    # cache_config_info has no model_name: joined on pod, its labels parsed.
    blocks = behaviour.memory.num_gpu_blocks
    assert blocks > 0
    assert profile.kv_cache_capacity_tokens == blocks * 16
    assert profile.gpu_memory_utilization == placement.workload.gpu_memory_utilization
    at = _at(prometheus.history_end)
    history, times = prometheus.history, prometheus.history_times
    for field, family in (
        ("time_per_output_token_seconds", series.INTER_TOKEN_LATENCY),
        ("time_to_first_token_seconds", series.TIME_TO_FIRST_TOKEN),
    ):
        expected = _expected_latency(history, times, placement, family, at)
        actual = getattr(profile, field)
        assert actual is not None, field
        for statistic, value in expected.items():
            assert getattr(actual, statistic) == pytest.approx(value, rel=1e-3), (field, statistic)
    # Decode is bandwidth bound: a few to tens of milliseconds a token, not seconds.
    assert profile.time_per_output_token_seconds is not None
    assert 0.002 < profile.time_per_output_token_seconds.p50 < 0.05


def test_mig_workload_gets_its_profile_and_engine_activity(
    history_report: ports.UsageReport,
) -> None:
    profile = history_report.profiles[_ref("ml", "mini")]
    assert profile.mig_profile == "3g.40gb"
    assert profile.gpus == 1
    assert 0 < profile.graphics_engine_active.p50 <= profile.graphics_engine_active.max <= 1
    assert profile.memory_used_bytes is not None
    assert profile.memory_used_bytes.max <= 40 * 2**30


def test_the_number_of_queries_does_not_depend_on_the_number_of_workloads(
    prometheus: support.SimulatedPrometheus, history_report: ports.UsageReport
) -> None:
    source = prometheus_source(prometheus.url)
    at = _when(_at(prometheus.history_end))
    one = source.collect(_targets(prometheus.simulator)[:1], window=WINDOW, at=at)
    many = [
        ports.TargetPods(
            workload=_ref(f"team-{i}", f"server-{i}"),
            namespace=f"team-{i}",
            kind="Deployment",
            name=f"server-{i}",
        )
        for i in range(1000)
    ]
    lots = source.collect([*_targets(prometheus.simulator), *many], window=WINDOW, at=at)
    assert one.error is None and lots.error is None
    assert one.queries == lots.queries == history_report.queries == len(queries.sweep(WINDOW))
    assert len(one.profiles) == 1
    assert set(lots.profiles) == set(history_report.profiles)
    assert lots.profiles == history_report.profiles  # with or without a namespace filter


def test_a_short_history_in_a_long_window_lowers_coverage(
    prometheus: support.SimulatedPrometheus,
) -> None:
    report = prometheus_source(prometheus.url).collect(_targets(prometheus.simulator), window="7d")
    assert report.error is None, report.error
    history = prometheus.history_end - prometheus.history_start
    now = time.time()
    for ref, profile in report.profiles.items():
        assert profile.observed_seconds is not None
        # The subquery sees the first sample within one of its 5-minute steps; live ones follow.
        step = queries.grid("7d").resolution_seconds
        assert history - step <= profile.observed_seconds <= now - prometheus.history_start, ref
        assert profile.coverage == pytest.approx(profile.observed_seconds / (7 * DAY), abs=0.01)
        assert profile.samples >= 2 * 1440, ref


def test_an_unreachable_prometheus_is_an_error_not_an_exception() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    source = prometheus_source(url, retries=1, retry_backoff_seconds=0.01)
    target = ports.TargetPods(
        workload=_ref("ml", "chat"), namespace="ml", kind="Deployment", name="chat"
    )
    report = source.collect([target], window="7d")
    assert report.profiles == {}
    assert report.queries == 1
    assert report.error is not None
    assert url in report.error
    assert "Connection refused" in report.error
    assert "\n" not in report.error


# --- both label layouts in one Prometheus -----------------------------------------------------

EXPORTED_FLEET = """
seed: 5
dcgmLabels: exported
workloads:
  - name: chat
    namespace: ml
    parameters: 8.03e9
    gpuModel: H100-80GB
    replicas: 2
    engine: vllm
    traffic: {shape: diurnal}
  - name: mini
    namespace: ml
    parameters: 3.21e9
    gpuModel: A100-80GB
    migProfile: 2g.20gb
    traffic: {shape: constant}
"""

DIRECT_FLEET = """
seed: 6
workloads:
  - name: chat-v2
    namespace: ml
    parameters: 1.5e9
    gpuModel: L4
    gpusPerReplica: 2
    traffic: {shape: bursty}
"""


class TwoLayouts:
    def __init__(
        self,
        url: str,
        simulators: Sequence[series.Simulator],
        history: dict[str, list[series.Series]],
        times: np.ndarray,
    ) -> None:
        self.url = url
        self.simulators = simulators
        self.history = history
        self.times = times

    @property
    def end(self) -> float:
        return float(self.times[-1])


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoLayouts]:
    """A Prometheus (no scrapes) with a day and an hour of history of both fleets."""
    support._require_tools()
    work: pathlib.Path = tmp_path_factory.mktemp("two-layouts")
    state_dir = work / "state"
    now = time.time()
    end = math.floor(now / support.STEP_SECONDS) * support.STEP_SECONDS
    times = openmetrics.timestamps(end - DAY - 3600, end, support.STEP_SECONDS)
    simulators = []
    history: dict[str, list[series.Series]] = {}
    for text in (EXPORTED_FLEET, DIRECT_FLEET):
        fleet = fleets.parse(text, "tests/e2e/test_prometheus_source.py")
        simulator = series.Simulator(
            fleet, catalogs.default_catalog(), epoch=series.default_epoch(now)
        )
        simulators.append(simulator)
        for family, members in simulator.series(times).items():
            history.setdefault(family, []).extend(members)
    history_file = work / "history.om"
    with history_file.open("w", encoding="utf-8") as out:
        openmetrics.write_families(out, history, times)
        out.write("# EOF\n")
    support._harness(state_dir, "backfill", str(history_file))
    history_file.unlink()
    try:
        support._harness(state_dir, "up")
        url = str(json.loads((state_dir / "state.json").read_text(encoding="utf-8"))["url"])
        yield TwoLayouts(url, simulators, history, np.asarray(times))
    finally:
        support._harness(state_dir, "down")


def test_one_sweep_reads_exported_and_direct_labels(two_layouts: TwoLayouts) -> None:
    exported, direct = two_layouts.simulators
    assert exported.dcgm_labels is fleets.DcgmLabels.EXPORTED
    targets = [*_targets(exported), *_targets(direct)]
    at = _at(two_layouts.end)
    report = prometheus_source(two_layouts.url).collect(targets, window=WINDOW, at=_when(at))
    assert report.error is None, report.error
    assert set(report.profiles) == {_ref("ml", "chat"), _ref("ml", "mini"), _ref("ml", "chat-v2")}
    for simulator in (exported, direct):
        for placement in simulator.placements:
            workload = placement.workload
            profile = report.profiles[_ref(workload.namespace, workload.name)]
            for field, family, scale in DCGM_SIGNALS:
                expected = _expected(
                    two_layouts.history, two_layouts.times, placement, family, at, scale
                )
                _assert_matches(getattr(profile, field), expected, f"{workload.name}.{field}")
            assert profile.samples == 1440 * workload.replicas
            assert profile.gpus == workload.gpus_per_replica
            assert profile.mig_profile == workload.mig_profile
            assert profile.gpu_model == layouts.dcgm_model_name(placement.gpu)
    assert report.profiles[_ref("ml", "chat")].kv_cache_usage is not None
    assert report.profiles[_ref("ml", "chat-v2")].kv_cache_usage is None


def test_the_exported_fleet_really_carries_the_exporters_pod_labels(
    two_layouts: TwoLayouts,
) -> None:
    query = f'group by (namespace, pod, exported_pod) ({queries.FB_USED}{{exported_pod!=""}})'
    url = f"{two_layouts.url}/api/v1/query?" + urllib.parse.urlencode(
        {"query": query, "time": f"{_at(two_layouts.end):.3f}"}
    )
    with urllib.request.urlopen(url, timeout=30) as response:
        rows = json.loads(response.read())["data"]["result"]
    assert rows
    assert {r["metric"]["namespace"] for r in rows} == {series.EXPORTER_NAMESPACE}
    assert all(r["metric"]["pod"].startswith(series.EXPORTER_NAME) for r in rows)


# --- edge cases of history: no framebuffer series, a rollout inside the window ---------------

EDGE_FLEET = """
seed: 9
workloads:
  - name: slice
    namespace: lab
    parameters: 1.1e9
    gpuModel: H100-80GB
    migProfile: 1g.10gb
    framebufferMetrics: false
    traffic: {shape: constant}
  - name: web
    namespace: lab
    parameters: 3.35e8
    gpuModel: L4
    replicas: 2
    traffic: {shape: diurnal}
"""
ROLLED_OUT_HASH = "5d8f7c9b4x"


class EdgeCases:
    def __init__(
        self,
        url: str,
        simulator: series.Simulator,
        old_pods: list[str],
        history: dict[str, list[series.Series]],
        times: np.ndarray,
        rollout: float,
    ) -> None:
        self.url = url
        self.simulator = simulator
        self.old_pods = old_pods
        self.history = history
        self.times = times
        self.rollout = rollout

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def targets(self) -> list[ports.TargetPods]:
        found = []
        for placement in self.simulator.placements:
            target = _target(placement)
            if placement.workload.name == "web":  # the old ReplicaSet's hash too
                hashes = {placement.template_hash, ROLLED_OUT_HASH}
                target = dataclasses.replace(target, pod_template_hashes=frozenset(hashes))
            found.append(target)
        return found


@pytest.fixture(scope="module")
def edge_cases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeCases]:
    """A Prometheus (no scrapes) with a day and an hour of the edge fleet's history, in which
    web's two pods are replaced by two new ones (another ReplicaSet) half-way through the day."""
    support._require_tools()
    work: pathlib.Path = tmp_path_factory.mktemp("edge-cases")
    state_dir = work / "state"
    now = time.time()
    end = math.floor(now / support.STEP_SECONDS) * support.STEP_SECONDS
    rollout = end - DAY / 2
    fleet = fleets.parse(EDGE_FLEET, "tests/e2e/test_prometheus_source.py")
    simulator = series.Simulator(fleet, catalogs.default_catalog(), epoch=series.default_epoch(now))
    before = openmetrics.timestamps(end - DAY - 3600, rollout, support.STEP_SECONDS)
    after = openmetrics.timestamps(rollout + support.STEP_SECONDS, end, support.STEP_SECONDS)
    # Before the rollout the pods of the previous ReplicaSet, after it the current one's.
    new_pods = [r.pod for r in simulator.placement("lab", "web").replicas]
    old_pods = [f"web-{ROLLED_OUT_HASH}-{layouts.safe_name(9, 5, 'old', i)}" for i in range(2)]
    simulator.set_pods("lab", "web", old_pods)
    first = simulator.series(before)
    simulator.set_pods("lab", "web", new_pods)
    times, history = series.stitch([(before, first), (after, simulator.series(after))])
    assert set(old_pods).isdisjoint(new_pods)
    history_file = work / "history.om"
    with history_file.open("w", encoding="utf-8") as out:
        openmetrics.write_families(out, history, times)
        out.write("# EOF\n")
    support._harness(state_dir, "backfill", str(history_file))
    history_file.unlink()
    try:
        support._harness(state_dir, "up")
        url = str(json.loads((state_dir / "state.json").read_text(encoding="utf-8"))["url"])
        yield EdgeCases(url, simulator, old_pods, history, np.asarray(times), rollout)
    finally:
        support._harness(state_dir, "down")


@pytest.fixture(scope="module")
def edge_report(edge_cases: EdgeCases) -> ports.UsageReport:
    at = _at(edge_cases.end)
    report = prometheus_source(edge_cases.url).collect(
        edge_cases.targets(), window=WINDOW, at=_when(at)
    )
    assert report.error is None, report.error
    return report


def test_a_mig_slice_without_framebuffer_series_is_observed_with_memory_unknown(
    edge_cases: EdgeCases, edge_report: ports.UsageReport
) -> None:
    placement = edge_cases.simulator.placement("lab", "slice")
    assert not [
        m
        for m in edge_cases.history[series.FB_USED.name]
        if m.label_dict["pod"].startswith("slice-")
    ]
    profile = edge_report.profiles[_ref("lab", "slice")]
    assert profile.memory_used_bytes is None  # unknown, not zero
    at = _at(edge_cases.end)
    expected = _expected(
        edge_cases.history, edge_cases.times, placement, series.GR_ENGINE_ACTIVE, at
    )
    _assert_matches(profile.graphics_engine_active, expected, "slice.graphics_engine_active")
    assert profile.samples == 1440
    assert profile.coverage == 1.0
    assert profile.observed_seconds == DAY
    assert (profile.mig_profile, profile.gpus) == ("1g.10gb", 1)
    assert profile.gpu_model == layouts.dcgm_model_name(placement.gpu)
    assert profile.power_watts is not None


def test_a_rollout_inside_the_window_leaves_it_covered(
    edge_cases: EdgeCases, edge_report: ports.UsageReport
) -> None:
    profile = edge_report.profiles[_ref("lab", "web")]
    assert profile.coverage == pytest.approx(1.0, abs=0.01)
    assert profile.observed_seconds == DAY
    assert profile.samples == 2 * 1440  # each replica's pods, old and new, a day in all
    assert profile.memory_used_bytes is not None
    # Each pod alone covers half of the window: the busiest pod's figure would decline it.
    rows = [
        r
        for r in _instant(edge_cases, queries.COVERED_STEPS)
        if r["metric"].get("namespace") == "lab" and r["metric"]["pod"].startswith("web-")
    ]
    pods = {r["metric"]["pod"] for r in rows}
    assert pods == {
        *edge_cases.old_pods,
        *(r.pod for r in edge_cases.simulator.placement("lab", "web").replicas),
    }
    steps = queries.grid(WINDOW).steps
    for row in rows:
        assert float(row["value"][1]) / steps == pytest.approx(0.5, abs=0.02), row["metric"]["pod"]


def _instant(edge_cases: EdgeCases, name: str) -> list[dict[str, Any]]:
    promql = next(q.promql for q in queries.sweep(WINDOW) if q.name == name)
    url = f"{edge_cases.url}/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql, "time": f"{_at(edge_cases.end):.3f}"}
    )
    with urllib.request.urlopen(url, timeout=30) as response:
        rows: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
    return rows
