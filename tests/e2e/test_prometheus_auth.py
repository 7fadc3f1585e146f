"""The Prometheus source's TLS, basic auth and bearer token against real TLS endpoints.

A private CA (``hack/devcluster/pki.py``) signs a server certificate for 127.0.0.1. Two real
servers use it:

- Prometheus itself with ``--web.config.file``: ``tls_server_config`` with that certificate and
  ``basic_auth_users`` with a bcrypt hash, over an hour of the test fleet's history backfilled
  by promtool;
- vmauth (VictoriaMetrics' auth proxy, built by ``make tools``) over TLS with the same
  certificate, accepting one bearer token (``users[].bearer_token``) and proxying to that
  Prometheus over HTTPS (trusting the private CA, and sending the basic-auth credentials as a
  header), since Prometheus' web config has no bearer tokens.

Each test runs the operator's adapter (the same sweep the operator runs) and asserts what a user
sees: profiles with the right credentials and the CA, a one-line error naming the problem
otherwise; and ``gpu-rightsizer recommend`` with the same settings from files.
"""

from __future__ import annotations

import base64
import json
import math
import os
import pathlib
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import bcrypt
import pytest
import yaml
from click.testing import CliRunner
from hack import staging
from hack.devcluster import pki as pki_lib

from gpu_rightsizer import catalogs, ports
from gpu_rightsizer.cli import main
from gpu_rightsizer.fleetsim import deployments, fleets, openmetrics, series
from gpu_rightsizer.metrics import prometheus
from tests.e2e import test_prometheus_source as base
from tests.support import prometheus as support, victoriametrics as vm_support

pytestmark = pytest.mark.prometheus

USER = "rightsizer"
PASSWORD = "correct horse battery staple"
TOKEN = "a-bearer-token-for-vmauth"
WINDOW = "30m"


class Secured:
    """The two TLS endpoints and the files a client needs."""

    def __init__(self, work: pathlib.Path) -> None:
        self.work = work
        self.pki = pki_lib.ensure_pki(work / "pki")
        self.prometheus_url = ""
        self.vmauth_url = ""
        self.end = 0.0
        self.simulator: series.Simulator | None = None
        self.password_file = self._secret("password", PASSWORD)
        self.wrong_password_file = self._secret("wrong-password", "battery horse")
        self.token_file = self._secret("token", TOKEN)
        self.wrong_token_file = self._secret("wrong-token", "not-the-token")

    def _secret(self, name: str, value: str) -> pathlib.Path:
        path = self.work / name
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    @property
    def targets(self) -> list[ports.TargetPods]:
        assert self.simulator is not None
        return base._targets(self.simulator)

    def collect(self, url: str, **settings: Any) -> ports.UsageReport:
        source = prometheus.PrometheusUsageSource(
            prometheus.PrometheusSettings(url=url, retries=0, **settings)
        )
        at = base._when(self.end - support.STEP_SECONDS / 2)
        return source.collect(self.targets, window=WINDOW, at=at)


