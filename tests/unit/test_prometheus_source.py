"""The Prometheus usage source against a small local HTTP server that answers like Prometheus.

The server answers each query of the sweep with a vector recorded per query name (the same
JSON shape Prometheus returns), or with the error a test asks for, and records every request.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import http.server
import json
import pathlib
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from gpu_rightsizer import config, ports
from gpu_rightsizer.metrics import attribution, prometheus, queries
from gpu_rightsizer.models import profiles, workloads

WINDOW = "7d"
AT = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
HASH = "7d9f8b6c5d"
OLD_HASH = "5c4b9f7d8x"
CHAT_A = f"chat-{HASH}-x2x4z"
CHAT_B = f"chat-{HASH}-k9m4t"
CHAT_OLD = f"chat-{OLD_HASH}-b7n2p"
V2 = "chat-v2-6f5d4c8b9z-q2w7z"
H100 = "NVIDIA H100 80GB HBM3"
GIB = 2**30
STEP = 300.0  # the default coverage resolution
END = AT.timestamp()  # a step of the 5-minute grid
DAY = 86_400.0


@dataclasses.dataclass
class Seen:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


class FakePrometheus:
    """``/api/v1/query`` answering from ``answers`` (query name -> vector) or failing."""

    def __init__(self) -> None:
        # The sweep's queries, without a namespace filter and with the one for "ml".
        self.by_promql = {
            q.promql: q.name
            for namespaces in (None, ["ml"])
            for q in queries.sweep(WINDOW, namespaces=namespaces)
        }
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[Seen] = []
        self.failures: list[tuple[int, bytes]] = []  # served first, one per request
        self.delay_seconds = 0.0
        self.held: str | None = None
        """A query name answered only once ``release`` is set."""
        self.release = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                fake.requests.append(Seen(url.path, params, dict(self.headers.items())))
                if fake.delay_seconds:
                    time.sleep(fake.delay_seconds)
                if fake.held is not None and fake.by_promql.get(params.get("query", "")) == (
                    fake.held
                ):
                    fake.release.wait(30)
                if fake.failures:
                    status, body = fake.failures.pop(0)
                    self._reply(status, body)
                    return
                name = fake.by_promql.get(params.get("query", ""))
                result = fake.answers.get(name, []) if name else []
                body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                self._reply(200, json.dumps(body).encode())

            def _reply(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def queries(self) -> list[Seen]:
        return [r for r in self.requests if r.path == "/api/v1/query"]

    def add(self, name: str, pod: str, value: float, namespace: str = "ml", **labels: str) -> None:
        metric = {"namespace": namespace, "pod": pod, **labels}
        self.answers.setdefault(name, []).append({"metric": metric, "value": [1.0, str(value)]})


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def _source(url: str, **overrides: Any) -> prometheus.PrometheusUsageSource:
    settings = dataclasses.replace(
        prometheus.PrometheusSettings(url=url, retries=0, retry_backoff_seconds=0.01),
        **overrides,
    )
    return prometheus.PrometheusUsageSource(settings)


def _target(name: str, *hashes: str, namespace: str = "ml") -> ports.TargetPods:
    return ports.TargetPods(
        workload=workloads.WorkloadRef(namespace=namespace, name=name),
        namespace=namespace,
        kind="Deployment",
        name=name,
        pod_template_hashes=frozenset(hashes),
    )


def _ref(name: str, namespace: str = "ml") -> workloads.WorkloadRef:
    return workloads.WorkloadRef(namespace=namespace, name=name)


def _stats(fake: FakePrometheus, field: str, pod: str, **figures: float) -> None:
    for statistic, value in figures.items():
        fake.add(f"{field}_{statistic}", pod, value)


def _steps(
    fake: FakePrometheus, pod: str, first: float, last: float, count: float | None = None
) -> None:
    """The coverage queries' answers for a pod seen at every step from first to last."""
    fake.add("covered_steps", pod, (last - first) / STEP + 1 if count is None else count)
    fake.add("first_step", pod, first)
    fake.add("last_step", pod, last)


