"""Fixtures for the local Prometheus and the fleet simulator.

``prometheus`` (session scope) is a real Prometheus server (Debian's package, installed by
``make tools``) holding two days of simulated DCGM and vLLM history for a small fleet, and
scraping a live simulator endpoint every 2 s for the present:

1. the fleet's history (60 s step) is written as OpenMetrics and backfilled with promtool
   (``hack/prometheus.py backfill``);
2. a :class:`~gpu_rightsizer.fleetsim.exporter.Exporter` serves the present on a free port;
3. ``hack/prometheus.py up`` starts Prometheus on a free port with its own state folder under
   the session's temporary directory, scraping that endpoint.

It yields a :class:`SimulatedPrometheus` (URL, fleet, history, the live exporter) and stops what
it started at the end. Tests that use it are marked ``@pytest.mark.prometheus``. A missing
``prometheus`` or ``promtool`` fails the test with a message saying to run ``make tools``; it is
never a skip.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hack import staging

from gpu_rightsizer import catalogs
from gpu_rightsizer.fleetsim import exporter, fleets, openmetrics, series
from tests.support import cluster as cluster_support

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
HISTORY_DAYS = 2
STEP_SECONDS = 60.0
SCRAPE_INTERVAL = "2s"

# Tests wait with the one wait there is (hack/staging.py's, failing the test on a timeout),
# imported from here or from tests.support.cluster.
eventually = cluster_support.eventually

# A small fleet with one of each kind: vLLM on whole GPUs, vLLM on MIG instances, a non-vLLM
# server, a training job on two GPUs.
TEST_FLEET = """
seed: 11
workloads:
  - name: chat
    namespace: ml
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    replicas: 2
    engine: vllm
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.4
    traffic: {shape: diurnal, low: 0.05, high: 0.6}
  - name: embed
    namespace: search
    container: embedder
    parameters: 3.35e8
    precision: fp16
    gpuModel: L4
    traffic: {shape: bursty, low: 0.02, high: 0.8, burstsPerDay: 12}
  - name: mini
    namespace: ml
    modelName: meta-llama/Llama-3.2-3B-Instruct
    parameters: 3.21e9
    gpuModel: H100-80GB
    migProfile: 3g.40gb
    replicas: 2
    engine: vllm
    traffic: {shape: constant}
  - name: trainer
    namespace: research
    container: trainer
    parameters: 1.5e9
    gpuModel: A100-80GB
    gpusPerReplica: 2
    traffic: {shape: training}
"""


class PrometheusQueryError(AssertionError):
    """Prometheus answered a query with an error."""


@dataclasses.dataclass
class SimulatedPrometheus:
    """A running Prometheus with simulated history and a live simulator it scrapes."""

    url: str
    fleet: fleets.Fleet
    simulator: series.Simulator
    exporter: exporter.Exporter
    history: dict[str, list[series.Series]]
    history_times: series.FloatArray
    state_dir: pathlib.Path

    @property
    def history_start(self) -> float:
        return float(self.history_times[0])

    @property
    def history_end(self) -> float:
        return float(self.history_times[-1])

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; returns ``data.result`` (a list of {metric, value})."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{promql}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str, at: float | None = None) -> float:
        """The value of a query that must return exactly one sample."""
        result = self.query(promql, at)
        assert len(result) == 1, f"{promql}: expected one sample, got {result}"
        return float(result[0]["value"][1])

    def history_series(self, family: str, **labels: str) -> series.Series:
        """The one history series of ``family`` whose labels include ``labels``."""
        found = [
            s
            for s in self.history[family]
            if all(s.label_dict.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, f"{family}{labels}: {len(found)} series in the history"
        return found[0]


def _harness(state_dir: pathlib.Path, *args: str, timeout: float = 300.0) -> str:
    """``hack/prometheus.py`` through hack/staging.py; a failure fails the test."""
    try:
        return staging.prometheus(*args, state_dir=state_dir, timeout=timeout)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _require_tools() -> None:
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found on PATH: run `make tools` "
            "(hack/install-prometheus.sh installs Debian's prometheus package)",
            pytrace=False,
        )


def write_history(
    path: pathlib.Path, history: dict[str, list[series.Series]], times: series.FloatArray
) -> None:
    """``history`` as one OpenMetrics file (what promtool and VictoriaMetrics import), its
    families in the dict's order (the simulator's, or renamed ones)."""
    families = [members[0].family for members in history.values() if members]
    with path.open("w", encoding="utf-8") as out:
        openmetrics.write_families(out, history, times, families)
        out.write("# EOF\n")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedPrometheus]:
    """Prometheus with two days of simulated history and a live simulator it scrapes."""
    _require_tools()
    work = tmp_path_factory.mktemp("prometheus")
    state_dir = work / "state"
    fleet = fleets.parse(TEST_FLEET, "tests/support/prometheus.py:TEST_FLEET")
    now = time.time()
    end = math.floor(now / STEP_SECONDS) * STEP_SECONDS
    start = end - HISTORY_DAYS * 86_400.0
    simulator = series.Simulator(fleet, catalogs.default_catalog(), epoch=series.default_epoch(now))
    times = openmetrics.timestamps(start, end, STEP_SECONDS)
    history = simulator.series(times)
    history_file = work / "history.om"
    write_history(history_file, history, times)
    _harness(state_dir, "backfill", str(history_file))
    history_file.unlink()
    live = exporter.Exporter(simulator).start()
    try:
        _harness(state_dir, "up", "--target", live.target, "--scrape-interval", SCRAPE_INTERVAL)
        state = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
        yield SimulatedPrometheus(
            url=str(state["url"]),
            fleet=fleet,
            simulator=simulator,
            exporter=live,
            history=history,
            history_times=np.asarray(times),
            state_dir=state_dir,
        )
    finally:
        _harness(state_dir, "down")
        live.stop()