def _start(command: list[str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _answers(url: str, ca: pathlib.Path, headers: dict[str, str]) -> bool:
    """Whether an HTTPS GET of ``url`` (verified with ``ca``) gets any HTTP answer."""
    import ssl  # noqa: PLC0415

    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    support._require_tools()
    vmauth = vm_support.binary("vmauth")
    work = tmp_path_factory.mktemp("auth")
    env = Secured(work)
    # An hour of the test fleet's history, backfilled into a fresh TSDB.
    fleet = fleets.parse(support.TEST_FLEET, "tests/support/prometheus.py:TEST_FLEET")
    now = time.time()
    env.end = math.floor(now / support.STEP_SECONDS) * support.STEP_SECONDS
    times = openmetrics.timestamps(env.end - 3600, env.end, support.STEP_SECONDS)
    env.simulator = series.Simulator(
        fleet, catalogs.default_catalog(), epoch=series.default_epoch(now)
    )
    history = work / "history.om"
    support.write_history(history, env.simulator.series(times), times)
    state = work / "state"
    support._harness(state, "backfill", str(history))
    history.unlink()

    serving = env.pki.serving
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    web = work / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": str(serving.cert), "key_file": str(serving.key)},
                "basic_auth_users": {USER: hashed},
            }
        ),
        encoding="utf-8",
    )
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n", encoding="utf-8")
    prom_port = vm_support.free_port()
    env.prometheus_url = f"https://127.0.0.1:{prom_port}"
    processes = [
        _start(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={state / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                f"--web.config.file={web}",
            ],
            work / "prometheus.log",
        )
    ]
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth = work / "vmauth.yml"
    auth.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {
                        "bearer_token": TOKEN,
                        "url_prefix": env.prometheus_url,
                        "headers": [f"Authorization: Basic {basic}"],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    vmauth_port = vm_support.free_port()
    env.vmauth_url = f"https://127.0.0.1:{vmauth_port}"
    try:
        processes.append(
            _start(
                [
                    str(vmauth),
                    f"-auth.config={auth}",
                    f"-httpListenAddr=127.0.0.1:{vmauth_port}",
                    "-tls",
                    f"-tlsCertFile={serving.cert}",
                    f"-tlsKeyFile={serving.key}",
                    f"-backend.TLSCAFile={env.pki.ca_cert}",
                    "-loggerLevel=WARN",
                ],
                work / "vmauth.log",
            )
        )
        ready = f"{env.prometheus_url}/-/ready"
        support.eventually(
            lambda: _answers(ready, env.pki.ca_cert, {}), timeout=60, what="Prometheus over TLS"
        )
        support.eventually(
            lambda: _answers(f"{env.vmauth_url}/health", env.pki.ca_cert, {}),
            timeout=30,
            what="vmauth over TLS",
        )
        yield env
    finally:
        for process in processes:
            _stop(process)


# --- Prometheus: TLS with a private CA, basic auth ---------------------------------------------


def test_the_custom_ca_and_the_right_password_give_every_profile(secured: Secured) -> None:
    report = secured.collect(
        secured.prometheus_url,
        ca_file=secured.pki.ca_cert,
        username=USER,
        password_file=secured.password_file,
    )
    assert report.error is None, report.error
    assert len(report.profiles) == 4
    chat = report.profiles[base._ref("ml", "chat")]
    assert chat.samples == 2 * 30  # two replicas, half an hour at 60 s
    assert chat.kv_cache_usage is not None


def test_without_the_ca_the_error_names_the_certificate_problem(secured: Secured) -> None:
    report = secured.collect(
        secured.prometheus_url, username=USER, password_file=secured.password_file
    )
    assert report.profiles == {}
    assert report.error is not None
    assert report.error.startswith(f"Prometheus at {secured.prometheus_url}: query ")
    assert "TLS error" in report.error and "certificate verify failed" in report.error, report.error
    assert "self-signed certificate in certificate chain" in report.error or (
        "unable to get local issuer certificate" in report.error
    ), report.error


def test_a_ca_that_did_not_sign_the_certificate_is_refused(
    secured: Secured, tmp_path: pathlib.Path
) -> None:
    other = pki_lib.ensure_pki(tmp_path / "other-ca")
    report = secured.collect(
        secured.prometheus_url,
        ca_file=other.ca_cert,
        username=USER,
        password_file=secured.password_file,
    )
    assert report.error is not None and "certificate verify failed" in report.error, report.error


def test_a_wrong_password_is_a_clear_401(secured: Secured) -> None:
    report = secured.collect(
        secured.prometheus_url,
        ca_file=secured.pki.ca_cert,
        username=USER,
        password_file=secured.wrong_password_file,
    )
    assert report.profiles == {}
    assert report.error is not None and "HTTP 401" in report.error, report.error
    assert "battery horse" not in report.error and PASSWORD not in report.error


def test_no_credentials_is_a_401_too(secured: Secured) -> None:
    report = secured.collect(secured.prometheus_url, ca_file=secured.pki.ca_cert)
    assert report.error is not None and "HTTP 401" in report.error, report.error


# --- vmauth: TLS with a private CA, bearer token -----------------------------------------------


def test_the_right_bearer_token_gives_every_profile(secured: Secured) -> None:
    report = secured.collect(
        secured.vmauth_url, ca_file=secured.pki.ca_cert, bearer_token_file=secured.token_file
    )
    assert report.error is None, report.error
    assert len(report.profiles) == 4


def test_a_wrong_bearer_token_is_a_clear_401(secured: Secured) -> None:
    report = secured.collect(
        secured.vmauth_url,
        ca_file=secured.pki.ca_cert,
        bearer_token_file=secured.wrong_token_file,
    )
    assert report.profiles == {}
    assert report.error is not None and "HTTP 401" in report.error, report.error
    assert "not-the-token" not in report.error


def test_a_rotated_token_file_is_read_at_the_next_sweep(
    secured: Secured, tmp_path: pathlib.Path
) -> None:
    token = tmp_path / "token"
    token.write_text("an-old-token\n", encoding="utf-8")
    settings = prometheus.PrometheusSettings(
        url=secured.vmauth_url, retries=0, ca_file=secured.pki.ca_cert, bearer_token_file=token
    )
    source = prometheus.PrometheusUsageSource(settings)
    at = base._when(secured.end - support.STEP_SECONDS / 2)
    first = source.collect(secured.targets, window=WINDOW, at=at)
    assert first.error is not None and "HTTP 401" in first.error
    token.write_text(TOKEN + "\n", encoding="utf-8")
    second = source.collect(secured.targets, window=WINDOW, at=at)
    assert second.error is None, second.error
    assert len(second.profiles) == 4


# --- the CLI, with every secret from a file ------------------------------------------------------


def _manifests(secured: Secured, folder: pathlib.Path) -> pathlib.Path:
    assert secured.simulator is not None
    documents: list[dict[str, Any]] = []
    for placement in secured.simulator.placements:
        documents += [staging.gpuworkload(placement.workload), deployments.deployment(placement)]
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return path


def _recommend(secured: Secured, folder: pathlib.Path, *flags: str) -> Any:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secured.end - support.STEP_SECONDS))
    args = ["recommend", "-f", str(_manifests(secured, folder)), "--window", WINDOW, "--at", at]
    return CliRunner().invoke(main.cli, [*args, *flags, "-o", "json"])


