"""A real VictoriaMetrics single-node holding the same simulated history as the ``prometheus``
fixture, and scraping the live simulator.

``victoriametrics`` (session scope) starts ``victoria-metrics`` (built from its Go module by
``make tools``: hack/build-tools.sh, hack/gomod/victoriametrics) on a free port with its own
storage folder under the session's temporary directory, then:

1. imports the ``prometheus`` fixture's history, the same OpenMetrics text promtool backfills
   into Prometheus, through VictoriaMetrics' own import API
   (``POST /api/v1/import/prometheus``, which takes OpenMetrics timestamps in seconds), and
   forces a flush (``/internal/force_flush``) so all of it is searchable at once;
2. scrapes that fixture's live :class:`~gpu_rightsizer.fleetsim.exporter.Exporter` every 2 s
   with its built-in scraper (``-promscrape.config``, ``honor_labels`` like the Prometheus
   harness).

Flags that matter for comparing with Prometheus: ``-search.latencyOffset=0s`` (by default
VictoriaMetrics hides the last 30 s from instant queries, and the tests evaluate the sweep half
a minute before the end of the history, close to now), ``-search.disableCache`` (no rollup
result cache between the tests' queries at fixed times) and ``-retentionPeriod=30d``.

It yields the ``prometheus`` fixture's :class:`~tests.support.prometheus.SimulatedPrometheus`
with VictoriaMetrics' URL (the same history, simulator and live exporter, so both backends hold
the same samples) and stops what it started at the end. A missing binary fails with a
message saying to run ``make tools``; it is never a skip.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support import prometheus as support

CACHE = pathlib.Path(os.environ.get("GPU_RIGHTSIZER_CACHE") or support.REPO_ROOT / ".cache")
BIN_DIR = pathlib.Path(os.environ.get("GPU_RIGHTSIZER_BIN_DIR") or CACHE / "bin")


def binary(name: str = "victoria-metrics") -> pathlib.Path:
    """A VictoriaMetrics binary from .cache/bin; a test failure when `make tools` has not run."""
    path = BIN_DIR / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} not found: run `make tools` (hack/build-tools.sh builds {name} from "
            "hack/gomod/victoriametrics)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except (urllib.error.URLError, OSError):
        return 0


class VictoriaMetrics:
    """One victoria-metrics process (a context manager: stopped on exit)."""

    def __init__(self, work: pathlib.Path, targets: list[str], scrape_interval: str) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "victoria-metrics.log"
        config = work / "scrape.yaml"
        jobs = "".join(
            f"  - job_name: fleetsim\n    honor_labels: true\n"
            f"    static_configs: [{{targets: [{target!r}]}}]\n"
            for target in targets
        )
        header = f"global:\n  scrape_interval: {scrape_interval}\nscrape_configs:\n"
        config.write_text(header + (jobs or "  []\n"), encoding="utf-8")
        self.command = [
            str(binary()),
            f"-storageDataPath={work / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=30d",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            f"-promscrape.config={config}",
            "-loggerLevel=WARN",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> VictoriaMetrics:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
                pytest.fail(f"victoria-metrics exited {self.process.returncode}: {tail}")
            if _get(f"{self.url}/health") == 200:
                return self
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"victoria-metrics not ready after {timeout:.0f}s; see {self.log}")

    def import_openmetrics(self, path: pathlib.Path) -> None:
        """Import an OpenMetrics file (timestamps in seconds) and make it searchable now."""
        request = urllib.request.Request(
            f"{self.url}/api/v1/import/prometheus",
            data=path.read_bytes(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 204, f"import answered {response.status}"
        assert _get(f"{self.url}/internal/force_flush", timeout=60) == 200

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> VictoriaMetrics:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def victoriametrics(
    prometheus: support.SimulatedPrometheus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.SimulatedPrometheus]:
    """VictoriaMetrics holding the ``prometheus`` fixture's history and scraping its live
    simulator: both backends hold the same samples, so their answers can be compared."""
    binary()
    work = tmp_path_factory.mktemp("victoriametrics")
    history_file = work / "history.om"
    support.write_history(history_file, prometheus.history, prometheus.history_times)
    with VictoriaMetrics(work, [prometheus.exporter.target], support.SCRAPE_INTERVAL) as server:
        server.import_openmetrics(history_file)
        history_file.unlink()
        yield dataclasses.replace(prometheus, url=server.url, state_dir=work)
