"""The operator's own telemetry: JSON log lines, the instruments, the /metrics server."""

from __future__ import annotations

import datetime
import gzip
import io
import json
import logging
import shutil
import subprocess
import types
import urllib.request
from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
import structlog

from gpu_rightsizer.telemetry import instruments, logs, serving

# ---------------------------------------------------------------------------------------------
# logs


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A stream for ``logs.configure``; the root logger and structlog are restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _assert_common(line: dict[str, Any], *, level: str, logger: str, event: str) -> None:
    assert line["level"] == level
    assert line["logger"] == logger
    assert line["event"] == event
    stamp = datetime.datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)


def test_structlog_lines_are_json(log_stream: io.StringIO) -> None:
    logs.configure(stream=log_stream)
    logs.get_logger("gpu_rightsizer.sweeps").info("sweep done", workloads=3, seconds=0.25)

    [line] = _lines(log_stream)
    _assert_common(line, level="info", logger="gpu_rightsizer.sweeps", event="sweep done")
    assert line["workloads"] == 3
    assert line["seconds"] == 0.25


def test_stdlib_lines_are_json_with_kopf_object(log_stream: io.StringIO) -> None:
    logs.configure(stream=log_stream)
    ref = {
        "apiVersion": "gpu-rightsizer.dev/v1alpha1",
        "kind": "GPUWorkload",
        "name": "chat",
        "uid": "0000",
        "namespace": "ml",
    }
    # What kopf's ObjectLogger attaches; `settings` is not JSON-serialisable and must stay out.
    # It has kopf's posting settings (disabled): once kopf is imported (by another test in the
    # same process), kopf's own Event-posting log handler reads them from every record.
    posting = types.SimpleNamespace(enabled=False, level=logging.CRITICAL, loggers=False)
    extra = {"k8s_ref": ref, "k8s_skip": False, "settings": types.SimpleNamespace(posting=posting)}
    logging.getLogger("kopf.objects").info("Handler %r succeeded.", "sweep", extra=extra)
    logging.getLogger("urllib3.connectionpool").warning("Retrying %d", 2)

    kopf_line, urllib3_line = _lines(log_stream)
    _assert_common(
        kopf_line, level="info", logger="kopf.objects", event="Handler 'sweep' succeeded."
    )
    assert (kopf_line["kind"], kopf_line["namespace"], kopf_line["name"]) == (
        "GPUWorkload",
        "ml",
        "chat",
    )
    assert not {"settings", "k8s_ref", "k8s_skip"} & kopf_line.keys()
    _assert_common(
        urllib3_line, level="warning", logger="urllib3.connectionpool", event="Retrying 2"
    )


def test_exceptions_are_one_json_line(log_stream: io.StringIO) -> None:
    logs.configure(stream=log_stream)
    try:
        raise RuntimeError("api down")
    except RuntimeError:
        logging.getLogger("kubernetes.client").exception("request failed")
        logs.get_logger("gpu_rightsizer.kube").exception("patch failed")

    stdlib_line, structlog_line = _lines(log_stream)
    for line in (stdlib_line, structlog_line):
        assert line["level"] == "error"
        assert "RuntimeError: api down" in line["exception"]


def test_level_filters_both_paths(log_stream: io.StringIO) -> None:
    logs.configure(level="WARNING", stream=log_stream)
    logs.get_logger("gpu_rightsizer.x").info("hidden")
    logging.getLogger("kopf.activities").info("hidden")
    logs.get_logger("gpu_rightsizer.x").warning("shown")

    assert [line["event"] for line in _lines(log_stream)] == ["shown"]


def test_configure_is_idempotent_and_replaces_kopf_handler(log_stream: io.StringIO) -> None:
    # `kopf run` puts a plain-text handler of this class name on the root logger.
    kopf_stream_handler = type("_KopfStreamHandler", (logging.StreamHandler,), {})
    root = logging.getLogger()
    root.addHandler(kopf_stream_handler(io.StringIO()))
    before = len(root.handlers)

    logs.configure(stream=log_stream)
    logs.configure(stream=log_stream)

    assert len(root.handlers) == before  # kopf's handler out, exactly one of ours in
    logging.getLogger("kopf").info("once")
    assert [line["event"] for line in _lines(log_stream)] == ["once"]