def _record_fleet(fake: FakePrometheus) -> None:
    """Two chat replicas and a pod of chat's previous ReplicaSet, and chat-v2's pod."""
    _stats(
        fake, "memory_used_bytes", CHAT_A, p50=70 * GIB, p95=71 * GIB, p99=72 * GIB, max=73 * GIB
    )
    _stats(
        fake, "memory_used_bytes", CHAT_B, p50=71 * GIB, p95=70 * GIB, p99=70 * GIB, max=74 * GIB
    )
    _stats(
        fake, "memory_used_bytes", CHAT_OLD, p50=60 * GIB, p95=60 * GIB, p99=60 * GIB, max=60 * GIB
    )
    _stats(fake, "memory_used_bytes", V2, p50=5 * GIB, p95=6 * GIB, p99=7 * GIB, max=8 * GIB)
    for pod, busy in ((CHAT_A, 0.3), (CHAT_B, 0.5), (CHAT_OLD, 0.1), (V2, 0.2)):
        _stats(fake, "graphics_engine_active", pod, p50=busy / 2, p95=busy, p99=busy, max=busy)
        fake.add("graphics_engine_active_mean", pod, busy / 3)
        fake.add("samples", pod, 3000)
        fake.add("gpus", pod, 1, modelName=H100)
    # The old ReplicaSet's pod from 6 to 2 days ago, the new ones since: 6 days of 7 covered.
    _steps(fake, CHAT_OLD, END - 6 * DAY, END - 2 * DAY - STEP)
    _steps(fake, CHAT_A, END - 2 * DAY, END)
    _steps(fake, CHAT_B, END - 2 * DAY, END)
    # Older than the window (its first step is the one before it), with gaps: a quarter covered.
    _steps(fake, V2, END - 7 * DAY - STEP, END, count=504)
    fake.add("graphics_engine_active_max", CHAT_B, 1.0000004)  # rounding in the exporter
    fake.add("gpus", CHAT_OLD, 1, modelName="NVIDIA A100-SXM4-80GB", GPU_I_PROFILE="")
    _stats(fake, "power_watts", CHAT_A, p50=200, p95=300, p99=350, max=400, mean=210)
    _stats(fake, "kv_cache_usage", CHAT_A, p50=0.1, p95=0.3, p99=0.35, max=0.4, mean=0.12)
    _stats(fake, "kv_cache_usage", CHAT_B, p50=0.2, p95=0.25, p99=0.3, max=0.45)
    _stats(fake, "requests_waiting", CHAT_A, p50=0, p95=1, p99=2, max=5)
    fake.add("preemptions", CHAT_A, 2.6)
    fake.add("preemptions", CHAT_B, 0)
    # Rows that must be ignored: no pod, a NaN, someone else's pod.
    fake.answers.setdefault("memory_used_bytes_p99", []).append(
        {"metric": {"namespace": "ml"}, "value": [1.0, "5"]}
    )
    fake.add("tensor_active_p50", CHAT_A, float("nan"))
    fake.add("memory_used_bytes_max", "db-0", 99 * GIB)


def test_profiles_combine_each_workloads_pods(fake: FakePrometheus) -> None:
    _record_fleet(fake)
    targets = [_target("chat", HASH, OLD_HASH), _target("chat-v2")]
    report = _source(fake.url).collect(targets, window=WINDOW, at=AT)
    assert report.error is None
    assert report.queries == len(queries.sweep(WINDOW)) == len(fake.queries)
    assert set(report.profiles) == {_ref("chat"), _ref("chat-v2")}

    chat = report.profiles[_ref("chat")]
    assert chat.window == WINDOW
    assert chat.end == AT
    # The busiest pod for each figure, then made ordered (B's max, A's p95 raised by B's p50).
    assert chat.memory_used_bytes == profiles.Percentiles(
        p50=71 * GIB, p95=71 * GIB, p99=72 * GIB, max=74 * GIB
    )
    assert chat.graphics_engine_active.max == 1.0  # clipped
    assert chat.graphics_engine_active.p95 == 0.5
    assert chat.graphics_engine_active.mean == pytest.approx(0.5 / 3)
    assert chat.samples == 9000  # three pods' samples
    assert chat.coverage == pytest.approx((6 * 288 + 1) / 2016)  # the pods' steps together
    assert chat.observed_seconds == 6 * 86_400  # from the old ReplicaSet's first step
    assert chat.gpu_model == H100  # the newest pods', not the old ReplicaSet's A100
    assert chat.mig_profile is None
    assert chat.gpus == 1
    assert chat.power_watts == profiles.Percentiles(p50=200, p95=300, p99=350, max=400, mean=210)
    assert chat.kv_cache_usage == profiles.Fractions(
        p50=0.2, p95=0.3, p99=0.35, max=0.45, mean=0.12
    )
    assert chat.preemptions == 3
    assert chat.requests_waiting == profiles.Percentiles(p50=0, p95=1, p99=2, max=5)
    assert chat.tensor_active is None  # only a NaN
    assert chat.dram_active is None
    assert chat.kv_cache_capacity_bytes is None

    v2 = report.profiles[_ref("chat-v2")]
    assert v2.memory_used_bytes is not None and v2.memory_used_bytes.max == 8 * GIB
    assert v2.observed_seconds == 7 * 86_400  # clipped to the window
    assert v2.kv_cache_usage is None and v2.preemptions is None
    assert v2.samples == 3000
    assert v2.coverage == 0.25