def test_recommend_reads_the_password_and_the_token_from_files(
    secured: Secured, tmp_path: pathlib.Path
) -> None:
    ca = ["--prometheus-ca-file", str(secured.pki.ca_cert)]
    basic = _recommend(
        secured,
        tmp_path,
        "--prometheus-url",
        secured.prometheus_url,
        *ca,
        "--prometheus-username",
        USER,
        "--prometheus-password-file",
        str(secured.password_file),
    )
    assert basic.exit_code == 0, basic.output
    bearer = _recommend(
        secured,
        tmp_path,
        "--prometheus-url",
        secured.vmauth_url,
        *ca,
        "--prometheus-token-file",
        str(secured.token_file),
    )
    assert bearer.exit_code == 0, bearer.output
    basic_items = {(i["namespace"], i["name"]): i["status"] for i in json.loads(basic.stdout)}
    bearer_items = {(i["namespace"], i["name"]): i["status"] for i in json.loads(bearer.stdout)}
    assert sorted(bearer_items) == sorted(basic_items) and len(basic_items) == 4

    def conditions(status: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(c["type"], c["status"], c["reason"]) for c in status["conditions"]]

    for key, status in basic_items.items():
        # Half an hour of history is less than the policy's 12 h: usage, but no recommendation.
        assert status["usage"]["samples"] > 0, key
        assert bearer_items[key]["usage"] == status["usage"], key
        assert conditions(bearer_items[key]) == conditions(status), key

    refused = _recommend(
        secured,
        tmp_path,
        "--prometheus-url",
        secured.prometheus_url,
        *ca,
        "--prometheus-username",
        USER,
        "--prometheus-password-file",
        str(secured.wrong_password_file),
    )
    assert refused.exit_code != 0
    assert "HTTP 401" in refused.output, refused.output