def test_console_format(log_stream: io.StringIO) -> None:
    logs.configure(fmt="console", stream=log_stream)
    logs.get_logger("gpu_rightsizer.x").info("hello", workloads=2)
    logging.getLogger("kopf.objects").info(
        "posted", extra={"k8s_ref": {"namespace": "ml", "name": "chat"}}
    )

    first, second = log_stream.getvalue().splitlines()
    assert "hello" in first
    assert "workloads=2" in first
    assert "\x1b[" not in first  # no colours when the stream is not a terminal
    assert "namespace=ml" in second
    assert "name=chat" in second


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "json"), ("INFO", "xml")])
def test_configure_rejects_unknown_settings(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        logs.configure(level=level, fmt=fmt)


# ---------------------------------------------------------------------------------------------
# instruments

EXPECTED_NAMES = {
    "gpu_rightsizer_workload_projected_savings_monthly",
    "gpu_rightsizer_workload_gpus_freed",
    "gpu_rightsizer_workload_energy_savings_kwh_monthly",
    "gpu_rightsizer_workload_co2_savings_kg_monthly",
    "gpu_rightsizer_workload_ready",
    "gpu_rightsizer_reconcile_duration_seconds",
    "gpu_rightsizer_sweep_workloads",
    "gpu_rightsizer_prometheus_queries_total",
    "gpu_rightsizer_prometheus_query_errors_total",
    "gpu_rightsizer_kubernetes_requests_total",
    "gpu_rightsizer_status_patches_total",
    "gpu_rightsizer_events_total",
    "gpu_rightsizer_fleet_projected_savings_monthly",
    "gpu_rightsizer_fleet_gpus_freed",
}


def _set(inst: instruments.Instruments, name: str, **overrides: Any) -> None:
    figures: dict[str, Any] = {
        "ready": True,
        "savings_monthly": 1200.0,
        "currency": "USD",
        "gpus_freed": 1.5,
        "energy_kwh": 300.0,
        "co2_kg": 120.0,
    }
    inst.set_workload("ml", name, **(figures | overrides))


def _value(inst: instruments.Instruments, name: str, labels: dict[str, str]) -> float | None:
    return inst.registry.get_sample_value(name, labels)


def _declared_names(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def _series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_exposition_declares_every_instrument() -> None:
    inst = instruments.Instruments()
    declared = _declared_names(inst.exposition().decode())
    assert declared >= EXPECTED_NAMES
    assert all(name.startswith("gpu_rightsizer_") for name in declared)


def test_set_workload_writes_labelled_series_and_fleet_totals() -> None:
    inst = instruments.Instruments()
    _set(inst, "chat")
    _set(inst, "embed", savings_monthly=300.0, gpus_freed=0.5)
    _set(inst, "batch", savings_monthly=100.0, currency="EUR", gpus_freed=1.0)

    text = inst.exposition().decode()
    assert (
        "gpu_rightsizer_workload_projected_savings_monthly"
        '{currency="USD",name="chat",namespace="ml"} 1200.0'
    ) in text
    assert 'gpu_rightsizer_workload_gpus_freed{name="chat",namespace="ml"} 1.5' in text
    assert 'gpu_rightsizer_workload_energy_savings_kwh_monthly{name="chat",namespace="ml"}' in text
    assert 'gpu_rightsizer_workload_co2_savings_kg_monthly{name="chat",namespace="ml"}' in text
    assert 'gpu_rightsizer_workload_ready{name="chat",namespace="ml"} 1.0' in text
    fleet = "gpu_rightsizer_fleet_projected_savings_monthly"
    assert _value(inst, fleet, {"currency": "USD"}) == 1500.0
    assert _value(inst, fleet, {"currency": "EUR"}) == 100.0
    assert _value(inst, "gpu_rightsizer_fleet_gpus_freed", {}) == 3.0


def test_unknown_figures_are_absent_not_zero() -> None:
    inst = instruments.Instruments()
    _set(inst, "chat")
    _set(
        inst,
        "chat",
        ready=False,
        savings_monthly=None,
        currency=None,
        gpus_freed=None,
        energy_kwh=None,
        co2_kg=None,
    )

    workload = {"namespace": "ml", "name": "chat"}
    assert _value(inst, "gpu_rightsizer_workload_ready", workload) == 0.0
    assert not [line for line in _series(inst.exposition().decode()) if "savings" in line]
    assert _value(inst, "gpu_rightsizer_workload_gpus_freed", workload) is None
    assert _value(inst, "gpu_rightsizer_fleet_gpus_freed", {}) == 0.0


def test_currency_change_drops_the_old_series() -> None:
    inst = instruments.Instruments()
    _set(inst, "chat")
    _set(inst, "chat", currency="EUR", savings_monthly=1100.0)

    name = "gpu_rightsizer_workload_projected_savings_monthly"
    assert _value(inst, name, {"namespace": "ml", "name": "chat", "currency": "USD"}) is None
    assert _value(inst, name, {"namespace": "ml", "name": "chat", "currency": "EUR"}) == 1100.0
    fleet = "gpu_rightsizer_fleet_projected_savings_monthly"
    assert _value(inst, fleet, {"currency": "USD"}) is None
    assert _value(inst, fleet, {"currency": "EUR"}) == 1100.0


def test_savings_need_a_currency() -> None:
    with pytest.raises(ValueError, match="currency"):
        _set(instruments.Instruments(), "chat", currency=None)


def test_forget_removes_the_workload_series() -> None:
    inst = instruments.Instruments()
    _set(inst, "chat")
    _set(inst, "embed", gpus_freed=0.5, savings_monthly=300.0)

    inst.forget("ml", "chat")
    inst.forget("ml", "never-seen")  # harmless

    assert not [line for line in _series(inst.exposition().decode()) if 'name="chat"' in line]
    fleet = "gpu_rightsizer_fleet_projected_savings_monthly"
    assert _value(inst, fleet, {"currency": "USD"}) == 300.0
    assert _value(inst, "gpu_rightsizer_fleet_gpus_freed", {}) == 0.5

    inst.forget("ml", "embed")
    assert _value(inst, fleet, {"currency": "USD"}) is None
    assert _value(inst, "gpu_rightsizer_fleet_gpus_freed", {}) == 0.0


def test_record_sweep_and_counters() -> None:
    inst = instruments.Instruments()
    inst.record_sweep(seconds=0.4, workloads=12, queries=5, query_errors=1, status_patches=3)
    inst.kubernetes_requests.labels(verb="patch").inc()
    inst.events.labels(reason="RecommendationChanged").inc(2)

    assert _value(inst, "gpu_rightsizer_reconcile_duration_seconds_count", {}) == 1.0
    assert _value(inst, "gpu_rightsizer_reconcile_duration_seconds_sum", {}) == 0.4
    assert _value(inst, "gpu_rightsizer_sweep_workloads", {}) == 12.0
    assert _value(inst, "gpu_rightsizer_prometheus_queries_total", {}) == 5.0
    assert _value(inst, "gpu_rightsizer_prometheus_query_errors_total", {}) == 1.0
    assert _value(inst, "gpu_rightsizer_status_patches_total", {}) == 3.0
    assert _value(inst, "gpu_rightsizer_kubernetes_requests_total", {"verb": "patch"}) == 1.0
    events = {"reason": "RecommendationChanged"}
    assert _value(inst, "gpu_rightsizer_events_total", events) == 2.0


def test_instruments_do_not_touch_the_global_registry() -> None:
    instruments.Instruments()
    instruments.Instruments()  # a second set in a fresh registry: no duplicate-name error
    global_names = {metric.name for metric in prometheus_client.REGISTRY.collect()}
    assert not {name for name in global_names if name.startswith("gpu_rightsizer_")}


def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found on PATH: run `make tools` "
            "(hack/install-prometheus.sh installs Debian's prometheus package)",
            pytrace=False,
        )
    inst = instruments.Instruments()
    _set(inst, "chat")
    _set(inst, "batch", currency="EUR")
    inst.record_sweep(seconds=1.2, workloads=2, queries=4)
    inst.kubernetes_requests.labels(verb="get").inc()
    inst.events.labels(reason="Recommended").inc()

    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=inst.exposition(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


# ---------------------------------------------------------------------------------------------
# serving


@pytest.fixture
def metrics_server() -> Iterator[tuple[serving.MetricsServer, instruments.Instruments]]:
    inst = instruments.Instruments()
    server = serving.start_metrics_server(0, addr="127.0.0.1", registry=inst.registry)
    try:
        yield server, inst
    finally:
        server.shutdown()


def test_server_serves_metrics(
    metrics_server: tuple[serving.MetricsServer, instruments.Instruments],
) -> None:
    server, inst = metrics_server
    _set(inst, "chat")
    url = f"http://127.0.0.1:{server.port}/metrics"

    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    assert 'gpu_rightsizer_workload_ready{name="chat",namespace="ml"} 1.0' in body
    assert "python_gc_objects_collected_total" not in body  # not the global registry

    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert b"gpu_rightsizer_fleet_gpus_freed" in gzip.decompress(response.read())


def test_server_shutdown_frees_the_port() -> None:
    inst = instruments.Instruments()
    first = serving.start_metrics_server(0, addr="127.0.0.1", registry=inst.registry)
    port = first.port
    first.shutdown()
    assert not first.thread.is_alive()

    second = serving.start_metrics_server(port, addr="127.0.0.1", registry=inst.registry)
    second.shutdown()


def test_applies_are_counted_and_realized_savings_shown_then_forgotten() -> None:
    meters = instruments.Instruments(prometheus_client.CollectorRegistry())
    meters.record_apply("ml", "chat", outcome="Applied", realized_monthly=None, currency="USD")
    meters.record_apply("ml", "chat", outcome=None, realized_monthly=812.5, currency="USD")
    meters.record_apply("ml", "embed", outcome="RolledBack", realized_monthly=None, currency=None)
    text = meters.exposition().decode()
    assert 'gpu_rightsizer_applies_total{outcome="Applied"} 1.0' in text
    assert 'gpu_rightsizer_applies_total{outcome="RolledBack"} 1.0' in text
    assert (
        'gpu_rightsizer_workload_realized_savings_monthly{currency="USD",name="chat",'
        'namespace="ml"} 812.5'
    ) in text
    meters.forget("ml", "chat")
    assert "gpu_rightsizer_workload_realized_savings_monthly{" not in meters.exposition().decode()


def test_every_apply_outcome_is_exported_at_zero_before_the_first_change() -> None:
    meters = instruments.Instruments()
    for outcome in ("Applied", "RolledBack", "Failed"):
        assert _value(meters, "gpu_rightsizer_applies_total", {"outcome": outcome}) == 0.0