def test_the_series_are_filtered_by_the_targets_namespaces_unless_too_many(
    fake: FakePrometheus,
) -> None:
    targets = [_target("chat"), _target("embed", namespace="search")]
    _source(fake.url).collect(targets, window=WINDOW, at=AT)
    assert all('namespace=~"ml|search"' in r.params["query"] for r in fake.queries)
    fake.requests.clear()
    _source(fake.url, namespace_filter_limit=1).collect(targets, window=WINDOW, at=AT)
    assert all("namespace=~" not in r.params["query"] for r in fake.queries)


def test_every_query_is_evaluated_at_the_same_time(fake: FakePrometheus) -> None:
    _source(fake.url, timeout_seconds=12.5).collect([_target("chat")], window=WINDOW, at=AT)
    assert {r.params["time"] for r in fake.queries} == {f"{AT.timestamp():.3f}"}
    assert {r.params["timeout"] for r in fake.queries} == {"12.5"}
    naive = datetime.datetime(2026, 11, 1)  # taken as UTC
    _source(fake.url).collect([_target("chat")], window=WINDOW, at=naive)
    assert fake.queries[-1].params["time"] == f"{AT.timestamp():.3f}"


def test_without_at_the_sweep_is_evaluated_now(fake: FakePrometheus) -> None:
    clock = datetime.datetime(2027, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    settings = prometheus.PrometheusSettings(url=fake.url)
    source = prometheus.PrometheusUsageSource(settings, clock=lambda: clock)
    _record_fleet(fake)
    report = source.collect([_target("chat")], window=WINDOW)
    assert {r.params["time"] for r in fake.queries} == {f"{clock.timestamp():.3f}"}
    assert report.profiles[_ref("chat")].end == clock


def test_the_query_count_is_the_same_for_one_and_a_thousand_targets(
    fake: FakePrometheus,
) -> None:
    source = _source(fake.url)
    one = source.collect([_target("chat")], window=WINDOW, at=AT)
    sent = len(fake.queries)
    many = [_target(f"server-{i}", namespace=f"team-{i % 300}") for i in range(1000)]
    thousand = source.collect(many, window=WINDOW, at=AT)
    assert one.queries == thousand.queries == sent == len(fake.queries) - sent
    assert all("server-" not in r.params["query"] for r in fake.queries)


def test_no_targets_no_queries(fake: FakePrometheus) -> None:
    report = _source(fake.url).collect([], window=WINDOW, at=AT)
    assert report == ports.UsageReport(profiles={}, queries=0)
    assert fake.requests == []


def test_vllm_series_without_dcgm_series_make_no_profile(fake: FakePrometheus) -> None:
    _stats(fake, "kv_cache_usage", CHAT_A, p50=0.1, p95=0.2, p99=0.3, max=0.4)
    _stats(fake, "memory_used_bytes", CHAT_A, p50=1, p95=2, p99=3, max=4)
    report = _source(fake.url).collect([_target("chat")], window=WINDOW, at=AT)
    assert report.error is None
    assert report.profiles == {}  # no engine activity: the profile would be a guess


def test_a_mig_slice_without_framebuffer_series_has_unknown_memory(fake: FakePrometheus) -> None:
    # Engine activity, history and identity, but no DCGM_FI_DEV_FB_* series: memory is unknown.
    _stats(fake, "graphics_engine_active", CHAT_A, p50=0.1, p95=0.2, p99=0.3, max=0.4)
    fake.add("samples", CHAT_A, 10080)
    _steps(fake, CHAT_A, END - 7 * DAY - STEP, END)
    fake.add("gpus", CHAT_A, 1, modelName=H100, GPU_I_PROFILE="1g.10gb")
    report = _source(fake.url).collect([_target("chat")], window=WINDOW, at=AT)
    assert report.error is None
    profile = report.profiles[_ref("chat")]
    assert profile.memory_used_bytes is None
    assert profile.graphics_engine_active.p95 == 0.2
    assert (profile.samples, profile.coverage, profile.observed_seconds) == (10080, 1.0, 7 * DAY)
    assert (profile.mig_profile, profile.gpus) == ("1g.10gb", 1)


def _cache_config(fake: FakePrometheus, pod: str, **labels: str) -> None:
    fake.add("cache_config", pod, 1, **labels)


def _busy(fake: FakePrometheus, *pods: str) -> None:
    for pod in pods:
        _stats(fake, "graphics_engine_active", pod, p50=0.1, p95=0.2, p99=0.3, max=0.4)


def test_the_cache_config_is_joined_on_pod_and_its_labels_parsed(fake: FakePrometheus) -> None:
    _busy(fake, CHAT_A, CHAT_B, V2)
    labels = {"block_size": "16", "gpu_memory_utilization": "0.9", "engine": "0"}
    _cache_config(fake, CHAT_A, num_gpu_blocks="28160", **labels)
    _cache_config(fake, CHAT_B, num_gpu_blocks="27000", **labels)
    _cache_config(fake, V2, num_gpu_blocks="1000", block_size="32", gpu_memory_utilization="0.5")
    report = _source(fake.url).collect(
        [_target("chat", HASH), _target("chat-v2")], window=WINDOW, at=AT
    )
    chat = report.profiles[_ref("chat")]
    assert chat.kv_cache_capacity_tokens == 28160 * 16  # the larger pool of its two pods
    assert chat.gpu_memory_utilization == 0.9
    v2 = report.profiles[_ref("chat-v2")]
    assert (v2.kv_cache_capacity_tokens, v2.gpu_memory_utilization) == (32_000, 0.5)


@pytest.mark.parametrize(
    ("labels", "tokens", "utilization"),
    [
        ({"num_gpu_blocks": "0", "block_size": "16", "gpu_memory_utilization": "0.9"}, 0, 0.9),
        ({"num_gpu_blocks": "100.0", "block_size": " 16 ", "gpu_memory_utilization": "1"}, 1600, 1),
        (
            {"num_gpu_blocks": "None", "block_size": "16", "gpu_memory_utilization": "0.9"},
            None,
            0.9,
        ),
        ({"block_size": "16", "gpu_memory_utilization": "abc"}, None, None),
        ({"num_gpu_blocks": "100", "block_size": "0", "gpu_memory_utilization": "0"}, None, None),
        ({"num_gpu_blocks": "-5", "block_size": "16", "gpu_memory_utilization": "1.5"}, None, None),
        (
            {"num_gpu_blocks": "1.5", "block_size": "nan", "gpu_memory_utilization": "inf"},
            None,
            None,
        ),
        (
            {"num_gpu_blocks": "1e400", "block_size": "16", "gpu_memory_utilization": "-0.1"},
            None,
            None,
        ),
        ({"num_gpu_blocks": "9" * 40, "block_size": "16"}, None, None),
        ({}, None, None),
    ],
)
def test_cache_config_labels_that_do_not_parse_leave_the_field_unset(
    fake: FakePrometheus,
    labels: dict[str, str],
    tokens: int | None,
    utilization: float | None,
) -> None:
    _busy(fake, CHAT_A)
    _cache_config(fake, CHAT_A, **labels)
    report = _source(fake.url).collect([_target("chat")], window=WINDOW, at=AT)
    assert report.error is None
    profile = report.profiles[_ref("chat")]  # the profile is made whatever the labels say
    assert profile.kv_cache_capacity_tokens == tokens
    assert profile.gpu_memory_utilization == utilization


def test_latency_percentiles_come_from_the_histograms(fake: FakePrometheus) -> None:
    _busy(fake, CHAT_A, CHAT_B)
    tpot = {"p50": 0.012, "p95": 0.02, "p99": 0.03, "max": 0.05}
    _stats(fake, "time_per_output_token_seconds", CHAT_A, **tpot)
    _stats(fake, "time_per_output_token_seconds", CHAT_B, p50=0.011, p95=0.025, p99=0.028)
    _stats(fake, "time_to_first_token_seconds", CHAT_B, p50=0.05, p95=0.2, p99=0.5, max=1.0)
    fake.add("time_to_first_token_seconds_p99", CHAT_A, float("nan"))  # no requests
    report = _source(fake.url).collect([_target("chat", HASH)], window=WINDOW, at=AT)
    chat = report.profiles[_ref("chat")]
    assert chat.time_per_output_token_seconds == profiles.Percentiles(
        p50=0.012, p95=0.025, p99=0.03, max=0.05
    )
    assert chat.time_to_first_token_seconds == profiles.Percentiles(
        p50=0.05, p95=0.2, p99=0.5, max=1.0
    )
    assert chat.kv_cache_capacity_tokens is None


# --- credentials and TLS --------------------------------------------------------------------


def test_the_bearer_token_file_is_read_at_every_sweep(
    fake: FakePrometheus, tmp_path: pathlib.Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n", encoding="utf-8")
    source = _source(fake.url, bearer_token="ignored", bearer_token_file=token)
    source.collect([_target("chat")], window=WINDOW, at=AT)
    token.write_text("rotated-token", encoding="utf-8")
    source.collect([_target("chat")], window=WINDOW, at=AT)
    seen = {r.headers.get("Authorization") for r in fake.queries}
    assert seen == {"Bearer first-token", "Bearer rotated-token"}


def test_a_plain_bearer_token_and_extra_headers(fake: FakePrometheus) -> None:
    source = _source(fake.url, bearer_token="abc", headers=(("X-Scope-OrgID", "team-a"),))
    source.collect([_target("chat")], window=WINDOW, at=AT)
    assert {r.headers.get("Authorization") for r in fake.queries} == {"Bearer abc"}
    assert {r.headers.get("X-Scope-OrgID") for r in fake.queries} == {"team-a"}


def test_basic_auth(fake: FakePrometheus, tmp_path: pathlib.Path) -> None:
    _source(fake.url, username="ops", password="s3cret").collect(
        [_target("chat")], window=WINDOW, at=AT
    )
    password = tmp_path / "password"
    password.write_text("from-file\n", encoding="utf-8")
    _source(fake.url, username="ops", password_file=password).collect(
        [_target("chat")], window=WINDOW, at=AT
    )
    expected = {
        "Basic " + base64.b64encode(f"ops:{secret}".encode()).decode()
        for secret in ("s3cret", "from-file")
    }
    assert {r.headers.get("Authorization") for r in fake.queries} == expected


@pytest.mark.parametrize("setting", ["bearer_token_file", "password_file"])
def test_an_unreadable_secret_file_is_an_error(
    fake: FakePrometheus, tmp_path: pathlib.Path, setting: str
) -> None:
    missing = tmp_path / "missing"
    report = _source(fake.url, username="ops", **{setting: missing}).collect(
        [_target("chat")], window=WINDOW, at=AT
    )
    assert report.queries == 0
    assert report.error is not None
    assert str(missing) in report.error and "No such file" in report.error
    assert fake.requests == []


def test_settings_from_the_operator_configuration(tmp_path: pathlib.Path) -> None:
    conn = config.PrometheusConnection(
        url="https://prom.example:9090",
        bearer_token_file=tmp_path / "t",
        username="u",
        password_file=tmp_path / "p",
        ca_file=tmp_path / "ca.pem",
        verify_tls=False,
        timeout_seconds=5.0,
        retries=1,
    )
    settings = prometheus.settings_from(conn)
    assert (settings.url, settings.bearer_token_file, settings.username) == (
        conn.url,
        conn.bearer_token_file,
        "u",
    )
    assert (settings.password_file, settings.ca_file, settings.verify_tls) == (
        conn.password_file,
        conn.ca_file,
        False,
    )
    assert (settings.timeout_seconds, settings.retries) == (5.0, 1)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_with_a_custom_ca_bundle(
    fake: FakePrometheus, tls_files: tuple[pathlib.Path, pathlib.Path]
) -> None:
    import ssl  # noqa: PLC0415 - only this test serves TLS

    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    fake.server.socket = context.wrap_socket(fake.server.socket, server_side=True)
    url = fake.url.replace("http://", "https://")
    _record_fleet(fake)
    trusted = _source(url, ca_file=cert).collect([_target("chat")], window=WINDOW, at=AT)
    assert trusted.error is None
    assert _ref("chat") in trusted.profiles
    untrusted = _source(url).collect([_target("chat")], window=WINDOW, at=AT)
    assert untrusted.error is not None
    assert "TLS error" in untrusted.error and "certificate verify failed" in untrusted.error


# --- failures -------------------------------------------------------------------------------


def _one_line_error(report: ports.UsageReport, url: str) -> str:
    assert report.profiles == {}
    assert report.error is not None
    assert report.error.startswith(f"Prometheus at {url}: ")
    assert "\n" not in report.error
    return report.error


def test_an_http_error_with_a_prometheus_error_body(fake: FakePrometheus) -> None:
    body = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
    fake.failures = [(400, json.dumps(body).encode())]
    report = _source(fake.url).collect([_target("chat")], window=WINDOW, at=AT)
    error = _one_line_error(report, fake.url)
    assert 'query memory_used_bytes_p50: HTTP 400: bad_data: parse error: unexpected "}"' in error
    assert report.queries == 1


def test_an_overloaded_server_is_retried_then_reported(fake: FakePrometheus) -> None:
    unavailable = json.dumps({"status": "error", "errorType": "unavailable", "error": "busy"})
    fake.failures = [(503, unavailable.encode())] * 3
    report = _source(fake.url, retries=2).collect([_target("chat")], window=WINDOW, at=AT)
    assert "HTTP 503: unavailable: busy" in _one_line_error(report, fake.url)
    assert len(fake.queries) == 3  # the first try and two retries

    fake.failures = [(502, b"<html>bad gateway</html>")] * 2
    report = _source(fake.url, retries=2).collect([_target("chat")], window=WINDOW, at=AT)
    assert report.error is None
    assert report.queries == len(queries.sweep(WINDOW))


def test_a_proxy_error_page_is_reported(fake: FakePrometheus) -> None:
    fake.failures = [(403, b"<html>\n<h1>Forbidden</h1>\n</html>")]
    error = _one_line_error(
        _source(fake.url).collect([_target("chat")], window=WINDOW, at=AT), fake.url
    )
    assert "HTTP 403: <html> <h1>Forbidden</h1> </html>" in error


@pytest.mark.parametrize(
    "body",
    [b"this is not json", b'{"status": "success"}', b'{"status": "success", "data": 3}'],
)
def test_an_answer_that_is_not_prometheus_json(fake: FakePrometheus, body: bytes) -> None:
    fake.failures = [(200, body)]
    error = _one_line_error(
        _source(fake.url).collect([_target("chat")], window=WINDOW, at=AT), fake.url
    )
    assert "not Prometheus JSON" in error


def test_a_malformed_vector_is_reported(fake: FakePrometheus) -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}
    fake.failures = [(200, json.dumps(body).encode())]
    error = _one_line_error(
        _source(fake.url).collect([_target("chat")], window=WINDOW, at=AT), fake.url
    )
    assert "malformed sample" in error


def test_a_slow_server_times_out(fake: FakePrometheus) -> None:
    fake.delay_seconds = 2.0
    started = time.monotonic()
    report = _source(fake.url, timeout_seconds=0.3, retries=3).collect(
        [_target("chat")], window=WINDOW, at=AT
    )
    assert time.monotonic() - started < 1.5  # a read timeout is not retried
    assert "query memory_used_bytes_p50: no answer within 0.3 s" in _one_line_error(
        report, fake.url
    )
    assert report.queries == 1


def test_a_closed_port_is_an_error_not_an_exception() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    report = _source(url, retries=2).collect([_target("chat")], window=WINDOW, at=AT)
    error = _one_line_error(report, url)
    assert error.endswith("query memory_used_bytes_p50: cannot connect: Connection refused")


def test_credentials_in_the_url_stay_out_of_messages() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = _source(f"http://ops:hunter2@127.0.0.1:{port}/")
    report = source.collect([_target("chat")], window=WINDOW, at=AT)
    assert report.error is not None
    assert "hunter2" not in report.error
    assert report.error.startswith(f"Prometheus at http://127.0.0.1:{port}: ")


@pytest.mark.parametrize("url", ["prometheus:9090", "ftp://prometheus", "127.0.0.1:9090"])
def test_a_url_without_http_is_an_error(url: str) -> None:
    report = _source(url).collect([_target("chat")], window=WINDOW, at=AT)
    assert report.queries == 0
    assert report.error is not None and "must start with http:// or https://" in report.error


def test_an_invalid_window_is_an_error(fake: FakePrometheus) -> None:
    report = _source(fake.url).collect([_target("chat")], window="a week", at=AT)
    assert report.queries == 0
    assert report.error is not None and "invalid duration 'a week'" in report.error


# --- building profiles ------------------------------------------------------------------------


def test_profiles_are_valid_whatever_the_figures() -> None:
    usage = attribution.WorkloadUsage(
        values={
            "memory_used_bytes_p50": 5.0,
            "memory_used_bytes_p95": 3.0,
            "memory_used_bytes_max": -1.0,
            "graphics_engine_active_p99": 1.7,
            "graphics_engine_active_mean": float("inf"),
            "coverage": 1.3,
            "first_step": AT.timestamp() + 5.0,  # after the end
            "samples": 12.4,
            "preemptions": -0.2,
        },
        pods=("a",),
        gpus=0,
    )
    profile = prometheus.build_profile(usage, window="1d", end=AT)
    assert profile is not None
    # Missing p99 takes the largest figure present; order is enforced upwards.
    assert profile.memory_used_bytes == profiles.Percentiles(p50=5.0, p95=5.0, p99=5.0, max=5.0)
    assert profile.graphics_engine_active == profiles.Fractions(p50=1.0, p95=1.0, p99=1.0, max=1.0)
    assert (profile.coverage, profile.observed_seconds, profile.samples) == (1.0, 0.0, 12)
    assert profile.preemptions == 0
    assert profile.gpus is None


# --- queries in flight at once ---------------------------------------------------------------


def test_concurrent_queries_give_the_same_profiles_from_the_same_queries(
    fake: FakePrometheus,
) -> None:
    _record_fleet(fake)
    targets = [_target("chat", HASH, OLD_HASH), _target("chat-v2")]
    one_at_a_time = _source(fake.url).collect(targets, window=WINDOW, at=AT)
    sent = sorted(r.params["query"] for r in fake.queries)
    fake.requests.clear()
    four = _source(fake.url, query_concurrency=4).collect(targets, window=WINDOW, at=AT)
    assert four.error is None and four.queries == one_at_a_time.queries
    assert sorted(r.params["query"] for r in fake.queries) == sent  # each query once
    assert four.profiles == one_at_a_time.profiles


def test_a_slow_query_holds_back_all_but_a_few_of_the_queries_after_it(
    fake: FakePrometheus,
) -> None:
    """Answers are filed in plan order: while the first is slow, only twice the concurrency
    are sent (their answers wait in memory), not the whole plan."""
    _record_fleet(fake)
    targets = [_target("chat", HASH, OLD_HASH), _target("chat-v2")]
    expected = _source(fake.url).collect(targets, window=WINDOW, at=AT)
    fake.requests.clear()
    plan = queries.sweep(WINDOW, namespaces={"ml"})
    assert len(plan) > 8
    fake.held = plan[0].name
    answer: list[ports.UsageReport] = []
    sweep = threading.Thread(
        target=lambda: answer.append(
            _source(fake.url, query_concurrency=4).collect(targets, window=WINDOW, at=AT)
        )
    )
    sweep.start()
    try:
        deadline = time.monotonic() + 10
        while len(fake.queries) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # time for any further query to arrive
        assert len(fake.queries) == 8  # the held one and the seven after it
    finally:
        fake.release.set()
        sweep.join(30)
    (report,) = answer
    assert report.error is None and report.profiles == expected.profiles
    assert len(fake.queries) == len(plan)


def test_with_concurrent_queries_a_failure_still_fails_the_sweep(fake: FakePrometheus) -> None:
    _record_fleet(fake)
    fake.failures = [(400, b'{"status":"error","errorType":"bad_data","error":"boom"}')]
    report = _source(fake.url, query_concurrency=4).collect([_target("chat")], window=WINDOW, at=AT)
    assert report.profiles == {}
    assert report.error is not None and "HTTP 400: bad_data: boom" in report.error
