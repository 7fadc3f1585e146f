"""``gpu-rightsizer run``: flags and env vars reach the operator's configuration and servers."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from click.testing import CliRunner
from hack import staging

from gpu_rightsizer import config
from gpu_rightsizer.cli import main
from gpu_rightsizer.handlers import running


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """What ``gpu-rightsizer run`` hands to the operator (which is not started)."""
    for name in ("GPU_RIGHTSIZER_METRICS_BIND_ADDRESS", "GPU_RIGHTSIZER_METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    seen: dict[str, Any] = {}

    def fake_run(cfg: config.OperatorConfig, **kwargs: Any) -> None:
        seen["cfg"] = cfg
        seen.update(kwargs)

    monkeypatch.setattr(running, "run", fake_run)
    yield seen


def invoke(*args: str, env: dict[str, str] | None = None) -> None:
    result = CliRunner().invoke(
        main.cli, ["run", "--prometheus-url", "http://prometheus:9090", *args], env=env
    )
    assert result.exit_code == 0, result.output


def test_metrics_bind_address_defaults_to_every_interface(captured: dict[str, Any]) -> None:
    invoke()
    assert captured["cfg"].metrics_bind_address == "0.0.0.0"


def test_metrics_bind_address_from_the_flag_and_the_env(captured: dict[str, Any]) -> None:
    invoke("--metrics-bind-address", "127.0.0.1")
    assert captured["cfg"].metrics_bind_address == "127.0.0.1"
    invoke(env={"GPU_RIGHTSIZER_METRICS_BIND_ADDRESS": "::1"})
    assert captured["cfg"].metrics_bind_address == "::1"


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    """``running.run`` configures logging; restore the root logger and structlog afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def test_the_metrics_server_listens_on_the_bind_address(
    monkeypatch: pytest.MonkeyPatch, quiet_logging: None
) -> None:
    port = staging.free_port()
    outward = _outward_address()
    seen: dict[str, Any] = {}

    def fake_kopf_run(**kwargs: Any) -> None:  # while "kopf" runs, /metrics answers
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            seen["status"] = response.status
        if outward is not None:
            with socket.socket() as probe:  # nothing listens on the other interfaces
                probe.settimeout(5)
                seen["elsewhere"] = probe.connect_ex((outward, port))

    monkeypatch.setattr(running.kopf, "run", fake_kopf_run)
    cfg = config.OperatorConfig(
        prometheus=config.PrometheusConnection(url="http://prometheus:9090"),
        metrics_port=port,
        metrics_bind_address="127.0.0.1",
    )
    running.run(cfg, liveness=None, peering=None)
    assert seen["status"] == 200
    if outward is not None:
        assert seen["elsewhere"] != 0, f"/metrics answers on {outward} too"


def _outward_address() -> str | None:
    """An address of this host other than loopback, if any (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed
            address = str(sock.getsockname()[0])
        except OSError:
            address = "127.0.0.1"
    return None if address.startswith("127.") else address


def test_a_bad_bind_address_is_one_line_not_a_traceback(quiet_logging: None) -> None:
    cfg = config.OperatorConfig(
        prometheus=config.PrometheusConnection(url="http://prometheus:9090"),
        metrics_port=staging.free_port(),
        metrics_bind_address="no-such-host.invalid",
    )
    with pytest.raises(SystemExit, match=r"--metrics-bind-address/--metrics-port no-such-host"):
        running.run(cfg, liveness=None, peering=None)
