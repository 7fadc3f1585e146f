"""The Prometheus usage source against a real VictoriaMetrics single-node.

VictoriaMetrics (``tests/support/victoriametrics.py``) holds the very samples the session's
Prometheus holds: the same simulated history, imported through its own API, and the same live
simulator, scraped. The operator's unchanged sweep must give the same profiles from both, and
``gpu-rightsizer recommend`` the same recommendations.

Where the two differ, and the tolerance each figure gets here:

- gauges (``quantile_over_time``, ``max_over_time``, ``avg_over_time``), sample counts, the
  coverage subqueries and their ``timestamp()`` steps agree exactly, up to the order in which
  floating-point sums are taken (``avg_over_time``: a relative 1e-9);
- the latency figures come from ``histogram_quantile`` over ``increase(..._bucket[1d])``.
  Prometheus extrapolates ``increase`` to the window's edges; VictoriaMetrics does not (it takes
  the last sample before the window as the start: MetricsQL's documented ``increase``), so the
  buckets' increases, and the quantiles interpolated in them, differ by the share of one
  scrape step in a day: a relative 1e-3 is allowed (seen: under 1.1e-4). The operator rounds
  latencies before it writes them and the recommendations are identical.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hack import staging

from gpu_rightsizer import ports
from gpu_rightsizer.cli import main
from gpu_rightsizer.fleetsim import deployments
from gpu_rightsizer.metrics import queries
from gpu_rightsizer.models import profiles
from tests.e2e import test_prometheus_source as base
from tests.support import prometheus as support

pytestmark = pytest.mark.prometheus

GAUGE_RELATIVE = 1e-9
HISTOGRAM_RELATIVE = 1e-3
HISTOGRAM_FIELDS = ("time_per_output_token_seconds", "time_to_first_token_seconds")


def _collect(backend: support.SimulatedPrometheus) -> ports.UsageReport:
    source = base.prometheus_source(backend.url)
    at = base._at(backend.history_end)
    report = source.collect(base._targets(backend.simulator), window=base.WINDOW, at=base._when(at))
    assert report.error is None, report.error
    return report


@pytest.fixture(scope="module")
def reports(
    prometheus: support.SimulatedPrometheus, victoriametrics: support.SimulatedPrometheus
) -> dict[str, ports.UsageReport]:
    return {"prometheus": _collect(prometheus), "victoriametrics": _collect(victoriametrics)}


def _figures(profile: profiles.UsageProfile) -> dict[str, Any]:
    """The profile as flat ``field.figure`` keys."""
    out: dict[str, Any] = {}
    for key, value in profile.model_dump(mode="json").items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("name", ["chat", "embed", "mini", "trainer"])
def test_victoriametrics_gives_the_simulated_dcgm_figures(
    victoriametrics: support.SimulatedPrometheus,
    reports: dict[str, ports.UsageReport],
    name: str,
) -> None:
    placement = next(p for p in victoriametrics.simulator.placements if p.workload.name == name)
    workload = placement.workload
    profile = reports["victoriametrics"].profiles[base._ref(workload.namespace, name)]
    at = base._at(victoriametrics.history_end)
    for field, family, scale in base.DCGM_SIGNALS:
        expected = base._expected(
            victoriametrics.history, victoriametrics.history_times, placement, family, at, scale
        )
        base._assert_matches(getattr(profile, field), expected, f"{name}.{field}")
    assert profile.samples == 1440 * workload.replicas
    assert profile.coverage == 1.0
    assert profile.observed_seconds == base.DAY
    assert profile.gpus == workload.gpus_per_replica
    assert profile.mig_profile == workload.mig_profile


def test_every_figure_is_what_prometheus_gives(reports: dict[str, ports.UsageReport]) -> None:
    ours, theirs = reports["victoriametrics"], reports["prometheus"]
    assert ours.queries == theirs.queries == len(queries.sweep(base.WINDOW))
    assert set(ours.profiles) == set(theirs.profiles) and len(ours.profiles) == 4
    for ref, expected_profile in theirs.profiles.items():
        got = _figures(ours.profiles[ref])
        expected = _figures(expected_profile)
        assert sorted(got) == sorted(expected), ref
        for key, value in expected.items():
            if isinstance(value, float) and not isinstance(value, bool):
                field = key.split(".")[0]
                tolerance = HISTOGRAM_RELATIVE if field in HISTOGRAM_FIELDS else GAUGE_RELATIVE
                assert got[key] == pytest.approx(value, rel=tolerance, abs=1e-12), f"{ref} {key}"
            else:
                assert got[key] == value, f"{ref} {key}"
    # vLLM's figures are there at all (not two empty profiles agreeing).
    chat = ours.profiles[base._ref("ml", "chat")]
    assert chat.kv_cache_usage is not None and chat.time_to_first_token_seconds is not None
    assert chat.kv_cache_capacity_tokens is not None and chat.preemptions is not None


def _manifests(backend: support.SimulatedPrometheus, folder: pathlib.Path) -> pathlib.Path:
    documents: list[dict[str, Any]] = []
    for placement in backend.simulator.placements:
        documents += [staging.gpuworkload(placement.workload), deployments.deployment(placement)]
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return path


def _recommend(url: str, manifests: pathlib.Path, at: float) -> dict[tuple[str, str], Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(at)))
    args = ["recommend", "-f", str(manifests), "--prometheus-url", url, "--window", base.WINDOW]
    result = CliRunner().invoke(main.cli, [*args, "--at", stamp, "-o", "json"])
    assert result.exit_code == 0, result.output
    return {(i["namespace"], i["name"]): i["status"] for i in json.loads(result.stdout)}


def test_recommend_gives_the_same_recommendations_from_both(
    prometheus: support.SimulatedPrometheus,
    victoriametrics: support.SimulatedPrometheus,
    tmp_path: pathlib.Path,
) -> None:
    manifests = _manifests(prometheus, tmp_path)
    at = base._at(prometheus.history_end)
    theirs = _recommend(prometheus.url, manifests, at)
    ours = _recommend(victoriametrics.url, manifests, at)
    assert sorted(ours) == sorted(theirs) and len(ours) == 4
    for key, status in theirs.items():
        assert "recommendation" in status, (key, status)
        assert ours[key]["recommendation"] == status["recommendation"], key
        assert ours[key].get("savings") == status.get("savings"), key
        assert ours[key]["usage"]["memoryUsedBytes"] == status["usage"]["memoryUsedBytes"], key


def test_victoriametrics_scrapes_the_live_simulator(
    victoriametrics: support.SimulatedPrometheus,
) -> None:
    """The present comes from VictoriaMetrics' own scraper: every GPU's engine-activity series
    gets samples newer than the imported history."""
    gpu_series = len(victoriametrics.history[queries.GR_ENGINE_ACTIVE])
    promql = f"count(timestamp({queries.GR_ENGINE_ACTIVE}) > {victoriametrics.history_end})"

    def scraped() -> bool:
        found = victoriametrics.query(promql)
        return bool(found) and int(float(found[0]["value"][1])) == gpu_series

    support.eventually(scraped, timeout=60, what="scraped series in VictoriaMetrics")
