"""Metric dialects against a real Prometheus holding the simulated history in each dialect.

For each dialect (``tests/support/dialects.py``: dcgm-exporter ``--use-old-namespace``, Google
Managed Prometheus' relabelled series) a Prometheus is backfilled with the last day and an hour
of the session Prometheus' history, rewritten in that dialect: the same samples under other
metric and label names. The sweep with ``--metrics-dialect`` must give exactly the profiles, and
``gpu-rightsizer recommend`` exactly the recommendations, that the default dialect gives on the
default history.
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hack import staging

from gpu_rightsizer import ports
from gpu_rightsizer.cli import main
from gpu_rightsizer.fleetsim import deployments, series
from gpu_rightsizer.metrics import dialects, prometheus, queries
from tests.e2e import test_prometheus_source as base
from tests.support import dialects as dialect_support, prometheus as support

pytestmark = pytest.mark.prometheus

DIALECTS = [dialects.DCGM_OLD_NAMESPACE.name, dialects.GMP.name]


class DialectPrometheus:
    def __init__(self, url: str, dialect: dialects.Dialect) -> None:
        self.url = url
        self.dialect = dialect

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=60) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module", params=DIALECTS)
def in_dialect(
    request: pytest.FixtureRequest,
    prometheus: support.SimulatedPrometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DialectPrometheus]:
    dialect = dialects.by_name(request.param)
    work: pathlib.Path = tmp_path_factory.mktemp(f"dialect-{dialect.name}")
    state_dir = work / "state"
    times = prometheus.history_times
    keep = times >= prometheus.history_end - base.DAY - 3600
    sliced = {
        name: [
            series.Series(m.family, m.labels, np.asarray(m.values)[keep], m.suffix) for m in members
        ]
        for name, members in prometheus.history.items()
    }
    history = dialect_support.rewrite(sliced, dialect)
    history_file = work / "history.om"
    support.write_history(history_file, history, times[keep])
    support._harness(state_dir, "backfill", str(history_file))
    history_file.unlink()
    try:
        support._harness(state_dir, "up")
        url = str(json.loads((state_dir / "state.json").read_text(encoding="utf-8"))["url"])
        yield DialectPrometheus(url, dialect)
    finally:
        support._harness(state_dir, "down")


def _collect(
    url: str, simulator: series.Simulator, at: float, dialect: dialects.Dialect
) -> ports.UsageReport:
    settings = prometheus.PrometheusSettings(url=url, dialect=dialect)
    report = prometheus.PrometheusUsageSource(settings).collect(
        base._targets(simulator), window=base.WINDOW, at=base._when(at)
    )
    assert report.error is None, report.error
    return report


def test_the_dialect_gives_the_default_dialects_profiles(
    prometheus: support.SimulatedPrometheus, in_dialect: DialectPrometheus
) -> None:
    at = base._at(prometheus.history_end)
    expected = _collect(prometheus.url, prometheus.simulator, at, dialects.DCGM)
    got = _collect(in_dialect.url, prometheus.simulator, at, in_dialect.dialect)
    assert got.queries == expected.queries == len(queries.sweep(base.WINDOW))
    assert len(expected.profiles) == 4
    assert set(got.profiles) == set(expected.profiles)
    for ref, profile in expected.profiles.items():
        assert got.profiles[ref].model_dump() == profile.model_dump(), ref
    chat = got.profiles[base._ref("ml", "chat")]
    assert chat.memory_used_bytes is not None and chat.kv_cache_usage is not None


def _manifests(simulator: series.Simulator, folder: pathlib.Path) -> pathlib.Path:
    documents: list[dict[str, Any]] = []
    for placement in simulator.placements:
        documents += [staging.gpuworkload(placement.workload), deployments.deployment(placement)]
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return path


def _recommend(url: str, manifests: pathlib.Path, at: float, *flags: str) -> dict[Any, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(at)))
    args = ["recommend", "-f", str(manifests), "--prometheus-url", url, "--window", base.WINDOW]
    result = CliRunner().invoke(main.cli, [*args, "--at", stamp, *flags, "-o", "json"])
    assert result.exit_code == 0, result.output
    return {(i["namespace"], i["name"]): i["status"] for i in json.loads(result.stdout)}


def test_recommend_with_the_dialect_recommends_what_the_default_does(
    prometheus: support.SimulatedPrometheus,
    in_dialect: DialectPrometheus,
    tmp_path: pathlib.Path,
) -> None:
    manifests = _manifests(prometheus.simulator, tmp_path)
    at = base._at(prometheus.history_end)
    expected = _recommend(prometheus.url, manifests, at)
    got = _recommend(in_dialect.url, manifests, at, "--metrics-dialect", in_dialect.dialect.name)
    assert sorted(got) == sorted(expected) and len(got) == 4
    for key, status in expected.items():
        assert "recommendation" in status, key
        assert got[key]["recommendation"] == status["recommendation"], key
        assert got[key]["usage"] == status["usage"], key


def test_without_the_dialect_old_names_are_not_read_and_gmp_sees_the_exporter_pod(
    prometheus: support.SimulatedPrometheus, in_dialect: DialectPrometheus
) -> None:
    """What the dialect changes: the default dialect finds no DCGM series of
    ``--use-old-namespace`` at all; on GMP's series it reads the workloads too, but also takes
    the exporter's own pod for a GPU user (a GPU nobody uses), which the gmp dialect does not."""
    at = base._at(prometheus.history_end)
    default = _collect(in_dialect.url, prometheus.simulator, at, dialects.DCGM)

    def gpus(dialect: dialects.Dialect) -> set[tuple[str, str]]:
        promql = next(
            q.promql for q in queries.sweep(base.WINDOW, dialect=dialect) if q.name == queries.GPUS
        )
        return {
            (r["metric"]["namespace"], r["metric"]["pod"]) for r in in_dialect.query(promql, at)
        }

    exporter_pod = (series.EXPORTER_NAMESPACE, dialect_support.EXPORTER_POD)
    if in_dialect.dialect is dialects.DCGM_OLD_NAMESPACE:
        assert default.profiles == {}
        assert gpus(dialects.DCGM) == set()
        assert exporter_pod not in gpus(in_dialect.dialect)
    else:
        assert len(default.profiles) == 4
        assert exporter_pod in gpus(dialects.DCGM)
        assert exporter_pod not in gpus(in_dialect.dialect)
    pods = {
        (p.workload.namespace, r.pod) for p in prometheus.simulator.placements for r in p.replicas
    }
    assert gpus(in_dialect.dialect) == pods
